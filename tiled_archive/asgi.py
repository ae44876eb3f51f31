"""Serve an archive, or any Tiled catalog, with Tiled's own app: in-process to a Tiled client,
or over HTTP.

The app is Tiled's (``tiled.server.app.build_app``) over Tiled's SQL catalog adapter, opened
read-only, with adapters from :mod:`tiled_archive.adapters`. An archive's asset URIs are all
checked before the app starts; a live catalog's (:func:`from_catalog`) as each data source is
first read. An access policy grants read scopes only, so every write endpoint refuses (401
anonymous, 403 with a key) and no byte of the catalog or its files changes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import httpx
from starlette.routing import Route

from .adapters import ArchiveAdapters
from .content.budget import BUDGET_CODE
from .format import DATA_DIR, ArchiveError
from .quiet import quiet_tiled
from .reader import Archive, open_archive

if TYPE_CHECKING:
    from .asset_routes import AssetFiles

_API = "/api/v1"
#: Each in-process client gets a host of its own: Tiled's dask reads name their graphs by
#: node URL, so two clients at one URL could share a graph (docs/upstream.md).
_CLIENT_NUMBERS = itertools.count(1)


def _local_url() -> str:
    return f"http://{next(_CLIENT_NUMBERS)}.tiled-archive.invalid{_API}"


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


class PathGuard:
    """ASGI middleware: a request path with a NUL or a ``.``/``..`` segment (after
    percent-decoding) is not found, whatever route it would reach. No node key, UI file or API
    route of an archive needs one, and file routes cannot then be walked out of."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if "\x00" in path or any(s in (".", "..") for s in path.replace("\\", "/").split("/")):
                from starlette.responses import JSONResponse

                response = JSONResponse({"detail": "Not Found"}, status_code=404)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RawBytesEncodings:
    """ASGI middleware: a raw-asset request (``/asset/...``) is answered without blosc2.

    Tiled 0.2.20 compresses ``application/octet-stream`` bodies with blosc2 when the client
    accepts it (Tiled's own client does), and blosc2 refuses bytes whose length is not a
    multiple of 8: a streamed raw file of 247 bytes (a Zarr ``.zarray``) was a 500
    (docs/upstream.md). Raw files gain nothing from a byte-shuffling codec; gzip and zstd stay
    on offer.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(f"{_API}/asset/"):
            headers = []
            for name, value in scope["headers"]:
                if name == b"accept-encoding":
                    offered = [e.strip() for e in value.split(b",")]
                    value = b", ".join(e for e in offered if e.split(b";")[0] != b"blosc2")
                headers.append((name, value))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def _archive_error_response(request: Any, error: Exception) -> Any:
    """An archive problem met while answering a request: a clean HTTP error naming its code
    (400 for a read over the memory budget, as Tiled answers a response over its limit; 422
    for a rule of the format the archive breaks)."""
    from starlette.responses import JSONResponse

    assert isinstance(error, ArchiveError)
    status = 400 if error.code == BUDGET_CODE else 422
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


class ResponseCache:
    """ASGI middleware keeping complete GET responses of an immutable archive, LRU, size-capped.

    An archive never changes while it is served, so a response depends only on the request:
    method, path, query and headers (authorization included). Only 200 responses that set no
    cookie are kept, each up to ``max_item`` bytes, ``max_total`` bytes in all.
    """

    def __init__(self, app: Any, *, max_total: int = 128 << 20, max_item: int = 8 << 20):
        self.app = app
        self.max_total, self.max_item = max_total, max_item
        self._entries: OrderedDict[tuple, tuple[dict, dict]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"], tuple(scope["headers"]))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is not None:
            start, body = hit
            await send(start)
            await send(body)
            return
        start_message: dict = {}
        chunks: list[bytes] = []
        keep = True

        async def capture(message: dict) -> None:
            nonlocal keep
            if message["type"] == "http.response.start":
                start_message.update(message)
                keep = message["status"] == 200 and not any(
                    name.lower() == b"set-cookie" for name, _ in message.get("headers", [])
                )
            elif message["type"] == "http.response.body" and keep:
                chunks.append(message.get("body", b""))
                keep = sum(map(len, chunks)) <= self.max_item
            await send(message)

        await self.app(scope, receive, capture)
        if keep and start_message:
            body = b"".join(chunks)
            self._store(key, start_message, {"type": "http.response.body", "body": body})

    def _store(self, key: tuple, start: dict, body: dict) -> None:
        with self._lock:
            self._entries[key] = (start, body)
            self._size += len(body["body"])
            while self._size > self.max_total and self._entries:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._size -= len(dropped["body"])


def _read_only_app(tree: Any, files: AssetFiles, *, api_key: str | None, public: bool) -> Any:
    """Tiled's app over ``tree`` with read scopes only, raw assets from ``files``, file routes
    confined, archive errors as clean HTTP answers, and no per-request dependency rebuild."""
    from tiled.config import Authentication
    from tiled.server.app import build_app
    from tiled.server.settings import get_settings

    from .asset_routes import asset_router

    app = build_app(
        tree,
        authentication=Authentication(allow_anonymous_access=public, single_user_api_key=api_key),
        access_policy=_read_only_policy(),
    )
    # Raw assets from confined files only: these routes go in front of Tiled's, which read
    # the filesystem and can be walked out of (docs/upstream.md).
    routes = app.router.routes
    mounted = len(routes)
    app.include_router(asset_router(files), prefix=_API)
    routes[0:0] = [routes.pop(mounted) for _ in range(len(routes) - mounted)]
    _confine_file_routes(app)
    app.add_exception_handler(ArchiveError, _archive_error_response)
    app.dependency_overrides[get_settings]()
    app.dependency_overrides = _NoOverrides(app.dependency_overrides)
    return app


class ArchiveServer:
    """Tiled's app over one open archive. Close it to release the archive."""

    def __init__(
        self,
        archive: Archive,
        *,
        api_key: str | None = None,
        public: bool = True,
    ):
        from tiled.catalog import from_uri

        from .asset_routes import ArchiveFiles

        self.archive = archive
        self.adapters = ArchiveAdapters(archive)
        catalog = archive.catalog_path()
        # Refuse the archive before any byte of data is read if an asset points elsewhere or
        # a data source carries what Tiled's adapters would act on blindly.
        archive.data_sources()
        root = archive.manifest.extra.get("root") or {}
        tree = from_uri(
            f"sqlite+aiosqlite:///file:{quote(str(catalog.absolute()))}"
            "?mode=ro&immutable=1&uri=true",
            adapters_by_mimetype=self.adapters.mapping(),
            # Tiled keeps a root's metadata outside the catalog; the manifest carries it (§4).
            metadata=root.get("metadata"),
            specs=root.get("specs"),
            # Tiled checks absolute file URIs (a relocated directory archive) against these.
            readable_storage=[archive.location.resolve() / DATA_DIR]
            if archive.is_directory
            else [],
        )
        files = ArchiveFiles(archive)
        self.tiled_app = _read_only_app(tree, files, api_key=api_key, public=public)
        self.app = ResponseCache(PathGuard(RawBytesEncodings(self.tiled_app)))

    def close(self) -> None:
        self.adapters.close()
        self.archive.close()


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
    ):
        from tiled.catalog import from_uri

        from .adapters.storage import StorageAdapters
        from .asset_routes import StorageAssetFiles
        from .sources.storage import ReadableStorage
        from .sql_catalog import TiledCatalog

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
        files = StorageAssetFiles(storage)
        self.tiled_app = _read_only_app(tree, files, api_key=api_key, public=public)
        self.app = PathGuard(RawBytesEncodings(self.tiled_app))

    def close(self) -> None:
        self.adapters.close()


class PortalTransport(httpx.BaseTransport):
    """A synchronous httpx transport calling an ASGI app on an event loop in another thread.

    One hop into the loop for a request whose answer is one message (most are), one more per
    further body chunk: the app runs as a task and hands its messages through a small queue,
    so a response (a raw asset of gigabytes) is never held whole, as httpx's own ASGITransport
    holds it. The body is passed on still content-encoded, so httpx decodes it once. A client
    that stops reading ends the app's task.
    """

    def __init__(self, app: Any, portal: Any):
        self._app = app
        self._portal = portal
        #: Bodies not yet read to the end: closed with the transport, so no task outlives it.
        self._open: weakref.WeakSet = weakref.WeakSet()

    def close(self) -> None:
        for inbox in list(self._open):
            self._portal.call(inbox.aclose)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        body = request.read()
        outbox, inbox = anyio.create_memory_object_stream(4)
        self._portal.start_task_soon(self._run, request, body, outbox)
        first = self._portal.call(inbox.receive)
        if isinstance(first, BaseException):
            self._portal.call(inbox.aclose)
            raise first
        status, headers, chunk, more = first
        if not more:  # the whole answer came in one message: no further hop into the loop
            return httpx.Response(status, headers=headers, stream=httpx.ByteStream(chunk))
        self._open.add(inbox)
        body = _PortalBody(self._portal, inbox, chunk)
        return httpx.Response(status, headers=headers, stream=body)

    async def _run(self, request: httpx.Request, body: bytes, outbox: Any) -> None:
        import anyio

        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "scheme": url.scheme,
            "path": unquote(url.path),
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "client": ("127.0.0.1", 0),
            "root_path": "",
        }
        finished = anyio.Event()
        request_sent = False
        start: tuple | None = None

        async def receive() -> dict:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            # The start goes over with the first body chunk: a small answer is one hop.
            nonlocal start
            if message["type"] == "http.response.start":
                start = (message["status"], message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunk, more = message.get("body", b""), message.get("more_body", False)
                if start is not None:
                    await outbox.send((*start, chunk, more))
                    start = None
                elif chunk:
                    await outbox.send(chunk)

        async with outbox:
            try:
                await self._app(scope, receive, send)
            except anyio.BrokenResourceError:
                pass  # the client stopped reading
            except Exception as err:  # the client's call raises it, as with httpx's transport
                with contextlib.suppress(anyio.BrokenResourceError):
                    await outbox.send(err)
            finally:
                finished.set()


class _PortalBody(httpx.SyncByteStream):
    """A response body arriving chunk by chunk from the app's task on the portal's loop."""

    def __init__(self, portal: Any, inbox: Any, first: bytes):
        self._portal = portal
        self._inbox = inbox
        self._first = first

    def __iter__(self) -> Iterator[bytes]:
        import anyio

        if self._first:
            yield self._first
        while True:
            try:
                chunk = self._portal.call(self._inbox.receive)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk

    def close(self) -> None:
        self._portal.call(self._inbox.aclose)


_CONTEXT_LOCK = threading.Lock()


@contextlib.contextmanager
def _in_process_context(app: Any, api_key: str | None) -> Iterator[Any]:
    """A ``tiled.client.Context`` whose requests call ``app`` in this process, no socket."""
    from anyio.from_thread import start_blocking_portal
    from asgi_lifespan import LifespanManager
    from tiled.client import context as tiled_context
    from tiled.client.transport import Transport

    with start_blocking_portal() as portal:

        async def make_lifespan() -> LifespanManager:
            return LifespanManager(app)  # built inside the loop it runs on

        lifespan = portal.call(make_lifespan)
        portal.call(lifespan.__aenter__)
        try:
            transport = PortalTransport(app, portal)
            # Context builds its own transport and has no parameter for one: hand it ours by
            # replacing the name it builds from, for the duration of the constructor only.
            with _CONTEXT_LOCK:
                stock = tiled_context.Transport
                tiled_context.Transport = lambda **kw: Transport(
                    transport=transport, cache=kw.get("cache")
                )
                try:
                    context = tiled_context.Context(_local_url(), api_key=api_key)
                finally:
                    tiled_context.Transport = stock
            try:
                yield context
            finally:
                context.http_client.close()
                transport.close()
        finally:
            portal.call(lifespan.__aexit__, None, None, None)


def open(  # noqa: A001 -- the public name
    path: str | Path, *, storage_options: Mapping[str, Any] | None = None, **client_kwargs: Any
) -> Any:
    """Open an archive (directory or ZIP, or a ZIP at an http(s) URL, read by range requests)
    as a Tiled client, served in-process (no socket).

    Returns the root container of the normal Tiled client, which here is also a context manager
    and has ``close()``: both release the archive. Keyword arguments go to
    ``tiled.client.from_context`` (e.g. ``structure_clients="numpy"``). ``storage_options``
    for a URL: ``headers`` (e.g. ``Authorization``), ``timeout``, ``verify``.
    """
    return _in_process_client(
        lambda: ArchiveServer(open_archive(path, storage_options)), client_kwargs
    )


def from_catalog(
    uri: str | Path, readable_storage: Iterable[str | Path] = (), **client_kwargs: Any
) -> Any:
    """Open a Tiled catalog (``sqlite:///PATH`` or a path, ``postgresql://...``) as a Tiled
    client, served in-process and read-only, as :func:`open` serves an archive; its assets are
    read only inside the ``readable_storage`` folders."""
    return _in_process_client(lambda: CatalogServer(uri, readable_storage), client_kwargs)


def _in_process_client(make_server: Callable[[], Any], client_kwargs: dict[str, Any]) -> Any:
    """The Tiled client of the server ``make_server`` builds (its ``app``, served in-process),
    closable: closing it stops the event loop and closes the server."""
    from tiled.client import from_context

    stack = contextlib.ExitStack()
    try:
        with quiet_tiled():
            server = make_server()
            stack.callback(server.close)
            context = stack.enter_context(_in_process_context(server.app, None))
            client = from_context(context, **client_kwargs)
    except BaseException:
        stack.close()
        raise
    client.__class__ = _closable(type(client))
    client._tiled_archive_close = stack.close
    # The event loop runs in a non-daemon thread, which the interpreter joins at exit before
    # atexit handlers run: close at that earlier point (as Tiled's Context does) so a client
    # nobody closed does not hang the exit.
    threading._register_atexit(stack.close)
    return client


_CLOSABLE: dict[type, type] = {}


def _closable(cls: type) -> type:
    """``cls`` plus ``close()`` and context management that release the archive."""
    if cls not in _CLOSABLE:

        def close(self: Any) -> None:
            self._tiled_archive_close()

        def exit_(self: Any, *exc_info: object) -> None:
            self._tiled_archive_close()

        _CLOSABLE[cls] = type(
            cls.__name__,
            (cls,),
            {
                "close": close,
                "__enter__": lambda self: self,
                "__exit__": exit_,
                "__module__": cls.__module__,
            },
        )
    return _CLOSABLE[cls]


def serve(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    public: bool = False,
    api_key: str | None = None,
    access_log: bool = True,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve an archive over HTTP with uvicorn until interrupted; ``ready`` is called once
    the archive has opened, before the server starts. With ``access_log`` every request is
    a line on stdout in Tiled's own format (as ``tiled serve`` logs them), API keys in URLs
    masked."""
    import uvicorn

    with quiet_tiled():
        server = ArchiveServer(open_archive(path), api_key=api_key, public=public)
    try:
        if ready is not None:
            ready()
        uvicorn.run(
            server.app, host=host, port=port, log_config=_log_config(), access_log=access_log
        )
    finally:
        server.close()


def _log_config() -> dict[str, Any]:
    """Tiled's logging configuration for uvicorn, with uvicorn's and Tiled's start-up lines
    left out (the command announces itself), colours only at a terminal, and ``api_key=``
    query values masked in access lines (the browser URL carries one)."""
    import copy

    from tiled.server.logging_config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"]["masked_keys"] = {"()": MaskedApiKeys}
    config["handlers"]["access"]["filters"].append("masked_keys")
    for logger in ("tiled", "uvicorn.error"):  # Tiled's banner and the links store's URI
        config["loggers"][logger]["level"] = "WARNING"
    for formatter in config["formatters"].values():
        formatter["use_colors"] = None  # colours at a terminal only (Tiled's: always)
    return config


class MaskedApiKeys(logging.Filter):
    """Replace the value of every ``api_key`` query parameter in an access log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            masked = re.sub(r"(?i)(api_key=)[^&#\s]*", r"\1***", args[2])
            record.args = (*args[:2], masked, *args[3:])
        return True
