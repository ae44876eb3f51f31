"""ASGI middleware around Tiled's app: file routes confined to Tiled's bundled UI, no blosc2
for raw bytes, and a small cache of immutable responses.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

#: Where Tiled's app mounts its API.
API = "/api/v1"


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
        if scope["type"] == "http" and scope["path"].startswith(f"{API}/asset/"):
            headers = []
            for name, value in scope["headers"]:
                if name == b"accept-encoding":
                    offered = [e.strip() for e in value.split(b",")]
                    value = b", ".join(e for e in offered if e.split(b";")[0] != b"blosc2")
                headers.append((name, value))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


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
