"""HTTP for a download: status checks, retries with backoff, the parallel runner with its
cancellation, and fetching raw files into the cache (resuming a half-fetched one with a range
request, hashing in a thread of its own). The exceptions here steer control flow between them
and the steps that call them."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

import httpx
from rich.filesize import decimal
from rich.progress import TaskID

from ..files.blobs import Blob, Validators, http_date, url_key
from ..files.hashing import CHUNK, crc32
from ..rules.problems import ArchiveError
from .state import Run, ServerFile

T = TypeVar("T")


# -- Errors and HTTP ----------------------------------------------------------------------------


class NotServed(Exception):
    """The server refused to hand something out (a 4xx answer); asking again will not help."""


class Transient(Exception):
    """A 5xx or 429 answer, or a half-fetched file that cannot be resumed: worth retrying."""


class Mismatch(Exception):
    """The server sent bytes that differ from the size or hash it reports."""


class Cancelled(Exception):
    """Another worker failed (or the caller's hook raised): stop at the next chunk."""


def check(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    response.read()
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200]
    if status >= 500 or status == 429:
        raise Transient(f"HTTP {status}: {detail}")
    raise NotServed(f"HTTP {status}: {detail}")


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, jittered, capped."""
    return min(0.5 * 2**attempt, 15.0) * random.uniform(0.5, 1.5)


class _Hashing:
    """SHA-256 and CRC-32 of the chunks passed to ``update``, computed in a thread of its own
    while the caller receives the next chunk (both release the GIL): a fetch then runs at the
    pace of the slower of the two, not of their sum. The digests are final once the ``with``
    block has exited without an exception."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.crc32 = 0
        # A few chunks of slack: enough to ride out jitter, bounded so memory stays flat.
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="tiled-archive-hash", daemon=True)

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self.sha256.update(chunk)
            self.crc32 = crc32(chunk, self.crc32)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def __enter__(self) -> _Hashing:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._chunks.put(None)
        self._thread.join()


# -- Running many things at once ------------------------------------------------------------


def parallel(run: Run, items: Iterable[T], task: Callable[[T], None]) -> None:
    """Run ``task`` on every item with ``workers`` threads. The first exception (or an
    interrupt) cancels the rest, running transfers stopping at their next chunk, and is
    raised."""

    def guarded(item: T) -> None:
        if run.cancel.is_set():
            raise Cancelled()
        try:
            task(item)
        except BaseException:
            # At once, in this thread: it must not start the next queued task first.
            run.cancel.set()
            raise

    pool = ThreadPoolExecutor(run.workers)
    try:
        futures = [pool.submit(guarded, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if errors:
            # A worker stopped by the cancellation is not the cause; the first real error is.
            raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
    except BaseException:
        run.cancel.set()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def retrying(run: Run, attempt: Callable[[], T], what: str) -> T:
    """``attempt()``, retried with backoff on connection errors and 5xx answers (not 4xx);
    TA-E911 when the server keeps failing."""
    for number in range(run.retries + 1):
        if run.cancel.is_set():
            raise Cancelled()
        try:
            return attempt()
        except (httpx.TransportError, Transient) as err:
            error: Exception = err
        if number < run.retries and run.cancel.wait(backoff(number)):
            raise Cancelled()
    raise ArchiveError(
        "TA-E911",
        what,
        f"the server failed {run.retries + 1} times, last with {error!r}; "
        "nothing was written, and re-running resumes from the cache",
    )


# -- The raw bytes ---------------------------------------------------------------------------


def fetch_raw(run: Run) -> None:
    """Fetch every raw file not already in the cache (one request per file)."""
    unique: dict[str, ServerFile] = {}
    for node in run.nodes:
        if node.method == "raw":
            for remote in node.files:
                unique.setdefault(remote.member, remote)
    total = sum(remote.size or 0 for remote in unique.values())
    bar = run.progress.add_task("fetching", total=total or None, bytes=True)
    parallel(run, unique.values(), functools.partial(_fetch_file, run, bar))
    _share_answers(run, unique)


def probe_raw(run: Run, *, every_file: bool = False) -> None:
    """For a lazy download: the size and validators (ETag, Last-Modified) of every raw file
    whose size the server does not list (``every_file``: whose digest it does not give),
    from a one-byte range request each (no payload is fetched). Validators prove, when the
    file is fetched later, that it is still the file the catalog describes (spec 4.1); a
    file probed for neither gets those of its first fetch."""
    unknown: dict[str, ServerFile] = {}
    for node in run.nodes:
        if node.method == "raw":
            for remote in node.files:
                if remote.size is None or (every_file and remote.server_sha256 is None):
                    unknown.setdefault(remote.member, remote)
    bar = run.progress.add_task("sizes", total=len(unknown) or None)

    def probe(remote: ServerFile) -> None:
        if remote.node.method != "raw":
            return
        url = remote.node.asset_url("bytes")
        try:
            remote.probed = retrying(run, functools.partial(_probe, run, remote, url), url)
        except NotServed as err:
            run.refuse_raw(remote.node, err)
        run.progress.advance(bar)

    parallel(run, unknown.values(), probe)
    _share_answers(run, unknown)


def _share_answers(run: Run, asked: dict[str, ServerFile]) -> None:
    """One file asked about stands for every other naming the same archive path."""
    for node in run.nodes:
        for remote in node.files:
            if remote.probed is None and remote.member in asked:
                remote.probed = asked[remote.member].probed


def _probe(run: Run, remote: ServerFile, url: str) -> tuple[int, Validators]:
    headers = {"Accept-Encoding": "identity", "Range": "bytes=0-0"}
    with run.http.stream("GET", url, params=remote.params(), headers=headers) as response:
        if response.status_code == 416:  # an empty file: "bytes */0"
            total = response.headers.get("content-range", "").rpartition("/")[2]
        else:
            check(response)
            if response.status_code == 206:
                total = response.headers.get("content-range", "").rpartition("/")[2]
            else:
                total = response.headers.get("content-length", "")
        if not total.isdigit():
            raise NotServed(f"no size for {remote.member} (Content-Range {total!r})")
        return int(total), Validators.of(response.headers)


def _fetch_file(run: Run, bar: TaskID, remote: ServerFile) -> None:
    if remote.node.method != "raw":
        return
    if run.raw_refused is not None:
        run.refuse(remote.node, run.raw_refused)
        return
    key = remote.key()
    url = remote.node.asset_url("bytes")
    shown = _Shown()
    try:
        if _reuse_previous(run, remote, url):
            _expect(run, bar, -(remote.size or 0))
            return
        with run.cache.partial(key) as partial:
            found = _cached(run, remote, key, url)
            if found is not None:
                blob, validators = found
                if remote.size is not None:
                    _expect(run, bar, -blob.size, cached=blob.size)  # not this run's transfer
                else:
                    _expect(run, bar, 0, cached=blob.size)
            else:
                blob, validators = retrying(
                    run, functools.partial(_get, run, bar, remote, key, url, partial, shown), url
                )
    except NotServed as err:
        run.refuse_raw(remote.node, err)
        return
    except Mismatch as err:
        remote.node.error = str(err)
        return
    if validators is not None:
        remote.probed = (blob.size, validators)
    run.file_ready(remote.member, blob)


def _reuse_previous(run: Run, remote: ServerFile, url: str) -> bool:
    """Take ``remote`` from the archive an update replaces, when the server still names the
    same content: the digest it reports (no request), or the validators its fetch record kept
    (one conditional request, as for a cached file)."""
    previous = run.previous
    kept = previous.kept_for(remote) if previous is not None else None
    if kept is None:
        return False
    if remote.server_sha256 is None:  # the validators kept, asked of the server
        assert kept.validators is not None
        still = functools.partial(_still_fresh, run, remote, url, kept.entry.size, kept.validators)
        if not retrying(run, still, url):
            return False
    if kept.validators is not None:
        remote.probed = (kept.entry.size, kept.validators)
    run.file_reused(remote.member, previous.payload(kept, remote.member))
    return True


def _cached(
    run: Run, remote: ServerFile, key: str, url: str
) -> tuple[Blob, Validators | None] | None:
    """The cached blob that is ``remote``'s content today (and its validators), or None. A
    SHA-256 the server reports names the content itself: no request. Otherwise the blob is
    used only when the server's validators (ETag, else Last-Modified) still match those it
    sent with the bytes, asked with a one-byte conditional request (a 304, or a 206 of one
    byte); a server that sends neither has its files fetched again."""
    if remote.server_sha256 is not None:
        blob = run.cache.by_digest(remote.server_sha256)
        if blob is not None and remote.size in (None, blob.size):
            return blob, None
    # Else by its URL: a file a lazy archive fetched from this server (files/blobs.py).
    found = run.cache.lookup(key) or run.cache.lookup(url_key(remote.url()))
    if found is None or not (found[1].etag or found[1].last_modified):
        return None
    blob, validators = found
    still = functools.partial(_still_fresh, run, remote, url, blob.size, validators)
    return (blob, validators) if retrying(run, still, url) else None


def _still_fresh(run: Run, remote: ServerFile, url: str, size: int, kept: Validators) -> bool:
    """Whether the server's copy of ``remote`` is still the content kept locally: its
    validators match ``kept``, and its size is ``size``."""
    headers = {"Accept-Encoding": "identity"}
    if kept.etag:
        headers["If-None-Match"] = kept.etag
    elif kept.last_modified:
        headers["If-Modified-Since"] = kept.last_modified
    if size:  # an empty file has no first byte to ask for (a 416)
        headers["Range"] = "bytes=0-0"
    # Streamed: a server that ignores Range is not read past its headers.
    with run.http.stream("GET", url, params=remote.params(), headers=headers) as response:
        with run.lock:
            run.revalidated += 1
        if response.status_code == 304:
            return True
        check(response)
        if response.status_code == 206:
            total = response.headers.get("content-range", "").rpartition("/")[2]
        else:
            total = response.headers.get("content-length", "")
        return kept.matches(Validators.of(response.headers)) and total == str(size)


@dataclasses.dataclass
class _Shown:
    """What one file has put on the progress bar, across attempts: bytes an earlier run left
    in its partial file (taken off the total, so the rate counts this run's transfer only),
    bytes advanced, and whether its size was added to the total (a server that did not
    report it)."""

    earlier: int | None = None
    advanced: int = 0
    expected: bool = False


def _expect(run: Run, bar: TaskID, size: int, *, cached: int = 0) -> None:
    """Change the progress bar's total by ``size`` bytes (a file whose size the server did not
    report: added; bytes already here from the cache or an earlier run: taken off, and
    ``cached`` of them named in the bar's description)."""
    with run.lock:
        task = run.progress.tasks[bar]
        run.progress.update(bar, total=max(0, (task.total or 0) + size))
        if cached:
            run.cached_bytes += cached
            run.progress.update(
                bar, description=f"fetching ({decimal(run.cached_bytes)} already cached)"
            )


def _get(
    run: Run,
    bar: TaskID,
    remote: ServerFile,
    key: str,
    url: str,
    partial: Path,
    shown: _Shown,
) -> tuple[Blob, Validators]:
    """One attempt: fetch the file (the rest of it, when a partial file is left over from an
    earlier attempt or run) into ``partial``, hashing on the way, then into the cache."""
    offset = partial.stat().st_size if partial.exists() else 0
    # Identity: the exact bytes, a Content-Length and range support.
    headers = {"Accept-Encoding": "identity"}
    earlier = run.cache.partial_validators(key) if offset else None
    # Received whole before the run stopped (killed before it went into the cache): asked
    # only whether it is still the server's version, by its first byte.
    whole = remote.size is not None and 0 < remote.size == offset
    if earlier is not None and earlier.if_range():
        # If-Range: the rest of the same content, or (changed since) the whole of the new one.
        headers["Range"] = "bytes=0-0" if whole else f"bytes={offset}-"
        headers["If-Range"] = earlier.if_range()  # type: ignore[assignment]
    else:
        offset, whole = 0, False  # nothing proves the partial bytes are of today's content
    with run.http.stream("GET", url, params=remote.params(), headers=headers) as response:
        if response.status_code == 416:  # the partial file is longer than the file now
            partial.unlink()
            raise Transient("stale partial file")
        check(response)
        expected_range = "bytes 0-0/" if whole else f"bytes {offset}-"
        if response.status_code != 206 or not response.headers.get("content-range", "").startswith(
            expected_range
        ):
            offset, whole = 0, False
        validators = Validators.of(response.headers)
        if not offset:
            run.cache.start_partial(key, validators)
        if remote.size is None and not shown.expected:
            _expect(run, bar, offset + int(response.headers.get("content-length", 0)))
            shown.expected = True
        _show_resumed(run, bar, shown, offset)

        def received() -> Iterator[bytes]:
            if whole:  # the first byte, already in the partial file
                return
            for chunk in response.iter_bytes(CHUNK):
                if run.cancel.is_set():
                    raise Cancelled()
                yield chunk

        def advance(count: int) -> None:
            shown.advanced += count
            run.progress.advance(bar, count)

        size, digest, crc = fill_partial(partial, offset, received(), advance)
        mtime = http_date(response.headers.get("last-modified"))
    expected = remote.server_sha256
    if (remote.size is not None and size != remote.size) or (expected and digest != expected):
        partial.unlink()
        raise Mismatch(
            f"the server sent {size} bytes (sha256 {digest[:12]}…) for {remote.member}, but "
            f"reports {remote.size} bytes" + (f" (sha256 {expected[:12]}…)" if expected else "")
        )
    with run.lock:
        run.fetched_bytes += size - offset
    return run.cache.add(key, partial, size, digest, crc, mtime, validators), validators


def fill_partial(
    partial: Path, kept: int, chunks: Iterable[bytes], advance: Callable[[int], object]
) -> tuple[int, str, int]:
    """Keep the first ``kept`` bytes of the file ``partial`` (hashed again), append
    ``chunks`` (``advance`` is told each one's length): the whole file's size, SHA-256 and
    CRC-32, hashed in a thread beside the writes."""
    size = 0
    with open(partial, "r+b" if kept else "wb") as sink, _Hashing() as hashing:
        while size < kept and (chunk := sink.read(min(CHUNK, kept - size))):
            hashing.update(chunk)
            size += len(chunk)
        for chunk in chunks:
            sink.write(chunk)
            hashing.update(chunk)
            size += len(chunk)
            advance(len(chunk))
    return size, hashing.sha256.hexdigest(), hashing.crc32


def _show_resumed(run: Run, bar: TaskID, shown: _Shown, offset: int) -> None:
    """Before an attempt that keeps ``offset`` bytes of the partial file: bytes from an
    earlier run come off the total (the first attempt), and the bar shows as done just the
    bytes this run fetched that are kept (a restart from 0 takes back what it had shown)."""
    if shown.earlier is None:
        shown.earlier = offset
        if offset:
            _expect(run, bar, -offset, cached=offset)
    elif offset < shown.earlier:  # the earlier run's bytes are fetched again after all
        _expect(run, bar, shown.earlier - offset)
        shown.earlier = offset
    kept = offset - shown.earlier
    run.progress.advance(bar, kept - shown.advanced)
    shown.advanced = kept
