"""catalog.db: Tiled's own SQL catalog, created, filled and rewritten through Tiled.

Tiled writes absolute ``file://localhost/ABS/PATH`` asset URIs. Inside an archive they are archive
paths (``data/...``); *relocation* turns them back into absolute URIs under a directory so that a
stock ``tiled serve catalog`` works, and *canonicalization* undoes that.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath

from sqlalchemy import Connection, bindparam, create_engine, select, text, update
from tiled.utils import ensure_uri

from ..rules.manifest import FileEntry
from ..rules.names import RELOCATED_SCHEMES, SQL_STORAGE_ASSETS
from ..rules.paths import (
    member_from_data_uri,
    member_from_relocated,
    moved_folder,
    relocated_path,
)
from ..rules.problems import ArchiveError
from ..rules.schemas import catalog_schema_sql

_SCHEMA_COOKIE = 1
#: The tables whose rows carry creation and update times.
_TIMESTAMPED = ("nodes", "data_sources", "assets", "revisions", "access_tags")


@dataclass(frozen=True)
class AssetRow:
    """One row of Tiled's ``assets`` table."""

    id: int
    data_uri: str
    is_directory: bool
    size: int | None
    hash_type: str | None
    hash_content: str | None


def sqlite_url(db: Path, *, read_only: bool = False) -> str:
    """A SQLAlchemy URL for ``db``; read-only mode never creates journal or lock files."""
    if read_only:
        return f"sqlite:///file:{db.absolute()}?mode=ro&uri=true"
    return f"sqlite:///{db.absolute()}"


@contextlib.contextmanager
def _engine(db: Path, *, read_only: bool = False) -> Iterator:
    engine = create_engine(sqlite_url(db, read_only=read_only))
    try:
        yield engine
    finally:
        engine.dispose()


def schema_revision(db: Path) -> str | None:
    """The alembic revision Tiled stamped on the catalog (None when there is none)."""
    with _engine(db, read_only=True) as engine, engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def init_catalog(db: Path, readable: list[str]):
    """Create ``db`` as Tiled's own catalog init makes it; return Tiled's catalog adapter over it.

    Tiled's init runs alembic in a subprocess that imports Tiled again (2-5 s); the packaged
    schema SQL is what that init creates (a test dumps both and compares), so it is run
    instead, in-process.
    """
    from tiled.catalog import from_uri

    create_catalog_file(db)
    return from_uri(sqlite_url(db), readable_storage=readable)


def create_catalog_file(db: Path) -> None:
    """Create ``db`` as the SQLite catalog Tiled's init makes (from the packaged schema SQL)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(catalog_schema_sql())


def node_count(db: Path | str) -> int:
    """How many nodes the catalog ``db`` (a path, or a read-only SQLite URI) holds below its
    root (Tiled's root row, key ``""`` and no parent, not counted)."""
    uri = str(db) if str(db).startswith("file:") else f"{Path(db).absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM nodes WHERE parent IS NOT NULL").fetchone()[0]


def read_assets(db: Path) -> list[AssetRow]:
    """Every asset of the catalog."""
    columns = ", ".join(AssetRow.__dataclass_fields__)
    with contextlib.closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute(f"SELECT {columns} FROM assets ORDER BY id").fetchall()
    return [AssetRow(id, uri, bool(is_dir), *rest) for id, uri, is_dir, *rest in rows]


# -- Rewriting asset URIs --------------------------------------------------------------------


def finalize(
    db: Path,
    member_for_uri: Callable[[AssetRow], str],
    entries: Mapping[str, FileEntry],
    *,
    timestamp: datetime | None = None,
) -> None:
    """Put a catalog into archive form, in place.

    Each asset's ``data_uri`` becomes the archive path ``member_for_uri`` gives; file assets get
    ``size``, ``hash_type='sha256'`` and ``hash_content`` from ``entries``. With ``timestamp``
    every row's creation/update time is set to it (reproducible archives). Ends compacted.
    """
    from tiled.catalog import orm

    changes = []
    for row in read_assets(db):
        member = member_for_uri(row)
        values: dict[str, object] = {"id": row.id, "data_uri": member}
        if not row.is_directory:
            entry = entries[member]
            values.update(size=entry.size, hash_type="sha256", hash_content=entry.sha256)
        changes.append(values)
    with _engine(db) as engine, engine.begin() as conn:
        _update_assets(conn, changes)
        if timestamp is not None:
            stamp = timestamp.astimezone(timezone.utc).replace(tzinfo=None)
            for name in _TIMESTAMPED:
                stamped = orm.Base.metadata.tables[name]
                conn.execute(update(stamped).values(time_created=stamp, time_updated=stamp))
    _compact(db)


def fill_hashes(
    db: Path,
    entries: Mapping[str, FileEntry],
    member_of: Callable[[str], str],
    *,
    compact: bool = True,
) -> None:
    """Give every file asset the size in ``entries`` and, where it has none, the SHA-256
    there (by the member ``member_of`` names for its URI), in place: an incomplete archive's
    catalog once its files were fetched, or as a browse mirror grows (spec 4.1). Without
    ``compact``, the file is changed where it is (a mirror is read while it grows)."""

    changes = []
    for row in read_assets(db):
        entry = None if row.is_directory else entries.get(member_of(row.data_uri))
        if entry is None:
            continue
        values: dict[str, object] = {"id": row.id, "size": entry.size}
        if row.hash_content is None and entry.sha256 is not None:
            values.update(hash_type="sha256", hash_content=entry.sha256)
        if (row.size, row.hash_content) != (values["size"], values.get("hash_content")):
            changes.append(values)
    with _engine(db) as engine, engine.begin() as conn:
        _update_assets(conn, changes)
    if compact:
        _compact(db)


def _rewrite_uris(db: Path, rewrite: Callable[[str, bool], str]) -> None:
    """Rewrite every asset URI as ``rewrite(uri, is_sql_storage)``."""
    from tiled.catalog import orm

    table = orm.Asset.__table__
    with _engine(db) as engine, engine.begin() as conn:
        sql_assets = {row[0] for row in conn.execute(text(SQL_STORAGE_ASSETS))}
        rows = conn.execute(select(table.c.id, table.c.data_uri)).all()
        changes = [{"id": i, "data_uri": rewrite(uri, i in sql_assets)} for i, uri in rows]
        _update_assets(conn, changes)
    _compact(db)


def _update_assets(conn: Connection, changes: list[dict[str, object]]) -> None:
    """Update asset rows by ``id``, one statement per set of columns changed, executed for
    every row at once; ``time_updated`` kept (not Tiled's ``onupdate=now()``)."""
    from tiled.catalog import orm

    table = orm.Asset.__table__
    batches: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for values in changes:
        columns = tuple(sorted(key for key in values if key != "id"))
        batches.setdefault(columns, []).append({f"new_{k}": v for k, v in values.items()})
    for columns, batch in batches.items():
        assigned = {column: bindparam(f"new_{column}") for column in columns}
        statement = (
            update(table)
            .where(table.c.id == bindparam("new_id"))
            .values(**assigned, time_updated=table.c.time_updated)
        )
        conn.execute(statement, batch)


def _compact(db: Path) -> None:
    """Rewrite ``db`` as a fresh file (``VACUUM INTO``): no stale pages, no history.

    A plain VACUUM keeps header counters that grow with every write, so equal content written
    along different paths would differ; a fresh copy with a fixed schema cookie does not. The
    copy is in rollback-journal mode, never WAL.
    """
    fresh = db.with_name(db.name + ".compact")
    fresh.unlink(missing_ok=True)
    with _engine(db) as engine:
        with engine.begin() as conn:
            # Tiled's schema creation orders indexes by object identity; recreate them by name.
            # Only when needed: each schema change bumps the header's schema cookie.
            indexes = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "ORDER BY rowid"
            ).all()
            if indexes != sorted(indexes):
                for name, _ in indexes:
                    conn.exec_driver_sql(f'DROP INDEX "{name}"')
                for _, sql in sorted(indexes):
                    conn.exec_driver_sql(sql)
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM INTO ?", (str(fresh),))
    with _engine(fresh) as engine, engine.begin() as conn:
        # The schema cookie counts schema changes and copies over the file's history; nothing
        # else has this fresh file open, so it can safely be set to a constant.
        conn.exec_driver_sql(f"PRAGMA schema_version = {_SCHEMA_COOKIE}")
    os.replace(fresh, db)


def relocated_uri(root: Path, member: str, is_sql_storage: bool) -> str:
    """The relocated form of ``member`` in an archive at ``root``, as Tiled writes it:
    ``file://localhost/ABS`` (``duckdb://localhost//ABS`` for an SQL storage)."""
    return absolute_uri(root / member_from_data_uri(member), is_sql_storage)


def absolute_uri(path: Path, is_sql_storage: bool) -> str:
    """The URI Tiled writes for the file at absolute ``path``: ``file://localhost/ABS``, or
    ``duckdb://localhost//ABS`` for an SQL storage (a ragged data source's DuckDB file)."""
    if is_sql_storage:
        return ensure_uri(f"{RELOCATED_SCHEMES[True]}:///{path}")
    return ensure_uri(path)


def relocate_uris(db: Path, root: Path) -> None:
    """Rewrite archive-form URIs as absolute URIs under ``root`` (in place)."""
    root = root.resolve()
    _rewrite_uris(db, lambda uri, sql: relocated_uri(root, uri, sql))


def canonicalize(db: Path, root: PurePath) -> None:
    """Rewrite URIs relocated under ``root`` back into archive form (in place).

    ``root`` is taken as the URIs name it, not resolved: after a move it is where the archive
    was relocated, which may no longer exist or may now be something else.
    """
    _rewrite_uris(db, lambda uri, sql: member_from_relocated(uri, root))


def sql_storages(db: Path) -> list[str]:
    """The SQL storage URIs of a relocated catalog (its ragged arrays' DuckDB files): stock
    ``tiled serve catalog`` finds a ragged array's rows only in storage it was given with
    ``-w``."""
    scheme = f"{RELOCATED_SCHEMES[True]}:"
    return [row.data_uri for row in read_assets(db) if row.data_uri.startswith(scheme)]


def settle_initial_rows(db: Path, when: float) -> None:
    """Give the rows a new catalog's init made (the root node, the access tags), stamped with
    the time of the init, the time ``when`` (seconds since the epoch) instead: an export of an
    unchanged subtree is then the same bytes every time (the archive route's ETag)."""
    stamp = datetime.fromtimestamp(when, timezone.utc).replace(tzinfo=None)
    with _engine(db) as engine, engine.begin() as conn:
        for statement in (
            "UPDATE nodes SET time_created = :t, time_updated = :t WHERE parent IS NULL",
            "UPDATE access_tags SET time_created = :t, time_updated = :t",
        ):
            conn.execute(text(statement), {"t": stamp})


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- Copying part of an existing catalog -----------------------------------------------------


def copy_catalog(source: Path, db: Path) -> None:
    """A consistent copy of a live SQLite catalog (SQLite's backup API; WAL-safe)."""

    source_url = f"file:{source.absolute()}?mode=ro"
    with (
        contextlib.closing(sqlite3.connect(source_url, uri=True)) as src,
        contextlib.closing(sqlite3.connect(db)) as dst,
    ):
        src.backup(dst)


def prune(db: Path, node_path: list[str]) -> None:
    """Keep only the node at ``node_path``, its descendants and its ancestors (in place).

    Rows hanging off deleted nodes go with them (Tiled's foreign keys cascade; its triggers keep
    the full-text index in step); assets and structures nobody references any more are dropped.
    """
    with _engine(db) as engine, engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        target = 0
        for key in node_path:
            found = conn.execute(
                text("SELECT id FROM nodes WHERE parent = :parent AND key = :key"),
                {"parent": target, "key": key},
            ).scalar()
            if found is None:
                raise ArchiveError("TA-E900", "/".join(node_path), "no such node in the catalog")
            target = found
        conn.execute(
            text(
                "DELETE FROM nodes WHERE id NOT IN ("
                " SELECT descendant FROM nodes_closure WHERE ancestor = :target"
                " UNION SELECT ancestor FROM nodes_closure WHERE descendant = :target)"
            ),
            {"target": target},
        )
        conn.exec_driver_sql(
            "DELETE FROM assets WHERE id NOT IN "
            "(SELECT asset_id FROM data_source_asset_association)"
        )
        conn.exec_driver_sql(
            "DELETE FROM structures WHERE id NOT IN "
            "(SELECT structure_id FROM data_sources WHERE structure_id IS NOT NULL)"
        )


def relocated_root(db: Path, holds: Callable[[str], bool]) -> Path | None:
    """The folder a relocated catalog was relocated to (None when it is in archive form).

    Found from the URIs alone, so an archive that was moved since can be relocated again: the
    root is the one prefix under which every asset URI names something the archive ``holds``
    (:func:`~tiled_archive.rules.paths.moved_folder`, the rule readers read a moved archive by).
    """
    paths = [
        path
        for path in (relocated_path(row.data_uri) for row in read_assets(db))
        if path is not None
    ]
    if not paths:
        return None
    root = moved_folder(paths, holds)
    if root is None:
        raise ArchiveError("TA-E503", paths[0], "asset URIs do not point into one archive's data/")
    return Path(root)
