"""A file on a web server or object store, read by range requests: what every remote
archive shares, whatever answers the requests (``http``, ``s3``).

Opening costs two requests for an archive laid out as the reference writer lays it out
(spec section 6.2): the tail (a suffix range: the file's size, its validators and the end
records and central directory in one answer), then one range covering the tag files, which
sit first (``ZipSource`` prefetches them); ``catalog.db`` is one more, none when the cache
holds it. Member reads are range requests that move what they need (``blocks``): a small
read fetches its bytes rounded out to 16 KiB and keeps them for later reads there; a read
that continues where an earlier one ended also reads ahead, in the background, in windows
of 64 KiB doubling up to 8 MiB: the next window is asked for when the reader reaches the
last, and sent as soon as the last has arrived, so the link stays busy while the reader
catches up; a read elsewhere starts again with none; a large read (256 KiB or more) that
continues nothing is one request, its body written straight into the caller's buffer.

Every answer is checked against the first: a 200 where 206 was asked for (a server that
ignores ``Range``) is TA-E930, and another size, ``ETag`` or ``Last-Modified`` (the file was
replaced while it was read) is TA-E931. Nothing is retried silently with other bytes.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from ...rules.problems import ArchiveError
from . import RangeFile
from .blocks import (
    AHEAD_MAX,
    DIRECT,
    Extents,
    Pending,
    Pieces,
    Run,
    Streams,
    align_down,
    align_up,
)

#: Bytes fetched from the end on opening: the end records, a 64 KiB comment's worth (the
#: end record's search), and most central directories (~100 bytes a member).
TAIL = 1 << 20
#: What prefetched ranges may hold in memory; a larger range is left to reads.
PREFETCH_LIMIT = 64 << 20
#: Requests in flight at once for prefetched ranges.
CONCURRENCY = 4

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class Answer:
    """What a server answered to one range request: ``length`` bytes of body taken (only
    for a 206; see :meth:`Body.take`)."""

    status: int
    reason: str
    content_range: str | None
    etag: str | None
    last_modified: str | None
    length: int = 0


class Body(ABC):
    """Where the body of a 206 goes as it arrives, ``size`` bytes asked for."""

    size: int

    def take(self, chunks: Iterable[bytes]) -> int:
        """Consume the body: its length, or ``size`` + 1 as soon as more arrives (the rest is
        not read: a server that sends more than was asked for cannot fill memory)."""
        length = 0
        for chunk in chunks:
            if length + len(chunk) > self.size:
                self.put(length, chunk[: self.size - length])
                return self.size + 1
            self.put(length, chunk)
            length += len(chunk)
        return length

    @abstractmethod
    def put(self, at: int, chunk: bytes) -> None:
        """Keep ``chunk``, the body's bytes from ``at``."""


class IntoView(Body):
    """A body written straight into the reader's buffer."""

    def __init__(self, view: memoryview):
        self.size = len(view)
        self.view = view

    def put(self, at: int, chunk: bytes) -> None:
        self.view[at : at + len(chunk)] = chunk


class Kept(Body):
    """A body kept as it arrived, in pieces (:class:`~.blocks.Pieces`)."""

    def __init__(self, size: int):
        self.size = size
        self.pieces: list[bytes] = []

    def put(self, at: int, chunk: bytes) -> None:
        self.pieces.append(chunk)


class RemoteFile(RangeFile):
    """A remote file read by range requests; subclasses make the requests (:meth:`answer`)."""

    location: str

    def __init__(self, location: str):
        self.location = location
        #: Requests made and body bytes received (tests and benchmarks count them).
        self.requests = 0
        self.received = 0
        self._lock = threading.Lock()
        self._extents = Extents()
        self._streams = Streams()
        self._ahead_pool: ThreadPoolExecutor | None = None  # made for the first read-ahead
        self._segments: list[tuple[int, Pieces]] = []  # the tail, prefetched ranges
        self._validators: tuple[str | None, str | None] | None = None
        self.size = -1
        try:
            self._segments.append(self._fetch(None, TAIL))
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def answer(self, asked: str, body: Body) -> Answer:
        """Make one request for ``Range: asked``; raise ArchiveError (TA-E930) when there is
        no answer at all. Only a 206's body is read, by ``body.take``."""

    def not_answered(self, why: str, hint: str) -> ArchiveError:
        """The TA-E930 of a request that got no usable answer."""
        return ArchiveError("TA-E930", self.location, why, hint=hint)

    # -- RangeFile ---------------------------------------------------------------------------

    def read_into(self, offset: int, view: memoryview) -> int:
        size = max(0, min(len(view), self.size - offset))
        if size == 0:
            return 0
        view = view[:size]
        if self._copy_segment(offset, view):
            return size
        end = offset + size
        with self._lock:
            run = self._streams.follow(offset, end)
            if run is not None and size <= AHEAD_MAX and offset >= run.ahead_start:
                self._read_ahead(run, size)  # it reached the last window: ask for the next
        if (run is None and size >= DIRECT) or size > AHEAD_MAX:
            if not self._copy_extent(offset, view):
                self._request(offset, IntoView(view))
            return size
        position = offset
        while position < end:
            fetching = None
            with self._lock:
                held = self._extents.find(position)
                if held is None:
                    # Aligned, but not into bytes held (nor past the end of the file).
                    before, after = self._extents.gap(position)
                    first = max(before, align_down(position))
                    fetching = Pending(min(after, self.size, align_up(end)) - first)
                    self._extents.add(first, fetching)  # other reads of them wait for it
                    held = first, fetching
            if fetching is not None:
                self._fill(held[0], fetching)
            start, data = held
            count = min(end, start + len(data)) - position
            ready(data).copy_to(
                view[position - offset : position - offset + count], position - start
            )
            position += count
        return size

    def read_once(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        with self._lock:
            continued = self._streams.continued(offset) is not None
        if continued:  # the next member's local header, read through in archive order
            return self.pread(offset, size)
        buffer = bytearray(size)
        view = memoryview(buffer)
        if size and not (self._copy_segment(offset, view) or self._copy_extent(offset, view)):
            self._request(offset, IntoView(view))
        return bytes(buffer)

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        wanted = [(s, e) for s, e in ranges if 0 < e - s <= PREFETCH_LIMIT and not self._held(s, e)]
        budget = PREFETCH_LIMIT
        chosen = []
        for start, end in wanted:
            if end - start <= budget:
                chosen.append((start, end))
                budget -= end - start
        if len(chosen) == 1:
            self._segments.append(self._fetch(chosen[0][0], chosen[0][1] - chosen[0][0]))
            return
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="prefetch") as pool:
            fetched = list(pool.map(lambda r: self._fetch(r[0], r[1] - r[0]), chosen))
        self._segments.extend(fetched)

    # -- Held bytes --------------------------------------------------------------------------

    def _held(self, start: int, end: int) -> bool:
        return any(s <= start and end <= s + len(d) for s, d in self._segments)

    def _copy_segment(self, offset: int, view: memoryview) -> bool:
        """Fill ``view`` from a prefetched segment (or the tail) that holds all of it."""
        end = offset + len(view)
        for start, data in self._segments:
            if start <= offset and end <= start + len(data):
                data.copy_to(view, offset - start)
                return True
        return False

    def _copy_extent(self, offset: int, view: memoryview) -> bool:
        """Fill ``view`` from an extent that holds all of it (once fetched)."""
        with self._lock:
            held = self._extents.find(offset)
        if held is None or offset + len(view) > held[0] + len(held[1]):
            return False
        start, data = held
        ready(data).copy_to(view, offset - start)
        return True

    # -- Read-ahead --------------------------------------------------------------------------

    def _read_ahead(self, run: Run, read: int) -> None:
        """Ask for the next window of ``run`` (its last read ``read`` bytes) in the
        background, from the first byte after the read not held; the reads that land there
        wait for it. Called with the lock held."""
        first = self._extents.reach(run.end)
        if first >= self.size:
            return
        _, after = self._extents.gap(first)
        stop = min(after, self.size, first + run.next_window(read))
        run.ahead_start, run.ahead_end = first, stop
        pending = Pending(stop - first)
        self._extents.add(first, pending)
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="read-ahead")
        previous, run.fetching = run.fetching, pending
        # The task's own future: one cancelled when the file closes fails its readers.
        pending.future = self._ahead_pool.submit(self._fetch_ahead, run, first, pending, previous)

    def _fetch_ahead(
        self, run: Run, start: int, pending: Pending, previous: Pending | None
    ) -> Pieces:
        """Fetch a window of ``run`` once its previous one has arrived: one request at a time
        per run keeps the link busy (the next is sent as the last ends) without two answers
        sharing it, which made the one the reader waits for arrive later."""
        if previous is not None:
            wait([previous.future])  # its error is its reader's
        try:
            return self._fetched(start, pending)
        finally:
            with self._lock:
                if run.fetching is pending:  # the run keeps no bytes past the cache's budget
                    run.fetching = None

    def _fill(self, start: int, pending: Pending) -> None:
        """Fetch the bytes a read registered as ``pending``, for it and for the reads that
        wait for them."""
        try:
            pending.future.set_result(self._fetched(start, pending))
        except BaseException as error:
            pending.future.set_exception(error)

    def _fetched(self, start: int, pending: Pending) -> Pieces:
        """The bytes of ``pending`` from ``start``, fetched; they replace it among the
        extents (or, failed, it is dropped: a read that needs them asks again)."""
        data = None
        try:
            data = self._fetch(start, pending.size)[1]
            return data
        finally:
            with self._lock:
                self._extents.settle(start, pending, data)

    def close(self) -> None:
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(cancel_futures=True)

    # -- Requests ----------------------------------------------------------------------------

    def _fetch(self, start: int | None, size: int) -> tuple[int, Pieces]:
        """``size`` bytes from ``start`` (None: the last ``size`` bytes, or the whole file
        when it is smaller) in one request: (their start, the bytes)."""
        body = Kept(size)
        first = self._request(start, body)
        return first, Pieces(body.pieces)

    def _request(self, start: int | None, body: Body) -> int:
        """One request for ``body.size`` bytes from ``start`` (None: the last ones, fewer
        for a smaller file), its answer checked against the file's first: the start of
        the bytes."""
        size = body.size
        asked = f"bytes=-{size}" if start is None else f"bytes={start}-{start + size - 1}"
        with self._lock:  # read-ahead counts from other threads
            self.requests += 1
        answer = self.answer(asked, body)
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
        with self._lock:
            self.received += answer.length
        first, last = self._check(answer)
        whole = start is None or (first == start and answer.length == size)
        if answer.length != last - first + 1 or not whole:
            got = f"more than {size}" if answer.length > size else str(answer.length)
            raise self.not_answered(
                f"asked for `Range: {asked}`, got {got} bytes from byte {first}",
                "The server or a proxy between answers ranges wrongly; download the archive "
                "whole and open the local file.",
            )
        return first

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


def ready(data: Pieces | Pending) -> Pieces:
    """The bytes of an extent, once a read-ahead fetching them has them (its error if it
    failed)."""
    if isinstance(data, Pending):
        return data.future.result()
    return data


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
