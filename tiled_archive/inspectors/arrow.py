"""Arrow IPC files (one per table partition): what each decodes to, from its footer.

Tiled's ``ArrowAdapter`` reads a partition whole (``read_all``). Arrow IPC buffers may be
compressed (LZ4, ZSTD), and each compressed buffer states its decoded length in its first
8 bytes, which pyarrow allocates before it decompresses: a 63 KB file can ask for 4 GB. So a
partition's cost is the sum of its record batches' and dictionaries' buffers as decoded,
read from the file's footer and message headers (FlatBuffers, parsed here: pyarrow offers no
reader of a batch's metadata that does not also decompress its body). The footer is what
pyarrow reads batches by, so it is what is counted.
"""

from __future__ import annotations

import struct
from itertools import pairwise

from ..rules.catalog_rows import DataSourceRow
from ..rules.formats import ARROW_MIMETYPE
from ..sources import ByteSource
from . import Inspection, add

MIMETYPE = ARROW_MIMETYPE
MAGIC = b"ARROW1"
#: Footer and message headers read at the most (a crafted length field can say 2 GiB).
MAX_METADATA = 64 << 20
#: Record batches and dictionaries in one file, and buffers in all of them, at the most.
MAX_BLOCKS = 1_000_000
MAX_BUFFERS = 10_000_000
_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2
_NOT_COMPRESSED = -1


class _Malformed(Exception):
    """The file is not Arrow IPC as the format defines it (message: why)."""


class _Beyond(Exception):
    """The file's headers declare data beyond its end (or a buffer beyond its batch)."""


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    partitions = []
    stored = 0
    for path in row.members():
        size = source.members()[path].size
        stored += size
        try:
            partitions.append(decoded_bytes(source, path, size))
        except _Malformed as err:
            add(result, "TA-E601", path, f"not a readable Arrow IPC file: {err}")
            return
        except _Beyond as err:
            add(result, "TA-E602", path, str(err))
            return
    result.partitions = partitions
    result.decoded, result.stored = sum(partitions), stored


def decoded_bytes(source: ByteSource, path: str, size: int) -> int:
    """The bytes every record batch and dictionary of the file decodes to."""
    if size < 2 * len(MAGIC) + 4 + 2:
        raise _Malformed("shorter than its magic numbers")
    if source.read(path, 0, len(MAGIC)) != MAGIC:
        raise _Malformed("no ARROW1 magic number at its start")
    tail = source.read(path, size - len(MAGIC) - 4, len(MAGIC) + 4)
    if tail[4:] != MAGIC:
        raise _Malformed("no ARROW1 magic number at its end")
    (footer_size,) = struct.unpack("<i", tail[:4])
    footer_start = size - len(MAGIC) - 4 - footer_size
    if footer_size <= 0 or footer_size > MAX_METADATA or footer_start < 8:
        raise _Malformed(f"a footer of {footer_size} bytes")
    footer = FlatBuffer(source.read(path, footer_start, footer_size))
    root = footer.root()
    blocks = [*footer.structs(root, 2, 24), *footer.structs(root, 3, 24)]
    if len(blocks) > MAX_BLOCKS:
        raise _Malformed(f"more than {MAX_BLOCKS} record batches and dictionaries")
    spans = []
    for at in blocks:
        offset, metadata_size, body_size = struct.unpack_from("<qi4xq", footer.data, at)
        if min(offset, metadata_size, body_size) < 0 or metadata_size > MAX_METADATA:
            raise _Malformed(f"a block at byte {offset} of {metadata_size} + {body_size} bytes")
        if offset + metadata_size + body_size > footer_start:
            raise _Beyond(f"a record batch at byte {offset} extends past the file's data")
        spans.append((offset, metadata_size, body_size))
    # Blocks that overlap would have their headers read (and their data counted) once per
    # block: a footer listing one block a million times costs a million reads of it.
    spans.sort()
    for (offset, metadata_size, body_size), (following, *_) in pairwise(spans):
        if offset + metadata_size + body_size > following:
            raise _Beyond(f"the record batches at bytes {offset} and {following} overlap")
    budget = [MAX_BUFFERS]
    return sum(_batch_bytes(source, path, *span, budget) for span in spans)


def _batch_bytes(
    source: ByteSource,
    path: str,
    offset: int,
    metadata_size: int,
    body_size: int,
    buffers_left: list[int],
) -> int:
    """The bytes one record batch (or dictionary batch) message's buffers decode to
    (``buffers_left``: how many more buffers the file may have, counted down)."""
    body = offset + metadata_size
    raw = source.read(path, offset, metadata_size)
    skip = 8 if raw[:4] == b"\xff\xff\xff\xff" else 4  # continuation marker (absent before 0.15)
    if len(raw) < skip:
        raise _Malformed(f"a message header at byte {offset} is cut short")
    message = FlatBuffer(raw[skip:])
    root = message.root()
    kind = message.scalar(root, 1, "<B", 0)
    header = message.table(root, 2)
    if kind == _DICTIONARY_BATCH and header is not None:
        header = message.table(header, 1)  # DictionaryBatch.data: a RecordBatch
    elif kind != _RECORD_BATCH:
        raise _Malformed(f"the block at byte {offset} holds no record batch (type {kind})")
    if header is None:
        return 0
    compressed = message.table(header, 3) is not None  # RecordBatch.compression
    total = 0
    buffers = message.structs(header, 2, 16)  # RecordBatch.buffers
    buffers_left[0] -= len(buffers)
    if buffers_left[0] < 0:
        raise _Malformed(f"more than {MAX_BUFFERS} buffers")
    for at in buffers:
        start, length = struct.unpack_from("<qq", message.data, at)
        if start < 0 or length < 0 or start + length > body_size:
            raise _Beyond(f"a buffer of the record batch at byte {offset} lies outside it")
        if not compressed or length == 0:
            total += length
            continue
        if length < 8:
            raise _Malformed(f"a compressed buffer of {length} bytes at byte {body + start}")
        (decoded,) = struct.unpack("<q", source.read(path, body + start, 8))
        total += length - 8 if decoded == _NOT_COMPRESSED else max(decoded, 0)
    return total


class FlatBuffer:
    """Just enough of the FlatBuffers wire format to read Arrow's footer and message headers:
    tables by vtable, struct vectors, and scalars, every offset checked against the bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def _u32(self, at: int) -> int:
        try:
            return struct.unpack_from("<I", self.data, at)[0]
        except struct.error:
            raise _Malformed(f"an offset at byte {at} of a {len(self.data)}-byte header") from None

    def root(self) -> int:
        return self._checked(self._u32(0))

    def _checked(self, at: int) -> int:
        if not 0 <= at < len(self.data):
            raise _Malformed(f"an offset to byte {at} of a {len(self.data)}-byte header")
        return at

    def _field(self, table: int, index: int) -> int | None:
        try:
            (back,) = struct.unpack_from("<i", self.data, table)
            vtable = self._checked(table - back)
            (vtable_size,) = struct.unpack_from("<H", self.data, vtable)
            slot = 4 + 2 * index
            if slot + 2 > vtable_size:
                return None
            (at,) = struct.unpack_from("<H", self.data, vtable + slot)
        except struct.error:
            raise _Malformed(f"a table at byte {table} is cut short") from None
        return self._checked(table + at) if at else None

    def table(self, table: int, index: int) -> int | None:
        at = self._field(table, index)
        return None if at is None else self._checked(at + self._u32(at))

    def scalar(self, table: int, index: int, layout: str, default: int) -> int:
        at = self._field(table, index)
        if at is None:
            return default
        try:
            return struct.unpack_from(layout, self.data, at)[0]
        except struct.error:
            raise _Malformed(f"a field at byte {at} is cut short") from None

    def structs(self, table: int, index: int, width: int) -> range:
        """The byte positions of a vector of structs, each ``width`` bytes."""
        at = self._field(table, index)
        if at is None:
            return range(0)
        vector = self._checked(at + self._u32(at))
        count = self._u32(vector)
        start = vector + 4
        if start + count * width > len(self.data):
            raise _Malformed(f"a vector of {count} entries at byte {vector} is cut short")
        return range(start, start + count * width, width)
