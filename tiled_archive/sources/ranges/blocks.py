"""What a remote file keeps of the bytes it fetched, and how far it reads ahead.

A request costs a round trip, and every byte it moves costs bandwidth: a random read should
move about its own bytes, and a run of reads that each continue where the last ended should
cost few requests. :class:`Streams` tells the two apart (and follows several runs at once:
readers of several members, threads); :class:`Extents` holds what was fetched, for reads
that land on it again.
"""

from __future__ import annotations

import sys
from bisect import bisect_right, insort
from collections import OrderedDict

#: Small reads are fetched rounded out to this boundary: the least a request moves.
ALIGN = 16 << 10
#: The read-ahead of a sequential run: its first size and its cap; it doubles in between.
AHEAD_FIRST = 64 << 10
AHEAD_MAX = 8 << 20
#: A read this large that continues no run is fetched alone, straight into the caller's
#: buffer, and not kept: rounding it or keeping it would gain nothing.
DIRECT = 256 << 10
#: Bytes of fetched extents kept (64 MiB at the most).
CACHE_BYTES = 64 << 20
#: Sequential runs followed at once.
STREAMS = 8


def align_down(position: int) -> int:
    return position - position % ALIGN


def align_up(position: int) -> int:
    return -(-position // ALIGN) * ALIGN


class Streams:
    """Runs of sequential reads, each with its last read and its read-ahead.

    A read that starts inside a run's last read or where it ended continues the run (the
    next block of a file; a member's data after its local header); any other read (a random
    seek) starts a new run with no read-ahead. A run's read-ahead grows only when it has to
    fetch, so it doubles as the run consumes what it read ahead, and a short run moves little.
    """

    def __init__(self) -> None:
        # end of the last read -> (its start, the run's read-ahead), oldest run first
        self._runs: OrderedDict[int, tuple[int, int]] = OrderedDict()

    def continued(self, offset: int) -> int | None:
        """The end of the run a read from ``offset`` would continue, or None."""
        for end, (start, _) in self._runs.items():
            if start <= offset <= end:
                return end
        return None

    def follow(self, offset: int, end: int) -> int | None:
        """Record a read of ``[offset, end)``: the read-ahead of the run it continues (0 for
        one that has read none ahead yet), or None when it continues none."""
        run = self.continued(offset)
        ahead = None if run is None else self._runs.pop(run)[1]
        self._runs[end] = (offset, ahead or 0)
        while len(self._runs) > STREAMS:
            self._runs.popitem(last=False)
        return ahead

    def grow(self, end: int, size: int) -> int:
        """The next read-ahead of the run whose last read (``size`` bytes) ended at ``end``,
        which has to fetch: twice the last, at least the read itself, at most AHEAD_MAX."""
        start, ahead = self._runs.get(end, (end - size, 0))
        ahead = min(AHEAD_MAX, max(2 * ahead, AHEAD_FIRST, size))
        if end in self._runs:
            self._runs[end] = (start, ahead)
        return ahead


class Extents:
    """Fetched byte ranges of one file, never overlapping, up to ``budget`` bytes (the least
    recently used dropped first)."""

    def __init__(self, budget: int = CACHE_BYTES):
        self.budget = budget
        self.held = 0
        self._starts: list[int] = []  # sorted
        self._data: OrderedDict[int, memoryview] = OrderedDict()  # least recently used first

    def find(self, position: int) -> tuple[int, memoryview] | None:
        """``(start, bytes)`` of the extent holding ``position`` (now the most recently
        used), or None."""
        index = bisect_right(self._starts, position) - 1
        if index < 0:
            return None
        start = self._starts[index]
        data = self._data[start]
        if position >= start + len(data):
            return None
        self._data.move_to_end(start)
        return start, data

    def gap(self, position: int) -> tuple[int, int]:
        """The run of bytes not held around ``position`` (itself not held): from the end of
        the extent before it (0) to the start of the one after it (``sys.maxsize``)."""
        index = bisect_right(self._starts, position)
        before = 0
        if index:
            start = self._starts[index - 1]
            before = start + len(self._data[start])
        after = self._starts[index] if index < len(self._starts) else sys.maxsize
        return before, after

    def add(self, start: int, data: memoryview) -> None:
        """Keep ``data``, fetched from ``start``. Extents it overlaps (another thread fetched
        the same bytes meanwhile) are dropped; then the least recently used, beyond the
        budget."""
        end = start + len(data)
        index = max(0, bisect_right(self._starts, start) - 1)
        while index < len(self._starts) and self._starts[index] < end:
            other = self._starts[index]
            if other + len(self._data[other]) > start:
                self._drop(other, index)
            else:
                index += 1
        insort(self._starts, start)
        self._data[start] = data
        self.held += len(data)
        while self.held > self.budget and self._data:
            self._drop(next(iter(self._data)))

    def _drop(self, start: int, index: int | None = None) -> None:
        if index is None:
            index = bisect_right(self._starts, start) - 1
        del self._starts[index]
        self.held -= len(self._data.pop(start))
