"""The `tiled-archive` command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tiled_archive.reader import open_archive

CLI = [sys.executable, "-m", "tiled_archive.cli"]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def asset_uris(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT data_uri FROM assets")]


def test_create_pack_extract_relocate(sample_tree, tmp_path):
    made = run("create", "--quiet", tmp_path / "a", sample_tree)
    assert made.returncode == 0, made.stderr
    packed = run("pack", "-q", tmp_path / "a", tmp_path / "a.zip")
    assert packed.returncode == 0, packed.stderr
    extracted = run("extract", "-q", tmp_path / "a.zip", tmp_path / "x")
    assert extracted.returncode == 0, extracted.stderr
    assert "tiled serve catalog" in extracted.stderr
    assert all(
        u.startswith(f"file://localhost{(tmp_path / 'x').resolve()}/data/")
        for u in asset_uris(tmp_path / "x" / "catalog.db")
    )

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "x", moved)
    relocated = run("relocate", moved)
    assert relocated.returncode == 0, relocated.stderr
    assert all(
        u.startswith(f"file://localhost{moved.resolve()}/data/")
        for u in asset_uris(moved / "catalog.db")
    )
    with open_archive(moved) as archive:
        archive.catalog_path()  # verified against the updated manifest
    bagit = Path(sys.executable).parent / "bagit.py"
    assert subprocess.run([bagit, "--validate", moved], capture_output=True).returncode == 0


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["create", "{tmp}/out.zip", "{tmp}/missing"], "TA-E900"),
        (["pack", "{tmp}/missing", "{tmp}/out.zip"], "TA-E001"),
        (["extract", "{tmp}/garbage.zip", "{tmp}/out"], "TA-E100"),
        (["pack", "{tmp}", "{tmp}/out.tar"], "TA-E904"),
    ],
)
def test_errors_are_coded_lines_not_tracebacks(tmp_path, args, code):
    (tmp_path / "garbage.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 1
    assert code in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out.zip").exists() and not (tmp_path / "out").exists()
