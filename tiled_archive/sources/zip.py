"""A ZIP file as a byte source: the archive's members, read in place.

The ZIP is parsed by :class:`~tiled_archive.zip.parser.ZipDirectory` and its members judged by
the format's rules (:func:`~tiled_archive.zip.member_rules.member_problems`); every problem found is
in :attr:`ZipSource.problems`. STORED members are read by position at their data offset;
Deflate and Deflate64 members are decompressed by ``zipfile`` (with ``zipfile_deflate64`` for
method 9), sequentially.

The bytes come from a :class:`~tiled_archive.sources.ranges.RangeFile`. A local one is mapped
and every local header checked on opening. A remote one is not read whole: opening reads its
tail (end records and central directory), and each member's local header is read and checked
when the member is first read (a disagreement is then raised as its code); ``validate`` reads
every byte anyway.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import zipfile_deflate64  # noqa: F401 -- patches zipfile to decompress method 9 (Deflate64)

from ..files import verdicts
from ..rules.problems import ArchiveError, Problem
from ..zip import records as zf
from ..zip.member_rules import TAG_NAMES, first_member_problems, member_problems
from ..zip.parser import ZipDirectory, ZipRecord
from . import ByteSource, Member, PositionalRawIO, Span
from .ranges import LocalFile, RangeFile


class ZipSource(ByteSource):
    """The members of a ZIP file, with every problem found while opening it (``problems``:
    the ZIP's structure, then its members under the format's rules; ``entries``: every
    central directory record, in order).

    Raises ``ArchiveError("TA-E100")`` only when no central directory can be read at all.
    """

    def __init__(self, file: Path | RangeFile, *, every_header: bool = False):
        """``every_header``: read and check every local header while opening, as a local
        file's always are (``validate`` asks for it; a remote file's are otherwise read on
        first use).

        Without it, a central directory (and end records) judged clean before, whose verdict
        is kept (:mod:`tiled_archive.files.verdicts`), is not judged again: its warnings are
        the kept ones, only the archive's own files are parsed now and the other records when
        a member outside them is first asked for, every local header is read and checked on
        first use. Opening a ZIP of 100,000 members then costs what opening one of ten does,
        and the central directory's hashing."""
        self.file = file if isinstance(file, RangeFile) else LocalFile(file)
        self.location = self.file.location
        kept: list[list[str | None]] = []

        def judged(digest: str) -> bool:
            found = None if every_header else verdicts.kept("zip", digest)
            if not isinstance(found, list):
                return False
            kept.extend(found)
            return True

        try:
            self.directory = ZipDirectory(
                self.file, every_header=every_header, head=TAG_NAMES, judged=judged
            )
        except BaseException:
            self.close()
            raise
        #: One list: problems a remote member's local header shows on first use join it.
        self.problems = self.directory.problems
        if not self.directory.judged:
            found, self._members = member_problems(
                self.entries, self.directory.first_local_extra, lazy=self.directory.lazy
            )
            self.problems.extend(found)
            if not any(p.severity == "error" for p in self.problems):
                verdicts.keep(
                    "zip",
                    self.directory.digest,
                    [[p.code, p.path, p.message, p.hint] for p in self.problems],
                )
        else:
            self.problems.extend(Problem(*problem) for problem in kept)
            self.problems.extend(
                first_member_problems(self.directory.entries, self.directory.first_local_extra)
            )
            self._members = _files_of(self.directory.entries)
        self._listing: dict[str, Member] | None = None

    @property
    def entries(self) -> list[ZipRecord]:
        """Every central directory record, in order."""
        self._parse_rest()
        return self.directory.entries

    def _parse_rest(self) -> None:
        """The records after the archive's own files, when only those were parsed."""
        if not self.directory.complete:
            self.directory.parse_rest()
            head = self._members
            self._members = _files_of(self.directory.entries)
            self._members.update(head)  # with the data offsets their use found

    # -- ByteSource ------------------------------------------------------------------------

    def members(self) -> Mapping[str, Member]:
        if self._listing is None:
            self._parse_rest()
            self._listing = {name: Member(name, r.size) for name, r in self._members.items()}
        return MappingProxyType(self._listing)

    def holds(self, path: str) -> bool:
        return path in self._members or path in self.members()

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        record = self._record(path)
        if offset < 0 or (size is not None and size < 0):
            raise ValueError(f"negative offset or size: {offset}, {size}")
        end = record.size if size is None else min(record.size, offset + size)
        if offset >= end:
            return b""
        if record.method != zf.STORED:
            return self._read_compressed(record, offset, end - offset)
        assert record.data_offset is not None
        data = self.file.pread(record.data_offset + offset, end - offset)
        if len(data) != end - offset:
            raise ArchiveError("TA-E100", path, "the file ends inside the member's data")
        return data

    def read_into(self, path: str, offset: int, buffer: memoryview) -> int:
        record = self._record(path)
        if record.method != zf.STORED:
            return super().read_into(path, offset, buffer)
        assert record.data_offset is not None
        size = min(len(buffer), max(0, record.size - offset))
        # One read straight into the caller's buffer: no intermediate bytes object.
        count = self.file.read_into(record.data_offset + offset, buffer[:size])
        if count != size:
            raise ArchiveError("TA-E100", path, "the file ends inside the member's data")
        return count

    def open(self, path: str) -> BinaryIO:
        """A file over one member: seekable by position for STORED members.

        For Deflate/Deflate64 members this is ``zipfile``'s own sequential stream: seeking
        backwards restarts decompression from the member's first byte.
        """
        record = self._record(path)
        if record.method == zf.STORED:
            return super().open(path)
        return self._open_compressed(record)

    def span(self, path: str) -> Span | None:
        record = self._record(path)
        if record.method != zf.STORED or self.file.local_path is None:
            return None
        assert record.data_offset is not None
        return Span(self.file.local_path, record.data_offset, record.size)

    def crc32(self, path: str) -> int:
        """The member's CRC-32 as the central directory declares it."""
        return self._record_unread(path).crc32

    def close(self) -> None:
        self.file.close()

    def prefetch(self, paths: list[str]) -> None:
        """A hint that these members are about to be read: their regions of the file (local
        header and data), adjacent ones merged, are handed to the file to fetch at once."""
        records = [self._record_unread(path) for path in paths]
        # The parsed records' starts: every record's, or (the rest not parsed yet) the head's
        # and the one after it, which is where the head's bytes end.
        starts = sorted(r.header_offset for r in self.directory.entries)
        starts.append(self.directory.cd_start)
        ranges: list[tuple[int, int]] = []
        for record in sorted(records, key=lambda r: r.header_offset):
            start = record.header_offset
            end = next(s for s in starts if s > start)
            if end == self.directory.cd_start and not self.directory.complete:
                self._parse_rest()
                return self.prefetch(paths)
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))
        self.file.prefetch(ranges)

    def _record_unread(self, path: str) -> ZipRecord:
        """A member's record as the central directory gives it (local header maybe unread)."""
        record = self._members.get(path)
        if record is None:
            self._parse_rest()
            record = self._members[path]
        return record

    def _record(self, path: str) -> ZipRecord:
        """A member's record with its data offset (its local header read and checked on first
        use, for a remote ZIP: a problem found there is raised as its code)."""
        record = self._record_unread(path)
        if record.data_offset is None:
            record = self._members[path] = self.directory.resolve(record)
        return record

    def _open_compressed(self, record: ZipRecord) -> BinaryIO:
        info = zipfile.ZipInfo(record.name)
        info.compress_type = record.method
        info.compress_size = record.compressed_size
        info.file_size = record.size
        info.CRC = record.crc32
        assert record.data_offset is not None
        start = record.data_offset

        def read_compressed(position: int, view: memoryview) -> int:
            return self.file.read_into(start + position, view)

        raw = PositionalRawIO(read_compressed, record.compressed_size, record.name)
        return zipfile.ZipExtFile(raw, "r", info, close_fileobj=True)  # type: ignore[return-value]

    def _read_compressed(self, record: ZipRecord, offset: int, size: int) -> bytes:
        try:
            with self._open_compressed(record) as stream:
                stream.seek(offset)
                return stream.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise ArchiveError("TA-E111", record.name, f"cannot decompress: {err}") from err


def _files_of(entries: list[ZipRecord]) -> dict[str, ZipRecord]:
    """The file records of a central directory judged clean before, by name: every one is a
    readable member (a duplicate, or one this reader cannot read, is an error, and no verdict
    is kept for a ZIP with errors)."""
    return {record.name: record for record in entries if not record.is_dir}
