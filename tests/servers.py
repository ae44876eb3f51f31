"""Servers for the tests: stock `tiled serve pyobject`, stock `tiled serve catalog` over
registered files and a writer's catalog, and a web server of static files, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tiled_archive.testing import free_port, serving, static_files_app, tiled_serve_catalog

TILED = str(Path(sys.executable).parent / "tiled")
REPOSITORY = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serve_pyobject(tree: str, log: Path, **environment: str) -> Iterator[str]:
    """Stock `tiled serve pyobject --public TREE` on loopback (this repository importable by
    it, ``environment`` set for it and for this process): its URL."""
    port = free_port()
    command = [TILED, "serve", "pyobject", "--public", "--port", port, tree]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPOSITORY))
        for name, value in environment.items():
            patch.setenv(name, value)
        with serving(command, port, log=log) as server:
            yield server.url


def pyobject_fixture(tree: str, **environment: str):
    """A module-scoped fixture: the URL of stock `tiled serve pyobject --public TREE` (with
    ``environment`` set for it and for this process), for the module's tests."""

    @pytest.fixture(scope="module")
    def served(tmp_path_factory) -> Iterator[str]:
        log = tmp_path_factory.mktemp("pyobject") / "server.log"
        with serve_pyobject(tree, log, **environment) as url:
            yield url

    return served


@contextlib.contextmanager
def catalog_with_writer(root: Path, files: Path) -> Iterator[tuple[Any, int]]:
    """Stock `tiled serve catalog --public` on loopback over ``root/catalog.db``: ``files``
    registered by Tiled's own registration, and writable storage in ``root/writable``. Yields
    an in-process Tiled client of the same catalog (a beamline's writer: what it writes, the
    server serves) and the server's port."""
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.client.register import register
    from tiled.server.app import build_app

    writable = root / "writable"
    writable.mkdir()
    catalog = from_uri(
        f"sqlite:///{root}/catalog.db",
        init_if_not_exists=True,
        writable_storage=[str(writable)],
        readable_storage=[str(files)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Context.from_app(build_app(catalog)) as context:
            client = from_context(context)
            asyncio.run(register(client, files))
            port = free_port()
            command = tiled_serve_catalog(
                root / "catalog.db", files, port, "-w", writable, "--public"
            )
            with serving(command, port, log=root / "server.log"):
                yield client, port


class StaticServer:
    """Files of ``root`` over HTTP with ranges (uvicorn + Starlette), requests counted; or
    another ASGI ``app`` (a hostile server)."""

    def __init__(self, root: Path | None = None, app=None):
        import uvicorn

        self.requests: list[str | None] = []  # each request's Range header
        files = app if app is not None else static_files_app(root)

        async def counted(scope, receive, send):
            if scope["type"] == "http":
                self.requests.append(dict(scope["headers"]).get(b"range", b"").decode() or None)
            await files(scope, receive, send)

        self.port = free_port()
        config = uvicorn.Config(counted, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def s3_bucket(archive: Path, key: str) -> Iterator[dict[str, Any]]:
    """``archive`` as object ``key`` of the bucket ``facility`` on a real S3-compatible server
    (moto's, on loopback): yields the storage options that reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "key": "facility-key",
        "secret": "facility-secret",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    try:
        client = boto3.client(
            "s3",
            endpoint_url=options["endpoint_url"],
            aws_access_key_id=options["key"],
            aws_secret_access_key=options["secret"],
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="facility")
        client.upload_file(str(archive), "facility", key)
        yield options
    finally:
        server.stop()
