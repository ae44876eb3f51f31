"""The writers' progress bars count only work done now: bytes taken as they are (digests
already known, files hard-linked) stay out of a bar's total, so its rate is that of real
hashing or copying (a download's ZIP showed "hashing … 277.7 GB/s"), and a bar never passes
its total (the ZIP's headers and tag files took "writing" to "120.6/120.2 MB")."""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from functools import partial
from pathlib import Path

import pytest
from rich.progress import Progress

from tiled_archive.catalog.db_file import create_catalog_file
from tiled_archive.writer.common import PayloadFile
from tiled_archive.writer.forms import write_directory, write_zip

KNOWN = {"data/cached/a.bin": 700_000, "data/cached/b.bin": 500_000}
NEW = {"data/new/c.bin": 300_000, "data/new/d.bin": 4_321}


def payload(folder: Path) -> list[PayloadFile]:
    """Files as a download hands them to the writer (``KNOWN``: verified in its cache, digests
    known and a local copy to link) and as ``create`` does (``NEW``: read, hashed here)."""
    files = []
    for number, (path, size) in enumerate({**KNOWN, **NEW}.items()):
        local = folder / f"{number}.bin"
        content = bytes([number]) * size
        local.write_bytes(content)
        opened = partial(local.open, "rb")
        if path in KNOWN:
            sha = hashlib.sha256(content).hexdigest()
            crc = zlib.crc32(content)
            files.append(PayloadFile(path, size, opened, 0, sha, crc, local_path=local))
        else:
            files.append(PayloadFile(path, size, opened, 0))
    return files


@pytest.fixture
def catalog(tmp_path) -> Path:
    db = tmp_path / "catalog.db"
    create_catalog_file(db)
    return db


def bars(progress: Progress) -> dict[str, tuple[float, float | None]]:
    """Each bar's description: (completed, total)."""
    return {task.description: (task.completed, task.total) for task in progress.tasks}


def test_a_zip_hashes_and_counts_only_files_of_unknown_digest(tmp_path, catalog):
    (tmp_path / "files").mkdir()
    with Progress(disable=True) as progress:
        write_zip(
            tmp_path / "out.zip",
            payload(tmp_path / "files"),
            lambda entries: catalog,
            created=1_000_000_000,
            fixed_mtime=None,
            template=None,
            progress=progress,
        )
    new, everything = sum(NEW.values()), sum(KNOWN.values()) + sum(NEW.values())
    assert bars(progress) == {
        "hashing (1.2 MB already known)": (new, new),
        "writing": (everything, everything),  # the payload: not headers, tags, catalog
    }
    with zipfile.ZipFile(tmp_path / "out.zip") as written:
        assert written.testzip() is None
        assert {n for n in written.namelist() if n.startswith("data/")} == {*KNOWN, *NEW}


def test_a_zip_of_known_digests_has_no_hashing_bar(tmp_path, catalog):
    (tmp_path / "files").mkdir()
    known = [file for file in payload(tmp_path / "files") if file.path in KNOWN]
    with Progress(disable=True) as progress:
        write_zip(
            tmp_path / "out.zip",
            known,
            lambda entries: catalog,
            created=1_000_000_000,
            fixed_mtime=None,
            template=None,
            progress=progress,
        )
    assert bars(progress) == {"writing": (sum(KNOWN.values()), sum(KNOWN.values()))}


def test_a_directory_counts_only_the_files_it_copies(tmp_path, catalog):
    (tmp_path / "files").mkdir()
    (tmp_path / "out").mkdir()
    with Progress(disable=True) as progress:
        write_directory(
            tmp_path / "out",
            payload(tmp_path / "files"),
            lambda entries: catalog,
            created=1_000_000_000,
            template=None,
            progress=progress,
        )
    new = sum(NEW.values())
    assert bars(progress) == {"copying (1.2 MB hard-linked)": (new, new)}
    assert all((tmp_path / "out" / path).stat().st_nlink == 2 for path in KNOWN)
    assert all((tmp_path / "out" / path).stat().st_nlink == 1 for path in NEW)
