"""Tiled's raw-asset routes (``/asset/bytes``, ``/asset/manifest``), answered from archive members.

Tiled's client reads ``bytes`` nodes and runs ``raw_export()`` through these routes, and the
downloader fetches a served archive's files through them. Tiled 0.2.20's own versions read the
asset's path from the filesystem and let ``relative_path=../..`` out of a directory asset
(docs/upstream.md), so they are never the ones mounted. These take the same requests but serve
only payload files of the node's own asset: a file asset's member, or a member below a
directory asset's folder named by a relative path without empty, ``.`` or ``..`` segments.
Tiled decides who may read which node: the node is looked up with Tiled's own ``get_entry`` and
the ``read:data`` scope, as its routes do.

Answers carry the file's SHA-256 as a strong ETag, honour a single ``Range`` (and ``If-Range``);
a request for several ranges gets the whole file, which HTTP allows. A file handed out whole
(with or without a range that covers it) is first checked against the manifest, once per open
archive: a damaged member is a 422 naming TA-E308, not wrong bytes passed off as the archive's.
A part of a file is sent as it is, unchecked (the manifest has one digest per file, and hashing
200 GB for one frame would defeat ranges); HEAD reads nothing.
"""

import mimetypes
import re
from collections.abc import Iterator
from typing import Annotated, Any
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

from .format import ArchiveError, FileEntry, escapes_folder
from .reader import Archive

_CHUNK = 1 << 20
#: One byte range; positions of over 30 digits are not ranges anyone can mean (and Python
#: refuses to convert integers of over 4,300 digits).
_SINGLE_RANGE = re.compile(r"bytes=(\d{0,30})-(\d{0,30})", re.IGNORECASE)
#: SQLite's integer range: Tiled looks asset ids up there.
_MAX_ID = (1 << 63) - 1


def asset_router(archive: Archive) -> APIRouter:
    """The two routes, for ``archive``; mount with the prefix ``/api/v1``, in front of Tiled's."""
    router = APIRouter()

    async def node_asset(
        request: Request,
        path: str,
        id: int,  # noqa: A002 -- Tiled's query parameter
        principal: Annotated[Any, Depends(get_current_principal)],
        root_tree: Annotated[Any, Depends(get_root_tree)],
        session_state: Annotated[dict, Depends(get_session_state)],
        authn_access_tags: Annotated[Any, Depends(get_current_access_tags)],
        authn_scopes: Annotated[Any, Depends(get_current_scopes)],
        _: Annotated[None, Security(check_scopes, scopes=["read:data"])],
    ) -> tuple[Any, str]:
        """The node's asset ``id`` and the member it names (404 if the node has no such asset)."""
        if not 0 <= id <= _MAX_ID:
            raise HTTPException(404, f"node {path or '/'} has no asset with id {id}")
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
            getattr(request.app.state, "access_policy", None),
        )
        asset = await entry.asset_by_id(id) if hasattr(entry, "asset_by_id") else None
        if asset is None:
            raise HTTPException(404, f"node {path or '/'} has no asset with id {id}")
        return asset, archive.asset_member(asset.data_uri)

    @router.api_route("/asset/bytes/{path:path}", methods=["GET", "HEAD"])
    def asset_bytes(
        request: Request,
        found: Annotated[tuple[Any, str], Depends(node_asset)],
        relative_path: str | None = None,
    ) -> Response:
        asset, member = found
        if not asset.is_directory:
            if relative_path is not None:
                raise HTTPException(400, "a file asset takes no relative_path")
            entry = archive.payload_entry(member)
            if entry is None:  # a folder, or a file the manifest does not list (TA-E306)
                raise HTTPException(404, f"{member} is not a payload file of the archive")
            return member_response(archive, entry, request)
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
        entry = archive.payload_entry(f"{member}/{relative_path}")
        if entry is None:
            raise HTTPException(404, f"no file {relative_path} in this asset")
        return member_response(archive, entry, request)

    @router.get("/asset/manifest/{path:path}")
    def asset_manifest(
        request: Request, found: Annotated[tuple[Any, str], Depends(node_asset)]
    ) -> Any:
        asset, member = found
        if not asset.is_directory:
            raise HTTPException(400, "a file asset has no manifest")
        # Relative to the asset, as Tiled's client sends them back (Tiled 0.2.20 lists
        # absolute server paths here, which its own /asset/bytes then refuses).
        inside = member + "/"
        listing = [p[len(inside) :] for p in archive.payload() if p.startswith(inside)]
        return json_or_msgpack(request, {"manifest": listing})

    return router


def member_response(archive: Archive, entry: FileEntry, request: Request) -> Response:
    """One payload file as an HTTP answer: whole (200) or the one range asked for (206)."""
    name = entry.path.rsplit("/", 1)[-1]
    etag = f'"{entry.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": content_disposition(name),
    }
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if_range = request.headers.get("if-range")
    wanted = requested_range(request.headers.get("range"), entry.size)
    if if_range is not None and if_range != etag:
        wanted = None  # the client's copy is of other bytes: send them all
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{entry.size}"
        return Response(status_code=416, headers=headers)
    status, (start, end) = (200, (0, entry.size)) if wanted is None else (206, wanted)
    stored = archive.members()[entry.path].size
    if stored != entry.size:  # before any header is sent: a clean 422, not a cut-off body
        raise ArchiveError("TA-E307", entry.path, f"{stored} bytes, the manifest says {entry.size}")
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    if (start, end) == (0, entry.size):
        archive.verify(entry)  # before the first byte, so a damaged file is a clean 422
    body = member_bytes(archive, entry, start, end)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)


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


def member_bytes(archive: Archive, entry: FileEntry, start: int, end: int) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a payload file, in chunks (TA-E307 if it is shorter)."""
    with archive.open(entry.path) as file:
        file.seek(start)
        while start < end:
            chunk = file.read(min(_CHUNK, end - start))
            if not chunk:
                raise ArchiveError("TA-E307", entry.path, "the member is shorter than listed")
            start += len(chunk)
            yield chunk
