"""Our ZIPs and directory archives against independent tools in processes of their own: Info-ZIP's
`zip` and `unzip -t`, and bagit.py's validator."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from tiled_archive.rules.names import ALIGNMENT, MIMETYPE
from tiled_archive.sources.zip import ZipSource

from ..unit.test_zip_layer import FILES, build, codes, save


@pytest.fixture(scope="module")
def archives(sample_archives):
    return sample_archives


def unzip_test(path: Path) -> None:
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout


def test_stream_passes_unzip_and_zipfile(tmp_path: Path) -> None:
    path = save(tmp_path, build(FILES))
    unzip_test(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["mimetype", *FILES]
        for name, data in FILES.items():
            info = archive.getinfo(name)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.flag_bits == 0x0800
            assert info.external_attr == 0o100644 << 16
            assert archive.read(name) == data


def test_force_zip64_is_readable_everywhere(tmp_path: Path) -> None:
    data = build(FILES, force_zip64=True)
    path = save(tmp_path, data)
    unzip_test(path)
    assert data[-22 - 20 - 56 :].startswith(b"PK\x06\x06")  # ZIP64 end record, then locator
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        for info in archive.infolist():
            # The central directory's ZIP64 extra holds both sizes and the offset.
            assert struct.unpack_from("<HH", info.extra) == (0x0001, 24)
            assert archive.read(info) == FILES.get(info.filename, MIMETYPE.encode())
    with ZipSource(path) as source:
        assert source.problems == []
        for name, expected in FILES.items():
            assert source.read(name) == expected
            span = source.span(name)
            assert span is not None and span.offset % ALIGNMENT == 0


def test_zip_source_parses_info_zip_output(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "empty").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"compress me " * 1000)
    (tree / "sub" / "b.bin").write_bytes(os.urandom(5000))
    subprocess.run(["zip", "-r", "-q", "info.zip", "tree"], cwd=tmp_path, check=True)
    with ZipSource(tmp_path / "info.zip") as source:
        assert set(source.members()) == {"tree/a.txt", "tree/sub/b.bin"}
        assert {r.name for r in source.entries if r.is_dir} == {
            "tree/",
            "tree/sub/",
            "tree/sub/empty/",
        }
        # Not a tiled archive (no mimetype) and not aligned, but structurally sound.
        assert codes(source) <= {"TA-E101", "TA-W101", "TA-W102"}
        for name in source.members():
            assert source.read(name) == (tmp_path / name).read_bytes()


def test_zip_passes_info_zip_and_python_zipfile(archives):
    for name in ("zip", "direct"):
        result = subprocess.run(
            ["unzip", "-t", str(archives[name])], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "No errors detected" in result.stdout
        with zipfile.ZipFile(archives[name]) as zf:
            assert zf.testzip() is None
            assert zf.namelist()[0] == "mimetype"


def test_unzipped_zip_is_a_valid_bag(archives, tmp_path):
    subprocess.run(["unzip", "-q", str(archives["zip"]), "-d", str(tmp_path / "bag")], check=True)
    bagit = shutil.which("bagit.py") or str(Path(__import__("sys").executable).parent / "bagit.py")
    result = subprocess.run(
        [bagit, "--validate", str(tmp_path / "bag")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stderr
    result = subprocess.run(
        ["sha256sum", "--quiet", "-c", "manifest-sha256.txt"],
        cwd=tmp_path / "bag",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_directory_archive_is_a_valid_bag(archives):
    bagit = shutil.which("bagit.py") or str(Path(__import__("sys").executable).parent / "bagit.py")
    for name in ("dir", "extracted"):
        result = subprocess.run(
            [bagit, "--validate", str(archives[name])], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
