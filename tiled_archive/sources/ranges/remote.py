"""A file on a web server or object store, read by range requests: what every remote
archive shares, whatever answers the requests (``http``, ``s3``).

Opening costs two requests for an archive laid out as the reference writer lays it out
(spec section 6.2): the tail (a suffix range: the file's size, its validators and the end
records and central directory in one answer), then one range covering the tag files, which
sit first (``ZipSource`` prefetches them); ``catalog.db`` is one more, none when the cache
holds it. Member reads are range requests that move what they need (``blocks``): a small
read fetches its bytes rounded out to 16 KiB and keeps them for later reads there; a read
that continues where an earlier one ended also reads ahead, 64 KiB at first, twice as much
at each later fetch of the run, up to 8 MiB; a read elsewhere starts again with none; a
large read (256 KiB or more) that continues nothing is one request, its body written
straight into the caller's buffer.

Every answer is checked against the first: a 200 where 206 was asked for (a server that
ignores ``Range``) is TA-E930, and another size, ``ETag`` or ``Last-Modified`` (the file was
replaced while it was read) is TA-E931. Nothing is retried silently with other bytes.
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...rules.problems import ArchiveError
from . import RangeFile
from .blocks import AHEAD_MAX, DIRECT, Extents, Streams, align_down, align_up

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
    """What a server answered to one range request: ``length`` bytes of body written (only
    for a 206), ``len(into) + 1`` when it sent more than there was room for."""

    status: int
    reason: str
    content_range: str | None
    etag: str | None
    last_modified: str | None
    length: int = 0


def fill(into: memoryview, chunks: Iterable[bytes]) -> int:
    """Write a body arriving in ``chunks`` into ``into``: the count written, or
    ``len(into) + 1`` as soon as more arrives (the rest is not read: a server that sends more
    than was asked for cannot fill memory)."""
    length = 0
    for chunk in chunks:
        if len(chunk) > len(into) - length:
            into[length:] = chunk[: len(into) - length]
            return len(into) + 1
        into[length : length + len(chunk)] = chunk
        length += len(chunk)
    return length


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
        self._segments: list[tuple[int, memoryview]] = []  # the tail, prefetched ranges
        self._validators: tuple[str | None, str | None] | None = None
        self.size = -1
        try:
            self._segments.append(self._fetch(None, TAIL))
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def answer(self, asked: str, into: memoryview) -> Answer:
        """Make one request for ``Range: asked``; raise ArchiveError (TA-E930) when there is
        no answer at all. Only a 206's body is read, into ``into`` (see :func:`fill`)."""

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
            ahead = self._streams.follow(offset, end)
        if (ahead is None and size >= DIRECT) or size > AHEAD_MAX:
            if not self._copy_extent(offset, view):
                self._request(offset, view)
            return size
        reach = None  # where the fetches of this read end: its end, and its read-ahead
        position = offset
        while position < end:
            with self._lock:
                held = self._extents.find(position)
                if held is None:
                    before, after = self._extents.gap(position)
                    if reach is None:
                        reach = end + (self._streams.grow(end, size) if ahead is not None else 0)
            if held is None:
                # From the aligned start to the aligned reach, not into bytes held (nor past
                # the end of the file).
                first = max(before, align_down(position))
                stop = min(after, self.size, align_up(reach))
                held = self._fetch(first, stop - first)
                with self._lock:
                    self._extents.add(*held)
            start, data = held
            count = min(end, start + len(data)) - position
            view[position - offset : position - offset + count] = data[
                position - start : position - start + count
            ]
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
            self._request(offset, view)
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
                view[:] = data[offset - start : end - start]
                return True
        return False

    def _copy_extent(self, offset: int, view: memoryview) -> bool:
        """Fill ``view`` from a fetched extent that holds all of it."""
        with self._lock:
            held = self._extents.find(offset)
        if held is None or offset + len(view) > held[0] + len(held[1]):
            return False
        start, data = held
        view[:] = data[offset - start : offset - start + len(view)]
        return True

    # -- Requests ----------------------------------------------------------------------------

    def _fetch(self, start: int | None, size: int) -> tuple[int, memoryview]:
        """``size`` bytes from ``start`` (None: the last ``size`` bytes, or the whole file
        when it is smaller) in one request: (their start, the bytes)."""
        buffer = memoryview(bytearray(size))
        first, length = self._request(start, buffer)
        return first, buffer[:length].toreadonly()

    def _request(self, start: int | None, into: memoryview) -> tuple[int, int]:
        """One request for ``len(into)`` bytes from ``start`` (None: the last ones), its body
        written into ``into`` and checked against the file's first answer: (the start of
        the bytes, their count; fewer than asked only for the last ones of a smaller file)."""
        size = len(into)
        asked = f"bytes=-{size}" if start is None else f"bytes={start}-{start + size - 1}"
        self.requests += 1
        answer = self.answer(asked, into)
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
        return first, answer.length

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
