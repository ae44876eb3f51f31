"""Registration without Tiled's server gives the catalog Tiled's own server path gives.

The writer registers files with Tiled's ``register()`` over :class:`CatalogNode` (Tiled's
catalog adapter, called as the server's register route calls it) instead of a client of an
in-process app. Here the same trees are registered both ways and the catalogs compared, row
by row, but for creation times.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiled_archive.catalog.db_file import init_catalog
from tiled_archive.catalog.registration import build_catalog, resolve_prefix


def through_tiled_server(db: Path, sources: dict[str, Path]) -> None:
    """Tiled's registration through a client of Tiled's own app (what the writer did before)."""
    from tiled.client import Context, from_context
    from tiled.client.register import register
    from tiled.server.app import build_app

    readable = sorted({str(path.resolve().parent) for path in sources.values()})
    with Context.from_app(build_app(init_catalog(db, readable))) as context:
        client = from_context(context)
        for name in sorted(sources):
            path = sources[name].resolve()
            asyncio.run(
                register(
                    client,
                    path,
                    prefix=resolve_prefix(name, path),
                    walkers=["tiled_archive.catalog.registration:sorted_walker"],
                    overwrite=False,
                )
            )


def catalog_rows(db: Path) -> dict[str, list]:
    """Every table's rows but the times (and SQLite's full-text shadow tables)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith("metadata_fts5")
        ]
        rows = {}
        for table in tables:
            columns = [
                row[1]
                for row in conn.execute(f'PRAGMA table_info("{table}")')
                if not row[1].startswith("time_")
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows[table] = sorted(conn.execute(f'SELECT {listed} FROM "{table}"'), key=repr)
    return rows


@pytest.fixture(scope="module")
def awkward_tree(tmp_path_factory, sample_tree) -> dict[str, Path]:
    """The sample tree (every format) plus what registration treats specially: a key collision
    (``scan.csv`` and ``scan.parquet``), a file with no adapter (skipped), a numbered NPY
    sequence, a single file and a Zarr store given as top-level sources."""
    root = tmp_path_factory.mktemp("registration")
    tree = shutil.copytree(sample_tree, root / "scan")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_csv(tree / "clash.csv", index=False)
    frame.to_parquet(tree / "clash.parquet")
    (tree / "notes.weird").write_text("no adapter for this")
    for i in range(3):
        np.save(tree / f"seq_{i}.npy", np.full((2, 2), i))
    single = root / "lonely.npy"
    np.save(single, np.arange(3))
    return {"scan": tree, "lonely": single, "store": tree / "v3array.zarr"}


def test_catalog_equals_what_tiled_server_registration_writes(tmp_path, awkward_tree):
    ours, tileds = tmp_path / "ours.db", tmp_path / "tiled.db"
    report = build_catalog(ours, awkward_tree)
    through_tiled_server(tileds, awkward_tree)
    expected = catalog_rows(tileds)
    assert len(expected["nodes"]) > 15 and len(expected["data_sources"]) > 10
    assert catalog_rows(ours) == expected
    assert any("clash" in line for line in report.collisions)
    assert any("notes.weird" in line for line in report.skipped)


# -- NewNodes against Tiled's create_node --------------------------------------------------------


#: Tiled's own array structure for a 1-d int64 array of length n (its JSON form).
def _array_structure(length: int) -> dict:
    return {
        "data_type": {"endianness": "little", "kind": "i", "itemsize": 8, "dt_units": None},
        "chunks": [[length]],
        "shape": [length],
        "dims": None,
        "resizable": False,
    }


_node = st.fixed_dictionaries(
    {
        "parent": st.integers(0, 40),
        "key": st.sampled_from(["a", "b", "c", "scan", "é", "x y"]),
        "container": st.booleans(),
        "metadata": st.dictionaries(st.sampled_from(["n", "t"]), st.integers(-3, 3), max_size=2),
        "specs": st.lists(st.sampled_from(["xdi", "NXentry"]), max_size=2, unique=True),
        "length": st.integers(1, 3),
        "files": st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True),
        "size": st.none() | st.integers(0, 100),
    }
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(nodes=st.lists(_node, max_size=12))
def test_new_nodes_writes_the_rows_tileds_create_node_writes(tmp_path_factory, nodes):
    """Random trees (collisions, shared assets and structures, multi-file data sources): the
    rows NewNodes writes are the rows Tiled's catalog adapter writes, ids included."""
    from tiled.structures.core import Spec, StructureFamily
    from tiled.structures.data_source import Asset, DataSource

    from tiled_archive.catalog.node_rows import Collision, NewNodes

    folder = tmp_path_factory.mktemp("rows")
    ours, tileds = folder / "ours.db", folder / "tiled.db"

    def described(node: dict) -> tuple:
        if node["container"]:
            return StructureFamily.container, []
        assets = [
            Asset(f"file://localhost/data/f{n}.npy", False, "data_uris", i, size=node["size"])
            for i, n in enumerate(node["files"])
        ]
        source = DataSource(
            structure_family=StructureFamily.array,
            structure=_array_structure(node["length"]),
            mimetype="multipart/related;type=image/tiff",
            assets=assets,
            management="external",
        )
        return StructureFamily.array, [source]

    async def through_tiled() -> list:
        from tiled.catalog.adapter import Collision as TiledCollision

        root = init_catalog(tileds, [])
        await root.startup()
        made: dict[int, object] = {0: root}
        ids = []
        try:
            for node in nodes:
                parent = made.get(node["parent"] if node["parent"] in made else 0)
                family, sources = described(node)
                try:
                    child = await parent.create_node(
                        structure_family=family,
                        metadata=node["metadata"],
                        key=node["key"],
                        specs=[Spec(name) for name in node["specs"]],
                        data_sources=sources,
                    )
                except TiledCollision:
                    ids.append(None)
                    continue
                made[child.node.id] = child
                ids.append(child.node.id)
        finally:
            await root.shutdown()
        return ids

    tiled_ids = asyncio.run(through_tiled())
    from tiled_archive.catalog.db_file import create_catalog_file

    create_catalog_file(ours)
    new = NewNodes(ours)
    made = {0}
    our_ids = []
    for node in nodes:
        parent = node["parent"] if node["parent"] in made else 0
        family, sources = described(node)
        try:
            child = new.add(
                parent,
                node["key"],
                family,
                node["metadata"],
                [Spec(n) for n in node["specs"]],
                sources,
            )
        except Collision:
            our_ids.append(None)
            continue
        made.add(child)
        our_ids.append(child)
    new.write()
    assert our_ids == tiled_ids
    assert catalog_rows(ours) == catalog_rows(tileds)
