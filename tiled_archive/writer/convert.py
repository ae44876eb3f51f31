"""One archive into the other form (``pack``/``extract``), relocation for stock
``tiled serve catalog``, and resealing an edited directory archive."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalog import db_file as catalog_db
from ..files.work import work_folder
from ..rules.manifest import FileEntry, Manifest
from ..rules.names import (
    BAG_INFO_NAME,
    CATALOG_NAME,
    DATA_DIR,
    MANIFEST_NAME,
    PAYLOAD_MANIFEST_NAME,
    TAG_MANIFEST_NAME,
)
from ..rules.problems import ArchiveError
from .common import PayloadFile, build_manifest, tag_files
from .forms import write_archive

if TYPE_CHECKING:
    from ..reader import Archive


def convert(
    source: str | Path,
    dest: str | Path,
    *,
    force: bool = False,
    quiet: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the archive at ``source`` again at ``dest``, in the form ``dest`` names
    (``extra``: top-level manifest fields to set, e.g. a download's provenance).

    Payload bytes are verified against the source's manifest on the way. A directory result is
    relocated (its asset URIs point at its own ``data/``) so a stock ``tiled serve catalog`` can
    serve it; a ZIP result holds the catalog in archive form. Creation time and producer carry
    over, and member times are the creation time, so the result depends only on the content.
    Every data file is inspected first (spec 3.2, 3.3): a directory result is what stock Tiled
    will serve, without any of this reader's checks.
    """
    from ..reader import open_archive

    dest = Path(dest)
    with (
        open_archive(source) as archive,
        work_folder() as work,
    ):
        refuse_incomplete(archive, "written in another form")
        archive.check_data_files()
        manifest = archive.manifest
        if extra:
            manifest = dataclasses.replace(manifest, extra={**manifest.extra, **extra})
        created = (
            datetime.strptime(manifest.created, "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=timezone.utc)
            .timestamp()
        )
        payload = [
            PayloadFile(
                e.path, e.size, lambda path=e.path: archive.open(path), int(created), e.sha256
            )
            for e in manifest.files
        ]

        def finish_catalog(entries: Mapping[str, FileEntry]) -> Path:
            db = Path(work, CATALOG_NAME)
            shutil.copyfile(archive.catalog_path(), db)
            os.chmod(db, 0o644)
            if archive.is_directory:
                # Relative to where its URIs point: its own folder, or the one it was
                # relocated in before it was moved (each URI names a member it holds).
                catalog_db.canonicalize(db, archive.relocation_folder())
            if dest.suffix.lower() != ".zip":
                catalog_db.relocate_uris(db, dest.absolute())
            return db

        return write_archive(
            dest,
            payload,
            finish_catalog,
            created=created,
            fixed_mtime=int(created),
            template=manifest,
            force=force,
            quiet=quiet,
        )


def refuse_incomplete(archive: Archive, what: str, *, sealed: bool = False) -> None:
    """TA-E940 for an incomplete archive (spec 4.1): what needs every file cannot use it;
    with ``sealed``, nor one whose files' digests are not in its manifest yet (``fetch``
    writes them)."""
    absent = archive.absent()
    unsealed = [e.path for e in archive.manifest.files if e.sha256 is None]
    if absent or (sealed and unsealed):
        why = (
            f"{len(absent)} of its files are not fetched yet (e.g. {absent[0]})"
            if absent
            else f"{len(unsealed)} of its files have no digest in its manifest yet"
        )
        raise ArchiveError(
            "TA-E940",
            str(archive.location),
            f"{why}: it cannot be {what}",
            hint=f"Run `{archive.fetch_command()}` first.",
        )


def relocate(directory: str | Path) -> Path:
    """Point a directory archive's asset URIs at its current location (in place).

    For a directory archive that was moved after extraction: rewrites ``catalog.db`` in relocated
    form for where it is now, then the manifest's ``catalog`` entry and the tag manifest. The
    catalog is verified against the manifest first; payload files are not touched.
    """
    from ..reader import open_archive

    directory = Path(directory)
    with open_archive(directory) as archive:
        if not archive.is_directory:
            raise ArchiveError(
                "TA-E904",
                str(directory),
                "only directory archives are relocated",
                "A ZIP is always in archive form and needs no relocating; to serve it with "
                "stock Tiled, `tiled-archive extract` it into a directory.",
            )
        manifest = archive.manifest
        payload = {entry.path for entry in manifest.files}

        def holds(path: str) -> bool:
            return path in payload or any(p.startswith(path + "/") for p in payload)

        staged = directory / f".{CATALOG_NAME}.relocating"
        shutil.copyfile(archive.catalog_path(), staged)
        try:
            old_root = catalog_db.relocated_root(staged, holds)
            if old_root is not None:
                catalog_db.canonicalize(staged, old_root)
            catalog_db.relocate_uris(staged, directory)
            os.replace(staged, directory / CATALOG_NAME)
        finally:
            staged.unlink(missing_ok=True)
        reseal(directory, manifest)
    return directory


def stock_serve_command(directory: str | Path, catalog: Path | None = None) -> list[str]:
    """The stock ``tiled serve catalog`` command line that serves a relocated directory
    archive as it is: its catalog, its ``data/`` as readable storage, and each ragged array's
    DuckDB file as SQL storage (``-w``; Tiled finds a ragged array's rows nowhere else).
    ``catalog``: an archive-form catalog (a ZIP's) to be extracted at ``directory``."""
    directory = Path(directory).absolute()
    command = ["tiled", "serve", "catalog", str(directory / CATALOG_NAME)]
    command += ["-r", str(directory / DATA_DIR)]
    if catalog is None:
        storages = catalog_db.sql_storages(directory / CATALOG_NAME)
    else:  # where extracting puts them: relocate a copy
        with work_folder() as work:
            copy = Path(shutil.copy(catalog, Path(work, CATALOG_NAME)))
            catalog_db.relocate_uris(copy, directory)
            storages = catalog_db.sql_storages(copy)
    for uri in storages:
        command += ["-w", uri]
    return [*command, "--public"]


def serve_command_for(archive: str | Path) -> str:
    """The shell command that serves ``archive`` with stock ``tiled serve catalog``: as it is
    for a relocated directory; a ZIP extracted first, beside it (``tiled-archive extract``)."""
    import shlex

    from ..reader import open_archive

    archive = Path(archive).absolute()
    if archive.suffix.lower() != ".zip":
        serve = shlex.join(stock_serve_command(archive))
        with open_archive(archive) as opened:
            if opened.absent():  # stock Tiled would serve holes: every file first
                return f"{opened.fetch_command()} && {serve}"
        return serve
    directory = archive.with_suffix("")
    with open_archive(archive) as opened:
        serve = stock_serve_command(directory, opened.catalog_path())
    extract = shlex.join(["tiled-archive", "extract", str(archive), str(directory)])
    return f"{extract} && {shlex.join(serve)}"


def reseal(directory: str | Path, manifest: Manifest | None = None) -> None:
    """Rewrite a directory archive's manifest ``catalog`` entry and tag files for its current
    ``catalog.db`` (after the catalog was changed in place); payload entries stay as they are."""
    from ..reader import open_archive

    directory = Path(directory)
    if manifest is None:
        with open_archive(directory) as archive:
            manifest = archive.manifest
    updated = build_manifest(manifest.files, directory / CATALOG_NAME, 0, manifest)
    tags = tag_files(updated, updated.catalog.sha256)
    # The tag manifest last: until it is written, the others disagree with it (TA-E402), and
    # re-running finishes the job.
    for name in (PAYLOAD_MANIFEST_NAME, BAG_INFO_NAME, MANIFEST_NAME, TAG_MANIFEST_NAME):
        target = directory / name
        target.with_name(f".{name}.new").write_bytes(tags[name])
        os.replace(target.with_name(f".{name}.new"), target)
