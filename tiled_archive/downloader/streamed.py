"""A download through a server's archive route (``tiled_archive.serve.router``), fetching only
what the cache lacks.

``GET {api}/archive/{path}`` (the source's search as its ``filter[...]`` parameters) is the
whole archive as one deterministic ZIP with an exact length and an ETag, answering ranges
(``If-Range``). A ``HEAD`` asks whether the server has the route (404, 405 or 400: it cannot
stream this node, and the download takes the per-asset path). Then the archive's tail is read
as any remote ZIP is (:func:`tiled_archive.reader.open_archive` over the Tiled client's own
HTTP client: the central directory, the manifest, ``catalog.db``): every payload file whose
SHA-256 the cache holds is taken from it, and the rest is fetched with one range request per
run of adjacent missing members, each member's bytes checked against the manifest's digest
on the way into the cache. An interrupted download resumes: members fetched whole are in the
cache, a half-fetched one waits in its partial file (keyed by its digest) for the rest.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..files.blobs import Validators
from ..files.hashing import CHUNK
from ..reader import ArchiveWarning, open_archive
from ..rules.manifest import FileEntry
from ..rules.names import CATALOG_NAME
from ..rules.problems import ArchiveError
from ..zip import records as zf
from ..zip.stream import dos_to_epoch
from .state import Run
from .transfer import Transient, check, fill_partial, retrying

T = TypeVar("T")

#: Answers that mean "this server cannot stream this node": take the per-asset path (501: a
#: server, or a proxy in front of it, that does not implement HEAD).
NOT_STREAMED = (400, 404, 405, 501)


def route_url(source: Any) -> str:
    """The archive route's URL for ``source`` (a Tiled client node), with its search."""
    path = "/".join(part for part in source.path_parts if part)
    params = dict(getattr(source, "_queries_as_params", {}) or {})
    url = f"{str(source.context.api_uri).rstrip('/')}/archive/{path}"
    return str(httpx.URL(url, params=params))


def fetch_routed(run: Run) -> Path | None:
    """Every payload file of the route's archive of ``run.source`` ready (``run.ready``:
    from the cache, or fetched into it) and its catalog in ``run.staging``: the catalog's
    path; None when the server has no archive route for it. Raises ArchiveError TA-E911
    when the server keeps failing or the archive changes while it is fetched."""
    url = route_url(run.source)
    head = retrying(run, functools.partial(_head, run, url), url)
    if head is None:
        return None
    etag = head.headers.get("etag")
    archive = retrying(
        run, functools.partial(_remote, open_archive, url, {"client": run.http}), url
    )
    with archive:
        records = sorted(archive.source.entries, key=lambda record: record.header_offset)
        entries = archive.manifest.files
        missing = {}
        for entry in entries:
            kept = run.previous.by_digest(entry.sha256, entry.size) if run.previous else None
            blob = run.cache.by_digest(entry.sha256) if kept is None else None
            if kept is not None:
                run.file_reused(entry.path, run.previous.payload(kept, entry.path))
            elif blob is not None and blob.size == entry.size:
                run.cached_bytes += entry.size
                run.file_ready(entry.path, blob)
            else:
                missing[entry.path] = entry
        total = sum(entry.size for entry in missing.values())
        bar = run.progress.add_task("fetching", total=total or None, bytes=True)
        directory = archive.source.directory
        for group, end in _runs(records, missing, directory.cd_start):
            fetch = functools.partial(_fetch_run, run, url, etag, group, end, bar, directory)
            retrying(run, fetch, url)
        run.staging.mkdir(parents=True, exist_ok=True)
        catalog = run.staging / CATALOG_NAME
        try:
            # The checks open() makes of a catalog (rows Tiled loads, asset URIs naming this
            # archive's members, parameters): the server's catalog is written as it came.
            archive.check_catalog()
            shutil.copyfile(archive.catalog_path(), catalog)
        except ArchiveError as err:
            found = err.problem
            raise ArchiveError(
                found.code, found.path, f"in the server's archive ({url}): {found.message}"
            ) from None
    return catalog


def _head(run: Run, url: str) -> httpx.Response | None:
    response = run.http.head(url)
    if response.status_code in NOT_STREAMED:
        return None
    check(response)
    etag = response.headers.get("etag", "")
    if not etag or etag.startswith("W/"):
        # Ranges of one stream need a strong ETag to ask for with If-Range (RFC 9110
        # §13.1.5): without one, the per-asset path.
        return None
    return response


def _remote(read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, a read of the route's archive by the remote reader: its failures to
    reach the server (TA-E930, TA-E931) are retried as any other transfer's."""
    try:
        with warnings.catch_warnings():
            # The route's stream has its tag files last (TA-W103): rewritten here anyway.
            warnings.simplefilter("ignore", ArchiveWarning)
            return read(*args)
    except ArchiveError as err:
        if err.code in ("TA-E930", "TA-E931"):
            raise Transient(str(err)) from None
        raise


#: A run of adjacent members to fetch (in archive order), with their manifest entries and
#: central directory records.
Group = list[tuple[FileEntry, Any]]


def _runs(records: list, missing: dict[str, FileEntry], cd_start: int) -> Iterator[tuple]:
    """Runs of adjacent missing members, each with the offset where it ends (the next
    member's local header, or the central directory)."""
    group: Group = []
    for record in records:
        if record.name in missing:
            group.append((missing[record.name], record))
            continue
        if group:
            yield group, record.header_offset
            group = []
    if group:
        yield group, cd_start


def _fetch_run(
    run: Run, url: str, etag: str, group: Group, end: int, bar: Any, directory: Any
) -> None:
    """One range request for a run of members, each into the cache as it completes. An
    attempt (or a run) after a failure starts at the first member not fetched yet, where its
    partial file ends."""
    group = [(entry, record) for entry, record in group if entry.path not in run.ready]
    while group and _finished_from_partial(run, group[0][0], etag):
        group = group[1:]  # received whole before a run stopped: no request for it
    if not group:
        return
    first, record = group[0]
    kept = run.cache.partial_size(_member_key(first))
    if 0 < kept < first.size:
        # The rest of a half-fetched member: where its data starts takes its local header.
        start = _remote(directory.resolve, record).data_offset + kept
    else:
        start, kept = record.header_offset, 0
    headers = {"Range": f"bytes={start}-{end - 1}", "If-Range": etag}
    headers["Accept-Encoding"] = "identity"
    with run.http.stream("GET", url, headers=headers) as response:
        check(response)
        if response.status_code != 206 or response.headers.get("etag") != etag:
            raise ArchiveError(
                "TA-E911",
                url,
                "the archive changed on the server while it was fetched (ETag "
                f"{response.headers.get('etag')}, was {etag}; HTTP {response.status_code})",
                "Re-run the download: what was fetched is in the cache.",
            )
        stream = _Reader(response.iter_bytes(CHUNK))
        for entry, _ in group:
            _fetch_member(run, stream, entry, etag, bar, kept)
            kept = 0


def _finished_from_partial(run: Run, entry: FileEntry, etag: str) -> bool:
    """A member whose partial file holds all its bytes (a run stopped before it went into the
    cache) goes in now when its digest is the manifest's; else its partial file is dropped."""
    key = _member_key(entry)
    if entry.size == 0 or run.cache.partial_size(key) != entry.size:
        return False
    with run.cache.partial(key) as partial:
        _, sha, crc = fill_partial(partial, entry.size, [], lambda _: None)
        if sha != entry.sha256:
            partial.unlink()
            return False
        with run.lock:
            run.cached_bytes += entry.size  # an earlier run's
        mtime = int(partial.stat().st_mtime)
        blob = run.cache.add(key, partial, entry.size, sha, crc, mtime, Validators(etag, None))
    run.file_ready(entry.path, blob)
    return True


def _member_key(entry: FileEntry) -> str:
    """A member's key in the cache index: its content (the same bytes from any server)."""
    return json.dumps(["archive member", entry.sha256, entry.size])


def _fetch_member(
    run: Run, stream: _Reader, entry: FileEntry, etag: str, bar: Any, kept: int
) -> None:
    """One member from ``stream`` into the cache, checked against the manifest's size and
    SHA-256: from its local header on, or (``kept`` bytes of it in its partial file) from
    there on."""
    mtime = int(time.time())
    if not kept:
        fields = zf.LOCAL_HEADER.unpack(stream.read(zf.LOCAL_HEADER.size))
        if fields[0] != 0x04034B50:
            raise Transient(f"no local header where {entry.path} starts")
        stream.read(fields[-2] + fields[-1])  # name, extra field
        mtime = dos_to_epoch(fields[4], fields[5])
    key = _member_key(entry)

    def received() -> Iterator[bytes]:
        left = entry.size - kept
        while left:
            chunk = stream.read(min(CHUNK, left), at_most=True)
            left -= len(chunk)
            yield chunk

    with run.cache.partial(key) as partial:
        _, sha, crc = fill_partial(
            partial, kept, received(), functools.partial(run.progress.advance, bar)
        )
        if sha != entry.sha256:
            partial.unlink()
            raise ArchiveError(
                "TA-E308",
                entry.path,
                "the server's archive sent other bytes than its manifest names",
                "Re-run the download; if it recurs, the server's file changed while it was "
                "sent, or something between rewrites it.",
            )
        with run.lock:
            run.fetched_bytes += entry.size - kept
            run.cached_bytes += kept  # an earlier run's
        blob = run.cache.add(key, partial, entry.size, sha, crc, mtime, Validators(etag, None))
    run.file_ready(entry.path, blob)


class _Reader:
    """Exact reads from an iterator of chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int, *, at_most: bool = False) -> bytes:
        while len(self._buffer) < size and not (at_most and self._buffer):
            chunk = next(self._chunks, b"")
            if not chunk:
                raise Transient("the archive stream ended early")
            self._buffer += chunk
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken


__all__ = ["NOT_STREAMED", "fetch_routed", "route_url"]
