"""Ragged arrays in an archive: Tiled's DuckDB layout, read read-only and confined, relocated
with Tiled's ``duckdb:`` storage URIs, and refused (with a code, before DuckDB runs anything the
file defines) when the database is not the table Tiled writes.

Downloads of ragged nodes from real servers are in test_download_examples.py; the layout rules'
fixtures in conformance/fixtures (``*ragged*``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tiled_archive
from conformance import generate as fixtures
from tiled_archive.catalog import read_assets
from tiled_archive.content.ragged import chunk_rows
from tiled_archive.reader import open_archive
from tiled_archive.testing import free_port, serving
from tiled_archive.validator import validate
from tiled_archive.writer import convert, relocate, stock_serve_command

ROOT = Path(__file__).resolve().parent.parent
VALID = ROOT / "conformance" / "fixtures" / "valid" / "ragged-duckdb"
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
    from tiled.client import from_uri

    directory = convert(VALID / "archive.zip", tmp_path / "extracted")
    assert codes(directory) == []
    command = stock_serve_command(directory)
    database = directory / fixtures.RAGGED
    assert command[command.index("-w") + 1] == f"duckdb://localhost/{database}"
    port = free_port()
    argv = [str(Path(sys.executable).parent / "tiled"), *command[1:], "--port", port]
    with serving(argv, port, log=tmp_path / "stock.log") as server:
        assert from_uri(server.url)["ragged"].read().tolist() == VALUES
    assert codes(directory) == []  # stock Tiled read the database without changing it

    # Moved, it no longer validates; relocated again, it does (and stock Tiled's -w follows).
    moved = tmp_path / "moved"
    shutil.move(directory, moved)
    assert "TA-E503" in codes(moved)
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
    result = subprocess.run(
        [sys.executable, "-m", "tiled_archive.cli", "extract", VALID / "archive.zip", dest],
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    from tiled_archive.format import ArchiveError

    with pytest.raises(ArchiveError) as raised:
        tiled_archive.open(INVALID / "E508-ragged-table-name" / "archive")
    assert raised.value.code == "TA-E508" and "table_name" in str(raised.value)


def fixtures_codes(name: str) -> list[str]:
    import json

    document = json.loads((INVALID / name / "expected.json").read_text())
    return document["expected"]["directory"]


def test_a_view_cannot_read_a_file_even_if_the_table_check_were_passed(tmp_path):
    """The connection itself refuses file access: a view over read_csv of a file outside."""
    from tiled_archive.content.ragged import connect

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


def test_reads_are_budgeted_by_chunk(tmp_path, monkeypatch):
    """Two chunks of 1,000 float64 values: a whole read costs both, a slice of rows in one
    chunk only that chunk (counted from the stored list lengths, before DuckDB reads them)."""
    from tiled.client.utils import ClientError

    rows = [
        f"(1, 0, {list(range(0, 1001, 1000))}, {[0.5] * 1000}, 0)",
        f"(1, 0, {[0, 0, 1000]}, {[1.5] * 1000}, 1)",
    ]
    database = fixtures.duckdb_bytes(
        f'CREATE TABLE "{fixtures.RAGGED_TABLE}" ({fixtures.RAGGED_COLUMNS})',
        f'INSERT INTO "{fixtures.RAGGED_TABLE}" VALUES {", ".join(rows)}',
    )
    structure = 'json(\'{"shape": [3, null], "size": 2000, "chunks": [[1, 2], null]}\')'
    tree = fixtures.with_file(
        fixtures.read_tree(VALID / "archive"),
        fixtures.RAGGED,
        database,
        f"UPDATE structures SET structure = json_patch(structure, {structure}) "
        "WHERE structure LIKE '%\"size\":3%'",
    )
    fixtures.write_tree(tree, tmp_path / "two-chunks")
    assert codes(tmp_path / "two-chunks") == []
    # 1,000 values and 2 offsets in chunk 0; 1,000 values and 3 offsets in chunk 1.
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(8 * 1003 + 8))
    with tiled_archive.open(tmp_path / "two-chunks") as root:
        assert root["ragged"][0:1].tolist() == [[0.5] * 1000]
        assert root["ragged"][1:3].tolist() == [[], [1.5] * 1000]
        with pytest.raises(ClientError, match="TA-E912"):
            root["ragged"].read()


@given(
    chunks=st.lists(st.integers(0, 5), min_size=1, max_size=6),
    start=st.none() | st.integers(-12, 12),
    stop=st.none() | st.integers(-12, 12),
    step=st.none() | st.integers(-3, 3).filter(lambda n: n != 0),
    index=st.none() | st.integers(-12, 12),
)
def test_chunk_rows_are_the_chunks_holding_the_rows_a_slice_selects(
    chunks, start, stop, step, index
):
    total = sum(chunks)
    owner = [i for i, n in enumerate(chunks) for _ in range(n)]
    if index is not None:
        if not -total <= index < total:
            return  # Tiled refuses an index out of range before reading
        selection, rows = (index,), [index % total]
    else:
        selection = (slice(start, stop, step),)
        rows = list(range(*selection[0].indices(total)))
    needed = {owner[row] for row in rows}
    selected = set(chunk_rows(chunks, selection))
    assert needed <= selected
    # Only chunks within the span of the selected rows are read.
    if rows:
        assert all(
            min(owner[r] for r in rows) <= c <= max(owner[r] for r in rows) or chunks[c] == 0
            for c in selected
        )
    else:
        assert selected == set()
