"""Archives mounted in a stock Tiled deployment, each served in place.

A Tiled configuration mounts any number of archives (directories, ZIPs, ZIPs at ``https://``
or ``s3://`` URLs) beside each other and beside its own catalogs::

    trees:
      - path: /runs/2024
        tree: tiled_archive.serve:archive
        args: {path: /data/runs-2024.zip}
      - path: /runs/2023
        tree: tiled_archive.serve:archive
        args: {path: "https://example.org/runs-2023.zip", storage_options: {timeout: 30}}

and ``tiled serve config config.yml`` (or ``uvicorn --factory tiled.server.app:app_factory
--workers N`` with ``TILED_CONFIG``) serves them. :func:`archive` opens the archive read-only
when Tiled builds its app (in each worker process), checks it as ``tiled-archive serve`` does
(catalog rows, asset URIs, data source parameters: a broken archive stops the start-up with its
code), and returns Tiled's catalog adapter over the archive's catalog with this package's
adapters (data read in place, each data source's files inspected before their library gets
them, reads bounded by the memory budget) and the manifest's root metadata.

What Tiled's app lacks for an archive, the tree brings: it names :data:`router` in its
``include_routers``, which Tiled's configuration adds to the app (no ``routers:`` line needed;
naming it there too changes nothing). When the app starts, the router's lifespan

- puts its raw-asset routes (``/asset/bytes``, ``/asset/manifest``) in front of Tiled's, which
  read the filesystem path an asset URI names: a mounted archive's node is answered with the
  archive's own payload files only (a relocated directory archive that was moved names paths
  outside it, and Tiled's ``relative_path`` check lets a directory asset be walked out of);
  any other node of the deployment from its catalog's readable storage, links resolved.
  ``expose_raw_assets: false`` still turns them off;
- answers an :class:`ArchiveError` met while answering a request with a clean HTTP error
  naming its code (400 or 422, as ``tiled-archive serve`` does) instead of Tiled's bare 500,
  and a write to a mounted archive (its catalog is read-only) with a 405;
- refuses request paths with a NUL or a ``.``/``..`` segment, answers raw assets without blosc2
  (it refuses lengths that are not a multiple of 8), and confines Tiled's ``/ui/{path}``
  route to Tiled's bundled UI (Tiled 0.2.20's serves any file: docs/upstream.md);
- and the archive routes (``/archive/{path}``, ``/asset/zip/{path}``) stream a mounted
  archive's node from the archive's own members, any other node as
  :mod:`tiled_archive.serve.router` does.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from ..reader import Archive, open_archive
from ..rules.problems import ArchiveError
from ..writer import PayloadFile
from .adapters import ArchiveAdapters
from .app import _archive_error_response, _confine_file_routes, archive_tree
from .archive_payloads import ArchivePayload, ServedArchivePayload, StoragePayload
from .archive_routes import archive_router
from .asset_routes import AssetFiles, asset_router
from .middleware import PathGuard, RawBytesEncodings


def archive(path: str | Path, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The Tiled tree of the archive at ``path`` (a directory or ZIP, or a ZIP at an
    ``https://`` or ``s3://`` URL, read by range requests; ``storage_options`` as
    :func:`tiled_archive.open` takes them), opened read-only and checked, for a ``trees:``
    entry of a Tiled configuration. Raises ArchiveError (the rule broken) when the archive
    cannot be served."""
    opened = open_archive(path, storage_options)
    try:
        adapters = ArchiveAdapters(opened)
        tree = archive_tree(opened, adapters)
    except BaseException:
        opened.close()
        raise
    MOUNTED.add(tree.context, opened)
    tree.include_routers = [router]
    closed = threading.Event()

    async def close() -> None:  # Tiled may run a root tree's tasks twice
        if not closed.is_set():
            closed.set()
            adapters.close()
            opened.close()

    tree.shutdown_tasks.append(close)
    return tree


class MountedArchives:
    """Where the archive and raw-asset routes find a node's files: a mounted archive's own
    payload (by the Tiled catalog context its nodes share), else the deployment's readable
    storage."""

    def __init__(self) -> None:
        self._archives: weakref.WeakKeyDictionary[Any, ServedArchivePayload] = (
            weakref.WeakKeyDictionary()
        )
        self._storage = StoragePayload()
        #: Which payload listed each file of an archive being prepared or streamed.
        self._owners: weakref.WeakKeyDictionary[PayloadFile, ArchivePayload] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def add(self, context: Any, opened: Archive) -> None:
        self._archives[context] = ServedArchivePayload(opened)

    def of(self, entry: Any) -> ArchivePayload:
        """The payload of the node ``entry`` (as Tiled found it)."""
        found = self._archives.get(getattr(entry, "context", None))
        return self._storage if found is None else found

    def payload(self, entry: Any, db: Path, display: str) -> Any:
        owner = self.of(entry)
        files, member_of = owner.payload(entry, db, display)
        with self._lock:
            for file in files:
                self._owners[file] = owner
        return files, member_of

    def _owner(self, file: PayloadFile) -> ArchivePayload:
        with self._lock:
            return self._owners.get(file, self._storage)

    def digests(self, file: PayloadFile) -> tuple[int, str, int]:
        return self._owner(file).digests(file)

    def forget(self, file: PayloadFile) -> None:
        self._owner(file).forget(file)

    def asset_files(self, entry: Any) -> AssetFiles:
        return self.of(entry).asset_files(entry)


#: The archives this process mounted.
MOUNTED = MountedArchives()


async def _raw_assets_exposed(request: Request) -> None:
    """403 when the deployment turned raw assets off (``expose_raw_assets: false``), as
    Tiled's own raw-asset routes answer."""
    from tiled.server.settings import get_settings

    override = request.app.dependency_overrides.get(get_settings, get_settings)
    if not override().expose_raw_assets:
        raise HTTPException(403, "This Tiled server is configured not to allow raw assets.")


@contextlib.asynccontextmanager
async def _take_over(app: Any) -> AsyncIterator[None]:
    """The router's lifespan: make the running app safe for archives (once per app)."""
    install(app)
    yield


router = APIRouter(lifespan=_take_over)
router.include_router(
    asset_router(MOUNTED.asset_files),
    dependencies=[Depends(_raw_assets_exposed)],
)
router.include_router(archive_router(MOUNTED))


def install(app: Any) -> None:
    """In the started app ``app`` (its middleware stack built): the router's routes in
    front of Tiled's (each included once), ArchiveError answered with its code, paths with
    ``.``/``..`` segments refused, raw assets without blosc2, ``/ui`` confined."""
    if getattr(app.state, "tiled_archive_mounted", False):
        return
    app.state.tiled_archive_mounted = True
    routes = app.router.routes
    ours = [r for r in routes if getattr(r, "original_router", None) is router]
    if not ours:  # a FastAPI that includes routers otherwise: fail, never serve Tiled's
        raise RuntimeError("tiled_archive.serve.mount: the router's routes are not in the app")
    first: dict[str, Any] = {}  # one of each prefix Tiled included it under
    for route in ours:
        first.setdefault(route.include_context.prefix, route)
    routes[:] = [*first.values(), *(r for r in routes if all(r is not o for o in ours))]
    mark_changed = getattr(app.router, "_mark_routes_changed", None)
    if mark_changed is not None:
        mark_changed()
    _confine_file_routes(app)
    from sqlalchemy.exc import OperationalError

    handlers = {ArchiveError: _archive_error_response, OperationalError: _read_only_response}
    for error, handler in handlers.items():
        app.add_exception_handler(error, handler)
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    else:  # already built (it runs this lifespan): its handlers need ours too
        built = _exception_middleware(app.middleware_stack)
        for error, handler in handlers.items():
            built.add_exception_handler(error, handler)
    app.middleware_stack = PathGuard(RawBytesEncodings(app.middleware_stack))


async def _read_only_response(request: Any, error: Exception) -> Any:
    """A write to a mounted archive (its catalog is opened read-only: SQLite refuses, and
    nothing is written) is a 405 saying so, not a 500 that Tiled's client retries. Any other
    database error goes on to Tiled's own answer."""
    from starlette.responses import JSONResponse

    if "readonly database" not in str(error):
        raise error
    detail = "This node is read-only: its catalog is opened read-only (an archive, say)."
    return JSONResponse({"detail": detail}, status_code=405)


def _exception_middleware(stack: Any) -> Any:
    """Starlette's ExceptionMiddleware in a built middleware stack (each wraps ``.app``)."""
    from starlette.middleware.exceptions import ExceptionMiddleware

    layer = stack
    while layer is not None and not isinstance(layer, ExceptionMiddleware):
        layer = getattr(layer, "app", None)
    if layer is None:
        raise RuntimeError("no ExceptionMiddleware in the app's middleware stack")
    return layer


__all__ = ["MOUNTED", "MountedArchives", "archive", "install", "router"]
