"""A relocated directory archive (a download, an extract) moved or copied with `cp -a`: its
catalog still names the folder it was relocated in. It opens and validates where it is now,
reading its own files (TA-W503 says stock `tiled serve catalog` needs `tiled-archive relocate`
first, and `relocate` clears it); a URI naming a file the archive does not hold stays TA-E503,
and nothing outside the archive is opened (spec 3.1)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiled_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.writer import convert, reseal

from ..conftest import cli
from ..nodes import assert_exact

#: The lists that currently record the files this process opens (see :func:`opened`).
_RECORDERS: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    # Python's own audit events: every open() and os.open() of a path, every SQLite database
    # connected to, from any thread (Tiled reads in worker threads).
    if _RECORDERS and event in ("open", "sqlite3.connect") and args:
        target = args[0]
        if isinstance(target, (str, bytes, os.PathLike)):
            for found in _RECORDERS:
                found.append(os.fsdecode(target))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only inside opened()


@contextlib.contextmanager
def opened() -> Iterator[list[str]]:
    """The paths opened (by Python code) while the block runs."""
    found: list[str] = []
    _RECORDERS.append(found)
    try:
        yield found
    finally:
        _RECORDERS.remove(found)


def below(paths: list[str], folder: Path) -> list[str]:
    """Those of ``paths`` that lie in ``folder`` (as named, or resolved)."""
    roots = {str(folder), str(folder.resolve())}
    return [p for p in paths if any(p == r or p.startswith(r + "/") for r in roots)]


def cp_a(source: Path, target: Path) -> Path:
    """``cp -a SOURCE TARGET``, as a user copies a folder (modes, times, links kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", source, target], check=True)
    return target


def report(path: Path) -> dict:
    result = cli("validate", "--json", path)
    return {"status": result.returncode, **json.loads(result.stdout)}


def asset_uris(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("SELECT data_uri FROM assets ORDER BY id")]


def test_a_download_copied_with_cp_a_opens_validates_packs_and_relocates(sample_archives, tmp_path):
    """The user's case: download to a folder, copy it to a laptop, remove the original."""
    with tiled_archive.open(sample_archives["zip"]) as source:  # Tiled's client, in-process
        original = tiled_archive.download(
            source, tmp_path / "downloads" / "scans", cache_dir=tmp_path / "cache"
        ).path
    assert report(original)["problems"] == []
    assert all(uri.startswith("file://localhost/") for uri in asset_uris(original / "catalog.db"))
    laptop = cp_a(original, tmp_path / "laptop" / "scans")
    shutil.rmtree(original)

    validated = cli("validate", laptop)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    lines = validated.stdout.splitlines()
    assert (
        f"fix TA-W503: Run `tiled-archive relocate {laptop}` before serving it with stock "
        "`tiled serve catalog`."
    ) in lines
    assert "TA-E503" not in validated.stdout and "TA-W500" not in validated.stdout
    found = report(laptop)
    assert found["status"] == 0 and [p["code"] for p in found["problems"]] == ["TA-W503"]
    assert f"{original.resolve()}/data/" in found["problems"][0]["message"]

    with (
        tiled_archive.open(sample_archives["zip"]) as expected,
        tiled_archive.open(laptop) as moved,
    ):
        assert_exact(expected, moved)

    # Packed as it is, it is an archive-form ZIP with nothing to say.
    packed = cli("pack", "-q", laptop, tmp_path / "scans.zip")
    assert packed.returncode == 0, packed.stderr
    assert report(tmp_path / "scans.zip")["problems"] == []

    # Relocated, its URIs name where it is now and the warning goes.
    relocated = cli("relocate", laptop)
    assert relocated.returncode == 0, relocated.stderr
    here = f"file://localhost{laptop.resolve()}/data/"
    assert all(uri.startswith(here) for uri in asset_uris(laptop / "catalog.db"))
    assert report(laptop)["problems"] == []


def test_a_copy_reads_its_own_files_never_the_originals(sample_archives, tmp_path):
    """Copied and the original kept (then changed): the copy's URIs name the original's files,
    which exist, but every byte validate and open read is the copy's own."""
    original = convert(sample_archives["zip"], tmp_path / "original")
    copy = cp_a(original, tmp_path / "copy")
    for path in (original / "data").rglob("*"):
        if path.is_file():  # other bytes, same size: read, they would fail the copy's digests
            path.write_bytes(bytes(255 - b for b in path.read_bytes()))

    with opened() as paths:
        found = report(copy)
        with (
            tiled_archive.open(sample_archives["zip"]) as expected,
            tiled_archive.open(copy) as moved,
        ):
            assert_exact(expected, moved)
    assert found["status"] == 0 and [p["code"] for p in found["problems"]] == ["TA-W503"]
    assert below(paths, original) == []
    assert below(paths, copy / "data")  # the recorder saw the copy's own files being read


@pytest.mark.parametrize(
    "named",
    [
        "data/scan/secret.csv",  # a file the archive does not hold
        "data/scan/baseline.csv",  # a file it holds, but in a second folder
    ],
)
def test_a_uri_naming_a_file_outside_the_archive_is_refused_and_never_read(
    sample_archives, tmp_path, named
):
    """A moved archive whose CSV asset names an existing file in another folder's data/: no
    one folder fits every URI, so the URIs outside the archive are TA-E503 for validate and
    open() alike, and the file is never opened."""
    original = convert(sample_archives["zip"], tmp_path / "original")
    moved = tmp_path / "moved"
    original.rename(moved)
    outside = tmp_path / "somewhere"
    planted = outside / named
    planted.parent.mkdir(parents=True)
    planted.write_text("x,y,label\n666,6.66,evil\n")
    with contextlib.closing(sqlite3.connect(moved / "catalog.db")) as conn, conn:
        conn.execute(
            "UPDATE assets SET data_uri = ? WHERE data_uri LIKE '%/data/scan/baseline.csv'",
            (f"file://localhost{planted}",),
        )
    reseal(moved)

    with opened() as paths:
        found = report(moved)
        with pytest.raises(ArchiveError) as refused, tiled_archive.open(moved) as root:
            root["scan"]["baseline"].read()
    assert found["status"] == 1
    assert {p["code"] for p in found["problems"]} == {"TA-E503", "TA-W500"}
    assert f"file://localhost{planted}" in {p["path"] for p in found["problems"]}
    assert refused.value.code == "TA-E503"
    assert below(paths, outside) == []
