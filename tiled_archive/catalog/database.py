"""A Tiled catalog in any database Tiled runs on (SQLite, PostgreSQL), through SQLAlchemy.

Tiled's catalog is async (aiosqlite, asyncpg); :class:`TiledCatalog` gives synchronous code
one coded error (TA-E922) for whatever the URI, the driver or the server fails with, Tiled's own
init for a database that holds no catalog yet, and the catalog's tables as the database defines
them (reflected, so each backend's types come with them: JSONB and enums on PostgreSQL).
Importing Tiled's ORM module would define the same tables but import Tiled's server stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from ..files.faults import crash_point
from ..files.space import out_of_space
from ..files.work import PARTIAL_SUFFIX, partial_name, sweep
from ..rules.catalog_rows import SERVED_TABLES
from ..rules.names import TILED_SCHEMA_REVISIONS
from ..rules.problems import ArchiveError
from .db_file import create_catalog_file


class TiledCatalog:
    """A Tiled catalog at a database URI: ``sqlite:///PATH`` (or a path), ``postgresql://…``
    (Tiled's drivers are added as Tiled adds them). ``display`` is the URI without password."""

    def __init__(self, uri: str | Path):
        from sqlalchemy.engine import make_url
        from tiled.utils import ensure_specified_sql_driver

        self.uri = ensure_specified_sql_driver(str(uri))
        self.display = "catalog"
        try:
            self.url = make_url(self.uri)
        except Exception as err:  # noqa: BLE001 -- SQLAlchemy's verdict on a user's URI
            raise self.error(f"not a database URI: {err}") from None
        self.display = self.url.render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def error(self, message: str) -> ArchiveError:
        """TA-E922 about this catalog (its URI shown without password)."""
        password = getattr(getattr(self, "url", None), "password", None)
        if password:
            message = message.replace(str(password), "***")
        return ArchiveError("TA-E922", self.display, message)

    def run(self, work: Any) -> Any:
        """Run coroutine ``work`` to its end; whatever the database side fails with is
        TA-E922 (an ArchiveError raised by ``work`` passes through)."""
        try:
            return run_coroutine(work)
        except ArchiveError:
            raise
        # SQLAlchemy, its drivers (asyncpg raises its own on connect) and the OS fail in many
        # ways on a wrong URI, a server down or a refused write: each is this one coded error.
        except Exception as err:  # noqa: BLE001
            raise self.error(_first_line(err)) from None

    @contextlib.asynccontextmanager
    async def engine(self) -> AsyncIterator[Any]:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.url)
        try:
            yield engine
        finally:
            await engine.dispose()

    def ensure_exists(self) -> Path | None:
        """Create the catalog when the database holds none: a new SQLite file from the
        packaged schema (what Tiled's init makes; its path is returned), or Tiled's own init on
        another database."""
        if self.is_sqlite:
            path = self.sqlite_path()
            if path.exists():
                return None
            # Made whole under a temporary name, then linked into place: a run killed while
            # the schema is written leaves no catalog without a schema under the real name.
            partial = path.parent / partial_name(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                sweep(path.parent, f".{path.name}.", PARTIAL_SUFFIX)  # a killed run's
                create_catalog_file(partial)
                crash_point("load:catalog")
                try:
                    os.link(partial, path)  # never over a catalog made meanwhile
                except FileExistsError:
                    return None
            except (OSError, sqlite3.Error) as err:
                full = out_of_space(err, path)
                raise full or self.error(f"cannot create {path}: {err}") from None
            finally:
                partial.unlink(missing_ok=True)
            return path
        if self.run(self._revision()) is None:
            self._tiled_init()
        return None

    def sqlite_path(self) -> Path:
        path = Path(self.url.database or "")
        if not str(path) or str(path) == ":memory:":
            raise self.error("an SQLite catalog needs a file path")
        return path

    def check_revision(self) -> None:
        """TA-E922 unless the catalog is stamped with the schema revision this format uses."""
        revision = self.run(self._revision())
        if revision != TILED_SCHEMA_REVISIONS[0]:
            raise self.error(
                f"Tiled catalog schema revision {revision}; this version reads and writes "
                f"{TILED_SCHEMA_REVISIONS[0]} (`tiled catalog upgrade-database`)"
            )

    def _tiled_init(self) -> None:
        """Tiled's own init of a new catalog (alembic: schema, stamp, root node), its command
        in a subprocess, as Tiled's ``from_uri(init_if_not_exists=True)`` runs it."""
        import subprocess
        import sys

        command = [sys.executable, "-m", "tiled", "catalog", "init", "--if-not-exists", self.uri]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise self.error(f"Tiled's catalog init failed: {said}")

    async def _revision(self) -> str | None:
        from sqlalchemy import inspect, text

        async with self.engine() as engine, engine.connect() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            if "alembic_version" not in names:
                return None
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()

    def export(
        self, node_path: list[str], db: Path, readable: Collection[int] | None = None
    ) -> None:
        """Copy the node at ``node_path`` with its subtree and its parent containers (ids
        kept), their data sources, structures and assets, into the new SQLite catalog ``db``
        (made from the packaged schema: Tiled's own), as ``create --catalog`` archives it.
        With ``readable``, only those nodes of the subtree (ids: what a caller may read)."""
        self.check_revision()
        create_catalog_file(db)
        rows = self.run(self._subtree(node_path, readable))
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            for table, (columns, values) in rows.items():
                if values:
                    marks = ", ".join("?" * len(columns))
                    listed = ", ".join(f'"{c}"' for c in columns)
                    conn.executemany(f'INSERT INTO "{table}" ({listed}) VALUES ({marks})', values)

    async def _subtree(
        self, node_path: list[str], readable: Collection[int] | None
    ) -> dict[str, tuple[list[str], list[tuple]]]:
        """The rows of the subtree, each table's columns and values as SQLite stores them
        (JSON as text, times as Tiled's text), nodes parents first."""
        from sqlalchemy import select, text

        async with self.engine() as engine, engine.connect() as conn:
            tables = await served_tables(conn)
            nodes = tables["nodes"]
            target = 0
            for key in node_path:
                found = await conn.execute(
                    select(nodes.c.id).where(nodes.c.parent == target, nodes.c.key == key)
                )
                target = found.scalar()
                if target is None:
                    raise ArchiveError(
                        "TA-E900", "/".join(node_path), "no such node in the catalog"
                    )
            below = await conn.execute(
                text("SELECT descendant FROM nodes_closure WHERE ancestor = :target"),
                {"target": target},
            )
            above = await conn.execute(
                text("SELECT ancestor FROM nodes_closure WHERE descendant = :target"),
                {"target": target},
            )
            descendants = set(below.scalars())
            if readable is not None:
                descendants &= set(readable) | {target}
            kept_ids = sorted(descendants | set(above.scalars()) | {0})
            picked: dict[str, list[dict[str, Any]]] = {}
            picked["nodes"] = await _rows_where(conn, nodes, nodes.c.id, kept_ids)
            sources = tables["data_sources"]
            picked["data_sources"] = await _rows_where(conn, sources, sources.c.node_id, kept_ids)
            source_ids = [row["id"] for row in picked["data_sources"]]
            association = tables["data_source_asset_association"]
            picked["data_source_asset_association"] = await _rows_where(
                conn, association, association.c.data_source_id, source_ids
            )
            asset_ids = sorted({row["asset_id"] for row in picked["data_source_asset_association"]})
            picked["assets"] = await _rows_where(
                conn, tables["assets"], tables["assets"].c.id, asset_ids
            )
            structure_ids = sorted(
                {row["structure_id"] for row in picked["data_sources"] if row["structure_id"]}
            )
            structures = tables["structures"]
            picked["structures"] = await _rows_where(
                conn, structures, structures.c.id, structure_ids
            )
            revisions = tables["revisions"]
            picked["revisions"] = await _rows_where(conn, revisions, revisions.c.node_id, kept_ids)
        # Parents first (Tiled's ids grow); the new catalog has its own root row.
        picked["nodes"] = sorted(
            (r for r in picked["nodes"] if r["id"] != 0), key=lambda r: r["id"]
        )
        order = ("nodes", "structures", "assets", "data_sources")
        order += ("data_source_asset_association", "revisions")
        return {table: _as_sqlite(picked[table]) for table in order}


async def _rows_where(conn: Any, table: Any, column: Any, values: list[Any]) -> list[dict]:
    """The rows of ``table`` whose ``column`` is one of ``values``, as dicts (in batches)."""
    from sqlalchemy import select

    rows: list[dict] = []
    for start in range(0, len(values), 1000):
        found = await conn.execute(select(table).where(column.in_(values[start : start + 1000])))
        rows.extend(dict(row._mapping) for row in found)
    return rows


def _as_sqlite(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple]]:
    """Rows as SQLite's columns hold them in Tiled's catalog: JSON as compact text, times as
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (what SQLAlchemy writes there), enums by name."""
    import enum
    import json
    from datetime import datetime

    if not rows:
        return [], []
    columns = list(rows[0])

    def stored(value: Any) -> Any:
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(value, enum.Enum):
            return value.name
        return value

    return columns, [tuple(stored(row[c]) for c in columns) for row in rows]


async def served_tables(conn: Any) -> dict[str, Any]:
    """The tables Tiled serves from, as the catalog's database defines them (reflected)."""
    from sqlalchemy import MetaData

    def reflect(sync: Any) -> dict[str, Any]:
        metadata = MetaData()
        metadata.reflect(sync, only=list(SERVED_TABLES))
        return dict(metadata.tables)

    return await conn.run_sync(reflect)


def run_coroutine(work: Any) -> Any:
    """Run ``work`` to its end from synchronous code, also when this thread already runs an
    event loop (a notebook): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__
