"""A browse mirror: a lazy directory archive under the cache root that grows as the user walks
a server's tree. Before Tiled's in-process app answers a request for a node, :class:`Mirror`
makes sure the containers on its path are listed (each once per session when online: new
children are added, so a mirror opened the next day follows its server), then the app serves
it like any lazy archive: metadata, listings and searches from the mirror's catalog (offline
too), data fetched when a read needs it."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from ..downloader.level import add_level
from ..reader import Archive
from ..rules.manifest import FetchRecord, FetchSource, Manifest
from ..rules.names import FETCH_WORK_DIR, MANIFEST_NAME
from ..rules.problems import ArchiveError
from ..serve.middleware import API
from ..writer import reseal

#: Tiled's routes whose path after the route's name is a node path, by how many segments
#: the route's name takes; those that list a container's children.
_ROUTES = {
    "metadata": 1,
    "search": 1,
    "distinct": 1,
    "revisions": 1,
    "array": 2,
    "table": 2,
    "container": 2,
    "node": 2,
    "awkward": 2,
    "sparse": 2,
    "asset": 2,
}
_LISTING = {"search", "distinct", "container", "node"}


def node_request(path: str) -> tuple[tuple[str, ...], bool] | None:
    """The node path a request for ``path`` names, and whether it lists its children; None
    for a request about no node (the API root's about, auth)."""
    if not path.startswith(API + "/"):
        return None
    parts = [unquote(part) for part in path[len(API) + 1 :].split("/")]
    size = _ROUTES.get(parts[0])
    if size is None:
        return None
    return tuple(part for part in parts[size:] if part), parts[0] in _LISTING


class Mirror:
    """The listing state of the mirror at ``folder`` (which containers it holds, which were
    listed this session) and its growth; ``remote(parts)`` gives the server's client of a node
    (None: offline, nothing grows)."""

    def __init__(
        self, folder: Path, root: tuple[str, ...], remote: Callable[[tuple[str, ...]], Any] | None
    ):
        self.folder = folder
        self.root = root
        self._remote = remote
        self.archive: Archive | None = None
        self._lock = threading.Lock()
        self._session: set[tuple[str, ...]] = set()
        (folder / FETCH_WORK_DIR).mkdir(exist_ok=True)
        self._db = sqlite3.connect(folder / FETCH_WORK_DIR / "mirror.db", check_same_thread=False)
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS container (path TEXT PRIMARY KEY)")
            self._db.execute("CREATE TABLE IF NOT EXISTS child (parent TEXT, key TEXT)")
            self._db.execute("INSERT OR IGNORE INTO container VALUES (?)", (_key(root),))

    def close(self) -> None:
        self._db.close()

    def ensure(self, parts: tuple[str, ...], listing: bool) -> None:
        """List the containers from the root down to the node ``parts`` (and the node itself
        for a ``listing`` request) that this session has not listed yet. Offline, or when the
        server cannot be reached, the mirror is served as it is."""
        if self._remote is None or parts[: len(self.root)] != self.root:
            return
        with self._lock:
            for depth in range(len(self.root), len(parts) + (1 if listing else 0)):
                prefix = parts[:depth]
                if not self._is_container(prefix):
                    return
                if prefix not in self._session:
                    try:
                        self._list(prefix)
                    except (ArchiveError, OSError, KeyError, httpx.HTTPError) as err:
                        warnings.warn(
                            f"tiled-archive: {'/'.join(prefix) or '/'} not listed from the "
                            f"server ({err}); the mirror serves what it holds",
                            stacklevel=2,
                        )
                        self._session.add(prefix)
                        return

    def _is_container(self, parts: tuple[str, ...]) -> bool:
        query = "SELECT 1 FROM container WHERE path = ?"
        return bool(self._db.execute(query, (_key(parts),)).fetchall())

    def _list(self, parts: tuple[str, ...]) -> None:
        assert self._remote is not None and self.archive is not None
        known = {
            row[0]
            for row in self._db.execute("SELECT key FROM child WHERE parent = ?", (_key(parts),))
        }
        level = add_level(self._remote(parts), self.folder, known)
        with self._db:
            self._db.executemany(
                "INSERT INTO child VALUES (?, ?)", [(_key(parts), p[-1]) for p in level.nodes]
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO container VALUES (?)",
                [(_key(p),) for p in level.containers],
            )
        if level.nodes or level.changed:  # the catalog changed: its digest and tag files too
            self._grow(level.files, level.fetch)
            self.archive.refresh()
        self._session.add(parts)

    def _grow(self, files: list, fetch: dict[str, dict[str, str]]) -> None:
        """The manifest with the new files and where they come from; catalog digest and tag
        files written again (the tag manifest last)."""
        manifest = Manifest.loads((self.folder / MANIFEST_NAME).read_bytes())
        record = manifest.fetch
        assert record is not None
        sources = dict(record.files)
        for path, item in fetch.items():
            sources[path] = FetchSource(item["url"], item.get("etag"), item.get("last_modified"))
        listed = {entry.path: entry for entry in manifest.files}
        listed.update((entry.path, entry) for entry in files)
        manifest = dataclasses.replace(
            manifest,
            files=tuple(sorted(listed.values(), key=lambda e: e.path)),
            fetch=FetchRecord(record.origin, sources),
        )
        reseal(self.folder, manifest)


def _key(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


class MirrorApp:
    """ASGI middleware: each request's node made present in the mirror (in a worker thread),
    then the app."""

    def __init__(self, app: Any, mirror: Mirror):
        self.app = app
        self.mirror = mirror

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            found = node_request(scope["path"])
            if found is not None:
                import anyio

                await anyio.to_thread.run_sync(self.mirror.ensure, *found)
        await self.app(scope, receive, send)
