"""Download from a live Tiled server into an archive: ``tiled_archive.download(node, dest)``.

The bytes that back the server are fetched unchanged through Tiled's raw-asset endpoints
(``/asset/manifest`` lists a directory asset such as a Zarr store, ``/asset/bytes`` serves one
file), in parallel, into a local content-addressed cache (:class:`BlobCache`). An interrupted
download resumes from it (a half-fetched file with an HTTP range request), and what was fetched
once, for any archive, is not fetched again. The catalog subtree is then rebuilt by Tiled itself:
a fresh catalog served in-process, each node recreated through the Tiled client with data
sources pointing at the downloaded files, and the archive written by
:func:`tiled_archive.writer.write_new`, atomically, streaming from the cache.

What the server will not hand out raw (raw assets disabled, assets that are not files such as
SQL tables, nodes without a data source of their own) is read through the data API and written
as Zarr (arrays) or Parquet (tables); the manifest's ``fallbacks`` lists those nodes. A node
that cannot be fetched either way stops the run with TA-E910 naming it, and nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hashlib
import json
import math
import os
import queue
import random
import sqlite3
import tempfile
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from . import catalog as catalog_db
from .format import _FORBIDDEN as FORBIDDEN_CHARACTERS
from .format import CATALOG_NAME, DATA_DIR, ArchiveError, Severity, path_problems
from .reader import cache_dir as archive_cache_root
from .writer import CHUNK, PayloadFile, check_destination, copy_hashing, write_new

DEFAULT_WORKERS = 4
DEFAULT_RETRIES = 5
#: The cache is trimmed to this size (least recently used first) after every download.
DEFAULT_CACHE_MAX_BYTES = 20 << 30
#: Arrays read through the data API are fetched in slabs of about this size.
SLAB_BYTES = 64 << 20
ZARR_MIMETYPE = "application/x-zarr"
PARQUET_MIMETYPE = "application/x-parquet"
# Where data read through the data API goes, below data/ (a suffix is added if taken).
FALLBACK_FOLDER = "data-api"

T = TypeVar("T")
FileHook = Callable[[str, int], None]


# -- The cache ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A local file with known content: size, SHA-256, CRC-32 and modification time."""

    path: Path
    size: int
    sha256: str
    crc32: int
    mtime: int


class BlobCache:
    """Downloaded files by content (``<root>/<sha256[:2]>/<sha256>``), an index from what names a
    remote file to its digest, and least-recently-used eviction down to ``max_bytes``.

    The index (``index.sqlite``) maps a remote file's identity (the server's API URL, the asset's
    id and data URI, the path inside a directory asset, and the size and hash the server reports)
    to a digest. Every blob is hashed again before its first use by a download, so a damaged or
    altered cache file is fetched again, never archived. A half-fetched file waits in
    ``partial/`` until a range request completes it.
    """

    def __init__(self, root: Path, max_bytes: int | None = DEFAULT_CACHE_MAX_BYTES):
        self.root = root
        self.max_bytes = max_bytes
        (root / "partial").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._verified: set[str] = set()
        # Autocommit: every statement is its own transaction, so concurrent downloads (other
        # processes too) only ever wait on SQLite's lock for one statement.
        self._db = sqlite3.connect(
            root / "index.sqlite", timeout=60, check_same_thread=False, isolation_level=None
        )
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS remote "
            "(key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, mtime INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS blob (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "crc32 INTEGER NOT NULL, used REAL NOT NULL);"
        )

    def _sql(self, statement: str, *args: object) -> list[tuple]:
        with self._lock:
            return self._db.execute(statement, args).fetchall()

    def blob_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def lookup(self, key: str) -> Blob | None:
        """The verified blob the index holds for ``key``, or None (a damaged blob is dropped)."""
        rows = self._sql(
            "SELECT sha256, mtime, size, crc32 FROM remote JOIN blob USING (sha256) WHERE key = ?",
            key,
        )
        if not rows:
            return None
        sha, mtime, size, crc = rows[0]
        blob = Blob(self.blob_path(sha), size, sha, crc, mtime)
        if sha not in self._verified:
            try:
                with open(blob.path, "rb") as handle:
                    actual = copy_hashing(handle, None, with_crc32=True)
            except FileNotFoundError:
                actual = None
            if actual != (size, sha, crc):
                self._forget(sha)
                return None
            self._verified.add(sha)
        self._sql("UPDATE blob SET used = ? WHERE sha256 = ?", time.time(), sha)
        return blob

    @contextlib.contextmanager
    def partial(self, key: str) -> Iterator[Path]:
        """The file a fetch of ``key`` writes into, kept when the fetch fails so that a later
        one can resume it; locked against another process fetching the same file meanwhile."""
        path = self.root / "partial" / hashlib.sha256(key.encode()).hexdigest()
        with open(path, "ab") as handle:
            with contextlib.suppress(ImportError):  # no fcntl on Windows: no cross-process lock
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                # Nothing fetched (a cache hit, a refusal): leave no empty file behind.
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_size == 0:
                        path.unlink()

    def add(self, key: str, partial: Path, size: int, sha256: str, crc32: int, mtime: int) -> Blob:
        """Move a completely fetched ``partial`` file into the cache and index it under ``key``."""
        path = self.blob_path(sha256)
        path.parent.mkdir(exist_ok=True)
        os.replace(partial, path)
        self._sql(
            "INSERT OR REPLACE INTO blob VALUES (?, ?, ?, ?)", sha256, size, crc32, time.time()
        )
        self._sql("INSERT OR REPLACE INTO remote VALUES (?, ?, ?)", key, sha256, mtime)
        self._verified.add(sha256)
        return Blob(path, size, sha256, crc32, mtime)

    def _forget(self, sha256: str) -> None:
        self.blob_path(sha256).unlink(missing_ok=True)
        self._sql("DELETE FROM remote WHERE sha256 = ?", sha256)
        self._sql("DELETE FROM blob WHERE sha256 = ?", sha256)
        self._verified.discard(sha256)

    def evict(self, keep: Collection[str] = ()) -> None:
        """Delete the least recently used blobs and half-fetched files until the cache holds at
        most ``max_bytes``; blobs whose digest is in ``keep`` stay."""
        if self.max_bytes is None:
            return
        blobs = self._sql("SELECT sha256, size, used FROM blob")
        total = sum(size for sha, size, _ in blobs if sha in keep)
        candidates = [
            (used, size, functools.partial(self._forget, sha))
            for sha, size, used in blobs
            if sha not in keep
        ]
        for partial in (self.root / "partial").iterdir():
            with contextlib.suppress(FileNotFoundError):  # finished by another download
                stat = partial.stat()
                candidates.append((stat.st_mtime, stat.st_size, partial.unlink))
        for _, size, drop in sorted(candidates, key=lambda c: c[0], reverse=True):
            total += size
            if total > self.max_bytes:
                drop()

    def close(self) -> None:
        self._db.close()


def default_cache_dir() -> Path:
    """``blobs`` under the tiled-archive cache root (``TILED_ARCHIVE_CACHE`` overrides it)."""
    return archive_cache_root() / "blobs"


# -- Errors and HTTP ----------------------------------------------------------------------------


class _NotServed(Exception):
    """The server refused to hand something out (a 4xx answer); asking again will not help."""


class _Transient(Exception):
    """A 5xx or 429 answer, or a half-fetched file that cannot be resumed: worth retrying."""


class _Mismatch(Exception):
    """The server sent bytes that differ from the size or hash it reports."""


class _Cancelled(Exception):
    """Another worker failed (or the caller's hook raised): stop at the next chunk."""


def _check(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    response.read()
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200]
    if status >= 500 or status == 429:
        raise _Transient(f"HTTP {status}: {detail}")
    raise _NotServed(f"HTTP {status}: {detail}")


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, jittered, capped."""
    return min(0.5 * 2**attempt, 15.0) * random.uniform(0.5, 1.5)


def _http_date(value: str | None) -> int:
    if value:
        with contextlib.suppress(TypeError, ValueError):
            return int(email.utils.parsedate_to_datetime(value).timestamp())
    return int(time.time())


def _server_path(data_uri: str) -> PurePosixPath | None:
    """The server-side path of a ``file:`` asset URI, unescaped as Tiled writes it (None for
    any other scheme). Not ``urlparse``: a ``#`` or ``?`` in a file name must stay in the path,
    where the archive path check refuses it, not silently cut it short."""
    if not data_uri.startswith("file://"):
        return None
    rest = data_uri[len("file://") :]
    return PurePosixPath(rest[rest.find("/") :]) if "/" in rest else None


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
            self.crc32 = zlib.crc32(chunk, self.crc32)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def __enter__(self) -> _Hashing:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._chunks.put(None)
        self._thread.join()


# -- What to fetch ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """A node of the archive, as the server describes it, and how it gets into the archive."""

    path: tuple[str, ...]
    client: Any
    #: "container" (a plain container), "raw" (its assets fetched as they are), "data-api".
    method: str
    #: Why the node was not fetched raw (the data API was used, or failed too).
    reason: str | None = None
    #: Set when the node could not be fetched at all.
    error: str | None = None
    files: list[_RemoteFile] = field(default_factory=list)
    #: The node's data sources in the archive (JSON), asset URIs pointing into the staging folder.
    archived: list[dict[str, Any]] = field(default_factory=list)

    @property
    def attributes(self) -> dict[str, Any]:
        return self.client.item["attributes"]

    @property
    def name(self) -> str:
        return "/".join(self.path) or "/"

    def asset_url(self, endpoint: str) -> str:
        # As Tiled's own raw_export builds it, so server prefixes and proxies are honoured.
        return self.client.item["links"]["self"].replace("/metadata", f"/asset/{endpoint}", 1)


@dataclass(eq=False)
class _RemoteFile:
    """One file of a raw node: a file asset, or one file inside a directory asset."""

    node: _Node
    asset: dict[str, Any]
    relative_path: str | None
    server_path: PurePosixPath
    member: str = ""

    @property
    def size(self) -> int | None:
        return None if self.relative_path is not None else self.asset.get("size")

    @property
    def server_sha256(self) -> str | None:
        if self.relative_path is None and self.asset.get("hash_type") == "sha256":
            return self.asset.get("hash_content")
        return None

    def key(self, base_url: str) -> str:
        """What identifies this file in the cache index."""
        return json.dumps(
            [
                base_url,
                self.asset["id"],
                self.asset["data_uri"],
                self.relative_path,
                self.size,
                self.server_sha256,
            ]
        )

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"id": self.asset["id"]}
        if self.relative_path is not None:
            params["relative_path"] = self.relative_path
        return params


def _path(client: Any) -> tuple[str, ...]:
    """A node's path from the server root (the root's own ``path_parts`` is ``[""]``)."""
    return tuple(part for part in client.path_parts if part)


def _safe_segment(key: str) -> str:
    """A node key as an archive path segment (for data read through the data API): characters
    the format forbids become ``_``, and the segment is NFC and at most 255 bytes."""
    text = FORBIDDEN_CHARACTERS.sub("_", unicodedata.normalize("NFC", key).replace("/", "_"))
    text = "".join(ch for ch in text if not "\ud800" <= ch <= "\udfff")
    if text in ("", ".", ".."):
        text = f"_{text}"
    while len(text.encode()) > 255:
        text = text[:-1]
    return text


# -- The download --------------------------------------------------------------------------------


class _AmountColumn(ProgressColumn):
    """Bytes and speed for a transfer (a task with ``bytes=True``), a count for the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._size, self._speed, self._count = (
            DownloadColumn(),
            TransferSpeedColumn(),
            MofNCompleteColumn(),
        )

    def render(self, task: Task) -> Text:
        if task.fields.get("bytes"):
            return Text.assemble(self._size.render(task), " ", self._speed.render(task))
        return self._count.render(task)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeRemainingColumn(),
        disable=quiet,
        transient=True,
    )


class _Download:
    """One run of :func:`download`: plan, fetch, fall back, rebuild the catalog, write."""

    def __init__(
        self,
        source: Any,
        cache: BlobCache,
        staging: Path,
        progress: Progress,
        *,
        workers: int,
        retries: int,
        on_file: FileHook | None,
    ):
        self.source = source
        self.http: httpx.Client = source.context.http_client
        self.base_url = str(source.context.api_uri)
        self.cache = cache
        self.staging = staging
        self.progress = progress
        self.workers = max(1, workers)
        self.retries = retries
        self.on_file = on_file
        self.cancel = threading.Event()
        self.nodes: list[_Node] = []
        #: Every payload file of the archive, by archive path.
        self.ready: dict[str, Blob] = {}
        self._lock = threading.Lock()
        self._raw_refused: str | None = None
        self._segments: dict[tuple[str, ...], str] = {}
        self._taken: dict[tuple[str, ...], set[str]] = {}
        #: The deepest folder holding every raw asset on the server.
        self._base = PurePosixPath("/")
        self._listing = progress.add_task("listing nodes", total=None)

    # -- Running many things at once ----------------------------------------------------------

    def parallel(self, items: Iterable[T], task: Callable[[T], None]) -> None:
        """Run ``task`` on every item with ``workers`` threads. The first exception (or an
        interrupt) cancels the rest, running transfers stopping at their next chunk, and is
        raised."""

        def guarded(item: T) -> None:
            if self.cancel.is_set():
                raise _Cancelled()
            try:
                task(item)
            except BaseException:
                # At once, in this thread: it must not start the next queued task first.
                self.cancel.set()
                raise

        pool = ThreadPoolExecutor(self.workers)
        try:
            futures = [pool.submit(guarded, item) for item in items]
            wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
            if errors:
                # A worker stopped by the cancellation is not the cause; the first real error is.
                raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
        except BaseException:
            self.cancel.set()
            raise
        finally:
            pool.shutdown(cancel_futures=True)

    def retrying(self, attempt: Callable[[], T], what: str) -> T:
        """``attempt()``, retried with backoff on connection errors and 5xx answers (not 4xx);
        TA-E911 when the server keeps failing."""
        for number in range(self.retries + 1):
            if self.cancel.is_set():
                raise _Cancelled()
            try:
                return attempt()
            except (httpx.TransportError, _Transient) as err:
                error: Exception = err
            if number < self.retries and self.cancel.wait(_backoff(number)):
                raise _Cancelled()
        raise ArchiveError(
            "TA-E911",
            what,
            f"the server failed {self.retries + 1} times, last with {error!r}; "
            "nothing was written, and re-running resumes from the cache",
        )

    def _ready(self, member: str, blob: Blob) -> None:
        with self._lock:
            self.ready[member] = blob
        if self.on_file is not None:
            self.on_file(member, blob.size)  # what it raises stops the download (parallel)

    def fetch(self) -> None:
        """Everything the archive holds, into the cache and the staging folder; TA-E910 listing
        every node that could be fetched neither raw nor through the data API."""
        self.plan()
        self.list_directories()
        self.assign_members()
        self.fetch_raw()
        self.fetch_fallbacks()
        failures = [f"{node.name}: {node.error}" for node in self.nodes if node.error]
        if failures:
            raise ArchiveError(
                "TA-E910",
                self.base_url,
                f"{len(failures)} node(s) could not be fetched, nothing was written:\n  "
                + "\n  ".join(failures),
            )
        self.archive_raw_sources()

    def payload(self) -> list[PayloadFile]:
        """The archive's payload. Digests and CRC-32s are known (fetched, verified from the
        cache, or written here): a ZIP is written without a hashing pass, and a directory
        hard-links the cache's files."""
        return [
            PayloadFile(
                member,
                blob.size,
                functools.partial(open, blob.path, "rb"),
                blob.mtime,
                blob.sha256,
                crc32=blob.crc32,
                local_path=blob.path,
            )
            for member, blob in sorted(self.ready.items())
        ]

    # -- 1. Plan: walk the server's tree ------------------------------------------------------

    def plan(self) -> None:
        """Every node to archive: the source's parent containers, then the source in full (or,
        for a search result, each match in full)."""
        from tiled.client import from_context

        parts = list(_path(self.source))
        for depth in range(1, len(parts)):
            parent = from_context(self.source.context, node_path_parts=parts[:depth])
            self._add(_Node(tuple(parts[:depth]), parent, "container"))
        source = self.source.include_data_sources()
        # Tiled's client keeps a search's queries privately. A search result is its matching
        # children, even when the searched node has data sources of its own.
        if getattr(source, "_queries", None):
            if parts:
                self._add(_Node(tuple(parts), source, "container"))
            for _, child in source.items():
                self._walk(child)
        else:
            self._walk(source)

    def _add(self, node: _Node) -> None:
        self.nodes.append(node)
        self.progress.advance(self._listing)

    def _walk(self, client: Any, fallback_reason: str | None = None) -> None:
        """Add ``client``'s node and its descendants; with ``fallback_reason`` (a subtree whose
        raw assets were refused) nothing is fetched raw."""
        attributes = client.item["attributes"]
        path = _path(client)
        sources = attributes.get("data_sources") or []
        if sources and fallback_reason is None:
            node = _Node(path, client, "raw")
            self._add(node)
            self._plan_assets(node, sources)
        elif attributes["structure_family"] == "container":
            if path:
                self._add(_Node(path, client, "container", reason=fallback_reason))
            for _, child in client.items():
                self._walk(child, fallback_reason)
        else:
            reason = fallback_reason or "the server lists no data source for it"
            self._add(_Node(path, client, "data-api", reason=reason))

    def _plan_assets(self, node: _Node, sources: list[dict[str, Any]]) -> None:
        for source in sources:
            if not source.get("assets"):
                self._refuse(node, "a data source without assets")
            for asset in source.get("assets") or []:
                path = _server_path(asset["data_uri"])
                if path is None:
                    scheme = asset["data_uri"].split(":", 1)[0]
                    self._refuse(node, f"its data is a {scheme}: asset, not a file")
                elif not asset["is_directory"]:
                    node.files.append(_RemoteFile(node, asset, None, path))

    def _refuse(self, node: _Node, reason: str) -> None:
        """Fetch ``node`` through the data API instead (the first reason given is kept)."""
        with self._lock:
            if node.method == "raw":
                node.method, node.reason = "data-api", reason

    # -- 2. Directory assets: their file lists ------------------------------------------------

    def list_directories(self) -> None:
        """Add every file of every directory asset (``/asset/manifest``) to its node."""
        pairs = [
            (node, asset)
            for node in self.nodes
            if node.method == "raw"
            for source in node.attributes["data_sources"]
            for asset in source["assets"]
            if asset["is_directory"]
        ]
        self.parallel(pairs, lambda pair: self._list_directory(*pair))

    def _list_directory(self, node: _Node, asset: dict[str, Any]) -> None:
        if self._raw_refused is not None:
            self._refuse(node, self._raw_refused)
            return
        root = _server_path(asset["data_uri"])
        assert root is not None  # non-file assets were refused when planned
        url = node.asset_url("manifest")

        def attempt() -> list[str]:
            response = self.http.get(
                url, params={"id": asset["id"]}, headers={"Accept": "application/json"}
            )
            _check(response)
            return response.json()["manifest"]

        try:
            listing = self.retrying(attempt, url)
        except _NotServed as err:
            self._refused_raw(node, err)
            return
        if not listing:
            self._refuse(node, "a directory asset the server lists as empty")
        for entry in listing:
            # Tiled 0.2.x lists absolute server paths; a relative one is taken as in the asset.
            path = PurePosixPath(entry)
            if path.is_absolute() and not path.is_relative_to(root):
                self._refuse(node, f"its directory listing names {entry}, outside the asset")
                return
            relative = path.relative_to(root) if path.is_absolute() else path
            node.files.append(_RemoteFile(node, asset, relative.as_posix(), root / relative))

    def _refused_raw(self, node: _Node, err: Exception) -> None:
        reason = f"raw assets refused ({err})"
        if str(err).startswith("HTTP 403"):
            # Raw assets are off for the whole server: do not ask again for every node.
            self._raw_refused = reason
        self._refuse(node, reason)

    # -- 3. Archive paths, then the raw bytes ---------------------------------------------

    def assign_members(self) -> None:
        """Archive paths of raw files: the server paths relative to their deepest common folder
        (as ``create_from_catalog`` does). A node whose file names the format cannot hold is
        fetched through the data API instead."""
        while True:
            raw = [node for node in self.nodes if node.method == "raw"]
            assets = {
                _server_path(asset["data_uri"])
                for node in raw
                for source in node.attributes["data_sources"]
                for asset in source["assets"]
            }
            if not assets:
                return
            base = PurePosixPath(os.path.commonpath([str(path.parent) for path in assets]))
            for node in raw:
                for remote in node.files:
                    remote.member = f"{DATA_DIR}/{remote.server_path.relative_to(base)}"
                    errors = [
                        p for p in path_problems(remote.member) if p.severity is Severity.ERROR
                    ]
                    if errors:
                        self._refuse(node, f"a file name the format cannot hold ({errors[0]})")
                        break
            if all(node.method == "raw" for node in raw):
                self._base = base
                return

    def fetch_raw(self) -> None:
        """Fetch every raw file not already in the cache (one request per file)."""
        unique: dict[str, _RemoteFile] = {}
        for node in self.nodes:
            if node.method == "raw":
                for remote in node.files:
                    unique.setdefault(remote.member, remote)
        total = sum(remote.size or 0 for remote in unique.values())
        self._bytes = self.progress.add_task("fetching", total=total or None, bytes=True)
        self.parallel(unique.values(), self._fetch)

    def _fetch(self, remote: _RemoteFile) -> None:
        if remote.node.method != "raw":
            return
        if self._raw_refused is not None:
            self._refuse(remote.node, self._raw_refused)
            return
        key = remote.key(self.base_url)
        url = remote.node.asset_url("bytes")
        try:
            with self.cache.partial(key) as partial:
                blob = self.cache.lookup(key)
                if blob is not None:
                    if remote.size is None:
                        self._expect(blob.size)
                    self.progress.advance(self._bytes, blob.size)
                else:
                    blob = self.retrying(
                        functools.partial(self._get, remote, key, url, partial), url
                    )
        except _NotServed as err:
            self._refused_raw(remote.node, err)
            return
        except _Mismatch as err:
            remote.node.error = str(err)
            return
        self._ready(remote.member, blob)

    def _expect(self, size: int) -> None:
        """Add a file whose size the server did not report to the progress bar's total."""
        with self._lock:
            total = self.progress.tasks[self._bytes].total or 0
            self.progress.update(self._bytes, total=total + size)

    def _get(self, remote: _RemoteFile, key: str, url: str, partial: Path) -> Blob:
        """One attempt: fetch the file (the rest of it, when a partial file is left over from an
        earlier attempt or run) into ``partial``, hashing on the way, then into the cache."""
        offset = partial.stat().st_size if partial.exists() else 0
        # Identity: the exact bytes, a Content-Length and range support.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self.http.stream("GET", url, params=remote.params(), headers=headers) as response:
            if response.status_code == 416:  # the partial file is longer than the file now
                partial.unlink()
                raise _Transient("stale partial file")
            _check(response)
            if response.status_code != 206 or not response.headers.get(
                "content-range", ""
            ).startswith(f"bytes {offset}-"):
                offset = 0
            if remote.size is None:
                self._expect(offset + int(response.headers.get("content-length", 0)))
            size = 0
            with open(partial, "r+b" if offset else "wb") as sink, _Hashing() as hashing:
                while size < offset and (chunk := sink.read(min(CHUNK, offset - size))):
                    hashing.update(chunk)
                    size += len(chunk)
                    self.progress.advance(self._bytes, len(chunk))
                for chunk in response.iter_bytes(CHUNK):
                    if self.cancel.is_set():
                        raise _Cancelled()
                    sink.write(chunk)
                    hashing.update(chunk)
                    size += len(chunk)
                    self.progress.advance(self._bytes, len(chunk))
            mtime = _http_date(response.headers.get("last-modified"))
        digest, crc = hashing.sha256.hexdigest(), hashing.crc32
        expected = remote.server_sha256
        if (remote.size is not None and size != remote.size) or (expected and digest != expected):
            partial.unlink()
            raise _Mismatch(
                f"the server sent {size} bytes (sha256 {digest[:12]}…) for {remote.member}, but "
                f"reports {remote.size} bytes" + (f" (sha256 {expected[:12]}…)" if expected else "")
            )
        return self.cache.add(key, partial, size, digest, crc, mtime)

    # -- 4. The rest: through the data API -----------------------------------------------------

    def fetch_fallbacks(self) -> None:
        """Read nodes not fetched raw through the data API: a container is expanded into its
        children, an array becomes a Zarr store and a table Parquet files."""
        raw = {
            remote.member for node in self.nodes if node.method == "raw" for remote in node.files
        }
        for member in set(self.ready) - raw:  # fetched before its node was refused
            del self.ready[member]
        for node in list(self.nodes):
            if node.method == "data-api" and node.attributes["structure_family"] == "container":
                node.method = "container"
                for _, child in node.client.items():
                    self._walk(child, fallback_reason=node.reason)
        leaves = [node for node in self.nodes if node.method == "data-api"]
        prefix = self._fallback_prefix()
        folders = {id(node): f"{prefix}/{self._segment_path(node.path)}" for node in leaves}
        self._nodes_task = self.progress.add_task("data API", total=len(leaves))
        self.parallel(leaves, lambda node: self._fallback(node, folders[id(node)]))

    def _fallback_prefix(self) -> str:
        taken = {member.split("/")[1] for member in self.ready}
        name, number = FALLBACK_FOLDER, 1
        while name in taken:
            number += 1
            name = f"{FALLBACK_FOLDER}-{number}"
        return f"{DATA_DIR}/{name}"

    def _segment_path(self, path: tuple[str, ...]) -> str:
        """A folder below the fallback folder for a node path: sanitized keys, made unique
        among siblings (also ignoring case) with ``~2``, ``~3``..."""
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            if prefix not in self._segments:
                taken = self._taken.setdefault(prefix[:-1], set())
                segment = base = _safe_segment(prefix[-1])
                number = 1
                while segment.casefold() in taken:
                    number += 1
                    segment = f"{base}~{number}"
                taken.add(segment.casefold())
                self._segments[prefix] = segment
        return "/".join(self._segments[path[:depth]] for depth in range(1, len(path) + 1))

    def _fallback(self, node: _Node, folder_member: str) -> None:
        family = node.attributes["structure_family"]
        folder = self.staging / folder_member
        structure = node.attributes["structure"]
        try:
            if family == "array":
                self._write_zarr(node, folder)
                assets = [_staged_asset(folder, True, "data_uri", None)]
                mimetype = ZARR_MIMETYPE
            elif family == "table":
                partitions = self._write_parquet(node, folder)
                assets = [
                    _staged_asset(path, False, "data_uris", number)
                    for number, path in enumerate(partitions)
                ]
                mimetype = PARQUET_MIMETYPE
            else:
                node.error = f"no data-API fallback for {family} nodes ({node.reason})"
                return
        except _NotServed as err:
            node.error = f"data API: {err} ({node.reason})"
            return
        except (ValueError, TypeError) as err:  # a dtype or schema the local writer refuses
            node.error = f"could not write it locally: {err!r} ({node.reason})"
            return
        node.archived = [
            {
                "structure_family": family,
                "structure": structure,
                "mimetype": mimetype,
                "parameters": {},
                "properties": {},
                "management": "external",
                "assets": assets,
            }
        ]
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with open(path, "rb") as handle:
                size, sha, crc = copy_hashing(handle, None, with_crc32=True)
            member = path.relative_to(self.staging).as_posix()
            self._ready(member, Blob(path, size, sha, crc, int(time.time())))
        self.progress.advance(self._nodes_task)

    def _data(self, node: _Node, link: str, params: dict[str, Any], accept: str) -> bytes:
        """One data-API response body (whole: a slab or a partition, bounded in size)."""
        # Links may carry a template query (``?partition={index}``); params replace it.
        url = node.client.item["links"][link].split("?", 1)[0]

        def attempt() -> bytes:
            response = self.http.get(url, params=params, headers={"Accept": accept})
            _check(response)
            return response.content

        return self.retrying(attempt, url)

    def _write_zarr(self, node: _Node, folder: Path) -> None:
        """An array as a Zarr store (as Tiled's ``write_array`` makes), chunked like the
        server's first block, fetched in slabs of about :data:`SLAB_BYTES`: memory stays flat.
        The server's structure is kept: Tiled slices blocks out of the store by it."""
        import numpy as np
        import zarr
        from tiled.structures.array import ArrayStructure

        structure = ArrayStructure.from_json(node.attributes["structure"])
        dtype = structure.data_type.to_numpy_dtype()
        shape = tuple(structure.shape)
        chunks = tuple(max(dim[0], 1) if dim else 1 for dim in structure.chunks)
        target = zarr.create_array(store=str(folder), shape=shape, chunks=chunks, dtype=dtype)
        if 0 in shape:
            return
        if not shape:
            raw = self._data(node, "full", {}, "application/octet-stream")
            target[...] = np.frombuffer(raw, dtype=dtype).reshape(shape)
            return
        row_bytes = dtype.itemsize * math.prod(shape[1:])
        step = max(1, SLAB_BYTES // max(row_bytes * chunks[0], 1)) * chunks[0]
        for start in range(0, shape[0], step):
            stop = min(start + step, shape[0])
            raw = self._data(node, "full", {"slice": f"{start}:{stop}"}, "application/octet-stream")
            target[start:stop] = np.frombuffer(raw, dtype=dtype).reshape((stop - start, *shape[1:]))

    def _write_parquet(self, node: _Node, folder: Path) -> list[Path]:
        """A table as one Parquet file per partition (as Tiled writes them), each written from
        the Arrow the server sends, schema and all."""
        import pyarrow
        import pyarrow.parquet

        folder.mkdir(parents=True)
        paths = []
        for number in range(node.attributes["structure"]["npartitions"]):
            raw = self._data(
                node, "partition", {"partition": number}, "application/vnd.apache.arrow.file"
            )
            path = folder / f"partition-{number}.parquet"
            pyarrow.parquet.write_table(pyarrow.ipc.open_file(raw).read_all(), path)
            paths.append(path)
        return paths

    # -- 5. The archive's catalog ---------------------------------------------------------------

    def archive_raw_sources(self) -> None:
        """Raw nodes' data sources as the server gives them, assets pointing at the files."""
        for node in self.nodes:
            if node.method != "raw":
                continue
            node.archived = []
            for source in node.attributes["data_sources"]:
                assets = []
                for asset in source["assets"]:
                    path = _server_path(asset["data_uri"])
                    assert path is not None
                    member = f"{DATA_DIR}/{path.relative_to(self._base)}"
                    assets.append(
                        _staged_asset(
                            self.staging / member,
                            asset["is_directory"],
                            asset.get("parameter"),
                            asset.get("num"),
                        )
                    )
                # The archive's server never writes: every data source is external there.
                node.archived.append(
                    {
                        **{k: v for k, v in source.items() if k not in ("id", "assets")},
                        "management": "external",
                        "assets": assets,
                    }
                )

    def rebuild_catalog(self, db: Path) -> None:
        """Recreate every node in a fresh catalog through Tiled's own catalog adapter (what the
        server's create-node route calls), parents first, with its key, metadata, specs and
        (archived) data sources."""
        asyncio.run(self._create_nodes(catalog_db.init_catalog(db, [str(self.staging)])))

    async def _create_nodes(self, root: Any) -> None:
        from tiled.structures.core import Spec, StructureFamily
        from tiled.structures.data_source import DataSource

        await root.startup()  # what the server's lifespan does first
        created: dict[tuple[str, ...], Any] = {(): root}
        try:
            for node in sorted(self.nodes, key=lambda n: len(n.path)):
                attributes = node.attributes
                family = (
                    "container" if node.method == "container" else attributes["structure_family"]
                )
                created[node.path] = await created[node.path[:-1]].create_node(
                    structure_family=StructureFamily(family),
                    metadata=dict(attributes["metadata"]),
                    key=node.path[-1],
                    specs=[Spec(**spec) for spec in attributes["specs"]],
                    data_sources=[DataSource.from_json(source) for source in node.archived],
                )
        finally:
            await root.shutdown()

    def member_for_uri(self, row: catalog_db.AssetRow) -> str:
        from tiled.utils import path_from_uri

        return path_from_uri(row.data_uri).relative_to(self.staging).as_posix()

    def fallbacks(self) -> list[dict[str, str]]:
        """The manifest's ``fallbacks``: each node read through the data API, and why."""
        records = []
        for node in self.nodes:
            if node.reason is None:
                continue
            record = {"node": node.name, "reason": node.reason}
            if node.archived:
                record["mimetype"] = node.archived[0]["mimetype"]
            records.append(record)
        return sorted(records, key=lambda r: r["node"])


def _staged_asset(path: Path, is_directory: bool, parameter: str | None, num: int | None) -> dict:
    """An asset (JSON) of the archive's catalog while it is built: ``path`` in the staging
    folder, which finalizing maps to the archive path."""
    from tiled.utils import ensure_uri

    return {
        "data_uri": ensure_uri(path),
        "is_directory": is_directory,
        "parameter": parameter,
        "num": num,
    }


# -- Public API --------------------------------------------------------------------------------


def download(
    source: Any,
    dest: str | Path,
    *,
    workers: int = DEFAULT_WORKERS,
    quiet: bool = True,
    force: bool = False,
    cache_dir: str | Path | None = None,
    cache_max_bytes: int | None = DEFAULT_CACHE_MAX_BYTES,
    retries: int = DEFAULT_RETRIES,
    on_file: FileHook | None = None,
) -> Path:
    """Download a node of a live Tiled server into an archive at ``dest`` (``*.zip`` for a ZIP,
    else a directory) and return ``dest``.

    ``source`` is a Tiled client node: a container, a search result (``client.search(...)``:
    its matching children) or a single array or table. The archive holds it in full, below its
    parent containers (with their metadata), under the server's keys. Its ``data/`` holds the
    bytes that back the server, fetched through Tiled's raw-asset endpoints with ``workers``
    threads; what the server will not hand out raw is read through the data API (arrays as
    Zarr, tables as Parquet) and listed in the manifest's ``fallbacks``.

    Fetched files are kept in a content-addressed cache (``cache_dir``, default
    :func:`default_cache_dir`; trimmed to ``cache_max_bytes``, least recently used first, after
    the run; None: no limit), so a re-run after an interruption fetches only what is missing or
    damaged, and data fetched for another archive is not fetched again. Connection errors and
    5xx answers are retried ``retries`` times with backoff. ``on_file(path, size)`` is called
    as each payload file is ready; an exception it raises stops the download.

    Raises ArchiveError: TA-E903 (``dest`` exists; ``force`` replaces an archive), TA-E910
    (nodes that could not be fetched, listed), TA-E911 (the server could not be reached or kept
    failing). Nothing is written at ``dest`` unless the whole download succeeds.
    """
    dest = Path(dest)
    check_destination(dest.absolute(), force=force)
    catalog_db.prepare_init_catalog()  # while the data is fetched
    cache = BlobCache(Path(cache_dir) if cache_dir else default_cache_dir(), cache_max_bytes)
    run: _Download | None = None
    finished = False
    try:
        with tempfile.TemporaryDirectory(prefix="tiled-archive-") as work:
            with _progress(quiet) as progress:
                run = _Download(
                    source,
                    cache,
                    Path(work, "staging"),
                    progress,
                    workers=workers,
                    retries=retries,
                    on_file=on_file,
                )
                run.fetch()
                db = Path(work, CATALOG_NAME)
                run.rebuild_catalog(db)
            # Outside the display above: the writer shows its own, and rich allows one at once.
            fallbacks = run.fallbacks()
            result = write_new(
                dest,
                run.payload(),
                db,
                run.member_for_uri,
                epoch=None,
                force=force,
                quiet=quiet,
                extra={"fallbacks": fallbacks} if fallbacks else None,
            )
        finished = True
        return result
    finally:
        # A failed run keeps what it fetched, whatever the limit, so a re-run can resume.
        fetched = {blob.sha256 for blob in run.ready.values()} if run else set()
        cache.evict(keep=() if finished else fetched)
        cache.close()


def open_source(
    uri: str,
    path: str | None = None,
    *,
    api_key: str | None = None,
    search: Iterable[tuple[str, Any]] = (),
    fulltext: str | None = None,
) -> Any:
    """The Tiled node to download: the server at ``uri``, the node at ``path`` below it, and
    the children matching every ``search`` pair (metadata key equals value) and ``fulltext``.

    Raises ArchiveError TA-E911 when the server cannot be reached, TA-E900 when the node does
    not exist or a search is asked of a node that is not a container.
    """
    from tiled.client import from_uri
    from tiled.queries import FullText, Key

    try:
        node = from_uri(uri, api_key=api_key)
        if path and path.strip("/"):
            node = node[path.strip("/")]
    except httpx.HTTPError as err:
        raise ArchiveError("TA-E911", uri, f"cannot reach the server: {err}") from None
    except KeyError:
        raise ArchiveError("TA-E900", path, "no such node on the server") from None
    queries = [Key(key) == value for key, value in search]
    if fulltext:
        queries.append(FullText(fulltext))
    if queries and not hasattr(node, "search"):
        raise ArchiveError("TA-E900", path, "only a container can be searched")
    for query in queries:
        node = node.search(query)
    return node
