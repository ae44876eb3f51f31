"""The work folder of an incomplete archive (``.tiled-archive-fetch/``, spec 4.1): partial files
filled block by block from the origin, whole files fetched aside before they are renamed into
``data/``, and ``state.db`` (SQLite): the blocks each partial file holds and the validators it
was begun with, and every file fetched (size, digest, last use: the size cap's order)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...files.hashing import crc32
from ...files.work import SCRATCH_PREFIX, owner, sweep
from ...rules.problems import ArchiveError
from .origin import Absent, Origin, digest_differs

#: The block of a large file's range reads: small, because a library reading a big file's
#: index (HDF5's chunk B-tree) makes many small reads far apart, each costing a block; adjacent
#: blocks a read needs go in one request. One 1 MiB frame of a 1 GiB chunked HDF5 dataset moved
#: 5.8 MiB with 256 KiB blocks, 2.3 MiB with 64 KiB ones and an 8 KiB read buffer
#: (benchmarks/lazy.py).
BLOCK = 64 << 10
#: The most one range request asks for (``fetch`` of a large file: resumable in steps).
RUN = 16 << 20


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS block (path TEXT, block INTEGER, PRIMARY KEY (path, block));"
    "CREATE TABLE IF NOT EXISTS partial (path TEXT PRIMARY KEY, etag TEXT, last_modified TEXT,"
    " used REAL);"
    "CREATE TABLE IF NOT EXISTS fetched (path TEXT PRIMARY KEY, size INTEGER, sha256 TEXT,"
    " used REAL);"
    "SELECT path, block FROM block LIMIT 0;"
    "SELECT path, etag, last_modified, used FROM partial LIMIT 0;"
    "SELECT path, size, sha256, used FROM fetched LIMIT 0;"
)


def _real_folder(path: Path) -> Path:
    """``path`` as a folder of its own: made when absent; TA-E203 when it is a symlink or
    anything but a folder (a work folder that leads elsewhere is never followed)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise ArchiveError("TA-E203", str(path), "a symlink or file where a folder must be")
    return path


class WorkFolder:
    """A fetcher's work in ``folder``; thread-safe (one SQLite connection behind a lock), and
    between processes each file's fetch holds a lock of its own (:meth:`locked`). A work
    folder whose state cannot be read is a cache gone bad: it is begun afresh."""

    def __init__(self, folder: Path):
        self.folder = _real_folder(folder)
        for name in ("partial", "tmp"):
            _real_folder(folder / name)
        sweep(folder / "tmp", SCRATCH_PREFIX)  # whole files of killed runs, never placed
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError:
            for name in ("state.db", "state.db-journal"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
            for partial in (folder / "partial").iterdir():
                partial.unlink()
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        state = self.folder / "state.db"
        if os.path.lexists(state) and not stat.S_ISREG(os.lstat(state).st_mode):
            raise ArchiveError("TA-E203", str(state), "a symlink or special file, not a file")
        db = sqlite3.connect(state, timeout=60, check_same_thread=False)
        try:
            with db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def locked(self, path: str) -> Iterator[None]:
        """Hold ``path`` 's lock against other processes fetching it (a partial file is made,
        filled and placed by one process at a time)."""
        import fcntl

        lock = self.partial_path(path).with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        self._db.close()

    def _sql(self, statement: str, *args: object) -> list[tuple]:
        with self._lock, self._db:
            return self._db.execute(statement, args).fetchall()

    # -- Partial files -----------------------------------------------------------------------

    def partial_path(self, path: str) -> Path:
        return self.folder / "partial" / hashlib.sha256(path.encode()).hexdigest()

    def blocks(self, path: str) -> set[int]:
        """The blocks partial file ``path`` holds (none when there is no such regular file)."""
        try:
            if not stat.S_ISREG(os.lstat(self.partial_path(path)).st_mode):
                return set()
        except FileNotFoundError:
            return set()
        return {row[0] for row in self._sql("SELECT block FROM block WHERE path = ?", path)}

    def validators(self, file: Absent) -> Absent:
        """``file`` with the validators its partial file was begun with (recorded ones, or
        the first answer's), so every block is checked against the same."""
        rows = self._sql("SELECT etag, last_modified FROM partial WHERE path = ?", file.path)
        if not rows:
            return file
        etag, modified = rows[0]
        return dataclasses.replace(
            file, etag=file.etag or etag, last_modified=file.last_modified or modified
        )

    def may_range(self, file: Absent) -> bool:
        """Blocks fetched at different times are one file only when validators say so:
        recorded ones, or the first answer's. A file whose first answer gave none is fetched
        whole."""
        if file.etag or file.last_modified:
            return True
        rows = self._sql("SELECT etag, last_modified FROM partial WHERE path = ?", file.path)
        return not rows or bool(rows[0][0] or rows[0][1])

    def fetch_blocks(self, origin: Origin, file: Absent, missing: list[int]) -> None:
        """Fetch ``missing`` blocks of ``file`` into its partial file (made when it has none),
        one request per run of adjacent blocks (at most :data:`RUN` bytes each), each answer
        checked against the partial file's validators; recorded as they land."""
        partial = self.partial_path(file.path)
        if not self.blocks(file.path):  # (its lock held: no other process is filling it)
            self.forget(file.path)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(partial, flags, 0o600))
            os.truncate(partial, file.size)
        file = self.validators(file)
        for first, last in _runs(missing):
            for run_first in range(first, last + 1, RUN // BLOCK):
                run_last = min(last, run_first + RUN // BLOCK - 1)
                start, end = run_first * BLOCK, min(file.size, (run_last + 1) * BLOCK) - 1
                fd = os.open(partial, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                with origin.get(file, start, end) as response, os.fdopen(fd, "r+b") as sink:
                    if not self._sql("SELECT 1 FROM partial WHERE path = ?", file.path):
                        # The validators every later block is held to: those of this answer.
                        headers = response.headers
                        self._sql(
                            "INSERT INTO partial VALUES (?, ?, ?, ?)",
                            file.path,
                            headers.get("etag"),
                            headers.get("last-modified"),
                            time.time(),
                        )
                        file = self.validators(file)
                    sink.seek(start)
                    landed = _Landing(self, file.path, run_first, sink)
                    _receive(origin, file, response.iter_raw(), end - start + 1, landed.write)
                    landed.flush(final=True)
        self._sql("UPDATE partial SET used = ? WHERE path = ?", time.time(), file.path)

    def _record_blocks(self, path: str, blocks: range) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO block VALUES (?, ?)", [(path, b) for b in blocks]
            )

    def is_whole(self, file: Absent) -> bool:
        """Whether every block of ``file`` is recorded (blocks it cannot have do not count)."""
        return set(range(-(-file.size // BLOCK))) <= self.blocks(file.path)

    def finished(self, file: Absent) -> tuple[Path, str, int, Absent]:
        """A whole partial file, checked: its path, SHA-256, CRC-32 and validators."""
        partial = self.partial_path(file.path)
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if os.fstat(fd).st_size != file.size:
            os.close(fd)
            self.forget(file.path)
            raise ArchiveError("TA-E942", file.path, "a partial file of the wrong size: dropped")
        sha, crc = hashlib.sha256(), 0
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
                crc = crc32(chunk, crc)
        if file.sha256 is not None and sha.hexdigest() != file.sha256:
            self.forget(file.path)
            raise digest_differs(file)
        return partial, sha.hexdigest(), crc, self.validators(file)

    def forget(self, path: str) -> None:
        """Drop ``path`` 's partial file and what is recorded of it."""
        with contextlib.suppress(FileNotFoundError):
            self.partial_path(path).unlink()
        self._sql("DELETE FROM block WHERE path = ?", path)
        self._sql("DELETE FROM partial WHERE path = ?", path)

    # -- Whole files -------------------------------------------------------------------------

    @contextlib.contextmanager
    def whole(self, origin: Origin, file: Absent) -> Iterator[tuple[Path, str, int, Absent]]:
        """Fetch ``file`` whole into a file of the work folder, checked (size, validators,
        digest when known): its path (removed after the block unless moved), SHA-256, CRC-32
        and validators."""
        work = _real_folder(self.folder / "tmp")
        sha, crc = hashlib.sha256(), 0
        prefix = f"{SCRATCH_PREFIX}{owner()}"  # a killed run's is removed by the next
        with tempfile.NamedTemporaryFile(dir=work, prefix=prefix, delete=False) as sink:
            try:
                with origin.get(file, None, None) as response:

                    def write(chunk: bytes) -> None:
                        nonlocal crc
                        sha.update(chunk)
                        crc = crc32(chunk, crc)
                        sink.write(chunk)

                    _receive(origin, file, response.iter_raw(), file.size, write)
                    headers = response.headers
                if file.sha256 is not None and sha.hexdigest() != file.sha256:
                    raise digest_differs(file)
                sink.close()
                validators = dataclasses.replace(
                    file,
                    etag=file.etag or headers.get("etag"),
                    last_modified=file.last_modified or headers.get("last-modified"),
                )
                yield Path(sink.name), sha.hexdigest(), crc, validators
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sink.name)

    # -- What was fetched --------------------------------------------------------------------

    def record(self, file: Absent, sha256: str) -> None:
        self._sql(
            "INSERT OR REPLACE INTO fetched VALUES (?, ?, ?, ?)",
            file.path,
            file.size,
            sha256,
            time.time(),
        )

    def unrecord(self, path: str) -> None:
        self._sql("DELETE FROM fetched WHERE path = ?", path)

    def touch(self, path: str) -> None:
        self._sql("UPDATE fetched SET used = ? WHERE path = ?", time.time(), path)

    def used_bytes(self) -> int:
        """Bytes fetched files and partial files' blocks take."""
        files = self._sql("SELECT coalesce(sum(size), 0) FROM fetched")[0][0]
        blocks = self._sql("SELECT count(*) FROM block")[0][0]
        return files + blocks * BLOCK

    def least_recent(self) -> list[str]:
        """Fetched files and partial files, least recently used first."""
        rows = self._sql(
            "SELECT path, used FROM fetched UNION ALL SELECT path, used FROM partial ORDER BY 2"
        )
        return [path for path, _ in rows]


class _Landing:
    """The body of a range answer written into a partial file, its blocks recorded as they
    land (every 16, and the last one at the end), so a run cut off keeps what it received."""

    def __init__(self, work: WorkFolder, path: str, first: int, sink: object):
        self.work, self.path, self.sink = work, path, sink
        self.next_block = first  # the first block not recorded yet
        self.position = first * BLOCK

    def write(self, chunk: bytes) -> None:
        self.sink.write(chunk)  # type: ignore[attr-defined]
        self.position += len(chunk)
        if self.position // BLOCK - self.next_block >= 16:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        self.sink.flush()  # type: ignore[attr-defined]
        # The last block of a file may be short: whole once the answer ended as asked.
        done = -(-self.position // BLOCK) if final else self.position // BLOCK
        if done > self.next_block:
            self.work._record_blocks(self.path, range(self.next_block, done))
            self.next_block = done


def _receive(
    origin: Origin, file: Absent, chunks: Iterable[bytes], expected: int, write: object
) -> None:
    """Pass an answer's body to ``write``, exactly ``expected`` bytes (TA-E943 otherwise: the
    origin answered wrongly, or the connection ended early)."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > expected:
            break
        write(chunk)  # type: ignore[operator]
    origin.received += received
    if received != expected:
        why = f"the origin sent {received} bytes where {expected} were asked for"
        raise ArchiveError("TA-E943", origin.base + file.url, why)


def _runs(blocks: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted block numbers as (first, last) runs of consecutive blocks."""
    start = previous = None
    for block in blocks:
        if start is None:
            start = previous = block
        elif block == previous + 1:
            previous = block
        else:
            yield start, previous
            start = previous = block
    if start is not None:
        yield start, previous
