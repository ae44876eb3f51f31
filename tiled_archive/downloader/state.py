"""What one download knows, shared by every step: the nodes to archive (:class:`Node`, with
their :class:`ServerFile` s), the payload files ready so far, and the run's settings, client and
progress display (:class:`Run`)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import httpx
from rich.progress import Progress, TaskID

from ..files.blobs import Blob, BlobCache, Validators
from ..files.faults import crash_point
from ..writer import PayloadFile

#: A URI's scheme (RFC 3986 §3.1); an archive-form asset URI has none.
URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

FileHook = Callable[[str, int], None]


@dataclass(eq=False)
class Node:
    """A node of the archive, as the server describes it, and how it gets into the archive."""

    path: tuple[str, ...]
    client: Any
    #: "container" (a plain container), "raw" (its assets fetched as they are), "data-api".
    method: str
    #: Why the node was not fetched raw (the data API was used, or failed too).
    reason: str | None = None
    #: Set when the node could not be fetched at all.
    error: str | None = None
    files: list[ServerFile] = field(default_factory=list)
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
class ServerFile:
    """One file of a raw node: a file asset, or one file inside a directory asset."""

    node: Node
    asset: dict[str, Any]
    relative_path: str | None
    server_path: PurePosixPath
    member: str = ""
    #: What the server's answer for this file said: its size and the validators it sent (a
    #: lazy download's probe, or the request that fetched or revalidated it).
    probed: tuple[int, Validators] | None = None

    @property
    def size(self) -> int | None:
        if self.probed is not None:
            return self.probed[0]
        return None if self.relative_path is not None else self.asset.get("size")

    @property
    def server_sha256(self) -> str | None:
        if self.relative_path is None and self.asset.get("hash_type") == "sha256":
            return self.asset.get("hash_content")
        return None

    def key(self) -> str:
        """What identifies this file in the cache index: where it lives on the server (the
        asset's data URI and the path inside a directory asset) and the size and hash the
        server reports. Not the server's host name, nor its id for the asset: the same file
        reached under another name is the same file, and the validators the server sends
        (:mod:`.transfer`) decide whether the cached bytes are still its content."""
        return json.dumps(
            [self.asset["data_uri"], self.relative_path, self.size, self.server_sha256]
        )

    def url(self) -> str:
        """The absolute URL of the file's bytes (Tiled's ``/asset/bytes``, with its query)."""
        return f"{self.node.asset_url('bytes')}?{urlencode(self.params())}"

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"id": self.asset["id"]}
        if self.relative_path is not None:
            params["relative_path"] = self.relative_path
        return params


@dataclass(eq=False)
class Run:
    """One run of :func:`tiled_archive.downloader.download`: what every step reads and adds to,
    passed to each in turn. ``lock`` guards what workers of a parallel step change together
    (``ready``, refusals, the byte count of the progress display)."""

    source: Any
    cache: BlobCache
    staging: Path
    progress: Progress
    workers: int
    retries: int
    on_file: FileHook | None
    http: httpx.Client = field(init=False)
    base_url: str = field(init=False)
    cancel: threading.Event = field(default_factory=threading.Event)
    nodes: list[Node] = field(default_factory=list)
    #: Every payload file of the archive, by archive path.
    ready: dict[str, Blob] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set once the server refused raw assets with a 403: no further node asks for them.
    raw_refused: str | None = None
    #: How many nodes the source holds or matched (its parent containers not counted).
    matched: int = 0
    #: The deepest folder holding every raw asset on the server.
    base: PurePosixPath = PurePosixPath("/")
    #: The progress task counting listed nodes.
    listing: TaskID = field(init=False)
    #: Children the server announced (its containers' counts) not listed yet.
    unlisted: int = 0
    #: Bytes of raw files found in the cache (or left by an earlier run), not fetched again.
    cached_bytes: int = 0
    #: Bytes of raw files fetched by this run.
    fetched_bytes: int = 0
    #: Cached files whose freshness was asked of the server.
    revalidated: int = 0
    #: The archive an update replaces (:mod:`.previous`): its files are not fetched again.
    previous: Any = None
    #: Payload files taken from ``previous``, by archive path, and their bytes.
    reused: dict[str, PayloadFile] = field(default_factory=dict)
    reused_bytes: int = 0

    def __post_init__(self) -> None:
        self.http = self.source.context.http_client
        self.base_url = str(self.source.context.api_uri)
        self.workers = max(1, self.workers)
        self.listing = self.progress.add_task("listing nodes", total=None)

    def file_ready(self, member: str, blob: Blob) -> None:
        """Add ``blob`` to the payload as ``member`` and tell ``on_file``."""
        with self.lock:
            self.ready[member] = blob
        crash_point("download:file")
        if self.on_file is not None:
            self.on_file(member, blob.size)  # what it raises stops the download (parallel)

    def file_reused(self, member: str, file: PayloadFile) -> None:
        """Add the previous archive's ``file`` to the payload as ``member``."""
        with self.lock:
            self.reused[member] = file
            self.reused_bytes += file.size
        if self.on_file is not None:
            self.on_file(member, file.size)

    def refuse(self, node: Node, reason: str) -> None:
        """Fetch ``node`` through the data API instead (the first reason given is kept)."""
        with self.lock:
            if node.method == "raw":
                node.method, node.reason = "data-api", reason

    def refuse_raw(self, node: Node, err: Exception) -> None:
        reason = f"raw assets refused ({err})"
        if str(err).startswith("HTTP 403"):
            # Raw assets are off for the whole server: do not ask again for every node.
            self.raw_refused = reason
        self.refuse(node, reason)


def node_path(client: Any) -> tuple[str, ...]:
    """A node's path from the server root (the root's own ``path_parts`` is ``[""]``)."""
    return tuple(part for part in client.path_parts if part)


def children(client: Any) -> Iterator[Any]:
    """A container's child nodes as the server stores them, in its order. Tiled's client for a
    ``composite`` container lists its tables' columns as if they were children; its ``base``
    lists the nodes themselves."""
    for _, child in getattr(client, "base", client).items():
        yield child


def server_path(data_uri: str) -> PurePosixPath | None:
    """The server-side path of a ``file:`` asset URI, unescaped as Tiled writes it, or of an
    archive-form one (``data/x.h5``, a relative reference: a served archive's), taken from the
    server's root; None for any other scheme, and for a relative reference with an empty, ``.``
    or ``..`` segment (two spellings of one file must not become two files). Not ``urlparse``:
    a ``#`` or ``?`` in a file name must stay in the path, where the archive path check refuses
    it, not silently cut it short."""
    if data_uri.startswith("file://"):
        rest = data_uri[len("file://") :]
        # "//srv/x" and "/srv/x" are one path: POSIX keeps a leading "//" apart.
        return PurePosixPath("/" + rest[rest.find("/") :].lstrip("/")) if "/" in rest else None
    if URI_SCHEME.match(data_uri) or {"", ".", ".."} & set(data_uri.split("/")):
        return None
    return PurePosixPath("/", data_uri)


def staged_asset(path: Path, is_directory: bool, parameter: str | None, num: int | None) -> dict:
    """An asset (JSON) of the archive's catalog while it is built: ``path`` in the staging
    folder, which finalizing maps to the archive path."""
    from tiled.utils import ensure_uri

    return {
        "data_uri": ensure_uri(path),
        "is_directory": is_directory,
        "parameter": parameter,
        "num": num,
    }
