"""Tiled's own app over an archive or any Tiled catalog, read-only.

The app is Tiled's (``tiled.server.app.build_app``) over Tiled's SQL catalog adapter, opened
read-only, with adapters from :mod:`tiled_archive.serve.adapters`. An archive's asset URIs are
all checked before the app starts; a live catalog's (:func:`.client.from_catalog`) as each
data source is first read. An access policy grants read scopes only, so every write endpoint
refuses (401 anonymous, 403 with a key) and no byte of the catalog or its files changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.routing import Route

from ..reader import Archive
from ..rules.budget import BUDGET_CODE
from ..rules.names import DATA_DIR
from ..rules.problems import ArchiveError
from .adapters import ArchiveAdapters

if TYPE_CHECKING:
    from .archive_payloads import ArchivePayload
from .middleware import API, PathGuard, RawBytesEncodings, ResponseCache
from .settings import WithSettings, new_settings, settings_of


def _bundled_ui_route(ui_root: Path) -> Route:
    """Tiled's ``/ui/{path}`` route, confined to Tiled's bundled UI folder.

    Tiled 0.2.20's own route joins the request path onto the folder, so ``/ui//etc/passwd``
    serves any file of the machine (docs/upstream.md). Here a path that resolves outside the
    folder is not found; one inside it that is not a file is the UI's index page, as in Tiled
    (the UI routes such paths itself).
    """
    from starlette.responses import FileResponse, JSONResponse

    root = ui_root.resolve()

    async def bundled_ui(request: Any) -> Any:
        relative = request.path_params["path"].lstrip("/") or "index.html"
        target = (root / relative).resolve()
        if "\x00" in relative or not target.is_relative_to(root):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if not target.is_file():
            target = root / "index.html"
        return FileResponse(target)

    return Route("/ui/{path:path}", bundled_ui, methods=["GET", "HEAD"])


def _confine_file_routes(app: Any) -> None:
    """Replace each route of Tiled's app that reads files named by the request with one that
    stays inside its folder. (Tiled's ``/static`` mount is Starlette's StaticFiles, which
    already refuses paths outside its directory.)"""
    from tiled.utils import SHARE_TILED_PATH

    routes = app.router.routes
    for index, route in enumerate(routes):
        if getattr(route, "path", None) == "/ui/{path:path}":
            routes[index] = _bundled_ui_route(Path(SHARE_TILED_PATH, "ui"))


def _archive_error_response(request: Any, error: Exception) -> Any:
    """An archive problem met while answering a request: a clean HTTP error naming its code
    (400 for a read over the memory budget, as Tiled answers a response over its limit, and
    for a file fetched for the read that finds the disk full: Tiled's client shows the message
    of a 4xx answer, and of a 5xx one only its status; 422 for a rule of the format the
    archive breaks)."""
    from starlette.responses import JSONResponse

    assert isinstance(error, ArchiveError)
    status = 400 if error.code in (BUDGET_CODE, "TA-E906") else 422
    return JSONResponse({"detail": str(error.problem)}, status_code=status)


def _read_only_policy() -> Any:
    from tiled.access_control.access_policies import DummyAccessPolicy
    from tiled.access_control.scopes import PUBLIC_SCOPES

    class ReadOnlyPolicy(DummyAccessPolicy):
        """Whoever asks, only ``read:metadata`` and ``read:data``: an archive is immutable."""

        async def allowed_scopes(self, node, principal, authn_access_tags, authn_scopes):
            return PUBLIC_SCOPES

    return ReadOnlyPolicy()


class _NoOverrides(dict):
    """``app.dependency_overrides`` that FastAPI sees as empty.

    With any override present FastAPI rebuilds every dependency's signature analysis on every
    request (about half of a request's time, by profile). Tiled's only override returns the
    cached settings object it has already configured, so once it has been called the override
    changes nothing, and lookups through ``[]`` keep working.
    """

    def __bool__(self) -> bool:
        return False


def _read_only_app(
    tree: Any, payloads: ArchivePayload, *, api_key: str | None, public: bool
) -> tuple[Any, Any]:
    """Tiled's app over ``tree`` with read scopes only, raw assets and archives of nodes
    from ``payloads``' files, file routes confined, archive errors as clean HTTP answers,
    and no per-request dependency rebuild; and its settings (serve it inside
    :class:`WithSettings`)."""
    from tiled.config import Authentication
    from tiled.server.app import build_app
    from tiled.server.settings import get_settings

    from .archive_routes import archive_router
    from .asset_routes import asset_router

    settings = new_settings()  # this app's own (.settings says why)
    with settings_of(settings):
        app = build_app(
            tree,
            authentication=Authentication(
                allow_anonymous_access=public, single_user_api_key=api_key
            ),
            access_policy=_read_only_policy(),
        )
        app.dependency_overrides[get_settings]()  # this app's settings, configured now
    # Raw assets from confined files only: these routes go in front of Tiled's, which read
    # the filesystem and can be walked out of (docs/upstream.md).
    routes = app.router.routes
    mounted = len(routes)
    app.include_router(asset_router(payloads.asset_files), prefix=API)
    app.include_router(archive_router(payloads), prefix=API)
    routes[0:0] = [routes.pop(mounted) for _ in range(len(routes) - mounted)]
    _confine_file_routes(app)
    app.add_exception_handler(ArchiveError, _archive_error_response)
    app.dependency_overrides = _NoOverrides(app.dependency_overrides)
    return app, settings


class ArchiveServer:
    """Tiled's app over one open archive. Close it to release the archive."""

    def __init__(
        self,
        archive: Archive,
        *,
        api_key: str | None = None,
        public: bool = True,
        live: bool = False,
    ):
        """``live``: the archive grows while it is served (a browse mirror): its catalog is
        read without SQLite's ``immutable`` and no response is cached."""
        from .archive_payloads import ServedArchivePayload

        self.archive = archive
        self.adapters = ArchiveAdapters(archive)
        tree = archive_tree(archive, self.adapters, live=live)
        payloads = ServedArchivePayload(archive)
        self.tiled_app, settings = _read_only_app(tree, payloads, api_key=api_key, public=public)
        guarded = PathGuard(RawBytesEncodings(WithSettings(self.tiled_app, settings)))
        self.app = guarded if live else ResponseCache(guarded)

    def close(self) -> None:
        self.adapters.close()
        self.archive.close()


def archive_tree(archive: Archive, adapters: ArchiveAdapters, *, live: bool = False) -> Any:
    """Tiled's catalog adapter over an open archive's catalog (read-only), reading data
    through ``adapters``, with the manifest's root metadata and specs; the archive is checked
    first, as every server of ours checks it before serving."""
    from tiled.catalog import from_uri

    catalog = archive.catalog_path()
    # Refuse the archive before any byte of data is read if an asset points elsewhere or
    # a data source carries what Tiled's adapters would act on blindly.
    archive.check_catalog()
    root = archive.manifest.extra.get("root") or {}
    return from_uri(
        f"sqlite+aiosqlite:///file:{quote(str(catalog.absolute()))}"
        + ("?mode=ro&uri=true" if live else "?mode=ro&immutable=1&uri=true"),
        adapters_by_mimetype=adapters.mapping(),
        # Tiled keeps a root's metadata outside the catalog; the manifest carries it (§4).
        metadata=root.get("metadata"),
        specs=root.get("specs"),
        # Tiled checks absolute file URIs (a relocated directory archive) against these,
        # by their text, before an adapter maps them to members.
        readable_storage=_relocated_storage(archive),
    )


def _relocated_storage(archive: Archive) -> list[Path]:
    """The folders a directory archive's relocated asset URIs may name, for Tiled's own check
    of ``file:`` URIs: its ``data/``, and, when it was moved or copied after being relocated,
    the ``data/`` of the folder it was relocated in. Only the URIs' text is checked against
    that folder: every adapter reads the archive's own member the URI maps to
    (:meth:`Archive.asset_member`), never the path it names."""
    if not archive.is_directory:
        return []
    own = archive.location.resolve() / DATA_DIR
    relocated = Path(archive.relocation_folder() or archive.location.resolve()) / DATA_DIR
    return [own] if relocated == own else [own, relocated]


class CatalogServer:
    """Tiled's app over a Tiled catalog in a database (SQLite, PostgreSQL), read-only, its
    files read only inside ``readable_storage``. No response cache: a live catalog changes."""

    def __init__(
        self,
        uri: str | Path,
        readable_storage: Iterable[str | Path],
        *,
        api_key: str | None = None,
        public: bool = True,
        live: bool = False,
    ):
        """``live``: the archive grows while it is served (a browse mirror): its catalog is
        read without SQLite's ``immutable`` and no response is cached."""
        from tiled.catalog import from_uri

        from ..catalog.database import TiledCatalog
        from ..sources.storage import ReadableStorage
        from .adapters.storage import StorageAdapters
        from .archive_payloads import StoragePayload

        catalog = TiledCatalog(uri)
        if catalog.is_sqlite:  # read-only: a missing file is not created, none is written
            path = catalog.sqlite_path().absolute()
            if not path.is_file():
                raise catalog.error(f"no such catalog file: {path}")
            catalog = TiledCatalog(f"sqlite+aiosqlite:///file:{quote(str(path))}?mode=ro&uri=true")
        catalog.check_revision()
        storage = ReadableStorage(readable_storage)
        self.adapters = StorageAdapters(storage)
        tree = from_uri(
            catalog.uri,
            adapters_by_mimetype=self.adapters.mapping(),
            # Tiled's own check compares URIs' text and fails with a bare 500; the adapters
            # check every URI first, links resolved (TA-E923), so Tiled's is given the root.
            readable_storage=[Path("/")],
        )
        payloads = StoragePayload(storage)
        self.tiled_app, settings = _read_only_app(tree, payloads, api_key=api_key, public=public)
        self.app = PathGuard(RawBytesEncodings(WithSettings(self.tiled_app, settings)))

    def close(self) -> None:
        self.adapters.close()
