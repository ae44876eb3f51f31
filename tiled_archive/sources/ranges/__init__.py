"""One file's bytes by position: what the ZIP source reads, a local file or a remote object.

The ZIP parser needs only a size and reads at positions; where the file is local it also
maps it whole (local headers of 200,000 members in one system call) and hands out spans for
memory-mapping. A remote file (``sources.http``) answers the same reads with range requests.
"""

from __future__ import annotations

import mmap
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path


class RangeFile(ABC):
    """Read-only bytes of one file by position."""

    #: The file's size in bytes.
    size: int
    #: Where it is, for messages and as the archive's location (a path, or a URL).
    location: Path | str

    @abstractmethod
    def read_into(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` from ``offset``; the count read (fewer only at the end of the file)."""

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        size = max(0, min(size, self.size - offset))
        buffer = bytearray(size)
        count = self.read_into(offset, memoryview(buffer)) if size else 0
        return bytes(buffer[:count]) if count != size else bytes(buffer)

    def read_once(self, offset: int, size: int) -> bytes:
        """Like :meth:`pread`, for bytes read once (a local header): a remote file asks for
        exactly them, not for the blocks around them."""
        return self.pread(offset, size)

    @property
    def local_path(self) -> Path | None:
        """The file on this machine (spans and maps are offered only for one), else None."""
        return None

    def map(self) -> mmap.mmap | None:
        """The whole file as one read-only buffer, where that is cheap (a local file)."""
        return None

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:  # noqa: B027 -- a hint
        """A hint: these ``(start, end)`` ranges are about to be read (remote files fetch
        them at once, concurrently); local files need nothing."""

    def close(self) -> None:  # noqa: B027 -- files without handles need nothing here
        """Release what the file holds open."""


class LocalFile(RangeFile):
    """A file on this machine, read with ``pread``."""

    def __init__(self, path: Path):
        self.location = Path(path)
        self._fd = os.open(self.location, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size

    @property
    def local_path(self) -> Path:
        return self.location

    def read_into(self, offset: int, view: memoryview) -> int:
        done = 0
        while done < len(view):
            count = os.preadv(self._fd, [view[done:]], offset + done)
            if count == 0:
                break
            done += count
        return done

    def map(self) -> mmap.mmap | None:
        if self.size == 0:
            return None
        return mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
