"""A download killed just after a file was indexed in the cache and before the file was
renamed into it (``cache:indexed``): the re-run fetches every other file and not that one,
which its partial file holds whole (one first-byte request asks whether it is still the
server's version)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tiled_archive
from tiled_archive.testing import CountingProxy

from ..servers import catalog_with_writer

pytestmark = pytest.mark.slow  # a server of its own and a killed process: make test-slow


def test_a_file_received_whole_before_a_kill_is_not_fetched_again(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    rng = np.random.default_rng(3)
    names = ["alpha", "beta", "gamma", "delta"]  # not numbered: Tiled groups those
    for name in names:
        np.save(files / f"{name}.npy", rng.random(2**17))  # 1 MiB each
    size = (files / "alpha.npy").stat().st_size
    cache = tmp_path / "cache"
    (tmp_path / "origin").mkdir()
    with catalog_with_writer(tmp_path / "origin", files) as (_, port):
        url = f"http://127.0.0.1:{port}/api/v1"
        env = {**os.environ, "TILED_ARCHIVE_KILL_AT": "cache:indexed"}
        command = [sys.executable, "-m", "tiled_archive.cli", "download", url]
        command += ["-o", str(tmp_path / "a.zip"), "--cache-dir", str(cache), "--quiet"]
        command += ["--workers", "1"]  # one file in flight: the one killed at its indexing
        killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, killed.stderr
        assert not (tmp_path / "a.zip").exists()
        with CountingProxy(port) as proxy, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tiled.client import from_uri

            done = tiled_archive.download(
                from_uri(f"{proxy.url}/api/v1"), tmp_path / "a.zip", cache_dir=cache
            )
    # Three files came again, the fourth from its whole partial file (one byte asked).
    assert done.fetched_bytes == 3 * size, (done.fetched_bytes, size)
    assert done.reused_bytes >= size
    assert proxy.received < 3 * size + 512 * 1024
    with tiled_archive.open(done) as archive:
        assert sorted(archive) == sorted(names)
