"""Streamed archives from a stock Tiled server: ``GET /api/v1/archive/{path}``.

Enabled by one line in a Tiled configuration::

    routers:
      - tiled_archive.serve.router:router

The answer is a conforming tiled-archive ZIP of the node at ``path`` with its subtree (and
its parent containers, as ``download`` writes them), streamed from the server's own files as
it is written: no staging file, memory flat. Only nodes the caller may read (``read:data``
under the deployment's own authentication and access policy) are in it; Tiled's search
parameters (``filter[...][condition][...]``, as ``/search`` takes them) narrow the node's
children. The tag files come last (TA-W103), since the manifest needs every digest.

The stream is deterministic for a given state of the node and its files: every payload file
is hashed before the first byte (the digests are kept, by file, inode, modification time and
size, so a file is hashed once while it is unchanged), and the manifest's creation time is the
newest payload file's. So the answer has an exact ``Content-Length`` and an ``ETag``, answers
``HEAD``, a ``Range`` (with ``If-Range``: a 206 from that offset while the ETag matches) and
``If-None-Match`` (304): a broken download resumes, and ``tiled_archive.download`` reads the
archive's tail first and fetches only the members its cache lacks.

Only nodes of a Tiled catalog (``tiled serve catalog``, or a configuration's catalog tree)
can be archived; other trees answer 405.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response
from tiled.server.authentication import (
    check_scopes,
    get_current_access_tags,
    get_current_principal,
    get_current_scopes,
    get_session_state,
)
from tiled.server.dependencies import get_entry, get_root_tree
from tiled.server.utils import filter_for_access

from ..files.hashing import copy_hashing
from ..rules.names import CATALOG_NAME
from ..rules.problems import ArchiveError
from ..writer import StreamedArchive
from .asset_routes import ranged_response

router = APIRouter()

_FILTER = re.compile(r"filter\[(?P<name>[^\]]+)\]\[condition\]\[(?P<field>[^\]]+)\]")


@router.api_route("/archive/{path:path}", methods=["GET", "HEAD"])
async def get_archive(
    request: Request,
    path: str,
    principal: Annotated[Any, Depends(get_current_principal)],
    root_tree: Annotated[Any, Depends(get_root_tree)],
    session_state: Annotated[dict, Depends(get_session_state)],
    authn_access_tags: Annotated[Any, Depends(get_current_access_tags)],
    authn_scopes: Annotated[Any, Depends(get_current_scopes)],
    _: Annotated[Any, Security(check_scopes, scopes=["read:data"])],
) -> Response:
    """The node at ``path`` and what the caller may read below it, as a tiled-archive ZIP."""
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
    if not hasattr(entry, "context") or not hasattr(entry, "node"):
        raise HTTPException(405, "Only nodes of a Tiled catalog can be archived.")

    async def readable(node: Any) -> Any:
        return await filter_for_access(
            node,
            access_policy,
            principal,
            authn_access_tags,
            authn_scopes,
            ["read:data"],
            request.state.metrics,
        )

    async def may_read_data(node: Any) -> bool:
        if access_policy is None:
            return True
        scopes = await access_policy.allowed_scopes(
            node, principal, authn_access_tags, authn_scopes
        )
        return "read:data" in scopes

    searched = await _searched(entry, request)
    ids = await _subtree_ids(searched, readable, may_read_data)
    segments = [segment for segment in path.split("/") if segment]
    url = entry.context.engine.url.render_as_string(hide_password=False)
    try:
        streamed, files = await asyncio.to_thread(_prepare, url, segments, ids)
    except ArchiveError as err:
        raise HTTPException(400, str(err)) from None

    def body(start: int, end: int) -> Any:
        return iterate_in_threadpool(_streamed(streamed, files, start, end))

    return ranged_response(
        request,
        streamed.length,
        streamed.etag,
        body,
        media_type="application/zip",
        headers={"Content-Disposition": _attachment(f"{_archive_name(request, segments)}.zip")},
    )


async def _searched(entry: Any, request: Request) -> Any:
    """The node narrowed by the request's search parameters (none: the node itself)."""
    from tiled.query_registration import default_query_registry
    from tiled.server.core import apply_search

    filters: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        match = _FILTER.fullmatch(key)
        if match is not None:
            filters.setdefault(f"filter___{match['name']}___{match['field']}", []).append(value)
    if not filters:
        return entry
    return await apply_search(entry, filters, default_query_registry)


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


def _prepare(
    url: str, segments: list[str], ids: set[int]
) -> tuple[StreamedArchive, dict[str, str]]:
    """The subtree's archive (readable nodes only; its catalog held in memory) and the
    server file behind each payload member."""
    from ..catalog import db_file as catalog_db
    from ..catalog.database import TiledCatalog
    from ..writer import DOS_EPOCH, catalog_payload, streamed_archive

    source = TiledCatalog(url)
    with tempfile.TemporaryDirectory(prefix="tiled-archive-stream-") as work:
        db = Path(work, CATALOG_NAME)
        source.export(segments, db, readable=ids)
        # A ragged array's DuckDB file here is the deployment's SQL storage: refused (the route
        # answers 400; a download then takes the per-asset path, through the data API).
        payload, member_for_uri = catalog_payload(db, source.display, sql_storage=False)
        # Deterministic: the same files and catalog give the same bytes, hence the same ETag.
        created = max((file.mtime for file in payload), default=DOS_EPOCH)
        catalog_db.settle_initial_rows(db, created)

        def finish(entries: Any) -> Path:
            catalog_db.finalize(db, member_for_uri, entries, timestamp=None)
            return db

        streamed = streamed_archive(payload, finish, _DIGESTS, created=created)
    return streamed, {file.path: str(file.local_path) for file in payload}


class _DigestCache:
    """(size, SHA-256, CRC-32) of the files the route hashed, by path, inode, modification
    time and size (a file written again gets new ones), the least recently used dropped past
    ``limit`` entries."""

    def __init__(self, limit: int = 200_000):
        self.limit = limit
        self._known: OrderedDict[tuple, tuple[int, str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self, path: str) -> None:
        """Drop what is kept for the file at ``path`` (its bytes no longer match)."""
        with self._lock:
            for key in [key for key in self._known if key[0] == path]:
                del self._known[key]

    def __call__(self, file: Any) -> tuple[int, str, int]:
        stat = os.stat(file.local_path)
        # ctime too: a file rewritten in place and given its old mtime back (cp -p, rsync
        # --inplace -t) has a new ctime, which nothing can set back.
        key = (str(file.local_path), stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        with file.open() as handle:
            digests = copy_hashing(handle, None, with_crc32=True)
        with self._lock:
            self._known[key] = digests
            while len(self._known) > self.limit:
                self._known.popitem(last=False)
        return digests


_DIGESTS = _DigestCache()


def _streamed(
    streamed: StreamedArchive, files: dict[str, str], start: int, end: int
) -> Iterator[bytes]:
    """The ZIP's bytes ``[start, end)``. A member whose bytes no longer match the digests
    kept for its file (TA-E905: changed since) has them dropped, so the next request hashes
    the file again."""
    left = end - start
    try:
        for chunk in streamed.chunks(start):
            yield chunk[:left]
            left -= len(chunk)
            if left <= 0:
                break
    except ArchiveError as err:
        if err.code == "TA-E905" and err.problem.path in files:
            _DIGESTS.forget(files[err.problem.path])
        raise


def _archive_name(request: Request, segments: list[str]) -> str:
    """The file name a browser saves the archive under: the node's key, or for the server's
    root the host and port it was asked at (``localhost-8000``): a fixed name (``archive``)
    told no server's archive from another's. An IPv6 address's colons become ``-``."""
    if segments:
        return segments[-1]
    host = (request.url.hostname or "tiled").replace(":", "-")
    return f"{host}-{request.url.port}" if request.url.port else host


def _attachment(filename: str) -> str:
    """A Content-Disposition that names the file honestly for every browser (RFC 6266: an
    ASCII fallback, and the UTF-8 name)."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "archive.zip"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


__all__ = ["router"]
