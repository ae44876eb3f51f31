"""Tiled's raw-asset routes (``/asset/bytes``, ``/asset/manifest``), answered from confined files.

Tiled's client reads ``bytes`` nodes and runs ``raw_export()`` through these routes, and the
downloader fetches a served archive's files through them. Tiled 0.2.20's own versions read the
asset's path from the filesystem and let ``relative_path=../..`` out of a directory asset
(docs/upstream.md), so they are never the ones mounted. These take the same requests but serve
only files of the node's own asset: a file asset's file, or a file below a directory asset's
folder named by a relative path without empty, ``.`` or ``..`` segments. Which files those
are is an :class:`AssetFiles`: an archive's payload files (:class:`ArchiveFiles`), or a
catalog's readable storage, symbolic links resolved (:class:`StorageAssetFiles`).
Tiled decides who may read which node: the node is looked up with Tiled's own ``get_entry`` and
the ``read:data`` scope, as its routes do.

Answers carry a strong ETag (an archive file's SHA-256), honour a single ``Range`` (and
``If-Range``); a request for several ranges gets the whole file, which HTTP allows. An archive
file handed out whole (with or without a range that covers it) is first checked against the
manifest, once per open archive: a damaged member is a 422 naming TA-E308, not wrong bytes
passed off as the archive's. A part of a file is sent as it is, unchecked (the manifest has one
digest per file, and hashing 200 GB for one frame would defeat ranges); HEAD reads nothing.
"""

import mimetypes
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Protocol
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from starlette.responses import Response, StreamingResponse
from tiled.server.authentication import (
    check_scopes,
    get_current_access_tags,
    get_current_principal,
    get_current_scopes,
    get_session_state,
)
from tiled.server.core import json_or_msgpack
from tiled.server.dependencies import get_entry, get_root_tree

from ..files.hashing import CHUNK
from ..reader import Archive
from ..rules.paths import escapes_folder
from ..rules.problems import ArchiveError
from ..sources.storage import ReadableStorage

#: One byte range; positions of over 30 digits are not ranges anyone can mean (and Python
#: refuses to convert integers of over 4,300 digits).
_SINGLE_RANGE = re.compile(r"bytes=(\d{0,30})-(\d{0,30})", re.IGNORECASE)
#: SQLite's integer range: Tiled looks asset ids up there.
_MAX_ID = (1 << 63) - 1


@dataclass(frozen=True)
class ServedFile:
    """One file a raw-asset route may hand out."""

    path: str  # for messages, and its last segment for the download's file name
    size: int
    etag: str  # quoted, strong
    open: Callable[[], BinaryIO]
    #: Run before the file is handed out whole: raises when its bytes are not the listed ones.
    check: Callable[[], None]


class AssetFiles(Protocol):
    """The files behind a catalog's assets, as the raw-asset routes may serve them."""

    def file(self, asset: Any, relative_path: str | None) -> ServedFile | None:
        """The asset's file, or (a directory asset) the file at ``relative_path`` below it
        (already checked to have no empty, ``.`` or ``..`` segment); None: not one to serve."""

    def listing(self, asset: Any) -> list[str]:
        """A directory asset's files, relative to it."""


class ArchiveFiles:
    """An archive's payload files, as the manifest lists them."""

    def __init__(self, archive: Archive):
        self.archive = archive

    def file(self, asset: Any, relative_path: str | None) -> ServedFile | None:
        archive = self.archive
        member = archive.asset_member(asset.data_uri)
        entry = archive.payload_entry(
            member if relative_path is None else f"{member}/{relative_path}"
        )
        if entry is None:  # a folder, or a file the manifest does not list (TA-E306)
            return None
        stored = archive.members()[entry.path].size
        if stored != entry.size:  # before any header is sent: a clean 422, not a cut-off body
            raise ArchiveError(
                "TA-E307", entry.path, f"{stored} bytes, the manifest says {entry.size}"
            )
        return ServedFile(
            entry.path,
            entry.size,
            f'"{entry.sha256}"',
            lambda: archive.open(entry.path),
            lambda: archive.verify(entry),
        )

    def listing(self, asset: Any) -> list[str]:
        inside = self.archive.asset_member(asset.data_uri) + "/"
        return [p[len(inside) :] for p in self.archive.payload() if p.startswith(inside)]


class StorageAssetFiles:
    """Files of a catalog's readable storage: an asset's path, and a directory asset's files,
    each with symbolic links resolved inside the storage (TA-E923 otherwise)."""

    def __init__(self, storage: ReadableStorage):
        self.storage = storage

    def file(self, asset: Any, relative_path: str | None) -> ServedFile | None:
        path = self.storage.local_path(asset.data_uri)
        if relative_path is not None:
            path = Path(os.path.realpath(path / relative_path))
            if not self.storage.holds(path):
                raise ArchiveError(
                    "TA-E923", relative_path, "resolves outside the readable storage"
                )
        if not path.is_file():
            return None
        stat = path.stat()
        # No digest is known: the ETag changes whenever the file does (as a file server's).
        etag = f'"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'

        def open_file() -> BinaryIO:
            # O_NOFOLLOW: a link swapped in for the resolved file since is refused.
            return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")

        return ServedFile(str(path), stat.st_size, etag, open_file, lambda: None)

    def listing(self, asset: Any) -> list[str]:
        folder = self.storage.local_path(asset.data_uri)
        files = self.storage.files([(folder, True)]).members()
        return sorted(Path(name).relative_to(folder).as_posix() for name in files)


@dataclass(frozen=True)
class FoundNode:
    """A node as Tiled's routes find it for a caller with ``read:data`` (its access checked),
    and who asks: what Tiled's access policy needs to filter what is below it."""

    entry: Any
    principal: Any
    access_tags: Any
    scopes: Any
    access_policy: Any
    metrics: Any


async def readable_node(
    request: Request,
    path: str,
    principal: Annotated[Any, Depends(get_current_principal)],
    root_tree: Annotated[Any, Depends(get_root_tree)],
    session_state: Annotated[dict, Depends(get_session_state)],
    authn_access_tags: Annotated[Any, Depends(get_current_access_tags)],
    authn_scopes: Annotated[Any, Depends(get_current_scopes)],
    _: Annotated[None, Security(check_scopes, scopes=["read:data"])],
) -> FoundNode:
    """The node at ``path``, looked up with Tiled's own ``get_entry`` and the ``read:data``
    scope, as its routes do (404 when the caller may not see it)."""
    access_policy = getattr(request.app.state, "access_policy", None)
    entry = await get_entry(
        path,
        ["read:data"],
        principal,
        authn_access_tags,
        authn_scopes,
        root_tree,
        session_state,
        request.state.metrics,
        None,
        access_policy,
    )
    return FoundNode(
        entry, principal, authn_access_tags, authn_scopes, access_policy, request.state.metrics
    )


@dataclass(frozen=True)
class NodeAsset:
    """A node as Tiled's routes find it (its access checked), and one of its assets."""

    entry: Any
    asset: Any


async def node_asset(
    path: str,
    id: int,  # noqa: A002 -- Tiled's query parameter
    found: Annotated[FoundNode, Depends(readable_node)],
) -> NodeAsset:
    """The node's asset ``id`` (404 if the node has no such asset)."""
    if not 0 <= id <= _MAX_ID:
        raise HTTPException(404, f"node {path or '/'} has no asset with id {id}")
    entry = found.entry
    asset = await entry.asset_by_id(id) if hasattr(entry, "asset_by_id") else None
    if asset is None:
        raise HTTPException(404, f"node {path or '/'} has no asset with id {id}")
    return NodeAsset(entry, asset)


def asset_router(files_of: Callable[[Any], AssetFiles]) -> APIRouter:
    """The two routes, over the files ``files_of(entry)`` gives for a node (as Tiled found it);
    mount with the prefix ``/api/v1``, in front of Tiled's."""
    router = APIRouter()

    @router.api_route("/asset/bytes/{path:path}", methods=["GET", "HEAD"])
    def asset_bytes(
        request: Request,
        found: Annotated[NodeAsset, Depends(node_asset)],
        relative_path: str | None = None,
    ) -> Response:
        asset, files = found.asset, files_of(found.entry)
        if not asset.is_directory:
            if relative_path is not None:
                raise HTTPException(400, "a file asset takes no relative_path")
            served = files.file(asset, None)
            if served is None:
                raise HTTPException(404, f"asset {asset.id} is not a file this server hands out")
            return file_response(served, request)
        if relative_path is None:
            raise HTTPException(
                400,
                "this asset is a directory: give relative_path, one of the paths "
                f"/asset/manifest/...?id={asset.id} lists",
            )
        if escapes_folder(relative_path):
            raise HTTPException(
                400, "relative_path must be a relative path without empty, . or .. segments"
            )
        served = files.file(asset, relative_path)
        if served is None:
            raise HTTPException(404, f"no file {relative_path} in this asset")
        return file_response(served, request)

    @router.get("/asset/manifest/{path:path}")
    def asset_manifest(request: Request, found: Annotated[NodeAsset, Depends(node_asset)]) -> Any:
        asset = found.asset
        if not asset.is_directory:
            raise HTTPException(400, "a file asset has no manifest")
        # Relative to the asset, as Tiled's client sends them back (Tiled 0.2.20 lists
        # absolute server paths here, which its own /asset/bytes then refuses).
        return json_or_msgpack(request, {"manifest": files_of(found.entry).listing(asset)})

    return router


def file_response(served: ServedFile, request: Request) -> Response:
    """One file as an HTTP answer: whole (200) or the one range asked for (206)."""
    name = served.path.rsplit("/", 1)[-1]

    def body(start: int, end: int) -> Iterator[bytes]:
        if (start, end) == (0, served.size):
            served.check()  # before the first byte, so a damaged file is a clean 422
        return file_bytes(served, start, end)

    return ranged_response(
        request,
        served.size,
        served.etag,
        body,
        media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        headers={"Content-Disposition": content_disposition(name)},
    )


def ranged_response(
    request: Request,
    size: int,
    etag: str,
    body: Callable[[int, int], Iterable[bytes]],
    *,
    media_type: str,
    headers: dict[str, str],
) -> Response:
    """``size`` bytes whose version ``etag`` names as an HTTP answer: whole (200), the one
    range asked for (206; with ``If-Range``, only while ``etag`` still matches), 304 to an
    ``If-None-Match`` that names ``etag``, 416 for a range past the end; HEAD gets the
    headers alone. ``body(start, end)`` gives the bytes ``[start, end)``."""
    headers = {**headers, "Accept-Ranges": "bytes", "ETag": etag}
    # If-None-Match compares weakly (RFC 9110 §13.1.2): W/ aside; "*" matches any version.
    listed = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if "*" in listed or etag in [tag.removeprefix("W/") for tag in listed]:
        return Response(status_code=304, headers={"ETag": etag})
    if_range = request.headers.get("if-range")
    wanted = requested_range(request.headers.get("range"), size)
    if if_range is not None and if_range != etag:
        wanted = None  # the client's copy is of other bytes: send them all
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    status, (start, end) = (200, (0, size)) if wanted is None else (206, wanted)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        body(start, end), status_code=status, headers=headers, media_type=media_type
    )


def content_disposition(name: str) -> str:
    """``attachment; filename="NAME"`` as Tiled's own route writes it (the only form Tiled's
    client's ``raw_export()`` parses); a name that is not plain ASCII also gets RFC 6266's
    ``filename*``, since HTTP headers cannot carry it as it is."""
    if name.isascii() and name.isprintable() and not {'"', "\\"} & set(name):
        return f'attachment; filename="{name}"'
    fallback = quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=utf-8''{fallback}"


def requested_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The byte range ``[start, end)`` a ``Range`` header asks of a file of ``size`` bytes:
    None for the whole file (no header, or one this server answers whole: several ranges,
    other units), ``"unsatisfiable"`` for a range that starts past the end (RFC 9110 §14.1.2)."""
    match = _SINGLE_RANGE.fullmatch((header or "").replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), size if last == "" else min(int(last) + 1, size)
        if last != "" and int(last) < start:
            return None  # an invalid range is ignored, not refused
    if start >= size or start >= end:
        return "unsatisfiable"
    return start, end


def file_bytes(served: ServedFile, start: int, end: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a file, in chunks (TA-E307 if it is shorter)."""
    with served.open() as file:
        file.seek(start)
        while start < end:
            chunk = file.read(min(CHUNK, end - start))
            if not chunk:
                raise ArchiveError("TA-E307", served.path, "the file is shorter than listed")
            start += len(chunk)
            yield chunk
