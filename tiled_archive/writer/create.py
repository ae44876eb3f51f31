"""``create``: an archive from files (through Tiled's registration) or from a Tiled catalog."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..catalog import db_file as catalog_db
from ..catalog.registration import RegistrationReport, build_catalog
from ..files.work import work_folder
from ..progress import step
from ..rules.manifest import FileEntry
from ..rules.names import CATALOG_NAME, DATA_DIR, RELOCATED_SCHEMES
from ..rules.paths import check_path, is_relocated
from ..rules.problems import ArchiveError, plural
from .common import PayloadFile, check_destination, new_manifest, reproducible_epoch
from .forms import write_archive


def _source_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (following symlinks, refusing loops)."""
    if root.is_file():
        yield root
        return
    seen: set[Path] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in seen:
            raise ArchiveError("TA-E900", folder, "symlink loop")
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(folder, name)


def _plan_sources(sources: Iterable[str | Path]) -> dict[str, Path]:
    by_name: dict[str, Path] = {}
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise ArchiveError("TA-E900", str(source), "no such file or folder")
        name = path.resolve().name
        check_path(f"{DATA_DIR}/{name}")
        if name in by_name:
            raise ArchiveError("TA-E902", str(source), f"another source is also named {name!r}")
        by_name[name] = path.resolve()
    if not by_name:
        raise ArchiveError(
            "TA-E900",
            None,
            "no sources given",
            "Name at least one file or folder to archive, or pass --catalog CATALOG.db.",
        )
    return by_name


def create(
    dest: str | Path,
    sources: Iterable[str | Path],
    *,
    reproducible: bool = False,
    force: bool = False,
    quiet: bool = True,
) -> Path:
    """Build an archive at ``dest`` (``*.zip`` for a ZIP, else a directory) from files.

    Each source file or folder becomes a top-level node, registered by Tiled's own registration
    (mimetype detection, walkers, TIFF-sequence grouping); its bytes go unchanged to
    ``data/<source name>/...``. Files Tiled cannot read, and name collisions, are errors.
    """
    named = _plan_sources(sources)
    check_destination(Path(dest).absolute(), force=force)  # before registration: fail at once
    epoch = reproducible_epoch(reproducible)
    with work_folder() as work:
        db = Path(work, CATALOG_NAME)
        with step(quiet, f"registering {plural(len(named), 'source')} with Tiled"):
            report = build_catalog(db, named)
        payload, member_for_uri = _registered_payload(db, named, report)
        return write_new(dest, payload, db, member_for_uri, epoch=epoch, force=force, quiet=quiet)


def write_new(
    dest: str | Path,
    payload: list[PayloadFile],
    db: Path,
    member_for_uri: Callable[[catalog_db.AssetRow], str],
    *,
    epoch: int | None,
    force: bool,
    quiet: bool,
    extra: Mapping[str, Any] | None = None,
    relocated: bool = False,
    absent: Sequence[FileEntry] = (),
) -> Path:
    """Write new content: ``db`` (a catalog Tiled wrote, absolute asset URIs) is finalized
    with ``member_for_uri`` once the payload's digests are known; with ``relocated``, a
    directory ``dest`` gets relocated URIs (as :func:`convert` writes directories), else
    archive form (movable, but stock Tiled needs ``relocate`` first). ``epoch`` fixes every
    timestamp (reproducible); ``extra`` adds top-level manifest fields (``fetch``: the record
    of an incomplete archive, whose ``absent`` files its manifest lists but it does not hold).
    """
    stamp = datetime.fromtimestamp(epoch, timezone.utc) if epoch is not None else None

    def finish_catalog(entries: Mapping[str, FileEntry]) -> Path:
        catalog_db.finalize(db, member_for_uri, entries, timestamp=stamp)
        if relocated and Path(dest).suffix.lower() != ".zip":
            # So stock `tiled serve catalog DEST/catalog.db -r DEST/data` serves it as it is.
            catalog_db.relocate_uris(db, Path(dest).absolute())
        return db

    created = epoch if epoch is not None else datetime.now(timezone.utc).timestamp()
    return write_archive(
        Path(dest),
        payload,
        finish_catalog,
        created=created,
        fixed_mtime=epoch,
        template=new_manifest(created, extra) if extra else None,
        force=force,
        quiet=quiet,
        absent=absent,
    )


def _registered_payload(
    db: Path, named: Mapping[str, Path], report: RegistrationReport
) -> tuple[list[PayloadFile], Callable[[catalog_db.AssetRow], str]]:
    """Map registered assets back to source files; refuse files registration left out."""
    from tiled.utils import path_from_uri

    def member(path: Path) -> str:
        for root in named.values():
            if path == root or root in path.parents:
                return check_path(f"{DATA_DIR}/{path.relative_to(root.parent).as_posix()}")
        raise ArchiveError("TA-E503", str(path), "Tiled registered a file outside the sources")

    def member_for_uri(row: catalog_db.AssetRow) -> str:
        return member(path_from_uri(row.data_uri))

    files: dict[str, Path] = {}
    for row in catalog_db.read_assets(db):
        path = path_from_uri(row.data_uri)
        if row.is_directory:
            for file in _source_files(path):
                files[member(file)] = file
        else:
            files[member(path)] = path
    covered = set(files.values())
    for root in named.values():
        for file in _source_files(root):
            hidden = any(part.startswith(".") for part in file.relative_to(root.parent).parts)
            if file not in covered and not hidden:
                collided = any(file.stem in line for line in report.collisions)
                raise ArchiveError(
                    "TA-E902" if collided else "TA-E901",
                    str(file),
                    "name collides with another file's node"
                    if collided
                    else "Tiled did not register it (no adapter for its type, or unreadable)",
                )
    payload = [_payload_file(path, file) for path, file in sorted(files.items())]
    return payload, member_for_uri


def create_from_catalog(
    dest: str | Path,
    catalog: str | Path,
    *,
    node: str | None = None,
    reproducible: bool = False,
    force: bool = False,
    quiet: bool = True,
) -> Path:
    """Build an archive from an existing Tiled catalog and the files its assets name.

    ``catalog`` is an SQLite file (a path or ``sqlite:///PATH``) or the URI of another database
    Tiled runs on (``postgresql://USER:PASSWORD@HOST/DATABASE``). With ``node`` (``a/b``) only
    that node, its descendants and its parent containers are kept. Asset paths are kept
    relative to their deepest common folder, under ``data/``.
    """
    from ..catalog.database import TiledCatalog

    source = TiledCatalog(catalog)
    segments = [segment for segment in (node or "").split("/") if segment]
    if source.is_sqlite and not source.sqlite_path().is_file():
        raise ArchiveError("TA-E900", str(catalog), "no such catalog file")
    check_destination(Path(dest).absolute(), force=force)  # before copying: fail at once
    epoch = reproducible_epoch(reproducible)
    with work_folder() as work:
        db = Path(work, CATALOG_NAME)
        if source.is_sqlite:
            catalog_db.copy_catalog(source.sqlite_path(), db)
            if segments:
                catalog_db.prune(db, segments)
        else:  # the subtree only, read through SQLAlchemy
            source.export(segments, db)
        payload, member_for_uri = catalog_payload(db, source.display)
        return write_new(
            dest,
            payload,
            db,
            member_for_uri,
            epoch=epoch,
            force=force,
            quiet=quiet,
        )


def catalog_payload(
    db: Path, display: str, *, sql_storage: bool = True
) -> tuple[list[PayloadFile], Callable[[catalog_db.AssetRow], str]]:
    """The files a catalog's assets name (``file:`` URIs, folders walked), as payload under
    ``data/`` relative to their deepest common folder, and each asset's member. Without
    ``sql_storage``, a data source whose asset is SQL storage (a ragged array's DuckDB file)
    is refused: a live deployment's is one database of every node's rows."""
    from tiled.utils import path_from_uri

    _refuse_unarchivable(db, sql_storage=sql_storage)
    rows = catalog_db.read_assets(db)
    for row in rows:  # files, and ragged arrays' DuckDB files (SQL storage)
        if not is_relocated(row.data_uri):  # an absolute file: or duckdb: URI
            raise ArchiveError(
                "TA-E503", row.data_uri, "only file assets can be archived from a catalog"
            )
    paths = {row.id: path_from_uri(row.data_uri) for row in rows}
    if not paths:
        raise ArchiveError("TA-E900", display, "the catalog (or node) has no assets")
    base = Path(os.path.commonpath([p.parent for p in paths.values()]))

    def member(path: Path) -> str:
        return check_path(f"{DATA_DIR}/{path.relative_to(base).as_posix()}")

    files: dict[str, Path] = {}
    for row in rows:
        path = paths[row.id]
        if not path.exists():
            raise ArchiveError("TA-E900", str(path), "an asset of the catalog is missing")
        for file in _source_files(path):
            files[member(file)] = file
    payload = [_payload_file(member_path, file) for member_path, file in sorted(files.items())]
    return payload, lambda row: member(paths[row.id])


def _refuse_unarchivable(db: Path, *, sql_storage: bool) -> None:
    """Before any file is read: without ``sql_storage``, TA-E503 for a data source whose
    asset is SQL storage (sending a deployment's would send what other nodes, and other
    callers, hold); TA-E508 for one whose parameters the format does not allow (a table in a
    deployment's SQL storage, ``dataset_id`` and ``table_name`` naming rows of one database
    every such table shares, has no form in an archive)."""
    from ..rules.catalog_rows import data_source_rows
    from ..rules.formats import parameter_problems

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = data_source_rows(conn, lambda uri: uri)
    if not sql_storage:
        for asset in (asset for row in rows for asset in row.assets):
            if asset.member.startswith(f"{RELOCATED_SCHEMES[True]}:"):
                raise ArchiveError(
                    "TA-E503", asset.member, "data in the server's SQL storage is not archived raw"
                )
    for row in rows:
        for problem in parameter_problems(row):
            raise ArchiveError(
                problem.code,
                problem.path,
                problem.message,
                "Download the node from a server running on this catalog "
                "(`tiled-archive download`): its data API gives such a table as Parquet.",
            )


def _payload_file(member_path: str, file: Path) -> PayloadFile:
    stat = file.stat()
    opener = functools.partial(open, file, "rb")
    return PayloadFile(member_path, stat.st_size, opener, int(stat.st_mtime), local_path=file)
