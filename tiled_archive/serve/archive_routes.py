"""The archive routes, for a stock Tiled server (:mod:`.router`) and for ``tiled-archive
serve`` alike:

- ``GET|HEAD /archive/{path}``: a conforming tiled-archive ZIP of the node at ``path`` with
  its subtree (and its parent containers, as ``download`` writes them), streamed as it is
  written: no staging file, memory flat. A browser (``Accept: text/html``, no ``format=zip``)
  gets the download page instead (:mod:`.page`): the node, what the archive holds, its exact
  size, and a Download button.
- ``GET|HEAD /asset/zip/{path}?id=N``: a directory asset (a Zarr store, a folder of TIFFs) as
  a plain STORED ZIP of its files, paths relative to the folder (a Zarr store's ZIP opens
  with zarr's ``ZipStore`` as it is). Tiled's own ``/asset/bytes`` refuses a directory.

Only nodes the caller may read (``read:data`` under the deployment's authentication and
access policy) are in an archive; Tiled's search parameters (``filter[...][condition][...]``,
as ``/search`` takes them) narrow the node's children. Both answers are deterministic for a
given state of the files: an exact ``Content-Length`` and an ``ETag``, ``HEAD``, a ``Range``
(with ``If-Range``: a 206 from that offset while the ETag matches, which is how a browser
resumes a broken download) and ``If-None-Match`` (304). The archive's payload files are
hashed before its first byte (digests kept while a file is unchanged: :mod:`.kept_digests`),
its manifest's creation time is the newest payload file's, and its tag files come last
(TA-W103), since the manifest needs every digest.

Only nodes of a Tiled catalog can be archived; other trees answer 405.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import HTMLResponse, Response
from tiled.server.utils import filter_for_access

from ..rules.names import CATALOG_NAME
from ..rules.paths import escapes_folder
from ..rules.problems import ArchiveError
from ..writer import DOS_EPOCH, PayloadFile, StreamedArchive, streamed_archive
from ..zip.stream import ZipEntry, zip_length, zip_stream
from . import page
from .archive_payloads import ArchivePayload
from .asset_routes import (
    AssetFiles,
    FoundNode,
    NodeAsset,
    ServedFile,
    file_bytes,
    node_asset,
    ranged_response,
    readable_node,
)
from .kept_digests import KEPT

_FILTER = re.compile(r"filter\[(?P<name>[^\]]+)\]\[condition\]\[(?P<field>[^\]]+)\]")


def archive_router(payloads: ArchivePayload) -> APIRouter:
    """The two routes over ``payloads``; mount with the prefix ``/api/v1``."""
    router = APIRouter()

    @router.api_route("/archive/{path:path}", methods=["GET", "HEAD"])
    async def get_archive(
        request: Request, path: str, found: Annotated[FoundNode, Depends(readable_node)]
    ) -> Response:
        """The node at ``path`` and what the caller may read below it, as a tiled-archive
        ZIP; a browser's navigation gets the download page."""
        entry, access_policy = found.entry, found.access_policy
        if not hasattr(entry, "context") or not hasattr(entry, "node"):
            raise HTTPException(405, "Only nodes of a Tiled catalog can be archived.")

        async def readable(node: Any) -> Any:
            return await filter_for_access(
                node,
                access_policy,
                found.principal,
                found.access_tags,
                found.scopes,
                ["read:data"],
                found.metrics,
            )

        async def may_read_data(node: Any) -> bool:
            if access_policy is None:
                return True
            scopes = await access_policy.allowed_scopes(
                node, found.principal, found.access_tags, found.scopes
            )
            return "read:data" in scopes

        searched = await _searched(entry, request)
        ids = await _subtree_ids(searched, readable, may_read_data)
        segments = [segment for segment in path.split("/") if segment]
        # Where the node is in its own catalog: a catalog mounted below the server's root
        # (a `trees:` entry at /runs/2024) has it at a shorter path than the request's.
        in_catalog = list(await entry.path_segments())
        url = entry.context.engine.url.render_as_string(hide_password=False)
        # HEAD as GET (RFC 9110 9.3.2): the page's headers for a browser.
        browser = page.wants_page(request.headers.get("accept"), request.query_params)
        try:
            prepared = await asyncio.to_thread(_prepare, entry, url, in_catalog, ids, payloads)
        except ArchiveError as err:
            if browser:
                return _page(request, path, segments, entry, error=str(err))
            raise HTTPException(400, str(err)) from None
        if browser:
            return _page(request, path, segments, entry, prepared=prepared)

        def body(start: int, end: int) -> Any:
            return iterate_in_threadpool(_streamed(prepared, payloads, start, end))

        return ranged_response(
            request,
            prepared.streamed.length,
            prepared.streamed.etag,
            body,
            media_type="application/zip",
            headers={
                "Content-Disposition": attachment(_file_name(request, segments)),
                "Vary": "Accept",  # the same URL is the page for a browser
            },
        )

    @router.api_route("/asset/zip/{path:path}", methods=["GET", "HEAD"])
    def asset_zip(
        request: Request, path: str, found: Annotated[NodeAsset, Depends(node_asset)]
    ) -> Response:
        """A directory asset's files as a STORED ZIP, paths relative to the folder."""
        asset = found.asset
        if not asset.is_directory:
            raise HTTPException(
                400, f"asset {asset.id} is a file: /asset/bytes/{path}?id={asset.id} sends it"
            )
        zipped = _folder_zip(payloads.asset_files(found.entry), asset)
        name = (path.rstrip("/").rsplit("/", 1)[-1] or "asset") + f"-{asset.id}.zip"

        def body(start: int, end: int) -> Any:
            return iterate_in_threadpool(_span(zipped.chunks(start), 0, end - start))

        return ranged_response(
            request,
            zipped.length,
            zipped.etag,
            body,
            media_type="application/zip",
            headers={"Content-Disposition": attachment(name)},
        )

    return router


async def _searched(entry: Any, request: Request) -> Any:
    """The node narrowed by the request's search parameters (none: the node itself)."""
    from tiled.query_registration import default_query_registry
    from tiled.server.core import apply_search

    filters: dict[str, list[str]] = {}
    known = default_query_registry.name_to_query_type
    for name, field, value in _filters(request):
        # Tiled splits the names on ___; lookup walks to one child, it narrows nothing.
        if name not in known or name == "lookup" or "___" in name + field:
            raise HTTPException(400, f"filter[{name}]: not a search of Tiled's this route takes")
        filters.setdefault(f"filter___{name}___{field}", []).append(value)
    if not filters:
        return entry
    try:
        return await apply_search(entry, filters, default_query_registry)
    except (KeyError, TypeError, ValueError) as err:  # a missing or malformed field, bad JSON
        raise HTTPException(400, f"the search parameters are malformed: {err!r}") from None


def _filters(request: Request) -> list[tuple[str, str, str]]:
    """The request's ``filter[name][condition][field]=value`` parameters."""
    found = []
    for key, value in request.query_params.multi_items():
        match = _FILTER.fullmatch(key)
        if match is not None:
            found.append((match["name"], match["field"], value))
    return found


async def _subtree_ids(top: Any, readable: Any, may_read_data: Any) -> set[int]:
    """Ids of the node and of every node below it the caller may read: listed for them (the
    policy's filters) and holding ``read:data`` for them (its scopes, as Tiled's data routes
    ask of each node); a node without is left out with its subtree. Containers that are
    files, such as an HDF5 file's groups, are their own data source: not walked."""
    ids = {top.node.id}
    stack = [top]
    while stack:
        node = stack.pop()
        if node.node.data_sources or not hasattr(node, "items_range"):
            continue
        for _, child in await (await readable(node)).items_range(0, None):
            if await may_read_data(child):
                ids.add(child.node.id)
                stack.append(child)
    return ids


@dataclass(frozen=True)
class _Prepared:
    """A node's archive, ready to stream."""

    streamed: StreamedArchive
    #: Its payload files, by member.
    payload: dict[str, PayloadFile]
    #: The nodes its catalog holds (the node's parents too; Tiled's root row not counted).
    nodes: int


def _prepare(
    entry: Any, url: str, segments: list[str], ids: set[int], payloads: ArchivePayload
) -> _Prepared:
    """The subtree's archive (readable nodes only; its catalog held in memory)."""
    from ..catalog import db_file as catalog_db
    from ..catalog.database import TiledCatalog

    source = TiledCatalog(url)
    with tempfile.TemporaryDirectory(prefix="tiled-archive-stream-") as work:
        db = Path(work, CATALOG_NAME)
        source.export(segments, db, readable=ids)
        count = catalog_db.node_count(db)
        payload, member_for_uri = payloads.payload(entry, db, source.display)
        # Deterministic: the same files and catalog give the same bytes, hence the same ETag.
        created = max((file.mtime for file in payload), default=DOS_EPOCH)
        catalog_db.settle_initial_rows(db, created)

        def finish(entries: Any) -> Path:
            catalog_db.finalize(db, member_for_uri, entries, timestamp=None)
            return db

        streamed = streamed_archive(payload, finish, payloads.digests, created=created)
    return _Prepared(streamed, {file.path: file for file in payload}, count)


def _streamed(
    prepared: _Prepared, payloads: ArchivePayload, start: int, end: int
) -> Iterator[bytes]:
    """The ZIP's bytes ``[start, end)``. A member whose bytes no longer match the digests
    kept for its file (TA-E905: changed since) has them dropped, so the next request hashes
    the file again."""
    try:
        yield from _span(prepared.streamed.chunks(start), 0, end - start)
    except ArchiveError as err:
        if err.code == "TA-E905" and err.problem.path in prepared.payload:
            payloads.forget(prepared.payload[err.problem.path])
        raise


def _span(chunks: Iterable[bytes], start: int, end: int) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of a stream of chunks."""
    position = 0
    for chunk in chunks:
        low, high = max(start - position, 0), min(end - position, len(chunk))
        position += len(chunk)
        if low < high:
            yield chunk[low:high]
        if position >= end:
            return


class _FolderZip:
    """A directory asset's files as a ZIP: the length and ETag from the files' sizes and
    versions (no byte read), the CRC-32s (kept while a file is unchanged) only for a GET."""

    def __init__(self, files: AssetFiles, asset: Any):
        self.names = files.listing(asset)
        self.served = []
        for name in self.names:
            served = None if escapes_folder(name) else files.file(asset, name)
            if served is None:
                raise ArchiveError("TA-E306", name, "listed in a directory asset, not a file")
            self.served.append(served)
        unhashed = self._entries(lambda _: 0)
        self.length = zip_length(unhashed)
        versions = "\n".join(f"{s.path}\0{s.size}\0{s.etag}" for s in self.served)
        self.etag = '"' + hashlib.sha256(versions.encode()).hexdigest()[:40] + '"'

    def _entries(self, crc_of: Any) -> Iterator[ZipEntry]:
        # A generator: zip_stream builds each member's header as it reaches it, so a GET's
        # first byte waits for the first file's CRC-32 only.
        for name, served in zip(self.names, self.served, strict=True):
            chunks = functools.partial(file_bytes, served, 0, served.size)
            yield ZipEntry(name, served.size, crc_of(served), chunks, DOS_EPOCH)

    def chunks(self, start: int = 0) -> Iterator[bytes]:
        """The ZIP from byte ``start`` on (the files wholly before it are not read)."""

        def crc_of(served: ServedFile) -> int:
            return KEPT.of((served.path, served.etag), served.open)[2]

        # Member data aligned, as in an archive: a Zarr chunk of a ZIP is a span of the file.
        return zip_stream(self._entries(crc_of), start=start)


def _folder_zip(files: AssetFiles, asset: Any) -> _FolderZip:
    try:
        return _FolderZip(files, asset)
    except ArchiveError as err:
        raise HTTPException(422, str(err)) from None


def _page(
    request: Request,
    path: str,
    segments: list[str],
    entry: Any,
    *,
    prepared: _Prepared | None = None,
    error: str | None = None,
) -> Response:
    """The download page of the node (the archive's figures, or why there is none)."""
    # The route's own prefix, from the decoded path (the URL's path re-encodes ? # \ in keys).
    decoded, root = request.scope["path"], request.scope.get("root_path", "")
    decoded = decoded if decoded.startswith(root) else root + decoded  # ASGI servers differ
    base = decoded[: len(decoded) - len(path)].rstrip("/")
    kept = {k: v for k, v in request.query_params.items() if k == "api_key"}
    query = ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in kept.items())) if kept else ""

    def under(prefix: str, keys: list[str]) -> str:
        return f"{prefix}/" + "/".join(quote(key, safe="") for key in keys)

    crumbs = [page.PageLink("(root)", f"{base}/{query}")]
    for depth, segment in enumerate(segments, 1):
        crumbs.append(page.PageLink(segment, under(base, segments[:depth]) + query))
    api = base.removesuffix("/archive")
    ui = under(api.removesuffix("/api/v1") + "/ui/browse", segments)
    download = request.url.include_query_params(format="zip")
    content = page.DownloadPage(
        segments=segments,
        breadcrumbs=crumbs,
        metadata=dict(entry.metadata() or {}),
        filters=_filters(request),
        ui_url=ui,
        download_url=f"{under(base, segments)}?{download.query}",
        file_name=_file_name(request, segments),
        nodes=prepared.nodes if prepared else None,
        files=len(prepared.payload) if prepared else None,
        size=prepared.streamed.length if prepared else None,
        error=error,
    )
    answer = HTMLResponse(
        page.render(content),
        status_code=200 if error is None else 400,
        headers={
            "Content-Security-Policy": page.CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "Vary": "Accept",
        },
    )
    if request.method == "HEAD":  # the page's headers, its length included, and no body
        return Response(status_code=answer.status_code, headers=dict(answer.headers))
    return answer


def _file_name(request: Request, segments: list[str]) -> str:
    """The file name a browser saves the archive under: the node's key, or for the server's
    root the host and port it was asked at (``localhost-8000``): a fixed name (``archive``)
    told no server's archive from another's. An IPv6 address's colons become ``-``."""
    if segments:
        return f"{segments[-1]}.zip"
    host = (request.url.hostname or "tiled").replace(":", "-")
    return f"{host}-{request.url.port}.zip" if request.url.port else f"{host}.zip"


def attachment(filename: str) -> str:
    """A Content-Disposition that names the file honestly for every browser (RFC 6266: an
    ASCII fallback, and the UTF-8 name)."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "archive.zip"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


__all__ = ["archive_router", "attachment"]
