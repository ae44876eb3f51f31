"""Mutations of a seed archive, as Hypothesis strategies of plain (printable) values.

Each mutation is a frozen dataclass whose ``apply(seed, root)`` writes the mutated archive
under ``root`` and returns its path; its ``repr`` is the reproduction. Positions and row or
file choices are raw integers taken modulo what the seed holds, so every strategy works on
every seed and shrinks towards its first element.

- ``ZipMutation``: bytes of the seed's ZIP flipped, overwritten, inserted, deleted, copied or
  truncated, mostly inside local headers, central directory records and the end records, with
  field-aware integer writes. Not re-sealed: the ZIP layer is what is under test.
- ``ManifestMutation``: structural mutations of ``tiled-archive.json`` (keys dropped, types
  changed, huge or negative numbers, deep nesting, long strings, hostile paths, unicode), then
  text-level ones; ``tagmanifest-sha256.txt`` re-sealed (``retag``) unless the draw says not.
- ``CatalogMutation``: SQL on ``catalog.db`` (JSON columns mutated or replaced, data_uri
  strings, mimetype swaps, is_directory flips, sizes, references, rows deleted) or bytes of the
  database file flipped; the manifest and BagIt files re-sealed (``conformance.generate.seal``,
  what ``tiled_archive.writer.reseal`` does for a directory archive).
- ``DataMutation``: one payload file's header bytes (first KB; last KB for Parquet footers),
  the JSON of Zarr metadata (``.zarray``, ``.zattrs``, ``zarr.json``...), or an NPY header
  rewritten; the asset's size and sha256, the manifest and BagIt files re-sealed
  (``conformance.generate.with_file``).
"""

from __future__ import annotations

import ast
import json
import sqlite3
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from conformance.generate import Tree, catalog, retag, seal, with_file, write_tree
from tiled_archive.rules.names import CATALOG_NAME, MANIFEST_NAME

from .seeds import Seed

U32 = st.integers(0, 2**32 - 1)
FORMS = ("directory", "zip")


class Skip(Exception):  # noqa: N818 -- a signal, not an error
    """The mutation cannot be applied to this seed (e.g. a UNIQUE constraint): reject it."""


def write_form(seed: Seed, tree: Tree, form: str, root: Path) -> Path:
    if form == "zip":
        path = root / "archive.zip"
        path.write_bytes(seed.zip_of(tree))
    else:
        path = root / "archive"
        write_tree(tree, path)
    return path


def archive_path(form: str, root: Path) -> Path:
    return root / ("archive.zip" if form == "zip" else "archive")


# -- Bytes ------------------------------------------------------------------------------------

INTERESTING = st.sampled_from(
    [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF]
    + [0x80000000, 0xFFFFFFFF, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
) | st.integers(0, 2**64 - 1)
DELTAS = st.sampled_from([-1, 1, -2, 2, 4096, -4096, 2**16, -(2**16), 2**31, 2**32, -(2**32)])

# Integer fields of each ZIP record, (offset, width): local header, central directory record,
# end of central directory, ZIP64 end record, ZIP64 locator.
_FIELDS = {
    b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 2), (14, 4), (18, 4), (22, 4)]
    + [(26, 2), (28, 2)],
    b"PK\x01\x02": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 2), (14, 2), (16, 4), (20, 4)]
    + [(24, 4), (28, 2), (30, 2), (32, 2), (34, 2), (36, 2), (38, 4), (42, 4)],
    b"PK\x05\x06": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
    b"PK\x06\x06": [(4, 8), (12, 2), (14, 2), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8)]
    + [(48, 8)],
    b"PK\x06\x07": [(4, 4), (8, 8), (16, 4)],
}
_FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


@dataclass(frozen=True)
class ByteOp:
    """One change to a byte string, at ``offset`` (mod the region's length) in a region."""

    kind: str  # flip set insert delete int add copy truncate
    region: str = "any"
    index: int = 0
    offset: int = 0
    arg: Any = 0
    width: int = 1


def byte_ops(regions: list[str], max_ops: int = 4) -> st.SearchStrategy[tuple[ByteOp, ...]]:
    region = st.sampled_from(regions)
    op = st.one_of(
        st.builds(ByteOp, st.just("flip"), region, U32, U32, st.integers(1, 255)),
        st.builds(ByteOp, st.just("set"), region, U32, U32, st.binary(min_size=1, max_size=8)),
        st.builds(ByteOp, st.just("insert"), region, U32, U32, st.binary(min_size=1, max_size=64)),
        st.builds(ByteOp, st.just("delete"), region, U32, U32, st.integers(1, 64)),
        st.builds(
            ByteOp, st.just("int"), region, U32, U32, INTERESTING, st.sampled_from([1, 2, 4, 8])
        ),
        st.builds(ByteOp, st.just("add"), region, U32, U32, DELTAS, st.sampled_from([1, 2, 4, 8])),
        st.builds(ByteOp, st.just("copy"), region, U32, U32, U32),
        st.builds(ByteOp, st.just("truncate"), region, U32, U32),
    )
    return st.lists(op, min_size=1, max_size=max_ops).map(tuple)


def apply_byte_ops(
    data: bytes,
    ops: tuple[ByteOp, ...],
    regions: dict[str, list[tuple[int, int]]],
    log: list | None = None,
) -> bytes:
    """``data`` with ``ops`` applied in order; positions come from the unmutated layout.
    ``log`` gets each op with its choices reduced to what they picked (a shorter repro)."""
    buffer = bytearray(data)
    for op in ops:
        region = op.region if regions.get(op.region) else "any"
        spans = regions.get(region) or [(0, max(1, len(data)))]
        index = op.index % len(spans)
        start, length = spans[index]
        length = max(1, length)
        offset = op.offset % length
        position = start + offset
        fields = _FIELDS.get(bytes(data[start : start + 4])) if op.kind in ("int", "add") else None
        width = op.width
        if fields:  # a known record: write one of its fields, at its width
            offset = op.offset % len(fields)
            field_offset, width = fields[offset]
            position = start + field_offset
        position = min(position, len(buffer))
        arg = op.arg % len(spans) if op.kind == "copy" else op.arg
        if log is not None:
            log.append(ByteOp(op.kind, region, index, offset, arg, width))
        if op.kind == "flip" and position < len(buffer):
            buffer[position] ^= op.arg
        elif op.kind == "set":
            buffer[position : position + len(op.arg)] = op.arg
        elif op.kind == "insert":
            buffer[position:position] = op.arg
        elif op.kind == "delete":
            del buffer[position : position + op.arg]
        elif op.kind in ("int", "add") and position + width <= len(buffer):
            fmt = _FORMATS[width]
            if op.kind == "add":
                (old,) = struct.unpack_from(fmt, buffer, position)
                value = (old + op.arg) % (1 << (8 * width))
            else:
                value = op.arg % (1 << (8 * width))
            struct.pack_into(fmt, buffer, position, value)
        elif op.kind == "copy":  # a copy of another record of the same kind, inserted here
            source_start, source_length = spans[arg]
            buffer[position:position] = data[source_start : source_start + source_length]
        elif op.kind == "truncate":
            del buffer[position:]
    return bytes(buffer)


ZIP_REGIONS = ["local"] * 3 + ["central"] * 3 + ["end"] * 2 + ["zip64", "mimetype", "data", "any"]


@dataclass(frozen=True)
class ZipMutation:
    ops: tuple[ByteOp, ...]

    def apply(self, seed: Seed, root: Path) -> tuple[Path, ZipMutation]:
        path = root / "archive.zip"
        log: list[ByteOp] = []
        path.write_bytes(apply_byte_ops(seed.zip, self.ops, seed.regions, log))
        return path, ZipMutation(tuple(log))


def zip_mutations() -> st.SearchStrategy[ZipMutation]:
    return st.builds(ZipMutation, byte_ops(ZIP_REGIONS))


# -- JSON ---------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)

HOSTILE_PATHS = [
    "../x",
    "data/../catalog.db",
    "data/../../etc/passwd",
    "/etc/passwd",
    "C:/Windows/win.ini",
    "C:\\x",
    "data\\sample\\array.npy",
    "data//x",
    "data/./x",
    "data/",
    "data",
    "",
    ".",
    "..",
    "file:///etc/passwd",
    "file://localhost/etc/passwd",
    "http://127.0.0.1:9/x",
    "data/" + "a" * 256,
    "data/" + "é" * 128,
    "data/e\u0301",
    "data/x?y",
    "data/x#y",
    "data/%2e%2e/x",
    "data/\x00x",
    "data/\x7f",
    "data/\u202eevil",
    "DATA/sample/array.npy",
    "data/sample/ARRAY.npy",
    "data/sample/array.npy/",
    "data/sample",
    "mimetype",
    "catalog.db",
    "tiled-archive.json",
    "data/" + "/".join(["d"] * 300),
]
PATHS = (
    st.sampled_from(HOSTILE_PATHS)
    | st.text(max_size=30)
    | st.text(max_size=20).map("data/".__add__)
)


def _nest(kind: str, depth: int) -> str:
    return (
        ("[" * depth + "1" + "]" * depth)
        if kind == "list"
        else ('{"a":' * depth + "1" + "}" * depth)
    )


RAW_TOKENS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "-0",
        "-1",
        "0.5",
        "1" * 4301,
        "9" * 5000,
        "18446744073709551616",
        "-9223372036854775809",
        "1.7976931348623157e309",
        '"\\ud800"',
        '"\\udfff\\ud800"',
        '"\\u0000"',
        '"' + "a" * 70000 + '"',
        '"' + "é" * 300 + '"',
        '"e\u0301"',
        '"\U0001f4a9"',
        "true",
        "null",
        "[]",
        "{}",
        '""',
    ]
) | st.builds(
    _nest,
    st.sampled_from(["list", "dict"]),
    st.sampled_from([2, 63, 64, 65, 66, 200, 10000, 200000]),
)


@dataclass(frozen=True)
class JsonOp:
    """One structural change at the ``at``-th value of the document (depth-first, root 0)."""

    kind: str  # drop replace raw add dup swap path unicode
    at: int = 0
    value: Any = None
    other: int = 0


JSON_OPS = st.one_of(
    # Structure-aware: large shapes and counts, tiny chunks (a grid of 10**12 chunks in a few
    # bytes), wherever the document declares them.
    st.builds(
        JsonOp,
        st.just("declare"),
        st.just(0),
        st.tuples(
            st.sampled_from([10**6, 10**8, 10**9, 2**31, 2**32 + 1, 10**12, 10**15]),
            st.sampled_from([1, 2, 7, 1000]),
        ),
    ),
    st.builds(JsonOp, st.just("drop"), U32),
    st.builds(JsonOp, st.just("replace"), U32, JSON_VALUES),
    st.builds(JsonOp, st.just("raw"), U32, RAW_TOKENS),
    st.builds(
        JsonOp,
        st.just("add"),
        U32,
        JSON_VALUES,
        st.sampled_from(["", "x", "files", "__proto__", "format_version", "a" * 300]),
    ),
    st.builds(JsonOp, st.just("dup"), U32),
    st.builds(JsonOp, st.just("swap"), U32, st.none(), U32),
    st.builds(JsonOp, st.just("path"), U32, PATHS),
    st.builds(
        JsonOp,
        st.just("unicode"),
        U32,
        st.sampled_from(["NFD", "upper", "fullwidth", "rtl", "zwj"]),
    ),
)


def json_positions(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value below the root, depth-first; the root is (None, None)."""
    out: list[tuple[Any, Any]] = [(None, None)]
    stack = [doc]
    while stack and len(out) < 5000:
        value = stack.pop()
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, list)
            else ()
        )
        for key, child in items:
            out.append((value, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return out


def _restyle(text: str, how: str) -> str:
    if how == "NFD":
        return unicodedata.normalize("NFD", text.replace("e", "é"))
    if how == "upper":
        return text.upper()
    if how == "fullwidth":
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    if how == "rtl":
        return "\u202e" + text
    return text.replace("/", "/\u200d")


def mutate_json(doc: Any, ops: tuple[JsonOp, ...], log: list | None = None) -> str:
    """``doc`` (a parsed JSON value, copied) with ``ops`` applied, serialized; ``log`` gets
    the ops with their positions reduced."""
    doc = json.loads(json.dumps(doc))
    raws: list[str] = []

    def raw(text: str) -> str:
        raws.append(text)
        return f"@@RAW{len(raws) - 1}@@"

    holder = {"root": doc}
    for op in ops:
        positions = json_positions(holder["root"])
        at, other_at = op.at % len(positions), op.other
        if op.kind == "swap":
            other_at = op.other % len(positions)
        if log is not None:
            log.append(JsonOp(op.kind, at, op.value, other_at))
        container, key = positions[at]
        if container is None:
            container, key = holder, "root"
        current = container[key]
        if op.kind == "drop":
            if container is holder:
                container[key] = None
            else:
                del container[key]
        elif op.kind == "replace":
            container[key] = op.value
        elif op.kind == "raw":
            container[key] = raw(op.value)
        elif op.kind == "add":
            if isinstance(current, dict):
                current[op.other if isinstance(op.other, str) else "x"] = op.value
            elif isinstance(current, list):
                current.append(op.value)
            else:
                container[key] = [current, op.value]
        elif op.kind == "dup":
            if isinstance(container, list):
                container.insert(key, json.loads(json.dumps(current)))
            elif isinstance(current, list) and current:
                current.append(json.loads(json.dumps(current[0])))
        elif op.kind == "swap":
            other_container, other_key = positions[other_at]
            if other_container is not None:
                other = other_container[other_key]
                if not _contains(current, other) and not _contains(other, current):
                    container[key], other_container[other_key] = other, current
        elif op.kind == "path":
            container[key] = op.value
        elif op.kind == "declare":
            holder["root"] = _declared(holder["root"], *op.value)
        elif op.kind == "unicode":
            if isinstance(current, str):
                container[key] = _restyle(current, op.value)
            elif isinstance(current, dict):
                container[key] = {_restyle(k, op.value): v for k, v in current.items()}
    text = json.dumps(holder["root"], ensure_ascii=False)
    # A lone surrogate (from a raw "\ud800" parsed by an earlier op) back to its JSON escape.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    for index, value in enumerate(raws):
        text = text.replace(f'"@@RAW{index}@@"', value)
    return text


def _declared(doc: Any, big: int, small: int) -> Any:
    """``doc`` with every value under a key that declares a size or count (Zarr metadata,
    Tiled's structures, the manifest) set large (``big``: shapes, counts, sizes) or small
    (``small``: chunk lengths, so that a shape becomes a grid of very many chunks)."""

    def value(key: str, current: Any) -> Any:
        number = small if key in SMALL_KEYS else big
        if isinstance(current, list) and current and all(isinstance(v, list) for v in current):
            # Tiled's chunks, a list per dimension: one chunk of ``big``, or ``small`` ones.
            many = 1 if number == big else 64
            return [[number] * min(many, max(1, len(dim))) for dim in current]
        if isinstance(current, list):
            return [number] * max(1, len(current))
        return number

    if isinstance(doc, dict):
        return {
            k: value(k, v) if k in DECLARED_KEYS else _declared(v, big, small)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_declared(item, big, small) for item in doc]
    return doc


#: Keys whose values declare a size or a count; of them, chunk lengths are set small.
DECLARED_KEYS = frozenset(
    ("shape", "chunks", "chunk_shape", "shards", "npartitions", "size", "length", "count")
)
SMALL_KEYS = frozenset(("chunks", "chunk_shape"))


def _contains(outer: Any, inner: Any) -> bool:
    if outer is inner:
        return True
    if isinstance(outer, dict):
        return any(_contains(v, inner) for v in outer.values())
    if isinstance(outer, list):
        return any(_contains(v, inner) for v in outer)
    return False


@dataclass(frozen=True)
class TextOp:
    kind: str  # truncate bom bytes dupkey latin1 crlf
    at: int = 0
    value: Any = None


TEXT_OPS = st.one_of(
    st.builds(TextOp, st.just("truncate"), U32),
    st.builds(TextOp, st.just("bom")),
    st.builds(TextOp, st.just("latin1")),
    st.builds(TextOp, st.just("bytes"), U32, st.binary(min_size=1, max_size=4)),
    st.builds(TextOp, st.just("dupkey"), U32, JSON_VALUES),
)


def apply_text_ops(text: str, ops: tuple[TextOp, ...], log: list | None = None) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    for op in ops:
        if log is not None:
            log.append(TextOp(op.kind, op.at % max(1, len(data)), op.value))
        if op.kind == "truncate":
            data = data[: op.at % max(1, len(data))]
        elif op.kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op.kind == "latin1":
            data = data.decode("utf-8", "replace").encode("latin-1", "replace")
        elif op.kind == "bytes":
            at = op.at % max(1, len(data))
            data = data[:at] + op.value + data[at + len(op.value) :]
        elif op.kind == "dupkey" and data.startswith(b"{"):
            # The first key again, later value winning in Python, first in other parsers.
            try:
                first = next(iter(json.loads(data)))
            except (ValueError, StopIteration, TypeError, RecursionError):
                continue
            extra = json.dumps({first: op.value})[1:-1].encode()
            data = data[:-1] + b"," + extra + b"}" if data.rstrip().endswith(b"}") else data
    return data


@dataclass(frozen=True)
class ManifestMutation:
    form: str
    ops: tuple[JsonOp, ...]
    text_ops: tuple[TextOp, ...] = ()
    retag: bool = True

    def apply(self, seed: Seed, root: Path) -> tuple[Path, ManifestMutation]:
        tree = dict(seed.tree)
        ops: list[JsonOp] = []
        text_ops: list[TextOp] = []
        text = mutate_json(json.loads(tree[MANIFEST_NAME]), self.ops, ops)
        tree[MANIFEST_NAME] = apply_text_ops(text, self.text_ops, text_ops)
        if self.retag:
            retag(tree)
        done = ManifestMutation(self.form, tuple(ops), tuple(text_ops), self.retag)
        return write_form(seed, tree, self.form, root), done


def manifest_mutations() -> st.SearchStrategy[ManifestMutation]:
    return st.builds(
        ManifestMutation,
        st.sampled_from(FORMS),
        st.lists(JSON_OPS, min_size=1, max_size=4).map(tuple),
        st.lists(TEXT_OPS, max_size=1).map(tuple) | st.just(()),
        st.sampled_from([True] * 9 + [False]),
    )


# -- catalog.db -----------------------------------------------------------------------------

KNOWN_MIMETYPES = [
    "application/octet-stream",
    "image/tiff",
    "multipart/related;type=image/tiff",
    "image/jpeg",
    "multipart/related;type=image/jpeg",
    "text/csv",
    "multipart/related;type=text/csv",
    "text/csv;header=present",
    "text/csv;header=absent",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/x-hdf5",
    "application/x-netcdf",
    "application/x-npy",
    "multipart/related;type=application/x-npy",
    "application/x-parquet",
    "application/x-parquet;structure=sparse",
    "application/x-zarr",
    "application/x-awkward-buffers",
    "application/x-ragged+sql",
    "application/vnd.apache.arrow.file",
    "application/x-tiled-sql-table",
]
FAMILIES = [
    "array",
    "awkward",
    "bytes",
    "container",
    "ragged",
    "sparse",
    "table",
    "composite",
    "x",
    "",
]
MANAGEMENT = ["external", "immutable", "locked", "writable", "x", ""]


@dataclass(frozen=True)
class Ref:
    """A value taken from the seed's catalog when the mutation is applied: ``what`` of the
    ``sel``-th row (an asset's URI or digest, a structure id), transformed by ``how``."""

    what: str  # uri, hash, structure
    sel: int
    how: str = "same"


URI_HOWS = [
    "same",
    "upper",
    "slash",
    "strip",
    "parent",
    "relocated",
    "relocated-outside",
    "relocated-dotdot",
    "dotdot",
    "double",
    "nfd",
    "file",
]

SQL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "json": st.one_of(
        JSON_VALUES.map(json.dumps),
        RAW_TOKENS,
        st.text(max_size=20),
        st.sampled_from([None, 0, 1.5, b"\x00\xff", "", "{", "[1,", "null", "[]", '"x"']),
    ),
    "key": st.text(max_size=12)
    | st.sampled_from(
        ["", ".", "..", "a/b", "%2e%2e", "x" * 2000, "\x00", " ", "a?b", "ünï", None]
    ),
    "family": st.sampled_from([*FAMILIES, None, 1]),
    "management": st.sampled_from([*MANAGEMENT, None]),
    "mimetype": st.sampled_from(KNOWN_MIMETYPES)
    | st.sampled_from(["application/x-unknown", "", "TEXT/CSV", "text/csv; header=absent", None]),
    "uri": st.one_of(
        st.builds(Ref, st.just("uri"), U32, st.sampled_from(URI_HOWS)),
        PATHS,
        st.sampled_from([None, 1, b"data/x"]),
    ),
    "bool": st.sampled_from([0, 1, 2, -1, None, "true", "x", 1.5]),
    "int": st.sampled_from([None, 0, -1, 1, 2, 2**31, 2**63 - 1, -(2**63), "12", 1.5, b"\x01"])
    | st.integers(-(2**63), 2**63 - 1),
    "hashtype": st.sampled_from(["sha256", "SHA256", "md5", "", None, 1]),
    "hash": st.builds(Ref, st.just("hash"), U32)
    | st.sampled_from([None, "", "0" * 64, "zz", "a" * 1000, "A" * 64]),
    "ref": st.integers(-1, 12) | st.none(),
    "structure": st.builds(Ref, st.just("structure"), U32) | st.sampled_from(["nope", None, "", 1]),
    "param": st.sampled_from(["data_uri", "data_uris", None, "", "x", "dataset", "data_uri "]),
    "text": st.text(max_size=20) | st.sampled_from(["ffffffffffff", "917dbbcfc4b1 ", None, ""]),
}

COLUMNS: list[tuple[str, str, str]] = [  # table, column, kind
    ("nodes", "metadata", "json"),
    ("nodes", "specs", "json"),
    ("nodes", "key", "key"),
    ("nodes", "structure_family", "family"),
    ("nodes", "parent", "ref"),
    ("structures", "structure", "json"),
    ("structures", "id", "structure"),
    ("data_sources", "parameters", "json"),
    ("data_sources", "properties", "json"),
    ("data_sources", "mimetype", "mimetype"),
    ("data_sources", "mimetype", "mimetype"),
    ("data_sources", "structure_family", "family"),
    ("data_sources", "management", "management"),
    ("data_sources", "structure_id", "structure"),
    ("data_sources", "node_id", "ref"),
    ("assets", "data_uri", "uri"),
    ("assets", "data_uri", "uri"),
    ("assets", "is_directory", "bool"),
    ("assets", "size", "int"),
    ("assets", "hash_type", "hashtype"),
    ("assets", "hash_content", "hash"),
    ("data_source_asset_association", "parameter", "param"),
    ("data_source_asset_association", "num", "int"),
    ("data_source_asset_association", "asset_id", "ref"),
    ("data_source_asset_association", "data_source_id", "ref"),
    ("nodes_closure", "depth", "int"),
    ("nodes_closure", "ancestor", "ref"),
    ("alembic_version", "version_num", "text"),
]
JSON_COLUMNS = [(t, c) for t, c, k in COLUMNS if k == "json"]
DELETABLE = [
    "nodes",
    "structures",
    "data_sources",
    "assets",
    "data_source_asset_association",
    "nodes_closure",
    "alembic_version",
    "metadata_fts5",
]


@dataclass(frozen=True)
class SqlOp:
    kind: str  # json (mutate the JSON in place), set, delete
    table: str
    column: str = ""
    row: int = 0
    value: Any = None


def sql_ops() -> st.SearchStrategy[SqlOp]:
    def set_op(column: tuple[str, str, str]) -> st.SearchStrategy[SqlOp]:
        table, name, kind = column
        return st.builds(
            SqlOp, st.just("set"), st.just(table), st.just(name), U32, SQL_VALUES[kind]
        )

    return st.one_of(
        st.sampled_from(JSON_COLUMNS).flatmap(
            lambda tc: st.builds(
                SqlOp,
                st.just("json"),
                st.just(tc[0]),
                st.just(tc[1]),
                U32,
                st.lists(JSON_OPS, min_size=1, max_size=3).map(tuple),
            )
        ),
        st.sampled_from(COLUMNS).flatmap(set_op),
        st.builds(SqlOp, st.just("delete"), st.sampled_from(DELETABLE), st.just(""), U32),
    )


def _resolve(value: Any, conn: sqlite3.Connection, archive: Path) -> Any:
    if not isinstance(value, Ref):
        return value
    if value.what == "structure":
        rows = [r[0] for r in conn.execute("SELECT id FROM structures ORDER BY rowid")]
        return rows[value.sel % len(rows)] if rows else None
    column = "data_uri" if value.what == "uri" else "hash_content"
    rows = [r[0] for r in conn.execute(f"SELECT {column} FROM assets ORDER BY rowid")]
    if not rows:
        return None
    found = rows[value.sel % len(rows)]
    if value.what == "hash" or not isinstance(found, str):
        return found
    return _transform_uri(found, value.how, archive)


def _transform_uri(uri: str, how: str, archive: Path) -> str:
    inside = uri.split("/data/", 1)[-1] if uri.startswith("file:") else uri.removeprefix("data/")
    absolute = archive.resolve()
    return {
        "same": uri,
        "upper": uri.upper(),
        "slash": uri + "/",
        "strip": inside,
        "parent": uri.rsplit("/", 1)[0],
        "relocated": f"file://localhost{absolute}/data/{inside}",
        "relocated-outside": f"file://localhost{absolute.parent}/data/{inside}",
        "relocated-dotdot": f"file://localhost{absolute}/data/../catalog.db",
        "dotdot": f"data/../{uri}",
        "double": uri.replace("/", "//"),
        "nfd": unicodedata.normalize("NFD", uri.replace("a", "á")),
        "file": f"file://{absolute}/{uri}",
    }[how]


def apply_sql(conn: sqlite3.Connection, op: SqlOp, archive: Path, log: list) -> bool:
    """Run one operation; False when SQLite refuses it (a constraint, an empty table): the
    other operations of the mutation still apply."""
    try:
        (count,) = conn.execute(f"SELECT count(*) FROM {op.table}").fetchone()
        if not count:
            return False
        offset = op.row % count
        where = f"rowid = (SELECT rowid FROM {op.table} ORDER BY rowid LIMIT 1 OFFSET {offset})"
        if op.kind == "delete":
            conn.execute(f"DELETE FROM {op.table} WHERE {where}")
            log.append(SqlOp(op.kind, op.table, op.column, offset))
            return True
        if op.kind == "json":
            (current,) = conn.execute(
                f"SELECT {op.column} FROM {op.table} WHERE {where}"
            ).fetchone()
            try:
                doc = json.loads(current) if current is not None else None
            except (ValueError, TypeError, RecursionError):  # not JSON, or nested too deep
                doc = None
            json_ops: list[JsonOp] = []
            value: Any = mutate_json(doc, op.value, json_ops)
            done = SqlOp(op.kind, op.table, op.column, offset, tuple(json_ops))
        else:
            value = _resolve(op.value, conn, archive)
            done = SqlOp(op.kind, op.table, op.column, offset, op.value)
        conn.execute(f"UPDATE {op.table} SET {op.column} = ? WHERE {where}", (value,))
        log.append(done)
        return True
    except sqlite3.Error:
        return False


@dataclass(frozen=True)
class CatalogMutation:
    form: str
    ops: tuple[SqlOp, ...] = ()
    file_ops: tuple[ByteOp, ...] = ()  # bytes of catalog.db itself

    def apply(self, seed: Seed, root: Path) -> tuple[Path, CatalogMutation]:
        tree = dict(seed.tree)
        target = archive_path(self.form, root)
        ops: list[SqlOp] = []
        file_ops: list[ByteOp] = []
        with catalog(tree) as conn:
            for op in self.ops:
                apply_sql(conn, op, target, ops)
        if self.file_ops:
            tree[CATALOG_NAME] = apply_byte_ops(tree[CATALOG_NAME], self.file_ops, {}, file_ops)
        seal(tree)
        done = CatalogMutation(self.form, tuple(ops), tuple(file_ops))
        return write_form(seed, tree, self.form, root), done


def catalog_mutations() -> st.SearchStrategy[CatalogMutation]:
    forms = st.sampled_from(["directory"] * 3 + ["zip"])
    rows = st.builds(CatalogMutation, forms, st.lists(sql_ops(), min_size=1, max_size=3).map(tuple))
    file_bytes = st.builds(CatalogMutation, forms, st.just(()), byte_ops(["any"], max_ops=3))
    return st.one_of(rows, rows, rows, rows, file_bytes)  # about 1 in 5: the file's bytes


# -- Data files ------------------------------------------------------------------------------

JSON_SUFFIXES = (".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json")


def _npy_header(data: bytes) -> tuple[int, int, dict] | None:
    """(header start, header end, header dict) of an NPY file, or None."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 10:
        return None
    major = data[6]
    if major == 1:
        (length,) = struct.unpack_from("<H", data, 8)
        start = 10
    else:
        (length,) = struct.unpack_from("<I", data, 8)
        start = 12
    try:
        header = ast.literal_eval(data[start : start + length].decode("latin-1"))
    except (ValueError, SyntaxError):
        return None
    return (start, start + length, header) if isinstance(header, dict) else None


NPY_CHANGES = st.one_of(
    st.tuples(
        st.just("descr"),
        st.sampled_from(
            [
                "<f8",
                "|O",
                "<U10",
                "|V0",
                ">i4",
                "<c16",
                "|b1",
                "<M8[ns]",
                "<m8",
                "|S0",
                "<f2",
                "|V3",
            ]
            + ["<i0", "x", "", "<f16", "<U0", [("a", "<i4")], [("a", "|O")], 5, None]
        ),
    ),
    st.tuples(
        st.just("shape"),
        st.sampled_from(
            [
                (),
                (0,),
                (-1,),
                (10**12,),
                (2**63,),
                (4, 3, 2),
                (1,) * 40,
                (12,),
                (3, 4),
                (2**31, 2**31),
            ]
            + [(4, -3), (4.0, 3), "x", None, (10**30,)]
        ),
    ),
    st.tuples(st.just("fortran_order"), st.sampled_from([True, False, "x", None, 1])),
    st.tuples(st.just("drop"), st.sampled_from(["descr", "shape", "fortran_order"])),
    st.tuples(st.just("extra"), st.sampled_from(["x", "data_uri"])),
    st.tuples(st.just("version"), st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9), (0, 0)])),
    st.tuples(
        st.just("text"),
        st.sampled_from(["", "{", "{'descr': __import__('os')}", "[1]", "x" * 70000]),
    ),
)


def mutate_npy(data: bytes, changes: tuple[tuple[str, Any], ...]) -> bytes:
    parsed = _npy_header(data)
    if parsed is None:
        return data
    start, end, header = parsed
    body = data[end:]
    version = (data[6], data[7])
    text: str | None = None
    for kind, value in changes:
        if kind in ("descr", "shape", "fortran_order"):
            header[kind] = value
        elif kind == "drop":
            header.pop(value, None)
        elif kind == "extra":
            header[value] = "file:///etc/passwd"
        elif kind == "version":
            version = value
        elif kind == "text":
            text = value
    raw = (text if text is not None else repr(header)).encode("latin-1", "replace")
    prefix = 10 if version[0] == 1 else 12
    pad = (-(prefix + len(raw) + 1)) % 64
    raw = raw + b" " * pad + b"\n"
    size = struct.pack("<H", len(raw) % 65536) if version[0] == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes(version) + size + raw + body


@dataclass(frozen=True)
class DataMutation:
    form: str
    file: int  # which payload file (mod their number)
    mode: str  # head tail any json npy truncate
    ops: tuple[ByteOp, ...] = ()
    json_ops: tuple[JsonOp, ...] = ()
    npy: tuple[tuple[str, Any], ...] = ()
    reseal: bool = True
    path: str = ""  # the file it picked (set in the reduced mutation, for reading)

    def apply(self, seed: Seed, root: Path) -> tuple[Path, DataMutation]:
        files = seed.payload
        if not files:
            raise Skip("no payload")
        index = files.index(self.path) if self.path in files else self.file % len(files)
        path = files[index]
        data = seed.tree[path]
        done: dict[str, Any] = {"ops": (), "json_ops": (), "npy": ()}
        mode = self.mode
        if mode == "json" and path.endswith(JSON_SUFFIXES):
            try:
                doc = json.loads(data)
            except (ValueError, RecursionError):
                doc = None
            log: list = []
            content = mutate_json(doc, self.json_ops, log).encode("utf-8", "surrogatepass")
            done["json_ops"] = tuple(log)
        elif mode == "npy" and _npy_header(data) is not None:
            content = mutate_npy(data, self.npy)
            done["npy"] = self.npy
        elif mode == "truncate":
            at = (self.ops[0].offset if self.ops else 0) % max(1, len(data))
            content = data[:at]
            done["ops"] = (ByteOp("truncate", "any", 0, at),)
        else:
            mode = mode if mode in ("tail", "any") else "head"
            size = max(1, len(data))
            head = (0, min(size, 1024))
            tail = (max(0, size - 1024), min(size, 1024))
            span = {"tail": tail, "any": (0, size)}.get(mode, head)
            log = []
            content = apply_byte_ops(data, self.ops, {"any": [span]}, log)
            content = content if content != data else data + b"\x00"
            done["ops"] = tuple(log)
        tree = with_file(seed.tree, path, content) if self.reseal else {**seed.tree, path: content}
        reduced = DataMutation(self.form, index, mode, reseal=self.reseal, path=path, **done)
        return write_form(seed, tree, self.form, root), reduced


def data_mutations() -> st.SearchStrategy[DataMutation]:
    return st.builds(
        DataMutation,
        st.sampled_from(FORMS),
        U32,
        st.sampled_from(["head"] * 5 + ["tail", "any", "json", "json", "npy", "npy", "truncate"]),
        byte_ops(["any"], max_ops=4),
        st.lists(JSON_OPS, min_size=1, max_size=3).map(tuple),
        st.lists(NPY_CHANGES, min_size=1, max_size=3).map(tuple),
        st.sampled_from([True] * 9 + [False]),
    )
