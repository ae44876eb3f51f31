"""Generate the conformance fixtures: ``conformance/fixtures/{valid,invalid,warning}/NAME/``.

    .venv/bin/python conformance/generate.py [OUT]     # default OUT: conformance/fixtures

Each fixture holds the archive in directory form (``archive/``), in ZIP form (``archive.zip``) or
both, and ``expected.json``: a description and, per form, the exact set of codes a validator must
report. The expected codes are written here by hand, from the spec; they are never computed by
running the validator.

How: two good archives are built with the reference writer (``create(..., reproducible=True)``)
from tiny generated files: ``minimal`` (a CSV table and a .npy array) and ``real`` (HDF5, CSV and
TIFF). Their catalogs are rewritten with 512-byte pages (still valid; Tiled's 4096-byte pages
would make each fixture 300 KB, the whole tree over 15 MB). Every invalid or warning fixture then
applies one targeted change to ``minimal``, and re-seals whatever else the change would make
inconsistent (manifest, BagIt files), so that only the rule under test is broken. ZIP forms are
written by the reference ZIP writer (``zipwriter.zip_stream``), then patched byte by byte.

The output depends only on this script and the versions of the libraries that write the data
and the catalog (Tiled, SQLite, pyarrow, h5py): ``tests/test_conformance.py`` regenerates the
tree and compares it byte for byte with the checked-in one.

The symbolic-link fixture (TA-E203) is a real symbolic link, which git stores as such; on a
checkout without symlink support (Windows without ``core.symlinks``) it becomes a small text file
and that fixture fails, as it should: the checkout no longer holds the fixture.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiled_archive.rules import bag
from tiled_archive.rules.manifest import FetchRecord, FetchSource, FileEntry, Manifest
from tiled_archive.rules.names import (
    BAG_INFO_NAME,
    BAGIT_NAME,
    CATALOG_NAME,
    MANIFEST_NAME,
    MIMETYPE_NAME,
    PAYLOAD_MANIFEST_NAME,
    TAG_FILES,
    TAG_MANIFEST_NAME,
)
from tiled_archive.rules.paths import is_payload_path
from tiled_archive.writer import DOS_EPOCH, create
from tiled_archive.zip.stream import ZipEntry, zip_stream

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KINDS = ("valid", "invalid", "warning")
PAGE_SIZE = 512
TABLE = "data/sample/table.csv"
ARRAY = "data/sample/array.npy"


@dataclass(frozen=True)
class Symlink:
    """A symbolic link in a directory-form fixture (its target, relative to the link)."""

    target: str


Tree = dict[str, "bytes | Symlink"]
Forms = dict[str, "Tree | bytes"]


@dataclass(frozen=True)
class Bases:
    """The good archives every fixture starts from, as path -> bytes in ZIP member order."""

    minimal: Tree
    real: Tree


@dataclass(frozen=True)
class Fixture:
    """One fixture: its kind and name (its folder), the codes each form must produce, and the
    function that builds its forms from the good archives."""

    kind: str
    name: str
    description: str
    expected: dict[str, list[str]]
    build: Callable[[Bases], Forms]


FIXTURE_LIST: list[Fixture] = []


def fixture(kind: str, name: str, description: str, **expected: list[str]) -> Callable:
    """Register a fixture; ``expected`` maps each form it has to the codes it must produce."""

    def register(build: Callable[[Bases], Forms]) -> Callable[[Bases], Forms]:
        FIXTURE_LIST.append(Fixture(kind, name, description, expected, build))
        return build

    return register


# -- Archives as trees of bytes ---------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_tree(root: Path) -> Tree:
    """Every file below ``root``, in the reference writer's ZIP member order."""
    files = {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }
    head = [MIMETYPE_NAME, *TAG_FILES[1:], TAG_MANIFEST_NAME, CATALOG_NAME]
    return {name: files[name] for name in [*head, *sorted(set(files) - set(head))]}


def write_tree(tree: Tree, root: Path) -> None:
    for name, content in tree.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            target.symlink_to(content.target)
        else:
            target.write_bytes(content)


def manifest_of(tree: Tree) -> Manifest:
    return Manifest.loads(tree[MANIFEST_NAME])  # type: ignore[arg-type]


def seal(tree: Tree, manifest: Manifest | None = None) -> None:
    """Make the manifest and BagIt files describe ``tree`` (or say what ``manifest`` says)."""
    if manifest is None:
        files = [
            FileEntry(path, len(data), sha256(data))
            for path, data in tree.items()
            if is_payload_path(path) and isinstance(data, bytes)
        ]
        catalog = tree[CATALOG_NAME]
        manifest = dataclasses.replace(
            manifest_of(tree),
            files=tuple(files),
            catalog=FileEntry(CATALOG_NAME, len(catalog), sha256(catalog)),  # type: ignore[arg-type]
        )
    tree[MANIFEST_NAME] = manifest.dumps()
    tree[PAYLOAD_MANIFEST_NAME] = bag.payload_manifest(manifest)
    tree[BAG_INFO_NAME] = bag.bag_info(manifest)
    retag(tree)


def retag(tree: Tree) -> None:
    """Rewrite ``tagmanifest-sha256.txt`` for the tag files as they are now."""
    names = [name for name in (*TAG_FILES, CATALOG_NAME) if name in tree]
    tree[TAG_MANIFEST_NAME] = bag.digest_lines({n: sha256(tree[n]) for n in names})  # type: ignore[arg-type]


@contextlib.contextmanager
def catalog(tree: Tree) -> Iterator[sqlite3.Connection]:
    """A connection to a copy of the tree's catalog.db, written back when the block succeeds."""
    with tempfile.TemporaryDirectory() as work:
        db = Path(work, CATALOG_NAME)
        db.write_bytes(tree[CATALOG_NAME])  # type: ignore[arg-type]
        conn = sqlite3.connect(db, isolation_level=None)  # autocommit: VACUUM and PRAGMAs work
        try:
            yield conn
        finally:
            conn.close()
        tree[CATALOG_NAME] = db.read_bytes()


def rename(tree: Tree, old: str, new: str) -> Tree:
    """The tree with one payload file renamed everywhere: its path, the manifest, its asset."""
    renamed = {(new if name == old else name): content for name, content in tree.items()}
    with catalog(renamed) as conn:
        conn.execute("UPDATE assets SET data_uri = ? WHERE data_uri = ?", (new, old))
    seal(renamed)
    return renamed


def build_base(work: Path, name: str, write: Callable[[Path], None]) -> Tree:
    """A good archive of the files ``write`` puts in a folder ``name``, with small pages."""
    source = work / "sources" / name
    source.mkdir(parents=True)
    write(source)
    create(work / name, [source], reproducible=True)
    tree = read_tree(work / name)
    with catalog(tree) as conn:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("VACUUM")
    seal(tree)
    return tree


def minimal_files(folder: Path) -> None:
    (folder / "table.csv").write_bytes(b"x,y\n1,2.5\n2,3.5\n3,4.5\n")
    np.save(folder / "array.npy", np.arange(12.0).reshape(4, 3))


def real_files(folder: Path) -> None:
    import h5py
    import tifffile

    with h5py.File(folder / "scan.h5", "w") as f:
        f.attrs["sample"] = "Si (111)"
        data = np.arange(64, dtype="uint16").reshape(4, 4, 4)
        f.create_dataset("intensity", data=data, track_times=False)  # no clock in the bytes
    tifffile.imwrite(folder / "image.tif", np.arange(64, dtype="uint8").reshape(8, 8))
    (folder / "table.csv").write_bytes(b"energy,counts\n8.0,10\n8.5,12\n9.0,7\n")


# -- ZIP bytes --------------------------------------------------------------------------------

_LOCAL = {"flags": (6, "<H"), "method": (8, "<H"), "crc": (14, "<I"), "size": (22, "<I")}
_CENTRAL = {
    "flags": (8, "<H"),
    "method": (10, "<H"),
    "crc": (16, "<I"),
    "size": (24, "<I"),
    "external": (38, "<I"),
}
_END = {
    "disk": (4, "<H"),
    "entries_here": (8, "<H"),
    "entries": (10, "<H"),
    "cd_size": (12, "<I"),
    "comment": (20, "<H"),
}


def to_zip(
    entries: Iterable[tuple[str, bytes]],
    *,
    unaligned: Iterable[str] = (MIMETYPE_NAME,),
    force_zip64: bool = False,
) -> bytearray:
    """A ZIP of ``entries`` (in order, duplicates kept) by the reference ZIP writer."""
    skip = set(unaligned)
    zip_entries = [
        ZipEntry(
            name, len(data), zlib.crc32(data), lambda data=data: [data], DOS_EPOCH, name not in skip
        )
        for name, data in entries
    ]
    return bytearray(b"".join(zip_stream(zip_entries, force_zip64=force_zip64)))


def tree_zip(tree: Tree, **options: object) -> bytearray:
    return to_zip(tree.items(), **options)  # type: ignore[arg-type]


def end_record(data: bytearray) -> int:
    return data.rindex(b"PK\x05\x06")


def records(data: bytearray) -> dict[str, tuple[int, int]]:
    """Where each member's local header and central directory record start, by name."""
    end = end_record(data)
    count, _, cd_offset = struct.unpack_from("<HII", data, end + 10)
    found = {}
    position = cd_offset
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        name = data[position + 46 : position + 46 + name_length].decode()
        found[name] = (struct.unpack_from("<I", data, position + 42)[0], position)
        position += 46 + name_length + extra_length + comment_length
    return found


def patch(
    data: bytearray, name: str, *, headers: Iterable[str] = ("local", "central"), **fields: int
) -> bytearray:
    """Set fields of one member's local header and/or central directory record."""
    local, central = records(data)[name]
    for header, start, layout in (("local", local, _LOCAL), ("central", central, _CENTRAL)):
        for key, value in fields.items():
            if header in headers and key in layout:
                offset, fmt = layout[key]
                struct.pack_into(fmt, data, start + offset, value)
    return data


def patch_end(data: bytearray, **fields: int) -> bytearray:
    end = end_record(data)
    for key, value in fields.items():
        offset, fmt = _END[key]
        struct.pack_into(fmt, data, end + offset, value)
    return data


# -- Valid fixtures ---------------------------------------------------------------------------


@fixture(
    "valid",
    "minimal",
    "A CSV table and a .npy array, as the reference writer makes them.",
    directory=[],
    zip=[],
)
def valid_minimal(bases: Bases) -> Forms:
    return {"directory": bases.minimal, "zip": tree_zip(bases.minimal)}


@fixture(
    "valid", "real-data", "HDF5, CSV and TIFF files registered by Tiled.", directory=[], zip=[]
)
def valid_real(bases: Bases) -> Forms:
    return {"directory": bases.real, "zip": tree_zip(bases.real)}


@fixture(
    "valid",
    "zip64-everywhere",
    "ZIP64 fields on every member and end records, where 32 bits would do (writers MAY use them).",
    zip=[],
)
def valid_zip64(bases: Bases) -> Forms:
    return {"zip": tree_zip(bases.minimal, force_zip64=True)}


def info_zip_like(entries: Iterable[tuple[str, bytes]]) -> bytearray:
    """A ZIP of ``entries`` (in order; names ending in ``/`` are folder entries) as Info-ZIP
    3.0 writes one, STORED: no member sets the UTF-8 flag (bit 11), whatever its name, and
    every member but the first carries Info-ZIP's extra fields, "UT" (0x5455, times) and "ux"
    (0x7875, owner), in its local header and central directory record. Unlike Info-ZIP, each
    also carries alignment padding (0xA11E), so that the fixture has no TA-W102."""
    mtime = DOS_EPOCH
    dos_time, dos_date = 0, 33  # 1980-01-01 00:00:00
    out, central = bytearray(), bytearray()
    count = 0
    for index, (name, data) in enumerate(entries):
        encoded = name.encode("utf-8")
        folder = name.endswith("/")
        crc = zlib.crc32(data)
        extra = b""
        central_extra = b""
        if index:
            owner = struct.pack("<HHBBIBI", 0x7875, 11, 1, 4, 1000, 4, 1000)
            extra = struct.pack("<HHBII", 0x5455, 9, 3, mtime, mtime) + owner
            central_extra = struct.pack("<HHBI", 0x5455, 5, 3, mtime) + owner
            if not folder:
                start = len(out) + 30 + len(encoded) + len(extra) + 6
                padding = -start % 4096
                extra += struct.pack("<HHH", 0xA11E, 2 + padding, 4096) + bytes(padding)
        local = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 10, 0, 0, dos_time, dos_date, crc, len(data),
            len(data), len(encoded), len(extra),
        )  # fmt: skip
        offset = len(out)
        out += local + encoded + extra + data
        mode = (0o40755 << 16) | 0x10 if folder else 0o100644 << 16
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 10, 0, 0, dos_time, dos_date, crc,
            len(data), len(data), len(encoded), len(central_extra), 0, 0, 0, mode, offset,
        ) + encoded + central_extra  # fmt: skip
        count += 1
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(out), 0)
    return out + central + end


@fixture(
    "valid",
    "info-zip-names-and-extra-fields",
    "A ZIP as Info-ZIP 3.0 writes one: a non-ASCII UTF-8 name (größe.csv) without the UTF-8 "
    "flag (bit 11), which no member sets; Info-ZIP's UT and ux extra fields on every member but "
    "mimetype; folder entries.",
    zip=[],
)
def valid_info_zip(bases: Bases) -> Forms:
    tree = rename(bases.minimal, TABLE, "data/sample/gr\u00f6\u00dfe.csv")
    items = list(tree.items())
    first_payload = next(i for i, (name, _) in enumerate(items) if is_payload_path(name))
    folders = [("data/", b""), ("data/sample/", b"")]
    return {"zip": info_zip_like(items[:first_payload] + folders + items[first_payload:])}  # type: ignore[operator]


# -- Invalid fixtures: layout, manifest, BagIt files --------------------------------------------


@fixture(
    "invalid",
    "E001-not-an-archive",
    "A text file, and a folder without `mimetype`.",
    directory=["TA-E001"],
    zip=["TA-E001"],
)
def e001(bases: Bases) -> Forms:
    return {
        "directory": {"notes.txt": b"A folder without a mimetype file.\n"},
        "zip": bytearray(b"A text file, not a ZIP.\n"),
    }


@fixture("invalid", "E002-missing-bagit-txt", "bagit.txt is missing.", directory=["TA-E002"])
def e002(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    del tree[BAGIT_NAME]
    return {"directory": tree}


@fixture(
    "invalid", "E003-mimetype-with-newline", "mimetype ends in a newline.", directory=["TA-E003"]
)
def e003(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    tree[MIMETYPE_NAME] += b"\n"  # type: ignore[operator]
    retag(tree)
    return {"directory": tree}


@fixture("invalid", "E200-percent-in-name", "A payload file named with `%`.", directory=["TA-E200"])
def e200(bases: Bases) -> Forms:
    return {"directory": rename(bases.minimal, TABLE, "data/sample/table%20v2.csv")}


@fixture(
    "invalid",
    "E201-absolute-member-name",
    "An extra ZIP member named `/tmp/evil.txt`.",
    zip=["TA-E201"],
)
def e201(bases: Bases) -> Forms:
    return {"zip": to_zip([*bases.minimal.items(), ("/tmp/evil.txt", b"outside\n")])}  # type: ignore[list-item]


@fixture("invalid", "E202-long-name", "A payload file name of 256 bytes.", zip=["TA-E202"])
def e202(bases: Bases) -> Forms:
    return {"zip": tree_zip(rename(bases.minimal, TABLE, "data/sample/" + "t" * 252 + ".csv"))}


@fixture("invalid", "E203-symlink", "A symbolic link below data/.", directory=["TA-E203"])
def e203(bases: Bases) -> Forms:
    return {"directory": {**bases.minimal, "data/sample/link.csv": Symlink("table.csv")}}


@fixture(
    "invalid", "E300-manifest-not-json", "tiled-archive.json is cut short.", directory=["TA-E300"]
)
def e300(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    tree[MANIFEST_NAME] = b'{"format": "tiled-archive",\n'
    retag(tree)
    return {"directory": tree}


def with_manifest(tree: Tree, **changes: object) -> Tree:
    """A copy of ``tree`` whose manifest (and BagIt files) say something else."""
    changed = dict(tree)
    seal(changed, dataclasses.replace(manifest_of(tree), **changes))
    return changed


# Fixtures that change the manifest alone (the BagIt files re-sealed to agree with it).
for _kind, _name, _description, _changes in (
    ("invalid", "E301-manifest-schema", "`created` is not a UTC time.", {"created": "yesterday"}),
    ("invalid", "E302-major-version", "format_version 2.0.", {"format_version": "2.0"}),
    ("warning", "W300-newer-minor-version", "format_version 1.9.", {"format_version": "1.9"}),
    ("invalid", "E301-root-specs-not-objects", "The manifest's `root` (1.1) lists a spec as a "
     "bare string.", {"extra": {"root": {"metadata": {}, "specs": ["xdi"]}}}),
):  # fmt: skip
    fixture(_kind, _name, _description, directory=[f"TA-{_name.split('-')[0]}"])(
        lambda bases, changes=_changes: {"directory": with_manifest(bases.minimal, **changes)}
    )

ROOT_AND_PROVENANCE = {
    "root": {"metadata": {"facility": "beamline 7"}, "specs": [{"name": "xdi", "version": "1"}]},
    "provenance": {
        "server": "https://tiled.example.org/api/v1/",
        "node": "/scans",
        "queries": [{"type": "Eq", "key": "sample", "value": "Si"}],
        "tiled_version": "0.2.20",
        "retrieved": "2026-12-02T00:00:00Z",
    },
}


@fixture(
    "valid",
    "root-and-provenance",
    "Format 1.1's optional manifest fields: the root's metadata and specs, and provenance.",
    directory=[],
)
def valid_root_and_provenance(bases: Bases) -> Forms:
    return {"directory": with_manifest(bases.minimal, extra=ROOT_AND_PROVENANCE)}


def history_entry(updated: str, **changes: object) -> dict[str, object]:
    """One entry of the manifest's ``history`` (1.3, spec 4.2)."""
    entry = {
        "updated": updated,
        "tiled_version": "0.2.20",
        "previous_manifest_sha256": "5b" * 32,
        "added": 1,
        "removed": 0,
        "changed": 2,
        "fetched_bytes": 4096,
    }
    return entry | changes


def with_history(tree: Tree, *entries: dict[str, object]) -> Tree:
    """``tree`` updated as ``entries`` say (provenance retrieved at the last one)."""
    provenance = {**ROOT_AND_PROVENANCE["provenance"], "retrieved": entries[-1]["updated"]}
    extra = {**ROOT_AND_PROVENANCE, "provenance": provenance, "history": list(entries)}
    return with_manifest(tree, extra=extra)


@fixture(
    "valid",
    "history",
    "Format 1.3's optional history: two updates, oldest first.",
    directory=[],
)
def valid_history(bases: Bases) -> Forms:
    entries = (history_entry("2026-12-03T00:00:00Z"), history_entry("2026-12-07T13:00:00Z"))
    return {"directory": with_history(bases.minimal, *entries)}


@fixture(
    "warning",
    "W311-history-out-of-order",
    "The second history entry is dated before the first.",
    directory=["TA-W311"],
)
def w311(bases: Bases) -> Forms:
    entries = (history_entry("2026-12-07T13:00:00Z"), history_entry("2026-12-03T00:00:00Z"))
    return {"directory": with_history(bases.minimal, *entries)}


@fixture(
    "invalid",
    "E301-history-entry-without-digest",
    "A history entry does not name the manifest it replaced.",
    directory=["TA-E301"],
)
def e301_history(bases: Bases) -> Forms:
    entry = history_entry("2026-12-07T13:00:00Z", previous_manifest_sha256="unknown")
    return {"directory": with_history(bases.minimal, entry)}


@fixture(
    "invalid",
    "E303-manifest-path-outside-data",
    "The manifest lists bagit.txt.",
    directory=["TA-E303"],
)
def e303(bases: Bases) -> Forms:
    bagit = bases.minimal[BAGIT_NAME]
    extra = FileEntry(BAGIT_NAME, len(bagit), sha256(bagit))  # type: ignore[arg-type]
    return {
        "directory": with_manifest(bases.minimal, files=(*manifest_of(bases.minimal).files, extra))
    }


@fixture("invalid", "E304-listed-twice", "The manifest lists a file twice.", directory=["TA-E304"])
def e304(bases: Bases) -> Forms:
    files = manifest_of(bases.minimal).files
    return {"directory": with_manifest(bases.minimal, files=(*files, files[0]))}


@fixture(
    "invalid",
    "E305-missing-payload-file",
    "A listed file (an asset) was deleted.",
    directory=["TA-E305", "TA-E504"],
)
def e305(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    del tree[TABLE]
    return {"directory": tree}


LAZY_ORIGIN = "https://tiled.example.org/api/v1/"


def lazy(
    tree: Tree,
    url: str = "asset/bytes/sample/table?id=1",
    origin: str = LAZY_ORIGIN,
    etag: str = '"5f1c9a0e"',
) -> Tree:
    """``tree`` as an incomplete archive (spec 4.1): the table's file fetched from ``url``."""
    record = FetchRecord(origin, {TABLE: FetchSource(url, etag, None)})
    return with_manifest(tree, fetch=record)


@fixture(
    "warning",
    "W310-lazy-archive-file-absent",
    "Format 1.2's incomplete (lazy) directory archive: a file its fetch record lists is absent.",
    directory=["TA-W310"],
)
def w310(bases: Bases) -> Forms:
    tree = lazy(bases.minimal)
    del tree[TABLE]
    return {"directory": tree}


@fixture(
    "invalid",
    "E305-lazy-zip-file-absent",
    "A ZIP must hold every file: one its fetch record lists is missing all the same.",
    zip=["TA-E305", "TA-E504"],
)
def e305_lazy_zip(bases: Bases) -> Forms:
    tree = lazy(bases.minimal)
    del tree[TABLE]
    return {"zip": tree_zip(tree)}


@fixture(
    "valid",
    "lazy-archive-complete",
    "An incomplete-capable archive whose every file is present: its fetch record only says "
    "where the files came from.",
    directory=[],
    zip=[],
)
def valid_lazy_complete(bases: Bases) -> Forms:
    tree = lazy(bases.minimal)
    return {"directory": tree, "zip": tree_zip(tree)}


for _name, _description, _changes in (
    ("E310-fetch-url-leaves-origin", "A fetch URL climbs out of the origin (`../`).",
     {"url": "asset/../../admin?id=1"}),
    ("E310-fetch-url-absolute", "A fetch URL names another host.",
     {"url": "//evil.example.org/x"}),
    ("E310-fetch-origin-with-credentials", "The fetch origin carries a user name and password.",
     {"origin": "https://user:secret@tiled.example.org/api/v1/"}),
    ("E310-fetch-validator-not-ascii", "A recorded ETag holds a line break (it is sent back "
     "in a request header).", {"etag": '"5f1c"\r\nX-Injected: 1'}),
):  # fmt: skip
    fixture("invalid", _name, _description, directory=["TA-E310"])(
        lambda bases, changes=_changes: {"directory": lazy(bases.minimal, **changes)}
    )


@fixture(
    "invalid",
    "E306-unlisted-payload-file",
    "A file was added below data/.",
    directory=["TA-E306", "TA-W500"],
)
def e306(bases: Bases) -> Forms:
    return {"directory": {**bases.minimal, "data/sample/notes.txt": b"added later\n"}}


@fixture(
    "invalid", "E307-size-mismatch", "A line was appended to a payload file.", directory=["TA-E307"]
)
def e307(bases: Bases) -> Forms:
    return {"directory": {**bases.minimal, TABLE: bases.minimal[TABLE] + b"4,5.5\n"}}  # type: ignore[operator]


@fixture(
    "invalid",
    "E308-flipped-byte",
    "One byte of a payload file flipped (in a ZIP, the member's CRC-32 no longer matches either).",
    directory=["TA-E308"],
    zip=["TA-E111", "TA-E308"],
)
def e308(bases: Bases) -> Forms:
    original = bases.minimal[ARRAY]
    flipped = {**bases.minimal, ARRAY: original[:-1] + bytes([original[-1] ^ 0x01])}  # type: ignore[index]
    data = tree_zip(bases.minimal)
    local, _ = records(data)[ARRAY]
    name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
    data[local + 30 + name_length + extra_length + len(original) - 1] ^= 0x01  # type: ignore[arg-type]
    return {"directory": flipped, "zip": data}


@fixture(
    "invalid",
    "E309-catalog-changed",
    "catalog.db edited after the manifest was written (the tag manifest was updated).",
    directory=["TA-E309"],
)
def e309(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    with catalog(tree) as conn:
        conn.execute("""UPDATE nodes SET metadata = '{"note": "edited"}' WHERE key = 'table'""")
    retag(tree)
    return {"directory": tree}


def with_tag_file(tree: Tree, name: str, content: bytes) -> Tree:
    """A copy of ``tree`` with one tag file replaced (and the tag manifest updated)."""
    changed = {**tree, name: content}
    if name != TAG_MANIFEST_NAME:
        retag(changed)
    return changed


@fixture("invalid", "E400-bagit-version", "bagit.txt declares BagIt 0.97.", directory=["TA-E400"])
def e400(bases: Bases) -> Forms:
    content = b"BagIt-Version: 0.97\nTag-File-Character-Encoding: UTF-8\n"
    return {"directory": with_tag_file(bases.minimal, BAGIT_NAME, content)}


@fixture(
    "invalid",
    "E401-payload-manifest-digest",
    "manifest-sha256.txt has a wrong digest.",
    directory=["TA-E401"],
)
def e401(bases: Bases) -> Forms:
    lines = bases.minimal[PAYLOAD_MANIFEST_NAME].splitlines(keepends=True)  # type: ignore[union-attr]
    lines[0] = b"0" * 64 + lines[0][64:]
    return {"directory": with_tag_file(bases.minimal, PAYLOAD_MANIFEST_NAME, b"".join(lines))}


@fixture(
    "invalid",
    "E402-tagmanifest-missing-line",
    "tagmanifest-sha256.txt omits catalog.db.",
    directory=["TA-E402"],
)
def e402(bases: Bases) -> Forms:
    lines = bases.minimal[TAG_MANIFEST_NAME].splitlines(keepends=True)  # type: ignore[union-attr]
    kept = b"".join(line for line in lines if not line.endswith(b"  catalog.db\n"))
    return {"directory": with_tag_file(bases.minimal, TAG_MANIFEST_NAME, kept)}


@fixture(
    "invalid", "E403-payload-oxum", "Payload-Oxum counts one byte too many.", directory=["TA-E403"]
)
def e403(bases: Bases) -> Forms:
    oxum = manifest_of(bases.minimal).payload_oxum
    octets, count = oxum.split(".")
    info = bases.minimal[BAG_INFO_NAME].replace(  # type: ignore[union-attr]
        oxum.encode(), f"{int(octets) + 1}.{count}".encode()
    )
    return {"directory": with_tag_file(bases.minimal, BAG_INFO_NAME, info)}


@fixture(
    "warning",
    "W301-manifest-not-canonical",
    "tiled-archive.json holds the same document on one line, keys in another order.",
    directory=["TA-W301"],
)
def w301(bases: Bases) -> Forms:
    document = json.loads(bases.minimal[MANIFEST_NAME])
    reordered = dict(reversed(list(document.items())))
    return {
        "directory": with_tag_file(bases.minimal, MANIFEST_NAME, json.dumps(reordered).encode())
    }


@fixture(
    "warning",
    "W401-bagit-lines-unsorted",
    "manifest-sha256.txt lists data/sample/table.csv before data/sample/array.npy.",
    directory=["TA-W401"],
)
def w401(bases: Bases) -> Forms:
    lines = bases.minimal[PAYLOAD_MANIFEST_NAME].splitlines(keepends=True)  # type: ignore[union-attr]
    assert len(lines) == 2
    return {
        "directory": with_tag_file(bases.minimal, PAYLOAD_MANIFEST_NAME, b"".join(reversed(lines)))
    }


@fixture(
    "warning",
    "W400-bag-info-without-agent",
    "bag-info.txt holds only Payload-Oxum.",
    directory=["TA-W400"],
)
def w400(bases: Bases) -> Forms:
    oxum = manifest_of(bases.minimal).payload_oxum
    info = f"Payload-Oxum: {oxum}\n".encode()
    return {"directory": with_tag_file(bases.minimal, BAG_INFO_NAME, info)}


# -- Invalid fixtures: catalog.db ---------------------------------------------------------------


def with_catalog(tree: Tree, *statements: str) -> Tree:
    """A copy of ``tree`` with SQL run on its catalog, then sealed."""
    changed = dict(tree)
    with catalog(changed) as conn:
        for statement in statements:
            conn.execute(statement)
    seal(changed)
    return changed


@fixture(
    "invalid",
    "E500-catalog-index-corrupt",
    "One byte of an index page of catalog.db changed: the index no longer matches its table.",
    directory=["TA-E500"],
)
def e500(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    with catalog(tree) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ix_assets_data_uri'"
        ).fetchone()
    data = bytearray(tree[CATALOG_NAME])  # type: ignore[arg-type]
    page = (root - 1) * PAGE_SIZE
    at = data.index(TABLE.encode(), page, page + PAGE_SIZE)
    data[at + len("data/sample/")] ^= 0x20  # table.csv -> Table.csv, in the index only
    tree[CATALOG_NAME] = bytes(data)
    seal(tree)
    return {"directory": tree}


@fixture(
    "invalid",
    "E501-unknown-schema-revision",
    "catalog.db (and the manifest) name an unknown Tiled schema revision.",
    directory=["TA-E501"],
)
def e501(bases: Bases) -> Forms:
    tree = with_catalog(bases.minimal, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    return {"directory": with_manifest(tree, tiled_schema_revision="ffffffffffff")}


@fixture(
    "invalid",
    "E506-root-node-missing",
    "No root row (id 0): the top-level node has parent NULL instead of 0.",
    directory=["TA-E506"],
)
def e506_root(bases: Bases) -> Forms:
    return {
        "directory": with_catalog(
            bases.minimal,
            "UPDATE nodes SET parent = NULL WHERE parent = 0",
            "DELETE FROM nodes WHERE id = 0",
        )
    }


@fixture(
    "invalid",
    "E504-asset-without-file",
    "An asset's file is missing (and unlisted).",
    directory=["TA-E504"],
)
def e504(bases: Bases) -> Forms:
    tree = dict(bases.minimal)
    del tree[TABLE]
    seal(tree)
    return {"directory": tree}


# Fixtures that are one SQL statement on the catalog (the manifest re-sealed to agree with it).
for _kind, _name, _description, _codes, _sql in (
    ("invalid", "E502-missing-table", "catalog.db lacks the table `revisions`.", ["TA-E502"],
     "DROP TABLE revisions"),
    ("invalid", "E502-optional-table-lacks-column", "catalog.db's `access_tags` table (not "
     "required, but read by Tiled) has a column renamed.", ["TA-E502"],
     "ALTER TABLE access_tags RENAME COLUMN time_created TO created"),
    ("warning", "W503-relocated-archive-moved", "Asset URIs relocated into another folder's "
     "data/ (a relocated archive that was moved or copied): read as the archive's own files.",
     ["TA-W503"],
     "UPDATE assets SET data_uri = 'file://localhost/nonexistent/archive/' || data_uri"),
    ("invalid", "E503-relocated-outside-the-archive", "An asset URI names a file in another "
     "folder's data/ that the archive does not hold.", ["TA-E503", "TA-W500"],
     "UPDATE assets SET data_uri = 'file://localhost/nonexistent/archive/data/sample/other.csv'"
     f" WHERE data_uri = '{TABLE}'"),
    ("invalid", "E505-asset-size", "An asset's size is one byte off.", ["TA-E505"],
     f"UPDATE assets SET size = size + 1 WHERE data_uri = '{TABLE}'"),
    ("invalid", "E506-invalid-structure", "An array structure's shape is a string.", ["TA-E506"],
     "UPDATE structures SET structure = json_set(structure, '$.shape', '4x3') WHERE id = "
     "(SELECT structure_id FROM data_sources WHERE mimetype = 'application/x-npy')"),
    ("invalid", "E506-value-of-wrong-type", "A data source's management is not one of Tiled's "
     "values.", ["TA-E506"],
     "UPDATE data_sources SET management = 'borrowed' WHERE mimetype = 'text/csv'"),
    ("invalid", "E506-time-not-parseable", "A node's time_updated is text no parser reads as a "
     "time.", ["TA-E506"],
     "UPDATE nodes SET time_updated = 'yesterday' WHERE key = 'array'"),
    ("invalid", "E506-time-with-utc-offset", "A node's time_updated carries a UTC offset "
     "(`+00:00`): catalog times are UTC without one.", ["TA-E506"],
     "UPDATE nodes SET time_updated = '1980-01-01 00:00:00+00:00' WHERE key = 'array'"),
    ("invalid", "E506-table-partitions-without-files", "A one-file CSV table's structure "
     "declares 1,000,000,000 partitions.", ["TA-E506"],
     "UPDATE structures SET structure = json_set(structure, '$.npartitions', 1000000000) WHERE"
     " id = (SELECT structure_id FROM data_sources WHERE mimetype = 'text/csv')"),
    ("invalid", "E506-text-not-utf8", "A node's key holds bytes that are not UTF-8.", ["TA-E506"],
     "UPDATE nodes SET key = CAST(X'6172726179ff' AS TEXT) WHERE key = 'array'"),
    ("invalid", "E506-dangling-asset", "An association row names an asset that does not exist.",
     ["TA-E506"],
     "UPDATE data_source_asset_association SET asset_id = 999 WHERE asset_id ="
     f" (SELECT id FROM assets WHERE data_uri = '{ARRAY}')"),
    ("invalid", "E506-node-without-data-source", "An array node's data source row is deleted.",
     ["TA-E506"],
     "DELETE FROM data_sources WHERE mimetype = 'application/x-npy'"),
    ("invalid", "E506-family-mismatch", "A table node's data source says it is an array.",
     ["TA-E506"],
     "UPDATE data_sources SET structure_family = 'array' WHERE mimetype = 'text/csv'"),
    ("invalid", "E506-metadata-not-object", "A node's metadata is the JSON null.", ["TA-E506"],
     "UPDATE nodes SET metadata = 'null' WHERE key = 'array'"),
    ("invalid", "E506-specs-not-specs", "A node's specs hold a string, not a spec object.",
     ["TA-E506"],
     "UPDATE nodes SET specs = '[\"xdi\"]' WHERE key = 'array'"),
    ("invalid", "E506-spec-name-not-text", "A node's spec has a number as its name.",
     ["TA-E506"],
     "UPDATE nodes SET specs = '[{\"name\": 1}]' WHERE key = 'array'"),
    ("invalid", "E506-parameters-null", "A data source's parameters are NULL.", ["TA-E506"],
     "UPDATE data_sources SET parameters = NULL WHERE mimetype = 'text/csv'"),
    ("invalid", "E506-data-source-without-asset", "A data source's association rows are deleted.",
     ["TA-E506"],
     "DELETE FROM data_source_asset_association WHERE data_source_id ="
     " (SELECT id FROM data_sources WHERE mimetype = 'text/csv')"),
    ("invalid", "E507-wal-mode", "catalog.db is in WAL journal mode.", ["TA-E507"],
     "PRAGMA journal_mode = WAL"),
    ("warning", "W501-unknown-mimetype", "A data source's mimetype has no Tiled adapter.",
     ["TA-W501"],
     "UPDATE data_sources SET mimetype = 'application/x-unknown' WHERE mimetype = 'text/csv'"),
    ("invalid", "E508-parameter-names-a-file", "The .npy data source carries a `data_uri` "
     "parameter naming a file outside the archive.", ["TA-E508"],
     "UPDATE data_sources SET parameters = json_object('data_uri', 'file://localhost/etc/passwd')"
     " WHERE mimetype = 'application/x-npy'"),
    ("invalid", "E508-csv-asset-as-data-uri", "The CSV file is given to its adapter as "
     "`data_uri` (Tiled's CSV adapter takes a list, `data_uris`).", ["TA-E508"],
     "UPDATE data_source_asset_association SET parameter = 'data_uri', num = NULL"
     " WHERE data_source_id = (SELECT id FROM data_sources WHERE mimetype = 'text/csv')"),
    ("invalid", "E509-deep-metadata", "A node's metadata nests 70 levels deep.", ["TA-E509"],
     "UPDATE nodes SET metadata = '" + '{"a": ' * 70 + "1" + "}" * 70 + "' WHERE key = 'array'"),
    ("invalid", "E602-structure-differs-from-header", "The catalog says the .npy array is 4 x 4; "
     "its header says 4 x 3.", ["TA-E602"],
     "UPDATE structures SET structure = json_set(structure, '$.shape', json('[4, 4]'), "
     "'$.chunks', json('[[4], [4]]')) WHERE id = "
     "(SELECT structure_id FROM data_sources WHERE mimetype = 'application/x-npy')"),
    ("warning", "W502-asset-without-hash", "A file asset has no hash.", ["TA-W502"],
     f"UPDATE assets SET hash_type = NULL, hash_content = NULL WHERE data_uri = '{TABLE}'"),
):  # fmt: skip
    fixture(_kind, _name, _description, directory=_codes)(
        lambda bases, sql=_sql: {"directory": with_catalog(bases.minimal, sql)}
    )


@fixture(
    "invalid",
    "E602-tiff-several-chunks",
    "The catalog chunks the 8 x 8 TIFF image in two row blocks; Tiled serves a TIFF file as "
    "one chunk (block 0, whole).",
    directory=["TA-E602"],
)
def e602_tiff_chunks(bases: Bases) -> Forms:
    sql = (
        "UPDATE structures SET structure = json_set(structure, '$.chunks', json('[[4, 4], [8]]'))"
        " WHERE id = (SELECT structure_id FROM data_sources WHERE mimetype = 'image/tiff')"
    )
    return {"directory": with_catalog(bases.real, sql)}


def padded_zarr(stored: int) -> Tree:
    """An archive of one Zarr v3 array of 10 int64 (``arange(10)``) as Tiled stores what a
    client writes in dask chunks of 3, 3, 3, 1: zarr chunks of 3 in a store of ``stored``
    elements (Tiled pads to whole chunks: 12), the catalog's structure shape 10 in those four
    chunks. Built in a folder of its own (the bases hold no Zarr)."""
    import zarr

    def write(folder: Path) -> None:
        store = zarr.open_array(
            folder / "padded.zarr", mode="w", shape=(stored,), chunks=(3,), dtype="int64",
            zarr_format=3, fill_value=0,
        )  # fmt: skip
        store[:10] = np.arange(10)

    from tiled.catalog.utils import compute_structure_id

    with tempfile.TemporaryDirectory() as work:
        tree = dict(build_base(Path(work), "sample", write))
    with catalog(tree) as conn:
        (old, text) = conn.execute(
            "SELECT id, structure FROM structures WHERE id ="
            " (SELECT structure_id FROM data_sources WHERE mimetype = 'application/x-zarr')"
        ).fetchone()
        structure = {**json.loads(text), "shape": [10], "chunks": [[3, 3, 3, 1]]}
        new = compute_structure_id(structure)  # as Tiled names it
        conn.execute(
            "INSERT INTO structures (id, structure) VALUES (?, ?)", (new, json.dumps(structure))
        )
        conn.execute("UPDATE data_sources SET structure_id = ? WHERE structure_id = ?", (new, old))
        conn.execute("DELETE FROM structures WHERE id = ?", (old,))
    seal(tree)
    return tree


@fixture(
    "valid",
    "zarr-padded-as-tiled-writes",
    "A Zarr array of 10 elements in uneven chunks (3, 3, 3, 1), stored as Tiled's client "
    "writes it: zarr chunks of 3 in a store padded to 12 (spec 3.3); reads give 10.",
    directory=[],
    zip=[],
)
def valid_zarr_padded(bases: Bases) -> Forms:
    tree = padded_zarr(12)
    return {"directory": tree, "zip": tree_zip(tree)}


@fixture(
    "invalid",
    "E602-zarr-padded-past-a-chunk",
    "The same array's store holds 15 elements: more than the catalog's 10, and more than the "
    "12 Tiled pads it to.",
    directory=["TA-E602"],
)
def e602_zarr_padded(bases: Bases) -> Forms:
    return {"directory": padded_zarr(15)}


# -- Invalid fixtures: data files ---------------------------------------------------------------


def with_file(tree: Tree, path: str, content: bytes, *statements: str) -> Tree:
    """A copy of ``tree`` with payload file ``path`` holding ``content`` (its asset's size and
    hash updated, and SQL run on the catalog), then sealed: only the file's content is bad."""
    changed = {**tree, path: content}
    with catalog(changed) as conn:
        conn.execute(
            "UPDATE assets SET size = ?, hash_content = ? WHERE data_uri = ?",
            (len(content), sha256(content), path),
        )
        for statement in statements:
            conn.execute(statement)
    seal(changed)
    return changed


def hdf5_bytes(write: Callable) -> bytes:
    """An HDF5 file's bytes, written by h5py through ``write(file)``."""
    import h5py

    with tempfile.TemporaryDirectory() as work:
        path = Path(work, "file.h5")
        with h5py.File(path, "w", track_order=True) as file:
            write(file)
        return path.read_bytes()


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


HDF5 = "data/real/scan.h5"
IMAGE = "data/real/image.tif"


@fixture(
    "invalid",
    "E600-hdf5-external-link",
    "The HDF5 file holds an external link to a file outside the archive.",
    directory=["TA-E600"],
    zip=["TA-E600"],
)
def e600(bases: Bases) -> Forms:
    import h5py

    def write(file: h5py.File) -> None:
        file.create_dataset("intensity", data=np.arange(4, dtype="uint16"), track_times=False)
        file["outside"] = h5py.ExternalLink("/etc/tiled-archive-canary.h5", "/data")

    tree = with_file(bases.real, HDF5, hdf5_bytes(write))
    return {"directory": tree, "zip": tree_zip(tree)}


@fixture(
    "invalid",
    "E600-ome-tiff-names-another-file",
    "The TIFF image's OME-XML names, besides the file itself, a file outside the archive "
    "(UUID FileName): tifffile would open it to build the image's series.",
    directory=["TA-E600"],
    zip=["TA-E600"],
)
def e600_ome(bases: Bases) -> Forms:
    import io

    import tifffile

    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
        '<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="8" SizeY="8" '
        'SizeC="1" SizeZ="1" SizeT="2"><TiffData FirstT="0" IFD="0" PlaneCount="1"><UUID '
        'FileName="image.tif">urn:uuid:1</UUID></TiffData><TiffData FirstT="1" IFD="0" '
        'PlaneCount="1"><UUID FileName="/etc/tiled-archive-canary.ome.tif">urn:uuid:2</UUID>'
        "</TiffData></Pixels></Image></OME>"
    )
    buffer = io.BytesIO()
    image = np.arange(64, dtype="uint8").reshape(8, 8)
    tifffile.imwrite(buffer, image, description=xml, metadata=None)
    tree = with_file(bases.real, IMAGE, buffer.getvalue())
    return {"directory": tree, "zip": tree_zip(tree)}


@fixture(
    "invalid",
    "E601-pickled-npy",
    "The .npy file holds Python objects (readable only by unpickling).",
    directory=["TA-E601"],
)
def e601(bases: Bases) -> Forms:
    objects = np.empty((4, 3), dtype=object)
    objects[:] = 1.5
    return {"directory": with_file(bases.minimal, ARRAY, npy_bytes(objects))}


def arrow_ipc_bytes(table, batch_rows: int | None = None, **options) -> bytes:
    """``table`` as an Arrow IPC file, in record batches of ``batch_rows`` rows (``options``:
    pyarrow's ``IpcWriteOptions``, e.g. ``compression``)."""
    import io

    import pyarrow.ipc as ipc

    buffer = io.BytesIO()
    with ipc.new_file(buffer, table.schema, options=ipc.IpcWriteOptions(**options)) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return buffer.getvalue()


def arrow_footer_start(data: bytes) -> int:
    """Where an Arrow IPC file's footer starts (it ends with its size and ``ARROW1``)."""
    (size,) = struct.unpack("<i", data[-10:-6])
    return len(data) - 10 - size


def arrow_first_batch_everywhere(rows: int) -> bytes:
    """An Arrow IPC file of ``rows`` one-row record batches whose footer lists the first
    batch in every place (its blocks overlap)."""
    import pyarrow as pa

    from tiled_archive.inspectors.arrow import FlatBuffer

    data = bytearray(arrow_ipc_bytes(pa.table({"x": np.arange(rows)}), batch_rows=1))
    start = arrow_footer_start(bytes(data))
    footer = FlatBuffer(bytes(data[start:-10]))
    blocks = footer.structs(footer.root(), 3, 24)  # Footer.recordBatches
    for at in blocks:
        data[start + at : start + at + 24] = footer.data[blocks[0] : blocks[0] + 24]
    return bytes(data)


ARROW_TABLE = (
    "UPDATE data_sources SET mimetype = 'application/vnd.apache.arrow.file'"
    " WHERE mimetype = 'text/csv'"
)


@fixture(
    "warning",
    "W600-arrow-ipc-compressed-zeros",
    "An Arrow IPC table partition of 8,388,608 int64 zeros (64 MiB) in zstd-compressed "
    "buffers of a few kilobytes: each states its decoded size, which is what is counted.",
    directory=["TA-W600"],
)
def w600_arrow(bases: Bases) -> Forms:
    import pyarrow as pa

    table = pa.table({"x": np.zeros(8 << 20, dtype="int64")})
    content = arrow_ipc_bytes(table, compression="zstd")
    return {"directory": with_file(bases.minimal, TABLE, content, ARROW_TABLE)}


@fixture(
    "invalid",
    "E602-arrow-ipc-batch-past-end",
    "An Arrow IPC file whose footer lists a record batch beyond the file's data (the bytes "
    "between its schema and its footer are cut).",
    directory=["TA-E602"],
)
def e602_arrow(bases: Bases) -> Forms:
    import pyarrow as pa

    whole = arrow_ipc_bytes(pa.table({"x": np.arange(1000)}))
    cut = whole[:200] + whole[arrow_footer_start(whole) :]
    return {"directory": with_file(bases.minimal, TABLE, cut, ARROW_TABLE)}


@fixture(
    "invalid",
    "E602-arrow-ipc-blocks-overlap",
    "An Arrow IPC file of 100 one-row record batches whose footer lists the first batch 100 "
    "times (each block is read, and counted, once: blocks may not overlap).",
    directory=["TA-E602"],
)
def e602_arrow_overlap(bases: Bases) -> Forms:
    content = arrow_first_batch_everywhere(100)
    return {"directory": with_file(bases.minimal, TABLE, content, ARROW_TABLE)}


@fixture(
    "invalid",
    "E602-jpeg-header-disagrees",
    "The 8 x 8 image is replaced by a JPEG of 8 x 9 pixels; the catalog still says 8 x 8.",
    directory=["TA-E602"],
)
def e602_jpeg(bases: Bases) -> Forms:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9, 8)).save(buffer, format="JPEG")
    jpeg = "UPDATE data_sources SET mimetype = 'image/jpeg' WHERE mimetype = 'image/tiff'"
    return {"directory": with_file(bases.real, IMAGE, buffer.getvalue(), jpeg)}


@fixture(
    "warning",
    "W600-decompression-ratio",
    "A Parquet table of 8,388,608 zeros (64 MiB) stored in a few kilobytes.",
    directory=["TA-W600"],
)
def w600(bases: Bases) -> Forms:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({"x": np.zeros(8 << 20, dtype="int64")})
    pq.write_table(table, buffer, compression="zstd")
    return {
        "directory": with_file(
            bases.minimal,
            TABLE,
            buffer.getvalue(),
            "UPDATE data_sources SET mimetype = 'application/x-parquet'"
            " WHERE mimetype = 'text/csv'",
        )
    }


# -- Ragged arrays: Tiled's DuckDB layout ------------------------------------------------------

RAGGED = "data/sample/ragged.duckdb"
#: The table Tiled's ragged writer makes for a float64 array of shape (3, None).
RAGGED_TABLE = "table_6038aa28df0f633200e26864b4b83a81"
RAGGED_COLUMNS = (
    '_dataset_id INTEGER, _partition_id SMALLINT, "node0-offsets" BIGINT[], '
    '"node1-data" DOUBLE[], chunk_index BIGINT'
)
#: [[1.5, 2.5], [], [3.5]] as one chunk, as Tiled writes it.
RAGGED_ROW = "(1, 0, [0, 2, 2, 3], [1.5, 2.5, 3.5], 0)"
RAGGED_STRUCTURE = {
    "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
    "shape": [3, None],
    "size": 3,
    "chunks": [[3], None],
    "dims": None,
    "resizable": False,
}


def duckdb_bytes(*statements: str) -> bytes:
    """A DuckDB database's bytes after ``statements``: 16 kB blocks keep it small (DuckDB's
    default 256 kB blocks make a 1 MB file of one row); same version, same bytes."""
    import duckdb

    with tempfile.TemporaryDirectory() as work:
        path = Path(work, "ragged.duckdb")
        conn = duckdb.connect()
        try:
            conn.execute(f"ATTACH '{path}' AS ragged (BLOCK_SIZE 16384)")
            conn.execute("USE ragged")
            for statement in statements:
                conn.execute(statement)
            conn.execute("USE memory")
            conn.execute("DETACH ragged")
        finally:
            conn.close()
        return path.read_bytes()


def tiled_ragged_table(*extra: str, row: str = RAGGED_ROW) -> bytes:
    """The database Tiled's ``RaggedSQLAdapter`` writes for the ragged array (its one chunk
    ``row``), with ``extra``."""
    return duckdb_bytes(
        f'CREATE TABLE "{RAGGED_TABLE}" ({RAGGED_COLUMNS})',
        f'CREATE UNIQUE INDEX unique_ordering_per_dataset_index ON "{RAGGED_TABLE}"'
        "(_dataset_id, chunk_index)",
        f'INSERT INTO "{RAGGED_TABLE}" VALUES {row}',
        *extra,
    )


def structure_id_of(structure: dict) -> str:
    """A structure's id as Tiled computes it (``tiled.catalog.utils.compute_structure_id``):
    the MD5 of its JSON with keys sorted, no spaces and UTF-8 text (spec appendix A). The
    stored text keeps Tiled's own key order; only the hashed bytes are sorted."""
    canonical = json.dumps(structure, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.md5(canonical.encode("utf-8")).hexdigest()


def with_ragged(tree: Tree, database: bytes, *statements: str) -> Tree:
    """``tree`` with a ragged node ``ragged`` over ``database`` (the rows Tiled writes for a
    client's ragged array, here in a database of its own), then ``statements``, sealed."""
    items = list(tree.items())
    first_payload = next(i for i, (name, _) in enumerate(items) if is_payload_path(name))
    changed = dict(items[:first_payload] + [(RAGGED, database)] + items[first_payload:])
    structure = json.dumps(RAGGED_STRUCTURE, separators=(",", ":"))
    structure_id = structure_id_of(RAGGED_STRUCTURE)
    parameters = json.dumps({"table_name": RAGGED_TABLE, "dataset_id": 1})
    with catalog(changed) as conn:
        stamp = conn.execute("SELECT time_created FROM nodes WHERE id = 0").fetchone()[0]
        node = conn.execute("SELECT max(id) + 1 FROM nodes").fetchone()[0]
        source = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM data_sources").fetchone()[0]
        asset = conn.execute("SELECT max(id) + 1 FROM assets").fetchone()[0]
        conn.execute(
            "INSERT INTO nodes (id, parent, key, structure_family, metadata, specs, "
            "time_created, time_updated) VALUES (?, 0, 'ragged', 'ragged', '{}', '[]', ?, ?)",
            (node, stamp, stamp),
        )
        conn.execute("INSERT INTO structures VALUES (?, ?)", (structure_id, structure))
        conn.execute(
            "INSERT INTO data_sources (id, node_id, structure_id, mimetype, parameters, "
            "properties, management, structure_family, time_created, time_updated) "
            "VALUES (?, ?, ?, 'application/x-ragged+sql', ?, '{}', 'writable', 'ragged', ?, ?)",
            (source, node, structure_id, parameters, stamp, stamp),
        )
        conn.execute(
            "INSERT INTO assets (id, data_uri, is_directory, hash_type, hash_content, size, "
            "time_created, time_updated) VALUES (?, ?, 0, 'sha256', ?, ?, ?, ?)",
            (asset, RAGGED, sha256(database), len(database), stamp, stamp),
        )
        conn.execute(
            "INSERT INTO data_source_asset_association VALUES (?, ?, 'data_uri', NULL)",
            (source, asset),
        )
        for statement in statements:
            conn.execute(statement)
        conn.execute("VACUUM")
    seal(changed)
    return changed


@fixture(
    "valid",
    "ragged-duckdb",
    "A ragged array as Tiled stores one a client writes: its rows in a DuckDB table.",
    directory=[],
    zip=[],
)
def valid_ragged(bases: Bases) -> Forms:
    tree = with_ragged(bases.minimal, tiled_ragged_table())
    return {"directory": tree, "zip": tree_zip(tree)}


#: The same three rows as Tiled stores them when a client writes a slice of a longer array
#: (``array[1:]``): the offsets start at the first value the rows reach, not at 0.
RAGGED_SLICE_ROW = "(1, 0, [1, 3, 3, 4], [0.5, 1.5, 2.5, 3.5], 0)"


@fixture(
    "valid",
    "ragged-written-from-a-slice",
    "A ragged array written from a slice of a longer one: its stored offsets start past 0 "
    "and its data holds a value no row reaches, as Tiled stores it.",
    directory=[],
    zip=[],
)
def valid_ragged_slice(bases: Bases) -> Forms:
    tree = with_ragged(bases.minimal, tiled_ragged_table(row=RAGGED_SLICE_ROW))
    return {"directory": tree, "zip": tree_zip(tree)}


for _name, _description, _codes, _database, _sql in (
    ("E601-ragged-table-is-a-view", "The ragged array's table is a view (which DuckDB would "
     "compute at every read).", ["TA-E601"],
     lambda: duckdb_bytes(f"CREATE TABLE rows ({RAGGED_COLUMNS})",
                          f"INSERT INTO rows VALUES {RAGGED_ROW}",
                          f'CREATE VIEW "{RAGGED_TABLE}" AS SELECT * FROM rows'), ()),
    ("E601-ragged-computed-column", "The ragged array's table has a generated column that "
     "builds a gigabyte string whenever a row is read.", ["TA-E601"],
     lambda: duckdb_bytes(f'CREATE TABLE "{RAGGED_TABLE}" ({RAGGED_COLUMNS}, '
                          "\"node2-data\" VARCHAR AS (repeat('x', 1000000000)))",
                          f'INSERT INTO "{RAGGED_TABLE}" (_dataset_id, _partition_id, '
                          f'"node0-offsets", "node1-data", chunk_index) VALUES {RAGGED_ROW}'), ()),
    ("E601-ragged-macro-shadows-len", "The ragged array's database defines a macro named "
     "len, which would shadow DuckDB's own in every query on it.", ["TA-E601"],
     lambda: tiled_ragged_table("CREATE MACRO len(x) AS 1"), ()),
    ("E601-ragged-offsets-decrease", "The ragged array's offsets decrease (awkward would read "
     "other rows than were written).", ["TA-E601"],
     lambda: tiled_ragged_table(row="(1, 0, [0, 2, 1, 3], [1.5, 2.5, 3.5], 0)"), ()),
    ("E601-ragged-null-values", "The ragged array's data holds a NULL (Tiled writes none; "
     "it would read as another value).", ["TA-E601"],
     lambda: tiled_ragged_table(row="(1, 0, [0, 2, 2, 3], [1.5, NULL, 3.5], 0)"), ()),
    ("E602-ragged-offsets-past-data", "The ragged array's last offset points 30 million "
     "values past its 3 stored values.", ["TA-E602"],
     lambda: tiled_ragged_table(row="(1, 0, [0, 2, 2, 30000000], [1.5, 2.5, 3.5], 0)"), ()),
    ("E601-ragged-not-duckdb", "The ragged array's database file is not a DuckDB database.",
     ["TA-E601"], lambda: b"SQLite format 3\x00" + bytes(4080), ()),
    ("E602-ragged-missing-chunk", "The structure says the ragged array has two chunks; its "
     "table holds one.", ["TA-E602"], tiled_ragged_table,
     ("UPDATE structures SET structure = json_set(structure, '$.chunks[0]', json('[2, 1]')) "
      "WHERE structure LIKE '%\"size\":3%'",)),
    ("E508-ragged-table-name", "The ragged data source's table_name is SQL text, not a table "
     "name Tiled makes.", ["TA-E508"], tiled_ragged_table,
     ("UPDATE data_sources SET parameters = json_set(parameters, '$.table_name', "
      "'t\" UNION SELECT * FROM read_csv(''/etc/passwd'') --') "
      "WHERE mimetype = 'application/x-ragged+sql'",)),
    ("E503-ragged-relocated-as-file", "A ragged array's database is relocated as a file: URI "
     "(Tiled names SQL storage duckdb://).", ["TA-E503", "TA-W500"], tiled_ragged_table,
     (f"UPDATE assets SET data_uri = 'file://localhost/archive/{RAGGED}' "
      f"WHERE data_uri = '{RAGGED}'",)),
):  # fmt: skip
    fixture("invalid", _name, _description, directory=_codes)(
        lambda bases, database=_database, sql=_sql: {
            "directory": with_ragged(bases.minimal, database(), *sql)
        }
    )


# -- Invalid fixtures: ZIP structure ------------------------------------------------------------


def table_crc(bases: Bases) -> int:
    return zlib.crc32(bases.minimal[TABLE])  # type: ignore[arg-type]


@fixture(
    "invalid", "E100-entry-count", "The end record counts one member too many.", zip=["TA-E100"]
)
def e100(bases: Bases) -> Forms:
    data = tree_zip(bases.minimal)
    count = len(bases.minimal) + 1
    return {"zip": patch_end(data, entries_here=count, entries=count)}


@fixture(
    "invalid",
    "E101-mimetype-extra-field",
    "The mimetype member has an extra field.",
    zip=["TA-E101"],
)
def e101(bases: Bases) -> Forms:
    return {"zip": tree_zip(bases.minimal, unaligned=())}


# Fixtures that set fields of one member's local header and central directory record.
for _name, _description, _fields in (
    ("E102-bzip2-method", "A member claims compression method 12 (bzip2).", {"method": 12}),
    ("E103-encrypted", "A member sets the encryption flag.", {"flags": 0x0801}),
    ("E104-symlink-member", "A member's Unix mode is a symbolic link.",
     {"external": 0o120777 << 16}),
    ("E110-data-descriptor-flag", "A member sets general purpose bit 3.", {"flags": 0x0808}),
):  # fmt: skip
    fixture("invalid", _name, _description, zip=[f"TA-{_name.split('-')[0]}"])(
        lambda bases, fields=_fields: {"zip": patch(tree_zip(bases.minimal), TABLE, **fields)}
    )


@fixture("invalid", "E105-duplicate-member", "A payload member appears twice.", zip=["TA-E105"])
def e105(bases: Bases) -> Forms:
    return {"zip": to_zip([*bases.minimal.items(), (TABLE, bases.minimal[TABLE])])}  # type: ignore[list-item]


@fixture(
    "invalid",
    "E106-local-header-crc",
    "A local header's CRC-32 differs from the central directory's (which is right).",
    zip=["TA-E106"],
)
def e106(bases: Bases) -> Forms:
    crc = table_crc(bases) ^ 0x1
    return {"zip": patch(tree_zip(bases.minimal), TABLE, headers=("local",), crc=crc)}


@fixture(
    "invalid",
    "E107-overlapping-members",
    "A directory entry whose local header lies "
    "inside another member's local header (its alignment padding).",
    zip=["TA-E107"],
)
def e107(bases: Bases) -> Forms:
    data = tree_zip(bases.minimal)
    name = b"data/"
    padding = []
    for local, _ in records(data).values():
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        # The alignment extra field: id, size, alignment (2 bytes each), then zero padding.
        padding.append((extra_length - 6, local + 30 + name_length + 6))
    room, start = max(padding)
    dos_date = 33  # 1980-01-01
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x0800, 0, 0, dos_date, 0, 0, 0, 5, 0)
    assert room >= len(local) + len(name)
    data[start : start + len(local) + len(name)] = local + name
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50, 0x031E, 20, 0x0800, 0, 0, dos_date, 0, 0, 0, len(name), 0, 0, 0, 0,
        (0o40755 << 16) | 0x10, start,
    ) + name  # fmt: skip
    end = end_record(data)
    count, cd_size = struct.unpack_from("<HI", data, end + 10)
    data[end:end] = central
    return {
        "zip": patch_end(
            data, entries_here=count + 1, entries=count + 1, cd_size=cd_size + len(central)
        )
    }


@fixture("invalid", "E108-zip-comment", "The ZIP has an archive comment.", zip=["TA-E108"])
def e108(bases: Bases) -> Forms:
    comment = b"made by hand"
    return {"zip": patch_end(tree_zip(bases.minimal), comment=len(comment)) + comment}


@fixture(
    "invalid",
    "E109-zip64-count",
    "The end record's entry count is neither 0xFFFF nor the ZIP64 end record's.",
    zip=["TA-E109"],
)
def e109(bases: Bases) -> Forms:
    data = tree_zip(bases.minimal, force_zip64=True)
    count = len(bases.minimal) - 1
    return {"zip": patch_end(data, entries_here=count, entries=count)}


@fixture(
    "invalid",
    "E111-crc-mismatch",
    "A member's CRC-32 is wrong in both headers (its bytes are right).",
    zip=["TA-E111"],
)
def e111(bases: Bases) -> Forms:
    return {"zip": patch(tree_zip(bases.minimal), TABLE, crc=table_crc(bases) ^ 0xFFFFFFFF)}


@fixture("invalid", "E112-multi-disk", "The end record says this is disk 1.", zip=["TA-E112"])
def e112(bases: Bases) -> Forms:
    return {"zip": patch_end(tree_zip(bases.minimal), disk=1)}


# -- Warning fixtures ---------------------------------------------------------------------------


@fixture(
    "warning",
    "W001-extra-top-level-file",
    "A README.txt beside the tag files.",
    directory=["TA-W001"],
)
def w001(bases: Bases) -> Forms:
    return {"directory": {**bases.minimal, "README.txt": b"Notes about this archive.\n"}}


@fixture(
    "warning", "W101-deflated-member", "A payload member is Deflate-compressed.", zip=["TA-W101"]
)
def w101(bases: Bases) -> Forms:
    raw = bases.minimal[TABLE]
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw Deflate, as ZIP stores it
    packed = packer.compress(raw) + packer.flush()  # type: ignore[arg-type]
    data = to_zip(
        (name, packed if name == TABLE else content) for name, content in bases.minimal.items()
    )  # type: ignore[misc]
    return {"zip": patch(data, TABLE, method=8, crc=zlib.crc32(raw), size=len(raw))}  # type: ignore[arg-type]


@fixture(
    "warning",
    "W102-unaligned-member",
    "A STORED member's data is not 4096-aligned.",
    zip=["TA-W102"],
)
def w102(bases: Bases) -> Forms:
    return {"zip": tree_zip(bases.minimal, unaligned=(MIMETYPE_NAME, TABLE))}


@fixture(
    "warning",
    "W103-catalog-after-payload",
    "catalog.db is the last member, after the payload (valid; a reader of the archive on a web "
    "server needs a request of its own for it).",
    zip=["TA-W103"],
)
def w103(bases: Bases) -> Forms:
    items = list(bases.minimal.items())
    last = [(name, content) for name, content in items if name == CATALOG_NAME]
    return {"zip": to_zip([item for item in items if item[0] != CATALOG_NAME] + last)}


@fixture(
    "warning", "W200-nfd-name", "A payload file name in NFD (e + combining acute).", zip=["TA-W200"]
)
def w200(bases: Bases) -> Forms:
    return {"zip": tree_zip(rename(bases.minimal, TABLE, "data/sample/cafe\u0301.csv"))}


@fixture(
    "warning",
    "W201-case-collision",
    "table.csv beside TABLE.CSV (the array's file, "
    "renamed; its catalog entry still reads it as .npy).",
    zip=["TA-W201"],
)
def w201(bases: Bases) -> Forms:
    return {"zip": tree_zip(rename(bases.minimal, ARRAY, "data/sample/TABLE.CSV"))}


@fixture(
    "warning",
    "W500-unreferenced-payload-file",
    "A listed payload file no asset names.",
    directory=["TA-W500"],
)
def w500(bases: Bases) -> Forms:
    tree = {**bases.minimal, "data/sample/notes.txt": b"not registered\n"}
    seal(tree)
    return {"directory": tree}


# -- Writing the tree ---------------------------------------------------------------------------


def generate(out: Path) -> list[Path]:
    """Write every fixture under ``out`` (replacing an earlier tree); returns their folders."""
    out = Path(out)
    if out.exists():
        strays = {p.name for p in out.iterdir()} - set(KINDS)
        if strays:
            raise SystemExit(f"{out} holds {sorted(strays)}: not a fixtures tree, not replacing it")
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="tiled-archive-fixtures-") as work:
        bases = Bases(
            minimal=build_base(Path(work), "sample", minimal_files),
            real=build_base(Path(work), "real", real_files),
        )
        folders = []
        for item in FIXTURE_LIST:
            folder = out / item.kind / item.name
            folder.mkdir(parents=True)
            forms = item.build(bases)
            assert set(forms) == set(item.expected), item.name
            for form, content in forms.items():
                if form == "directory":
                    write_tree(content, folder / "archive")  # type: ignore[arg-type]
                else:
                    (folder / "archive.zip").write_bytes(content)  # type: ignore[arg-type]
            document = {"description": item.description, "expected": item.expected}
            text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
            (folder / "expected.json").write_text(text + "\n", encoding="utf-8")
            folders.append(folder)
    return folders


def tree_size(root: Path) -> int:
    """Bytes of every regular file below ``root`` (symbolic links not followed)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    # Reproducible archives take their time from SOURCE_DATE_EPOCH when it is set: pin it.
    os.environ["SOURCE_DATE_EPOCH"] = str(DOS_EPOCH)
    folders = generate(args.out)
    print(f"wrote {len(folders)} fixtures to {args.out} ({tree_size(args.out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
