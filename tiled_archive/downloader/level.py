"""A browse mirror (:mod:`tiled_archive.browser`), grown one container at a time: a new,
empty lazy archive for a server's node, then each container's children as the user visits
it, planned as a download plans them (directory listings, sizes and validators probed) and
created in the mirror's catalog by Tiled's own catalog adapter. No payload byte is fetched
here: the mirror's reader fetches what reads need (:mod:`tiled_archive.sources.lazy`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiled.utils import path_from_uri

from ..catalog import db_file as catalog_db
from ..files.blobs import BlobCache, default_cache_dir
from ..files.work import work_folder
from ..progress import progress_display
from ..reader.fetching import trust
from ..rules.manifest import FileEntry
from ..rules.names import CATALOG_NAME
from ..writer import write_new
from .plan import assign_server_paths, list_directories, plan_children
from .rebuild import (
    add_nodes,
    archive_raw_sources,
    fetch_record,
    manifest_fields,
    member_of_uri,
    rebuild_catalog,
    replace_metadata,
)
from .state import Node, Run, node_path
from .transfer import probe_raw


@dataclass(frozen=True)
class Level:
    """What one container's listing added to a mirror: its new child nodes (paths), which of
    them are plain containers (listed when visited), and the manifest's new files and fetch
    items."""

    nodes: list[tuple[str, ...]]
    containers: list[tuple[str, ...]]
    files: list[FileEntry]
    fetch: dict[str, dict[str, str]]
    #: Children left out: only the data API reads them (not mirrored yet).
    skipped: list[str]
    #: Children the mirror held whose metadata or specs changed at the server (replaced).
    changed: list[str]


def _run(source: Any, staging: Path, progress: Any, workers: int) -> Run:
    cache = BlobCache(default_cache_dir(), None)  # not used here: nothing is fetched
    cache.close()
    return Run(source, cache, staging, progress, workers=workers, retries=3, on_file=None)


def start_mirror(source: Any, folder: Path) -> None:
    """Write an empty lazy archive at ``folder`` for the container ``source``: its parent
    containers and itself, the root's metadata, provenance, and a fetch record naming the
    server as origin (no files yet). Marked as this user's (it fetches when read)."""
    from tiled.client import from_context

    with (
        work_folder() as work,
        progress_display(True) as progress,
    ):
        run = _run(source, Path(work, "staging"), progress, 1)
        parts = node_path(source)
        for depth in range(1, len(parts) + 1):
            node = from_context(source.context, node_path_parts=list(parts[:depth]))
            run.nodes.append(Node(tuple(parts[:depth]), node, "container"))
        db = Path(work, CATALOG_NAME)
        rebuild_catalog(run, db)
        fields = manifest_fields(run)
        _, fields["fetch"] = fetch_record(run, lazy=True)
        write_new(
            folder,
            [],
            db,
            lambda row: member_of_uri(run.staging, row.data_uri),
            epoch=None,
            force=False,
            quiet=True,
            extra=fields,
            relocated=True,
        )
    trust(folder, fields["fetch"]["origin"])


def add_level(client: Any, folder: Path, known: Collection[str], *, workers: int = 4) -> Level:
    """Add the children of the server's container ``client`` that ``known`` (keys) lacks to
    the mirror at ``folder``'s catalog; the manifest is left to the caller (``Level``)."""
    seen: dict[str, Any] = {}
    with progress_display(True) as progress:
        run = _run(client, folder.absolute(), progress, workers)
        plan_children(run, client, known, seen)
        list_directories(run)
        assign_server_paths(run)
        probe_raw(run)
        skipped = [node.name for node in run.nodes if node.method == "data-api"]
        run.nodes = [node for node in run.nodes if node.method in ("raw", "container")]
        archive_raw_sources(run)
        files, record = fetch_record(run, lazy=True)
        if run.nodes:
            add_nodes(run, folder / CATALOG_NAME)
            # The asset rows say what the manifest says (the server's may lack a size).
            by_path = {entry.path: entry for entry in files}
            root = folder.absolute()
            catalog_db.fill_hashes(
                folder / CATALOG_NAME,
                by_path,
                lambda uri: path_from_uri(uri).relative_to(root).as_posix(),
                compact=False,
            )
    parent = node_path(client)
    held = _children_metadata(folder / CATALOG_NAME, parent)
    changed = {
        key: (attributes["metadata"], attributes["specs"])
        for key, attributes in seen.items()
        if key in known
        and key in held
        and held[key] != (attributes["metadata"], attributes["specs"])
    }
    if changed:
        replace_metadata(folder / CATALOG_NAME, str(run.staging), parent, changed)
    return Level(
        [node.path for node in run.nodes],
        [node.path for node in run.nodes if node.method == "container"],
        files,
        record["files"],
        skipped,
        sorted(changed),
    )


def _children_metadata(db: Path, parent: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """The metadata and specs the mirror holds for each child of node ``parent``."""
    import contextlib
    import json
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)) as conn:
        (node,) = conn.execute("SELECT id FROM nodes WHERE parent IS NULL").fetchone()
        for key in parent:
            row = conn.execute("SELECT id FROM nodes WHERE parent = ? AND key = ?", (node, key))
            found = row.fetchone()
            if found is None:
                return {}
            node = found[0]
        rows = conn.execute("SELECT key, metadata, specs FROM nodes WHERE parent = ?", (node,))
        return {key: (json.loads(meta), json.loads(specs)) for key, meta, specs in rows}
