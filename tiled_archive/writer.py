"""Write archives: from files (through Tiled's registration), and between directory and ZIP form.

Every writer builds under a temporary name beside the destination and renames at the end, so an
interrupted run never leaves anything at the destination. Payload bytes are copied unchanged and
hashed once on the way; the manifest and BagIt files are written last, from those hashes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from rich.progress import Progress

from . import __version__, bag
from . import catalog as catalog_db
from .format import (
    BAG_INFO_NAME,
    BAGIT_NAME,
    CATALOG_NAME,
    DATA_DIR,
    MANIFEST_NAME,
    MIMETYPE,
    MIMETYPE_NAME,
    PAYLOAD_MANIFEST_NAME,
    TAG_FILES,
    TAG_MANIFEST_NAME,
    ArchiveError,
    FileEntry,
    Manifest,
    check_path,
    is_relocated,
    plural,
)
from .progress import progress_display, step
from .registration import RegistrationReport, build_catalog
from .zipwriter import ZipEntry, zip_stream

CHUNK = 1 << 20
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
    #: With ``expected_sha256``: a local file holding exactly these bytes, which a directory
    #: archive hard-links instead of copying (it copies when linking fails, across filesystems).
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


def copy_hashing(
    source: BinaryIO,
    sink: BinaryIO | None,
    advance: Callable[[int], None] = lambda n: None,
    *,
    with_crc32: bool = False,
) -> tuple[int, str, int]:
    """Read ``source`` to its end (copying into ``sink``): size, SHA-256 hex and, only when
    asked (ZIP local headers need it), CRC-32 (else 0)."""
    sha, crc, size = hashlib.sha256(), 0, 0
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        if with_crc32:
            crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
        advance(len(chunk))
    return size, sha.hexdigest(), crc


def _checked_entry(file: PayloadFile, size: int, sha256: str) -> FileEntry:
    if size != file.size:
        raise ArchiveError("TA-E905", file.path, f"size {size}, expected {file.size}")
    if file.expected_sha256 is not None and sha256 != file.expected_sha256:
        raise ArchiveError("TA-E308", file.path, "SHA-256 differs from the source's manifest")
    return FileEntry(file.path, size, sha256)


def _chunks(file: PayloadFile) -> Iterator[bytes]:
    with file.open() as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


@contextlib.contextmanager
def _staging(dest: Path, *, force: bool, is_dir: bool) -> Iterator[Path]:
    """A temporary path beside ``dest``, renamed onto it when the block succeeds."""
    dest = dest.absolute()
    check_destination(dest, force=force)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    except OSError as err:
        raise ArchiveError("TA-E904", str(dest), str(err)) from None
    staged = work / "archive"
    try:
        if is_dir:
            staged.mkdir()
        yield staged
        _replace(staged, dest)
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
    raise ArchiveError(
        "TA-E903", str(dest), "exists" + (" and is not a tiled-archive" if force else "")
    )


def _is_archive(path: Path) -> bool:
    marker = path / MIMETYPE_NAME if path.is_dir() else path
    try:
        with open(marker, "rb") as handle:
            head = handle.read(38 + len(MIMETYPE))
    except OSError:
        return False
    return head == MIMETYPE.encode() or head[30:] == (MIMETYPE_NAME + MIMETYPE).encode()


def _replace(staged: Path, dest: Path) -> None:
    # An existing empty folder or (with --force) an old archive is moved aside first, so the
    # final step is one rename and a failure before it leaves the old content untouched.
    aside = None
    if os.path.lexists(dest):
        aside = staged.parent / "replaced"
        os.rename(dest, aside)
    os.rename(staged, dest)


def _tag_files(manifest: Manifest, catalog_sha: str) -> dict[str, bytes]:
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


def _manifest(
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
    return Manifest(
        catalog=FileEntry(CATALOG_NAME, 0, ""),
        files=(),
        created=_iso(created),
        tiled_schema_revision="",
        producer={"name": "tiled-archive", "version": __version__},
        extra=dict(extra or {}),
    )


# -- Output forms -----------------------------------------------------------------------------


CatalogStep = Callable[[Mapping[str, FileEntry]], Path]


def write_directory(
    staged: Path,
    payload: Iterable[PayloadFile],
    finish_catalog: CatalogStep,
    *,
    created: float,
    template: Manifest | None,
    progress: Progress,
) -> Manifest:
    """Copy the payload into the directory ``staged`` hashing it once, then the catalog
    (``finish_catalog`` gets the payload's entries) and the tag files."""
    payload = list(payload)
    task = progress.add_task("copying", total=sum(f.size for f in payload), bytes=True)
    entries = {}
    for file in payload:
        target = staged / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if _linked(file, target):
            entries[file.path] = FileEntry(file.path, file.size, file.expected_sha256)
            progress.advance(task, file.size)
        else:
            with file.open() as source, open(target, "xb") as sink:
                size, sha, _ = copy_hashing(source, sink, lambda n: progress.advance(task, n))
            entries[file.path] = _checked_entry(file, size, sha)
        os.utime(target, (file.mtime, file.mtime))
    (staged / DATA_DIR).mkdir(exist_ok=True)  # an empty payload is an empty folder
    shutil.copyfile(finish_catalog(entries), staged / CATALOG_NAME)
    manifest = _manifest(entries.values(), staged / CATALOG_NAME, created, template)
    for name, content in _tag_files(manifest, manifest.catalog.sha256).items():
        (staged / name).write_bytes(content)
    return manifest


def _linked(file: PayloadFile, target: Path) -> bool:
    """Hard-link the verified local copy of ``file`` at ``target``; False when it has none or
    the link cannot be made."""
    if file.local_path is None or file.expected_sha256 is None:
        return False
    try:
        os.link(file.local_path, target)
    except OSError:
        return False
    return True


def hash_payload(payload: Iterable[PayloadFile], progress: Progress) -> list[Hashed]:
    """The hashing pass of ZIP output: SHA-256 for the manifest, CRC-32 for the local headers
    (not for files whose digests are known already)."""
    payload = list(payload)
    task = progress.add_task("hashing", total=sum(f.size for f in payload), bytes=True)
    hashed = []
    for file in payload:
        if file.crc32 is not None and file.expected_sha256 is not None:
            entry = FileEntry(file.path, file.size, file.expected_sha256)
            hashed.append(Hashed(file, entry, file.crc32))
            progress.advance(task, file.size)
            continue
        with file.open() as source:
            size, sha, crc = copy_hashing(
                source, None, lambda n: progress.advance(task, n), with_crc32=True
            )
        hashed.append(Hashed(file, _checked_entry(file, size, sha), crc))
    return hashed


def zip_chunks(
    hashed: list[Hashed],
    catalog: Path,
    *,
    created: float,
    fixed_mtime: int | None,
    template: Manifest | None = None,
) -> Iterator[bytes]:
    """The archive as ZIP bytes, in order, without seeking: the streaming form of the writer."""
    manifest = _manifest([h.entry for h in hashed], catalog, created, template)
    tags = _tag_files(manifest, manifest.catalog.sha256)
    tag_mtime = fixed_mtime if fixed_mtime is not None else int(created)

    def from_bytes(name: str, content: bytes, align: bool = True) -> ZipEntry:
        return ZipEntry(
            name, len(content), zlib.crc32(content), lambda: [content], tag_mtime, align
        )

    entries = [from_bytes(MIMETYPE_NAME, tags[MIMETYPE_NAME], align=False)]
    entries += [from_bytes(name, tags[name]) for name in (*TAG_FILES[1:], TAG_MANIFEST_NAME)]
    entries.append(from_bytes(CATALOG_NAME, catalog.read_bytes()))
    entries += [
        ZipEntry(
            h.file.path,
            h.entry.size,
            h.crc32,
            lambda file=h.file: _chunks(file),
            fixed_mtime if fixed_mtime is not None else h.file.mtime,
        )
        for h in sorted(hashed, key=lambda h: h.file.path)
    ]
    if not hashed:  # an empty payload is the directory entry data/ (spec §1)
        entries.append(ZipEntry(f"{DATA_DIR}/", 0, 0, lambda: [], tag_mtime, is_directory=True))
    yield from zip_stream(entries)


def streamed_zip_chunks(
    payload: Iterable[PayloadFile], finish_catalog: CatalogStep, *, created: float
) -> Iterator[bytes]:
    """The archive as ZIP bytes for an answer that starts at once (the server's streamed
    archives): ``mimetype`` first, then each payload file, read twice (hashed just before it
    is sent, since its local header carries its CRC-32: spec 6, no data descriptors), then
    ``catalog.db`` (``finish_catalog`` gets the payload's entries) and the tag files last,
    which need every digest (so such an archive has TA-W103). Nothing is staged: memory
    holds one chunk, the catalog and the tag files."""
    entries: dict[str, FileEntry] = {}
    mtime = int(created)

    def from_bytes(name: str, content: bytes, align: bool = True) -> ZipEntry:
        return ZipEntry(name, len(content), zlib.crc32(content), lambda: [content], mtime, align)

    def members() -> Iterator[ZipEntry]:
        yield from_bytes(MIMETYPE_NAME, MIMETYPE.encode(), align=False)
        for file in payload:
            with file.open() as source:
                size, sha, crc = copy_hashing(source, None, with_crc32=True)
            entries[file.path] = _checked_entry(file, size, sha)
            yield ZipEntry(file.path, size, crc, lambda file=file: _chunks(file), file.mtime)
        if not entries:  # an empty payload is the directory entry data/ (spec 1)
            yield ZipEntry(f"{DATA_DIR}/", 0, 0, lambda: [], mtime, is_directory=True)
        catalog = finish_catalog(entries)
        manifest = _manifest(entries.values(), catalog, created, None)
        tags = _tag_files(manifest, manifest.catalog.sha256)
        yield from_bytes(CATALOG_NAME, catalog.read_bytes())
        for name in (*TAG_FILES[1:], TAG_MANIFEST_NAME):
            yield from_bytes(name, tags[name])

    yield from zip_stream(members())


def write_zip(
    staged: Path,
    payload: Iterable[PayloadFile],
    finish_catalog: CatalogStep,
    *,
    created: float,
    fixed_mtime: int | None,
    template: Manifest | None,
    progress: Progress,
) -> None:
    """Hash the payload, finish the catalog, then stream the ZIP into the file ``staged``."""
    hashed = hash_payload(payload, progress)
    catalog = finish_catalog({h.entry.path: h.entry for h in hashed})
    task = progress.add_task("writing", total=sum(h.entry.size for h in hashed), bytes=True)
    with open(staged, "xb") as sink:
        chunks = zip_chunks(
            hashed, catalog, created=created, fixed_mtime=fixed_mtime, template=template
        )
        for chunk in chunks:
            sink.write(chunk)
            progress.advance(task, len(chunk))
        sink.flush()
        os.fsync(sink.fileno())


def write_archive(
    dest: Path,
    payload: list[PayloadFile],
    finish_catalog: CatalogStep,
    *,
    created: float,
    fixed_mtime: int | None,
    template: Manifest | None = None,
    force: bool,
    quiet: bool,
) -> Path:
    """Write an archive at ``dest``: a ZIP when it ends in ``.zip``, else a directory.

    ``template`` is the manifest of the archive being converted (pack, extract): its creation
    time, producer and extra fields carry over.
    """
    as_zip = dest.suffix.lower() == ".zip"
    staging = _staging(dest, force=force, is_dir=not as_zip)
    with staging as staged, progress_display(quiet) as progress:
        if as_zip:
            write_zip(
                staged,
                payload,
                finish_catalog,
                created=created,
                fixed_mtime=fixed_mtime,
                template=template,
                progress=progress,
            )
        else:
            write_directory(
                staged,
                payload,
                finish_catalog,
                created=created,
                template=template,
                progress=progress,
            )
    return dest


# -- create: from files, through Tiled's registration --------------------------------------


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
    with tempfile.TemporaryDirectory(prefix="tiled-archive-") as work:
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
) -> Path:
    """Write new content: ``db`` (a catalog Tiled wrote, absolute asset URIs) is finalized
    with ``member_for_uri`` once the payload's digests are known; with ``relocated``, a
    directory ``dest`` gets relocated URIs (as :func:`convert` writes directories), else
    archive form (movable, but stock Tiled needs ``relocate`` first). ``epoch`` fixes every
    timestamp (reproducible); ``extra`` adds top-level manifest fields."""
    stamp = datetime.fromtimestamp(epoch, timezone.utc) if epoch is not None else None

    def finish_catalog(entries: Mapping[str, FileEntry]) -> Path:
        catalog_db.finalize(db, member_for_uri, entries, timestamp=stamp)
        if relocated and Path(dest).suffix.lower() != ".zip":
            # So stock `tiled serve catalog DEST/catalog.db -r DEST/data` serves it as it is.
            catalog_db.relocate(db, Path(dest).absolute())
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
    from .sql_catalog import TiledCatalog

    source = TiledCatalog(catalog)
    segments = [segment for segment in (node or "").split("/") if segment]
    if source.is_sqlite and not source.sqlite_path().is_file():
        raise ArchiveError("TA-E900", str(catalog), "no such catalog file")
    check_destination(Path(dest).absolute(), force=force)  # before copying: fail at once
    epoch = reproducible_epoch(reproducible)
    with tempfile.TemporaryDirectory(prefix="tiled-archive-") as work:
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
    db: Path, display: str
) -> tuple[list[PayloadFile], Callable[[catalog_db.AssetRow], str]]:
    """The files a catalog's assets name (``file:`` URIs, folders walked), as payload under
    ``data/`` relative to their deepest common folder, and each asset's member."""
    from tiled.utils import path_from_uri

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


def _payload_file(member_path: str, file: Path) -> PayloadFile:
    stat = file.stat()
    return PayloadFile(member_path, stat.st_size, lambda: open(file, "rb"), int(stat.st_mtime))


# -- pack / extract: one archive, the other form -------------------------------------------


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
    from .reader import open_archive

    dest = Path(dest)
    with (
        open_archive(source) as archive,
        tempfile.TemporaryDirectory(prefix="tiled-archive-") as work,
    ):
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
                catalog_db.canonicalize(db, archive.location)
            if dest.suffix.lower() != ".zip":
                catalog_db.relocate(db, dest.absolute())
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


def relocate(directory: str | Path) -> Path:
    """Point a directory archive's asset URIs at its current location (in place).

    For a directory archive that was moved after extraction: rewrites ``catalog.db`` in relocated
    form for where it is now, then the manifest's ``catalog`` entry and the tag manifest. The
    catalog is verified against the manifest first; payload files are not touched.
    """
    from .reader import open_archive

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
            catalog_db.relocate(staged, directory)
            os.replace(staged, directory / CATALOG_NAME)
        finally:
            staged.unlink(missing_ok=True)
        reseal(directory, manifest)
    return directory


def stock_serve_command(directory: str | Path) -> list[str]:
    """The stock ``tiled serve catalog`` command line that serves a relocated directory
    archive as it is: its catalog, its ``data/`` as readable storage, and each ragged array's
    DuckDB file as SQL storage (``-w``; Tiled finds a ragged array's rows nowhere else)."""
    directory = Path(directory).absolute()
    command = ["tiled", "serve", "catalog", str(directory / CATALOG_NAME)]
    command += ["-r", str(directory / DATA_DIR)]
    for uri in catalog_db.sql_storages(directory / CATALOG_NAME):
        command += ["-w", uri]
    return [*command, "--public"]


def reseal(directory: str | Path, manifest: Manifest | None = None) -> None:
    """Rewrite a directory archive's manifest ``catalog`` entry and tag files for its current
    ``catalog.db`` (after the catalog was changed in place); payload entries stay as they are."""
    from .reader import open_archive

    directory = Path(directory)
    if manifest is None:
        with open_archive(directory) as archive:
            manifest = archive.manifest
    updated = _manifest(manifest.files, directory / CATALOG_NAME, 0, manifest)
    tags = _tag_files(updated, updated.catalog.sha256)
    for name in (MANIFEST_NAME, TAG_MANIFEST_NAME):
        target = directory / name
        target.with_name(f".{name}.new").write_bytes(tags[name])
        os.replace(target.with_name(f".{name}.new"), target)
