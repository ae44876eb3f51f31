"""An httpx transport that calls an ASGI app in-process, through an anyio blocking portal:
no socket, streamed bodies, one event loop per app (Tiled's client is synchronous).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx

from .middleware import API

#: Each in-process client gets a host of its own: Tiled's dask reads name their graphs by
#: node URL, so two clients at one URL could share a graph (docs/upstream.md).
_CLIENT_NUMBERS = itertools.count(1)


def _local_url() -> str:
    return f"http://{next(_CLIENT_NUMBERS)}.tiled-archive.invalid{API}"


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
def in_process_context(app: Any, api_key: str | None) -> Iterator[Any]:
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
