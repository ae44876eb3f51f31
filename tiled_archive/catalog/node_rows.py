"""New nodes for a fresh catalog, written in one transaction: the rows Tiled's catalog adapter
writes for each node it creates (``CatalogContainerAdapter.create_node``), for many nodes.

Tiled's ``create_node`` commits once per node, through aiosqlite's thread: ~120 statements and
as many thread hand-offs per node, 15-20 ms each on two cores, which made ``create`` of 10,000
small files take minutes. Here each node's rows are built in memory as ``create_node`` builds
them (the structure prepared and its id computed by Tiled's own functions, JSON encoded by
Tiled's own serializer, assets shared by URI, ids in creation order) and written at the end by
SQLAlchemy over Tiled's ORM tables, the schema's triggers filling ``nodes_closure`` and the
full-text index. ``tests/integration/test_registration.py`` compares the catalog with the one
Tiled's server route writes, row by row, ids included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db_file import sqlite_url


class Collision(Exception):
    """A node of that key exists below that parent (Tiled's catalog adapter's ``Collision``)."""


@dataclass
class _Rows:
    nodes: dict[int, dict[str, Any]] = field(default_factory=dict)
    structures: dict[str, Any] = field(default_factory=dict)
    data_sources: dict[int, dict[str, Any]] = field(default_factory=dict)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)  # by data URI
    links: list[dict[str, Any]] = field(default_factory=list)
    #: The largest id of each table: SQLite gives a new row the largest id + 1, so an id
    #: freed by deleting the last row is given again, as Tiled's own rows would have it.
    top: dict[str, int] = field(default_factory=lambda: {"nodes": 0, "sources": 0, "assets": 0})

    def next_id(self, table: str) -> int:
        self.top[table] += 1
        return self.top[table]


class NewNodes:
    """Nodes to add to the fresh catalog ``db`` (only its root row: the schema's); :meth:`add`
    each, parents first, then :meth:`write` them. Safe to call from several threads."""

    def __init__(self, db: Path):
        self.db = db
        self._rows = _Rows()
        self._children: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def child(self, parent: int, key: str) -> int | None:
        """The id of the node added as ``key`` below node ``parent`` (None: none was)."""
        return self._children.get((parent, key))

    def add(
        self,
        parent: int,
        key: str,
        structure_family: Any,
        metadata: dict[str, Any],
        specs: Iterable[Any],
        data_sources: Iterable[Any],
    ) -> int:
        """Add a node below node ``parent`` (0: the root) with Tiled's data sources (external
        ones, as registration and a download make); its id. :class:`Collision` when the key is
        taken."""
        from fastapi import HTTPException
        from tiled.catalog.adapter import DEFAULT_ADAPTERS_BY_MIMETYPE, _prepare_structure
        from tiled.catalog.utils import compute_structure_id
        from tiled.structures.data_source import Management

        rows = self._rows
        with self._lock:
            if (parent, key) in self._children:
                raise Collision(key)
            node_id = rows.next_id("nodes")
            self._children[parent, key] = node_id
            rows.nodes[node_id] = {
                "id": node_id,
                "key": key,
                "parent": parent,
                "metadata": metadata,
                "structure_family": structure_family,
                "specs": list(specs),
            }
            for data_source in data_sources:
                if data_source.management != Management.external:
                    raise NotImplementedError(f"{data_source.management} data sources")
                if data_source.mimetype not in DEFAULT_ADAPTERS_BY_MIMETYPE:
                    raise HTTPException(  # as the catalog adapter answers it
                        status_code=415,
                        detail=(
                            f"The given data source mimetype, {data_source.mimetype}, "
                            "is not one that the Tiled server knows how to read."
                        ),
                    )
                structure_id = None
                if data_source.structure is not None:
                    structure = _prepare_structure(structure_family, data_source.structure)
                    structure_id = compute_structure_id(structure)
                    rows.structures.setdefault(structure_id, structure)
                source_id = rows.next_id("sources")
                rows.data_sources[source_id] = {
                    "id": source_id,
                    "node_id": node_id,
                    "structure_family": data_source.structure_family,
                    "mimetype": data_source.mimetype,
                    "management": data_source.management,
                    "parameters": data_source.parameters,
                    "properties": data_source.properties,
                    "structure_id": structure_id,
                }
                for asset in data_source.assets:
                    known = rows.assets.get(asset.data_uri)
                    if known is None:
                        known = rows.assets[asset.data_uri] = {
                            "id": rows.next_id("assets"),
                            "data_uri": asset.data_uri,
                            "is_directory": asset.is_directory,
                            "size": asset.size,
                        }
                    elif asset.size is not None:  # as create_node refreshes a known size
                        known["size"] = asset.size
                    rows.links.append(
                        {
                            "asset_id": known["id"],
                            "data_source_id": source_id,
                            "parameter": asset.parameter,
                            "num": asset.num,
                        }
                    )
        return node_id

    def delete(self, node_id: int) -> None:
        """Remove a node added before, the nodes below it, their data sources and the assets
        no other data source shares (as Tiled's ``delete(recursive=True)`` does)."""
        rows = self._rows
        with self._lock:
            doomed, frontier = set(), [node_id]
            while frontier:
                current = frontier.pop()
                doomed.add(current)
                frontier += [c for (p, _), c in self._children.items() if p == current]
            for key in [k for k, c in self._children.items() if c in doomed]:
                del self._children[key]
            for gone in doomed:
                del rows.nodes[gone]
            sources = {i for i, s in rows.data_sources.items() if s["node_id"] in doomed}
            for gone in sources:
                del rows.data_sources[gone]
            rows.links = [x for x in rows.links if x["data_source_id"] not in sources]
            linked = {x["asset_id"] for x in rows.links}
            rows.assets = {u: a for u, a in rows.assets.items() if a["id"] in linked}
            rows.top = {
                "nodes": max(rows.nodes, default=0),
                "sources": max(rows.data_sources, default=0),
                "assets": max((a["id"] for a in rows.assets.values()), default=0),
            }

    def write(self) -> None:
        """Write every node added, in one transaction."""
        from sqlalchemy import create_engine, insert
        from tiled.catalog import orm
        from tiled.server.connection_pool import json_serializer

        rows = self._rows
        engine = create_engine(sqlite_url(self.db), json_serializer=json_serializer)
        try:
            with engine.begin() as conn:
                # Ids follow creation, parents first: the closure trigger finds each
                # parent's rows.
                structures = [{"id": k, "structure": v} for k, v in rows.structures.items()]
                for table, values in (
                    (orm.Node, list(rows.nodes.values())),
                    (orm.Structure, structures),
                    (orm.DataSource, list(rows.data_sources.values())),
                    (orm.Asset, list(rows.assets.values())),
                    (orm.DataSourceAssetAssociation, rows.links),
                ):
                    if values:
                        conn.execute(insert(table), values)
        finally:
            engine.dispose()
