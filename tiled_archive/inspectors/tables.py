"""Tables: Parquet metadata and CSV sizes, for what reading a partition decodes.

A Parquet file states, per row group and column, how many values it holds and how many bytes
they take uncompressed; run-length and dictionary encoding can make a column of a billion
zeros a few kilobytes, so a fixed-width column is also counted as values times width. A CSV
partition's parsed size is estimated from its text (``CSV_EXPANSION`` bytes per byte).
"""

from __future__ import annotations

import codecs

from ..rules.budget import CSV_EXPANSION
from ..rules.catalog_rows import DataSourceRow
from ..rules.problems import reason
from ..sources import ByteSource
from . import Inspection, add, not_the_file

#: Bytes per value of Parquet's physical types (byte arrays: Arrow's offset per value).
_WIDTH = {
    "BOOLEAN": 1,
    "INT32": 4,
    "INT64": 8,
    "INT96": 12,
    "FLOAT": 4,
    "DOUBLE": 8,
    "BYTE_ARRAY": 8,
}


def inspect_parquet(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    import pyarrow.parquet as pq

    partitions = []
    stored = 0
    for path in row.members():
        stored += source.members()[path].size
        try:
            with source.open(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
                partitions.append(_decoded_bytes(metadata))
        except Exception as err:  # noqa: BLE001 -- pyarrow raises many types on bad input
            not_the_file(err)
            add(result, "TA-E601", path, f"not a readable Parquet file: {reason(err)}")
            return
    result.partitions = partitions
    result.decoded, result.stored = sum(partitions), stored


def _decoded_bytes(metadata) -> int:
    total = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            physical = column.physical_type
            width = _WIDTH.get(physical, 0)
            if physical == "FIXED_LEN_BYTE_ARRAY":
                width = metadata.schema.column(column_index).length or 0
            total += max(column.total_uncompressed_size, column.num_values * width)
    return total


def inspect_csv(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    """A CSV partition is UTF-8 text without NUL bytes (what ``pandas.read_csv`` reads without
    an ``encoding`` parameter, which an archive may not carry)."""
    sizes = []
    for path in row.members():
        sizes.append(source.members()[path].size)
        problem = _not_text(source, path)
        if problem:
            add(result, "TA-E601", path, f"not CSV text: {problem}")
            return
    result.partitions = [size * CSV_EXPANSION for size in sizes]
    result.stored = sum(sizes)


def _not_text(source: ByteSource, path: str) -> str | None:
    """Why member ``path`` is not UTF-8 text (None when it is)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with source.open(path) as handle:
        while chunk := handle.read(1 << 20):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                return f"a NUL byte at byte {offset + nul}"
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                return f"not UTF-8 at byte {offset + err.start}"
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "ends inside a UTF-8 character"
    return None
