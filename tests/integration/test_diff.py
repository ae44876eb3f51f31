"""`diff` between archives of any forms (no server): what it names, its exit status and JSON;
an archive made by `create` cannot be updated (TA-E915); `info` shows an archive's history."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tiled_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.writer import create, reseal

from ..conftest import cli


@pytest.fixture
def two_states(tmp_path) -> tuple[Path, Path]:
    """One tree archived twice (a ZIP, then a directory): between them an array's values
    changed, one file removed, one added, and a node's file moved (same bytes)."""
    source = tmp_path / "src" / "runs"
    source.mkdir(parents=True)
    np.save(source / "a.npy", np.arange(10))
    np.save(source / "b.npy", np.ones(5))
    np.save(source / "same.npy", np.zeros(4))
    create(tmp_path / "before.zip", [source])
    np.save(source / "a.npy", np.arange(10) * 2)
    (source / "b.npy").unlink()
    np.save(source / "c.npy", np.ones(3))
    create(tmp_path / "after", [source])
    return tmp_path / "before.zip", tmp_path / "after"


def test_diff_names_each_change_and_exits_1(two_states):
    before, after = two_states
    found = tiled_archive.diff(before, after)
    assert found.added == ("runs/c",) and found.removed == ("runs/b",)
    assert [(c.path, c.kinds) for c in found.changed] == [("runs/a", ("data",))]
    assert found.counts == (4, 4)

    shown = cli("diff", before, after)
    assert shown.returncode == 1, shown.stderr
    assert shown.stdout.splitlines() == ["+ runs/c", "- runs/b", "~ runs/a: data (its file)"]
    assert "1 added, 1 removed, 1 changed" in shown.stderr
    as_json = json.loads(cli("diff", "--json", after, before).stdout)
    assert as_json["added"] == ["runs/b"] and as_json["removed"] == ["runs/c"]
    assert as_json["changed"] == [{"node": "runs/a", "changed": ["data"], "files": ["data_uri"]}]


def test_the_same_content_in_other_forms_is_the_same(two_states, tmp_path):
    _, after = two_states
    assert cli("pack", "-q", after, tmp_path / "after.zip").returncode == 0
    same = cli("diff", after, tmp_path / "after.zip")
    assert same.returncode == 0 and same.stdout == "", same.stderr
    assert "0 added, 0 removed, 0 changed" in same.stderr


def test_metadata_keys_are_named(two_states, tmp_path):
    _, after = two_states
    edited = tmp_path / "edited"
    shutil.copytree(after, edited)
    import sqlite3

    with sqlite3.connect(edited / "catalog.db") as conn:
        conn.execute(
            "UPDATE nodes SET metadata = json_set(metadata, '$.sample', 'Si') WHERE key = 'a'"
        )
    reseal(edited)
    found = tiled_archive.diff(after, edited)
    assert [(c.path, c.kinds, c.metadata_keys) for c in found.changed] == [
        ("runs/a", ("metadata",), ("sample",))
    ]
    assert cli("diff", after, edited).stdout.strip() == "~ runs/a: metadata (sample)"


def test_an_unreadable_archive_exits_2(two_states, tmp_path):
    before, _ = two_states
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    failed = cli("diff", before, tmp_path / "junk.zip")
    assert failed.returncode == 2 and "TA-E100" in failed.stderr


def test_an_archive_not_downloaded_cannot_be_updated(two_states):
    before, _ = two_states
    with pytest.raises(ArchiveError, match="TA-E915"):
        tiled_archive.update(before)
    refused = cli("update", before)
    assert refused.returncode == 1 and "TA-E915" in refused.stderr


def test_a_catalog_whose_nodes_form_a_cycle_is_refused_not_a_traceback(two_states, tmp_path):
    _, after = two_states
    looped = tmp_path / "looped"
    shutil.copytree(after, looped)
    import sqlite3

    with sqlite3.connect(looped / "catalog.db") as conn:
        (runs,) = conn.execute("SELECT id FROM nodes WHERE key = 'runs'").fetchone()
        (child,) = conn.execute("SELECT id FROM nodes WHERE key = 'a'").fetchone()
        conn.execute("UPDATE nodes SET parent = ? WHERE id = ?", (child, runs))
    reseal(looped)
    refused = cli("diff", after, looped)
    assert refused.returncode == 2 and "TA-E5" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def _with_provenance(archive: Path, tmp_path: Path, server: str) -> Path:
    from tiled_archive.reader import open_archive

    copy = tmp_path / "with-provenance"
    shutil.copytree(archive, copy)
    with open_archive(copy) as opened:
        manifest = opened.manifest
    provenance = {"server": server, "node": "/", "queries": []}
    extra = {**manifest.extra, "provenance": provenance}
    reseal(copy, dataclasses.replace(manifest, extra=extra))
    return copy


@pytest.mark.parametrize("server", ["http://[::1", "file:///etc/passwd", "http://u:p@host/"])
def test_a_provenance_that_names_no_usable_server_is_refused(two_states, tmp_path, server):
    _, after = two_states
    with pytest.raises(ArchiveError, match="TA-E915"):
        tiled_archive.update(_with_provenance(after, tmp_path, server))


def test_an_archive_whose_name_says_another_form_is_refused(two_states, tmp_path):
    before, _ = two_states
    unnamed = tmp_path / "no-suffix"
    shutil.copy(before, unnamed)
    with pytest.raises(ArchiveError, match="TA-E915.*other form"):
        tiled_archive.update(unnamed)
