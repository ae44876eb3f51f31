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
from dataclasses import dataclass
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


def _expanded(shape: Sequence[int], selection: Any) -> list[Any]:
    """``selection`` with its Ellipsis expanded (None kept: a new axis of length 1)."""
    if selection is None or selection == ():
        return []
    items = tuple(selection) if isinstance(selection, (tuple, list)) else (selection,)
    if any(item is Ellipsis for item in items):
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        fill = len(shape) - (len(items) - 1 - sum(item is None for item in items))
        items = items[:at] + (slice(None),) * max(fill, 0) + items[at + 1 :]
    return list(items)


def selection_shape(shape: Sequence[int], selection: Any) -> tuple[int, ...]:
    """The shape ``array[selection]`` has for an array of ``shape``, computed without an
    array (slices, integers, Ellipsis, None as NumPy takes them; anything else: the whole)."""
    out: list[int] = []
    dims = iter(shape)
    for item in _expanded(shape, selection):
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


# -- Declared chunk grids ---------------------------------------------------------------------
#
# What a library holds per storage chunk, whatever the chunk's bytes, measured on Tiled 0.2.20
# (2 cores, a dataset of 10**6 one-byte chunks): Tiled's HDF5 adapter makes a dask task per
# chunk of a dataset when it opens it (470-600 bytes each), and a read holds about 15 kB per
# chunk it touches (dask again); Tiled's array adapter over an array of a Zarr group lists each
# dimension's chunk lengths (about 70 bytes an entry), and zarr holds about 2.5 kB per chunk a
# read touches. An archive can declare 10**12 one-byte chunks in a few bytes of metadata, so
# these costs are checked against the budget before the library enumerates anything.

HDF5_TASK_BYTES = 640
#: Per element of an HDF5 dataset of variable-length (object) values, which Tiled's adapter
#: reads whole when it opens it: ~24 bytes of NumPy bytes plus HDF5's ~16-byte conversion
#: buffer per element (measured).
HDF5_OBJECT_BYTES = 48
HDF5_TOUCHED_BYTES = 16 << 10
ZARR_ENTRY_BYTES = 96
ZARR_TOUCHED_BYTES = 4 << 10


@dataclass(frozen=True)
class ChunkGrid:
    """An array's storage chunks, and what each costs the library that reads it: per chunk of
    the grid when its adapter is made (``opened``), per chunk length listed for each dimension
    (``listed``), per chunk a read touches (``touched``)."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    opened: int = 0
    listed: int = 0
    touched: int = 0

    def counts(self) -> tuple[int, ...]:
        """Chunks along each dimension."""
        return tuple(
            -(-length // chunk) if chunk > 0 else min(length, 1)
            for length, chunk in zip(self.shape, self.chunks, strict=False)
        )

    def opening_cost(self) -> int:
        counts = self.counts()
        return math.prod(counts) * self.opened + sum(counts) * self.listed

    def reading_cost(self, selection: Any) -> int:
        return self.chunks_touched(selection) * self.touched

    def chunks_touched(self, selection: Any) -> int:
        """How many chunks ``array[selection]`` touches, at most (fancy indexing: every chunk
        of its dimension)."""
        total = 1
        dims = iter(zip(self.shape, self.chunks, self.counts(), strict=False))
        for item in _expanded(self.shape, selection):
            if item is None:
                continue
            length, chunk, count = next(dims, (1, 1, 1))
            if isinstance(item, slice):
                picked = range(*item.indices(length))
                if not picked:
                    return 0
                first, last = min(picked[0], picked[-1]), max(picked[0], picked[-1])
                span = last // chunk - first // chunk + 1 if chunk > 0 else 1
                total *= min(span, len(picked))
            elif not isinstance(item, int):
                total *= count
        for _, _, count in dims:
            total *= count
        return total


def nbytes(shape: Sequence[int], itemsize: int) -> int:
    return math.prod(int(n) for n in shape) * int(itemsize)


def largest_chunk(chunks: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The largest chunk's shape from Tiled's per-dimension chunk lengths."""
    return tuple(max(lengths, default=0) for lengths in chunks)


def ensure_grids_open(grids: Sequence[ChunkGrid], where: str, what: str) -> None:
    """TA-E912 when making the adapters of ``grids``' arrays (one array, or every array a
    listing makes at once) would hold more than the budget for their chunks, checked before
    the library enumerates any."""
    cost = sum(grid.opening_cost() for grid in grids)
    budget = read_budget()
    if cost <= budget:
        return
    chunks = sum(math.prod(grid.counts()) for grid in grids)
    shown = (
        f" (shape {grids[0].shape} in chunks of {grids[0].chunks})"
        if len(grids) == 1
        else f" in {len(grids)} arrays"
    )
    raise ArchiveError(
        BUDGET_CODE,
        where,
        f"{what}: {chunks} storage chunks{shown} would hold about {cost} bytes when opened, "
        f"over the read budget of {budget}",
        "Tiled's adapter enumerates every chunk of an array when it opens it: raise "
        "TILED_ARCHIVE_READ_BUDGET (bytes) to open it, or re-chunk the data in larger chunks.",
    )
