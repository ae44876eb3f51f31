"""catalog.db: Tiled's own SQL catalog, created, filled and rewritten through Tiled.

Tiled writes absolute ``file://localhost/ABS/PATH`` asset URIs. Inside an archive they are archive
paths (``data/...``); *relocation* turns them back into absolute URIs under a directory so that a
stock ``tiled serve catalog`` works, and *canonicalization* undoes that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, select, text, update
from tiled.catalog import orm
from tiled.utils import ensure_uri, path_from_uri

from .format import ArchiveError, FileEntry, member_from_data_uri

# Tables of Tiled's catalog schema an archive's catalog.db must hold (spec: catalog.db).
REQUIRED_TABLES = (
    "alembic_version",
    "nodes",
    "nodes_closure",
    "structures",
    "data_sources",
    "assets",
    "data_source_asset_association",
    "revisions",
    "metadata_fts5",
)
_TIMESTAMPED = (orm.Node, orm.DataSource, orm.Asset, orm.Revision, orm.AccessTag)


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


def read_assets(db: Path) -> list[AssetRow]:
    """Every asset of the catalog."""
    table = orm.Asset.__table__
    columns = [table.c[name] for name in AssetRow.__dataclass_fields__]
    with _engine(db, read_only=True) as engine, engine.connect() as conn:
        return [AssetRow(*row) for row in conn.execute(select(*columns).order_by(table.c.id))]


# -- Building a catalog with Tiled's registration ------------------------------------------


@dataclass
class RegistrationReport:
    """What Tiled's registration skipped: files it has no adapter for, and key collisions."""

    skipped: list[str]
    collisions: list[str]


class _RegistrationLog(logging.Handler):
    """Collects the SKIPPED / COLLISION lines Tiled's registration only logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.report = RegistrationReport([], [])

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "COLLISION" in message:
            self.report.collisions.append(message.split("COLLISION:", 1)[1].strip())
        elif "SKIPPED" in message:
            self.report.skipped.append(message.split("SKIPPED:", 1)[1].strip())


async def sorted_walker(node, path, files, directories, settings):  # noqa: ARG001
    """A registration walker that only sorts: node ids then follow names, not disk order."""
    return sorted(files), sorted(directories)


def build_catalog(db: Path, sources: Mapping[str, Path]) -> RegistrationReport:
    """Create ``db`` with Tiled's catalog init and register each source under its top-level key.

    ``sources`` maps a top-level name to a file or folder; a folder that Tiled reads as one item
    (e.g. a Zarr store) becomes one node, any other folder a container of its contents.
    """
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.client.register import (
        Settings,
        register,
        resolve_mimetype,
    )
    from tiled.server.app import build_app

    readable = sorted({str(path.resolve().parent) for path in sources.values()})
    adapter = from_uri(sqlite_url(db), init_if_not_exists=True, readable_storage=readable)
    settings = Settings.init()
    handler = _RegistrationLog()
    logger = logging.getLogger("tiled.client.register")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # starlette's TestClient
            with Context.from_app(build_app(adapter)) as context:
                client = from_context(context)
                for name in sorted(sources):
                    path = sources[name].resolve()
                    as_one_item = path.is_dir() and resolve_mimetype(
                        path, settings.mimetypes_by_file_ext
                    )
                    prefix = "/" if (path.is_file() or as_one_item) else f"/{name}"
                    asyncio.run(
                        register(
                            client,
                            path,
                            prefix=prefix,
                            walkers=["tiled_archive.catalog:sorted_walker"],
                            overwrite=False,
                        )
                    )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    return handler.report


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
    every row's creation/update time is set to it (reproducible archives). Ends with VACUUM in
    rollback-journal mode so the file holds no stale pages and needs no side files.
    """
    table = orm.Asset.__table__
    rows = read_assets(db)
    with _engine(db) as engine:
        with engine.begin() as conn:
            for row in rows:
                member = member_for_uri(row)
                values: dict[str, object] = {"data_uri": member}
                if not row.is_directory:
                    entry = entries[member]
                    values.update(size=entry.size, hash_type="sha256", hash_content=entry.sha256)
                conn.execute(update(table).where(table.c.id == row.id).values(**values))
            if timestamp is not None:
                stamp = timestamp.astimezone(timezone.utc).replace(tzinfo=None)
                for model in _TIMESTAMPED:
                    conn.execute(
                        update(model.__table__).values(time_created=stamp, time_updated=stamp)
                    )
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
            conn.exec_driver_sql("VACUUM")


def _rewrite_uris(db: Path, rewrite: Callable[[str], str]) -> None:
    table = orm.Asset.__table__
    with _engine(db) as engine:
        with engine.begin() as conn:
            for row in conn.execute(select(table.c.id, table.c.data_uri)).all():
                conn.execute(
                    update(table).where(table.c.id == row.id).values(data_uri=rewrite(row.data_uri))
                )
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")


def relocate(db: Path, root: Path) -> None:
    """Rewrite archive-form URIs as absolute ``file://`` URIs under ``root`` (in place)."""
    root = root.resolve()
    _rewrite_uris(db, lambda uri: ensure_uri(root / member_from_data_uri(uri)))


def member_from_relocated(data_uri: str, root: Path) -> str:
    """The archive path of a relocated (absolute) URI under ``root``, or raise TA-E503."""
    if not data_uri.startswith("file:"):
        return member_from_data_uri(data_uri)
    path = path_from_uri(data_uri)
    try:
        relative = path.relative_to(root.resolve())
    except ValueError:
        raise ArchiveError("TA-E503", data_uri, f"asset URI is outside {root}") from None
    return member_from_data_uri(relative.as_posix())


def canonicalize(db: Path, root: Path) -> None:
    """Rewrite URIs relocated under ``root`` back into archive form (in place)."""
    _rewrite_uris(db, lambda uri: member_from_relocated(uri, root))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
