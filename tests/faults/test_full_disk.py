"""A full disk (a small tmpfs, mounted for the test) under each command that writes: a coded
error (TA-E906) naming the file and the space left, no traceback, and nothing left behind on
the full filesystem."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SLOW = pytest.mark.slow


def run(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp)}
    command = [sys.executable, "-m", "tiled_archive.cli", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (root only: else the test
    skips, saying why)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def full(tmp_path) -> Iterator[Path]:
    """A 64 kB tmpfs: too small for any of the sample archives."""
    with mounted_tmpfs(tmp_path / "full", "64k") as where:
        yield where


def assert_coded(
    result: subprocess.CompletedProcess,
    full: Path,
    allowed: Callable[[str], bool] = lambda path: False,
) -> None:
    """Exit status 1, TA-E906 with the space left, no traceback, nothing left in ``full``
    but what ``allowed`` accepts (relative paths: a cache's own index and whole files)."""
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert "TA-E906" in said and "Traceback" not in said, said
    assert "free of" in said, said  # the space left on that filesystem
    left = [
        str(Path(root, name).relative_to(full))
        for root, dirs, files in os.walk(full)
        for name in dirs + files
    ]
    assert [path for path in left if not allowed(path)] == [], left  # nothing left behind


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("create", "{full}/a.zip", "{tree}"), id="create-zip"),
        # Under make test-slow: the same staging, other commands.
        pytest.param(("create", "{full}/a", "{tree}"), id="create-dir", marks=SLOW),
        pytest.param(("pack", "{archives[dir]}", "{full}/a.zip"), id="pack", marks=SLOW),
        pytest.param(("extract", "{archives[zip]}", "{full}/a"), id="extract", marks=SLOW),
        pytest.param(
            ("load", "{archives[zip]}", "{tmp_path}/catalog.db", "--data", "{full}/data"),
            id="load-data",
            marks=SLOW,
        ),
        pytest.param(
            ("load", "{archives[zip]}", "{full}/catalog.db", "--data", "{tmp_path}/data"),
            id="load-catalog",
            marks=SLOW,
        ),
    ],
)
def test_a_full_disk_is_a_coded_error_and_leaves_nothing(
    command, full, sample_tree, sample_archives, tmp_path
):
    args = [
        part.format(full=full, tree=sample_tree, archives=sample_archives, tmp_path=tmp_path)
        for part in command
    ]
    assert_coded(run(*args, "--quiet", tmp=tmp_path), full)


@SLOW
def test_a_full_scratch_folder_is_a_coded_error_and_leaves_nothing(full, sample_tree, tmp_path):
    result = run("create", tmp_path / "a.zip", sample_tree, "--quiet", tmp=full)
    assert_coded(result, full)
    assert not (tmp_path / "a.zip").exists()
