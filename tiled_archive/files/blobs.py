"""The local cache of downloaded files: :class:`BlobCache`, by content, with an index from what
names a remote file to its digest and to the validators the server sent with it
(:class:`Validators`), and least-recently-used eviction."""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..rules.problems import ArchiveError
from .cache_root import cache_root as archive_cache_root
from .faults import crash_point
from .hashing import copy_hashing
from .space import out_of_space

#: The cache is trimmed to this size (least recently used first) after every download.
DEFAULT_CACHE_MAX_BYTES = 20 << 30


@dataclass(frozen=True)
class Validators:
    """What a server said identifies the content it sent: its ``ETag`` and ``Last-Modified``
    headers, as sent (None: not sent)."""

    etag: str | None
    last_modified: str | None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators:
        return cls(headers.get("etag"), headers.get("last-modified"))

    def matches(self, now: Validators) -> bool:
        """Whether ``now`` (the server's answer today) names the same content: the ETags are
        equal when both were sent, else the Last-Modified dates; never when neither was."""
        if self.etag and now.etag:
            return self.etag == now.etag
        return bool(self.last_modified) and self.last_modified == now.last_modified

    def if_range(self) -> str | None:
        """What ``If-Range`` may carry (RFC 9110 §13.1.5: a strong ETag, or a date)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


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

    The index (``index.sqlite``) maps a remote file's identity (:meth:`ServerFile.key
    <tiled_archive.downloader.state.ServerFile.key>`: no host name in it) to a digest and to the
    validators the server sent with the bytes; a download uses the blob only when the server's
    validators still match (:mod:`.transfer`). Every blob is hashed again before its first use
    by a download, so a damaged or altered cache file is fetched again, never archived. A
    half-fetched file waits in ``partial/``, with the validators of its first bytes, until a
    range request for the same content (``If-Range``) completes it.
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
            # An earlier version's index kept no validators: its entries cannot be revalidated,
            # so they go (their blobs stay, found again by digest or fetched and deduplicated).
            "DROP TABLE IF EXISTS remote;"
            "CREATE TABLE IF NOT EXISTS remote_file (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
            "mtime INTEGER NOT NULL, etag TEXT, last_modified TEXT);"
            "CREATE TABLE IF NOT EXISTS partial_file (key TEXT PRIMARY KEY, etag TEXT, "
            "last_modified TEXT);"
            "CREATE TABLE IF NOT EXISTS blob (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "crc32 INTEGER NOT NULL, used REAL NOT NULL);"
        )

    def _sql(self, statement: str, *args: object) -> list[tuple]:
        with self._lock:
            return self._db.execute(statement, args).fetchall()

    def blob_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def lookup(self, key: str) -> tuple[Blob, Validators] | None:
        """The verified blob the index holds for ``key`` and the validators the server sent
        with it, or None (a damaged blob is dropped)."""
        rows = self._sql(
            "SELECT sha256, mtime, etag, last_modified FROM remote_file WHERE key = ?", key
        )
        if not rows:
            return None
        sha, mtime, etag, last_modified = rows[0]
        blob = self.by_digest(sha)
        if blob is None:
            return None
        # The remote file's own modification time: one blob may back files of several dates.
        return dataclasses.replace(blob, mtime=mtime), Validators(etag, last_modified)

    def by_digest(self, sha256: str) -> Blob | None:
        """The verified blob with this SHA-256, or None (a damaged blob is dropped)."""
        rows = self._sql("SELECT size, crc32 FROM blob WHERE sha256 = ?", sha256)
        if not rows:
            return None
        size, crc = rows[0]
        path = self.blob_path(sha256)
        if sha256 not in self._verified:
            try:
                with open(path, "rb") as handle:
                    actual = copy_hashing(handle, None, with_crc32=True)
            except FileNotFoundError:
                actual = None
            if actual != (size, sha256, crc):
                self.forget(sha256)
                return None
            self._verified.add(sha256)
        self._sql("UPDATE blob SET used = ? WHERE sha256 = ?", time.time(), sha256)
        return Blob(path, size, sha256, crc, int(path.stat().st_mtime))

    @contextlib.contextmanager
    def partial(self, key: str) -> Iterator[Path]:
        """The file a fetch of ``key`` writes into, kept when the fetch fails so that a later
        one can resume it; locked against another process fetching the same file meanwhile."""
        path = self._partial_path(key)
        with open(path, "ab") as handle:
            with contextlib.suppress(ImportError):  # no fcntl on Windows: no cross-process lock
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield path
            except BaseException as err:
                if _disk_full(err):  # what filled the disk is no file to resume
                    path.unlink(missing_ok=True)
                raise
            finally:
                # Nothing fetched (a cache hit, a refusal): leave no empty file behind.
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_size == 0:
                        path.unlink()
                if not path.exists():
                    # A stale row is harmless (it is read only beside a partial file); on a
                    # full disk this delete may fail too, and must not hide why.
                    with contextlib.suppress(sqlite3.Error):
                        self._sql("DELETE FROM partial_file WHERE key = ?", key)

    def _partial_path(self, key: str) -> Path:
        return self.root / "partial" / hashlib.sha256(key.encode()).hexdigest()

    def partial_size(self, key: str) -> int:
        """How many bytes of ``key`` its partial file holds (0: none)."""
        try:
            return self._partial_path(key).stat().st_size
        except FileNotFoundError:
            return 0

    def partial_validators(self, key: str) -> Validators | None:
        """The validators sent with the first bytes of ``key``'s partial file, if known."""
        rows = self._sql("SELECT etag, last_modified FROM partial_file WHERE key = ?", key)
        return Validators(*rows[0]) if rows else None

    def start_partial(self, key: str, validators: Validators) -> None:
        """Record the validators of the content ``key``'s partial file is being filled with."""
        self._sql(
            "INSERT OR REPLACE INTO partial_file VALUES (?, ?, ?)",
            key,
            validators.etag,
            validators.last_modified,
        )

    def add(
        self,
        key: str,
        partial: Path,
        size: int,
        sha256: str,
        crc32: int,
        mtime: int,
        validators: Validators,
    ) -> Blob:
        """Move a completely fetched ``partial`` file into the cache and index it under ``key``
        with the ``validators`` the server sent with it."""
        path = self.blob_path(sha256)
        path.parent.mkdir(exist_ok=True)
        os.utime(partial, (mtime, mtime))
        # Indexed first: a process killed before the rename leaves an entry whose blob is
        # missing (dropped when next looked up) and the whole partial file, which the next
        # run finishes without fetching; killed after, it is all in place. (Renamed first, a
        # blob nothing indexes was fetched again.)
        self._index(key, sha256, size, crc32, mtime, validators)
        crash_point("cache:indexed")
        os.replace(partial, path)
        self._sql("DELETE FROM partial_file WHERE key = ?", key)
        self._verified.add(sha256)
        return Blob(path, size, sha256, crc32, mtime)

    def adopt(
        self, key: str, file: Path, size: int, sha256: str, crc32: int, validators: Validators
    ) -> None:
        """Index a checked file kept elsewhere (a lazy archive's) under ``key``: hard-linked
        into the cache (copied where a link cannot be made), so a later download finds it."""
        path = self.blob_path(sha256)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            try:
                os.link(file, path)
            except OSError:
                with contextlib.suppress(OSError):
                    path.unlink()
                return  # across filesystems: not worth a second copy of the bytes
        self._index(key, sha256, size, crc32, int(path.stat().st_mtime), validators)

    def _index(
        self, key: str, sha256: str, size: int, crc32: int, mtime: int, validators: Validators
    ) -> None:
        """Record blob ``sha256`` and ``key`` naming it, with the server's validators."""
        self._sql(
            "INSERT OR REPLACE INTO blob VALUES (?, ?, ?, ?)", sha256, size, crc32, time.time()
        )
        self._sql(
            "INSERT OR REPLACE INTO remote_file VALUES (?, ?, ?, ?, ?)",
            key,
            sha256,
            mtime,
            validators.etag,
            validators.last_modified,
        )

    def forget(self, sha256: str) -> None:
        """Remove the blob with this SHA-256 and every index entry naming it."""
        self.blob_path(sha256).unlink(missing_ok=True)
        self._sql("DELETE FROM remote_file WHERE sha256 = ?", sha256)
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
            (used, size, functools.partial(self.forget, sha))
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


def http_date(value: str | None) -> int:
    """The epoch time of an HTTP date (``Last-Modified``); now when absent or unreadable."""
    if value:
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            return int(email.utils.parsedate_to_datetime(value).timestamp())
    return int(time.time())


def url_key(url: str) -> str:
    """The index key of a file known by its absolute URL only (a lazy archive's): a download
    of the same file from the same server looks it up by this too."""
    return json.dumps(["url", url])


def default_cache_dir() -> Path:
    """``blobs`` under the tiled-archive cache root (``TILED_ARCHIVE_CACHE`` overrides it)."""
    return archive_cache_root() / "blobs"


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk or quota is full (as raised, or already coded)."""
    if isinstance(err, ArchiveError):
        return err.code == "TA-E906"
    return out_of_space(err) is not None
