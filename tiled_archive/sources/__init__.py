"""Byte sources: where an archive's bytes come from, behind one small interface.

A source answers four questions and nothing else: which members there are, how big each is,
the bytes ``[offset, offset + size)`` of a member, and (when the member's bytes lie contiguous and
uncompressed in one local file) its span for memory-mapping. Directory and ZIP sources live in
their own modules; a ZIP's bytes come from a ``ranges.RangeFile``: a local file, or a remote
one read by HTTP range requests (``http``).
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..rules.problems import Problem

if TYPE_CHECKING:
    from .ranges import RangeFile


@dataclass(frozen=True)
class Member:
    """A regular file of the archive, by its archive path (``/``-separated, no leading slash)."""

    path: str
    size: int


@dataclass(frozen=True)
class Span:
    """Where a member's bytes lie, uncompressed and contiguous, in a local file."""

    file: Path
    offset: int
    length: int


class ByteSource(ABC):
    """Read-only access to the members of one archive."""

    #: Where the archive is (for messages): a path, or the URL of a remote archive.
    location: Path | str
    #: Structural problems found while opening (e.g. ZIP header disagreements, symlinks).
    problems: list[Problem]

    @abstractmethod
    def members(self) -> Mapping[str, Member]:
        """Every regular file of the archive, keyed by archive path."""

    def holds(self, path: str) -> bool:
        """Whether the archive holds a regular file at ``path`` (as :meth:`members` would say,
        without listing every member where the source need not)."""
        return path in self.members()

    @abstractmethod
    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        """Bytes ``[offset, offset + size)`` of a member (to its end when ``size`` is None)."""

    def read_into(self, path: str, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` (flat bytes) from a member at ``offset``; the count read.

        Sources that can read straight into the caller's memory override this.
        """
        data = self.read(path, offset, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def open(self, path: str) -> BinaryIO:
        """A seekable, read-only binary file over one member, reading by position on demand."""
        reader = partial(self.read_into, path)
        raw = PositionalRawIO(reader, self.members()[path].size, path)
        return io.BufferedReader(raw, buffer_size=64 * 1024)

    @abstractmethod
    def span(self, path: str) -> Span | None:
        """The member's span in a local file, or None when it is compressed."""

    def prefetch(self, paths: list[str]) -> None:  # noqa: B027 -- a hint; local needs none
        """A hint that these members are about to be read (a remote source fetches them at
        once)."""

    def close(self) -> None:  # noqa: B027 -- sources without open handles need nothing here
        """Release open handles."""

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PositionalRawIO(io.RawIOBase):
    """A raw, seekable, read-only file of ``size`` bytes read by position.

    ``read_into(position, view)`` fills ``view`` from ``position`` and returns the count: a
    member's bytes, or (for ``zipfile`` decompressing a member) its compressed bytes.
    """

    def __init__(self, read_into: Callable[[int, memoryview], int], size: int, name: str):
        self._read_into = read_into
        self._size = size
        self._position = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        position = base[whence] + offset
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # Callers such as tifffile pass n-dimensional arrays: address them as flat bytes.
        view = memoryview(buffer).cast("B")
        size = min(len(view), max(0, self._size - self._position))
        if size == 0:
            return 0
        count = self._read_into(self._position, view[:size])
        self._position += count
        return count


#: URL schemes of remote archives.
REMOTE_SCHEMES = ("http://", "https://", "s3://")


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` names a remote archive (a URL) rather than a local path."""
    return isinstance(path, str) and path.lower().startswith(REMOTE_SCHEMES)


def remote_file(url: str, storage_options: Mapping | None = None) -> RangeFile:
    """The remote file at ``url`` (http, https, s3), its tail already fetched."""
    if url.lower().startswith("s3://"):
        from .ranges.s3 import S3File

        return S3File(url, storage_options)
    from .ranges.http import HTTPFile

    return HTTPFile(url, storage_options)


def open_source(path: str | Path, storage_options: Mapping | None = None) -> ByteSource:
    """Open a directory or ZIP archive, or a ZIP archive at an http(s) or s3 URL, as a byte
    source (TA-E001 for anything else; TA-E930/TA-E931 for a remote one that cannot be
    read). ``storage_options``: see :class:`~tiled_archive.sources.ranges.http.HTTPFile` and
    :class:`~tiled_archive.sources.ranges.s3.S3File`."""
    from ..rules.problems import ArchiveError
    from .directory import DirectorySource
    from .zip import ZipSource

    if is_remote(path):
        assert isinstance(path, str)
        return ZipSource(remote_file(path, storage_options))
    path = Path(path)
    if path.is_dir():
        return DirectorySource(path)
    if path.is_file():
        return ZipSource(path)
    raise ArchiveError("TA-E001", str(path), "no such directory or ZIP file")
