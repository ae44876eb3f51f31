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

        async def get(self, key, prototype, byte_range=None):
            if key not in self._source.members():
                return await self._store.get(key, prototype, byte_range)
            # Through the source, never from the folder: a listed file is fetched first, and
            # read under its lock, so the size cap cannot drop it between the two (an absent
            # chunk read as missing would be filled with the fill value: a wrong answer).
            data = await asyncio.to_thread(self._source.read, key)
            return prototype.buffer.from_bytes(_sliced(data, byte_range))

        async def get_partial_values(self, prototype, key_ranges):
            return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

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


def _sliced(data: bytes, byte_range: Any) -> bytes:
    """The bytes of ``data`` a Zarr byte request asks for (None: all)."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"unknown byte request {byte_range!r}")
