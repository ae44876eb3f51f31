"""The one server an incomplete archive's files come from (spec 4.1): each file's address
and recorded validators (:class:`Absent`), and the requests for it (:class:`Origin`), every
answer checked before a byte of it is kept."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from ...rules.problems import ArchiveError

#: Attempts of one request on a connection error or a 5xx answer.
ATTEMPTS = 3

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class Absent:
    """A file the fetch record lists: its size, digest (None: unknown), address and the
    validators recorded for it."""

    path: str
    size: int
    sha256: str | None
    url: str
    etag: str | None = None
    last_modified: str | None = None


class Origin:
    """The one server an archive's absent files come from: no redirect is followed, the API
    key goes to it alone, every answer is checked before a byte of it is kept."""

    def __init__(self, base: str, api_key: str | None):
        self.base = base
        headers = {"Accept-Encoding": "identity"}
        if api_key:
            headers["Authorization"] = f"Apikey {api_key}"
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(30.0), follow_redirects=False
        )
        #: Requests made and body bytes received (tests and benchmarks count them).
        self.requests = 0
        self.received = 0

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def get(self, file: Absent, start: int | None, end: int | None) -> Iterator[httpx.Response]:
        """The open answer to a GET of ``file`` (bytes ``start..end`` inclusive, or whole),
        checked: a 2xx of the right size and validators. A connection error or a 5xx before
        the answer is retried; a connection broken while the body streams is TA-E943."""
        headers = {} if start is None else {"Range": f"bytes={start}-{end}"}
        url = self.base + file.url
        for attempt in range(ATTEMPTS):
            self.requests += 1
            try:
                request = self._client.build_request("GET", url, headers=headers)
                response = self._client.send(request, stream=True)
            except httpx.TransportError as err:
                if attempt + 1 == ATTEMPTS:
                    why = f"cannot reach the origin: {type(err).__name__}: {err}"
                    raise ArchiveError("TA-E943", url, why) from None
                time.sleep(0.2 * 2**attempt)
                continue
            if response.status_code >= 500 and attempt + 1 < ATTEMPTS:
                response.close()
                time.sleep(0.2 * 2**attempt)
                continue
            break
        try:
            self._check(file, response, start, end)
            yield response
        except httpx.TransportError as err:
            why = f"the connection broke: {type(err).__name__}: {err}"
            raise ArchiveError("TA-E943", url, why) from None
        finally:
            response.close()

    def _check(
        self, file: Absent, response: httpx.Response, start: int | None, end: int | None
    ) -> None:
        url = self.base + file.url
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            raise ArchiveError(
                "TA-E943", url, f"the origin redirects ({status}) to {where}; not followed"
            )
        if status in (401, 403):
            raise ArchiveError("TA-E943", url, f"the origin refused the request ({status})")
        if status in (404, 410, 416):
            raise ArchiveError(
                "TA-E942", file.path, f"the origin no longer has the file ({status} at {url})"
            )
        if status not in (200, 206):
            raise ArchiveError("TA-E943", url, f"the origin answered {status}")
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise ArchiveError("TA-E943", url, f"an answer with Content-Encoding: {encoding}")
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if match is None:
                raise ArchiveError("TA-E943", url, "a 206 answer without a usable Content-Range")
            first, last, total = (int(group) for group in match.groups())
            if (first, last) != (start, end):
                raise ArchiveError(
                    "TA-E943", url, f"asked for bytes {start}-{end}, got {first}-{last}"
                )
        else:
            if start is not None and (start, end) != (0, file.size - 1):
                raise ArchiveError("TA-E943", url, "the origin ignores Range (a whole 200)")
            total = int(response.headers.get("content-length", file.size))
        if total != file.size:
            raise ArchiveError(
                "TA-E942", file.path, f"the origin's file has {total} bytes, {file.size} listed"
            )
        for name, recorded in (("etag", file.etag), ("last-modified", file.last_modified)):
            given = response.headers.get(name)
            if recorded is not None and given is not None and given != recorded:
                raise ArchiveError(
                    "TA-E942",
                    file.path,
                    f"changed at the origin: {name} {given}, recorded {recorded}",
                )


def digest_differs(file: Absent) -> ArchiveError:
    return ArchiveError(
        "TA-E942", file.path, "SHA-256 of the fetched file differs from the manifest"
    )
