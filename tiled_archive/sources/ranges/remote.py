"""A file on a web server or object store, read by range requests: what every remote
archive shares, whatever answers the requests (``http``, ``s3``).

Opening costs two requests for an archive laid out as the reference writer lays it out
(spec section 6.2): the tail (a suffix range: the file's size, its validators and the end
records and central directory in one answer), then one range covering the tag files, which
sit first (``ZipSource`` prefetches them); ``catalog.db`` is one more, none when the cache
holds it. Member reads are range requests: a read of at least a block goes straight into
the caller's buffer; smaller reads go through a cache of aligned blocks (LRU), and a read
that continues where the last one ended fetches the next block with it (read-ahead).

Every answer is checked against the first: a 200 where 206 was asked for (a server that
ignores ``Range``) is TA-E930, and another size, ``ETag`` or ``Last-Modified`` (the file was
replaced while it was read) is TA-E931. Nothing is retried silently with other bytes.
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...rules.problems import ArchiveError
from . import RangeFile

#: Bytes fetched from the end on opening: the end records, a 64 KiB comment's worth (the
#: end record's search), and most central directories (~100 bytes a member).
TAIL = 1 << 20
#: The block of the cache, and the smallest read that skips it.
BLOCK = 1 << 20
#: Blocks kept (64 MiB at the most).
CACHE_BLOCKS = 64
#: What prefetched ranges may hold in memory; a larger range is left to block reads.
PREFETCH_LIMIT = 64 << 20
#: Requests in flight at once for prefetched ranges.
CONCURRENCY = 4

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class Answer:
    """What a server answered to one range request (the body only for a 206)."""

    status: int
    reason: str
    content_range: str | None
    etag: str | None
    last_modified: str | None
    data: bytes = b""


class RemoteFile(RangeFile):
    """A remote file read by range requests; subclasses make the requests (:meth:`answer`)."""

    location: str

    def __init__(self, location: str):
        self.location = location
        #: Requests made and body bytes received (tests and benchmarks count them).
        self.requests = 0
        self.received = 0
        self._lock = threading.Lock()
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._segments: list[tuple[int, bytes]] = []  # (start, bytes): the tail, prefetches
        self._last_end = -1
        self._validators: tuple[str | None, str | None] | None = None
        self.size = -1
        try:
            self._segments.append(self._get_range(None, TAIL))
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def answer(self, asked: str, limit: int) -> Answer:
        """Make one request for ``Range: asked``; raise ArchiveError (TA-E930) when there is
        no answer at all. The body is read only for a 206, and at most ``limit`` + 1 bytes of
        it."""

    def not_answered(self, why: str, hint: str) -> ArchiveError:
        """The TA-E930 of a request that got no usable answer."""
        return ArchiveError("TA-E930", self.location, why, hint=hint)

    # -- RangeFile ---------------------------------------------------------------------------

    def read_into(self, offset: int, view: memoryview) -> int:
        size = max(0, min(len(view), self.size - offset))
        if size == 0:
            return 0
        end = offset + size
        for start, data in self._segments:
            if start <= offset and end <= start + len(data):
                view[:size] = data[offset - start : end - start]
                return size
        if size >= BLOCK:
            _, data = self._get_range(offset, size)
            view[:size] = data
            self._last_end = end
            return size
        first, last = offset // BLOCK, (end - 1) // BLOCK
        if offset == self._last_end:
            last = min(last + 1, (self.size - 1) // BLOCK)  # read-ahead: the next block too
        self._fill_blocks(first, last)
        position = 0
        with self._lock:
            for index in range((offset // BLOCK), (end - 1) // BLOCK + 1):
                block = self._blocks.get(index)
                if block is None:  # evicted meanwhile by another thread's reads
                    block = self._fetch_blocks(index, index)[index]
                lo = max(offset, index * BLOCK) - index * BLOCK
                hi = min(end, (index + 1) * BLOCK) - index * BLOCK
                view[position : position + hi - lo] = block[lo:hi]
                position += hi - lo
        self._last_end = end
        return size

    def read_once(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0 or self._held(offset, offset + size):
            return self.pread(offset, size)
        return self._get_range(offset, size)[1]

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        wanted = [(s, e) for s, e in ranges if 0 < e - s <= PREFETCH_LIMIT and not self._held(s, e)]
        budget = PREFETCH_LIMIT
        chosen = []
        for start, end in wanted:
            if end - start <= budget:
                chosen.append((start, end))
                budget -= end - start
        if len(chosen) == 1:
            self._segments.append(self._get_range(chosen[0][0], chosen[0][1] - chosen[0][0]))
            return
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="prefetch") as pool:
            fetched = list(pool.map(lambda r: self._get_range(r[0], r[1] - r[0]), chosen))
        self._segments.extend(fetched)

    # -- Requests ----------------------------------------------------------------------------

    def _held(self, start: int, end: int) -> bool:
        return any(s <= start and end <= s + len(d) for s, d in self._segments)

    def _fill_blocks(self, first: int, last: int) -> None:
        with self._lock:
            missing = [i for i in range(first, last + 1) if i not in self._blocks]
        if missing:
            self._fetch_blocks(missing[0], missing[-1])

    def _fetch_blocks(self, first: int, last: int) -> dict[int, bytes]:
        """Blocks ``first..last`` in one request, into the cache (LRU); returns them."""
        start = first * BLOCK
        _, data = self._get_range(start, min(self.size, (last + 1) * BLOCK) - start)
        got = {
            i: data[(i - first) * BLOCK : (i - first + 1) * BLOCK] for i in range(first, last + 1)
        }
        with self._lock:
            for index, block in got.items():
                self._blocks[index] = block
                self._blocks.move_to_end(index)
            while len(self._blocks) > CACHE_BLOCKS:
                self._blocks.popitem(last=False)
        return got

    def _get_range(self, start: int | None, size: int) -> tuple[int, bytes]:
        """``size`` bytes from ``start`` (None: the last ``size`` bytes, or the whole file
        when it is smaller), checked against the file's first answer: (start, bytes)."""
        asked = f"bytes=-{size}" if start is None else f"bytes={start}-{start + size - 1}"
        self.requests += 1
        answer = self.answer(asked, size)
        if answer.status == 200:
            raise self.not_answered(
                f"the server answered 200 with the whole file to `Range: {asked}`",
                "Serve the archive from a server that honours Range requests (nginx, Apache, "
                "S3), or download it whole and open the local file.",
            )
        if answer.status != 206:
            raise self.not_answered(
                f"{answer.status} {answer.reason} to `Range: {asked}`", _status_hint(answer.status)
            )
        self.received += len(answer.data)
        first, last = self._check(answer)
        if len(answer.data) != last - first + 1 or (start is not None and first != start):
            raise self.not_answered(
                f"asked for `Range: {asked}`, got {len(answer.data)} bytes from byte {first}",
                "The server or a proxy between answers ranges wrongly; download the archive "
                "whole and open the local file.",
            )
        return first, answer.data

    def _check(self, answer: Answer) -> tuple[int, int]:
        """The answer's range, checked: the same size and validators as the first answer."""
        match = _CONTENT_RANGE.fullmatch((answer.content_range or "").strip())
        if match is None:
            raise self.not_answered(
                f"a 206 answer without a usable Content-Range ({answer.content_range!r})",
                "The server answers ranges wrongly (multipart or no Content-Range); download "
                "the archive whole and open the local file.",
            )
        first, last, total = (int(group) for group in match.groups())
        validators = (answer.etag, answer.last_modified)
        with self._lock:
            if self._validators is None:
                self._validators, self.size = validators, total
                return first, last
        if total != self.size or _changed(self._validators, validators):
            raise ArchiveError(
                "TA-E931",
                self.location,
                f"changed while it was read: size {self.size} -> {total}, "
                f"ETag {self._validators[0]} -> {validators[0]}, "
                f"Last-Modified {self._validators[1]} -> {validators[1]}",
            )
        return first, last


def _changed(before: tuple[str | None, str | None], now: tuple[str | None, str | None]) -> bool:
    """Whether a validator the server gave both times differs (one it omits says nothing)."""
    return any(a is not None and b is not None and a != b for a, b in zip(before, now, strict=True))


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "The server wants credentials: pass storage_options (headers, or S3 keys)."
    if status == 404:
        return "Check the URL: no archive there."
    if status == 416:
        return "The server says the file is shorter than its own size said: it changed."
    return "Check the server, then try again."
