"""Write a tiled-archive without tiled-archive or Tiled: Python's standard library and the spec.

    python3 conformance/independent_producer.py OUT.zip     # ZIP form
    python3 conformance/independent_producer.py OUT         # directory form

This is a second producer, written from spec/FORMAT.md alone (and the schema file it points to,
spec/catalog-schema-917dbbcfc4b1.sql), to show that the spec is enough to write a conforming
archive. It imports nothing outside the standard library (a test checks), so it must encode
everything itself: an .npy file, an Arrow IPC schema for the table's structure, Tiled's catalog
rows, the manifest, the BagIt files, and the aligned ZIP.

The archive holds two nodes under the root: ``ramp``, a 4 x 3 float64 array (``data/ramp.npy``),
and ``points``, a CSV table (``data/points.csv``) with an int64 column ``x`` and a float64
column ``y``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import sqlite3
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

SPEC = Path(__file__).resolve().parent.parent / "spec"
SCHEMA_REVISION = "917dbbcfc4b1"
MIMETYPE = b"application/x-tiled-archive"
ALIGNMENT = 4096
TAG_FILES = ["mimetype", "tiled-archive.json", "bagit.txt", "bag-info.txt", "manifest-sha256.txt"]


# -- Data files ---------------------------------------------------------------------------------


def npy(rows: list[list[float]]) -> bytes:
    """A float64 C-order array in NumPy's .npy format, version 1.0 (header padded to 64)."""
    shape = f"({len(rows)}, {len(rows[0])})"
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    values = [value for row in rows for value in row]
    body = struct.pack(f"<{len(values)}d", *values)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


# -- An Arrow IPC schema message, encoded with a minimal FlatBuffers writer ----------------------


class Table:
    """A FlatBuffers table: field slots in schema order (None for an absent field)."""

    def __init__(self, *fields: object):
        self.fields = fields


class Scalar:
    """An inline scalar field (struct format code, value)."""

    def __init__(self, fmt: str, value: int):
        self.fmt = fmt
        self.value = value


def flatbuffer(root: Table) -> bytes:
    """Serialize ``root`` front to back: every referenced object is placed after its referrer,
    so all offsets are forward (unsigned), as FlatBuffers requires. Fields use 4-byte slots."""
    buffer = bytearray(4)
    pending = [(0, root)]
    while pending:
        at, item = pending.pop(0)
        buffer += bytes(-len(buffer) % 4)
        if isinstance(item, Table):
            present = [i for i, f in enumerate(item.fields) if f is not None]
            count = max(present, default=-1) + 1
            vtable_size = 4 + 2 * count
            vtable_size += vtable_size % 4  # the table that follows starts 4-aligned
            slots = {i: 4 + 4 * n for n, i in enumerate(present)}
            vtable = struct.pack(f"<HH{count}H", 4 + 2 * count, 4 + 4 * len(present),
                                 *(slots.get(i, 0) for i in range(count)))  # fmt: skip
            buffer += vtable + bytes(vtable_size - len(vtable))
            start = len(buffer)
            buffer += struct.pack("<i", vtable_size) + bytes(4 * len(present))
            for i in present:
                field = item.fields[i]
                if isinstance(field, Scalar):
                    struct.pack_into(field.fmt, buffer, start + slots[i], field.value)
                else:
                    pending.append((start + slots[i], field))
        elif isinstance(item, str):
            start = len(buffer)
            data = item.encode()
            buffer += struct.pack("<I", len(data)) + data + b"\0"
        else:  # a vector of tables
            start = len(buffer)
            buffer += struct.pack("<I", len(item)) + bytes(4 * len(item))
            pending += [(start + 4 + 4 * n, element) for n, element in enumerate(item)]
        struct.pack_into("<I", buffer, at, start - at)
    return bytes(buffer)


def arrow_schema(columns: list[tuple[str, str]]) -> bytes:
    """An Arrow IPC message (format V5) holding a Schema of nullable int64/float64 columns,
    as ``pyarrow.Schema.serialize()`` writes it: continuation marker, length, FlatBuffer."""
    types = {
        "int64": (2, Table(Scalar("<i", 64), Scalar("<B", 1))),  # Int{bitWidth, is_signed}
        "float64": (3, Table(Scalar("<h", 2))),  # FloatingPoint{precision: DOUBLE}
    }
    fields = [
        # Field{name, nullable, type_type, type, dictionary, children}
        Table(name, Scalar("<B", 1), Scalar("<B", types[kind][0]), types[kind][1], None, [])
        for name, kind in columns
    ]
    schema = Table(Scalar("<h", 0), fields)  # Schema{endianness: Little, fields}
    message = Table(Scalar("<h", 4), Scalar("<B", 1), schema)  # Message{V5, Schema, header}
    body = flatbuffer(message)
    body += bytes(-len(body) % 8)
    return b"\xff\xff\xff\xff" + struct.pack("<i", len(body)) + body


# -- catalog.db ---------------------------------------------------------------------------------


def canonical_json(value: object) -> str:
    """The JSON Tiled hashes for a structure's id (spec appendix A): keys sorted, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def catalog(path: Path, files: dict[str, bytes], created: str) -> None:
    """Tiled's schema from the spec's SQL file, then a node, data source and asset per file."""
    stamp = created.replace("T", " ").replace("Z", ".000000")
    ramp = {
        "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
        "chunks": [[4], [3]],
        "shape": [4, 3],
        "dims": None,
        "resizable": False,
    }
    schema = arrow_schema([("x", "int64"), ("y", "float64")])
    points = {
        "arrow_schema": "data:application/vnd.apache.arrow.file;base64,"
        + base64.b64encode(schema).decode(),
        "npartitions": 1,
        "columns": ["x", "y"],
        "resizable": False,
    }
    nodes = [
        # key, family, structure, mimetype, archive path, association (parameter, num)
        ("ramp", "array", ramp, "application/x-npy", "data/ramp.npy", ("data_uri", None)),
        ("points", "table", points, "text/csv", "data/points.csv", ("data_uris", 0)),
    ]
    conn = sqlite3.connect(path)
    try:
        conn.executescript((SPEC / f"catalog-schema-{SCHEMA_REVISION}.sql").read_text())
        with conn:
            for number, (key, family, structure, mimetype, member, (parameter, num)) in enumerate(
                nodes, start=1
            ):
                structure_id = hashlib.md5(canonical_json(structure).encode()).hexdigest()
                data = files[member]
                conn.execute(
                    "INSERT INTO nodes (id, parent, key, structure_family, metadata, specs,"
                    " time_created, time_updated) VALUES (?, 0, ?, ?, '{}', '[]', ?, ?)",
                    (number, key, family, stamp, stamp),
                )
                conn.execute(
                    "INSERT INTO structures (id, structure) VALUES (?, ?)",
                    (structure_id, json.dumps(structure, separators=(",", ":"))),
                )
                conn.execute(
                    "INSERT INTO data_sources (id, node_id, structure_id, mimetype, parameters,"
                    " properties, management, structure_family, time_created, time_updated)"
                    " VALUES (?, ?, ?, ?, '{}', '{}', 'external', ?, ?, ?)",
                    (number, number, structure_id, mimetype, family, stamp, stamp),
                )
                conn.execute(
                    "INSERT INTO assets (id, data_uri, is_directory, hash_type, hash_content,"
                    " size, time_created, time_updated) VALUES (?, ?, 0, 'sha256', ?, ?, ?, ?)",
                    (number, member, hashlib.sha256(data).hexdigest(), len(data), stamp, stamp),
                )
                conn.execute(
                    "INSERT INTO data_source_asset_association"
                    " (data_source_id, asset_id, parameter, num) VALUES (?, ?, ?, ?)",
                    (number, number, parameter, num),
                )
    finally:
        conn.close()


# -- Manifest and BagIt files -------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_lines(files: dict[str, bytes]) -> bytes:
    return "".join(f"{sha256(files[p])}  {p}\n" for p in sorted(files)).encode()


def archive_files() -> dict[str, bytes]:
    """Every file of the archive, in the order the spec recommends for a ZIP."""
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {
        "data/points.csv": b"x,y\n1,0.5\n2,1.5\n3,2.5\n",
        "data/ramp.npy": npy([[float(3 * r + c) for c in range(3)] for r in range(4)]),
    }
    with tempfile.TemporaryDirectory() as work:
        db = Path(work, "catalog.db")
        catalog(db, payload, created)
        catalog_bytes = db.read_bytes()
    manifest = {
        "format": "tiled-archive",
        "format_version": "1.0",
        "producer": {"name": "independent-producer", "version": "1.0"},
        "created": created,
        "tiled_schema_revision": SCHEMA_REVISION,
        "catalog": {
            "path": "catalog.db",
            "size": len(catalog_bytes),
            "sha256": sha256(catalog_bytes),
        },
        "files": [
            {"path": path, "size": len(data), "sha256": sha256(data)}
            for path, data in sorted(payload.items())
        ],
    }
    octets = sum(len(data) for data in payload.values())
    files = {
        "mimetype": MIMETYPE,
        "tiled-archive.json": (
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode(),
        "bagit.txt": b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
        "bag-info.txt": (
            "Bag-Software-Agent: independent-producer 1.0\n"
            f"Bagging-Date: {created[:10]}\n"
            f"Payload-Oxum: {octets}.{len(payload)}\n"
        ).encode(),
        "manifest-sha256.txt": digest_lines(payload),
    }
    tagged = {name: files[name] for name in TAG_FILES}
    tagged["catalog.db"] = catalog_bytes
    files["tagmanifest-sha256.txt"] = digest_lines(tagged)
    files["catalog.db"] = catalog_bytes
    return {**files, **payload}


# -- Output ---------------------------------------------------------------------------------------


def write_zip(files: dict[str, bytes], dest: Path) -> None:
    """STORED members, `mimetype` first without extra field, every other member's data on a
    4096-byte boundary thanks to the 0xA11E alignment extra field."""
    with open(dest, "xb") as sink, zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # Unix, so that the mode below is read
            info.external_attr = 0o100644 << 16  # a regular file
            if name != "mimetype":
                data_at = sink.tell() + 30 + len(name.encode()) + 6
                padding = -data_at % ALIGNMENT
                info.extra = struct.pack("<HHH", 0xA11E, 2 + padding, ALIGNMENT) + bytes(padding)
            archive.writestr(info, data)


def write_directory(files: dict[str, bytes], dest: Path) -> None:
    dest.mkdir()
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    dest = Path(argv[0])
    files = archive_files()
    (write_zip if dest.suffix == ".zip" else write_directory)(files, dest)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
