"""A ZIP archive on a web server (http, https), read by range requests through httpx."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from .remote import Answer, Body, RemoteFile


class HTTPFile(RemoteFile):
    """A file on a web server that answers range requests.

    ``storage_options`` as fsspec takes them for HTTP: ``headers`` (e.g. ``Authorization``),
    ``timeout`` (seconds, default 30), ``verify`` (TLS), ``client`` (an ``httpx.Client`` to
    use instead of a new one, e.g. with its own transport).
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None):
        options = dict(storage_options or {})
        self._own_client = "client" not in options
        self._client: httpx.Client = options.get("client") or httpx.Client(
            headers=options.get("headers"),
            timeout=options.get("timeout", 30),
            verify=options.get("verify", True),
            follow_redirects=True,
        )
        super().__init__(url)

    def answer(self, asked: str, body: Body) -> Answer:
        try:
            # Ranges count bytes of the file as stored: an encoded (compressed) answer is
            # neither asked for nor decoded (an inflating one could fill memory).
            wanted = {"Range": asked, "Accept-Encoding": "identity"}
            with self._client.stream("GET", self.location, headers=wanted) as response:
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding != "identity":
                    raise self.not_answered(
                        f"a range answered with Content-Encoding: {encoding}",
                        "Serve the archive without compressing it (it is stored, not deflated); "
                        "or download it whole and open the local file.",
                    )
                length = body.take(response.iter_raw()) if response.status_code == 206 else 0
                headers = response.headers
                return Answer(
                    response.status_code,
                    response.reason_phrase,
                    headers.get("content-range"),
                    headers.get("etag"),
                    headers.get("last-modified"),
                    length,
                )
        except httpx.HTTPError as err:
            raise self.not_answered(
                f"cannot read it: {type(err).__name__}: {err}",
                "Check the URL and the network, then try again.",
            ) from None

    def close(self) -> None:
        super().close()
        if self._own_client:
            self._client.close()
