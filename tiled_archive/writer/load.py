"""Load an archive into a Tiled catalog (SQLite or PostgreSQL) that stock Tiled serves.

``load(archive, catalog_uri, data_dir, at="runs/r1")`` copies the archive's payload files into
``data_dir/runs/r1/`` (each checked against the manifest's SHA-256 while it is copied) and its
nodes, structures, data sources and assets into the catalog under the node ``runs/r1``, with
every asset URI pointing at its copy. Then ``tiled serve catalog CATALOG_URI -r DATA_DIR``
serves the archive's nodes next to whatever the catalog held before. With ``node="raw"``,
the archive's node ``raw`` alone (its subtree, its files) is loaded, as the node ``runs/r1``.

All or nothing: key collisions and files that would overwrite other bytes are found before
anything is written; the rows go in one transaction; and when anything fails, the files this
load created are removed again. The rows are written through SQLAlchemy, in batches, into the
tables as the catalog itself defines them (reflected: the schema Tiled's init made there, with
each backend's types, JSONB and enums on PostgreSQL), so the same code writes SQLite and
PostgreSQL and Tiled's triggers (the closure table) run as for any insert. Tiled's ORM module
would define the same tables, but importing it imports Tiled's server stack (~3 s).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..catalog.database import TiledCatalog, served_tables
from ..catalog.db_file import absolute_uri
from ..files.faults import crash_point
from ..files.hashing import sha256_of
from ..files.space import out_of_space
from ..files.work import sweep_tree
from ..reader import Archive, open_archive
from ..rules.catalog_rows import SERVED_TABLES
from ..rules.manifest import FileEntry
from ..rules.names import RAGGED_MIMETYPE
from ..rules.paths import escapes_folder, path_problems
from ..rules.problems import ArchiveError
from .convert import refuse_incomplete


@dataclass(frozen=True)
class LoadResult:
    """What a load wrote: ``catalog`` (its URI, password hidden), ``at`` (the node path the
    archive's top-level nodes are under, or with ``node`` the path of that node of the
    archive), nodes and files written, the payload bytes, and the SQL storages (ragged
    arrays' DuckDB files) a stock server must be given with ``-w``."""

    catalog: str
    at: str
    data_dir: Path
    nodes: int
    files: int
    reused_files: int
    bytes: int
    sql_storages: tuple[str, ...]
    node: str = ""

    def serve_command(self) -> list[str]:
        """The stock ``tiled serve catalog`` command line that serves what was loaded (the
        catalog's URI with its password hidden: put it back)."""
        command = ["tiled", "serve", "catalog", self.catalog, "-r", str(self.data_dir)]
        for uri in self.sql_storages:
            command += ["-w", uri]
        return command


def load(
    archive: str | Path,
    catalog_uri: str,
    data_dir: str | Path,
    *,
    at: str = "",
    node: str = "",
) -> LoadResult:
    """Load ``archive`` into the Tiled catalog at ``catalog_uri`` under node path ``at``, its
    files into ``data_dir`` (below ``at`` too). A catalog that does not exist yet is created
    by Tiled's own init (SQLite: a path or ``sqlite:///…``; ``postgresql://…``: the database
    must exist).

    With ``node`` (a path of keys in the archive, ``a/b``), only that node and its subtree
    are loaded, with their files, and the node becomes the node ``at`` itself (its last key
    the node's new key; the archive's parents of it and root metadata are left out): so a
    download of the server's node ``raw`` loaded ``at="runs/raw"`` is ``runs/raw``, not
    ``runs/raw/raw``.

    Raises :class:`ArchiveError`: TA-E920 for a key the catalog already has, TA-E921 for a
    file that would overwrite other bytes, TA-E922 when the catalog cannot be opened or
    written, TA-E900 for a ``node`` the archive does not hold; the archive's own codes when it
    breaks a rule. ValueError for an ``at`` with ``.`` or ``..`` segments, or a ``node``
    without ``at``."""
    segments = [segment for segment in at.split("/") if segment]
    # The node path names the files' folder too, and both go into file URIs.
    if segments and (escapes_folder("/".join(segments)) or path_problems("/".join(segments))):
        raise ValueError(f"{at!r} is not a node path: no '.' or '..' segments, no #, ?, \\")
    keys = [key for key in node.split("/") if key]
    if keys and not segments:
        raise ValueError(f"loading the archive's node {node!r} needs the node path it becomes")
    data_dir = Path(data_dir).absolute()
    if set(str(data_dir)) & set(_URI_UNSAFE):
        raise ValueError(f"{str(data_dir)!r}: a data folder whose path has none of {_URI_UNSAFE}")
    base = data_dir.joinpath(*segments)
    try:
        return _load(archive, catalog_uri, data_dir, base, segments, keys)
    except OSError as err:  # the data folder cannot be made or written
        where = str(err.filename or data_dir)
        full = out_of_space(err, where)
        raise full or ArchiveError("TA-E904", where, err.strerror or str(err)) from None


#: Characters a file URI would read otherwise (Tiled's URIs do not escape them).
_URI_UNSAFE = "#?%"


def _load(
    archive: str | Path,
    catalog_uri: str,
    data_dir: Path,
    base: Path,
    segments: list[str],
    node: list[str],
) -> LoadResult:
    with open_archive(archive) as source:
        target = _Catalog(catalog_uri)
        _refuse_inside(source, target, data_dir)
        # What stock Tiled will read must pass the checks that tiled-archive's reader makes.
        source.check_catalog()
        refuse_incomplete(source, "loaded", sealed=True)
        source.check_data_files()
        if node:  # it is the path's last node: the archive root's metadata is not its
            rows = _archive_rows(source, node, segments[-1])
            parents, root = segments[:-1], {}
        else:
            rows = _archive_rows(source)
            parents, root = segments, source.manifest.extra.get("root") or {}
        files = _planned_files(source, base, data_dir, _files_of(source, rows) if node else None)
        made_catalog = target.ensure_exists()
        created: list[Path] = []
        try:
            target.check(parents, rows.top_level_keys())
            uris, sql_storages = _uri_map(source, rows, base)
            reused = _copy_files(source, files, created)
            target.write(parents, rows, uris, root)
        except BaseException:
            if not target.committed:  # after the commit, the rows need the files
                _remove(created)
                if made_catalog is not None:  # a new SQLite file: gone again
                    made_catalog.unlink(missing_ok=True)
            raise
    return LoadResult(
        target.display,
        "/".join(segments),
        data_dir,
        len(rows.nodes),
        len(files) - reused,
        reused,
        sum(entry.size for entry, _ in files),
        tuple(sorted(sql_storages)),
        "/".join(node),
    )


# -- The archive's rows -------------------------------------------------------------------------


@dataclass
class _Rows:
    """The archive catalog's rows that Tiled serves, nodes ordered parents first."""

    nodes: list[dict[str, Any]]
    structures: list[dict[str, Any]]
    data_sources: list[dict[str, Any]]
    assets: list[dict[str, Any]]
    associations: list[dict[str, Any]]
    revisions: list[dict[str, Any]]

    def top_level_keys(self) -> list[str]:
        return [node["key"] for node in self.nodes if node["parent"] == 0]


_JSON_COLUMNS = {"metadata", "specs", "structure", "parameters", "properties"}
_TIME_COLUMNS = {"time_created", "time_updated"}


def _refuse_inside(source: Archive, catalog: TiledCatalog, data_dir: Path) -> None:
    """ValueError when the target catalog or the data folder lies inside the archive: a load
    never writes into what it reads."""
    inside = source.location.resolve()
    places = [data_dir] + ([catalog.sqlite_path()] if catalog.is_sqlite else [])
    for place in places:
        if place.resolve() == inside or place.resolve().is_relative_to(inside):
            raise ValueError(f"{place} is inside the archive {source.location}: load elsewhere")


def _archive_rows(source: Archive, node: Sequence[str] = (), key: str = "") -> _Rows:
    """Every row to copy, decoded (JSON to values, times to datetimes) as Tiled's ORM takes
    them. Nodes are walked from the root, so a node is listed after its parent; a node the root
    does not reach is not loaded (Tiled would not serve it either). With ``node`` (its keys
    from the root), that node and its subtree only, the node a top-level one named ``key``;
    TA-E900 when the archive has no such node."""
    uri = f"{source.catalog_path().resolve().as_uri()}?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        tables = {
            name: [_decoded(row) for row in conn.execute(f'SELECT * FROM "{name}"')]
            for name in SERVED_TABLES
        }
    children: dict[int | None, list[dict[str, Any]]] = {}
    for row in tables["nodes"]:
        children.setdefault(row["parent"], []).append(row)
    top = {"id": 0}  # the root, then each node on the way to ``node``
    for depth, segment in enumerate(node):
        below = children.get(top["id"], [])
        top = next((row for row in below if row["key"] == segment), None)
        if top is None:
            where = "/".join(node[: depth + 1])
            raise ArchiveError("TA-E900", where, "no such node in the archive")
    ordered = [{**top, "parent": 0, "key": key}] if node else []
    frontier = [top["id"]]
    while frontier:
        level = [child for parent in frontier for child in children.get(parent, [])]
        ordered.extend(level)
        frontier = [node["id"] for node in level]
    reached = {node["id"] for node in ordered}
    sources = [d for d in tables["data_sources"] if d["node_id"] in reached]
    source_ids = {d["id"] for d in sources}
    associations = [
        a for a in tables["data_source_asset_association"] if a["data_source_id"] in source_ids
    ]
    asset_ids = {a["asset_id"] for a in associations}
    # A target catalog shares structures between data sources by id, trusting the id to be
    # the hash of the content (Tiled's own writes do): an archive's ids are opaque (spec
    # appendix A), so each structure is loaded under the id Tiled computes for it.
    hashed = {s["id"]: structure_id(s["structure"]) for s in tables["structures"]}
    sources = [
        {**d, "structure_id": hashed.get(d["structure_id"])} if d["structure_id"] else d
        for d in sources
    ]
    wanted = {d["structure_id"] for d in sources}
    structures = {hashed[s["id"]]: s["structure"] for s in tables["structures"]}
    return _Rows(
        ordered,
        [{"id": i, "structure": structures[i]} for i in sorted(wanted - {None})],
        sources,
        [a for a in tables["assets"] if a["id"] in asset_ids],
        associations,
        [r for r in tables["revisions"] if r["node_id"] in reached],
    )


def structure_id(structure: Any) -> str:
    """The id Tiled gives a structure: ``tiled.catalog.utils.compute_structure_id``, the MD5 of
    its canonical JSON (spec appendix A), with the library Tiled uses for it (``canonicaljson``;
    importing Tiled's module would import its server stack)."""
    import hashlib

    import canonicaljson

    return hashlib.md5(canonicaljson.encode_canonical_json(structure)).hexdigest()


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    values = dict(row)
    for column in _JSON_COLUMNS & values.keys():
        if values[column] is not None:
            values[column] = json.loads(values[column])
    for column in _TIME_COLUMNS & values.keys():
        if values[column] is not None:
            values[column] = datetime.fromisoformat(values[column])  # §3: one fixed grammar
    return values


# -- The files ----------------------------------------------------------------------------------


def _destination(base: Path, member: str) -> Path:
    """Where payload member ``data/x/y`` goes: ``base/x/y``."""
    return base.joinpath(*member.split("/")[1:])


def _files_of(source: Archive, rows: _Rows) -> set[str]:
    """The payload files the assets of ``rows`` are: a file, or every file of a folder (a
    directory asset such as a Zarr store)."""
    members = {source.asset_member(asset["data_uri"]) for asset in rows.assets}
    wanted = set()
    for entry in source.manifest.files:
        parts = entry.path.split("/")  # data/…: the file, or a folder above it, is an asset
        if any("/".join(parts[:end]) in members for end in range(2, len(parts) + 1)):
            wanted.add(entry.path)
    return wanted


def _planned_files(
    source: Archive, base: Path, data_dir: Path, wanted: set[str] | None = None
) -> list[tuple[FileEntry, Path]]:
    """Each payload file (those in ``wanted``, when given) and its destination; TA-E921 for a
    destination that holds other bytes (one holding the same bytes, from an earlier load, is
    kept), or that a symbolic link in the data folder would send elsewhere."""
    planned, real_root = [], data_dir.resolve()
    inside = functools.cache(lambda folder: folder.resolve().is_relative_to(real_root))
    for entry in source.manifest.files:
        if wanted is not None and entry.path not in wanted:
            continue
        target = _destination(base, entry.path)
        if not inside(target.parent):
            raise _clash(target, entry, "lies beyond a symbolic link out of the data folder, not")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise _clash(target, entry, "is not a regular file")
        if target.is_file() and sha256_of(target) != entry.sha256:
            raise _clash(target, entry, "holds other bytes")
        planned.append((entry, target))
    return planned


def _clash(target: Path, entry: FileEntry, what: str) -> ArchiveError:
    return ArchiveError(
        "TA-E921",
        str(target),
        f"{what} than {entry.path} of the archive; nothing was loaded",
    )


def _copy_files(source: Archive, files: list[tuple[FileEntry, Path]], created: list[Path]) -> int:
    """Copy the files not yet in place, each verified; return how many were already there.
    ``created`` collects every file and folder made, for :func:`_remove` on failure."""
    reused = 0
    present: set[Path] = set()  # folders known to exist
    # Partial copies an earlier load left when it was killed (each folder listed once).
    sweep_tree(sorted({target.parent for _, target in files if target.parent.is_dir()}))
    copies = []
    for entry, target in files:
        if target.is_file():
            reused += 1
            continue
        missing = []
        for folder in (target.parent, *target.parent.parents):
            if folder in present or folder.exists():
                break
            missing.append(folder)
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        present.update((target.parent, *target.parent.parents))
        created.append(target)
        copies.append((entry, target))
    # A pool: copying many small files waits on the filesystem (create, write, rename) more
    # than it hashes. The first failure stops the rest (its caller removes what was made).
    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        running = [
            (target, pool.submit(source.copy_verified, entry, target, replace=False))
            for entry, target in copies
        ]
        try:
            for target, copied in running:
                if not copied.result():
                    created.remove(target)  # it appeared meanwhile with the same bytes
                    reused += 1
                crash_point("load:copied")
        finally:
            for _, copied in running:
                copied.cancel()
    return reused


#: Files copied at once by a load.
COPY_WORKERS = 4


def _remove(created: list[Path]) -> None:
    """Undo :func:`_copy_files`: its files, then its folders (emptied), deepest first."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()


def _uri_map(source: Archive, rows: _Rows, base: Path) -> tuple[dict[int, str], set[str]]:
    """Each asset's new URI (by its id in the archive): its copy's, absolute, as Tiled
    writes it; and those of SQL storages."""
    ragged = {d["id"] for d in rows.data_sources if d["mimetype"] == RAGGED_MIMETYPE}
    sql_storage = {a["asset_id"] for a in rows.associations if a["data_source_id"] in ragged}
    uris = {
        asset["id"]: absolute_uri(
            _destination(base, source.asset_member(asset["data_uri"])),
            asset["id"] in sql_storage,
        )
        for asset in rows.assets
    }
    return uris, {uris[asset_id] for asset_id in sql_storage}


# -- The catalog --------------------------------------------------------------------------------


class _Catalog(TiledCatalog):
    """The target catalog of a load."""

    #: Whether the load's transaction committed (what fails after it must not undo the files).
    committed = False

    def check(self, segments: list[str], keys: list[str]) -> None:
        """TA-E920 for a key the catalog already has under ``segments``, or a node on that
        path that is not a container or is one read from a file (HDF5, Zarr: Tiled serves its
        children from the file, never from the catalog)."""
        self.check_revision()
        self.run(self._check(segments, keys))

    def write(
        self,
        segments: list[str],
        rows: _Rows,
        uris: dict[int, str],
        root: dict[str, Any],
    ) -> None:
        """Insert every row in one transaction, under ``segments`` (containers made as needed,
        the last one with the archive's ``root`` metadata and specs)."""
        self.run(self._write(segments, rows, uris, root))

    async def _check(self, segments: list[str], keys: list[str]) -> None:
        from sqlalchemy import select

        async with self.engine() as engine, engine.connect() as conn:
            tables = await served_tables(conn)
            nodes, sources = tables["nodes"], tables["data_sources"]
            parent, path = 0, []
            for segment in segments:
                path.append(segment)
                found = (
                    await conn.execute(
                        select(nodes.c.id, nodes.c.structure_family).where(
                            nodes.c.parent == parent, nodes.c.key == segment
                        )
                    )
                ).first()
                if found is None:
                    return  # made by the load: nothing under it yet
                if str(found.structure_family).rsplit(".", 1)[-1] != "container":
                    raise _collision("/".join(path), "is not a container")
                backed = await conn.execute(
                    select(sources.c.id).where(sources.c.node_id == found.id)
                )
                if backed.first() is not None:
                    raise _collision("/".join(path), "is read from a file, not the catalog")
                parent = found.id
            taken = (
                await conn.execute(
                    select(nodes.c.key).where(nodes.c.parent == parent, nodes.c.key.in_(keys))
                )
            ).scalars()
            taken = sorted(taken)
            if taken:
                where = "/".join(segments) or "the root"
                listed = ", ".join(repr(k) for k in taken[:5]) + (" ..." if taken[5:] else "")
                raise _collision(where, f"already holds {listed}")

    async def _write(
        self, segments: list[str], rows: _Rows, uris: dict[int, str], root: dict[str, Any]
    ) -> None:

        async with self.engine() as engine:
            async with engine.begin() as conn:  # one transaction
                tables = await served_tables(conn)
                if not self.is_sqlite:  # ids are allocated below: no other writer meanwhile
                    listed = ", ".join(f'"{name}"' for name in _NUMBERED)
                    await conn.exec_driver_sql(f"LOCK TABLE {listed} IN EXCLUSIVE MODE")
                parent = await self._containers(conn, tables["nodes"], segments, root)
                # New ids, in order: a node after its parent (Tiled's closure trigger needs it).
                node_ids = {0: parent} | await _new_ids(conn, tables["nodes"], rows.nodes)
                nodes = [
                    {**n, "id": node_ids[n["id"]], "parent": node_ids[n["parent"]]}
                    for n in rows.nodes
                ]
                await _insert(conn, tables["nodes"], nodes)
                await self._insert_structures(conn, tables["structures"], rows.structures)
                asset_ids = await self._insert_assets(conn, tables["assets"], rows.assets, uris)
                source_ids = await _new_ids(conn, tables["data_sources"], rows.data_sources)
                sources = [
                    {**d, "id": source_ids[d["id"]], "node_id": node_ids[d["node_id"]]}
                    for d in rows.data_sources
                ]
                await _insert(conn, tables["data_sources"], sources)
                associations = [
                    {
                        **a,
                        "data_source_id": source_ids[a["data_source_id"]],
                        "asset_id": asset_ids[a["asset_id"]],
                    }
                    for a in rows.associations
                ]
                await _insert(conn, tables["data_source_asset_association"], associations)
                revisions = [
                    {**_without(r, "id"), "node_id": node_ids[r["node_id"]]} for r in rows.revisions
                ]
                await _insert(conn, tables["revisions"], revisions)
                if not self.is_sqlite:  # PostgreSQL's sequences past the ids written
                    for name in _NUMBERED:  # forward only: never back over ids handed out
                        sequence = f"pg_get_serial_sequence('{name}', 'id')"
                        await conn.exec_driver_sql(
                            f"SELECT setval({sequence}, GREATEST((SELECT coalesce(max(id), 0)"
                            f' + 1 FROM "{name}"), nextval({sequence})), false)'
                        )
            self.committed = True  # before the engine's disposal, which may fail

    async def _containers(
        self, conn: Any, nodes: Any, segments: list[str], root: dict[str, Any]
    ) -> int:
        """The id of the node at ``segments``, made (containers) where missing; the last one
        stands for the archive's root and takes its metadata and specs."""
        from sqlalchemy import insert, select

        parent = 0
        for depth, segment in enumerate(segments):
            found = await conn.execute(
                select(nodes.c.id).where(nodes.c.parent == parent, nodes.c.key == segment)
            )
            node_id = found.scalar()
            if node_id is None:
                last = depth == len(segments) - 1
                container = {
                    "parent": parent,
                    "key": segment,
                    "structure_family": "container",
                    "metadata": (root.get("metadata") or {}) if last else {},
                    "specs": (root.get("specs") or []) if last else [],
                }
                statement = insert(nodes).returning(nodes.c.id)
                node_id = (await conn.execute(statement, container)).scalar_one()
            parent = node_id
        return parent

    async def _insert_structures(
        self, conn: Any, table: Any, structures: list[dict[str, Any]]
    ) -> None:
        """Structures are shared by content hash: insert those the catalog lacks."""
        have = await _present(conn, table.c.id, [s["id"] for s in structures])
        await _insert(conn, table, [s for s in structures if s["id"] not in have])

    async def _insert_assets(
        self, conn: Any, table: Any, assets: list[dict[str, Any]], uris: dict[int, str]
    ) -> dict[int, int]:
        """Insert the assets at their new URIs; an asset the catalog already has (the same
        file, loaded before) is shared. Returns new ids by archive id."""
        existing = await _present(conn, table.c.data_uri, [uris[a["id"]] for a in assets])
        ids = {a["id"]: existing[uris[a["id"]]] for a in assets if uris[a["id"]] in existing}
        new = [a for a in assets if uris[a["id"]] not in existing]
        ids |= await _new_ids(conn, table, new)
        await _insert(
            conn, table, [{**a, "id": ids[a["id"]], "data_uri": uris[a["id"]]} for a in new]
        )
        return ids


#: Tables whose ids a load allocates (their own sequences on PostgreSQL).
_NUMBERED = ("nodes", "data_sources", "assets")
#: Values per ``IN (...)`` lookup.
_LOOKUP_BATCH = 500


async def _new_ids(conn: Any, table: Any, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Fresh ids of ``table`` for ``rows`` (by their archive id), in order, past the largest
    the table holds."""
    from sqlalchemy import func, select

    largest = (await conn.execute(select(func.coalesce(func.max(table.c.id), 0)))).scalar()
    return {row["id"]: largest + 1 + i for i, row in enumerate(rows)}


async def _present(conn: Any, column: Any, values: list[Any]) -> dict[Any, Any]:
    """Which ``values`` the column's table holds: value -> that row's id."""
    from sqlalchemy import select

    table, found = column.table, {}
    for start in range(0, len(values), _LOOKUP_BATCH):
        chunk = values[start : start + _LOOKUP_BATCH]
        rows = await conn.execute(select(column, table.c.id).where(column.in_(chunk)))
        found.update(dict(rows.all()))
    return found


async def _insert(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (only the columns ``table`` has: an archive's catalog may hold more)
    in one executemany, rows in order."""
    from sqlalchemy import insert

    if rows:
        await conn.execute(insert(table), _fitted(table, rows))


def _without(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in columns}


def _fitted(table: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with only the columns ``table`` has (an archive's catalog may hold more)."""
    names = set(table.c.keys())
    return [{k: v for k, v in row.items() if k in names} for row in rows]


def _collision(where: str, what: str) -> ArchiveError:
    return ArchiveError(
        "TA-E920",
        where,
        f"the catalog's node {where} {what}; nothing was loaded",
    )
