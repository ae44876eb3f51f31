"""A Zarr store over an incomplete (lazy) archive: each key a read asks for is fetched first
(whole, checked, then read from ``data/``); listings come from the manifest, so an absent
chunk is never taken for a missing one (which Zarr would fill with the fill value)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

from ...reader import Archive
from ...sources.lazy import LazySource


def lazy_zarr_store(archive: Archive) -> Any:
    """A read-only store rooted at the archive's folder; keys are archive paths."""
    import zarr

    source = archive.source
    assert isinstance(source, LazySource)
    local = zarr.storage.LocalStore(archive.location, read_only=True)
    return _lazy_store_class()(local, source)


@functools.cache
def _lazy_store_class() -> type:
    from zarr.storage import WrapperStore

    class LazyStore(WrapperStore):
        def __init__(self, store: Any, source: LazySource):
            super().__init__(store)
            self._source = source

        def _with_store(self, store: Any) -> Any:
            return type(self)(store, self._source)

        async def _ensure(self, key: str) -> None:
            if not self._source.is_present(key):
                await asyncio.to_thread(self._source.ensure, key)

        async def get(self, key, prototype, byte_range=None):
            if key in self._source.members():
                await self._ensure(key)
            return await self._store.get(key, prototype, byte_range)

        async def get_partial_values(self, prototype, key_ranges):
            key_ranges = list(key_ranges)
            for key, _ in key_ranges:
                if key in self._source.members():
                    await self._ensure(key)
            return await self._store.get_partial_values(prototype, key_ranges)

        async def exists(self, key):
            return key in self._source.members() or await self._store.exists(key)

        async def list(self) -> AsyncIterator[str]:
            for key in self._source.members():
                yield key

        async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
            for key in self._source.members():
                if key.startswith(prefix):
                    yield key

        async def list_dir(self, prefix: str) -> AsyncIterator[str]:
            base = prefix.rstrip("/") + "/" if prefix else ""
            seen = set()
            for key in self._source.members():
                if key.startswith(base):
                    name = key[len(base) :].split("/", 1)[0]
                    if name not in seen:
                        seen.add(name)
                        yield name

    return LazyStore
