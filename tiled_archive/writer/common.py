"""What every writer shares: payload files and their hashing, staging beside the destination
(renamed into place at the end), the manifest and the BagIt tag files."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from ..catalog import db_file as catalog_db
from ..files.atomic import exchange
from ..files.faults import crash_point
from ..files.hashing import CHUNK, copy_hashing
from ..files.space import out_of_space
from ..files.work import PARTIAL_SUFFIX, make_work_folder, stale_work, sweep
from ..rules import bag
from ..rules.manifest import FetchRecord, FileEntry, Manifest
from ..rules.names import (
    BAG_INFO_NAME,
    BAGIT_NAME,
    CATALOG_NAME,
    MANIFEST_NAME,
    MIMETYPE,
    MIMETYPE_NAME,
    PAYLOAD_MANIFEST_NAME,
    TAG_FILES,
    TAG_MANIFEST_NAME,
    __version__,
)
from ..rules.problems import ArchiveError

# The earliest time a ZIP (MS-DOS) timestamp can hold: the default reproducible epoch.
DOS_EPOCH = 315532800


@dataclass(frozen=True)
class PayloadFile:
    """A file to put under ``data/``: its archive path, size, and how to read it."""

    path: str
    size: int
    open: Callable[[], BinaryIO]
    mtime: int
    #: The digest the file must have (when copying an existing archive); None when unknown.
    expected_sha256: str | None = None
    #: With ``expected_sha256``, for a file already verified (a download's cache): its CRC-32,
    #: so ZIP output skips its hashing pass.
    crc32: int | None = None
    #: The local file holding these bytes (the archive route keys its digests by it). With
    #: ``expected_sha256`` (verified bytes), a directory archive hard-links it instead of
    #: copying (it copies when linking fails, across filesystems).
    local_path: Path | None = None


@dataclass(frozen=True)
class Hashed:
    """A payload file after its hashing pass."""

    file: PayloadFile
    entry: FileEntry
    crc32: int


# -- Shared pieces ----------------------------------------------------------------------------


def reproducible_epoch(reproducible: bool) -> int | None:
    """The fixed time of a reproducible run: ``SOURCE_DATE_EPOCH`` when set, else 1980-01-01."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return max(int(os.environ["SOURCE_DATE_EPOCH"]), DOS_EPOCH)
    return DOS_EPOCH if reproducible else None


def checked_entry(file: PayloadFile, size: int, sha256: str) -> FileEntry:
    if size != file.size:
        raise ArchiveError("TA-E905", file.path, f"size {size}, expected {file.size}")
    if file.expected_sha256 is not None and sha256 != file.expected_sha256:
        raise ArchiveError("TA-E308", file.path, "SHA-256 differs from the source's manifest")
    return FileEntry(file.path, size, sha256)


def chunks_of(file: PayloadFile, advance: Callable[[int], object] | None = None) -> Iterator[bytes]:
    """The file's bytes in chunks; ``advance`` is told each chunk's length (a progress bar)."""
    with file.open() as handle:
        while chunk := handle.read(CHUNK):
            if advance is not None:
                advance(len(chunk))
            yield chunk


@contextlib.contextmanager
def staged_beside(dest: Path, *, force: bool, is_dir: bool) -> Iterator[Path]:
    """A temporary path beside ``dest``, renamed onto it when the block succeeds."""
    dest = dest.absolute()
    check_destination(dest, force=force)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _restore_replaced(dest)
        # Named with its owner: a later run removes it should this one be killed.
        work = make_work_folder(dest.parent, f".{dest.name}.", PARTIAL_SUFFIX)
    except OSError as err:
        raise out_of_space(err, dest) or ArchiveError("TA-E904", str(dest), str(err)) from None
    staged = work / "archive"
    try:
        if is_dir:
            staged.mkdir()
        yield staged
        crash_point("write:staged")
        _replace(staged, dest)
        crash_point("write:replaced")
    except Exception as err:
        full = out_of_space(err, staged)  # a file of the output: on the destination's disk
        if full is None:
            raise
        raise full from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_destination(dest: Path, *, force: bool) -> None:
    """Refuse ``dest`` (TA-E903) unless it is absent, an empty folder, or with ``force`` an
    archive; writers call it before any work so that a doomed run fails at once."""
    if not os.path.lexists(dest):
        return
    if dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir()):
        return
    if force and _is_archive(dest):
        return
    if force:  # replacing is not what it needs: force replaces archives only
        raise ArchiveError(
            "TA-E903",
            str(dest),
            "exists and is not a tiled-archive",
            "Choose a new destination: force replaces an existing archive, nothing else.",
        )
    raise ArchiveError("TA-E903", str(dest), "exists")


def _is_archive(path: Path) -> bool:
    marker = path / MIMETYPE_NAME if path.is_dir() else path
    try:
        with open(marker, "rb") as handle:
            head = handle.read(38 + len(MIMETYPE))
    except OSError:
        return False
    return head == MIMETYPE.encode() or head[30:] == (MIMETYPE_NAME + MIMETYPE).encode()


def recover_beside(dest: Path) -> None:
    """Undo what killed runs writing ``dest`` left beside it: the old archive put back if a
    run moved it aside, then their staged outputs removed (one line says so). For a command
    that may end without writing (an update finding nothing new), so that no debris stays."""
    dest = dest.absolute()
    _restore_replaced(dest)
    sweep(dest.parent, f".{dest.name}.", PARTIAL_SUFFIX)


def _restore_replaced(dest: Path) -> None:
    """A run killed between moving the old ``dest`` aside and renaming the new one into place
    (:func:`_replace`, where folders cannot be exchanged) left the old one in its work folder:
    put it back before that folder is removed."""
    for stale in stale_work(dest.parent, f".{dest.name}.", PARTIAL_SUFFIX):
        aside = stale / _ASIDE
        if aside.is_dir() and not os.path.lexists(dest):
            os.rename(aside, dest)


#: Where :func:`_replace` moves the old folder while the new one is renamed into place.
_ASIDE = "replaced"


def _replace(staged: Path, dest: Path) -> None:
    """Put ``staged`` at ``dest`` in one step, so that every reader sees the old content or the
    new, and an interruption at any point leaves one of them whole at ``dest``: a file by a
    rename over it, a folder by exchanging the two (Linux ``renameat2``; the old one is then
    at ``staged``, removed with the work folder). Where folders cannot be exchanged (another
    system, a filesystem without it), the old one is moved aside first and the new renamed
    into place: a short window in which ``dest`` is absent."""
    if not os.path.lexists(dest) or not staged.is_dir():
        os.replace(staged, dest)
        return
    if exchange(staged, dest):
        return
    aside = staged.parent / _ASIDE
    os.rename(dest, aside)
    try:
        os.rename(staged, dest)
    except BaseException:  # the old archive back in place before the work folder goes
        os.rename(aside, dest)
        raise


def tag_files(manifest: Manifest, catalog_sha: str) -> dict[str, bytes]:
    """The tag files of an archive, all derived from the manifest."""
    tags = {
        MIMETYPE_NAME: MIMETYPE.encode(),
        MANIFEST_NAME: manifest.dumps(),
        BAGIT_NAME: bag.BAGIT_TXT,
        BAG_INFO_NAME: bag.bag_info(manifest),
        PAYLOAD_MANIFEST_NAME: bag.payload_manifest(manifest),
    }
    digests = {name: hashlib.sha256(tags[name]).hexdigest() for name in TAG_FILES}
    digests[CATALOG_NAME] = catalog_sha
    tags[TAG_MANIFEST_NAME] = bag.digest_lines(digests)
    return tags


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(
    entries: Iterable[FileEntry], catalog: Path, created: float, template: Manifest | None
) -> Manifest:
    """The manifest of new content, or of ``template``'s archive in another form."""
    with catalog.open("rb") as handle:
        size, sha, _ = copy_hashing(handle, None)
    return dataclasses.replace(
        template or new_manifest(created),
        catalog=FileEntry(CATALOG_NAME, size, sha),
        files=tuple(sorted(entries, key=lambda e: e.path)),
        tiled_schema_revision=catalog_db.schema_revision(catalog) or "",
    )


def new_manifest(created: float, extra: Mapping[str, Any] | None = None) -> Manifest:
    """The manifest of new content before it is written: creation time, this producer and
    optional ``extra`` top-level fields. The writer fills in the catalog and the files."""
    extra = dict(extra or {})
    fetch = extra.pop("fetch", None)
    return Manifest(
        catalog=FileEntry(CATALOG_NAME, 0, ""),
        files=(),
        created=_iso(created),
        tiled_schema_revision="",
        producer={"name": "tiled-archive", "version": __version__},
        extra=extra,
        fetch=FetchRecord.from_json(fetch) if fetch is not None else None,
    )
