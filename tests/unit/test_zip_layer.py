"""The ZIP byte layer: the streamed writer, the strict ZIP source and the directory source.

Checked against real tools: Python's ``zipfile``, Info-ZIP ``zip`` and ``unzip -t``.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import time
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiled_archive.rules.names import ALIGNMENT, MIMETYPE
from tiled_archive.rules.paths import path_problems
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.sources.directory import DirectorySource
from tiled_archive.sources.zip import ZipSource
from tiled_archive.zip.stream import (
    ZipEntry,
    _dos_datetime,
    dos_to_epoch,
    zip_layout_digest,
    zip_length,
    zip_stream,
)

MiB = 1024 * 1024
MTIME = 1_700_000_000
FILES = {
    "tiled-archive.json": b'{"format": "tiled-archive"}\n',
    "data/empty": b"",
    "data/one-page.bin": bytes(range(256)) * 16,
    "data/odd.bin": bytes(range(7)) * 1001,
    "data/ünïcødé/ß.txt": "grüße\n".encode() * 3,
}


def entry(name: str, data: bytes, *, align: bool = True, mtime: int = MTIME) -> ZipEntry:
    return ZipEntry(name, len(data), zlib.crc32(data), lambda: [data], mtime, align)


def build(files: dict[str, bytes], **options: bool) -> bytes:
    """A ZIP of ``files`` after a leading `mimetype` member, as the format wants."""
    entries = [entry("mimetype", MIMETYPE.encode(), align=False)]
    entries += [entry(name, data) for name, data in files.items()]
    return b"".join(zip_stream(entries, **options))


def save(directory: Path, data: bytes, name: str = "archive.zip") -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def codes(source: ZipSource | DirectorySource) -> set[str]:
    return {problem.code for problem in source.problems}


def central_records(data: bytes) -> dict[str, int]:
    """Offsets of the central directory records by name (a walker independent of ZipSource)."""
    cd_offset = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)[0]
    records = {}
    position = cd_offset
    while data[position : position + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        name = data[position + 46 : position + 46 + name_length]
        records[name.decode("utf-8", "surrogateescape")] = position
        position += 46 + name_length + extra_length + comment_length
    return records


def local_offsets(data: bytes) -> dict[str, int]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: info.header_offset for info in archive.infolist()}


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def rchar() -> int:
    with open("/proc/self/io") as io_stats:
        for line in io_stats:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# -- The writer -----------------------------------------------------------------------------


def test_member_data_is_aligned(tmp_path: Path) -> None:
    data = build(FILES)
    path = save(tmp_path, data)
    with ZipSource(path) as source:
        assert source.problems == []
        for name in FILES:
            span = source.span(name)
            assert span is not None and span.offset % ALIGNMENT == 0
            assert data[span.offset : span.offset + span.length] == FILES[name]
    # Independently: zipfile's header offsets plus the local header's own lengths.
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist()[1:]:
            start = info.header_offset
            name_length, extra_length = struct.unpack_from("<HH", data, start + 26)
            extra = data[start + 30 + name_length : start + 30 + name_length + extra_length]
            assert (start + 30 + name_length + extra_length) % ALIGNMENT == 0
            header_id, size, alignment = struct.unpack_from("<HHH", extra)
            assert (header_id, size, alignment) == (0xA11E, extra_length - 4, ALIGNMENT)
            assert extra[6:] == bytes(extra_length - 6)
            assert info.extra == b""  # not repeated in the central directory


def test_mimetype_sits_at_fixed_offsets() -> None:
    data = build(FILES)
    assert data[:4] == b"PK\x03\x04"
    assert struct.unpack_from("<HH", data, 26) == (8, 0)  # name length, no extra field
    assert data[30:38] == b"mimetype"
    assert data[38 : 38 + len(MIMETYPE)] == MIMETYPE.encode()


def test_output_is_deterministic() -> None:
    assert build(FILES) == build(FILES)
    assert build(FILES, force_zip64=True) == build(FILES, force_zip64=True)


@pytest.mark.parametrize(
    ("declared", "written"), [(b"abc", b"abd"), (b"abc", b"abcd"), (b"abc", b"ab")]
)
def test_member_changed_while_streaming_raises(declared: bytes, written: bytes) -> None:
    changed = ZipEntry("data/x", len(declared), zlib.crc32(declared), lambda: [written], MTIME)
    with pytest.raises(ArchiveError) as caught:
        b"".join(zip_stream([changed]))
    assert caught.value.code == "TA-E905"
    assert caught.value.problem.path == "data/x"


@pytest.mark.parametrize(
    ("mtime", "expected"),
    [
        (0, (1980, 1, 1, 0, 0, 0)),
        (2**40, (2107, 12, 31, 23, 59, 58)),
        (MTIME + 1, time.gmtime(MTIME)[:6]),  # DOS time has two-second steps
    ],
)
def test_dos_time_is_utc_and_clamped(mtime: int, expected: tuple[int, ...]) -> None:
    data = b"".join(zip_stream([entry("data/x", b"x", mtime=mtime)]))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.getinfo("data/x").date_time == expected


def test_unicode_names_are_utf8_flagged(tmp_path: Path) -> None:
    data = build(FILES)
    records = central_records(data)
    name = "data/ünïcødé/ß.txt"
    assert name in records  # the raw bytes are UTF-8
    flags = struct.unpack_from("<H", data, records[name] + 8)[0]
    assert flags & 0x0800 and not flags & 0x0008


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12).map(
                    lambda segment: unicodedata.normalize("NFC", segment)
                ),
                min_size=1,
                max_size=3,
            ).map(lambda segments: "data/" + "/".join(segments)),
            st.binary(max_size=3000),
        ),
        max_size=8,
        unique_by=lambda item: item[0].casefold(),
    )
)
def test_roundtrip_through_writer_and_readers(
    tmp_path_factory: pytest.TempPathFactory, files: list[tuple[str, bytes]]
) -> None:
    path = save(tmp_path_factory.mktemp("roundtrip"), build(dict(files)))
    with ZipSource(path) as source:
        assert source.problems == []
        assert {name: member.size for name, member in source.members().items()} == {
            "mimetype": len(MIMETYPE),
            **{name: len(data) for name, data in files},
        }
        for name, data in files:
            assert source.read(name) == data
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert [(info.filename, archive.read(info)) for info in archive.infolist()[1:]] == files


# -- ZipSource ------------------------------------------------------------------------------


def test_zip_source_reads_only_the_slice_asked(tmp_path: Path) -> None:
    blocks = [i.to_bytes(4, "little") * (MiB // 4) for i in range(64)]
    crc = 0
    for block in blocks:
        crc = zlib.crc32(block, crc)
    big = ZipEntry("data/big.bin", 64 * MiB, crc, lambda: blocks, MTIME)
    path = tmp_path / "big.zip"
    with path.open("wb") as out:
        for chunk in zip_stream([entry("mimetype", MIMETYPE.encode(), align=False), big]):
            out.write(chunk)
    with ZipSource(path) as source:
        offset = 10 * MiB + 12345
        before = rchar()
        data = source.read("data/big.bin", offset, MiB)
        read = rchar() - before
        assert data == b"".join(blocks[10:12])[12345 : 12345 + MiB]
        assert read < 1.2 * MiB
        assert source.crc32("data/big.bin") == crc


def test_zip_source_reads_deflated_members(tmp_path: Path) -> None:
    path = tmp_path / "deflated.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", MIMETYPE, compress_type=zipfile.ZIP_STORED)
        for name, data in FILES.items():
            archive.writestr(name, data)
    with ZipSource(path) as source:
        assert codes(source) == {"TA-W101"}
        assert {p.path for p in source.problems} == set(FILES)
        for name, data in FILES.items():
            assert source.read(name) == data
            assert source.read(name, 3, 100) == data[3:103]
            assert source.span(name) is None
            assert source.crc32(name) == zlib.crc32(data)
            with source.open(name) as stream:
                assert stream.read() == data


def test_zip_source_records_entries(tmp_path: Path) -> None:
    data = build(FILES)
    with ZipSource(save(tmp_path, data)) as source:
        assert [record.name for record in source.entries] == ["mimetype", *FILES]
        mimetype = source.entries[0]
        assert (mimetype.header_offset, mimetype.data_offset) == (0, 38)
        for record in source.entries[1:]:
            assert record.method == 0 and record.flags == 0x0800
            assert record.crc32 == zlib.crc32(FILES[record.name])
            assert record.size == record.compressed_size == len(FILES[record.name])
            assert record.header_offset == local_offsets(data)[record.name]
            assert record.external_attr == 0o100644 << 16
        with pytest.raises(KeyError):
            source.read("data/missing")


def _zipfile_bytes(write, stream: io.BytesIO | None = None) -> bytes:
    stream = stream or io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("mimetype", MIMETYPE)
        write(archive)
    return stream.getvalue()


class _Unseekable:
    """A write-only stream: zipfile then sets the data-descriptor flag (bit 3)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def flush(self) -> None:
        pass


def _duplicate_names() -> bytes:
    def write(archive: zipfile.ZipFile) -> None:
        archive.writestr("data/a", b"first")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("data/a", b"second")

    return _zipfile_bytes(write)


def _symlink_member() -> bytes:
    def write(archive: zipfile.ZipFile) -> None:
        link = zipfile.ZipInfo("data/link")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")

    return _zipfile_bytes(write)


def _flag_encrypted() -> bytes:
    data = build(FILES)
    for offset in (
        local_offsets(data)["data/odd.bin"] + 6,
        central_records(data)["data/odd.bin"] + 8,
    ):
        data = patch(data, offset, struct.pack("<H", 0x0801))
    return data


def _rename_in_local_header() -> bytes:
    data = build(FILES)
    return patch(data, local_offsets(data)["data/odd.bin"] + 30 + len("data/"), b"e")


def _data_descriptor() -> bytes:
    stream = _Unseekable()
    with zipfile.ZipFile(stream, "w") as archive:  # type: ignore[arg-type]
        archive.writestr("mimetype", MIMETYPE)
        archive.writestr("data/a", b"described")
    return stream.buffer.getvalue()


def _overlap() -> bytes:
    data = build(FILES)
    records, offsets = central_records(data), local_offsets(data)
    return patch(data, records["data/odd.bin"] + 42, struct.pack("<I", offsets["data/empty"]))


def _broken_locator() -> bytes:
    data = build(FILES, force_zip64=True)
    return patch(data, len(data) - 22 - 20 + 8, struct.pack("<Q", 1))


def _undecodable_name() -> bytes:
    data = build({"data/a": b"x"})
    data = patch(data, local_offsets(data)["data/a"] + 30 + 5, b"\xff")
    return patch(data, central_records(data)["data/a"] + 46 + 5, b"\xff")


DAMAGED = {
    "prepended bytes": ("TA-E108", lambda: b"MZ" + bytes(98) + build(FILES)),
    "appended comment": (
        "TA-E108",
        lambda: build(FILES)[:-2] + struct.pack("<H", 7) + b"comment",
    ),
    "appended bytes": ("TA-E108", lambda: build(FILES) + b"trailing"),
    "duplicate names": ("TA-E105", _duplicate_names),
    "symlink": ("TA-E104", _symlink_member),
    "directory entry with data": (
        "TA-E104",
        lambda: _zipfile_bytes(lambda archive: archive.writestr("data/dir/", b"x")),
    ),
    "encrypted": ("TA-E103", _flag_encrypted),
    "bzip2": (
        "TA-E102",
        lambda: _zipfile_bytes(lambda archive: archive.writestr("data/a", b"x", zipfile.ZIP_BZIP2)),
    ),
    "local name differs": ("TA-E106", _rename_in_local_header),
    "data descriptor": ("TA-E110", _data_descriptor),
    "overlap": ("TA-E107", _overlap),
    "zip64 locator off": ("TA-E109", _broken_locator),
    "multi-disk": ("TA-E112", lambda: patch(build(FILES), len(build(FILES)) - 18, b"\x01\x00")),
    "first member not mimetype": (
        "TA-E101",
        lambda: b"".join(zip_stream([entry("data/a", b"x"), entry("mimetype", b"m")])),
    ),
    "misaligned": ("TA-W102", lambda: _zipfile_bytes(lambda a: a.writestr("data/a", b"x"))),
    "dot-dot": ("TA-E201", lambda: build({"data/../evil": b"x"})),
    "undecodable name": ("TA-E200", _undecodable_name),
    "case collision": ("TA-W201", lambda: build({"data/a": b"1", "data/A": b"2"})),
}


def test_writer_output_has_no_problems(tmp_path: Path) -> None:
    with ZipSource(save(tmp_path, build(FILES))) as source:
        assert source.problems == []
        assert set(source.members()) == {"mimetype", *FILES}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_zip_is_reported(tmp_path: Path, case: str) -> None:
    code, damage = DAMAGED[case]
    with ZipSource(save(tmp_path, damage())) as source:
        assert code in codes(source), source.problems


def test_prepended_bytes_are_reported_but_members_stay_readable(tmp_path: Path) -> None:
    with ZipSource(save(tmp_path, b"#!/bin/sh\n" + build(FILES))) as source:
        # Shifted by 10 bytes, the member data is no longer aligned either.
        assert codes(source) == {"TA-E108", "TA-W102"}
        for name, data in FILES.items():
            assert source.read(name) == data


def test_unusable_members_are_left_out(tmp_path: Path) -> None:
    for damage in (_symlink_member, _flag_encrypted):
        with ZipSource(save(tmp_path, damage())) as source:
            assert "data/link" not in source.members()
            assert "data/odd.bin" not in source.members()
            assert "mimetype" in source.members()


def test_data_descriptor_member_is_still_read(tmp_path: Path) -> None:
    with ZipSource(save(tmp_path, _data_descriptor())) as source:
        # The descriptors are accounted for, and the zeroed local sizes are not compared.
        assert codes(source) == {"TA-E110", "TA-W102"}
        assert source.read("data/a") == b"described"


def test_bytes_before_the_first_member_are_reported(tmp_path: Path) -> None:
    # zipfile appends a ZIP to a non-ZIP file with offsets counted from the file's start.
    path = save(tmp_path, b"#!/bin/sh\nexit 0\n")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("mimetype", MIMETYPE)
    with ZipSource(path) as source:
        assert [(p.code, p.path) for p in source.problems] == [("TA-E108", "mimetype")]
        assert source.read("mimetype") == MIMETYPE.encode()


def test_truncated_zip_raises(tmp_path: Path) -> None:
    data = build(FILES)
    with pytest.raises(ArchiveError) as caught:
        ZipSource(save(tmp_path, data[: len(data) // 2]))
    assert caught.value.code == "TA-E100"


# -- DirectorySource ------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "mimetype").write_text(MIMETYPE)
    (root / "data" / "a.bin").write_bytes(bytes(range(256)) * 10)
    (root / "data" / "sub" / "b.txt").write_bytes(b"inside")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    (outside / "sub" / "b.txt").write_bytes(b"secret")
    return root


def test_directory_source_lists_and_reads(tree: Path) -> None:
    with DirectorySource(tree) as source:
        assert source.problems == []
        assert {path: m.size for path, m in source.members().items()} == {
            "mimetype": len(MIMETYPE),
            "data/a.bin": 2560,
            "data/sub/b.txt": 6,
        }
        assert source.read("data/a.bin", 250, 10) == (bytes(range(256)) * 2)[250:260]
        assert source.read("data/sub/b.txt") == b"inside"
        with source.open("data/a.bin") as stream:
            stream.seek(256)
            assert stream.read(3) == b"\x00\x01\x02"
        span = source.span("data/sub/b.txt")
        assert span.file.read_bytes() == b"inside" and span.length == 6


def test_directory_source_reports_links_and_special_files(tree: Path) -> None:
    (tree / "data" / "inner-link").symlink_to("a.bin")
    (tree / "data" / "outer-link").symlink_to(tree.parent / "outside" / "secret")
    (tree / "data" / "dir-link").symlink_to(tree.parent / "outside")
    os.mkfifo(tree / "data" / "fifo")
    with DirectorySource(tree) as source:
        flagged = {"data/inner-link", "data/outer-link", "data/dir-link", "data/fifo"}
        assert {(p.code, p.path) for p in source.problems} == {("TA-E203", p) for p in flagged}
        assert set(source.members()) == {"mimetype", "data/a.bin", "data/sub/b.txt"}
        for path in flagged | {"data/dir-link/secret"}:
            with pytest.raises(KeyError):
                source.read(path)


@pytest.mark.parametrize(
    ("replaced", "target"), [("data/sub/b.txt", "outside/secret"), ("data/sub", "outside/sub")]
)
def test_directory_source_never_follows_links_made_after_listing(
    tree: Path, replaced: str, target: str
) -> None:
    with DirectorySource(tree) as source:
        victim = tree / replaced
        os.rename(victim, tree.parent / "moved-away")
        victim.symlink_to(tree.parent / target)
        for read in (lambda: source.read("data/sub/b.txt"), lambda: source.open("data/sub/b.txt")):
            with pytest.raises(ArchiveError) as caught:
                read()
            assert caught.value.code == "TA-E203"


def test_directory_source_refuses_a_fifo_made_after_listing(tree: Path) -> None:
    def blocked(signum: int, frame: object) -> None:
        raise TimeoutError("opening the FIFO blocked, waiting for a writer")

    with DirectorySource(tree) as source:
        (tree / "data" / "a.bin").unlink()
        os.mkfifo(tree / "data" / "a.bin")
        previous = signal.signal(signal.SIGALRM, blocked)
        signal.alarm(5)
        try:
            with pytest.raises(ArchiveError) as caught:
                source.read("data/a.bin")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert caught.value.code == "TA-E203"


def test_directory_source_keeps_undecodable_names(tree: Path) -> None:
    with open(os.fsencode(tree / "data") + b"/caf\xe9", "wb") as latin1:
        latin1.write(b"bytes")
    with DirectorySource(tree) as source:
        path = "data/caf\udce9"
        assert source.read(path) == b"bytes"
        assert [p.code for p in path_problems(path)] == ["TA-E200"]


# -- A stream from any offset (the archive route's ranges) ------------------------------------


def _members(sizes: list[int]) -> list[ZipEntry]:
    contents = [bytes([index % 251]) * size for index, size in enumerate(sizes)]
    return [
        ZipEntry(f"data/f{index}", len(content), zlib.crc32(content), lambda c=content: [c], 0)
        for index, content in enumerate(contents)
    ]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 9000), min_size=1, max_size=5),
    where=st.floats(0, 1),
)
def test_a_stream_from_any_offset_is_that_span_of_the_whole(sizes, where):
    """zip_stream(start=N) is the whole stream's bytes from N on, wherever N falls (a
    header, alignment padding, a member's data, the central directory), and zip_length is
    the whole stream's length, computed without reading a member."""
    members = _members(sizes)
    whole = b"".join(zip_stream(members))
    assert zip_length(members) == len(whole)
    start = int(where * len(whole))
    assert b"".join(zip_stream(members, start=start)) == whole[start:]
    with zipfile.ZipFile(io.BytesIO(whole)) as zipped:
        assert zipped.testzip() is None


def test_the_layout_digest_changes_with_any_member_and_only_then():
    members = _members([10, 20])
    again = _members([10, 20])
    other = _members([10, 21])
    assert zip_layout_digest(members) == zip_layout_digest(again)
    assert zip_layout_digest(members) != zip_layout_digest(other)


@given(st.integers(315532800, 4354819198))
def test_dos_times_decode_to_what_was_encoded_to_two_seconds(moment):
    dos_date, dos_time = _dos_datetime(moment)
    assert dos_to_epoch(dos_time, dos_date) == moment - moment % 2
