"""`update` and `diff` against stock `tiled serve catalog` (a subprocess), bytes counted on the
wire by a proxy: after a node is added, one deleted, a client-written array's values changed
in place, another node's metadata changed and a registered file rewritten at the same size,
an update of a ZIP, a directory and a lazy archive (the last two under `make test-slow`) names
each change, moves about the changed bytes, and equals a fresh download node by node; a dry
run writes nothing; a server that cannot be reached leaves the archive as it was (TA-E911); a
process killed at each step of an update leaves the previous archive valid, and a re-run
finishes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tiled_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import CountingProxy
from tiled_archive.validator import validate

from ..conftest import cli
from ..servers import catalog_with_writer

MiB = 1 << 20


@dataclass
class Origin:
    """A stock server on ``port`` over ``root``, and an in-process Tiled client of the same
    catalog that changes it (what a beamline's writer does while the server runs)."""

    port: int
    root: Path
    writer: Any


@contextlib.contextmanager
def origin_server(sample_tree: Path, root: Path) -> Iterator[Origin]:
    import dask.array
    import h5py

    files = root / "files"
    shutil.copytree(sample_tree, files / "scan")
    (files / "h5").mkdir()
    rng = np.random.default_rng(7)
    with h5py.File(files / "h5" / "big.h5", "w") as f:
        f.create_dataset("frames", data=rng.random((4, 256, 256)), chunks=(1, 256, 256))
    with h5py.File(files / "h5" / "kept.h5", "w") as f:  # never changes
        f.create_dataset("frames", data=rng.random((4, 256, 256)))
    with catalog_with_writer(root, files) as (client, port):
        with warnings.catch_warnings():  # Tiled's deprecations of the writes below
            warnings.simplefilter("ignore")
            written = client.create_container("written", metadata={"kind": "client"})
            written.write_array(dask.array.arange(40.0, chunks=7), key="uneven")
            written.write_array(np.ones((64, 64)), key="plain", metadata={"v": 1})
            written.write_dataframe(pd.DataFrame({"a": [1, 2, 3]}), key="table")
        yield Origin(port, root, client)


def change_the_origin(origin: Origin) -> None:
    """One change of each kind: a node added, one removed, a client-written array's values
    changed (same shape), a node's metadata changed, a registered file rewritten in place at
    the same size."""
    writer = origin.writer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer["written"].write_array(np.full(5, 3.0), key="added")
        writer["written"].delete_contents("table", external_only=False)
        writer["written"]["uneven"].write(np.arange(40.0) * 2)
        writer["written"]["plain"].replace_metadata({"v": 2, "note": "recalibrated"})
    big = origin.root / "files" / "h5" / "big.h5"
    stat = big.stat()
    with open(big, "r+b") as f:  # a byte of the last frame's data, same size
        f.seek(stat.st_size - 100)
        byte = f.read(1)
        f.seek(stat.st_size - 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(big, (stat.st_atime, stat.st_mtime + 5))


def _client(url: str):
    from tiled.client import from_uri

    return from_uri(f"{url}/api/v1")


@pytest.fixture
def origin(sample_tree, tmp_path) -> Iterator[Origin]:
    """A server of the test's own (the test changes it)."""
    with origin_server(sample_tree, tmp_path / "origin") as running:
        yield running


FORMS = [
    "a.zip",
    pytest.param("a", marks=pytest.mark.slow),
    pytest.param("lazy", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("form", FORMS)
def test_update_moves_the_changes_names_them_and_equals_a_fresh_download(origin, tmp_path, form):
    archive = tmp_path / form
    lazy = form == "lazy"
    with CountingProxy(origin.port) as proxy:
        tiled_archive.download(_client(proxy.url), archive, lazy=lazy)
        if lazy:
            with tiled_archive.open(archive) as opened:  # one file of the lazy one present
                opened["scan/baseline"].read()
        change_the_origin(origin)

        manifest = _manifest_of(archive)
        before = proxy.received
        dry_run = cli("update", "--dry-run", "--json", archive)
        assert dry_run.returncode == 0, dry_run.stderr
        dry = json.loads(dry_run.stdout)
        assert _manifest_of(archive) == manifest and not dry["written"]
        assert proxy.received - before < 200_000, proxy.received - before  # no payload

        before = proxy.received
        result = tiled_archive.update(archive)
        moved = proxy.received - before
        fresh = tiled_archive.download(
            _client(proxy.url), tmp_path / f"fresh-{form}", lazy=lazy, probe=lazy
        )
    found = result.differences
    assert result.written
    assert found.added == ("written/added",), found
    assert found.removed == ("written/table",), found
    kinds = {change.path: change.kinds for change in found.changed}
    assert kinds["written/plain"] == ("metadata",)
    assert {c.path: c.metadata_keys for c in found.changed}["written/plain"] == ("note", "v")
    assert "data" in kinds["written/uneven"]
    assert dry["added"] == list(found.added) and dry["removed"] == list(found.removed)
    if not lazy:  # downloaded without --probe: h5/big's validators were never asked
        assert "data" in kinds["h5/big"], kinds
        assert [c["node"] for c in dry["changed"]] == [c.path for c in found.changed]
    assert tiled_archive.diff(archive, fresh).same
    report = validate(archive)
    assert report.valid, report.problems
    history = json.loads(_manifest_of(archive))["history"]
    assert len(history) == 1 and history[0]["added"] == 1 and history[0]["removed"] == 1
    shown = cli("info", archive)
    assert "updated" in shown.stdout and "+1 -1 ~" in shown.stdout, shown.stdout

    # The changed files (the rewritten HDF5, the array's chunks, the added array) and the
    # catalog's listing: not the files that did not change.
    sizes = {e["path"]: e["size"] for e in json.loads(_manifest_of(fresh.path))["files"]}
    changed = sum(
        size
        for path, size in sizes.items()
        if "big.h5" in path or "uneven" in path or "added" in path
    )
    assert sum(sizes.values()) - changed > MiB  # unchanged, and not moved:
    if lazy:
        assert moved < 300_000, moved  # a lazy archive fetches no payload
    else:
        assert moved < changed + 300_000, (moved, changed)
        assert result.fetched_bytes <= changed

    # Its server gone (the proxy it came through closed): TA-E911, the archive untouched.
    kept = _manifest_of(archive)
    with pytest.raises(ArchiveError, match="TA-E911"):
        tiled_archive.update(archive)
    assert _manifest_of(archive) == kept


def _manifest_of(path: Path) -> bytes:
    if path.is_dir():
        return (path / "tiled-archive.json").read_bytes()
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read("tiled-archive.json")


def _update_process(archive: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TILED_ARCHIVE_KILL_AT": kill_at or ""}
    command = [sys.executable, "-m", "tiled_archive.cli", "update", str(archive), "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["a.zip", "a"])
def test_an_update_killed_at_any_step_leaves_the_old_archive_and_a_rerun_finishes(
    origin, tmp_path, form
):
    with CountingProxy(origin.port) as proxy:
        server = _client(proxy.url)
        archive = tiled_archive.download(server, tmp_path / form)
        old = tiled_archive.download(server, tmp_path / ("old-" + form))
        change_the_origin(origin)
        fresh = tiled_archive.download(_client(proxy.url), tmp_path / ("fresh-" + form))
        for point in ("download:file", "update:compared", "write:staged"):
            killed = _update_process(archive.path, point)
            assert killed.returncode == -9, (point, killed.stderr)
            assert validate(archive.path).valid, point
            assert tiled_archive.diff(old, archive.path).same, point  # as it was
        killed = _update_process(archive.path, "write:replaced")  # the new one is in place
        assert killed.returncode == -9, killed.stderr
        assert validate(archive.path).valid and tiled_archive.diff(fresh, archive.path).same
        done = _update_process(archive.path, None)
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stderr
    assert validate(archive.path).valid and tiled_archive.diff(fresh, archive.path).same
    # What the killed runs staged beside the archive is gone (the re-runs removed it).
    assert [name for name in os.listdir(tmp_path) if name.endswith(".partial")] == []
