"""``tiled-archive fetch`` of a lazy archive killed at each step of placing a file (fetched
whole into the work folder, then renamed into ``data/``): the archive stays valid (incomplete),
a re-run finishes it, and the killed run's file in the work folder is removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiled_archive.validator import validate

from .conftest import fetch_work

pytestmark = pytest.mark.slow  # a server of its own and killed processes: make test-slow


def cli(*args: str | Path, kill_at: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "TILED_ARCHIVE_KILL_AT": kill_at}
    command = [sys.executable, "-m", "tiled_archive.cli", *map(str, args), "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("point", "node"),
    [
        # A file over 1 MiB is fetched in blocks into a partial file, then renamed.
        ("fetch:received", None),
        ("fetch:placed", None),
        # A small one is fetched whole into the work folder's tmp/, then renamed.
        ("fetch:received", "small"),
    ],
)
def test_a_fetch_killed_while_placing_a_file_is_finished_by_a_rerun(origin, point, node, tmp_path):
    lazy = tmp_path / "a"
    made = cli("download", origin, "-o", lazy, "--lazy")
    assert made.returncode == 0, made.stderr
    killed = cli("fetch", lazy, *(["--node", node] if node else []), kill_at=point)
    assert killed.returncode == -9, killed.stderr
    assert validate(lazy).valid  # incomplete, not damaged
    if point == "fetch:received":
        assert fetch_work(lazy) != []  # the fetched file, never placed: removed below
    again = cli("fetch", lazy)
    assert again.returncode == 0, again.stderr
    report = validate(lazy, complete=True)
    assert report.valid, (report.problems, again.stdout, again.stderr)
    assert fetch_work(lazy) == []
