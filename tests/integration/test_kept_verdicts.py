"""What opening an archive remembers (files/verdicts.py): verdicts kept under the digests of
what was judged, and file digests kept under a file's version. Opening an archive again costs
what opening a small one does, and nothing kept is trusted once what it was about changed."""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest

import tiled_archive
from tiled_archive.files import verdicts
from tiled_archive.files.cache_root import cache_root
from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.writer import convert, create
from tiled_archive.zip import records as zf

NODES = 30


@pytest.fixture
def many(tmp_path) -> Path:
    """A ZIP of ``NODES`` one-file arrays (``x00a``...), tag files first as the writer puts
    them."""
    source = tmp_path / "runs"
    source.mkdir()
    for index in range(NODES):
        np.save(source / f"x{index:02d}a.npy", np.arange(4) + index)  # no sequence
    return create(tmp_path / "many.zip", [source])


def _read(archive: Path, key: str) -> np.ndarray:
    with tiled_archive.open(archive) as client:
        return client["runs"][key].read()


def test_a_zip_opened_again_parses_only_its_own_files_until_a_member_is_read(many):
    with open_archive(many) as first:
        assert first.source.directory.complete and not first.source.directory.judged
    with open_archive(many) as again:
        directory = again.source.directory
        assert directory.judged and not directory.complete
        # The tag files, catalog.db and one record after them: not the 30 data members.
        assert len(directory.entries) == 8
        again.check_catalog()
        row = next(r for r in again.data_sources().values() if r.node == "x07a")
        assert directory.complete and len(directory.entries) == 7 + NODES
        assert again.read(row.assets[0].member) == (many.parent / "runs" / "x07a.npy").read_bytes()
    assert np.array_equal(_read(many, "x07a"), np.arange(4) + 7)


def test_a_kept_zip_verdict_still_checks_each_local_header_when_its_member_is_read(many):
    """The kept verdict is on the central directory; a local header changed since (its name
    no longer the central directory's) is found when that member is first read."""
    _read(many, "x03a")  # judged and kept
    with open_archive(many) as archive:
        record = archive.source._record_unread("data/runs/x05a.npy")
    with open(many, "r+b") as handle:
        handle.seek(record.header_offset + zf.LOCAL_HEADER.size + len("data/runs/x"))
        handle.write(b"9")  # data/runs/x95a.npy
    with open_archive(many) as archive:
        assert archive.source.directory.judged
        with pytest.raises(ArchiveError) as refused:
            archive.read("data/runs/x05a.npy")
    assert refused.value.code == "TA-E106"
    assert np.array_equal(_read(many, "x04a"), np.arange(4) + 4)  # the others still read


def test_a_changed_central_directory_is_judged_again(many):
    """A duplicate name written over another in the central directory: a new digest, so the
    kept verdict does not apply and the open is refused."""
    _read(many, "x01a")
    raw = many.read_bytes()
    at = raw.rindex(b"data/runs/x02a.npy")  # the central directory's copy of the name
    many.write_bytes(raw[:at] + b"data/runs/x01a.npy" + raw[at + len(b"data/runs/x02a.npy") :])
    with pytest.raises(ArchiveError) as refused:
        open_archive(many)
    assert refused.value.code in ("TA-E105", "TA-E106")  # the local header disagrees too


def test_a_catalog_rewritten_in_place_with_its_old_time_is_verified_again(tmp_path, many):
    """A directory archive's catalog.db is hashed once while unchanged (its version: inode,
    size, times). Rewritten in place, same size, its modification time put back: the change
    time still differs, so it is hashed again and refused."""
    folder = convert(many, tmp_path / "folder")
    assert np.array_equal(_read(folder, "x02a"), np.arange(4) + 2)
    catalog = folder / "catalog.db"
    before = catalog.stat()
    version = verdicts.version_of(catalog)
    assert verdicts.known_sha256(version) is not None
    with sqlite3.connect(catalog) as conn:  # same size: an UPDATE in place
        conn.execute("UPDATE nodes SET metadata = '{\"a\": 2}' WHERE key = 'x02a'")
    os.utime(catalog, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert catalog.stat().st_size == before.st_size
    assert catalog.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(ArchiveError) as refused:
        open_archive(folder).catalog_path()
    assert refused.value.code == "TA-E309"


def test_damaged_kept_verdicts_cost_a_check_made_again(many):
    _read(many, "x00a")
    kept = list((cache_root() / "verdicts").rglob("*"))
    files = [path for path in kept if path.is_file()]
    assert {path.parent.name for path in files} >= {"manifest", "zip", "catalog"}
    for path in files:
        path.write_bytes(b"{not json")
    for path in (cache_root() / "verified").iterdir():
        path.write_bytes(b"0" * 64)  # a wrong digest: the file is hashed again
    assert np.array_equal(_read(many, "x09a"), np.arange(4) + 9)


def test_a_catalog_kept_clean_is_still_refused_when_a_member_it_names_is_gone(tmp_path, many):
    """The catalog's verdict names the manifest it was judged with; a directory archive whose
    data file was deleted afterwards opens (the catalog is as judged) and refuses the read."""
    folder = convert(many, tmp_path / "folder")
    _read(folder, "x00a")
    (folder / "data" / "runs" / "x04a.npy").unlink()
    with tiled_archive.open(folder) as client:
        assert np.array_equal(client["runs"]["x03a"].read(), np.arange(4) + 3)
        with pytest.raises(Exception, match="TA-E305|x04a"):
            client["runs"]["x04a"].read()


def test_local_header_layout_is_as_the_parser_expects():
    """The test above writes into a local header's name: its offset within the header."""
    assert zf.LOCAL_HEADER.size == struct.calcsize("<IHHHHHIIIHH") == 30
