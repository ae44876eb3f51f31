"""Ragged arrays in an archive: Tiled's DuckDB layout, read read-only and confined, relocated
with Tiled's ``duckdb:`` storage URIs, and refused (with a code, before DuckDB runs anything the
file defines) when the database is not the table Tiled writes.

Downloads of ragged nodes from real servers are in test_download_examples.py; the layout rules'
fixtures in conformance/fixtures (``*ragged*``)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiled_archive
from conformance import generate as fixtures
from tiled_archive.catalog.db_file import read_assets
from tiled_archive.inspectors.ragged import connect
from tiled_archive.reader import open_archive
from tiled_archive.testing import stock_tiled_client
from tiled_archive.validator import validate
from tiled_archive.writer import convert, relocate, stock_serve_command

from ..conftest import cli

ROOT = Path(__file__).resolve().parents[2]
#: Examples of the property tests here: each builds, validates and serves an archive (~1 s);
#: `make fuzz` runs 200.
EXAMPLES = int(os.environ.get("TILED_ARCHIVE_RAGGED_EXAMPLES", "15"))
VALID = ROOT / "conformance" / "fixtures" / "valid" / "ragged-duckdb"
SLICE = VALID.parent / "ragged-written-from-a-slice"
INVALID = ROOT / "conformance" / "fixtures" / "invalid"
VALUES = [[1.5, 2.5], [], [3.5]]


def codes(path: Path) -> list[str]:
    return sorted({p.code for p in validate(path).problems})


def test_a_zip_archive_reads_in_process():
    with tiled_archive.open(VALID / "archive.zip") as root:
        node = root["ragged"]
        assert node.structure_family == "ragged"
        assert node.read().tolist() == VALUES
        assert node[1:].tolist() == VALUES[1:]


def test_extracted_it_is_relocated_with_duckdb_uris_and_stock_tiled_serves_it(tmp_path):

    directory = convert(VALID / "archive.zip", tmp_path / "extracted")
    assert codes(directory) == []
    command = stock_serve_command(directory)
    database = directory / fixtures.RAGGED
    assert command[command.index("-w") + 1] == f"duckdb://localhost/{database}"
    with stock_tiled_client(*command[2:]) as stock:  # Tiled's own CLI code, in-process
        assert stock["ragged"].read().tolist() == VALUES
    assert codes(directory) == []  # stock Tiled read the database without changing it

    # Moved, it is read where it is now, its database included (its duckdb: URI names the
    # old folder: TA-W503); relocated again, the warning goes (and stock Tiled's -w follows).
    moved = tmp_path / "moved"
    shutil.move(directory, moved)
    assert codes(moved) == ["TA-W503"]
    with tiled_archive.open(moved) as root:
        assert root["ragged"].read().tolist() == VALUES
    relocate(moved)
    assert codes(moved) == []
    assert f"duckdb://localhost/{moved / fixtures.RAGGED}" in stock_serve_command(moved)
    with tiled_archive.open(moved) as root:
        assert root["ragged"].read().tolist() == VALUES

    # Packed again, the catalog is back in archive form.
    packed = convert(moved, tmp_path / "again.zip")
    assert codes(packed) == []
    with open_archive(packed) as archive:
        uris = {row.data_uri for row in read_assets(archive.catalog_path())}
    assert fixtures.RAGGED in uris and not any(":" in uri for uri in uris)


def test_the_cli_prints_the_stock_command_with_the_database(tmp_path):
    dest = tmp_path / "out"
    result = cli("extract", VALID / "archive.zip", dest)
    assert result.returncode == 0, result.stderr
    expected = f"-w duckdb://localhost/{dest / fixtures.RAGGED} --public"
    assert expected in result.stderr.replace("\n", " ")


@pytest.mark.parametrize(
    "name",
    [
        "E601-ragged-table-is-a-view",
        "E601-ragged-computed-column",
        "E601-ragged-not-duckdb",
        "E601-ragged-macro-shadows-len",
        "E602-ragged-missing-chunk",
        "E601-ragged-offsets-decrease",
        "E601-ragged-null-values",
        "E602-ragged-offsets-past-data",
    ],
)
def test_a_hostile_database_is_refused_with_its_code_before_duckdb_reads_rows(name):
    from tiled.client.utils import ClientError

    expected = fixtures_codes(name)
    with tiled_archive.open(INVALID / name / "archive") as root:
        assert root["sample"]["array"].read().shape == (4, 3)  # the rest of it reads
        with pytest.raises(ClientError) as raised:
            root["ragged"].read()
    assert raised.value.response.status_code == 422
    assert any(code in str(raised.value) for code in expected), str(raised.value)


def test_a_table_name_that_is_sql_is_refused_at_open():
    from tiled_archive.rules.problems import ArchiveError

    with pytest.raises(ArchiveError) as raised:
        tiled_archive.open(INVALID / "E508-ragged-table-name" / "archive")
    assert raised.value.code == "TA-E508" and "table_name" in str(raised.value)


def fixtures_codes(name: str) -> list[str]:
    import json

    document = json.loads((INVALID / name / "expected.json").read_text())
    return document["expected"]["directory"]


def test_a_view_cannot_read_a_file_even_if_the_table_check_were_passed(tmp_path):
    """The connection itself refuses file access: a view over read_csv of a file outside."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    database = tmp_path / "view.duckdb"
    database.write_bytes(
        fixtures.duckdb_bytes(f"CREATE VIEW leak AS SELECT * FROM read_csv('{secret}')")
    )
    conn = connect(database)
    try:
        with conn.cursor() as cursor, pytest.raises(Exception, match="disabled by configuration"):
            cursor.execute("SELECT * FROM leak")
            cursor.fetchall()
        with conn.cursor() as cursor, pytest.raises(Exception, match="locked"):
            cursor.execute("SET enable_external_access = true")
    finally:
        conn.close()


def test_any_read_costs_the_tables_values_and_its_file(tmp_path, monkeypatch):
    """Two chunks of 1,000 float64 values: DuckDB loads both, and pins the file's blocks, for
    a read of either, so a slice of one chunk costs what a whole read does (counted from
    DuckDB's storage metadata, before any value is loaded)."""
    from tiled.client.utils import ClientError

    rows = [
        f"(1, 0, {list(range(0, 1001, 1000))}, {[0.5] * 1000}, 0)",
        f"(1, 0, {[0, 0, 1000]}, {[1.5] * 1000}, 1)",
    ]
    database = fixtures.duckdb_bytes(
        f'CREATE TABLE "{fixtures.RAGGED_TABLE}" ({fixtures.RAGGED_COLUMNS})',
        f'INSERT INTO "{fixtures.RAGGED_TABLE}" VALUES {", ".join(rows)}',
    )
    structure = json.dumps({"shape": [3, None], "size": 2000, "chunks": [[1, 2], None]})
    tree = fixtures.with_file(
        fixtures.read_tree(VALID / "archive"),
        fixtures.RAGGED,
        database,
        f"UPDATE structures SET structure = json_patch(structure, json('{structure}')) "
        "WHERE structure LIKE '%\"size\":3%'",
    )
    fixtures.write_tree(tree, tmp_path / "two-chunks")
    assert codes(tmp_path / "two-chunks") == []
    # 2,000 values and 5 offsets of 8 bytes, and the file.
    cost = 8 * 2005 + len(database)
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(cost))
    with tiled_archive.open(tmp_path / "two-chunks") as root:
        assert root["ragged"][0:1].tolist() == [[0.5] * 1000]
        assert root["ragged"].read().tolist() == [[0.5] * 1000, [], [1.5] * 1000]
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(cost - 1))
    with (
        tiled_archive.open(tmp_path / "two-chunks") as root,
        pytest.raises(ClientError, match="TA-E912"),
    ):
        root["ragged"][0:1]
    # Over the budget, validate does not load the values to check them.
    assert codes(tmp_path / "two-chunks") == []


def test_a_table_storing_more_than_the_budget_is_not_loaded_to_check_it(tmp_path, monkeypatch):
    """30 million zeros (240 MB of doubles) in a small file (DuckDB compresses constants),
    over a 100 MB budget: nothing is loaded (at 100 million DuckDB would run out of memory),
    validate warns of the ratio, reads are refused."""
    from tiled.client.utils import ClientError

    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", "100000000")
    count = 30_000_000
    database = fixtures.tiled_ragged_table(
        row=f"(1, 0, [0, 0, 0, {count}], (SELECT list(0::DOUBLE) FROM range({count})), 0)"
    )
    assert len(database) < 200_000
    folder = archive_with(database, 3, count, tmp_path / "zeros")
    assert codes(folder) == ["TA-W600"]
    with tiled_archive.open(folder) as root, pytest.raises(ClientError, match="TA-E912"):
        root["ragged"][0:1]


# -- Offsets: what awkward's from_buffers reads, as Tiled stores it ---------------------------


def tiled_stored(array) -> bytes:
    """The DuckDB file Tiled's server keeps when a client writes ``array`` as one chunk: the
    request body deserialized as the server does, then written by Tiled's RaggedSQLAdapter."""
    import tempfile
    from types import SimpleNamespace

    from tiled.adapters.ragged import RaggedSQLAdapter
    from tiled.serialization.ragged import from_zipped_buffers, to_zipped_buffers
    from tiled.storage import acquire_storage, parse_storage, release_storage
    from tiled.structures.data_source import DataSource
    from tiled.structures.ragged import RaggedStructure

    structure = RaggedStructure.from_array(array)
    body = to_zipped_buffers("application/zip", array, {})
    with tempfile.TemporaryDirectory() as work:
        path = Path(work, "ragged.duckdb")
        storage = acquire_storage(parse_storage(f"duckdb:///{path}"))
        try:
            source = RaggedSQLAdapter.init_storage(
                storage,
                DataSource(structure_family="ragged", structure=structure, mimetype="x"),
            )
            assert source.parameters == {"table_name": fixtures.RAGGED_TABLE, "dataset_id": 1}
            writer = RaggedSQLAdapter.from_catalog(source, SimpleNamespace(metadata_={}, specs=[]))
            writer.write_block(from_zipped_buffers(body, structure), (0,))
        finally:
            storage.dispose()
            release_storage(storage)
        return path.read_bytes()


def archive_with(database: bytes, rows: int, size: int, folder: Path) -> Path:
    """The valid ragged fixture with ``database`` for a float64 array of ``rows`` rows (one
    chunk) holding ``size`` values."""
    structure = json.dumps({"shape": [rows, None], "size": size, "chunks": [[rows], None]})
    fixtures.write_tree(
        fixtures.with_file(
            fixtures.read_tree(VALID / "archive"),
            fixtures.RAGGED,
            database,
            f"UPDATE structures SET structure = json_patch(structure, json('{structure}')) "
            "WHERE structure LIKE '%\"size\":3%'",
        ),
        folder,
    )
    return folder


@settings(max_examples=max(EXAMPLES // 2, 6), deadline=None)
@given(
    rows=st.lists(st.lists(st.floats(-1e6, 1e6), max_size=3), min_size=2, max_size=5),
    start=st.integers(0, 4),
)
def test_an_array_written_from_a_slice_validates_and_reads_as_written(
    tmp_path_factory, rows, start
):
    """Tiled keeps the values before a written slice and offsets that start past 0."""
    import ragged

    start = min(start, len(rows) - 1)
    written = ragged.array(rows, dtype="float64")[start:]
    folder = archive_with(
        tiled_stored(written), len(rows) - start, int(written.size), tmp_path_factory.mktemp("s")
    )
    assert codes(folder) == []
    with tiled_archive.open(folder) as root:
        assert root["ragged"].read().tolist() == rows[start:]


def rows_of(database: bytes, folder: Path) -> list[tuple]:
    path = folder / "rows.duckdb"
    path.write_bytes(database)
    with contextlib.closing(connect(path)) as conn, conn.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{fixtures.RAGGED_TABLE}"')
        return cursor.fetchall()


def test_the_slice_fixture_holds_the_rows_tiled_stores_for_a_written_slice(tmp_path):
    import ragged

    stored = tiled_stored(ragged.array([[0.5], [1.5, 2.5], [], [3.5]])[1:])
    fixture = (SLICE / "archive" / fixtures.RAGGED).read_bytes()
    assert (
        rows_of(stored, tmp_path)
        == rows_of(fixture, tmp_path)
        == [(1, 0, [1, 3, 3, 4], [0.5, 1.5, 2.5, 3.5], 0)]
    )
    with tiled_archive.open(SLICE / "archive.zip") as root:
        assert root["ragged"].read().tolist() == VALUES


@st.composite
def stored_chunks(draw) -> tuple[list | None, list | None]:
    """A chunk's stored offsets and values: anything (NULLs, decreasing, negative, past the
    data), or offsets that never decrease with about as many values as they end at. Values
    are quarters: DuckDB parses a literal such as 4.4629434339434 as a DECIMAL, then rounds it
    to another double."""
    quarters = st.integers(0, 40).map(lambda n: n / 4)
    if draw(st.booleans()):
        items = st.none() | st.integers(-4, 7)
        return draw(st.none() | st.lists(items, max_size=6)), draw(
            st.none() | st.lists(st.none() | quarters, max_size=6)
        )
    offsets = list(itertools.accumulate(draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))))
    count = max(0, offsets[-1] + draw(st.sampled_from([0, 0, 0, -1, 1])))
    return offsets, draw(st.lists(quarters, min_size=count, max_size=count))


# 15 examples here took 8-16 s: make test runs 6 (make fuzz sets 200, and runs them all).
STORED_EXAMPLES = EXAMPLES if "TILED_ARCHIVE_RAGGED_EXAMPLES" in os.environ else 6


@settings(max_examples=STORED_EXAMPLES, deadline=None)
@given(chunk=stored_chunks())
def test_stored_offsets_and_values_are_refused_or_read_as_awkward_reads_them(
    tmp_path_factory, chunk
):
    """Never a silent wrong answer: whatever the table holds for an array of 3 rows, either
    validate refuses it (TA-E601/TA-E602) or it reads as from_buffers reads the buffers, and
    they are valid awkward buffers."""
    import awkward
    import numpy as np
    from tiled.structures.ragged import RaggedStructure

    offsets, values = chunk

    def sql(items):
        listed = ", ".join("NULL" if item is None else repr(item) for item in items or ())
        return "NULL" if items is None else f"[{listed}]"

    row = f"(1, 0, {sql(offsets)}::BIGINT[], {sql(values)}::DOUBLE[], 0)"
    reached = (offsets[-1] - offsets[0]) if offsets and None not in offsets else 0
    folder = archive_with(
        fixtures.tiled_ragged_table(row=row),
        3,
        max(reached, 0),
        tmp_path_factory.mktemp("m"),
    )
    found = codes(folder)
    if found:
        assert set(found) <= {"TA-E601", "TA-E602"}, found
        return
    form = RaggedStructure.from_json(fixtures.RAGGED_STRUCTURE).awkward_form
    buffers = {"node0-offsets": np.array(offsets), "node1-data": np.array(values, dtype="f8")}
    expected = awkward.from_buffers(form, 3, buffers)
    assert awkward.validity_error(expected) == ""
    with tiled_archive.open(folder) as root:
        assert root["ragged"].read().tolist() == expected.tolist()
