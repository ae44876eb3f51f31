"""The reader's memory budget: how much one read may decode, checked before it allocates.

A declared size can be honest and still too large to read at once (an array of 10^15 fill
values, a Parquet column of zeros that compresses a million to one). Such an archive is valid;
reading it whole is refused with TA-E912 before any buffer is allocated, and a smaller slice
still reads. The default matches Tiled's own response size limit (a response any larger would
be refused by Tiled after reading); ``TILED_ARCHIVE_READ_BUDGET`` (bytes) changes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from .problems import ArchiveError

BUDGET_CODE = "TA-E912"
DEFAULT_BUDGET = 300_000_000
#: validate warns (TA-W600) of data decoding to more than BOMB_RATIO times its stored bytes,
#: once it decodes to BOMB_MIN_BYTES or more.
BOMB_RATIO = 1000
BOMB_MIN_BYTES = 64 << 20
#: The most one chunk may decode to serve a read when the data source is no compression bomb:
#: ten times the largest chunk Tiled's client writes by itself (100 MB, its upload limit), so
#: the chunks a user's own dask chunking gave, which the live server decoded, read here too.
CHUNK_ALLOWANCE = 1 << 30
#: Bytes of memory a CSV's parsed table takes per byte of text (numbers and short strings).
CSV_EXPANSION = 4


def read_budget() -> int:
    """Bytes one read may decode (``TILED_ARCHIVE_READ_BUDGET``, else DEFAULT_BUDGET)."""
    raw = os.environ.get("TILED_ARCHIVE_READ_BUDGET")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
    return DEFAULT_BUDGET


def ensure_within(nbytes: int, where: str, what: str, hint: str | None = None) -> None:
    """Raise TA-E912 when ``nbytes`` exceed the budget (``hint``: what the user can do, when
    not the code's own: read a smaller slice)."""
    budget = read_budget()
    if nbytes > budget:
        raise ArchiveError(
            BUDGET_CODE,
            where,
            f"{what} would decode {nbytes} bytes, over the read budget of {budget}",
            hint,
        )


def chunk_allowance(decoded: int | None, stored: int | None) -> int:
    """The most one chunk may decode besides what a read returns (which the budget bounds):
    up to CHUNK_ALLOWANCE when the data source stores at least 1/BOMB_RATIO of what it
    decodes to (large chunks as the origin wrote them); else the budget (a declared size the
    stored bytes do not back, or sizes unknown)."""
    budget = read_budget()
    if decoded is None or not stored or decoded > stored * BOMB_RATIO:
        return budget
    return max(budget, CHUNK_ALLOWANCE)


def selection_shape(shape: Sequence[int], selection: Any) -> tuple[int, ...]:
    """The shape ``array[selection]`` has for an array of ``shape``, computed without an
    array (slices, integers, Ellipsis, None as NumPy takes them; anything else: the whole)."""
    if selection is None or selection == ():
        return tuple(shape)
    items = tuple(selection) if isinstance(selection, (tuple, list)) else (selection,)
    if any(item is Ellipsis for item in items):
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        fill = len(shape) - (len(items) - 1 - sum(item is None for item in items))
        items = items[:at] + (slice(None),) * max(fill, 0) + items[at + 1 :]
    out: list[int] = []
    dims = iter(shape)
    for item in items:
        if item is None:
            out.append(1)
            continue
        length = next(dims, 1)
        if isinstance(item, slice):
            out.append(len(range(*item.indices(length))))
        elif isinstance(item, int):
            continue
        else:  # fancy indexing: at most the whole dimension
            out.append(length)
    out.extend(dims)
    return tuple(out)


def nbytes(shape: Sequence[int], itemsize: int) -> int:
    return math.prod(int(n) for n in shape) * int(itemsize)


def largest_chunk(chunks: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The largest chunk's shape from Tiled's per-dimension chunk lengths."""
    return tuple(max(lengths, default=0) for lengths in chunks)
