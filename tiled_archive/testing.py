"""Support for tests and benchmarks that talk to a real server over loopback HTTP.

Used by this project's own tests and benchmarks; producers testing their archives against
``tiled serve catalog`` or ``tiled-archive serve`` may use it too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


#: A command-line argument: text or a path.
Arg = str | os.PathLike[str]


def tiled_serve_catalog(catalog: Arg, readable: Arg, port: int, *options: Arg) -> list[str]:
    """The command line of stock ``tiled serve catalog`` (of this interpreter's environment)
    over ``catalog``, reading files under ``readable``, on ``port``."""
    tiled = Path(sys.executable).parent / "tiled"
    command = [tiled, "serve", "catalog", catalog, "-r", readable, "--port", port, *options]
    return [str(part) for part in command]


def tiled_archive_serve(archive: Arg, port: int, *options: Arg) -> list[str]:
    """The command line of ``tiled-archive serve`` (this interpreter's) over ``archive`` on
    ``port``."""
    command = [sys.executable, "-m", "tiled_archive.cli", "serve", archive, "--port", port]
    return [str(part) for part in [*command, *options]]


def stock_tiled_app(*arguments: Arg) -> Any:
    """The ASGI app stock ``tiled serve ARGUMENTS`` builds, captured instead of served: Tiled's
    own command-line code parses the arguments and builds it (``uvicorn.run`` is what is
    replaced), so it is what the CLI would serve, without a process or a socket."""
    import uvicorn
    from tiled.commandline.main import cli_app
    from tiled.server.settings import get_settings

    from .serve.settings import WithSettings, new_settings, settings_of

    built: list[Any] = []
    run = uvicorn.run
    uvicorn.run = lambda app, **_: built.append(app)  # type: ignore[assignment]
    # Settings of its own, as in the process of its own the command runs in.
    settings = new_settings()
    try:
        with settings_of(settings):
            cli_app(args=["serve", *map(str, arguments)], standalone_mode=False)
            for app in built:
                app.dependency_overrides[get_settings]()
    finally:
        uvicorn.run = run  # type: ignore[assignment]
    if not built:
        raise RuntimeError(f"tiled serve {' '.join(map(str, arguments))} built no app")
    return WithSettings(built[0], settings)


@contextlib.contextmanager
def stock_tiled_client(*arguments: Arg, **client_kwargs: Any) -> Iterator[Any]:
    """A Tiled client of :func:`stock_tiled_app` (``tiled serve ARGUMENTS``), in-process
    through the transport :func:`tiled_archive.open` uses (no socket; Tiled's own
    ``Context.from_app`` gave raw exports, fetched on several threads, without their files
    in our tests). Closed at the end of the block."""
    from tiled.client import from_context

    from .serve.transport import in_process_context

    with in_process_context(stock_tiled_app(*arguments), None) as context:
        yield from_context(context, **client_kwargs)


@dataclass(frozen=True)
class LoopbackServer:
    """A server process listening on ``HOST:port``."""

    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def serving(
    command: Sequence[Arg],
    port: int,
    *,
    log: Path | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[LoopbackServer]:
    """Run ``command``, a server that listens on ``port`` of the loopback interface, for the
    duration of the block: wait until it accepts connections, yield it, and stop it at the end
    however the block ends (terminate, then kill if it lingers).

    Its output is appended to ``log`` (else discarded); ``env`` adds environment variables.
    Raises RuntimeError, with the output when logged, if the server exits or is not listening
    within ``timeout`` seconds.
    """
    with open(log, "a") if log else open(os.devnull, "w") as sink:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + timeout
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                output = log.read_text() if log else "(output discarded)"
                raise RuntimeError(f"{command[0]} did not start listening on {port}:\n{output}")
            time.sleep(0.1)
        yield LoopbackServer(process, port)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """End a server process: terminate, then kill if it lingers past 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on ``HOST:port``."""
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


#: The folder :func:`static_files_app` serves.
STATIC_ROOT_VARIABLE = "TILED_ARCHIVE_STATIC_ROOT"


def static_files_app(root: str | os.PathLike[str] | None = None) -> Any:
    """An ASGI app serving the files of ``root`` (default: ``$TILED_ARCHIVE_STATIC_ROOT``) as
    a web server publishes archives: Starlette's StaticFiles (single ranges, ETag,
    Last-Modified, 404s). ``uvicorn --factory tiled_archive.testing:static_files_app`` runs it
    in a process of its own."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    folder = root if root is not None else os.environ[STATIC_ROOT_VARIABLE]
    return Starlette(routes=[Mount("/", StaticFiles(directory=folder))])


def static_files_command(root: Arg, port: int) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of :func:`static_files_app` under uvicorn on ``port``."""
    command = [sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:static_files_app"]
    command += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    return command, {STATIC_ROOT_VARIABLE: str(root)}


def postgres_admin(server: str, *statements: str) -> None:
    """Run ``statements`` (``CREATE DATABASE …``, ``DROP DATABASE …``) in order on the
    ``postgres`` database of the PostgreSQL server at ``server`` (a URI without database)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(f"{server}/postgres")
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def list_every_container(api: str, root: str) -> None:
    """Fetch, with plain httpx, the listing of every container below ``root`` of the Tiled
    server at ``api`` (its children with their data sources, page by page): what a download
    must learn of a tree, the benchmarks' baseline for listing it."""
    import httpx

    with httpx.Client(timeout=60) as client:
        pending = [root]
        while pending:
            path, offset = pending.pop(), 0
            while True:
                page = client.get(
                    f"{api}/search/{path}",
                    params={"page[offset]": offset, "page[limit]": 300, "include_data_sources": 1},
                ).json()
                for item in page["data"]:
                    if item["attributes"]["structure_family"] == "container":
                        pending.append(f"{path}/{item['id']}")
                offset += len(page["data"])
                if not page["data"] or offset >= page["meta"]["count"]:
                    break


class CountingProxy:
    """A TCP proxy on loopback to the server on ``HOST:port``: it counts the bytes it passes
    to clients (``received``), and with ``cut_after`` it breaks every connection once that
    many have passed and refuses connections from then on (a network that fails halfway;
    setting ``cut`` False and ``cut_after`` None mends it);
    ``flip_at`` (settable) inverts the byte passed at that count (a corrupting one).
    A context manager: listening inside the block, at ``url``."""

    def __init__(self, port: int, *, cut_after: int | None = None):
        self.target = port
        self.cut_after = cut_after
        self.flip_at: int | None = None
        self.received = 0
        #: Connections accepted (refused ones too: a client that tried).
        self.connections = 0
        self.cut = False
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> CountingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Shut down first: close() alone leaves a socket that a thread is blocked accepting
        # on listening (Linux), and later connections would be accepted, then dropped.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._break()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.connections += 1
            if self.cut:
                client.close()
                continue
            upstream = socket.create_connection((HOST, self.target))
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with self._lock:
                        allowed = len(data)
                        if self.cut_after is not None:
                            allowed = min(allowed, max(self.cut_after - self.received, 0))
                        at = (self.flip_at if self.flip_at is not None else -1) - self.received
                        if 0 <= at < allowed:
                            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                        self.received += allowed
                    sink.sendall(data[:allowed])
                    if allowed < len(data):
                        self.cut = True
                        self._break()
                        return
                else:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _break(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
