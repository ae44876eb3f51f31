"""Killed runs (kill -9 at named points, ``TILED_ARCHIVE_KILL_AT``) of the commands that write:
the destination is absent or whole, the source unchanged, a re-run finishes, and what the
killed run left behind (its partial output beside the destination, its scratch folder in
``$TMPDIR``, a partial copy, a catalog without its schema) is removed by the re-run, which
says so in one line, or by ``tiled-archive clean``; nothing of anyone else's is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiled_archive.files.work import is_stale, owner
from tiled_archive.reader import open_archive
from tiled_archive.validator import validate

SLOW = pytest.mark.slow


def run(*args: str | Path, kill_at: str = "", tmp: Path) -> subprocess.CompletedProcess:
    """The command in a process of its own, with its own ``$TMPDIR``."""
    env = {**os.environ, "TILED_ARCHIVE_KILL_AT": kill_at, "TMPDIR": str(tmp)}
    command = [sys.executable, "-m", "tiled_archive.cli", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def ours(folder: Path) -> list[str]:
    """Work names of ours in ``folder`` (partial outputs and copies, scratch folders)."""
    return sorted(
        name
        for name in os.listdir(folder)
        if name.endswith(".partial") or name.startswith(("tiled-archive-", ".tiled-archive-"))
    )


def deep_ours(folder: Path) -> list[str]:
    return sorted(
        str(Path(root, name).relative_to(folder))
        for root, dirs, files in os.walk(folder)
        for name in dirs + files
        if name.endswith(".partial")
    )


@pytest.fixture
def tmp(tmp_path) -> Path:
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


@pytest.mark.parametrize(
    "command",
    [
        # test_clean_removes_only_stale_work_of_ours kills a create in make test too.
        pytest.param(("create", "{out}/a.zip", "{tree}"), id="create-zip", marks=SLOW),
        # The same staging, other commands: under make test-slow.
        pytest.param(("create", "{out}/a", "{tree}"), id="create-dir", marks=SLOW),
        pytest.param(("pack", "{archives[dir]}", "{out}/a.zip"), id="pack", marks=SLOW),
        pytest.param(("extract", "{archives[zip]}", "{out}/a"), id="extract", marks=SLOW),
    ],
)
def test_a_write_killed_before_its_rename_leaves_debris_the_rerun_removes(
    command, sample_tree, sample_archives, tmp_path, tmp
):
    out = tmp_path / "out"
    out.mkdir()
    args = [part.format(tree=sample_tree, out=out, archives=sample_archives) for part in command]
    dest = Path(args[1] if args[0] == "create" else args[-1])
    killed = run(*args, "--quiet", kill_at="write:staged", tmp=tmp)
    assert killed.returncode == -9, killed.stderr
    assert not dest.exists()
    left = ours(out)
    assert len(left) == 1 and left[0].startswith(f".{dest.name}.") and is_stale(left[0])
    done = run(*args, "--quiet", tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert (
        "removed 1 partial output(s) of earlier runs that were stopped" in done.stdout + done.stderr
    )
    assert ours(out) == [dest.name] if dest.name.endswith(".partial") else ours(out) == []
    assert ours(tmp) == []
    assert validate(dest).valid


@pytest.mark.slow
def test_a_load_killed_while_copying_or_making_its_catalog_reruns_and_leaves_nothing(
    sample_archives, tmp_path, tmp
):
    catalog, data = tmp_path / "catalog.db", tmp_path / "data"
    for point in ("load:catalog", "load:copied"):
        killed = run(
            "load", sample_archives["zip"], catalog, "--data", data, kill_at=point, tmp=tmp
        )
        assert killed.returncode == -9, (point, killed.stderr)
        # A catalog is whole or absent: never one without its schema.
        assert not catalog.exists() or point == "load:copied", point
    # Simulate a copy killed mid-write (the point above is between files).
    with open_archive(sample_archives["zip"]) as archive:
        first = archive.manifest.files[0].path
    target = data / first.removeprefix("data/")
    partial = target.parent / f".{target.name}.{'0' * 8}-1-1-dead.partial"  # another machine's
    mine = (
        target.parent / f".{target.name}.{owner().replace(str(os.getpid()), '999999999')}x.partial"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"not ours")
    mine.write_bytes(b"half a copy")
    done = run("load", sample_archives["zip"], catalog, "--data", data, tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert deep_ours(data) == [str(partial.relative_to(data))]  # only the other machine's
    assert ours(tmp_path) == []


def test_clean_removes_only_stale_work_of_ours(sample_tree, tmp_path, tmp):
    out = tmp_path / "out"
    out.mkdir()
    killed = run("create", out / "a.zip", sample_tree, "--quiet", kill_at="write:staged", tmp=tmp)
    assert killed.returncode == -9
    live = out / f".b.zip.{owner()}live.partial"  # this process is alive: not stale
    live.mkdir()
    stranger = out / ".c.zip.whatever.partial"  # not a name of ours
    stranger.mkdir()
    cleaned = run("clean", out, tmp=tmp)
    assert cleaned.returncode == 0, cleaned.stderr
    # The killed create's partial output beside its destination, and its scratch folder.
    assert "removed 2 stale work items" in cleaned.stderr, cleaned.stderr
    assert ours(out) == sorted([live.name, stranger.name]) and ours(tmp) == []


@pytest.mark.slow
@pytest.mark.postgres
def test_a_load_into_postgresql_killed_while_copying_reruns_and_loads_once(
    sample_archives, postgres_catalog, tmp_path, tmp
):
    """PostgreSQL: the catalog rows are one transaction, so a load killed while it copies
    files leaves no node (nothing half-loaded); the re-run loads every node once and leaves
    no partial copy."""
    from ..e2e.test_load import node_keys

    data = tmp_path / "data"
    args = ("load", sample_archives["zip"], postgres_catalog, "--data", data)
    killed = run(*args, kill_at="load:copied", tmp=tmp)
    assert killed.returncode == -9, killed.stderr
    assert node_keys(postgres_catalog) == [""]  # the root only
    done = run(*args, tmp=tmp)
    assert done.returncode == 0, done.stderr
    clean = tmp_path / "clean.db"  # the same archive loaded once, into SQLite
    once = run("load", sample_archives["zip"], clean, "--data", tmp_path / "d2", tmp=tmp)
    assert once.returncode == 0, once.stderr
    assert node_keys(postgres_catalog) == node_keys(f"sqlite:///{clean}") != []
    assert not [n for _, _, names in os.walk(data) for n in names if n.endswith(".partial")]
