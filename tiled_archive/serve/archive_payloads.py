"""Where the archive routes find the files of a node's archive: a Tiled deployment's readable
storage (:class:`StoragePayload`, the router a stock server mounts), or the archive that
``tiled-archive serve`` serves (:class:`ServedArchivePayload`)."""

from __future__ import annotations

import bisect
import functools
import itertools
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..catalog import db_file as catalog_db
from ..reader import Archive
from ..rules.problems import ArchiveError
from ..sources.storage import ReadableStorage
from ..writer import PayloadFile, catalog_payload
from .asset_routes import ArchiveFiles, AssetFiles, StorageAssetFiles
from .kept_digests import KEPT

#: The member an asset of the exported catalog maps to.
MemberOf = Callable[[catalog_db.AssetRow], str]


class ArchivePayload(Protocol):
    """The files behind a deployment's (or an archive's) catalog, for the archive routes."""

    def payload(self, entry: Any, db: Path, display: str) -> tuple[list[PayloadFile], MemberOf]:
        """The data files the assets of ``db`` (the node ``entry``'s exported catalog) name,
        and each asset's member."""

    def digests(self, file: PayloadFile) -> tuple[int, str, int]:
        """The file's size, SHA-256 and CRC-32 (kept while it is unchanged)."""

    def forget(self, file: PayloadFile) -> None:
        """Its bytes no longer match the digests kept: hash it again next time."""

    def asset_files(self, entry: Any) -> AssetFiles:
        """The files a node's assets may hand out (``entry``: the node, as Tiled found it)."""


class StoragePayload:
    """A deployment's files: the catalog's ``file:`` assets, inside its readable storage
    (given, or the catalog's own, as Tiled configured it)."""

    def __init__(self, storage: ReadableStorage | None = None):
        self.storage = storage

    def _storage(self, entry: Any) -> ReadableStorage:
        if self.storage is not None:
            return self.storage
        configured = entry.context.readable_storage.values()
        return ReadableStorage(str(s.path) for s in configured if getattr(s, "path", None))

    def payload(self, entry: Any, db: Path, display: str) -> tuple[list[PayloadFile], MemberOf]:
        # A ragged array's DuckDB file here is the deployment's SQL storage: refused (the
        # route answers 400; a download then takes the per-asset path, through the data API).
        payload, member_of = catalog_payload(db, display, sql_storage=False)
        storage = self._storage(entry)
        for file in payload:  # what Tiled's own adapters would read, and nothing else
            assert file.local_path is not None
            if not storage.holds(Path(os.path.realpath(file.local_path))):
                raise ArchiveError(
                    "TA-E923", str(file.local_path), "is outside the server's readable storage"
                )
        return payload, member_of

    def digests(self, file: PayloadFile) -> tuple[int, str, int]:
        assert file.local_path is not None
        return KEPT.of_local(file.local_path, file.open)

    def forget(self, file: PayloadFile) -> None:
        KEPT.forget(str(file.local_path))

    def asset_files(self, entry: Any) -> AssetFiles:
        return StorageAssetFiles(self._storage(entry))


class ServedArchivePayload:
    """The payload files of the archive ``tiled-archive serve`` serves, their digests from
    its manifest (a ZIP's CRC-32s from its central directory)."""

    def __init__(self, archive: Archive):
        self.archive = archive
        #: Every member of the subtree's archive takes the served archive's creation time.
        self.mtime = int(datetime.fromisoformat(archive.manifest.created).timestamp())

    def payload(self, entry: Any, db: Path, display: str) -> tuple[list[PayloadFile], MemberOf]:
        archive = self.archive
        absent = set(archive.absent())
        listed = sorted(archive.payload())
        files = set(listed)
        members: dict[str, None] = {}
        for row in catalog_db.read_assets(db):
            member = archive.asset_member(row.data_uri)
            # A file asset, or a directory asset's files: a run of the sorted list.
            inside = [member] if member in files else list(_below(listed, f"{member}/"))
            if not inside:
                raise ArchiveError("TA-E306", member, "an asset of the catalog lists no file")
            missing = absent.intersection(inside)
            if missing:  # a lazy archive: a download takes the per-asset path, which fetches
                raise ArchiveError(
                    "TA-E940",
                    min(missing),
                    f"not fetched yet (and {len(missing) - 1} more files of this node)",
                )
            members.update(dict.fromkeys(inside))
        crc32 = getattr(archive.source, "crc32", None)  # a ZIP's, from its central directory
        payload = []
        for path in sorted(members):
            entry = archive.payload_entry(path)
            if entry is None or entry.sha256 is None:  # fetched but not sealed yet
                raise ArchiveError("TA-E940", path, "has no digest in the manifest yet")
            payload.append(
                PayloadFile(
                    path,
                    entry.size,
                    functools.partial(archive.open, path),
                    self.mtime,
                    expected_sha256=entry.sha256,
                    crc32=crc32(path) if crc32 is not None else None,
                )
            )
        return payload, lambda row: archive.asset_member(row.data_uri)

    def digests(self, file: PayloadFile) -> tuple[int, str, int]:
        assert file.expected_sha256 is not None
        if file.crc32 is None:  # a directory archive: its CRC-32 computed once
            key = (f"{self.archive.location}/{file.path}", file.expected_sha256)
            return KEPT.of(key, file.open)
        return file.size, file.expected_sha256, file.crc32

    def forget(self, file: PayloadFile) -> None:
        KEPT.forget(f"{self.archive.location}/{file.path}")

    def asset_files(self, entry: Any) -> AssetFiles:
        return ArchiveFiles(self.archive)


def _below(listed: list[str], prefix: str) -> Iterator[str]:
    """The paths of the sorted ``listed`` that start with ``prefix``."""
    for path in itertools.islice(listed, bisect.bisect_left(listed, prefix), None):
        if not path.startswith(prefix):
            return
        yield path


__all__ = ["ArchivePayload", "ServedArchivePayload", "StoragePayload"]
