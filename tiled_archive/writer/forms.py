"""The two output forms, directory and ZIP (written, or streamed as chunks), from a payload
and a catalog."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from ..files.hashing import copy_hashing, crc32
from ..progress import described, progress_display
from ..rules.manifest import FileEntry, Manifest
from ..rules.names import (
    CATALOG_NAME,
    DATA_DIR,
    MIMETYPE,
    MIMETYPE_NAME,
    TAG_FILES,
    TAG_MANIFEST_NAME,
)
from ..zip.stream import ZipEntry, zip_layout_digest, zip_length, zip_stream
from .common import (
    Hashed,
    PayloadFile,
    build_manifest,
    checked_entry,
    chunks_of,
    staged_beside,
    tag_files,
)

CatalogStep = Callable[[Mapping[str, FileEntry]], Path]


def write_directory(
    staged: Path,
    payload: Iterable[PayloadFile],
    finish_catalog: CatalogStep,
    *,
    created: float,
    template: Manifest | None,
    progress: Progress,
    absent: Iterable[FileEntry] = (),
) -> Manifest:
    """Copy the payload into the directory ``staged`` hashing it once (verified local copies
    are hard-linked instead), then the catalog (``finish_catalog`` gets the payload's entries)
    and the tag files. ``absent``: the files of an incomplete archive it does not hold (spec
    4.1), listed in its manifest all the same."""
    entries = {entry.path: entry for entry in absent}
    copies = []
    for file in payload:
        target = staged / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if _linked(file, target):
            entries[file.path] = FileEntry(file.path, file.size, file.expected_sha256)
            os.utime(target, (file.mtime, file.mtime))
        else:
            copies.append((file, target))
    if copies:
        # Links take no time: their bytes on the bar would make its rate that of no work.
        linked = sum(entry.size for entry in entries.values())
        task = progress.add_task(
            described("copying", linked, "hard-linked"),
            total=sum(file.size for file, _ in copies),
            bytes=True,
        )
        for file, target in copies:
            with file.open() as source, open(target, "xb") as sink:
                size, sha, _ = copy_hashing(source, sink, lambda n: progress.advance(task, n))
            entries[file.path] = checked_entry(file, size, sha)
            os.utime(target, (file.mtime, file.mtime))
    (staged / DATA_DIR).mkdir(exist_ok=True)  # an empty payload is an empty folder
    shutil.copyfile(finish_catalog(entries), staged / CATALOG_NAME)
    manifest = build_manifest(entries.values(), staged / CATALOG_NAME, created, template)
    for name, content in tag_files(manifest, manifest.catalog.sha256).items():
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
    hashed = []
    unknown = []
    for file in payload:
        if file.crc32 is not None and file.expected_sha256 is not None:
            entry = FileEntry(file.path, file.size, file.expected_sha256)
            hashed.append(Hashed(file, entry, file.crc32))
        else:
            unknown.append(file)
    if unknown:
        # Known digests take no time: their bytes on the bar would make its rate that of no
        # work (a download's files, all known, showed "hashing ... 277.7 GB/s").
        known = sum(h.entry.size for h in hashed)
        task = progress.add_task(
            described("hashing", known, "already known"),
            total=sum(file.size for file in unknown),
            bytes=True,
        )
        for file in unknown:
            with file.open() as source:
                size, sha, crc = copy_hashing(
                    source, None, lambda n: progress.advance(task, n), with_crc32=True
                )
            hashed.append(Hashed(file, checked_entry(file, size, sha), crc))
    return hashed


def zip_chunks(
    hashed: list[Hashed],
    catalog: Path,
    *,
    created: float,
    fixed_mtime: int | None,
    template: Manifest | None = None,
    advance: Callable[[int], object] | None = None,
) -> Iterator[bytes]:
    """The archive as ZIP bytes, in order, without seeking: the streaming form of the writer.
    ``advance`` is told the length of each chunk of payload read (a progress bar)."""
    manifest = build_manifest([h.entry for h in hashed], catalog, created, template)
    tags = tag_files(manifest, manifest.catalog.sha256)
    tag_mtime = fixed_mtime if fixed_mtime is not None else int(created)

    def from_bytes(name: str, content: bytes, align: bool = True) -> ZipEntry:
        return ZipEntry(name, len(content), crc32(content), lambda: [content], tag_mtime, align)

    entries = [from_bytes(MIMETYPE_NAME, tags[MIMETYPE_NAME], align=False)]
    entries += [from_bytes(name, tags[name]) for name in (*TAG_FILES[1:], TAG_MANIFEST_NAME)]
    entries.append(from_bytes(CATALOG_NAME, catalog.read_bytes()))
    entries += [
        ZipEntry(
            h.file.path,
            h.entry.size,
            h.crc32,
            lambda file=h.file: chunks_of(file, advance),
            fixed_mtime if fixed_mtime is not None else h.file.mtime,
        )
        for h in sorted(hashed, key=lambda h: h.file.path)
    ]
    if not hashed:  # an empty payload is the directory entry data/ (spec §1)
        entries.append(ZipEntry(f"{DATA_DIR}/", 0, 0, lambda: [], tag_mtime, is_directory=True))
    yield from zip_stream(entries)


#: A payload file's (size, SHA-256, CRC-32): hashed, or known from an earlier hashing.
Digests = Callable[[PayloadFile], tuple[int, str, int]]


@dataclass(frozen=True)
class StreamedArchive:
    """An archive as one deterministic ZIP stream (the server's archive route): its members,
    digests known, in the order sent (``mimetype``, the payload, ``catalog.db``, the tag files
    last: TA-W103), its exact ``length`` and an ``etag`` that changes whenever one of its bytes
    would. ``chunks(start)`` sends it from byte ``start`` on; each member sent is checked
    against its CRC-32 (TA-E905: the file changed since it was hashed)."""

    members: list[ZipEntry]
    length: int
    etag: str

    def chunks(self, start: int = 0) -> Iterator[bytes]:
        return zip_stream(self.members, start=start)


def streamed_archive(
    payload: Iterable[PayloadFile], finish_catalog: CatalogStep, digests: Digests, *, created: float
) -> StreamedArchive:
    """The :class:`StreamedArchive` of ``payload`` (``digests`` hashes each file, or knows its
    digests already; on every core, since SHA-256 and CRC-32 release the GIL) and the catalog
    ``finish_catalog`` writes once the digests are known; ``created`` is the manifest's
    creation time and the tag files' member time."""
    entries: dict[str, FileEntry] = {}
    mtime = int(created)

    def from_bytes(name: str, content: bytes, align: bool = True) -> ZipEntry:
        return ZipEntry(name, len(content), crc32(content), lambda: [content], mtime, align)

    members = [from_bytes(MIMETYPE_NAME, MIMETYPE.encode(), align=False)]
    payload = list(payload)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digested = list(pool.map(digests, payload))
    for file, (size, sha, crc) in zip(payload, digested, strict=True):
        entries[file.path] = checked_entry(file, size, sha)
        chunks = functools.partial(chunks_of, file)
        members.append(ZipEntry(file.path, size, crc, chunks, file.mtime))
    if not entries:  # an empty payload is the directory entry data/ (spec 1)
        members.append(ZipEntry(f"{DATA_DIR}/", 0, 0, lambda: [], mtime, is_directory=True))
    catalog = finish_catalog(entries)
    manifest = build_manifest(entries.values(), catalog, created, None)
    tags = tag_files(manifest, manifest.catalog.sha256)
    members.append(from_bytes(CATALOG_NAME, catalog.read_bytes()))
    members += [from_bytes(name, tags[name]) for name in (*TAG_FILES[1:], TAG_MANIFEST_NAME)]
    # The layout (names, sizes, CRC-32s, times, offsets) and the tag manifest, which holds the
    # digest of the manifest, which holds every payload file's and the catalog's.
    etag = hashlib.sha256(zip_layout_digest(members).encode() + tags[TAG_MANIFEST_NAME]).hexdigest()
    return StreamedArchive(members, zip_length(members), f'"{etag[:40]}"')


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
    # The bar counts the payload's bytes, its total: headers, alignment padding, tag files
    # and catalog are not in it (counted, they took it past its total: "120.6/120.2 MB").
    task = progress.add_task("writing", total=sum(h.entry.size for h in hashed), bytes=True)
    with open(staged, "xb") as sink:
        chunks = zip_chunks(
            hashed,
            catalog,
            created=created,
            fixed_mtime=fixed_mtime,
            template=template,
            advance=lambda n: progress.advance(task, n),
        )
        for chunk in chunks:
            sink.write(chunk)
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
    absent: Iterable[FileEntry] = (),
) -> Path:
    """Write an archive at ``dest``: a ZIP when it ends in ``.zip``, else a directory.

    ``template`` is the manifest of the archive being converted (pack, extract): its creation
    time, producer and extra fields carry over.
    """
    as_zip = dest.suffix.lower() == ".zip"
    if as_zip and absent:
        raise ValueError("an incomplete archive is a directory (spec 4.1), not a ZIP")
    staging = staged_beside(dest, force=force, is_dir=not as_zip)
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
                absent=absent,
            )
    return dest
