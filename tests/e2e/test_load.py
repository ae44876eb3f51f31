"""`load`: an archive into a Tiled catalog (SQLite, and a real PostgreSQL server), served by
stock `tiled serve catalog` exactly as the archive serves it; all or nothing on failure."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import free_port, serving, stock_tiled_client
from tiled_archive.validator import validate
from tiled_archive.writer import convert, create, create_from_catalog
from tiled_archive.writer.load import load

from ..conftest import catalog_uri, cli, tree_digests
from ..nodes import assert_exact, listing
from ..servers import serve_pyobject

TILED = Path(sys.executable).parent / "tiled"


def stock_server(uri: str, loaded: Any) -> contextlib.AbstractContextManager:
    """What stock `tiled serve catalog` serves with the command the load printed (Tiled's own
    CLI code builds the app; in-process), the password the displayed URI hides put back."""
    arguments = [*loaded.serve_command()[2:], "--public"]
    arguments[1] = uri
    return stock_tiled_client(*arguments)


# Each tree and each backend in make test; the other two pairs under make test-slow.
@pytest.mark.parametrize(
    ("tree", "backend"),
    [
        ("files", "sqlite"),
        ("memory", "postgresql"),
        pytest.param("files", "postgresql", marks=pytest.mark.slow),
        pytest.param("memory", "sqlite", marks=pytest.mark.slow),
    ],
)
def test_stock_tiled_serves_a_loaded_archive_as_the_archive(
    family_archives, tmp_path, request, backend, tree
):
    uri = catalog_uri(backend, tmp_path, request)
    data = tmp_path / "data"
    loaded = load(family_archives[tree], uri, data, at=f"archives/{tree}")
    with tiled_archive.open(family_archives[tree]) as archive:
        assert loaded.nodes >= len(list(archive))
        with stock_server(uri, loaded) as client:
            copy = client["archives"][tree]
            assert dict(copy.metadata) == dict(archive.metadata)  # the archive's root's
            assert list(listing(copy)) == list(listing(archive))
            for key in listing(archive):
                assert_exact(listing(archive)[key], listing(copy)[key], f"/{key}/")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_several_archives_load_side_by_side_and_collisions_change_nothing(
    family_archives, tmp_path, request, backend
):
    uri = catalog_uri(backend, tmp_path, request)
    data = tmp_path / "data"
    load(family_archives["files"], uri, data, at="a")
    load(family_archives["memory"], uri, data, at="a/b")  # under a node that holds others
    before = tree_digests(data), node_keys(uri)
    with pytest.raises(ArchiveError) as refused:
        load(family_archives["files"], uri, data, at="a")
    assert refused.value.code == "TA-E920" and "'scan'" in str(refused.value)
    with pytest.raises(ArchiveError) as refused:
        load(family_archives["files"], uri, data, at="a/scan/baseline")  # a table, not a folder
    assert refused.value.code == "TA-E920" and "not a container" in str(refused.value)
    assert (tree_digests(data), node_keys(uri)) == before


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_node_of_the_archive_becomes_exactly_the_node_at(
    family_archives, tmp_path, request, backend
):
    """With ``node``, that node of the archive is the node ``at`` itself, with its metadata,
    and nothing else of the archive is loaded, rows or files: a download of the server's node
    ``raw`` loaded at ``runs/raw`` was ``runs/raw/raw``, the archive's root being at
    ``runs/raw``. A container and a Zarr store (a directory asset: a folder of files)."""
    uri = catalog_uri(backend, tmp_path, request)
    data, archive = tmp_path / "data", family_archives["files"]
    loaded = load(archive, uri, data, at="runs/raw", node="scan/nested")
    assert (loaded.at, loaded.node) == ("runs/raw", "scan/nested")
    assert loaded.nodes == 4  # nested, nested/single, nested/deeper, nested/deeper/table_values
    load(archive, uri, data, at="runs/v3", node="/scan/v3array/")
    with tiled_archive.open(archive) as original, stock_server(uri, loaded) as client:
        assert list(client) == ["runs"] and list(client["runs"]) == ["raw", "v3"]
        assert_exact(original["scan"]["nested"], client["runs"]["raw"], "/runs/raw/")
        assert_exact(original["scan"]["v3array"], client["runs"]["v3"], "/runs/v3/")
    files = tree_digests(archive / "data")
    assert tree_digests(data) == {
        **{f"runs/raw/{p}": d for p, d in files.items() if p.startswith("scan/nested/")},
        **{f"runs/v3/{p}": d for p, d in files.items() if p.startswith("scan/v3array.zarr/")},
    }


def test_the_command_loads_one_node_of_the_archive_as_the_node_at(family_archives, tmp_path):
    db, data = tmp_path / "catalog.db", tmp_path / "data"
    command = ["load", family_archives["files"], db, "--data", data, "--at", "runs/raw"]
    done = cli(*command, "--node", "scan/nested")
    assert done.returncode == 0, done.stderr
    assert f"into sqlite+aiosqlite:///{db} as /runs/raw (the archive's scan/nested)" in done.stderr
    keys = node_keys(f"sqlite:///{db}")
    again = cli(*command, "--node", "scan/nested")
    assert again.returncode == 1 and "TA-E920" in again.stderr and "'raw'" in again.stderr
    missing = cli(*command, "--node", "scan/nothing")
    assert missing.returncode == 1 and "TA-E900 scan/nothing" in missing.stderr
    nowhere = cli(*command[:-2], "--node", "scan/nested")
    assert nowhere.returncode == 2 and "Invalid value for --at" in nowhere.stderr
    assert node_keys(f"sqlite:///{db}") == keys and "scan" not in keys and "raw" in keys


def test_a_file_that_holds_other_bytes_is_not_overwritten(family_archives, tmp_path):
    uri, data = f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "data"
    target = data / "x" / "scan" / "baseline.csv"
    target.parent.mkdir(parents=True)
    target.write_text("mine\n")
    with pytest.raises(ArchiveError) as refused:
        load(family_archives["files"], uri, data, at="x")
    assert refused.value.code == "TA-E921" and str(target) in str(refused.value)
    assert target.read_text() == "mine\n"
    assert sorted(p.name for p in data.rglob("*")) == ["baseline.csv", "scan", "x"]


def test_a_failed_transaction_leaves_the_catalog_and_the_data_folder_as_they_were(
    family_archives, tmp_path
):
    """The database refuses the data sources (a trigger of the user's), after the files are
    copied and the nodes inserted: no row stays and no copied file either."""
    db, data = tmp_path / "catalog.db", tmp_path / "data"
    load(family_archives["memory"], f"sqlite:///{db}", data, at="first")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON data_sources"
            " BEGIN SELECT RAISE(ABORT, 'refused by the site'); END"
        )
    before = tree_digests(data), node_keys(f"sqlite:///{db}")
    with pytest.raises(ArchiveError) as refused:
        load(family_archives["files"], f"sqlite:///{db}", data, at="second")
    assert refused.value.code == "TA-E922" and "refused by the site" in str(refused.value)
    assert (tree_digests(data), node_keys(f"sqlite:///{db}")) == before
    assert not (data / "second").exists()


def test_a_new_postgresql_catalog_is_made_by_tileds_init(
    family_archives, postgres_database, tmp_path
):
    loaded = load(family_archives["memory"], postgres_database, tmp_path / "data", at="m")
    assert loaded.catalog.startswith("postgresql+asyncpg://") and "***" in loaded.catalog
    assert "m" in node_keys(postgres_database)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://nobody:wrong@127.0.0.1:1/none", "TA-E922"),
        ("mysql+nothing://x/y", "TA-E922"),
    ],
)
def test_an_unusable_catalog_is_a_coded_error(family_archives, tmp_path, uri, expected):
    with pytest.raises(ArchiveError) as refused:
        load(family_archives["files"], uri, tmp_path / "data", at="x")
    assert refused.value.code == expected
    assert "wrong" not in str(refused.value)  # no password in the message
    assert not (tmp_path / "data").exists()


def test_the_command_prints_what_it_loaded_and_the_stock_command(family_archives, tmp_path):
    db, data = tmp_path / "catalog.db", tmp_path / "data"
    command = ["load", family_archives["memory"], db, "--data", data, "--at", "m"]
    done = cli(*command)
    assert done.returncode == 0, done.stderr
    assert "loaded " in done.stderr and "under /m" in done.stderr
    assert "serve it with: tiled serve catalog sqlite+aiosqlite:///" in done.stderr
    assert " -w duckdb://" in done.stderr  # the ragged array's storage
    again = cli(*command)
    assert again.returncode == 1 and "TA-E920" in again.stderr and "Traceback" not in again.stderr


def node_keys(uri: str) -> list[str]:
    """Every node's key in the catalog at ``uri``, sorted (through SQLAlchemy, any backend)."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.utils import ensure_specified_sql_driver

    async def keys() -> list[str]:
        engine = create_async_engine(ensure_specified_sql_driver(uri))
        try:
            async with engine.connect() as conn:
                return sorted((await conn.execute(text("SELECT key FROM nodes"))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(keys())


def test_the_files_are_the_archives_bytes(family_archives, tmp_path):
    loaded = load(family_archives["files"], f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "d")
    source = tree_digests(family_archives["files"] / "data")
    assert tree_digests(tmp_path / "d") == source
    assert loaded.files == len(source) and loaded.reused_files == 0


def test_a_zip_loads_like_its_directory(family_archives, tmp_path):
    convert(family_archives["files"], tmp_path / "files.zip", quiet=True)
    loaded = load(tmp_path / "files.zip", f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "d")
    assert tree_digests(tmp_path / "d") == tree_digests(family_archives["files"] / "data")
    assert loaded.nodes > 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("tree", ["files", "memory"])
def test_a_loaded_catalog_archives_back_to_the_archive(
    family_archives, tmp_path, request, backend, tree
):
    """The way back: `create --catalog URI --node PATH` of what `load` put there is the archive
    again, node by node (PostgreSQL's JSONB reorders metadata keys: compared as dicts)."""
    uri = catalog_uri(backend, tmp_path, request)
    load(family_archives[tree], uri, tmp_path / "data", at=f"lab/{tree}")
    back = tmp_path / "back.zip"
    create_from_catalog(back, uri, node=f"lab/{tree}")
    assert validate(back).errors == []
    with tiled_archive.open(family_archives[tree]) as original, tiled_archive.open(back) as copy:
        below = copy["lab"][tree]
        assert list(listing(below)) == list(listing(original))
        for key in listing(original):
            assert_exact(listing(original)[key], listing(below)[key], f"/{key}/")
    with open_archive(back) as archive, open_archive(family_archives[tree]) as source:
        assert {e.sha256 for e in archive.manifest.files} == {
            e.sha256 for e in source.manifest.files
        }


def test_an_unknown_node_of_a_postgresql_catalog_is_a_coded_error(postgres_catalog, tmp_path):
    with pytest.raises(ArchiveError) as refused:
        create_from_catalog(tmp_path / "x.zip", postgres_catalog, node="no/such")
    assert refused.value.code == "TA-E900" and not (tmp_path / "x.zip").exists()


@pytest.mark.slow  # ~15 s; loading into PostgreSQL is tested here besides: make test-slow
def test_download_goes_straight_into_a_postgresql_catalog(postgres_catalog, tmp_path):
    """`download(..., catalog=, data_dir=)` and `tiled-archive download --catalog`: the server's
    nodes, exactly, from stock `tiled serve catalog` on what was loaded."""
    from tiled.client import from_uri

    data = tmp_path / "data"
    with serve_pyobject("tests.trees:in_memory", tmp_path / "server.log") as url:
        server = from_uri(url)
        returned = tiled_archive.download(
            server, catalog=postgres_catalog, data_dir=data, at="lab", cache_dir=tmp_path / "c"
        )
        assert returned.path == data.absolute() and returned.nodes > 1
        # A node of the server becomes the node at `at` itself, not `at/<its key>`.
        key = next(iter(listing(server)))
        one = tmp_path / "one.db"
        tiled_archive.download(
            server[key], catalog=str(one), data_dir=tmp_path / "one", at="runs/first",
            cache_dir=tmp_path / "c",
        )  # fmt: skip
        copy = tiled_archive.from_catalog(str(one), readable_storage=[tmp_path / "one"])
        assert_exact(listing(server)[key], listing(copy["runs"])["first"], f"/{key}/")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiled-archive-")]
        done = cli(
            "download", url, "--catalog", tmp_path / "cli.db", "--data", tmp_path / "cli",
            "--at", "m", "--cache-dir", tmp_path / "c",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "under /m" in done.stderr and "serve it with: tiled serve catalog" in done.stderr
        port = free_port()
        command = [TILED, "serve", "catalog", postgres_catalog, "-r", data, "--public"]
        command += [arg for uri in duckdb_storages(data) for arg in ("-w", uri)]
        with serving([*command, "--port", port], port, log=tmp_path / "stock.log") as stock:
            copy = from_uri(stock.url)["lab"]
            for key in listing(server):
                assert_exact(listing(server)[key], listing(copy)[key], f"/{key}/")


def duckdb_storages(data: Path) -> list[str]:
    from tiled.utils import ensure_uri

    return [ensure_uri(f"duckdb:///{path}") for path in sorted(data.rglob("*.duckdb"))]


@pytest.mark.parametrize("at", ["../outside", "a/./b", "a\\b"])
def test_a_node_path_cannot_lead_files_out_of_the_data_folder(family_archives, tmp_path, at):
    with pytest.raises(ValueError, match="not a node path"):
        load(family_archives["files"], f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "d", at=at)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_structure_ids_of_an_archive_are_not_trusted(tmp_path):
    """An archive's structure ids are opaque (spec appendix A): one that gives its structure the
    id another archive's structure has must not change what that archive's node loads as."""
    import numpy as np

    from tiled_archive.writer import reseal

    for name, array in (("honest", np.zeros((3, 3))), ("crafted", np.zeros(2, dtype="int8"))):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / f"{name}.npy", array)
        create(tmp_path / f"{name}-archive", [tmp_path / name / f"{name}.npy"], quiet=True)
    honest_db = tmp_path / "honest-archive" / "catalog.db"
    with contextlib.closing(sqlite3.connect(honest_db)) as conn:
        (taken,) = conn.execute("SELECT id FROM structures").fetchone()
    crafted_db = tmp_path / "crafted-archive" / "catalog.db"
    with contextlib.closing(sqlite3.connect(crafted_db)) as conn, conn:
        conn.execute("UPDATE structures SET id = ?", (taken,))
        conn.execute("UPDATE data_sources SET structure_id = ?", (taken,))
    reseal(tmp_path / "crafted-archive")
    assert validate(tmp_path / "crafted-archive").errors == []
    db, data = tmp_path / "target.db", tmp_path / "data"
    load(tmp_path / "crafted-archive", str(db), data, at="first")
    load(tmp_path / "honest-archive", str(db), data, at="second")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        shapes = dict(
            conn.execute(
                "SELECT n.key, json_extract(s.structure, '$.shape') FROM nodes n JOIN"
                " data_sources d ON d.node_id = n.id JOIN structures s ON s.id = d.structure_id"
            ).fetchall()
        )
    assert shapes == {"crafted": "[2]", "honest": "[3,3]"}


def test_loaded_structure_ids_are_tileds(family_archives, tmp_path):
    from tiled.catalog.utils import compute_structure_id

    db = tmp_path / "c.db"
    load(family_archives["memory"], str(db), tmp_path / "d")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, structure FROM structures").fetchall()
    assert rows and all(i == compute_structure_id(json.loads(text)) for i, text in rows)


def test_a_symbolic_link_in_the_data_folder_does_not_lead_files_elsewhere(
    family_archives, tmp_path
):
    outside, data = tmp_path / "outside", tmp_path / "data"
    outside.mkdir()
    data.mkdir()
    (data / "x").symlink_to(outside)
    with pytest.raises(ArchiveError) as refused:
        load(family_archives["files"], str(tmp_path / "c.db"), data, at="x")
    assert refused.value.code == "TA-E921" and list(outside.iterdir()) == []
    assert not (tmp_path / "c.db").exists()  # the catalog this load made is gone again


def test_the_archive_is_never_the_target(family_archives, tmp_path):
    archive = family_archives["files"]
    with pytest.raises(ValueError, match="inside the archive"):
        load(archive, str(archive / "catalog.db"), tmp_path / "d")
    with pytest.raises(ValueError, match="inside the archive"):
        load(archive, str(tmp_path / "c.db"), archive / "data")
    assert validate(archive).errors == []


def test_tiled_writes_on_after_a_load_into_postgresql(family_archives, postgres_catalog, tmp_path):
    """The ids a load allocated are behind PostgreSQL's sequences: the next row Tiled inserts
    (here, as Tiled's ORM would, without an id) gets a fresh one."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.utils import ensure_specified_sql_driver

    load(family_archives["memory"], postgres_catalog, tmp_path / "data", at="m")

    async def insert_one() -> tuple[int, int]:
        engine = create_async_engine(ensure_specified_sql_driver(postgres_catalog))
        try:
            async with engine.begin() as conn:
                loaded = (await conn.execute(text("SELECT max(id) FROM nodes"))).scalar_one()
                statement = text(
                    "INSERT INTO nodes (parent, key, structure_family, metadata, specs)"
                    " VALUES (0, 'after', 'container', '{}', '[]') RETURNING id"
                )
                return loaded, (await conn.execute(statement)).scalar_one()
        finally:
            await engine.dispose()

    loaded, fresh = asyncio.run(insert_one())
    assert fresh > loaded > 0
