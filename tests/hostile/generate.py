"""Generate the hostile corpus: archives whose every checksum is right but whose content attacks
the reader (references to files outside the archive, decompression and allocation bombs,
malformed or mislabelled data files, JSON bombs, ZIP-level abuse).

    .venv/bin/python -m tests.hostile.generate OUTDIR [--big]

Layout written under OUTDIR::

    corpus.json                      every case: class, forms, expected result per entry point
    <case>/archive/  <case>/archive.zip  <case>/expected.json
    combined/archive/  combined/archive.zip   every read-time case, one top-level node each
    canary/<case>/...                files OUTSIDE every archive that file-reference cases point
                                     at; their bytes repeat CANARY_PATTERN (0xCA 0x4A 0x2A)

How: each case's source files are written by their own libraries (h5py, numpy, tifffile, zarr,
pyarrow) into ``sources/<case>/`` and all of them are archived by ONE call of the reference
writer (``tiled_archive.writer.create``, Tiled's own registration; Tiled's catalog init alone
takes seconds, so once). Every case is then cut out of that archive (its top-level node kept,
the others dropped from the catalog and the payload), the attack applied where registration
could not have produced it (bytes of a data file swapped after registration, catalog rows
edited with sqlite3), the catalog's asset sizes and digests re-synced, the manifest and BagIt
files re-sealed (``conformance.generate.seal``), and the result written as a directory and as a
ZIP by the reference ZIP writer. So only the attack under test is wrong. Catalogs are vacuumed
to 512-byte pages (as the conformance fixtures are) to keep each case small.

Canary paths are absolute paths under OUTDIR, so the corpus is meant to be generated where it
is used (the tests build it once per session into a temporary folder); the output depends only
on this script, OUTDIR and the library versions. ``--big`` also writes the 200,000-member ZIP
(25 MB), which the tests otherwise build on their own.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sqlite3
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conformance.generate import (
    Tree,
    arrow_ipc_bytes,
    catalog,
    read_tree,
    retag,
    seal,
    to_zip,
    write_tree,
)
from tiled_archive.rules.names import (
    CATALOG_NAME,
    MANIFEST_NAME,
    MIMETYPE_NAME,
    TAG_FILES,
    TAG_MANIFEST_NAME,
)
from tiled_archive.writer import DOS_EPOCH, create
from tiled_archive.zip.stream import ZipEntry, zip_stream

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE_INVALID = ROOT / "conformance" / "fixtures" / "invalid"

CANARY_PATTERN = bytes([0xCA, 0x4A, 0x2A])
#: Found in the bytes of anything read back that came from a canary.
CANARY_MARK = CANARY_PATTERN * 4
CANARY_LENGTH = 48  # elements (uint8) of every canary array: 16 repeats of the pattern
#: Created by the pickled .npy if anything ever unpickles it.
PICKLE_MARKER = "PICKLE-RAN"
PAGE_SIZE = 512
FORMS = ("directory", "zip")
#: Top-level name of a case's node and source folder is the case name; its file is named so.
FILE_STEM = "x"


def canary_values() -> np.ndarray:
    return np.frombuffer(CANARY_PATTERN * (CANARY_LENGTH // 3), dtype="u1").copy()


# -- Cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """Where one case lives: the corpus root and the case's own canary folder."""

    out: Path
    name: str

    @property
    def canary(self) -> Path:
        return self.out / "canary" / self.name

    @property
    def folder(self) -> str:
        """The case's payload folder inside an archive."""
        return f"data/{self.name}"


@dataclass
class Case:
    """One hostile archive and what each entry point must do with it.

    Codes are strings; ``"TA-E300|TA-E301"`` means either. ``validate`` lists codes the report
    must hold, ``allowed`` codes it may hold besides; ``valid`` whether the report must still
    be valid (warnings only). ``at_open``: the code ``tiled_archive.open`` must raise (None: it
    opens). ``read``: the first code the walk of the node must meet (None: every read
    succeeds). ``big`` cases are read only in the memory-guarded subprocess: ``corner`` is the
    code a one-element read must give (None: it succeeds; "ok|TA-E912": either; "skip": not
    tried), ``full`` the
    code of reading the node whole in one request. ``extract``: the code ``tiled-archive
    extract`` must exit 1 with (None: it may copy the archive, exit 0, or exit 1 naming one of
    the case's codes).
    """

    name: str
    klass: str
    description: str
    validate: tuple[str, ...]
    forms: tuple[str, ...] = FORMS
    allowed: tuple[str, ...] = ()
    valid: bool = False
    at_open: str | None = None
    read: str | None = None
    big: bool = False
    corner: str | None = "skip"
    full: str | None = None
    extract: str | None = None
    canaries: tuple[str, ...] = ()
    source: Callable[[Path, Ctx], None] | None = None
    mutate: Callable[[Tree, Ctx], None] | None = None
    sealed: Callable[[Tree, Ctx], None] | None = None  # applied after sealing (manifest bombs)
    combined: bool = False  # a node of the combined archive (read-time cases)
    conformance: str | None = None  # a referenced conformance fixture instead of a build

    def codes(self) -> set[str]:
        """Every code this case may legitimately produce anywhere."""
        found: set[str] = set()
        for item in (
            *self.validate,
            *self.allowed,
            self.at_open,
            self.read,
            self.corner,
            self.full,
            self.extract,
        ):
            if item:
                found.update(c for c in item.split("|") if c.startswith("TA-"))
        return found

    def expected(self) -> dict:
        return {
            "class": self.klass,
            "description": self.description,
            "forms": list(self.forms),
            "validate": {
                "required": list(self.validate),
                "allowed": list(self.allowed),
                "valid": self.valid,
            },
            "open": self.at_open,
            "read": None if self.big else self.read,
            "big": self.big,
            "corner_read": self.corner if self.big else None,
            "full_read": self.full if self.big else None,
            "extract": self.extract,
            "combined": self.combined,
            "canaries": list(self.canaries),
        }


CASES: list[Case] = []


def case(**kwargs) -> Callable:
    """Register a case; the decorated function writes its source files into a folder."""

    def register(source: Callable[[Path, Ctx], None]) -> Callable[[Path, Ctx], None]:
        CASES.append(Case(source=source, **kwargs))
        return source

    return register


# -- Helpers on trees and catalogs -------------------------------------------------------------


def node_id(conn: sqlite3.Connection, *path: str) -> int:
    parent = 0
    for key in path:
        row = conn.execute("SELECT id FROM nodes WHERE parent = ? AND key = ?", (parent, key))
        found = row.fetchone()
        if found is None:
            raise KeyError("/".join(path))
        parent = found[0]
    return parent


def data_source_id(conn: sqlite3.Connection, *path: str) -> int:
    (found,) = conn.execute(
        "SELECT id FROM data_sources WHERE node_id = ?", (node_id(conn, *path),)
    ).fetchone()
    return found


def structure_of(conn: sqlite3.Connection, ds: int) -> dict:
    (text,) = conn.execute(
        "SELECT s.structure FROM structures s JOIN data_sources d ON d.structure_id = s.id "
        "WHERE d.id = ?",
        (ds,),
    ).fetchone()
    return json.loads(text)


def set_structure(conn: sqlite3.Connection, ds: int, structure: dict | str) -> None:
    """Point a data source at a new structure row (structure rows are shared by content)."""
    import hashlib

    text = structure if isinstance(structure, str) else json.dumps(structure)
    try:
        from tiled.catalog.utils import compute_structure_id

        sid = compute_structure_id(json.loads(text))
    except Exception:  # noqa: BLE001 -- too deep for canonicaljson: any stable id will do
        sid = hashlib.md5(text.encode()).hexdigest()
    conn.execute("INSERT OR IGNORE INTO structures (id, structure) VALUES (?, ?)", (sid, text))
    conn.execute("UPDATE data_sources SET structure_id = ? WHERE id = ?", (sid, ds))
    conn.execute(
        "DELETE FROM structures WHERE id NOT IN "
        "(SELECT structure_id FROM data_sources WHERE structure_id IS NOT NULL)"
    )


def array_structure(structure: dict, shape: list[int]) -> dict:
    return {**structure, "shape": shape, "chunks": [[n] for n in shape]}


def keep_nodes(tree: Tree, keep: set[str]) -> Tree:
    """A copy of ``tree`` with only the top-level nodes (and payload folders) in ``keep``."""
    kept = {
        path: content
        for path, content in tree.items()
        if not path.startswith("data/") or path.split("/")[1] in keep
    }
    with catalog(kept) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        marks = ",".join("?" * len(keep))
        conn.execute(f"DELETE FROM nodes WHERE parent = 0 AND key NOT IN ({marks})", sorted(keep))
        conn.execute(
            "DELETE FROM assets WHERE id NOT IN "
            "(SELECT asset_id FROM data_source_asset_association)"
        )
        conn.execute(
            "DELETE FROM structures WHERE id NOT IN "
            "(SELECT structure_id FROM data_sources WHERE structure_id IS NOT NULL)"
        )
    return kept


def resync_assets(tree: Tree) -> None:
    """Set every file asset's size and sha256 in the catalog from the bytes in the tree."""
    import hashlib

    with catalog(tree) as conn:
        rows = conn.execute("SELECT id, data_uri FROM assets WHERE is_directory = 0").fetchall()
        for asset, uri in rows:
            content = tree.get(uri)
            if isinstance(content, bytes):
                conn.execute(
                    "UPDATE assets SET size = ?, hash_type = 'sha256', hash_content = ? "
                    "WHERE id = ?",
                    (len(content), hashlib.sha256(content).hexdigest(), asset),
                )


def compact(tree: Tree) -> None:
    with catalog(tree) as conn:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("VACUUM")


def ordered(tree: Tree) -> Tree:
    """The tree in the reference writer's member order (tag files first, payload sorted)."""
    first = [MIMETYPE_NAME, *TAG_FILES[1:], TAG_MANIFEST_NAME, CATALOG_NAME]
    names = [n for n in first if n in tree] + sorted(set(tree) - set(first))
    return {n: tree[n] for n in names}


def zip_bytes(tree: Tree) -> bytes:
    return bytes(to_zip(tree.items()))


def deep_json(levels: int, leaf: str = "0") -> str:
    """A JSON object nested ``levels`` deep: {"a":{"a":...leaf...}}."""
    return '{"a":' * levels + leaf + "}" * levels


# -- Canaries ---------------------------------------------------------------------------------


def write_canaries(ctx: Ctx, kinds: tuple[str, ...]) -> None:
    import h5py
    import tifffile
    import zarr

    folder = ctx.canary
    folder.mkdir(parents=True, exist_ok=True)
    values = canary_values()
    for kind in kinds:
        if kind == "h5":
            with h5py.File(folder / "canary.h5", "w") as f:
                f.create_dataset("canary", data=values, track_times=False)
        elif kind == "bin":
            (folder / "canary.bin").write_bytes(values.tobytes())
        elif kind == "npy":
            np.save(folder / "canary.npy", values.reshape(6, 8))
        elif kind == "tif":
            tifffile.imwrite(folder / "canary.tif", values.reshape(6, 8))
        elif kind == "zarr":
            array = zarr.create_array(
                folder / "canary.zarr",
                shape=(CANARY_LENGTH,),
                chunks=(CANARY_LENGTH,),
                dtype="u1",
                compressors=None,
                fill_value=0,
            )
            array[:] = values
        else:
            raise ValueError(kind)


def canary_path(ctx: Ctx, kind: str) -> Path:
    return (
        ctx.canary
        / {
            "h5": "canary.h5",
            "bin": "canary.bin",
            "npy": "canary.npy",
            "tif": "canary.tif",
            "zarr": "canary.zarr",
        }[kind]
    )


def relative_canary(ctx: Ctx, kind: str) -> str:
    """The canary, relative to a file in ``<out>/<case or combined>/archive/data/<case>/``."""
    return f"../../../../canary/{ctx.name}/{canary_path(ctx, kind).name}"


# -- Sources that several cases share ---------------------------------------------------------


def npy_source(dtype: str = "u1", n: int = CANARY_LENGTH) -> Callable[[Path, Ctx], None]:
    def write(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
        values = np.arange(n).astype(dtype)
        np.save(folder / f"{FILE_STEM}.npy", values.reshape(6, -1) if n % 6 == 0 else values)

    return write


def tiff_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import tifffile

    tifffile.imwrite(
        folder / f"{FILE_STEM}.tif", np.arange(CANARY_LENGTH, dtype="u1").reshape(6, 8)
    )


def csv_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    (folder / f"{FILE_STEM}.csv").write_bytes(b"a,b\n1,2\n3,4\n")


def parquet_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"a": [1, 2, 3], "b": [1.5, 2.5, 3.5]}), folder / f"{FILE_STEM}.parquet"
    )


def hdf5_file(folder: Path, build: Callable, **options) -> None:
    import h5py

    with h5py.File(folder / f"{FILE_STEM}.h5", "w", **options) as f:
        f.create_dataset("ok", data=np.arange(6, dtype="u1"), track_times=False)
        build(f)


def zarr_array_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import zarr

    array = zarr.create_array(
        folder / f"{FILE_STEM}.zarr", shape=(6, 4), chunks=(3, 2), dtype="i4", fill_value=0
    )
    array[:] = np.arange(24, dtype="i4").reshape(6, 4)


def edit_json(tree: Tree, path: str, edit: Callable[[dict], None]) -> None:
    document = json.loads(tree[path])  # type: ignore[arg-type]
    edit(document)
    tree[path] = json.dumps(document, indent=2).encode()


def sql(*statements: str) -> Callable[[Tree, Ctx], None]:
    """A mutation running SQL on the catalog; ``{node}`` is the id of ``<case>/x``, ``{ds}``
    of its data source."""

    def mutate(tree: Tree, ctx: Ctx) -> None:
        with catalog(tree) as conn:
            node = node_id(conn, ctx.name, FILE_STEM)
            ds = data_source_id(conn, ctx.name, FILE_STEM)
            for statement in statements:
                conn.execute(statement.format(node=node, ds=ds))

    return mutate


def set_node_column(tree: Tree, ctx: Ctx, column: str, text: str) -> None:
    """Set a JSON column of the node ``<case>/x`` to raw JSON text."""
    with catalog(tree) as conn:
        node = node_id(conn, ctx.name, FILE_STEM)
        conn.execute(f"UPDATE nodes SET {column} = ? WHERE id = ?", (text, node))


def set_parameters(parameters: Callable[[Ctx], dict]) -> Callable[[Tree, Ctx], None]:
    def mutate(tree: Tree, ctx: Ctx) -> None:
        with catalog(tree) as conn:
            ds = data_source_id(conn, ctx.name, FILE_STEM)
            conn.execute(
                "UPDATE data_sources SET parameters = ? WHERE id = ?",
                (json.dumps(parameters(ctx)), ds),
            )

    return mutate


def with_structure(edit: Callable[[dict], dict]) -> Callable[[Tree, Ctx], None]:
    def mutate(tree: Tree, ctx: Ctx) -> None:
        with catalog(tree) as conn:
            ds = data_source_id(conn, ctx.name, FILE_STEM)
            set_structure(conn, ds, edit(structure_of(conn, ds)))

    return mutate


def chain(*mutations: Callable[[Tree, Ctx], None]) -> Callable[[Tree, Ctx], None]:
    def mutate(tree: Tree, ctx: Ctx) -> None:
        for mutation in mutations:
            mutation(tree, ctx)

    return mutate


def swap_file(name: str, content: Callable[[Ctx, bytes], bytes]) -> Callable[[Tree, Ctx], None]:
    """Replace a registered file's bytes (what registration could not have accepted)."""

    def mutate(tree: Tree, ctx: Ctx) -> None:
        path = f"{ctx.folder}/{name}"
        tree[path] = content(ctx, tree[path])  # type: ignore[arg-type]

    return mutate


# == The cases ================================================================================

# -- Control -----------------------------------------------------------------------------------


def control_source(folder: Path, ctx: Ctx) -> None:
    npy_source()(folder, ctx)
    import h5py
    import tifffile

    with h5py.File(folder / "h.h5", "w") as f:
        f.create_dataset("d", data=np.arange(10.0), track_times=False)
        f.create_group("g").create_dataset("e", data=np.arange(4), track_times=False)
    tifffile.imwrite(folder / "t.tif", np.arange(64, dtype="u1").reshape(8, 8))
    (folder / "c.csv").write_bytes(b"a,b\n1,2\n3,4\n")
    zarr_array_source(folder, ctx)
    (folder / f"{FILE_STEM}.zarr").rename(folder / "z.zarr")


case(
    name="control-benign",
    klass="control",
    description="A benign archive (NPY, HDF5, TIFF, CSV, Zarr): no code anywhere, every read "
    "succeeds. Guards the harness against false alarms.",
    validate=(),
    valid=True,
    combined=True,
)(control_source)

# -- ZIP and manifest level --------------------------------------------------------------------

LONG_NAME = "n" * 65000 + ".csv"


def long_name(tree: Tree, ctx: Ctx) -> None:
    old, new = f"{ctx.folder}/{FILE_STEM}.csv", f"{ctx.folder}/{LONG_NAME}"
    tree[new] = tree.pop(old)
    with catalog(tree) as conn:
        conn.execute("UPDATE assets SET data_uri = ? WHERE data_uri = ?", (new, old))


case(
    name="zip-member-name-65kB",
    klass="zip",
    description="A payload member (and its asset and manifest entry) named with a 65,000-byte "
    "segment: refused at once with TA-E202 (a directory form cannot exist).",
    forms=("zip",),
    validate=("TA-E202",),
    at_open="TA-E202",
    extract="TA-E202",
    mutate=long_name,
)(csv_source)


def manifest_field(raw: str) -> Callable[[Tree, Ctx], None]:
    """After sealing: add one top-level field (raw JSON text) to the manifest; re-tag."""

    def finish(tree: Tree, ctx: Ctx) -> None:  # noqa: ARG001
        text = tree[MANIFEST_NAME].decode().rstrip()  # type: ignore[union-attr]
        assert text.endswith("}")
        tree[MANIFEST_NAME] = (text[:-1].rstrip() + f',\n  "x-hostile": {raw}\n}}\n').encode()
        retag(tree)

    return finish


case(
    name="manifest-nested-200k",
    klass="manifest",
    description="tiled-archive.json holds an array nested 200,000 levels deep (a JSON bomb for "
    "recursive parsers); everything else is consistent.",
    validate=("TA-E300|TA-E301",),
    at_open="TA-E300|TA-E301",
    extract="TA-E300|TA-E301",
    sealed=manifest_field("[" * 200_000 + "]" * 200_000),
)(csv_source)

case(
    name="manifest-integer-5000-digits",
    klass="manifest",
    description="tiled-archive.json holds a 5,000-digit integer (quadratic int parsing; "
    "Python refuses more than 4,300 digits with ValueError).",
    validate=("TA-E300|TA-E301",),
    at_open="TA-E300|TA-E301",
    extract="TA-E300|TA-E301",
    sealed=manifest_field("1" + "0" * 4999),
)(csv_source)

# -- Catalog level (checked before the app starts) ------------------------------------------------

case(
    name="catalog-metadata-nested-100k",
    klass="catalog-json",
    description="A node's metadata in catalog.db is a JSON object holding arrays nested "
    "100,000 levels deep.",
    validate=("TA-E509",),
    at_open="TA-E509",
    mutate=lambda tree, ctx: set_node_column(
        tree, ctx, "metadata", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    ),
)(npy_source())

case(
    name="catalog-structure-nested-100",
    klass="catalog-json",
    description="An array structure in catalog.db carries an extra member nested 100 levels.",
    validate=("TA-E509",),
    allowed=("TA-E506",),
    at_open="TA-E509|TA-E506",
    mutate=with_structure(
        lambda s: json.loads(json.dumps(s)[:-1] + ', "x-hostile": ' + deep_json(100) + "}")
    ),
)(npy_source())

case(
    name="catalog-specs-nested-100",
    klass="catalog-json",
    description="A node's specs in catalog.db nest 100 levels deep.",
    validate=("TA-E509",),
    allowed=("TA-E506",),
    at_open="TA-E509|TA-E506",
    mutate=lambda tree, ctx: set_node_column(
        tree, ctx, "specs", '[{"name": "x", "version": null, "x-hostile": ' + deep_json(100) + "}]"
    ),
)(npy_source())

case(
    name="catalog-parameters-nested-100",
    klass="catalog-json",
    description="A data source's parameters nest 100 levels deep (under a key no adapter takes).",
    validate=("TA-E509",),
    allowed=("TA-E508",),
    at_open="TA-E509|TA-E508",
    mutate=set_parameters(lambda ctx: json.loads('{"x-hostile": ' + deep_json(100) + "}")),
)(npy_source())


def gzip_payload(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    return gzip.compress(b"a,b\n" + b"1,2\n" * 100_000, mtime=0)


case(
    name="csv-compression-parameter",
    klass="catalog-parameters",
    description="A CSV data source's parameters hold {'compression': 'gzip'} (passed through to "
    "pandas) and its .csv file is a gzip stream.",
    validate=("TA-E508",),
    allowed=("TA-E601",),
    at_open="TA-E508",
    mutate=chain(
        set_parameters(lambda ctx: {"compression": "gzip"}),
        swap_file(f"{FILE_STEM}.csv", gzip_payload),
    ),
)(csv_source)

case(
    name="tiff-data-uri-parameter",
    klass="catalog-parameters",
    description="A TIFF data source's parameters hold data_uri = the canary TIFF outside the "
    "archive (Tiled passes parameters as keyword arguments to the adapter).",
    validate=("TA-E508",),
    at_open="TA-E508",
    canaries=("tif",),
    mutate=set_parameters(lambda ctx: {"data_uri": f"file://localhost{canary_path(ctx, 'tif')}"}),
)(tiff_source)

case(
    name="npy-data-uri-parameter",
    klass="catalog-parameters",
    description="An NPY data source's parameters hold data_uri = the canary .npy outside.",
    validate=("TA-E508",),
    at_open="TA-E508",
    canaries=("npy",),
    mutate=set_parameters(lambda ctx: {"data_uri": f"file://localhost{canary_path(ctx, 'npy')}"}),
)(npy_source())

# -- HDF5: references to other files (TA-E600) ---------------------------------------------------

FILE_REF = dict(klass="file-reference", validate=("TA-E600",), read="TA-E600", combined=True)


def benign_hdf5(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    hdf5_file(folder, lambda f: None)


def hdf5_case(**kwargs) -> Callable:
    """A case whose HDF5 file is built by the decorated ``build(f, ctx)`` and swapped in after
    registration (Tiled's registration refuses some of them, and must not open the canaries);
    the catalog's container structure gets the file's top-level keys, as registration writes
    them."""

    def register(build: Callable) -> Callable:
        options = kwargs.pop("h5_options", {})

        def hostile(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
            import h5py

            with tempfile.TemporaryDirectory() as work:
                hdf5_file(Path(work), lambda f: build(f, ctx), **options)
                with h5py.File(Path(work, f"{FILE_STEM}.h5"), "r") as f:
                    keys = sorted(f.keys())
                hostile.keys = keys  # type: ignore[attr-defined]
                return Path(work, f"{FILE_STEM}.h5").read_bytes()

        def set_keys(tree: Tree, ctx: Ctx) -> None:
            with catalog(tree) as conn:
                set_structure(
                    conn, data_source_id(conn, ctx.name, FILE_STEM), {"keys": hostile.keys}
                )  # type: ignore[attr-defined]

        mutate = chain(swap_file(f"{FILE_STEM}.h5", hostile), set_keys)
        CASES.append(Case(source=benign_hdf5, mutate=mutate, **kwargs))
        return build

    return register


@hdf5_case(
    name="hdf5-external-link-absolute",
    description="An HDF5 external link to /canary in an absolute path outside the archive.",
    canaries=("h5",),
    **FILE_REF,
)
def external_link_absolute(f, ctx: Ctx) -> None:
    import h5py

    f["ext"] = h5py.ExternalLink(str(canary_path(ctx, "h5")), "/canary")


@hdf5_case(
    name="hdf5-external-link-relative",
    description="An HDF5 external link '../../../../canary/<case>/canary.h5', which resolves "
    "to the canary from the file's folder in the directory form.",
    canaries=("h5",),
    **FILE_REF,
)
def external_link_relative(f, ctx: Ctx) -> None:
    import h5py

    f["ext"] = h5py.ExternalLink(relative_canary(ctx, "h5"), "/canary")


@hdf5_case(
    name="hdf5-external-raw-storage",
    description="An HDF5 dataset whose raw data is stored in the external file canary.bin "
    "(create_dataset(..., external=[(path, 0, n)])).",
    canaries=("bin",),
    **FILE_REF,
)
def external_raw(f, ctx: Ctx) -> None:
    external = [(str(canary_path(ctx, "bin")), 0, CANARY_LENGTH)]
    f.create_dataset("ext", shape=(CANARY_LENGTH,), dtype="u1", external=external)


@hdf5_case(
    name="hdf5-virtual-dataset",
    description="An HDF5 virtual dataset whose source is the canary HDF5 file outside.",
    canaries=("h5",),
    **FILE_REF,
)
def virtual_dataset(f, ctx: Ctx) -> None:
    import h5py
    from h5py import h5d, h5s, h5t

    layout = h5py.VirtualLayout(shape=(CANARY_LENGTH,), dtype="u1")
    source = h5py.VirtualSource(str(canary_path(ctx, "h5")), "canary", shape=(CANARY_LENGTH,))
    layout[:] = source
    # As layout.make_dataset(f, "vds") does, with no modification times (reproducible bytes).
    dcpl = layout._get_dcpl(f.file.filename)
    dcpl.set_fill_value(np.array([0], dtype="u1"))
    dcpl.set_obj_track_times(False)
    space = h5s.create_simple((CANARY_LENGTH,))
    h5d.create(f.id, b"vds", h5t.py_create(np.dtype("u1"), logical=1), space, dcpl=dcpl)


# -- HDF5: unreadable structure (TA-E601) ----------------------------------------------------

FORMAT = dict(klass="file-format", validate=("TA-E601",), read="TA-E601", combined=True)


@hdf5_case(
    name="hdf5-soft-link-loop",
    description="HDF5 soft links a -> /b -> /a, and /self -> /self.",
    **FORMAT,
)
def soft_loop(f, ctx: Ctx) -> None:  # noqa: ARG001
    import h5py

    f["a"] = h5py.SoftLink("/b")
    f["b"] = h5py.SoftLink("/a")
    f["self"] = h5py.SoftLink("/self")


@hdf5_case(
    name="hdf5-hard-link-cycle",
    description="An HDF5 group holding a hard link to itself: nested without end.",
    **FORMAT,
)
def hard_cycle(f, ctx: Ctx) -> None:  # noqa: ARG001
    group = f.create_group("g")
    group["loop"] = group  # a hard link to itself: an infinitely deep tree


@hdf5_case(
    name="hdf5-groups-3000-deep",
    description="HDF5 groups nested 3,000 levels deep (limit: 64).",
    h5_options={"libver": "latest"},
    **FORMAT,
)
def deep_groups(f, ctx: Ctx) -> None:  # noqa: ARG001
    bottom = f.create_group("/".join(["g"] * 3000))
    bottom.create_dataset("bottom", data=np.arange(3), track_times=False)


# -- Zarr ------------------------------------------------------------------------------------


def zarr_group_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import zarr

    store = folder / "g.zarr"
    group = zarr.open_group(store, mode="w")
    group.create_array("a", shape=(4,), dtype="u1", fill_value=0)[:] = np.arange(4, dtype="u1")
    zarr.consolidate_metadata(store)


def zarr_dotdot(tree: Tree, ctx: Ctx) -> None:
    """Consolidated metadata naming '..' children, down to the canary Zarr array outside."""
    canary_meta = json.loads((canary_path(ctx, "zarr") / "zarr.json").read_text())
    group = {
        "attributes": {},
        "zarr_format": 3,
        "node_type": "group",
        "consolidated_metadata": None,
    }
    up = "/".join([".."] * 5)  # <store>/../../../../.. is the corpus root

    def edit(document: dict) -> None:
        metadata = document["consolidated_metadata"]["metadata"]
        for depth in range(1, 6):
            metadata["/".join([".."] * depth)] = dict(group)
        metadata[f"{up}/canary"] = dict(group)
        metadata[f"{up}/canary/{ctx.name}"] = dict(group)
        metadata[f"{up}/canary/{ctx.name}/canary.zarr"] = canary_meta

    edit_json(tree, f"{ctx.folder}/g.zarr/zarr.json", edit)
    with catalog(tree) as conn:
        ds = data_source_id(conn, ctx.name, "g")
        set_structure(conn, ds, {"keys": ["..", "a"]})


case(
    name="zarr-dotdot-child",
    klass="file-reference",
    description="A Zarr v3 group whose consolidated metadata names a child '..' (and '../..', "
    "...) down to the canary Zarr array outside the archive.",
    validate=("TA-E600",),
    read="TA-E600",
    canaries=("zarr",),
    combined=True,
    mutate=zarr_dotdot,
)(zarr_group_source)


def zarr_meta(edit: Callable[[dict], None]) -> Callable[[Tree, Ctx], None]:
    def mutate(tree: Tree, ctx: Ctx) -> None:
        edit_json(tree, f"{ctx.folder}/{FILE_STEM}.zarr/zarr.json", edit)

    return mutate


case(
    name="zarr-unknown-codec",
    description="A Zarr v3 array whose codecs end with an unknown codec 'x-hostile-codec'.",
    mutate=zarr_meta(
        lambda m: m["codecs"].append({"name": "x-hostile-codec", "configuration": {}})
    ),
    **FORMAT,
)(zarr_array_source)

case(
    name="zarr-storage-transformer",
    description="A Zarr v3 array with an unknown storage transformer (must be understood).",
    mutate=zarr_meta(
        lambda m: m.__setitem__(
            "storage_transformers", [{"name": "x-hostile-transformer", "configuration": {}}]
        )
    ),
    **FORMAT,
)(zarr_array_source)

# -- NPY / mimetype mismatch (TA-E601) ---------------------------------------------------------


class _Marker:
    """Unpickling this creates the marker file: proof that something ran a pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.path, "w"))


def pickled_npy(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    import io

    buffer = io.BytesIO()
    marker = str(ctx.canary / PICKLE_MARKER)
    np.save(buffer, np.array([_Marker(marker), None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


case(
    name="npy-pickled-objects",
    description="An .npy of dtype object (a pickle; unpickling it would create a marker file "
    "next to the canaries), swapped in after registration.",
    allowed=("TA-E602",),
    mutate=swap_file(f"{FILE_STEM}.npy", pickled_npy),
    **FORMAT,
)(npy_source())

case(
    name="mimetype-parquet-as-csv",
    description="A Parquet file whose data source says text/csv.",
    mutate=sql("UPDATE data_sources SET mimetype = 'text/csv' WHERE id = {ds}"),
    **FORMAT,
)(parquet_source)

case(
    name="mimetype-hdf5-as-parquet",
    description="An HDF5 file whose data source says application/x-parquet (KeyError "
    "'table_name' in Tiled).",
    allowed=("TA-E506",),
    mutate=sql(
        "UPDATE data_sources SET mimetype = 'application/x-parquet' WHERE id = {ds}",
        # In the form Parquet's adapter takes (a list): the mimetype is the lie, not the form.
        "UPDATE data_source_asset_association SET parameter = 'data_uris', num = 0"
        " WHERE data_source_id = {ds}",
    ),
    **FORMAT,
)(benign_hdf5)

case(
    name="mimetype-csv-as-hdf5",
    description="A CSV file whose data source says application/x-hdf5.",
    allowed=("TA-E506",),
    mutate=sql(
        "UPDATE data_sources SET mimetype = 'application/x-hdf5' WHERE id = {ds}",
        "UPDATE data_source_asset_association SET parameter = 'data_uri', num = NULL"
        " WHERE data_source_id = {ds}",
    ),
    **FORMAT,
)(csv_source)

# -- Declared sizes (TA-E602) ------------------------------------------------------------------

SIZE = dict(klass="size", validate=("TA-E602",), read="TA-E602", combined=True)

case(
    name="table-npartitions-1e9",
    klass="size",
    description="A one-file Parquet table whose catalog structure declares 10**9 partitions: "
    "Tiled's client makes a task per partition when it reads the whole table, before it asks "
    "for any (spec 3.1 check 13: refused when the archive is opened).",
    validate=("TA-E506",),
    at_open="TA-E506",
    mutate=with_structure(lambda s: {**s, "npartitions": 10**9}),
)(parquet_source)

case(
    name="npy-structure-dtype",
    description="The catalog structure says float32 for an int64 .npy of the same shape.",
    mutate=with_structure(
        lambda s: {
            **s,
            "data_type": {"endianness": "little", "kind": "f", "itemsize": 4, "dt_units": None},
        }
    ),
    **SIZE,
)(npy_source("i8"))

case(
    name="tiff-structure-shape",
    description="The catalog structure says 16x16 for an 6x8 TIFF.",
    mutate=with_structure(lambda s: array_structure(s, [16, 16])),
    **SIZE,
)(tiff_source)

case(
    name="zarr-shape-mismatch",
    description="The Zarr array's own zarr.json says shape [60, 40]; the catalog says [6, 4].",
    mutate=zarr_meta(lambda m: m.__setitem__("shape", [60, 40])),
    **SIZE,
)(zarr_array_source)

# -- Big declared sizes and bombs (read only in the memory-guarded subprocess) -------------------

#: A valid archive whose data decodes to far more than it stores (TA-W600), read only in the
#: memory-guarded subprocess (each case names what its corner and full reads give), and a node
#: of the combined archive.
BIG_VALID = dict(klass="memory", validate=("TA-W600",), valid=True, big=True, combined=True)


def npy_header_gb(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    import io

    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + np.arange(10.0).tobytes()


case(
    name="npy-header-8GB",
    klass="size",
    description="An .npy whose header declares 10**9 float64 (8 GB) over 80 bytes of data; "
    "the catalog agrees with the header.",
    validate=("TA-E602",),
    allowed=("TA-W600",),
    big=True,
    corner="TA-E602",
    full="TA-E602|TA-E912",
    combined=True,
    mutate=chain(
        swap_file(f"{FILE_STEM}.npy", npy_header_gb),
        with_structure(
            lambda s: {
                **array_structure(s, [10**9]),
                "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
            }
        ),
    ),
)(npy_source())


TIFF_SIDE = 60000


def tiff_header_gb(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    """A classic little-endian TIFF declaring one 60000x60000 uint8 strip (3.6 GB), holding
    64 bytes."""
    tags = [  # (tag, type, value): type 3 SHORT, 4 LONG
        (256, 4, TIFF_SIDE),
        (257, 4, TIFF_SIDE),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 0),
        (277, 3, 1),
        (278, 4, TIFF_SIDE),
        (279, 4, TIFF_SIDE * TIFF_SIDE),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    data_offset = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)))
    for tag, kind, value in tags:
        out += struct.pack("<HHII", tag, kind, 1, data_offset if tag == 273 else value)
    out += struct.pack("<I", 0)
    return bytes(out) + bytes(64)


case(
    name="tiff-header-3600MB",
    klass="size",
    description="A TIFF whose IFD declares one 60000x60000 uint8 strip (3.6 GB) in a 182-byte "
    "file; the catalog agrees with the header.",
    validate=("TA-E602",),
    allowed=("TA-W600",),
    big=True,
    corner="TA-E602",
    full="TA-E602|TA-E912",
    combined=True,
    mutate=chain(
        swap_file(f"{FILE_STEM}.tif", tiff_header_gb),
        with_structure(lambda s: array_structure(s, [TIFF_SIDE, TIFF_SIDE])),
    ),
)(tiff_source)

case(
    name="npy-structure-shape-1e15",
    klass="size",
    description="The catalog structure declares shape (10**15,) for a 48-byte .npy.",
    validate=("TA-E602",),
    allowed=("TA-W600",),
    big=True,
    corner="TA-E602",
    full="TA-E602|TA-E912",
    combined=True,
    mutate=with_structure(lambda s: array_structure(s, [10**15])),
)(npy_source("u1", 10))


def zarr_one_chunk_source(length: int, fill: int) -> Callable[[Path, Ctx], None]:
    """A Zarr v3 uint8 array of ``length`` in one chunk, never written (all ``fill``)."""

    def write(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
        import zarr

        zarr.create_array(
            folder / f"{FILE_STEM}.zarr",
            shape=(length,),
            chunks=(length,),
            dtype="u1",
            fill_value=fill,
        )

    return write


case(
    name="zarr-fill-1e15",
    klass="memory",
    description="A Zarr v3 array of shape (10**15,) uint8, one chunk, never written (all fill "
    "value): its metadata and the catalog agree. A one-element slice may read (zarr fills only "
    "the selection for a missing chunk) or be refused; the whole must be refused.",
    validate=("TA-W600",),
    valid=True,
    big=True,
    corner="ok|TA-E912",
    full="TA-E912",
    combined=True,
)(zarr_one_chunk_source(10**15, fill=7))

BOMB_CHUNK = 1 << 30


def zarr_chunk_bomb_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import numcodecs
    import zarr
    from zarr.codecs import ZstdCodec

    store = folder / f"{FILE_STEM}.zarr"
    zarr.create_array(
        store,
        shape=(BOMB_CHUNK,),
        chunks=(BOMB_CHUNK,),
        dtype="u1",
        fill_value=1,
        compressors=ZstdCodec(level=3),
    )
    (store / "c").mkdir()
    # np.zeros is calloc'ed: compressing it reads the zero page, it costs no memory.
    (store / "c" / "0").write_bytes(numcodecs.Zstd(level=3).encode(np.zeros(BOMB_CHUNK, "u1")))


case(
    name="zarr-chunk-bomb-1GiB",
    klass="memory",
    description="A Zarr v3 array of one zstd chunk of 33 KB that decodes to 1 GiB of zeros: "
    "even a one-element read decodes the whole chunk.",
    validate=("TA-W600",),
    valid=True,
    big=True,
    corner="TA-E912",
    full="TA-E912",
    combined=True,
)(zarr_chunk_bomb_source)


def parquet_bomb_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 1 << 24  # 128 MiB of int64 zeros, written 16 times: 2 GiB in 2.8 KB
    table = pa.table({"zeros": pa.array(np.zeros(rows, dtype="i8"))})
    with pq.ParquetWriter(
        folder / f"{FILE_STEM}.parquet",
        table.schema,
        compression="zstd",
        write_statistics=False,
        max_rows_per_page=rows,
        data_page_size=1 << 30,
        write_batch_size=rows,
    ) as writer:
        for _ in range(16):
            writer.write_table(table, row_group_size=rows)


case(
    name="parquet-bomb-2GiB",
    klass="memory",
    description="A Parquet file of 2.8 KB holding one int64 column of 2**28 zeros (2 GiB).",
    validate=("TA-W600",),
    valid=True,
    big=True,
    corner="skip",
    full="TA-E912",
    combined=True,
)(parquet_bomb_source)


def arrow_bomb(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    """An Arrow IPC file with the Parquet file's columns: 16 zstd record batches of 2**24 rows
    of zeros each (4 GiB decoded) in 136 KB."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(io.BytesIO(old))
    rows = 1 << 24
    # np.zeros is calloc'ed: compressing it reads the zero page, it costs no memory. The
    # table holds the one batch 16 times (no copy); each is written as a record batch.
    batch = pa.record_batch(
        [pa.array(np.zeros(rows, field.type.to_pandas_dtype())) for field in schema],
        schema=schema,
    )
    return arrow_ipc_bytes(pa.Table.from_batches([batch] * 16), compression="zstd")


case(
    **BIG_VALID,
    name="arrow-ipc-bomb-4GiB",
    description="An Arrow IPC table partition (application/vnd.apache.arrow.file) of about "
    "136 KB: 16 zstd record batches whose buffers state 4 GiB decoded (pyarrow allocates "
    "what a compressed buffer states before decompressing it).",
    corner="skip",
    full="TA-E912",
    mutate=chain(
        swap_file(f"{FILE_STEM}.parquet", arrow_bomb),
        sql(
            "UPDATE data_sources SET mimetype = 'application/vnd.apache.arrow.file' WHERE id = {ds}"
        ),
    ),
)(parquet_source)

# -- Declared chunk counts: a few bytes of metadata naming 10**8 or more chunks -------------------


def hdf5_grid_file(big: bool) -> bytes:
    """An HDF5 file with /ok and /big: 10**9 one-byte chunks (none written) when ``big``."""
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("ok", data=np.arange(6, dtype="u1"), track_times=False)
        shape = (10**9,) if big else (2,)
        f.create_dataset("big", shape=shape, chunks=(1,), dtype="u1", track_times=False)
    return buffer.getvalue()


def hdf5_grid_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    (folder / f"{FILE_STEM}.h5").write_bytes(hdf5_grid_file(big=False))


case(
    name="hdf5-chunk-grid-1e9",
    klass="memory",
    description="An HDF5 dataset of 10**9 one-byte chunks, none written (2 kB of file): "
    "Tiled's HDF5 adapter makes a dask task per chunk when it opens the dataset (~640 bytes "
    "each), so even a one-element read must be refused before it is opened.",
    validate=(),
    valid=True,
    read="TA-E912",  # refused before the library enumerates (the walk meets it)
    combined=True,
    mutate=swap_file(f"{FILE_STEM}.h5", lambda ctx, old: hdf5_grid_file(big=True)),
)(hdf5_grid_source)


def hdf5_bytes(build: Callable) -> bytes:
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("ok", data=np.arange(6, dtype="u1"), track_times=False)
        build(f)
    return buffer.getvalue()


def vlen_strings(f) -> None:
    import h5py

    f.create_dataset("text", shape=(10**8,), dtype=h5py.string_dtype(), chunks=(10**6,))


case(
    name="hdf5-vlen-strings-1e8",
    klass="memory",
    description="An HDF5 dataset of 10**8 variable-length strings, none written: Tiled's "
    "adapter reads such a dataset whole when it opens it (~48 bytes an element).",
    validate=(),
    valid=True,
    read="TA-E912",
    combined=True,
    mutate=swap_file(f"{FILE_STEM}.h5", lambda ctx, old: hdf5_bytes(vlen_strings)),
)(hdf5_grid_source)


def zarr_group_grid_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import zarr

    group = zarr.open_group(folder / f"{FILE_STEM}.zarr", mode="w")
    group.create_array("big", shape=(10**9,), chunks=(1,), dtype="u1", fill_value=0)
    group.create_array("ok", shape=(6,), chunks=(6,), dtype="u1", fill_value=0)


case(
    name="zarr-group-chunk-grid-1e9",
    klass="memory",
    description="A Zarr v3 group whose array 'big' has 10**9 one-byte chunks, none written: "
    "Tiled's adapter lists each dimension's chunk lengths when it opens a group's array, so "
    "opening it must be refused before they are listed.",
    validate=("TA-W600",),
    valid=True,
    read="TA-E912",  # refused before the library enumerates (the walk meets it)
    combined=True,
)(zarr_group_grid_source)


case(
    **BIG_VALID,
    name="zarr-tiny-chunks-1e8",
    description="A Zarr v3 array of 10**8 bytes whose zarr.json says one-byte chunks (the "
    "catalog one chunk): zarr holds ~2.5 kB per chunk a read touches, so a read of 300,000 "
    "elements (0.3 MB) would hold ~1 GB. A small read reads; the whole is refused.",
    corner=None,
    full="TA-E912",
    mutate=zarr_meta(lambda m: m["chunk_grid"]["configuration"].__setitem__("chunk_shape", [1])),
)(zarr_one_chunk_source(10**8, fill=0))


def zarr_sharded(m: dict) -> None:
    """One shard of the whole array, of one-byte inner chunks: an index of 16 bytes each."""
    m["codecs"] = [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [1],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
                "index_location": "end",
            },
        }
    ]


case(
    **BIG_VALID,
    name="zarr-shard-index-1600MB",
    description="A Zarr v3 array of 10**8 bytes in one shard of one-byte inner chunks: reading "
    "any element reads the shard's index of 10**8 x 16 bytes first, so even one element must "
    "be refused.",
    corner="TA-E912",
    full="TA-E912",
    mutate=zarr_meta(zarr_sharded),
)(zarr_one_chunk_source(10**8, fill=0))

JPEG_SIDE = 12000  # 144 M pixels: under Pillow's own refusal (2 x 89 M), 432 MB as RGB


def jpeg_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    from PIL import Image

    Image.new("RGB", (8, 6), (10, 20, 30)).save(folder / f"{FILE_STEM}.jpg", quality=90)


def jpeg_sides(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    """The JPEG with its frame header (SOF0) claiming JPEG_SIDE x JPEG_SIDE pixels."""
    at = old.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return old[: at + 5] + struct.pack(">HH", JPEG_SIDE, JPEG_SIDE) + old[at + 9 :]


case(
    **BIG_VALID,
    name="jpeg-header-432MB",
    description=f"A JPEG of about 600 bytes whose frame header claims {JPEG_SIDE}x{JPEG_SIDE} "
    "RGB pixels (432 MB decoded; Tiled decodes a JPEG whole for any slice); the catalog "
    "agrees with the header.",
    corner="TA-E912",
    full="TA-E912",
    mutate=chain(
        swap_file(f"{FILE_STEM}.jpg", jpeg_sides),
        with_structure(lambda s: array_structure(s, [JPEG_SIDE, JPEG_SIDE, 3])),
    ),
)(jpeg_source)

case(
    name="jpeg-header-disagrees",
    klass="size",
    description=f"A JPEG whose frame header claims {JPEG_SIDE}x{JPEG_SIDE} pixels while the "
    "catalog keeps the 6x8 it registered.",
    validate=("TA-E602",),
    allowed=("TA-W600",),
    read="TA-E602",
    combined=True,
    mutate=swap_file(f"{FILE_STEM}.jpg", jpeg_sides),
)(jpeg_source)


def xlsx_source(folder: Path, ctx: Ctx) -> None:  # noqa: ARG001
    import pandas as pd

    pd.DataFrame({"a": [1, 2, 3], "b": [1.5, 2.5, 3.5]}).to_excel(
        folder / f"{FILE_STEM}.xlsx", index=False
    )


XLSX_ROWS = 2000


def xlsx_wide_rows(ctx: Ctx, old: bytes) -> bytes:  # noqa: ARG001
    """The workbook with its sheet's rows replaced by XLSX_ROWS rows of one cell each, in
    the last column Excel allows (XFD, 16,384): openpyxl fills every row up to it."""
    import io
    import re
    import zipfile

    rows = "".join(f'<row r="{i}"><c r="XFD{i}"><v>1</v></c></row>' for i in range(1, XLSX_ROWS))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(old)) as source, zipfile.ZipFile(out, "w") as dest:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.startswith("xl/worksheets/"):
                data = re.sub(
                    rb"<sheetData>.*</sheetData>",
                    f"<sheetData>{rows}</sheetData>".encode(),
                    data,
                    flags=re.S,
                )
                data = re.sub(rb'<dimension ref="[^"]*"/>', b"", data)
            dest.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


case(
    name="xlsx-wide-rows-33M-cells",
    klass="memory",
    description=f"An Excel workbook of 15 KB whose sheet has {XLSX_ROWS} rows of one "
    "cell each in column XFD: openpyxl fills each row with empty cells up to it (33 million "
    "cells: 845 MB and 48 s in pandas), and Tiled's ExcelAdapter parses every sheet when it "
    "is made.",
    validate=("TA-W600",),
    valid=True,
    read="TA-E912",
    combined=True,
    mutate=swap_file(f"{FILE_STEM}.xlsx", xlsx_wide_rows),
)(xlsx_source)


# -- Conformance fixtures with ZIP-level damage, referenced (open / extract) --------------------


def conformance_cases() -> list[Case]:
    cases = []
    for folder in sorted(CONFORMANCE_INVALID.glob("E1*")):
        expected = json.loads((folder / "expected.json").read_text())
        codes = expected["expected"].get("zip")
        if not codes or not (folder / "archive.zip").exists():
            continue
        either = "|".join(codes)
        cases.append(
            Case(
                name=f"conformance-{folder.name}",
                klass="zip",
                description=f"conformance/fixtures/invalid/{folder.name}: "
                + expected["description"],
                forms=("zip",),
                validate=tuple(codes),
                # Open may refuse, or open and give right values / the code on reading.
                at_open=either,
                # A wrong CRC-32 over bytes whose SHA-256 matches the manifest: extract copies
                # verified bytes and may succeed (validate reports the CRC).
                extract=None if folder.name.startswith("E111") else either,
                conformance=str(folder / "archive.zip"),
            )
        )
    return cases


CASES.extend(conformance_cases())
BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES)


# -- The 200,000-member ZIP (built on demand: 25 MB) ---------------------------------------------

MANY_MEMBERS = 200_000


def many_members_zip(base_zip_tree: Tree, dest: Path, count: int = MANY_MEMBERS) -> Path:
    """A good archive plus ``count`` empty, unlisted members ``data/<case>/junk/NNNNNN``."""
    crc_empty = zlib.crc32(b"")
    entries = [
        ZipEntry(
            name, len(data), zlib.crc32(data), lambda d=data: [d], DOS_EPOCH, name != MIMETYPE_NAME
        )
        for name, data in base_zip_tree.items()
    ]
    entries += [
        ZipEntry(f"data/junk/{i:06d}", 0, crc_empty, tuple, DOS_EPOCH, False) for i in range(count)
    ]
    with open(dest, "wb") as out:
        buffer = []
        for chunk in zip_stream(entries):
            buffer.append(chunk)
            if len(buffer) > 4096:
                out.write(b"".join(buffer))
                buffer.clear()
        out.write(b"".join(buffer))
    return dest


MANY_MEMBERS_CASE = Case(
    name="zip-200k-members",
    klass="zip",
    description="A ZIP of a good archive plus 200,000 empty unlisted members: validate must "
    "finish within 10 s (whatever it reports); open and extract must not crash or hang.",
    forms=("zip",),
    validate=(),
    allowed=("*",),
)


# == Building ==================================================================================


@dataclass
class Corpus:
    """What :func:`generate` wrote, for the tests."""

    root: Path
    cases: dict[str, Case]
    paths: dict[tuple[str, str], Path] = field(default_factory=dict)  # (case, form) -> archive
    combined: dict[str, Path] = field(default_factory=dict)  # form -> combined archive
    base_tree: Tree | None = None  # control case's tree, for the 200k-member ZIP

    def canary_root(self, name: str) -> Path:
        return self.root / "canary" / name


def build_case_tree(base: Tree, names: list[str], out: Path) -> Tree:
    tree = keep_nodes(base, set(names))
    for name in names:
        item = BY_NAME[name]
        if item.mutate:
            item.mutate(tree, Ctx(out, name))
    tree = ordered(tree)
    resync_assets(tree)
    compact(tree)
    seal(tree)
    return tree


def write_forms(tree: Tree, folder: Path, forms: tuple[str, ...]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    if "directory" in forms:
        write_tree(tree, folder / "archive")
        written["directory"] = folder / "archive"
    if "zip" in forms:
        (folder / "archive.zip").write_bytes(zip_bytes(tree))
        written["zip"] = folder / "archive.zip"
    return written


def generate(out: Path, *, big: bool = False, quiet: bool = True) -> Corpus:
    """Write the whole corpus under ``out`` (which must be absent or empty)."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(DOS_EPOCH))
    started = time.monotonic()
    built = [c for c in CASES if c.conformance is None]
    corpus = Corpus(out, dict(BY_NAME))
    with tempfile.TemporaryDirectory(prefix="tiled-archive-hostile-") as work:
        sources = Path(work, "sources")
        for item in built:
            ctx = Ctx(out, item.name)
            if item.canaries:
                write_canaries(ctx, item.canaries)
            folder = sources / item.name
            folder.mkdir(parents=True)
            item.source(folder, ctx)  # type: ignore[misc]
        everything = create(Path(work, "all"), sorted(sources.iterdir()), reproducible=True)
        base = read_tree(everything)
    for item in built:
        tree = build_case_tree(base, [item.name], out)
        if item.sealed:
            item.sealed(tree, Ctx(out, item.name))
        for form, path in write_forms(tree, out / item.name, item.forms).items():
            corpus.paths[item.name, form] = path
        if item.name == "control-benign":
            corpus.base_tree = tree
    for item in CASES:
        if item.conformance:
            corpus.paths[item.name, "zip"] = Path(item.conformance)
    members = [c.name for c in built if c.combined]
    combined = build_case_tree(base, members, out)
    corpus.combined = write_forms(combined, out / "combined", FORMS)
    if big:
        many_members_zip(corpus.base_tree, out / "zip-200k-members.zip")  # type: ignore[arg-type]
    index = {
        "cases": {
            c.name: {
                **c.expected(),
                "paths": {
                    form: str(path.relative_to(out)) if path.is_relative_to(out) else str(path)
                    for (name, form), path in corpus.paths.items()
                    if name == c.name
                },
            }
            for c in CASES
        },
        "combined": {
            "members": members,
            "paths": {f: str(p.relative_to(out)) for f, p in corpus.combined.items()},
        },
    }
    (out / "corpus.json").write_text(json.dumps(index, indent=2) + "\n")
    for item in built:
        (out / item.name / "expected.json").write_text(json.dumps(item.expected(), indent=2) + "\n")
    if not quiet:
        print(f"wrote {len(CASES)} cases to {out} in {time.monotonic() - started:.1f} s")
    return corpus


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--big", action="store_true", help="also the 200,000-member ZIP")
    args = parser.parse_args(argv)
    os.environ["SOURCE_DATE_EPOCH"] = str(DOS_EPOCH)
    generate(args.out, big=args.big, quiet=False)
    for folder in sorted(p for p in args.out.iterdir() if p.is_dir()):
        print(f"  {folder.name:40s} {tree_size(folder) / 1e3:9.1f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
