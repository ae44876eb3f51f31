"""A ZIP file's structure, parsed strictly: end records, central directory, local headers.

Python's ``zipfile`` papers over what the validator must report (it silently shifts every offset
when bytes were prepended, ignores gaps, overlaps and trailing data), so the structure is parsed
here with ``struct``, and every deviation from the ZIP rules of the format (spec 6: TA-E100,
TA-E106 to TA-E109, TA-E112) becomes a ``Problem``. What the members may be, and where the
archive's own files must sit, is :mod:`.member_rules`'s.

The bytes come from any :class:`Readable` (a local file, mapped, or a remote one read by range).
A local file's local headers are all read and checked on opening; a remote one's only when the
member is first used (:meth:`ZipDirectory.resolve`), unless ``every_header`` is asked for.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..rules.names import ALIGNMENT, CATALOG_NAME
from ..rules.problems import ArchiveError, Problem
from . import records as zf

_MAX_COMMENT = 0xFFFF
#: The largest central directory read (~10 million members): it is held in memory, and a
#: remote server could otherwise claim, and send, any size.
MAX_CENTRAL_DIRECTORY = 1 << 30


class Readable(Protocol):
    """What the parser reads through (``sources.ranges.RangeFile`` is one)."""

    size: int

    def pread(self, offset: int, size: int) -> bytes: ...

    def read_once(self, offset: int, size: int) -> bytes: ...

    def map(self) -> Any: ...

    def prefetch(self, ranges: list[tuple[int, int]]) -> None: ...


class ZipRecord(NamedTuple):
    """One central directory record, with where its data starts according to its local header.

    Offsets are positions in the file (after any shift for prepended bytes, see ``TA-E108``).
    ``data_offset`` is None when the local header could not be read. A named tuple: a ZIP may
    hold millions of records, and a tuple is made in a third of a dataclass's time.
    """

    name: str
    method: int
    flags: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int | None
    external_attr: int

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    def at(self, data_offset: int) -> ZipRecord:
        """This record with its data offset (``_replace`` takes three times as long)."""
        return tuple.__new__(ZipRecord, (*self[:7], data_offset, self.external_attr))


@dataclass(frozen=True)
class _EndRecords:
    """What the end records say about the central directory."""

    count: int
    cd_offset: int
    cd_size: int
    start: int  # where the end records (ZIP64 ones included) begin


class ZipDirectory:
    """The records of a ZIP file, with every structural problem found while parsing it.

    Raises ``ArchiveError("TA-E100")`` only when no central directory can be read at all.
    ``head``: members read in one request with the first local header when headers are read
    on use (the archive's tag files, for a remote ZIP).
    """

    def __init__(
        self,
        file: Readable,
        *,
        every_header: bool = False,
        head: Collection[str] = (),
        judged: Callable[[str], bool] | None = None,
    ):
        """``judged``: given the :attr:`digest` of the central directory and end records,
        whether they were judged clean before (a verdict kept): then only the records up to
        the ``head`` members are parsed now, the rest by :meth:`parse_rest` when needed, and
        every local header is read on first use."""
        self.file = file
        self.problems: list[Problem] = []
        self.entries: list[ZipRecord] = []
        #: The first member's local extra-field length (None: its header could not be read).
        self.first_local_extra: int | None = None
        #: Local headers are read on first use (a remote file), not all while opening.
        self.lazy = False
        #: Every record is parsed (else :meth:`parse_rest` parses the records after the head).
        self.complete = True
        #: Judged clean before: nothing was checked but the first member's local header.
        self.judged = False
        #: SHA-256 of the central directory and the end records, with the file's size: the
        #: bytes the problems found while opening depend on, but for the local headers.
        self.digest = ""
        self.cd_start = 0
        self._every_header = every_header
        self._head = frozenset(head)
        self._map: Any = None
        self._window: tuple[int, bytes] | None = None  # (start, bytes) around a local header
        self._resolving = threading.Lock()
        self._tail = b""
        self._rest: tuple[bytes, int, int, int] | None = None  # (raw, position, shift, count)
        self._parse(judged)

    def resolve(self, record: ZipRecord) -> ZipRecord:
        """``record`` with its data offset, its local header read and checked first when that
        was left for first use: a problem found there is raised as its code."""
        if record.data_offset is not None:
            return record
        with self._resolving:
            before = len(self.problems)
            # One small request for the header, its name and extra field (the writer's
            # alignment padding is at most 4,102 bytes), not a block and its read-ahead.
            length = zf.LOCAL_HEADER.size + len(record.name.encode()) + 2 * ALIGNMENT
            end = min(record.header_offset + length, self.cd_start)
            self._window = (
                record.header_offset,
                self.file.read_once(record.header_offset, end - record.header_offset),
            )
            try:
                resolved, _, _ = self._read_local_header(record, self.cd_start)
            finally:
                self._window = None
            found = [p for p in self.problems[before:] if p.severity == "error"]
            if found:
                raise ArchiveError(found[0].code, found[0].path, found[0].message)
            if resolved.data_offset is None:
                raise ArchiveError("TA-E100", record.name, "its local header cannot be read")
            return resolved

    def _pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        return self.file.pread(offset, size)

    def _header_bytes(self, offset: int, size: int) -> bytes:
        """Bytes of a local header: from the map of a local file, or the window just read
        around it, else read."""
        if self._map is not None:
            return self._map[offset : offset + size]
        if self._window is not None:
            start, data = self._window
            if start <= offset and offset + size <= start + len(data):
                return data[offset - start : offset - start + size]
        return self._pread(offset, size)

    def _problem(self, code: str, path: str | None, message: str) -> None:
        self.problems.append(Problem(code, path, message))

    def _parse(self, judged: Callable[[str], bool] | None) -> None:
        file_size = self.file.size
        end = self._read_end_records(file_size)
        cd_start = self.cd_start = self._locate_central_directory(end)
        if end.cd_size > min(file_size, MAX_CENTRAL_DIRECTORY):
            raise ArchiveError(
                "TA-E100",
                None,
                f"a central directory of {end.cd_size} bytes (the file has {file_size}; "
                f"this reader reads at most {MAX_CENTRAL_DIRECTORY})",
            )
        raw = self._pread(cd_start, end.cd_size)
        if len(raw) != end.cd_size:
            raise ArchiveError("TA-E100", None, "the central directory runs past the file's end")
        shift = cd_start - end.cd_offset
        digest = hashlib.sha256(f"{file_size} {cd_start} {end}".encode())
        digest.update(raw)
        digest.update(self._tail)
        self.digest = digest.hexdigest()
        if judged is not None and not self._every_header and judged(self.digest):
            self._parse_head(raw, shift, end.count)
            return
        # Local headers are read through a map of the file: one system call for them all,
        # where a ZIP of 200,000 members would otherwise take 400,000 preads. A remote file
        # has no map: only the first member's (mimetype's) is read now, the others on use.
        mapped = self.file.map()
        self._map, self.lazy = mapped, mapped is None and not self._every_header
        try:
            layout: list[tuple[int, int, str]] = []
            first_local_extra: int | None = None
            position = 0
            while position < len(raw):
                record, complete, position = self._parse_central_record(raw, position, shift)
                if record is None:
                    break
                extra_length = occupied_end = None
                if complete and not self.lazy:
                    record, extra_length, occupied_end = self._read_local_header(record, cd_start)
                if not self.entries:
                    first_local_extra = extra_length
                self.entries.append(record)
                if occupied_end is not None:
                    layout.append((record.header_offset, occupied_end, record.name))
            if self.lazy and self.entries:
                first_local_extra = self._read_head(cd_start)
        finally:
            if mapped is not None:
                mapped.close()
            self._map = None
        self._check_count(end.count)
        if not self.lazy:
            self._check_layout(layout, cd_start)
        self.first_local_extra = first_local_extra

    def _parse_head(self, raw: bytes, shift: int, count: int) -> None:
        """Parse the records up to the last ``head`` member or ``catalog.db`` and one after
        it (where their bytes end), and read the first member's local header; the rest
        later."""
        self.lazy, self.complete, self.judged = True, False, True
        position, missing, after_head = 0, {*self._head, CATALOG_NAME}, False
        while position < len(raw) and not after_head:
            after_head = not missing
            record, _, position = self._parse_central_record(raw, position, shift)
            if record is None:
                break
            self.entries.append(record)
            missing.discard(record.name)
        self._rest = (raw, position, shift, count)
        if position >= len(raw):
            self.parse_rest()
        if self.entries:
            self.first_local_extra = self._read_head(self.cd_start)

    def parse_rest(self) -> None:
        """Parse the records :meth:`_parse_head` left (their local headers read on use)."""
        if self._rest is None:
            return
        raw, position, shift, count = self._rest
        while position < len(raw):
            record, _, position = self._parse_central_record(raw, position, shift)
            if record is None:
                break
            self.entries.append(record)
        self._rest, self.complete = None, True
        self._check_count(count)

    def _check_count(self, count: int) -> None:
        if len(self.entries) != count:
            self._problem(
                "TA-E100",
                None,
                f"the central directory holds {len(self.entries)} records, "
                f"the end record says {count}",
            )

    def _read_head(self, cd_start: int) -> int | None:
        """For a remote file: fetch the ``head`` members that come first in one request (the
        tag files, where the reference writer puts them), then read the first member's local
        header; its extra length."""
        later = [r.header_offset for r in self.entries if r.name not in self._head]
        self.file.prefetch([(0, min(later, default=cd_start))])
        first, extra_length, _ = self._read_local_header(self.entries[0], cd_start)
        self.entries[0] = first
        return extra_length

    def _read_end_records(self, file_size: int) -> _EndRecords:
        tail_start = max(0, file_size - zf.END_RECORD.size - _MAX_COMMENT)
        tail = self._tail = self._pread(tail_start, file_size - tail_start)
        position = _find_end_record(tail)
        if position is None:
            raise ArchiveError("TA-E100", None, "no end of central directory record")
        fields = zf.END_RECORD.unpack_from(tail, position)
        _, disk, cd_disk, disk_count, count, cd_size, cd_offset, comment_length = fields
        eocd = tail_start + position
        trailing = file_size - eocd - zf.END_RECORD.size
        if comment_length:
            self._problem("TA-E108", None, f"the ZIP has a {comment_length}-byte comment")
        if trailing > comment_length:
            self._problem(
                "TA-E108",
                None,
                f"{trailing - comment_length} bytes after the end of central directory record",
            )
        if disk != 0 or cd_disk != 0 or disk_count != count:
            self._problem("TA-E112", None, f"end record names disk {disk} of a multi-disk ZIP")
        zip64 = self._read_zip64_end(eocd)
        if zip64 is None:
            # The counts may be 0xFFFF for exactly 65535 members; sizes and offsets may not.
            if zf.MAX32 in (cd_size, cd_offset):
                raise ArchiveError(
                    "TA-E100", None, "0xFFFFFFFF in the end record but no ZIP64 end record"
                )
            return _EndRecords(count, cd_offset, cd_size, eocd)
        for label, value32, marker, value64 in (
            ("entry count", count, zf.MAX16, zip64.count),
            ("central directory size", cd_size, zf.MAX32, zip64.cd_size),
            ("central directory offset", cd_offset, zf.MAX32, zip64.cd_offset),
        ):
            if value32 not in (marker, value64):
                self._problem(
                    "TA-E109",
                    None,
                    f"{label}: the end record says {value32}, the ZIP64 end record {value64}",
                )
        return zip64

    def _read_zip64_end(self, eocd: int) -> _EndRecords | None:
        """The ZIP64 end record named by a locator right before ``eocd``, if there is one."""
        locator_at = eocd - zf.ZIP64_LOCATOR.size
        if locator_at < 0:
            return None
        locator = self._pread(locator_at, zf.ZIP64_LOCATOR.size)
        signature, disk, declared, disk_total = zf.ZIP64_LOCATOR.unpack(locator)
        if signature != zf.ZIP64_LOCATOR_SIGNATURE:
            return None
        if disk != 0 or disk_total > 1:
            self._problem("TA-E112", None, f"ZIP64 locator names {disk_total} disks")
        # Without an extensible data sector, the record ends where the locator begins.
        expected = locator_at - zf.ZIP64_END_RECORD.size
        record_at = None
        for candidate in dict.fromkeys((declared, expected)):
            if 0 <= candidate <= locator_at - zf.ZIP64_END_RECORD.size:
                raw = self._pread(candidate, zf.ZIP64_END_RECORD.size)
                if zf.ZIP64_END_RECORD.unpack(raw)[0] == zf.ZIP64_END_SIGNATURE:
                    record_at = candidate
                    break
        if record_at is None:
            self._problem("TA-E109", None, "the ZIP64 locator points at no ZIP64 end record")
            return None
        if record_at != declared:
            self._problem(
                "TA-E109",
                None,
                f"the ZIP64 locator points at {declared}, the ZIP64 end record is at {record_at}",
            )
        fields = zf.ZIP64_END_RECORD.unpack(self._pread(record_at, zf.ZIP64_END_RECORD.size))
        _, record_size, _, _, disk, cd_disk, disk_count, count, cd_size, cd_offset = fields
        if record_at + 12 + record_size != locator_at:
            self._problem(
                "TA-E109", None, "the ZIP64 end record does not end where its locator begins"
            )
        if disk != 0 or cd_disk != 0 or disk_count != count:
            self._problem("TA-E112", None, f"ZIP64 end record names disk {disk}")
        return _EndRecords(count, cd_offset, cd_size, record_at)

    def _locate_central_directory(self, end: _EndRecords) -> int:
        """Where the central directory starts; prepended bytes shift it (and are a problem)."""
        expected = end.start - end.cd_size
        if expected < 0:
            raise ArchiveError("TA-E100", None, "the central directory is larger than the file")

        def starts_there(position: int) -> bool:
            signature = self._pread(position, 4)
            return end.cd_size == 0 or signature == struct.pack("<I", zf.CENTRAL_SIGNATURE)

        if end.cd_offset == expected:
            return expected
        if end.cd_offset < expected and starts_there(end.cd_offset):
            self._problem(
                "TA-E108",
                None,
                f"{expected - end.cd_offset} bytes between the central directory and the end "
                "record",
            )
            return end.cd_offset
        if end.cd_offset < expected and starts_there(expected):
            self._problem(
                "TA-E108",
                None,
                f"every offset is {expected - end.cd_offset} bytes short: data was prepended",
            )
            return expected
        raise ArchiveError("TA-E100", None, f"no central directory at offset {end.cd_offset}")

    def _parse_central_record(
        self, raw: bytes, position: int, shift: int
    ) -> tuple[ZipRecord | None, bool, int]:
        """The record at ``position`` of the central directory, whether its sizes and offset are
        known (ZIP64 markers resolved), and where the next record starts."""
        if position + zf.CENTRAL_HEADER.size > len(raw):
            self._problem("TA-E100", None, "the central directory ends inside a record")
            return None, False, len(raw)
        fields = zf.CENTRAL_HEADER.unpack_from(raw, position)
        signature, _, _, flags, method, _, _, crc, compressed, size = fields[:10]
        name_length, extra_length, comment_length, disk, _, external, offset = fields[10:]
        name_at = position + zf.CENTRAL_HEADER.size
        after = name_at + name_length + extra_length + comment_length
        if signature != zf.CENTRAL_SIGNATURE or after > len(raw):
            self._problem("TA-E100", None, f"bad central directory record at byte {position}")
            return None, False, len(raw)
        name = _decode_name(raw[name_at : name_at + name_length])
        values: list[int] | None = [size, compressed, offset]
        if zf.MAX32 in values:
            extra_at = name_at + name_length
            values = _zip64_values(_extra_fields(raw[extra_at : extra_at + extra_length]), values)
        if values is None:
            self._problem("TA-E109", name, "0xFFFFFFFF size or offset without a ZIP64 extra")
        else:
            size, compressed, offset = values
        if disk != 0:
            self._problem("TA-E112", name, f"member starts on disk {disk}")
        record = ZipRecord(
            name, method, flags, crc, compressed, size, offset + shift, None, external
        )
        return record, values is not None, after

    def _read_local_header(
        self, record: ZipRecord, cd_start: int
    ) -> tuple[ZipRecord, int | None, int | None]:
        """The record with its data offset, its local extra length and where its bytes end.

        Where the local header cannot be read, the record comes back unchanged with Nones.
        """
        start = record.header_offset
        if start + zf.LOCAL_HEADER.size > cd_start:
            self._problem("TA-E107", record.name, "local header outside the member area")
            return record, None, None
        fields = zf.LOCAL_HEADER.unpack(self._header_bytes(start, zf.LOCAL_HEADER.size))
        signature, _, flags, method, _, _, crc, compressed, size, name_length, extra_length = fields
        if signature != zf.LOCAL_SIGNATURE:
            self._problem("TA-E100", record.name, f"no local file header at byte {start}")
            return record, None, None
        data_offset = start + zf.LOCAL_HEADER.size + name_length + extra_length
        variable_at = start + zf.LOCAL_HEADER.size
        variable = self._header_bytes(variable_at, name_length + extra_length)
        if zf.MAX32 in (size, compressed) and not flags & zf.FLAG_DESCRIPTOR:
            values = _zip64_values(_extra_fields(variable[name_length:]), [size, compressed])
            if values is None:
                self._problem("TA-E109", record.name, "local header: 0xFFFFFFFF without ZIP64")
            else:
                size, compressed = values
        local = (variable[:name_length], method, flags)
        central = (record.name.encode("utf-8", "surrogateescape"), record.method, record.flags)
        labels = ["name", "method", "flags"]
        if not flags & zf.FLAG_DESCRIPTOR:
            local += (crc, compressed, size)
            central += (record.crc32, record.compressed_size, record.size)
            labels += ["CRC-32", "compressed size", "size"]
        disagreements = (
            [label for label, a, b in zip(labels, local, central, strict=True) if a != b]
            if local != central  # one comparison for the usual member
            else []
        )
        if disagreements:
            self._problem(
                "TA-E106",
                record.name,
                f"local header and central directory disagree on {', '.join(disagreements)}",
            )
        data_end = data_offset + record.compressed_size
        if data_end > cd_start:
            self._problem("TA-E107", record.name, "member data runs into the central directory")
            return record, extra_length, None
        if record.flags & zf.FLAG_DESCRIPTOR:
            data_end += self._descriptor_length(record, data_end, cd_start)
        return record.at(data_offset), extra_length, data_end

    def _descriptor_length(self, record: ZipRecord, position: int, limit: int) -> int:
        """Length of the data descriptor after a bit-3 member's data (0 when none matches)."""
        raw = self._pread(position, min(24, limit - position))
        expected = (record.crc32, record.compressed_size, record.size)
        signed = struct.pack("<I", zf.DESCRIPTOR_SIGNATURE)
        for prefix, layout in ((signed, "<IQQ"), (signed, "<III"), (b"", "<IQQ"), (b"", "<III")):
            length = len(prefix) + struct.calcsize(layout)
            if (
                len(raw) >= length
                and raw.startswith(prefix)
                and struct.unpack_from(layout, raw, len(prefix)) == expected
            ):
                return length
        return 0

    def _check_layout(self, layout: list[tuple[int, int, str]], cd_start: int) -> None:
        """Members must tile the bytes before the central directory: no gap, no overlap."""
        cursor = 0
        for start, end, name in sorted(layout):
            if start > cursor:
                where = "before the first local header" if cursor == 0 else "before this member"
                self._problem("TA-E108", name, f"{start - cursor} unaccounted bytes {where}")
            elif start < cursor:
                self._problem("TA-E107", name, "overlaps the member before it")
            cursor = max(cursor, end)
        if cursor < cd_start:
            self._problem(
                "TA-E108",
                None,
                f"{cd_start - cursor} unaccounted bytes before the central directory",
            )


def _find_end_record(tail: bytes) -> int | None:
    """Position in ``tail`` of the end of central directory record.

    Preferred: the last signature whose comment length ends the record exactly at the end of
    the file. Failing that, the last signature with room for a whole record (trailing data).
    """
    fallback = None
    position = tail.rfind(zf.END_SIGNATURE)
    while position >= 0:
        if position + zf.END_RECORD.size <= len(tail):
            comment_length = zf.END_RECORD.unpack_from(tail, position)[-1]
            if position + zf.END_RECORD.size + comment_length == len(tail):
                return position
            if fallback is None:
                fallback = position
        position = tail.rfind(zf.END_SIGNATURE, 0, position)
    return fallback


def _decode_name(raw: bytes) -> str:
    """Names are UTF-8 whatever flag bit 11 says; undecodable bytes become surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def _extra_fields(raw: bytes) -> dict[int, bytes]:
    """The extra field blocks by header id (first of each id; a torn tail is ignored)."""
    blocks: dict[int, bytes] = {}
    position = 0
    while position + 4 <= len(raw):
        header_id, size = struct.unpack_from("<HH", raw, position)
        blocks.setdefault(header_id, raw[position + 4 : position + 4 + size])
        position += 4 + size
    return blocks


def _zip64_values(extras: dict[int, bytes], values: list[int]) -> list[int] | None:
    """``values`` with each 0xFFFFFFFF replaced from the ZIP64 extra, or None when it lacks one.

    The ZIP64 extra holds, in APPNOTE order, exactly the fields whose 32-bit value is the marker.
    """
    needed = sum(value == zf.MAX32 for value in values)
    if needed == 0:
        return values
    data = extras.get(0x0001, b"")
    if len(data) < 8 * needed:
        return None
    wide = iter(struct.unpack_from(f"<{needed}Q", data))
    return [next(wide) if value == zf.MAX32 else value for value in values]
