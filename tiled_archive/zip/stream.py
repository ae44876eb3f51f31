"""A streamed ZIP writer: one generator pipeline, no seeking, every member STORED and aligned.

We cannot use the ``stream-zip`` library because it has no hook for local-header extra fields,
so it cannot pad member data onto a 4096-byte boundary.

The caller gives each member's size and CRC-32 up front, so local headers carry the real values
(no data descriptors) and the output is a plain, deterministic byte stream: same entries, same
bytes. Data of aligned members starts on a multiple of ``format.ALIGNMENT`` thanks to the "Data
Stream Alignment" extra field (0xA11E, PKWARE APPNOTE 4.6.11, as written by Apache
commons-compress), so STORED members can be memory-mapped straight from the ZIP.
"""

from __future__ import annotations

import calendar
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..files.hashing import crc32
from ..rules.names import ALIGNMENT
from ..rules.problems import ArchiveError
from . import records as zf

_VERSION_NEEDED = 20
_VERSION_NEEDED_ZIP64 = 45
_MADE_BY = 0x031E  # Unix, APPNOTE 3.0
_MADE_BY_ZIP64 = 0x032D  # Unix, APPNOTE 4.5
_EXTERNAL_ATTR = 0o100644 << 16  # regular file, rw-r--r--
_EXTERNAL_ATTR_DIRECTORY = (0o040755 << 16) | 0x10  # directory, rwxr-xr-x; MS-DOS directory bit
# DOS dates cover 1980-01-01T00:00:00Z .. 2107-12-31T23:59:58Z (seconds since the epoch).
_DOS_EPOCH_MIN = 315532800
_DOS_EPOCH_MAX = 4354819198
# The central directory and end records are gathered into chunks of about this size.
_TAIL_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ZipEntry:
    """One member to write: its archive path, declared size and CRC-32, and its bytes."""

    name: str
    size: int
    crc32: int
    chunks: Callable[[], Iterable[bytes]]
    mtime: int
    align: bool = True
    #: A directory entry (its name ends in ``/``, it holds no bytes): only ``data/`` of an
    #: empty payload.
    is_directory: bool = False


def zip_stream(
    entries: Iterable[ZipEntry], *, force_zip64: bool = False, start: int = 0
) -> Iterator[bytes]:
    """Yield the bytes of a ZIP file holding ``entries``, in order, every member STORED; from
    byte ``start`` on (an HTTP range: members wholly before it are not read, the one it falls
    in is read from its start and the bytes before ``start`` dropped).

    Raises ``ArchiveError("TA-E905")`` when a member's bytes do not match its declared size and
    CRC-32 (the file changed while being written). ``force_zip64`` writes ZIP64 fields even where
    32 bits would do: in every central directory entry, the end records and the local headers of
    aligned members (an unaligned ``mimetype`` member keeps a local header without extra field).
    """
    position = 0
    for piece in _pieces(entries, force_zip64):
        length = len(piece) if isinstance(piece, bytes) else piece.size
        skip = start - position
        position += length
        if skip >= length:
            continue  # wholly before start: not read
        if isinstance(piece, bytes):
            yield piece[max(skip, 0) :]
            continue
        for chunk in _checked_chunks(piece):
            if skip > 0:
                chunk, skip = chunk[skip:], skip - len(chunk)
            if chunk:
                yield chunk


def zip_length(entries: Iterable[ZipEntry], *, force_zip64: bool = False) -> int:
    """The length of :func:`zip_stream`'s output, computed without reading any member."""
    return sum(
        len(piece) if isinstance(piece, bytes) else piece.size
        for piece in _pieces(entries, force_zip64)
    )


def zip_layout_digest(entries: Iterable[ZipEntry], *, force_zip64: bool = False) -> str:
    """SHA-256 of every byte of :func:`zip_stream`'s output that is not member data: local
    headers (names, sizes, CRC-32s, times, offsets), the central directory and end records.
    Equal layouts of members with equal content give equal streams."""
    digest = hashlib.sha256()
    for piece in _pieces(entries, force_zip64):
        if isinstance(piece, bytes):
            digest.update(piece)
    return digest.hexdigest()


def _pieces(entries: Iterable[ZipEntry], force_zip64: bool) -> Iterator[bytes | ZipEntry]:
    """The ZIP in order: header and trailer bytes, and each entry where its data goes."""
    offset = 0
    central = bytearray()
    count = 0
    for entry in entries:
        name = entry.name.encode("utf-8")
        dos_date, dos_time = _dos_datetime(entry.mtime)
        header = _local_header(entry, name, offset, dos_date, dos_time, force_zip64)
        yield header
        if entry.size:
            yield entry
        else:
            yield from _checked_chunks(entry)  # nothing to read; still checked
        central += _central_header(entry, name, offset, dos_date, dos_time, force_zip64)
        count += 1
        offset += len(header) + entry.size
    central += _end_records(count, len(central), offset, force_zip64)
    for start in range(0, len(central), _TAIL_CHUNK):
        yield bytes(central[start : start + _TAIL_CHUNK])


def _dos_datetime(mtime: int) -> tuple[int, int]:
    """DOS (date, time) of ``mtime`` in UTC, clamped into the years DOS dates can express."""
    t = time.gmtime(min(max(mtime, _DOS_EPOCH_MIN), _DOS_EPOCH_MAX))
    dos_date = (t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday
    dos_time = t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2
    return dos_date, dos_time


def dos_to_epoch(dos_time: int, dos_date: int) -> int:
    """A ZIP header's DOS time and date as seconds since the epoch (UTC, as written here);
    0 for fields that name no date."""
    moment = (
        (dos_date >> 9) + 1980,
        (dos_date >> 5) & 0xF,
        dos_date & 0x1F,
        dos_time >> 11,
        (dos_time >> 5) & 0x3F,
        (dos_time & 0x1F) * 2,
    )
    try:
        return calendar.timegm((*moment, 0, 0, 0))
    except (ValueError, OverflowError):
        return 0


def _local_header(
    entry: ZipEntry, name: bytes, offset: int, dos_date: int, dos_time: int, force_zip64: bool
) -> bytes:
    # An unaligned member (`mimetype`) keeps its local header bare even under force_zip64.
    zip64 = entry.size >= zf.MAX32 or (force_zip64 and entry.align)
    extra = struct.pack("<HHQQ", zf.ZIP64_EXTRA_ID, 16, entry.size, entry.size) if zip64 else b""
    if entry.align:
        unpadded = offset + zf.LOCAL_HEADER.size + len(name) + len(extra) + 6
        padding = -unpadded % ALIGNMENT
        extra += struct.pack("<HHH", zf.ALIGNMENT_EXTRA_ID, 2 + padding, ALIGNMENT)
        extra += bytes(padding)
    size32 = zf.MAX32 if zip64 else entry.size
    fixed = zf.LOCAL_HEADER.pack(
        0x04034B50,
        _VERSION_NEEDED_ZIP64 if zip64 else _VERSION_NEEDED,
        zf.FLAG_UTF8,
        0,  # STORED
        dos_time,
        dos_date,
        entry.crc32,
        size32,
        size32,
        len(name),
        len(extra),
    )
    return fixed + name + extra


def _checked_chunks(entry: ZipEntry) -> Iterator[bytes]:
    """Pass a member's chunks through, checking them against its declared size and CRC-32."""
    crc = 0
    size = 0
    for chunk in entry.chunks():
        if chunk:
            crc = crc32(chunk, crc)
            size += len(chunk)
            yield chunk
    if (size, crc) != (entry.size, entry.crc32):
        raise ArchiveError(
            "TA-E905",
            entry.name,
            f"changed while being written: declared {entry.size} bytes with CRC-32 "
            f"{entry.crc32:08x}, read {size} bytes with CRC-32 {crc:08x}",
        )


def _central_header(
    entry: ZipEntry, name: bytes, offset: int, dos_date: int, dos_time: int, force_zip64: bool
) -> bytes:
    # ZIP64 extra of the central directory: only the overflowing fields, in APPNOTE order.
    sizes64 = force_zip64 or entry.size >= zf.MAX32
    offset64 = force_zip64 or offset >= zf.MAX32
    fields = [entry.size, entry.size] if sizes64 else []
    if offset64:
        fields.append(offset)
    zip64 = bool(fields)  # true whenever the local header has a ZIP64 extra
    extra = struct.pack(f"<HH{len(fields)}Q", zf.ZIP64_EXTRA_ID, 8 * len(fields), *fields)
    extra = extra if zip64 else b""
    size32 = zf.MAX32 if sizes64 else entry.size
    return (
        zf.CENTRAL_HEADER.pack(
            0x02014B50,
            _MADE_BY_ZIP64 if zip64 else _MADE_BY,
            _VERSION_NEEDED_ZIP64 if zip64 else _VERSION_NEEDED,
            zf.FLAG_UTF8,
            0,  # STORED
            dos_time,
            dos_date,
            entry.crc32,
            size32,
            size32,
            len(name),
            len(extra),
            0,  # comment length
            0,  # disk number
            0,  # internal attributes
            _EXTERNAL_ATTR_DIRECTORY if entry.is_directory else _EXTERNAL_ATTR,
            zf.MAX32 if offset64 else offset,
        )
        + name
        + extra
    )


def _end_records(count: int, cd_size: int, cd_offset: int, force_zip64: bool) -> bytes:
    """The ZIP64 end record and locator when needed, then the end of central directory record."""
    count64 = force_zip64 or count > zf.MAX16
    size64 = force_zip64 or cd_size >= zf.MAX32
    offset64 = force_zip64 or cd_offset >= zf.MAX32
    records = b""
    if count64 or size64 or offset64:
        records = zf.ZIP64_END_RECORD.pack(
            0x06064B50,
            zf.ZIP64_END_RECORD.size - 12,
            _MADE_BY_ZIP64,
            _VERSION_NEEDED_ZIP64,
            0,
            0,
            count,
            count,
            cd_size,
            cd_offset,
        )
        records += zf.ZIP64_LOCATOR.pack(0x07064B50, 0, cd_offset + cd_size, 1)
    count16 = zf.MAX16 if count64 else count
    return records + zf.END_RECORD.pack(
        0x06054B50,
        0,
        0,
        count16,
        count16,
        zf.MAX32 if size64 else cd_size,
        zf.MAX32 if offset64 else cd_offset,
        0,  # no archive comment
    )
