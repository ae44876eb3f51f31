"""A download in one request, from a server with the archive route (``tiled_archive.serve.router``).

``GET {api}/archive/{path}`` (the source's search as its ``filter[...]`` parameters) gives the
whole archive as one stream. It is saved beside the destination, checked as any archive from
elsewhere is (``validate``, every digest), then written at the destination by ``convert``: the
reference member order (the stream has its tag files last), relocated when a directory, with
this download's ``provenance``. A server without the route answers 404 (405: not a catalog
tree; 400: nothing the route can archive), and the download takes the per-asset path instead.
Unlike that path, an interrupted streamed download starts over: it uses no cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ..files.hashing import CHUNK
from ..rules.problems import ArchiveError

#: Answers that mean "this server cannot stream this node": take the per-asset path.
NOT_STREAMED = (400, 404, 405)


def route_url(source: Any) -> str:
    """The archive route's URL for ``source`` (a Tiled client node)."""
    path = "/".join(part for part in source.path_parts if part)
    return f"{str(source.context.api_uri).rstrip('/')}/archive/{path}"


def fetch_streamed(source: Any, into: Path, progress: Any) -> bool:
    """Save the server's streamed archive of ``source`` at ``into``; False (nothing saved)
    when the server does not stream it. Raises ArchiveError TA-E911 when the stream breaks
    off, and the archive's own first error when what came is not a valid archive."""
    from ..validator import validate

    params = dict(getattr(source, "_queries_as_params", {}) or {})
    client: httpx.Client = source.context.http_client
    task = progress.add_task("fetching the archive", total=None, bytes=True)
    try:
        with client.stream("GET", route_url(source), params=params, timeout=None) as response:
            if response.status_code in NOT_STREAMED:
                return False
            if response.status_code != 200:
                raise ArchiveError(
                    "TA-E911",
                    route_url(source),
                    f"the archive route answered {response.status_code}",
                )
            with open(into, "xb") as sink:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    progress.advance(task, len(chunk))
    except httpx.HTTPError as err:
        into.unlink(missing_ok=True)
        raise ArchiveError(
            "TA-E911", route_url(source), f"the archive stream broke off: {err}"
        ) from None
    finally:
        progress.remove_task(task)
    report = validate(into)
    if report.errors:
        first = report.errors[0]
        raise ArchiveError(
            first.code, first.path, f"in the server's streamed archive: {first.message}"
        )
    return True
