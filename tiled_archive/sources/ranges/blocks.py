"""What a remote file keeps of the bytes it fetched, and how far it reads ahead.

A request costs a round trip, and every byte it moves costs bandwidth: a random read should
move about its own bytes, and a run of reads that each continue where the last ended should
keep the link busy. :class:`Streams` tells the two apart (and follows several runs at once:
readers of several members, threads); :class:`Extents` holds what was fetched, and what
is being fetched ahead, for the reads that land there.
"""

from __future__ import annotations

import sys
from bisect import bisect_right, insort
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import accumulate

#: Small reads are fetched rounded out to this boundary: the least a request moves.
ALIGN = 16 << 10
#: A run's read-ahead windows: the first one's size and the cap; each doubles the last.
AHEAD_FIRST = 64 << 10
AHEAD_MAX = 8 << 20
#: A read this large that continues no run is fetched alone, straight into the caller's
#: buffer, and not kept: rounding it or keeping it would gain nothing.
DIRECT = 256 << 10
#: Bytes of extents kept, fetched or being fetched (64 MiB at the most).
CACHE_BYTES = 64 << 20
#: Sequential runs followed at once.
STREAMS = 8


def align_down(position: int) -> int:
    return position - position % ALIGN


def align_up(position: int) -> int:
    return -(-position // ALIGN) * ALIGN


@dataclass
class Run:
    """A run of sequential reads: its last read (``start``..``end``), the last window it
    read ahead (``ahead_start``..``ahead_end``; empty before the first), and that window
    while it is being fetched (``fetching``)."""

    start: int
    end: int
    ahead_start: int = 0
    ahead_end: int = 0
    fetching: Pending | None = None

    def next_window(self, read: int) -> int:
        """The size of the next window, after a read of ``read`` bytes: twice the last, at
        least the read itself, at most AHEAD_MAX."""
        return min(AHEAD_MAX, max(2 * (self.ahead_end - self.ahead_start), AHEAD_FIRST, read))


class Streams:
    """Runs of sequential reads.

    A read that starts where a run's last read ended, or up to ALIGN before (inside it)
    continues the run: the next block of a file; a member's data after its local header,
    which was read with the first bytes of the data. Any other read (a random seek; a read
    far inside the last one) starts a new run, with no read-ahead.
    """

    def __init__(self) -> None:
        self._runs: list[Run] = []  # the most recently continued last

    def continued(self, offset: int) -> Run | None:
        """The run a read from ``offset`` would continue, or None."""
        return next(
            (run for run in self._runs if max(run.start, run.end - ALIGN) <= offset <= run.end),
            None,
        )

    def follow(self, offset: int, end: int) -> Run | None:
        """Record a read of ``[offset, end)``: the run it continues, or None (it starts one)."""
        run = self.continued(offset)
        if run is None:
            self._runs.append(Run(offset, end))
            del self._runs[:-STREAMS]
            return None
        self._runs.remove(run)
        self._runs.append(run)
        run.start, run.end = offset, end
        return run


class Pieces:
    """Bytes fetched in one answer, kept in the pieces they arrived in: joining them would
    cost a copy into new memory for every byte, which a fast link makes the reader's
    bottleneck."""

    def __init__(self, pieces: list[bytes]):
        self._pieces = pieces
        self._starts = [0, *accumulate(len(piece) for piece in pieces)]

    def __len__(self) -> int:
        return self._starts[-1]

    def copy_to(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the bytes from ``offset`` (all of them held)."""
        index = bisect_right(self._starts, offset) - 1
        done = 0
        while done < len(view):
            piece = memoryview(self._pieces[index])
            at = offset + done - self._starts[index]
            count = min(len(piece) - at, len(view) - done)
            view[done : done + count] = piece[at : at + count]
            done += count
            index += 1


class Pending:
    """Bytes being fetched (by a read, or a read-ahead in the background: its task's
    future then): their count, and the future of them, which the reads that need them wait
    for."""

    def __init__(self, size: int):
        self.size = size
        self.future: Future[Pieces] = Future()

    def __len__(self) -> int:
        return self.size


class Extents:
    """Byte ranges of one file, fetched or being fetched (:class:`Pending`), never
    overlapping, up to ``budget`` bytes (the least recently used dropped first)."""

    def __init__(self, budget: int = CACHE_BYTES):
        self.budget = budget
        self.held = 0
        self._starts: list[int] = []  # sorted
        self._data: OrderedDict[int, Pieces | Pending] = OrderedDict()  # least recently used first

    def find(self, position: int) -> tuple[int, Pieces | Pending] | None:
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

    def reach(self, position: int) -> int:
        """The first byte from ``position`` on that no extent holds."""
        while (held := self.find(position)) is not None:
            position = held[0] + len(held[1])
        return position

    def add(self, start: int, data: Pieces | Pending) -> None:
        """Keep ``data``, the bytes from ``start``, which no extent holds (:meth:`gap`
        said so, under the same lock: a fetch is added as :class:`Pending` before it is
        made, so no two fetch the same bytes); then drop the least recently used beyond the
        budget."""
        insort(self._starts, start)
        self._data[start] = data
        self.held += len(data)
        while self.held > self.budget and self._data:
            self._drop(next(iter(self._data)))

    def settle(self, start: int, pending: Pending, data: Pieces | None) -> None:
        """A fetch from ``start`` ended: its bytes (``data``) replace ``pending``, or with
        None (it failed) it is dropped; unless it was dropped meanwhile."""
        if self._data.get(start) is not pending:
            return
        if data is None:
            self._drop(start)
        else:
            self._data[start] = data  # as many bytes: the budget is unchanged

    def _drop(self, start: int) -> None:
        del self._starts[bisect_right(self._starts, start) - 1]
        self.held -= len(self._data.pop(start))
