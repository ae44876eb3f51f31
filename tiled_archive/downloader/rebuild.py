"""The archive's catalog: raw nodes' data sources as the server gives them, every node
recreated in a fresh catalog through Tiled's own catalog adapter, the archive path of each asset
URI, and what the manifest records of the download: the nodes read through the data API, the
root's metadata and specs, and where the archive came from."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..catalog import db_file as catalog_db
from ..catalog.node_rows import NewNodes
from ..rules.manifest import FileEntry
from ..rules.names import DATA_DIR
from ..rules.problems import ArchiveError
from .state import Node, Run, server_path, staged_asset


def archive_raw_sources(run: Run) -> None:
    """Raw nodes' data sources as the server gives them, assets pointing at the files."""
    for node in run.nodes:
        if node.method != "raw":
            continue
        node.archived = []
        for source in node.attributes["data_sources"]:
            assets = []
            for asset in source["assets"]:
                path = server_path(asset["data_uri"])
                assert path is not None
                member = f"{DATA_DIR}/{path.relative_to(run.base)}"
                assets.append(
                    staged_asset(
                        run.staging / member,
                        asset["is_directory"],
                        asset.get("parameter"),
                        asset.get("num"),
                    )
                )
            # The archive's server never writes: every data source is external there.
            node.archived.append(
                {
                    **{k: v for k, v in source.items() if k not in ("id", "assets")},
                    "management": "external",
                    "assets": assets,
                }
            )


def rebuild_catalog(run: Run, db: Path) -> None:
    """Recreate every node in a fresh catalog as Tiled's own catalog adapter creates one (the
    rows its ``create_node`` writes, :mod:`tiled_archive.catalog.node_rows`, written at once),
    parents first, with its key, metadata, specs and (archived) data sources."""
    from tiled.structures.core import Spec, StructureFamily
    from tiled.structures.data_source import DataSource

    catalog_db.create_catalog_file(db)
    new = NewNodes(db)
    created: dict[tuple[str, ...], int] = {(): 0}
    for node in sorted(run.nodes, key=lambda n: len(n.path)):
        attributes = node.attributes
        family = "container" if node.method == "container" else attributes["structure_family"]
        created[node.path] = new.add(
            created[node.path[:-1]],
            node.path[-1],
            StructureFamily(family),
            dict(attributes["metadata"]),
            [Spec(**spec) for spec in attributes["specs"]],
            [DataSource.from_json(source) for source in node.archived],
        )
    new.write()


def add_nodes(run: Run, db: Path) -> None:
    """Create ``run`` 's nodes in the existing catalog ``db`` (a browse mirror growing), below
    parents it holds already or that ``run`` creates first."""
    from tiled.catalog import from_uri

    root = from_uri(catalog_db.sqlite_url(db), readable_storage=[str(run.staging)])
    asyncio.run(_create_nodes(run.nodes, root))


async def _create_nodes(nodes: list[Node], root: Any) -> None:
    from tiled.structures.core import Spec, StructureFamily
    from tiled.structures.data_source import DataSource

    await root.startup()  # what the server's lifespan does first
    created: dict[tuple[str, ...], Any] = {(): root}
    try:
        for node in sorted(nodes, key=lambda n: len(n.path)):
            attributes = node.attributes
            family = "container" if node.method == "container" else attributes["structure_family"]
            parent = created.get(node.path[:-1])
            if parent is None:  # a node the catalog held before
                parent = await root.lookup_adapter(list(node.path[:-1]))
            created[node.path] = await parent.create_node(
                structure_family=StructureFamily(family),
                metadata=dict(attributes["metadata"]),
                key=node.path[-1],
                specs=[Spec(**spec) for spec in attributes["specs"]],
                data_sources=[DataSource.from_json(source) for source in node.archived],
            )
    finally:
        await root.shutdown()


def replace_metadata(
    db: Path, readable: str, parent: tuple[str, ...], changed: dict[str, tuple[Any, Any]]
) -> None:
    """Give children of node ``parent`` in the catalog ``db`` new metadata and specs (key ->
    (metadata, specs)), through Tiled's own catalog adapter, without a revision."""
    from tiled.catalog import from_uri
    from tiled.structures.core import Spec

    async def replace() -> None:
        root = from_uri(catalog_db.sqlite_url(db), readable_storage=[readable])
        await root.startup()
        try:
            for key, (metadata, specs) in changed.items():
                node = await root.lookup_adapter([*parent, key])
                await node.replace_metadata(
                    metadata=dict(metadata),
                    specs=[Spec(**spec) for spec in specs],
                    drop_revision=True,
                )
        finally:
            await root.shutdown()

    asyncio.run(replace())


def member_of_uri(staging: Path, data_uri: str) -> str:
    """The archive path of an asset URI of the rebuilt catalog (a file in ``staging``)."""
    from tiled.utils import path_from_uri

    return path_from_uri(data_uri).relative_to(staging).as_posix()


def fallbacks(run: Run) -> list[dict[str, str]]:
    """The manifest's ``fallbacks``: each node read through the data API, and why."""
    records = []
    for node in run.nodes:
        if node.reason is None:
            continue
        record = {"node": node.name, "reason": node.reason}
        if node.archived:
            record["mimetype"] = node.archived[0]["mimetype"]
        records.append(record)
    return sorted(records, key=lambda r: r["node"])


def manifest_fields(run: Run) -> dict[str, Any]:
    """The manifest's fields that say what this download was (spec §4): ``fallbacks`` (when
    any node was read through the data API), ``root`` and ``provenance``
    (:func:`source_fields`)."""
    fields: dict[str, Any] = {}
    records = fallbacks(run)
    if records:
        fields["fallbacks"] = records
    return fields | source_fields(run.source)


def source_fields(source: Any) -> dict[str, Any]:
    """``root`` (the server root's metadata and specs, which Tiled keeps outside its
    catalog; when either is set) and ``provenance`` of a download of ``source``."""
    from tiled.client import from_context

    fields: dict[str, Any] = {}
    root = from_context(source.context, node_path_parts=[]).item["attributes"]
    if root.get("metadata") or root.get("specs"):
        fields["root"] = {"metadata": dict(root["metadata"]), "specs": list(root["specs"])}
    # A browse mirror's client names the server it mirrors (tiled_archive.browser).
    server = urlsplit(getattr(source.context, "tiled_archive_origin", str(source.context.api_uri)))
    host = server.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if server.port is not None:
        netloc += f":{server.port}"
    queries = getattr(source, "_queries", None) or []
    fields["provenance"] = {
        # Without user, password or query: an archive travels, credentials must not.
        "server": urlunsplit((server.scheme, netloc, server.path, "", "")),
        "node": "/" + "/".join(part for part in source.path_parts if part),
        "queries": [_query_record(query) for query in queries],
        "tiled_version": source.context.server_info.library_version,
        "retrieved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return fields


def _query_record(query: Any) -> dict[str, Any]:
    """A Tiled query as JSON: its type and fields (Tiled's queries are dataclasses)."""
    fields = dataclasses.asdict(query) if dataclasses.is_dataclass(query) else {"repr": repr(query)}
    return {"type": type(query).__name__, **fields}


def fetch_record(run: Run, *, lazy: bool) -> tuple[list[FileEntry], dict[str, Any]]:
    """The manifest's ``fetch`` record (spec 4.1) and, for a ``lazy`` download, the absent
    files' entries: each raw file's URL relative to the server's API root and the validators
    the server sent for it (its probe, or the request that fetched it). Every download from a
    server writes the record, so that ``update`` can ask the server which files changed; a
    file the record cannot name (below another root, or of unknown size) stops only a lazy
    download (TA-E910), which could never fetch it: an eager one leaves it out."""
    origin = str(run.source.context.api_uri).rstrip("/") + "/"
    entries: dict[str, FileEntry] = {}
    files: dict[str, dict[str, str]] = {}
    for node in run.nodes:
        if node.method != "raw":
            continue
        for remote in node.files:
            url = remote.url()
            if not url.startswith(origin) or remote.size is None:
                if not lazy:
                    continue
                raise ArchiveError(
                    "TA-E910",
                    node.name,
                    f"cannot be fetched later: its file {remote.member} is at {url}, not "
                    f"below {origin}, or has no size",
                )
            entries[remote.member] = FileEntry(remote.member, remote.size, remote.server_sha256)
            item = {"url": url[len(origin) :]}
            if remote.probed is not None:
                validators = remote.probed[1]
                if validators.etag:
                    item["etag"] = validators.etag
                if validators.last_modified:
                    item["last_modified"] = validators.last_modified
            files[remote.member] = item
    absent = sorted(entries.values(), key=lambda e: e.path) if lazy else []
    return absent, {"origin": origin, "files": files}
