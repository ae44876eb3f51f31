"""The archive's catalog: raw nodes' data sources as the server gives them, every node
recreated in a fresh catalog through Tiled's own catalog adapter, the archive path of each asset
URI, and the manifest's record of the nodes read through the data API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .. import catalog as catalog_db
from ..format import DATA_DIR
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
    """Recreate every node in a fresh catalog through Tiled's own catalog adapter (what the
    server's create-node route calls), parents first, with its key, metadata, specs and
    (archived) data sources."""
    asyncio.run(_create_nodes(run.nodes, catalog_db.init_catalog(db, [str(run.staging)])))


async def _create_nodes(nodes: list[Node], root: Any) -> None:
    from tiled.structures.core import Spec, StructureFamily
    from tiled.structures.data_source import DataSource

    await root.startup()  # what the server's lifespan does first
    created: dict[tuple[str, ...], Any] = {(): root}
    try:
        for node in sorted(nodes, key=lambda n: len(n.path)):
            attributes = node.attributes
            family = "container" if node.method == "container" else attributes["structure_family"]
            created[node.path] = await created[node.path[:-1]].create_node(
                structure_family=StructureFamily(family),
                metadata=dict(attributes["metadata"]),
                key=node.path[-1],
                specs=[Spec(**spec) for spec in attributes["specs"]],
                data_sources=[DataSource.from_json(source) for source in node.archived],
            )
    finally:
        await root.shutdown()


def member_for_uri(staging: Path, row: catalog_db.AssetRow) -> str:
    """The archive path of an asset URI of the rebuilt catalog (a file in ``staging``)."""
    from tiled.utils import path_from_uri

    return path_from_uri(row.data_uri).relative_to(staging).as_posix()


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
