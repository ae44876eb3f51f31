"""The validator on real archives made by the writer, damaged one way at a time."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import struct
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tiled_archive
from tiled_archive.cli import commands
from tiled_archive.rules.names import FORMAT_VERSION
from tiled_archive.validator import Report, validate
from tiled_archive.writer import convert, create, reseal

from ..conftest import PUBLISHED_REPORT_SCHEMA, cli
from .test_zip_layer import central_records

H5 = "data/scan/primary.h5"


@pytest.fixture(scope="module")
def archives(sample_tree, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("validate")
    directory = create(out / "archive", [sample_tree], reproducible=True)
    return {"directory": directory, "zip": convert(directory, out / "archive.zip")}


@pytest.fixture
def copy(archives, tmp_path):
    """A fresh copy of one form of the sample archive, to damage."""

    def make(form: str) -> Path:
        source = archives[form]
        target = tmp_path / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target

    return make


def found(report: Report) -> set[tuple[str, str | None]]:
    return {(p.code, p.path) for p in report.problems}


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(data)


def member_data_offset(zip_path: Path, name: str) -> int:
    data = zip_path.read_bytes()
    local = struct.unpack_from("<I", data, central_records(data)[name] + 42)[0]
    name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
    return local + 30 + name_length + extra_length


# -- Good archives --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["directory", "zip"])
@pytest.mark.parametrize("fast", [False, True])
def test_writer_output_is_valid(archives, form, fast):
    before = sorted(p.name for p in archives[form].parent.iterdir())
    report = validate(archives[form], fast=fast)
    assert report.problems == [] and report.valid and report.form == form
    assert report.format_version == FORMAT_VERSION
    if not fast:
        payload = sum(p.stat().st_size for p in (archives["directory"] / "data").rglob("*"))
        assert report.bytes_verified > payload  # every payload byte, the tag files, the catalog
    # Nothing was written beside the archive or inside it (catalogs open immutable).
    assert sorted(p.name for p in archives[form].parent.iterdir()) == before


def test_a_relocated_extract_moved_is_valid_with_its_own_warning(archives, tmp_path):
    """Moved, a relocated directory's URIs name the folder it left: each is read as the
    archive's own file (TA-W503 once, naming that folder, with `relocate` as its hint)."""
    extracted = convert(archives["zip"], tmp_path / "extracted")
    assert validate(extracted).problems == []
    moved = tmp_path / "moved"
    extracted.rename(moved)
    report = validate(moved)
    assert report.valid and [p.code for p in report.problems] == ["TA-W503"]
    (warning,) = report.problems
    assert f"{extracted.resolve()}/data/" in warning.message
    assert warning.fix == (
        f"Run `tiled-archive relocate {moved}` before serving it with stock `tiled serve catalog`."
    )


def test_a_moved_uri_naming_a_file_the_archive_does_not_hold_is_an_error(archives, tmp_path):
    """One URI of a moved archive names a file beside the old folder's data/ that the archive
    does not hold: no folder fits every URI, so those outside the archive are TA-E503 and the
    files they were to name unreferenced (TA-W500); no TA-W503, no data read."""
    extracted = convert(archives["zip"], tmp_path / "extracted")
    moved = tmp_path / "moved"
    extracted.rename(moved)
    with contextlib.closing(sqlite3.connect(moved / "catalog.db")) as conn, conn:
        conn.execute(
            "UPDATE assets SET data_uri = ? WHERE data_uri LIKE '%/primary.h5'",
            (f"file://localhost{extracted.resolve()}/data/scan/not-in-the-archive.h5",),
        )
    reseal(moved)
    report = validate(moved)
    assert not report.valid
    assert {p.code for p in report.problems} == {"TA-E503", "TA-W500"}
    assert ("TA-W500", H5) in found(report)


# -- One damage at a time ----------------------------------------------------------------------


def test_flipped_payload_byte(copy):
    directory = copy("directory")
    flip(directory / H5, 100)
    assert found(validate(directory)) == {("TA-E308", H5)}
    archive = copy("zip")
    flip(archive, member_data_offset(archive, H5) + 100)
    assert found(validate(archive)) == {("TA-E111", H5), ("TA-E308", H5)}
    # Fast mode compares sizes only: a flipped byte goes unseen, and nothing is hashed.
    fast = validate(directory, fast=True)
    assert fast.valid and fast.bytes_verified == 0


@pytest.mark.parametrize("form", ["directory", "zip"])
def test_flipped_catalog_byte(copy, form):
    archive = copy(form)
    size = (archive / "catalog.db").stat().st_size if form == "directory" else None
    if form == "directory":
        flip(archive / "catalog.db", size // 2)
    else:
        flip(archive, member_data_offset(archive, "catalog.db") + 40_000)
    report = validate(archive)
    expected = {"TA-E309", "TA-E402"} | ({"TA-E111"} if form == "zip" else set())
    assert expected <= report.codes <= expected | {"TA-E500"}
    assert {p.path for p in report.problems} == {"catalog.db"}


def test_flipped_central_directory_byte(copy):
    archive = copy("zip")
    data = archive.read_bytes()
    flip(archive, central_records(data)[H5] + 16)  # the CRC-32 field
    assert found(validate(archive)) == {("TA-E106", H5), ("TA-E111", H5)}


def test_missing_and_extra_files(copy):
    directory = copy("directory")
    (directory / H5).unlink()
    (directory / "data" / "scan" / "stray.bin").write_bytes(b"stray")
    (directory / "notes.txt").write_text("not part of the format")
    assert found(validate(directory)) == {
        ("TA-E305", H5),
        ("TA-E504", H5),
        ("TA-E306", "data/scan/stray.bin"),
        ("TA-W500", "data/scan/stray.bin"),
        ("TA-W001", "notes.txt"),
    }


def test_missing_manifest_is_one_problem_not_a_cascade(copy):
    directory = copy("directory")
    (directory / "tiled-archive.json").unlink()
    assert found(validate(directory)) == {("TA-E002", "tiled-archive.json")}


def test_wal_catalog_is_reported_and_read_without_side_files(copy):
    directory = copy("directory")
    with contextlib.closing(sqlite3.connect(directory / "catalog.db")) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    reseal(directory)
    # reseal() read the catalog with SQLite's plain read-only mode, which on a WAL database
    # leaves -wal and -shm files behind: the very reason for TA-E507.
    for side in ("catalog.db-wal", "catalog.db-shm"):
        (directory / side).unlink(missing_ok=True)
    before = sorted(os.listdir(directory))
    assert found(validate(directory)) == {("TA-E507", "catalog.db")}
    assert sorted(os.listdir(directory)) == before  # no -wal, -shm or -journal file


def test_symlink_and_folder_case_collision(copy):
    directory = copy("directory")
    (directory / "data" / "scan" / "link.h5").symlink_to("primary.h5")
    (directory / "data" / "Scan").mkdir()
    (directory / "data" / "Scan" / "x").write_bytes(b"x")
    report = validate(directory)
    assert ("TA-E203", "data/scan/link.h5") in found(report)
    assert ("TA-W201", "data/scan") in found(report) or ("TA-W201", "data/Scan") in found(report)


def test_not_an_archive(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for path, form in ((tmp_path / "missing", None), (tmp_path / "notes.txt", None)):
        assert (validate(path).codes, validate(path).form) == ({"TA-E001"}, form)
    folder = validate(tmp_path)  # a folder without `mimetype`: E001 alone, no noise
    assert found(folder) == {("TA-E001", str(tmp_path))} and folder.form == "directory"


# -- The command -------------------------------------------------------------------------------


def test_cli_json_follows_its_schema_and_exit_codes(copy):
    directory = copy("directory")
    valid = cli("validate", "--json", directory)
    assert valid.returncode == 0, valid.stderr
    jsonschema.validate(json.loads(valid.stdout), PUBLISHED_REPORT_SCHEMA)
    flip(directory / H5, 7)
    (directory / "notes.txt").write_text("a warning too")
    invalid = cli("validate", "--json", directory)
    assert invalid.returncode == 1
    document = json.loads(invalid.stdout)
    jsonschema.validate(document, PUBLISHED_REPORT_SCHEMA)
    assert [(p["code"], p["path"]) for p in document["problems"]] == [
        ("TA-E308", H5),
        ("TA-W001", "notes.txt"),
    ]
    assert "Traceback" not in invalid.stderr


def test_cli_human_output_and_strict(archives, tmp_path):
    warned = tmp_path / "warned"
    shutil.copytree(archives["directory"], warned)
    (warned / "notes.txt").write_text("unknown top-level file")
    runner = CliRunner()
    lenient = runner.invoke(commands.app, ["validate", str(warned)])
    assert lenient.exit_code == 0
    assert "TA-W001" in lenient.stdout and "VALID" in lenient.stdout
    strict = runner.invoke(commands.app, ["validate", "--strict", "--fast", str(warned)])
    assert strict.exit_code == 1 and "INVALID" in strict.stdout
    assert "--strict: warnings count" in strict.stdout
    strict_json = runner.invoke(commands.app, ["validate", "--strict", "--json", str(warned)])
    document = json.loads(strict_json.stdout)
    jsonschema.validate(document, PUBLISHED_REPORT_SCHEMA)
    assert strict_json.exit_code == 1
    assert document["strict"] is True and document["valid"] is False


def test_python_validate_strict(archives, tmp_path):
    warned = tmp_path / "warned"
    shutil.copytree(archives["directory"], warned)
    (warned / "notes.txt").write_text("unknown top-level file")
    lenient = tiled_archive.validate(warned, fast=True)
    assert lenient.valid and lenient.codes == {"TA-W001"} and lenient.exit_status() == 0
    strict = tiled_archive.validate(warned, fast=True, strict=True)
    assert not strict.valid and strict.exit_status() == 1
    assert "strict=True" in repr(strict) and "valid=False" in repr(strict)
    assert tiled_archive.validate(archives["directory"], strict=True).valid


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PermissionError(13, "Permission denied"), "could not check"),
        (RuntimeError("bug"), "internal"),
    ],
)
def test_cli_exits_2_when_it_cannot_check(archives, monkeypatch, error, message):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("tiled_archive.validator.validate", fail)
    result = CliRunner().invoke(commands.app, ["validate", str(archives["zip"])])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


# -- Any damage at all ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("small")
    (out / "small").mkdir()
    (out / "small" / "table.csv").write_text("a,b\n1,2\n")
    np.save(out / "small" / "array.npy", np.arange(6.0))
    return create(out / "small.zip", [out / "small"], reproducible=True).read_bytes()


def harmless(data: bytes, offset: int, mask: int) -> bool:
    """Whether flipping ``mask`` at ``offset`` changes nothing any rule looks at: version and
    DOS time fields, the local extra field (alignment padding), internal attributes, DOS
    attributes and permission bits (not the file type) of the Unix mode."""
    regions = []
    for central in central_records(data).values():
        local = struct.unpack_from("<I", data, central + 42)[0]
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        extra = local + 30 + name_length
        regions += [(local + 4, local + 6), (local + 10, local + 14), (extra, extra + extra_length)]
        regions += [(central + 4, central + 8), (central + 12, central + 16)]
        regions += [(central + 36, central + 41)]
        if offset == central + 41:
            return (data[offset] ^ mask) >> 4 in (0, 0o10)  # type nibble: none or regular file
    return any(start <= offset < end for start, end in regions)


def structural_offsets(data: bytes) -> list[int]:
    """Every byte of the headers, the central directory and the end record (not member data)."""
    offsets = []
    records = central_records(data)
    for central in records.values():
        local = struct.unpack_from("<I", data, central + 42)[0]
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        offsets += range(local, local + 30 + name_length + min(extra_length, 64))
    offsets += range(min(records.values()), len(data))
    return offsets


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_damage_is_reported_never_raised(small_zip, tmp_path_factory, data):
    structural = structural_offsets(small_zip)
    damage = data.draw(st.sampled_from(["flip", "flip-header", "truncate"]))
    target = tmp_path_factory.mktemp("damaged") / "damaged.zip"
    if damage == "truncate":
        damaged, is_harmless = small_zip[: data.draw(st.integers(0, len(small_zip) - 1))], False
    else:
        if damage == "flip":
            offset = data.draw(st.integers(0, len(small_zip) - 1))
        else:
            offset = data.draw(st.sampled_from(structural))
        mask = data.draw(st.integers(1, 255))
        changed = bytearray(small_zip)
        changed[offset] ^= mask
        damaged, is_harmless = bytes(changed), harmless(small_zip, offset, mask)
    target.write_bytes(damaged)
    report = validate(target)
    assert report.valid == is_harmless, report.problems
    jsonschema.validate(report.to_json(), PUBLISHED_REPORT_SCHEMA)
