"""Archives of many nodes, built as spec Appendix A says (SQL rows, no Tiled registration).

    .venv/bin/python benchmarks/scale_build.py NODES DEST [--source FOLDER]

``NODES`` one-file array nodes (an ``.npy`` of 8 int64 each, 192 bytes, every one different) in
containers of 100 (``g0000/r000000``...), the way a search over runs comes back: the root lists
``NODES / 100`` containers. The rows are written with ``sqlite3`` in one transaction, the
files' digests filled in and the archive written by the reference writer (``write_new``: the
same manifest, tag files and ZIP as ``create``). Used by ``benchmarks/scale.py``; Tiled's own
registration of the same files is what ``create`` pays (timed there on fewer files).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np

from tiled_archive.catalog import db_file
from tiled_archive.rules.names import DATA_DIR
from tiled_archive.writer.common import PayloadFile
from tiled_archive.writer.create import write_new

SCHEMA = (
    Path(db_file.__file__).resolve().parent.parent / "rules" / "catalog-schema-917dbbcfc4b1.sql"
)
PER_CONTAINER = 100
STAMP = "2026-01-01 00:00:00"


def structure(shape: tuple[int, ...]) -> tuple[str, str]:
    """An int64 array's structure as Tiled stores it, and its id (Appendix A)."""
    value = {
        "data_type": {"endianness": "little", "kind": "i", "itemsize": 8, "dt_units": None},
        "chunks": [[n] for n in shape],
        "shape": list(shape),
        "dims": None,
        "resizable": False,
    }
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest(), json.dumps(value, separators=(",", ":"))


def source_files(folder: Path, nodes: int) -> list[Path]:
    """``nodes`` small ``.npy`` files under ``folder`` (kept between runs)."""
    paths = [
        folder / f"g{index // PER_CONTAINER:04d}" / f"r{index:06d}.npy" for index in range(nodes)
    ]
    for path in paths:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.arange(8) + int(path.stem[1:]))
    return paths


def catalog(db: Path, root: Path, files: list[Path]) -> None:
    """The catalog of ``files`` (relative to ``root``'s parent), as Appendix A gives it."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(SCHEMA.read_text())
    structure_id, structure_json = structure((8,))
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO structures (id, structure) VALUES (?, ?)", (structure_id, structure_json)
    )
    containers: dict[str, int] = {}
    next_id = 1
    nodes, sources, assets, links = [], [], [], []
    for file in files:
        group = file.parent.name
        if group not in containers:
            containers[group] = next_id
            nodes.append((next_id, 0, group, "container", json.dumps({"group": group})))
            next_id += 1
        node = next_id
        next_id += 1
        nodes.append((node, containers[group], file.stem, "array", json.dumps({"index": node})))
        sources.append((node, node, structure_id))
        member = f"{DATA_DIR}/{root.name}/{group}/{file.name}"
        assets.append((node, member))
        links.append((node, node))
    conn.executemany(
        "INSERT INTO nodes (id, parent, key, structure_family, metadata, specs, time_created,"
        f" time_updated) VALUES (?, ?, ?, ?, ?, '[]', '{STAMP}', '{STAMP}')",
        nodes,
    )
    conn.executemany(
        "INSERT INTO data_sources (id, node_id, structure_id, mimetype, parameters, properties,"
        " management, structure_family, time_created, time_updated) VALUES (?, ?, ?,"
        f" 'application/x-npy', '{{}}', '{{}}', 'external', 'array', '{STAMP}', '{STAMP}')",
        sources,
    )
    conn.executemany(
        "INSERT INTO assets (id, data_uri, is_directory, time_created, time_updated)"
        f" VALUES (?, ?, 0, '{STAMP}', '{STAMP}')",
        assets,
    )
    conn.executemany(
        "INSERT INTO data_source_asset_association (data_source_id, asset_id, parameter, num)"
        " VALUES (?, ?, 'data_uri', NULL)",
        links,
    )
    conn.execute("COMMIT")
    conn.close()


def build(nodes: int, dest: Path, source: Path) -> Path:
    """An archive of ``nodes`` array nodes at ``dest`` (``.zip``: a ZIP), from files kept in
    ``source`` (made when missing)."""
    files = source_files(source, nodes)
    db = dest.with_name(dest.name + ".catalog.db")
    db.unlink(missing_ok=True)
    catalog(db, source, files)
    payload = []
    for file in files:
        member = f"{DATA_DIR}/{source.name}/{file.parent.name}/{file.name}"
        stat = file.stat()
        opener = functools.partial(open, file, "rb")
        payload.append(
            PayloadFile(member, stat.st_size, opener, int(stat.st_mtime), local_path=file)
        )
    try:
        return write_new(
            dest, payload, db, lambda row: row.data_uri, epoch=None, force=True, quiet=True
        )
    finally:
        db.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nodes", type=int)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--source", type=Path, help="where the .npy files are kept")
    args = parser.parse_args()
    source = args.source or args.dest.parent / f"scale-source-{args.nodes}"
    print(build(args.nodes, args.dest, source))


if __name__ == "__main__":
    main()
