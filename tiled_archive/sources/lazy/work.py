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
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...rules.problems import ArchiveError
from .origin import Absent, Origin, digest_differs

#: The block of a large file's range reads (an HDF5 read of one frame moves about the frame).
BLOCK = 256 << 10
#: The most one range request asks for (``fetch`` of a large file: resumable in steps).
RUN = 16 << 20


class WorkFolder:
    """A fetcher's work in ``folder``; thread-safe (one SQLite connection behind a lock)."""

    def __init__(self, folder: Path):
        folder.mkdir(exist_ok=True)
        self.folder = folder
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "state.db", timeout=60, check_same_thread=False)
        with self._lock, self._db:
            self._db.executescript(
                "CREATE TABLE IF NOT EXISTS block (path TEXT, block INTEGER,"
                " PRIMARY KEY (path, block));"
                "CREATE TABLE IF NOT EXISTS partial (path TEXT PRIMARY KEY, etag TEXT,"
                " last_modified TEXT, used REAL);"
                "CREATE TABLE IF NOT EXISTS fetched (path TEXT PRIMARY KEY, size INTEGER,"
                " sha256 TEXT, used REAL);"
            )

    def close(self) -> None:
        self._db.close()

    def _sql(self, statement: str, *args: object) -> list[tuple]:
        with self._lock, self._db:
            return self._db.execute(statement, args).fetchall()

    # -- Partial files -----------------------------------------------------------------------

    def partial_path(self, path: str) -> Path:
        return self.folder / "partial" / hashlib.sha256(path.encode()).hexdigest()

    def blocks(self, path: str) -> set[int]:
        """The blocks partial file ``path`` holds (none when there is no such file)."""
        if not self.partial_path(path).exists():
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
        if not self.blocks(file.path):
            self.forget(file.path)
            partial.parent.mkdir(exist_ok=True)
            with open(partial, "wb") as sink:
                sink.truncate(file.size)
        file = self.validators(file)
        for first, last in _runs(missing):
            for run_first in range(first, last + 1, RUN // BLOCK):
                run_last = min(last, run_first + RUN // BLOCK - 1)
                start, end = run_first * BLOCK, min(file.size, (run_last + 1) * BLOCK) - 1
                with origin.get(file, start, end) as response, open(partial, "r+b") as sink:
                    sink.seek(start)
                    _receive(origin, file, response.iter_raw(), end - start + 1, sink.write)
                    if not self._sql("SELECT 1 FROM partial WHERE path = ?", file.path):
                        headers = response.headers
                        self._sql(
                            "INSERT INTO partial VALUES (?, ?, ?, ?)",
                            file.path,
                            headers.get("etag"),
                            headers.get("last-modified"),
                            time.time(),
                        )
                        file = self.validators(file)
                with self._lock, self._db:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO block VALUES (?, ?)",
                        [(file.path, b) for b in range(run_first, run_last + 1)],
                    )
        self._sql("UPDATE partial SET used = ? WHERE path = ?", time.time(), file.path)

    def is_whole(self, file: Absent) -> bool:
        return len(self.blocks(file.path)) == -(-file.size // BLOCK)

    def finished(self, file: Absent) -> tuple[Path, str, int, Absent]:
        """A whole partial file, checked: its path, SHA-256, CRC-32 and validators."""
        partial = self.partial_path(file.path)
        sha, crc = hashlib.sha256(), 0
        with open(partial, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
                crc = zlib.crc32(chunk, crc)
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
        work = self.folder / "tmp"
        work.mkdir(exist_ok=True)
        sha, crc = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=work, delete=False) as sink:
            try:
                with origin.get(file, None, None) as response:

                    def write(chunk: bytes) -> None:
                        nonlocal crc
                        sha.update(chunk)
                        crc = zlib.crc32(chunk, crc)
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
