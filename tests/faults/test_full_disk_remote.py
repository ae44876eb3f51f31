"""A full disk under what fetches from a server: ``download`` to a folder, to a ZIP and into a
full cache, ``fetch`` of a lazy archive, and reads through ``tiled_archive.open`` of a lazy
archive and ``browse`` whose files cannot be kept. Each is a coded error (TA-E906) naming the
file and the space left, with no traceback, and leaves nothing of ours on the full
filesystem; a read that could not keep its file reads again once there is room."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FILE_BYTES, fetch_work
from .test_full_disk import assert_coded, mounted_tmpfs

pytestmark = pytest.mark.slow  # a server of its own: make test-slow


def in_the_cache(path: str) -> bool:
    """The cache's own folders and index, and whole files it keeps: not partial ones."""
    return path.startswith("cache") and not path.startswith("cache/partial/")


def cli(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp)}
    command = [sys.executable, "-m", "tiled_archive.cli", *map(str, args), "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(("-o", "{full}/a.zip", "--cache-dir", "{tmp}/cache"), id="zip"),
        pytest.param(("-o", "{full}/a", "--cache-dir", "{tmp}/cache"), id="folder"),
        pytest.param(("-o", "{tmp}/a.zip", "--cache-dir", "{full}/cache"), id="full-cache"),
        pytest.param(("-o", "{full}/a", "--lazy", "--cache-dir", "{tmp}/cache"), id="lazy-folder"),
    ],
)
def test_a_download_onto_a_full_disk_is_coded(origin, target, tmp_path):
    with mounted_tmpfs(tmp_path / "full", "64k") as full:
        args = [part.format(full=full, tmp=tmp_path) for part in target]
        result = cli("download", origin, *args, tmp=tmp_path)
        # The cache's own index and folders stay, and a small file it kept whole; no partial
        # file does.
        assert_coded(result, full, allowed=in_the_cache)
        assert not (tmp_path / "a.zip").exists()


def test_reads_of_a_lazy_archive_on_a_full_disk_are_coded_and_keep_nothing(origin, tmp_path):
    """The catalog and manifest fit; no file does. A read is refused with TA-E906 (the client
    shows the server's message), the archive is left as it was, and it reads once there is
    room."""
    import tiled_archive

    with mounted_tmpfs(tmp_path / "full", "4m") as full:
        done = cli("download", origin, "-o", full / "a", "--lazy", tmp=tmp_path)
        assert done.returncode == 0, done.stderr
        before = sorted(os.listdir(full / "a" / "data"))
        filler = full / "filler"
        with open(filler, "wb") as handle:  # what is left of the tmpfs, less 16 kB
            free = os.statvfs(full).f_bavail * os.statvfs(full).f_frsize
            handle.write(bytes(max(free - (16 << 10), 0)))
        with tiled_archive.open(full / "a") as client:
            with pytest.raises(Exception) as raised:
                client["alpha"].read()
            said = str(raised.value)
            assert "TA-E906" in said and "free of" in said, said
            assert sorted(os.listdir(full / "a" / "data")) == before
            assert fetch_work(full / "a") == []
            filler.unlink()
            assert client["alpha"].read().shape == (FILE_BYTES // 8,)


def test_a_fetch_onto_a_full_disk_is_coded(origin, tmp_path):
    with mounted_tmpfs(tmp_path / "full", "1m") as full:
        done = cli("download", origin, "-o", full / "a", "--lazy", tmp=tmp_path)
        assert done.returncode == 0, done.stderr
        catalog_files = sorted(os.listdir(full / "a"))
        result = cli("fetch", full / "a", tmp=tmp_path)
        said = result.stdout + result.stderr
        assert result.returncode == 1 and "TA-E906" in said and "Traceback" not in said, said
        assert "free of" in said, said
        # The lazy archive's work folder may now exist (spec 4.1), holding no partial file.
        assert sorted(set(os.listdir(full / "a")) - {".tiled-archive-fetch"}) == catalog_files
        assert fetch_work(full / "a") == []


def test_a_browse_mirror_on_a_full_disk_reads_coded_and_again_with_room(origin, tmp_path):
    import tiled_archive

    with mounted_tmpfs(tmp_path / "full", "4m") as full:
        client = tiled_archive.browse(origin, full / "mirror")
        try:
            assert sorted(client) == ["alpha", "beta", "delta", "gamma", "small"]
            filler = full / "filler"
            with open(filler, "wb") as handle:
                free = os.statvfs(full).f_bavail * os.statvfs(full).f_frsize
                handle.write(bytes(max(free - (16 << 10), 0)))
            with pytest.raises(Exception) as raised:
                client["alpha"].read()
            said = str(raised.value)
            assert "TA-E906" in said and "free of" in said, said
            assert fetch_work(full / "mirror") == []
            filler.unlink()
            assert client["alpha"].read().shape == (FILE_BYTES // 8,)
        finally:
            client.close()
