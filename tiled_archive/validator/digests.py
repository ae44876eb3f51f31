"""Reading every byte (full mode): SHA-256 of every file and, in a ZIP, the CRC-32 of every
member, in a pool of ``WORKERS`` threads; ``catalog.db`` of a ZIP copied out on the way."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ..files.hashing import crc32
from ..files.work import work_folder
from ..rules.names import CATALOG_NAME
from ..rules.problems import ArchiveError, Problem

#: Bytes read per ``preadv``: large enough that per-call overhead vanishes, small enough that a
#: block stays in L2 cache between its SHA-256 and CRC-32 passes.
BLOCK = 1 << 20
#: Members up to this size are read and hashed at once.
SMALL = 64 << 10
#: What one hashing task reads at the most (a larger file is a task of its own).
BATCH_BYTES = 64 << 20
BATCH_FILES = 1024
#: Hashing threads: the reference machine's two cores.
WORKERS = 2
#: Below this many bytes to hash, a run is over before a progress bar would help.
PROGRESS_MIN_BYTES = 256 << 20


@dataclass(frozen=True)
class Digest:
    """What reading one member gave: bytes read, SHA-256 and CRC-32 (None when not computed),
    or the problem that stopped the read."""

    path: str
    size: int
    sha256: str | None
    crc32: int | None
    problem: Problem | None = None


class DigestReading:
    """Hashing, on the run's state (:class:`~.checker.Checker`)."""

    def _local_catalog(self) -> Path | None:
        """A local file of catalog.db for SQLite: the archive's own in a directory; for a ZIP a
        copy in a temporary folder, hashed on the way (it is read only once)."""
        if CATALOG_NAME not in self.readable:
            return None
        if not self.is_zip:
            return self.path / CATALOG_NAME

        work = self._cleanup.enter_context(work_folder())
        copy = Path(work) / CATALOG_NAME
        with open(copy, "xb") as sink:
            result = self._digest(CATALOG_NAME, sink)
        self._record(result)
        return copy if result.problem is None else None

    def _hash_batches(self) -> list[list[str]]:
        """Every readable member still to hash (none in fast mode), largest first, in batches
        of about BATCH_BYTES (at most BATCH_FILES files) so a ZIP of 200,000 small members
        costs a few hundred pool tasks, not 200,000."""
        if self.fast:
            return []
        jobs = sorted(
            (path for path in self.readable if path not in self.digests),
            key=lambda path: -self.readable[path].size,
        )
        total = sum(self.readable[path].size for path in jobs)
        if self.progress is not None and total >= PROGRESS_MIN_BYTES:
            self._task = self.progress.add_task("verifying", total=total, bytes=True)
        batches: list[list[str]] = []
        batch_bytes = 0
        for path in jobs:
            size = self.readable[path].size
            if not batches or batch_bytes + size > BATCH_BYTES or len(batches[-1]) >= BATCH_FILES:
                batches.append([])
                batch_bytes = 0
            batches[-1].append(path)
            batch_bytes += size
        return batches

    def _digest_all(self, paths: list[str]) -> list[Digest]:
        return [self._digest(path) for path in paths]

    def _digest(self, path: str, sink: BinaryIO | None = None) -> Digest:
        """Read one member to its end: SHA-256 (and CRC-32 in a ZIP) unless in fast mode."""
        sha = None if self.fast else hashlib.sha256()
        crc = 0 if self.is_zip and not self.fast else None
        size = 0
        if (
            sha is not None
            and sink is None
            and self.readable[path].size <= SMALL
            and (not self.is_zip or self.source.span(path) is not None)  # STORED
        ):
            return self._digest_small(path)
        try:
            for block in self._blocks(path):
                if sha is not None:
                    sha.update(block)
                if crc is not None:
                    crc = crc32(block, crc)
                if sink is not None:
                    sink.write(block)
                size += len(block)
                if self._task is not None:
                    self.progress.advance(self._task, len(block))  # type: ignore[union-attr]
        except ArchiveError as err:
            return Digest(path, size, None, None, err.problem)
        return Digest(path, size, sha.hexdigest() if sha is not None else None, crc)

    def _digest_small(self, path: str) -> Digest:
        """A small member read at once: no block loop (a ZIP of 200,000 small members spends
        its time in the loop, not in hashing)."""
        try:
            data = self.source.read(path)
        except ArchiveError as err:
            return Digest(path, 0, None, None, err.problem)
        short = self.readable[path].size - len(data)
        if short:
            problem = Problem("TA-E307", path, f"ends {short} bytes early (changed while read?)")
            return Digest(path, len(data), None, None, problem)
        if self._task is not None:
            self.progress.advance(self._task, len(data))  # type: ignore[union-attr]
        crc = crc32(data) if self.is_zip else None
        return Digest(path, len(data), hashlib.sha256(data).hexdigest(), crc)

    def _blocks(self, path: str) -> Iterator[memoryview]:
        """The member's bytes in blocks of at most BLOCK, each valid until the next one."""
        size = self.readable[path].size
        if self.is_zip:
            if self.source.span(path) is None:  # compressed: only a sequential stream
                yield from self._decompressed(path)
            else:
                yield from self._positional(partial(self.source.read_into, path), size, path)
            return
        # DirectorySource.open walks down from the root without following symbolic links. Its
        # descriptor is read directly: read_into would open the file again for every block.
        with self.source.open(path) as handle:
            fd = handle.fileno()
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_SEQUENTIAL)
            yield from self._positional(
                lambda offset, view: os.preadv(fd, [view], offset), size, path
            )

    def _positional(
        self, read_into: Callable[[int, memoryview], int], size: int, path: str
    ) -> Iterator[memoryview]:
        """Blocks read by ``read_into(offset, view)`` into this thread's reused buffer."""
        buffer = getattr(self._thread, "buffer", None)
        if buffer is None:
            buffer = self._thread.buffer = memoryview(bytearray(BLOCK))
        offset = 0
        while offset < size:
            count = read_into(offset, buffer[: min(BLOCK, size - offset)])
            if count == 0:
                raise ArchiveError(
                    "TA-E307", path, f"ends {size - offset} bytes early (changed while read?)"
                )
            yield buffer[:count]
            offset += count

    def _decompressed(self, path: str) -> Iterator[memoryview]:
        import zipfile

        try:
            with self.source.open(path) as stream:
                while chunk := stream.read(BLOCK):
                    yield memoryview(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            # zipfile checks the CRC-32 of what it decompresses itself, and says so here.
            raise ArchiveError("TA-E111", path, f"cannot decompress: {err}") from None

    def _record(self, result: Digest) -> None:
        self.bytes_verified += result.size
        if result.problem is not None:
            self.problems.append(result.problem)
            return
        if result.sha256 is not None:
            self.digests[result.path] = result.sha256
        if result.crc32 is not None and self.is_zip:
            declared = self.source.crc32(result.path)
            if result.crc32 != declared:
                self.add(
                    "TA-E111",
                    result.path,
                    f"CRC-32 is {result.crc32:08x}, the central directory says {declared:08x}",
                )
