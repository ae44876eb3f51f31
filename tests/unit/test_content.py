"""The pure pieces of the data file checks: the read budget's arithmetic, bounded JSON, the
parameter allow-list (and its table in the spec)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiled_archive.rules.budget import (
    ChunkGrid,
    ensure_grids_open,
    ensure_within,
    selection_shape,
)
from tiled_archive.rules.catalog_rows import ROWS_PER_RULE, DataSourceRow, catalog_problems
from tiled_archive.rules.formats import parameter_problems, parameters_table
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.rules.schemas import MAX_JSON_DEPTH, JSONTooDeep, json_depth, load_json

SPEC = Path(__file__).resolve().parents[2] / "spec" / "FORMAT.md"

shapes = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)
index = st.one_of(
    st.builds(slice, st.none() | st.integers(-8, 8), st.none() | st.integers(-8, 8),
              st.none() | st.integers(1, 3).flatmap(lambda n: st.sampled_from([n, -n]))),
    st.just(Ellipsis),
    st.none(),
)  # fmt: skip


@given(shapes, st.lists(index, max_size=4))
def test_selection_shape_is_numpys(shape, items):
    """Without allocating anything, the budget computes the shape NumPy gives."""
    selection = tuple(items)
    if sum(item is Ellipsis for item in selection) > 1:
        return
    if sum(item is not None and item is not Ellipsis for item in selection) > len(shape):
        return
    expected = np.empty(shape)[selection].shape
    assert selection_shape(shape, selection) == expected


@given(st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple), st.data())
def test_integer_indices_drop_their_axis(shape, data):
    if 0 in shape:
        return
    at = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    assert selection_shape(shape, at) == np.empty(shape)[at].shape == ()


@given(shapes, st.data(), st.lists(index, max_size=4))
def test_chunks_touched_is_at_least_what_numpy_touches(shape, data, items):
    """The chunks a selection touches, counted without an array, are never fewer than the
    chunks holding an element it selects (counted by marking every element of a real array
    with its chunk's number): a declared grid cannot be read for less than the budget says."""
    selection = tuple(items)
    if sum(item is Ellipsis for item in selection) > 1:
        return
    if sum(item is not None and item is not Ellipsis for item in selection) > len(shape):
        return
    chunks = tuple(data.draw(st.integers(1, max(1, n))) for n in shape)
    grid = ChunkGrid(shape, chunks, touched=1)
    counts = grid.counts()
    numbers = np.zeros(shape, dtype=np.int64)
    for position in np.ndindex(*shape):
        numbers[position] = np.ravel_multi_index(
            tuple(p // c for p, c in zip(position, chunks, strict=True)), counts
        )
    touched = len(np.unique(numbers[selection])) if numbers[selection].size else 0
    assert grid.chunks_touched(selection) >= touched
    assert grid.chunks_touched(None) == int(np.prod(counts))


def test_a_declared_grid_is_refused_before_it_is_opened(monkeypatch):
    grid = ChunkGrid((10**12,), (1,), opened=640)
    with pytest.raises(ArchiveError) as err:
        ensure_grids_open([grid], "data/x.h5", "opening /big")
    assert err.value.code == "TA-E912" and "1000000000000 storage chunks" in str(err.value)
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(10**16))
    ensure_grids_open([grid], "data/x.h5", "opening /big")  # a raised budget lets it open


def test_budget_refuses_over_and_allows_under(monkeypatch):
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", "1000")
    ensure_within(1000, "data/x", "reading")
    with pytest.raises(ArchiveError) as err:
        ensure_within(1001, "data/x", "reading")
    assert err.value.code == "TA-E912" and "1000" in str(err.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    ],
)
def test_deep_json_is_refused_without_recursion(raw):
    with pytest.raises(JSONTooDeep):
        load_json(raw)


def test_json_at_the_limit_and_long_integers():
    assert json_depth(load_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)) == MAX_JSON_DEPTH
    with pytest.raises(ValueError, match="4300 digits"):
        load_json(b"9" * 5000)
    assert json_depth({"a": [1, {"b": []}]}) == 4 and json_depth(7) == 0


def row(mimetype: str, **parameters) -> DataSourceRow:
    return DataSourceRow(1, "node", "array", mimetype, parameters, None, ())


@pytest.mark.parametrize(
    ("mimetype", "parameters", "bad"),
    [
        ("image/tiff", {"data_uri": "file://localhost/etc/passwd"}, ["data_uri"]),
        ("application/x-npy", {"data_uri": "x"}, ["data_uri"]),
        ("text/csv", {"compression": "gzip", "engine": "c"}, ["compression", "engine"]),
        ("application/x-hdf5", {"dataset": "/a/b", "swmr": True, "libver": "latest"}, []),
        ("application/x-hdf5", {"dataset": ["a", "b"], "locking": "best-effort"}, []),
        ("application/x-hdf5", {"dataset": "/a/../b"}, ["dataset"]),
        ("application/x-hdf5", {"swmr": "yes"}, ["swmr"]),
        ("application/x-hdf5", {"filename": "/etc/passwd"}, ["filename"]),
        ("application/x-hdf5", {"dataset": "g/y", "slice": "0", "squeeze": True}, []),
        ("application/x-hdf5", {"slice": "__import__('os')"}, ["slice"]),
        ("text/csv", {"sep": ";"}, []),
        ("text/csv", {"sep": ";;"}, ["sep"]),
    ],
)  # fmt: skip
def test_parameter_allow_list(mimetype, parameters, bad):
    problems = list(parameter_problems(row(mimetype, **parameters)))
    assert all(p.code == "TA-E508" for p in problems)
    assert sorted(key for key in bad) == sorted(
        next(k for k in parameters if repr(k) in p.message) for p in problems
    )


def test_spec_parameter_table_is_the_allow_list():
    assert parameters_table() in SPEC.read_text(encoding="utf-8")


def test_assets_go_to_their_adapter_as_data_uri_or_data_uris():
    from tiled_archive.rules.catalog_rows import AssetRef

    good = AssetRef("data/a.npy", False, "data_uri", None)
    bad = AssetRef("data/b.npy", False, None, None)
    row = DataSourceRow(1, "node", "array", "application/x-npy", {}, None, (good, bad))
    problems = list(parameter_problems(row))
    assert [(p.code, p.path) for p in problems] == [("TA-E508", "data/b.npy")]


@pytest.mark.parametrize(
    ("mimetype", "parameter", "num", "valid"),
    [
        ("application/x-npy", "data_uri", None, True),
        ("application/x-npy", "data_uri", 0, False),  # a list of one: numpy.load fails
        ("image/tiff", "data_uris", 0, False),
        ("text/csv", "data_uris", 0, True),
        ("text/csv", "data_uris", None, True),  # still a list to Tiled
        ("text/csv", "data_uri", None, False),  # CSVAdapter() lacks data_uris
        ("multipart/related;type=image/tiff", "data_uri", None, False),
        ("application/x-parquet", "data_uri", 0, False),
        ("application/x-hdf5", "data_uri", None, True),  # its adapter reads the assets itself
        ("application/x-hdf5", "data_uris", 0, True),
    ],
)
def test_assets_take_the_form_their_adapter_takes(mimetype, parameter, num, valid):
    from tiled_archive.rules.catalog_rows import AssetRef

    asset = AssetRef("data/a", False, parameter, num)
    row = DataSourceRow(1, "node", "array", mimetype, {}, None, (asset,))
    problems = list(parameter_problems(row))
    assert (problems == []) == valid, problems
    assert all(p.code == "TA-E508" for p in problems)


def test_spec_asset_forms_table_is_the_code():
    from tiled_archive.rules.formats import asset_forms_table

    assert asset_forms_table() in SPEC.read_text(encoding="utf-8")


# -- Catalog rows Tiled can load (spec §3) ------------------------------------------------------

MINIMAL = Path(__file__).resolve().parents[2] / "conformance/fixtures/valid/minimal/archive"


def catalog_copy(tmp_path: Path, *statements: str) -> sqlite3.Connection:
    path = tmp_path / "catalog.db"
    shutil.copyfile(MINIMAL / "catalog.db", path)
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    return conn


def test_a_valid_catalog_has_no_row_problems(tmp_path):
    assert catalog_problems(catalog_copy(tmp_path)) == []


def test_bytes_split_across_columns_are_not_utf8(tmp_path):
    """Each text column is decoded on its own by Tiled: a lead byte ending one column and a
    continuation byte starting the next are two errors, not one 'é'."""
    conn = catalog_copy(
        tmp_path,
        "UPDATE assets SET hash_type = CAST(X'736861323536c3' AS TEXT),"
        " hash_content = CAST(X'a9' AS TEXT) WHERE id = 1",
    )
    messages = [p.message for p in catalog_problems(conn)]
    assert [m.split(":")[:2] for m in messages] == [["asset 1", " hash_type"]] + [
        ["asset 1", " hash_content"]
    ], messages


def test_rows_reported_per_rule_are_bounded(tmp_path):
    copies = "INSERT INTO structures (id, structure) SELECT id || '-' || n, structure FROM"
    conn = catalog_copy(
        tmp_path,
        "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 500)"
        f" {copies} structures, k",
        "UPDATE structures SET structure = 'not json'",
    )
    problems = catalog_problems(conn)
    assert len(problems) == ROWS_PER_RULE
    assert all(p.code == "TA-E506" and "structure must be JSON text" in p.message for p in problems)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("1980-01-01 00:00:00", True),  # SQLite's CURRENT_TIMESTAMP
        ("1980-01-01 00:00:00.000", True),  # strftime('%Y-%m-%d %H:%M:%f')
        ("1980-01-01 00:00:00.000000", True),  # SQLAlchemy
        ("2024-02-29 23:59:59.999999", True),
        ("1980-01-01 00:00:00+00:00", False),  # an offset: read as another kind of time
        ("1980-01-01T00:00:00Z", False),  # Python 3.11 reads it, 3.10 does not
        ("1980-01-01T00:00:00", False),
        ("1980-01-01", False),
        ("1980-01-01 00:00", False),
        ("1980-01-01 00:00:00.5", False),  # 3.11 reads it, 3.10 does not
        ("1980-01-01 00:00:00.1234567", False),
        ("1980-02-30 00:00:00", False),
        ("1980-01-01 24:00:00", False),
        ("1980-01-01 00:00:60", False),
        ("0000-01-01 00:00:00", False),
        ("١٩٨٠-01-01 00:00:00", False),  # digits of another script
        ("1980-W01-1 00:00:00", False),
    ],
)
def test_catalog_times_have_one_fixed_grammar(text, valid):
    """The same verdict whatever Python runs the check (datetime.fromisoformat, SQLAlchemy's
    parser for SQLite, reads more on 3.11 than on 3.10); every valid time reads on both."""
    from datetime import datetime

    from tiled_archive.rules.catalog_rows import time_problem

    assert (time_problem(text) is None) == valid, time_problem(text)
    if valid:
        datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("specs", "valid"),
    [
        ('[{"name": "xdi"}]', True),
        ('[{"name": "xdi", "version": "1.0"}]', True),
        ('[{"name": "xdi", "version": null}]', True),
        ('[{"name": 1}]', False),  # Tiled's Spec() would store the number
        ('[{"name": "xdi", "version": 1}]', False),
        ('[{"name": "' + "x" * 256 + '"}]', False),
        ('[{"name": "xdi", "other": 1}]', False),
        ('["xdi"]', False),
        ("[" + ", ".join(['{"name": "a"}'] * 21) + "]", False),
    ],
)
def test_specs_are_tileds_with_their_declared_types(tmp_path, specs, valid):
    conn = catalog_copy(tmp_path, f"UPDATE nodes SET specs = '{specs}' WHERE id = 2")
    problems = catalog_problems(conn)
    assert (problems == []) == valid, problems
    assert all(p.code == "TA-E506" and "specs" in p.message for p in problems)
    assert all(len(p.message) < 120 for p in problems), problems  # a length, not the value


def test_the_root_row_exists_and_no_other_node_lacks_a_parent(tmp_path):
    conn = catalog_copy(tmp_path, "UPDATE nodes SET parent = NULL WHERE id = 3")
    assert [p.message for p in catalog_problems(conn)] == [
        "node 3 ('table'): parent is NULL: only the root (id 0) has none"
    ]
    conn = catalog_copy(tmp_path, "DELETE FROM nodes WHERE id = 0")
    messages = [p.message for p in catalog_problems(conn)]
    assert "no root node (the row of nodes with id 0)" in messages


@pytest.mark.parametrize(
    ("mimetype", "shape", "chunks", "valid"),
    [
        ("application/x-npy", [4, 3], [[4], [3]], True),
        ("application/x-npy", [4, 3], [[2, 2], [3]], False),
        ("application/x-npy", [0], [[0]], True),
        ("image/tiff", [8, 8], [[8], [4, 4]], False),
        ("image/tiff", [8, 8], [[8], [8]], True),
        ("multipart/related;type=image/tiff", [3, 8, 8], [[1, 1, 1], [8], [8]], True),
        ("multipart/related;type=image/tiff", [3, 8, 8], [[3], [8], [8]], True),
        ("multipart/related;type=image/tiff", [3, 8, 8], [[1, 1], [8], [8]], False),
        ("multipart/related;type=application/x-npy", [3, 8], [[1, 1, 1], [4, 4]], False),
    ],
)
def test_npy_and_tiff_chunks_are_the_ones_tiled_serves(mimetype, shape, chunks, valid):
    """Tiled's NPY and TIFF adapters serve block 0 only, the whole file; a sequence's blocks
    are slices of its first dimension."""
    from tiled.structures.array import ArrayStructure, BuiltinDtype

    from tiled_archive.inspectors.npy import chunk_mismatch

    dtype = BuiltinDtype.from_numpy_dtype(np.dtype("uint8"))
    structure = ArrayStructure(data_type=dtype, chunks=chunks, shape=shape)
    assert (chunk_mismatch(structure, mimetype) is None) == valid


def test_spec_column_table_is_tileds_orm():
    from tiled_archive.rules.catalog_rows import columns_table

    assert columns_table() in SPEC.read_text(encoding="utf-8")
