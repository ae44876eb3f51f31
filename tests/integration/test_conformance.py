"""Conformance fixtures, the catalog schema file of the spec, and an independent producer."""

from __future__ import annotations

import ast
import contextlib
import filecmp
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from conformance import catalog_schema, tiled_rules
from conformance.generate import tree_size
from tiled_archive.cli import commands
from tiled_archive.reader import open_archive
from tiled_archive.rules import codes
from tiled_archive.validator import fixture_cases, validate

from ..conftest import PUBLISHED_REPORT_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "conformance" / "fixtures"
PRODUCER = ROOT / "conformance" / "independent_producer.py"
CASES = fixture_cases(FIXTURES)


# -- Fixtures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}[{c.form}]" for c in CASES])
def test_fixture_gives_exactly_its_codes(case):
    report = validate(case.archive)
    assert report.codes == case.expected, [str(p) for p in report.problems]
    jsonschema.validate(report.to_json(), PUBLISHED_REPORT_SCHEMA)


CATALOG_ROW_CASES = [c for c in CASES if c.expected in ({"TA-E502"}, {"TA-E506"})]


@pytest.mark.parametrize("case", CATALOG_ROW_CASES, ids=[c.name for c in CATALOG_ROW_CASES])
def test_open_refuses_catalog_rows_tiled_cannot_load(case):
    """What validate reports as TA-E502 or TA-E506 is refused when an archive opens for
    serving, before Tiled loads a row (each of these crashed a request inside Tiled)."""
    from tiled_archive.rules.problems import ArchiveError

    with open_archive(case.archive) as archive, pytest.raises(ArchiveError) as raised:
        archive.data_sources()
    assert {raised.value.code} == case.expected
    first = raised.value.problem.message.split(" (and 1 more;")[0]
    assert first in {p.message for p in validate(case.archive).problems}


def test_every_rule_has_its_fixtures():
    """One invalid fixture per MUST and one warning fixture per SHOULD, named after its code;
    valid fixtures expect nothing, warning fixtures only warnings."""
    named = {}
    for case in CASES:
        named.setdefault(case.fixture.name.split("-")[0], set()).update(case.expected)
        kind = case.fixture.parent.name
        if kind == "valid":
            assert not case.expected, case.name
        elif kind == "warning":
            assert case.expected and all(c.startswith("TA-W") for c in case.expected), case.name
        else:
            assert any(c.startswith("TA-E") for c in case.expected), case.name
    rules = {c for c in codes.CODES if not c.startswith("TA-E9")}
    produced = set().union(*(case.expected for case in CASES))
    assert produced == rules, rules ^ produced
    for rule in rules:
        assert rule in named.get(rule.removeprefix("TA-"), set()), f"no fixture named {rule}"
    assert {"minimal", "real-data"} <= {c.fixture.name for c in CASES if not c.expected}


def test_structure_ids_are_computed_as_tiled_computes_them():
    """The id is opaque to readers (spec appendix A), but every fixture's catalog uses the
    recommended computation, Tiled's own, on the stored structure decoded."""
    from tiled.catalog.utils import compute_structure_id

    catalogs = sorted(FIXTURES.glob("valid/*/archive/catalog.db"))
    assert catalogs
    for db in catalogs:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            for structure_id, text in conn.execute("SELECT id, structure FROM structures"):
                assert structure_id == compute_structure_id(json.loads(text)), db


def assert_same_tree(expected: Path, actual: Path) -> None:
    """Same names, same bytes, same symbolic links (compared as links, never followed)."""

    def listing(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): (
                f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else "file"
            )
            for p in root.rglob("*")
        }

    assert listing(expected) == listing(actual)
    for name, kind in listing(expected).items():
        if kind == "file":
            assert filecmp.cmp(expected / name, actual / name, shallow=False), name


def test_conformance_command(tmp_path):
    tree = tmp_path / "fixtures"
    for name in ("valid/minimal", "invalid/E305-missing-payload-file"):
        shutil.copytree(FIXTURES / name, tree / name, symlinks=True)
    archive = FIXTURES / "valid" / "minimal" / "archive.zip"
    runner = CliRunner()
    passed = runner.invoke(
        commands.app, ["conformance", str(tree), str(archive)], terminal_width=200
    )
    assert passed.exit_code == 0, passed.output
    assert passed.output.count("pass") == 3 and "VALID" in passed.output
    expected = tree / "invalid" / "E305-missing-payload-file" / "expected.json"
    document = json.loads(expected.read_text())
    document["expected"]["directory"] = ["TA-E305"]
    expected.write_text(json.dumps(document))
    failed = runner.invoke(commands.app, ["conformance", str(tree)], terminal_width=200)
    assert failed.exit_code == 1 and "FAIL" in failed.output


# -- The catalog schema of the spec ------------------------------------------------------------


def test_catalog_schema_file_is_what_tiled_creates(tmp_path):
    """The spec's SQL file (and its copy in the package) equals a fresh dump of Tiled's own
    init, and running it gives Tiled's catalog; so does the writer's catalog creation."""
    from tiled.catalog import from_uri

    from tiled_archive.catalog.db_file import init_catalog
    from tiled_archive.rules.names import TILED_SCHEMA_REVISIONS

    revision = TILED_SCHEMA_REVISIONS[0]
    schema_file = catalog_schema.schema_file(revision)
    tiled_db, ours, writers = tmp_path / "tiled.db", tmp_path / "ours.db", tmp_path / "w.db"
    from_uri(f"sqlite:///{tiled_db}", init_if_not_exists=True)
    assert catalog_schema.dump(tiled_db) == schema_file.read_text(encoding="utf-8")
    assert catalog_schema.package_copy(revision).read_bytes() == schema_file.read_bytes()
    with contextlib.closing(sqlite3.connect(ours)) as conn:
        conn.executescript(schema_file.read_text(encoding="utf-8"))
    assert catalog_contents(ours) == catalog_contents(tiled_db)
    init_catalog(writers, [])
    assert catalog_contents(writers) == catalog_contents(tiled_db)
    assert catalog_schema.dump(writers) == catalog_schema.dump(tiled_db)


def test_tiled_rules_file_is_what_tiled_has():
    """The packaged rules the catalog checks take from Tiled (so as not to import its server
    stack) are what the installed Tiled's ORM, models and mimetype registry give."""
    from tiled_archive.rules.names import TILED_SCHEMA_REVISIONS

    packaged = tiled_rules.package_file(TILED_SCHEMA_REVISIONS[0]).read_text(encoding="utf-8")
    assert tiled_rules.render(tiled_rules.derive()) == packaged
    assert tiled_rules.main(["--check"]) == 0


def catalog_contents(db: Path) -> tuple[set, dict]:
    """Schema objects and the rows of every table, but creation times and the full-text index
    (whose content depends on Tiled's creation order)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        schema = set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        rows = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            if table.startswith("metadata_fts5"):
                continue
            columns = [
                row[1]
                for row in conn.execute(f'PRAGMA table_info("{table}")')
                if row[4] != "CURRENT_TIMESTAMP"
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows[table] = sorted(conn.execute(f'SELECT {listed} FROM "{table}"'), key=repr)
    return schema, rows


# -- An independent producer -------------------------------------------------------------------


def test_independent_producer_uses_only_the_standard_library():
    tree = ast.parse(PRODUCER.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert not imported & {"tiled", "tiled_archive", "numpy", "pyarrow"}


def test_a_1_1_archive_serves_its_roots_metadata_and_records_provenance():
    import tiled_archive

    fixture = FIXTURES / "valid" / "root-and-provenance" / "archive"
    with tiled_archive.open(fixture) as client:
        assert dict(client.metadata) == {"facility": "beamline 7"}
        assert [(s.name, s.version) for s in client.specs] == [("xdi", "1")]
    bag_info = (fixture / "bag-info.txt").read_text()
    assert "External-Identifier: https://tiled.example.org/api/v1//scans\n" in bag_info
    assert "External-Description: Downloaded from Tiled 0.2.20 at 2026-12-02T00:00:00Z" in bag_info


def test_a_zip_as_info_zip_writes_it_is_read_by_its_utf8_names():
    """No member sets the UTF-8 flag, and other members than mimetype carry Info-ZIP's extra
    fields: names are UTF-8 whatever the flag says, and Tiled reads the table (its node's key
    is still `table`: keys and file names are independent)."""
    import tiled_archive

    fixture = FIXTURES / "valid" / "info-zip-names-and-extra-fields" / "archive.zip"
    with open_archive(fixture) as archive:
        assert "data/sample/gr\u00f6\u00dfe.csv" in archive.payload()
    with tiled_archive.open(fixture) as client:
        assert list(client["sample"]["table"].read()["y"]) == [2.5, 3.5, 4.5]


@pytest.mark.slow  # a long process-level check: make test-slow
def test_generate_reproduces_the_fixtures(tmp_path, monkeypatch):
    """conformance/generate.py (its generate(), as its command runs it) writes the committed
    fixtures byte for byte."""
    from conformance import generate
    from tiled_archive.writer import DOS_EPOCH

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(DOS_EPOCH))  # as generate.main pins it
    out = tmp_path / "fixtures"
    generate.generate(out)
    assert_same_tree(FIXTURES, out)
    # One fixture per rule, ~80 kB on average (Tiled's schema alone is 57 kB of 512-byte
    # pages; a ragged array's DuckDB file, 45 kB): the suite grows by rules, not by bytes.
    fixtures = [path for path in FIXTURES.glob("*/*") if path.is_dir()]
    assert tree_size(FIXTURES) < 90_000 * len(fixtures)
