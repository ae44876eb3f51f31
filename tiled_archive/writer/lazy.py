"""Completing and emptying an incomplete (lazy) archive (spec 4.1): ``tiled-archive fetch``
brings absent files from the origin (in parallel, resumable: a large file's blocks are kept
as they land), then, once nothing is absent, seals it: every digest into the manifest, the
BagIt manifest and the catalog. ``tiled-archive drop`` frees fetched files again."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..catalog import db_file as catalog_db
from ..files.hashing import sha256_of
from ..progress import progress_display
from ..reader import Archive, FetchOptions, open_archive
from ..rules.manifest import FileEntry, Manifest
from ..rules.names import CATALOG_NAME, FETCH_WORK_DIR
from ..rules.problems import ArchiveError
from ..sources.lazy import LazySource
from .common import build_manifest
from .convert import reseal


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch`` did: files and bytes brought, and what is still absent (0: the
    archive is complete, and sealed)."""

    files: int
    bytes: int
    absent: int
    sealed: bool


def _lazy(archive: Archive) -> LazySource:
    if not isinstance(archive.source, LazySource):
        raise ArchiveError(
            "TA-E904",
            str(archive.location),
            "not a lazy archive: its manifest has no fetch record (spec 4.1)",
            hint="Only directory archives made by `tiled-archive download --lazy` fetch.",
        )
    return archive.source


def _chosen(archive: Archive, nodes: Sequence[str]) -> set[str]:
    """The files of ``nodes`` (all files when none), TA-E900 for a node with no files."""
    if not nodes:
        return {entry.path for entry in archive.manifest.files}
    chosen = set()
    for node in nodes:
        found = archive.files_of_nodes([node])
        if not found:
            raise ArchiveError("TA-E900", node, "no such node with files in the archive")
        chosen |= found
    return chosen


def fetch(
    directory: str | Path,
    nodes: Sequence[str] = (),
    *,
    api_key: str | None = None,
    workers: int = 4,
    quiet: bool = True,
) -> FetchResult:
    """Bring the absent files of ``nodes`` (node paths; default: every file) of the lazy
    archive ``directory`` from its origin, each checked (TA-E942) and renamed into ``data/``
    whole; an interrupted run resumes (a large file's blocks are kept). When none is absent
    any more the archive is sealed (:func:`seal`). Raises TA-E943 when the origin cannot be
    reached."""
    finish_seal(directory)
    options = FetchOptions(fetch=True, offline=False, api_key=api_key)
    with open_archive(directory, fetch=options) as archive:
        source = _lazy(archive)
        wanted = sorted(_chosen(archive, nodes) & set(source.absent()))
        sizes = {path: archive.members()[path].size for path in wanted}
        with progress_display(quiet) as progress:
            bar = progress.add_task("fetching", total=sum(sizes.values()), bytes=True)

            def one(path: str) -> None:
                source.ensure(path)
                progress.advance(bar, sizes[path])

            with ThreadPoolExecutor(max(1, workers)) as pool:
                list(pool.map(one, wanted))
        done = source.origin.received if source.origin is not None else 0
        left = len(source.absent())
    sealed = seal(directory) if not left else False
    return FetchResult(len(wanted), done, left, sealed)


def drop(directory: str | Path, nodes: Sequence[str] = ()) -> int:
    """Remove the fetched files of ``nodes`` (default: every file the fetch record lists)
    from the lazy archive ``directory``: absent again, fetched when next read. The bytes
    freed. Files the fetch record does not list (read through the data API at download)
    stay: nothing could bring them back."""
    options = FetchOptions(fetch=False, offline=True)
    with open_archive(directory, fetch=options) as archive:
        source = _lazy(archive)
        listed = set(source.listed())
        freed = source.drop(sorted(_chosen(archive, nodes) & listed))
        if not nodes:  # nothing partial is left either
            shutil.rmtree(Path(directory, FETCH_WORK_DIR, "partial"), ignore_errors=True)
    return freed


def seal(directory: str | Path) -> bool:
    """Write the digests of a lazy archive's files that the manifest lacks (all present)
    into the manifest, the BagIt manifest and the catalog's file assets; False when it has
    nothing to seal or some file is absent. Each file is hashed now, from ``data/``. One
    process at a time (two fetches that finish together: the second finds it sealed)."""
    directory = Path(directory)
    with _sealing(directory):
        return _seal(directory)


@contextlib.contextmanager
def _sealing(directory: Path) -> Iterator[None]:
    """Hold the archive's sealing lock (a file of its work folder) for the block."""
    import fcntl

    work = directory / FETCH_WORK_DIR
    work.mkdir(exist_ok=True)
    fd = os.open(work / "seal.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _seal(directory: Path) -> bool:
    with open_archive(directory, fetch=FetchOptions(fetch=False, offline=True)) as archive:
        if archive.absent() or all(e.sha256 is not None for e in archive.manifest.files):
            return False
        files = []
        for entry in archive.manifest.files:
            if entry.sha256 is None:
                path = directory / entry.path
                if os.path.getsize(path) != entry.size:
                    raise ArchiveError("TA-E307", entry.path, "size differs from the manifest")
                entry = FileEntry(entry.path, entry.size, sha256_of(path))
            files.append(entry)
        by_path = {entry.path: entry for entry in files}
        staged = directory / f".{CATALOG_NAME}.sealing"
        shutil.copyfile(archive.catalog_path(), staged)
        try:
            catalog_db.fill_hashes(staged, by_path, archive.asset_member)
            manifest = build_manifest(files, staged, 0, archive.manifest)
            # The manifest to come, kept until it is written: a run stopped between the
            # catalog's rename and the tag files is finished by the next (finish_seal).
            marker = _seal_marker(directory)
            marker.with_suffix(".new").write_bytes(manifest.dumps())
            os.replace(marker.with_suffix(".new"), marker)
            os.replace(staged, directory / CATALOG_NAME)
        finally:
            staged.unlink(missing_ok=True)
    reseal(directory, manifest)
    marker.unlink()
    return True


def _seal_marker(directory: Path) -> Path:
    return directory / FETCH_WORK_DIR / "sealing.json"


def finish_seal(directory: str | Path) -> None:
    """Finish a seal a crash stopped: when the catalog is the one the kept manifest names,
    write that manifest and the tag files; else (stopped before the catalog's rename)
    nothing had changed, and the marker goes."""
    directory = Path(directory)
    marker = _seal_marker(directory)
    if not marker.is_file() or marker.is_symlink():
        return
    with _sealing(directory):
        if not marker.is_file():  # another process finished it meanwhile
            return
        manifest = Manifest.loads(marker.read_bytes())
        if sha256_of(directory / CATALOG_NAME) == manifest.catalog.sha256:
            reseal(directory, manifest)
        marker.unlink()
