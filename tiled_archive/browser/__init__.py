"""Browse a Tiled server through a local mirror: ``tiled_archive.browse(url)``.

The mirror is a lazy directory archive under the cache root (one per server and node), that
holds what the user has walked: each container's listing is fetched when the user first visits
it (:mod:`.mirror`), a data file when a read needs it (whole, or the blocks a read touches,
:mod:`tiled_archive.sources.lazy`). It is served to the normal Tiled client in-process, like
:func:`tiled_archive.open`. Offline it serves what it holds: metadata, listings and searches
(new queries too, over the nodes it holds); reads of absent bytes fail with TA-E941.
``tiled_archive.download(browse_client.search(...), "x.zip")`` reads through the mirror, so
nothing read before is fetched again, and what the download fetches stays in the mirror.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..files.cache_root import named_folder
from ..reader import FetchOptions, open_archive
from ..rules.problems import ArchiveError
from ..serve.app import ArchiveServer
from ..serve.client import in_process_client
from .mirror import Mirror, MirrorApp

#: The most bytes a mirror keeps of fetched files (least recently used dropped first).
DEFAULT_MIRROR_BYTES = 10 << 30


def mirror_folder(api_uri: str, node: tuple[str, ...] = ()) -> Path:
    """Where the mirror of the server at ``api_uri`` (node ``node``) lives under the cache
    root: named by host, port, API path and node, so a listing of the folder says what it
    mirrors, plus a short digest of them (two spellings never share a folder by accident)."""
    url = urlsplit(api_uri)
    words = [url.hostname or "server", str(url.port or ""), url.path, *node]
    identity = f"{url.scheme}://{url.netloc}{url.path}\0{'/'.join(node)}"
    return named_folder("mirrors", words, identity)


def _api_and_node(url: str) -> tuple[str, tuple[str, ...]]:
    """The API root and node path of a Tiled URL (``.../api/v1`` or ``.../api/v1/metadata/a/b``),
    without user, password or query."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    node: tuple[str, ...] = ()
    if "/metadata/" in path + "/":
        path, _, rest = path.partition("/metadata")
        node = tuple(p for p in rest.split("/") if p)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{path}", node


class _MirrorServer:
    """Tiled's app over the mirror (read while it grows), behind the middleware that grows it."""

    def __init__(self, folder: Path, mirror: Mirror, options: FetchOptions):
        self.mirror = mirror
        self.server = ArchiveServer(open_archive(folder, fetch=options), live=True)
        mirror.archive = self.server.archive
        self.app = MirrorApp(self.server.app, mirror)

    def close(self) -> None:
        self.server.close()
        self.mirror.close()


def browse(
    source: str | Any,
    dest: str | Path | None = None,
    *,
    offline: bool | None = None,
    api_key: str | None = None,
    max_bytes: int | None = DEFAULT_MIRROR_BYTES,
    structure_clients: str = "numpy",
    **from_uri_kwargs: Any,
) -> Any:
    """A Tiled client over a local mirror of the server ``source`` (its URL, or a Tiled client
    of one of its containers). ``dest``: the mirror's folder (default :func:`mirror_folder`,
    under the cache root; opening it again the next day reopens the same mirror).

    Listings are fetched as the user walks the tree (each container once per session, when
    online), data when a read needs it, checked and kept, at most ``max_bytes`` of it (least
    recently used dropped first). ``offline`` (default ``TILED_ARCHIVE_OFFLINE``): contact
    nothing, serve what the mirror holds. ``api_key`` and ``from_uri_kwargs`` go to Tiled's
    ``from_uri`` (``api_key`` also to the mirror's file fetches; it is never stored).

    Raises ArchiveError TA-E941 offline when there is no mirror yet, TA-E911 when the server
    cannot be reached to start one.
    """
    from tiled.client import from_context, from_uri

    from ..downloader.level import start_mirror
    from ..reader.fetching import offline_from_environment

    offline = offline_from_environment() if offline is None else offline
    if isinstance(source, str):
        api, node = _api_and_node(source)
        remote = None
        if not offline:
            remote = from_uri(source, api_key=api_key, **from_uri_kwargs)
    else:
        remote = source
        api, node = (
            str(source.context.api_uri).rstrip("/"),
            tuple(p for p in source.path_parts if p),
        )
        offline = False if offline is None else offline
    folder = Path(dest) if dest is not None else mirror_folder(api, node)
    if not (folder / "tiled-archive.json").is_file():
        if offline or remote is None:
            raise ArchiveError(
                "TA-E941",
                str(folder),
                f"no mirror of {api} yet, and offline",
                hint="Browse it once online first.",
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        start_mirror(remote, folder)

    def remote_node(parts: tuple[str, ...]) -> Any:
        assert remote is not None
        return from_context(remote.context, node_path_parts=list(parts))

    mirror = Mirror(folder.absolute(), node, None if offline else remote_node)
    options = FetchOptions(fetch=not offline, offline=offline, api_key=api_key, max_bytes=max_bytes)
    client = in_process_client(
        lambda: _MirrorServer(folder, mirror, options), {"structure_clients": structure_clients}
    )
    # A download from this client records the server, not the in-process app (rebuild.py).
    client.context.tiled_archive_origin = api
    if node:
        client = client["/".join(node)]
    return client


__all__ = ["DEFAULT_MIRROR_BYTES", "browse", "mirror_folder"]
