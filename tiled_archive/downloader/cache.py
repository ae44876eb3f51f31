"""The local cache of downloaded files: :class:`BlobCache`, by content, with an index from what
names a remote file to its digest, and least-recently-used eviction."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..files.cache_root import cache_root as archive_cache_root
from ..files.hashing import copy_hashing

#: The cache is trimmed to this size (least recently used first) after every download.
DEFAULT_CACHE_MAX_BYTES = 20 << 30


@dataclass(frozen=True)
class Blob:
    """A local file with known content: size, SHA-256, CRC-32 and modification time."""

    path: Path
    size: int
    sha256: str
    crc32: int
    mtime: int


class BlobCache:
    """Downloaded files by content (``<root>/<sha256[:2]>/<sha256>``), an index from what names a
    remote file to its digest, and least-recently-used eviction down to ``max_bytes``.

    The index (``index.sqlite``) maps a remote file's identity (the server's API URL, the asset's
    id and data URI, the path inside a directory asset, and the size and hash the server reports)
    to a digest. Every blob is hashed again before its first use by a download, so a damaged or
    altered cache file is fetched again, never archived. A half-fetched file waits in
    ``partial/`` until a range request completes it.
    """

    def __init__(self, root: Path, max_bytes: int | None = DEFAULT_CACHE_MAX_BYTES):
        self.root = root
        self.max_bytes = max_bytes
        (root / "partial").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._verified: set[str] = set()
        # Autocommit: every statement is its own transaction, so concurrent downloads (other
        # processes too) only ever wait on SQLite's lock for one statement.
        self._db = sqlite3.connect(
            root / "index.sqlite", timeout=60, check_same_thread=False, isolation_level=None
        )
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS remote "
            "(key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, mtime INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS blob (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "crc32 INTEGER NOT NULL, used REAL NOT NULL);"
        )

    def _sql(self, statement: str, *args: object) -> list[tuple]:
        with self._lock:
            return self._db.execute(statement, args).fetchall()

    def blob_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def lookup(self, key: str) -> Blob | None:
        """The verified blob the index holds for ``key``, or None (a damaged blob is dropped)."""
        rows = self._sql(
            "SELECT sha256, mtime, size, crc32 FROM remote JOIN blob USING (sha256) WHERE key = ?",
            key,
        )
        if not rows:
            return None
        sha, mtime, size, crc = rows[0]
        blob = Blob(self.blob_path(sha), size, sha, crc, mtime)
        if sha not in self._verified:
            try:
                with open(blob.path, "rb") as handle:
                    actual = copy_hashing(handle, None, with_crc32=True)
            except FileNotFoundError:
                actual = None
            if actual != (size, sha, crc):
                self._forget(sha)
                return None
            self._verified.add(sha)
        self._sql("UPDATE blob SET used = ? WHERE sha256 = ?", time.time(), sha)
        return blob

    @contextlib.contextmanager
    def partial(self, key: str) -> Iterator[Path]:
        """The file a fetch of ``key`` writes into, kept when the fetch fails so that a later
        one can resume it; locked against another process fetching the same file meanwhile."""
        path = self.root / "partial" / hashlib.sha256(key.encode()).hexdigest()
        with open(path, "ab") as handle:
            with contextlib.suppress(ImportError):  # no fcntl on Windows: no cross-process lock
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                # Nothing fetched (a cache hit, a refusal): leave no empty file behind.
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_size == 0:
                        path.unlink()

    def add(self, key: str, partial: Path, size: int, sha256: str, crc32: int, mtime: int) -> Blob:
        """Move a completely fetched ``partial`` file into the cache and index it under ``key``."""
        path = self.blob_path(sha256)
        path.parent.mkdir(exist_ok=True)
        os.replace(partial, path)
        self._sql(
            "INSERT OR REPLACE INTO blob VALUES (?, ?, ?, ?)", sha256, size, crc32, time.time()
        )
        self._sql("INSERT OR REPLACE INTO remote VALUES (?, ?, ?)", key, sha256, mtime)
        self._verified.add(sha256)
        return Blob(path, size, sha256, crc32, mtime)

    def _forget(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)
        self._sql("DELETE FROM remote WHERE sha256 = ?", sha256)
        self._sql("DELETE FROM blob WHERE sha256 = ?", sha256)
        self._verified.discard(sha256)

    def evict(self, keep: Collection[str] = ()) -> None:
        """Delete the least recently used blobs and half-fetched files until the cache holds at
        most ``max_bytes``; blobs whose digest is in ``keep`` stay."""
        if self.max_bytes is None:
            return
        blobs = self._sql("SELECT sha256, size, used FROM blob")
        total = sum(size for sha, size, _ in blobs if sha in keep)
        candidates = [
            (used, size, functools.partial(self._forget, sha))
            for sha, size, used in blobs
            if sha not in keep
        ]
        for partial in (self.root / "partial").iterdir():
            with contextlib.suppress(FileNotFoundError):  # finished by another download
                stat = partial.stat()
                candidates.append((stat.st_mtime, stat.st_size, partial.unlink))
        for _, size, drop in sorted(candidates, key=lambda c: c[0], reverse=True):
            total += size
            if total > self.max_bytes:
                drop()

    def close(self) -> None:
        self._db.close()


def default_cache_dir() -> Path:
    """``blobs`` under the tiled-archive cache root (``TILED_ARCHIVE_CACHE`` overrides it)."""
    return archive_cache_root() / "blobs"
