"""Two runs at once: two ``download`` processes of the same node into one cache (each file
fetched and checked under a per-file lock), and two ``fetch`` processes of one lazy archive.
Both finish, their archives are valid and hold the same files, and nothing of ours is left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiled_archive.validator import validate

from .conftest import fetch_work

pytestmark = pytest.mark.slow  # a server of its own: make test-slow


def started(*args: str | Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tiled_archive.cli", *map(str, args), "--quiet"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr


def test_two_downloads_into_one_cache_at_once(origin, tmp_path):
    cache = tmp_path / "cache"
    runs = [
        started("download", origin, "-o", tmp_path / name, "--cache-dir", cache)
        for name in ("a.zip", "b")
    ]
    for run in runs:
        finished(run)
    a, b = validate(tmp_path / "a.zip"), validate(tmp_path / "b")
    assert a.valid and b.valid, (a.problems, b.problems)
    assert not [n for _, _, names in os.walk(cache) for n in names if "partial" in n]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]


def test_two_fetches_of_one_lazy_archive_at_once(origin, tmp_path):
    lazy = tmp_path / "a"
    made = subprocess.run(
        [sys.executable, "-m", "tiled_archive.cli", "download", origin, "-o", lazy, "--lazy"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    runs = [started("fetch", lazy) for _ in range(2)]
    for run in runs:
        finished(run)
    report = validate(lazy, complete=True)
    assert report.valid, report.problems
    assert fetch_work(lazy) == []
