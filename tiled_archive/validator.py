"""Check an archive against every rule of format 1.0 and report every problem found.

``validate(path)`` never stops at the first problem and never raises because an archive is bad:
each finding becomes a :class:`~tiled_archive.format.Problem` (code, member, message) in the
:class:`Report`. Only what stops the run itself (the path cannot be read: permissions, I/O errors)
raises ``OSError``.

How the checks fit together:

- ZIP structure problems come from :class:`~tiled_archive.sources.zip.ZipSource`, which finds them
  while opening the file; symbolic links and special files of a directory archive from
  :class:`~tiled_archive.sources.directory.DirectorySource`. Nothing here parses ZIP headers.
- Every later check works on what earlier ones established (the listing, the manifest) and is
  skipped when what it needs is broken, so a missing manifest is one ``TA-E002``, not a cascade.
- Full mode reads every member once in a pool of ``WORKERS`` threads: SHA-256 of every file and,
  in a ZIP, the CRC-32 of every member. ``hashlib`` and ``zlib`` release the GIL on large buffers
  and blocks are read with ``os.preadv`` (``ByteSource.read_into`` for a ZIP) into a buffer each
  thread reuses, so both cores hash. One file's digest is sequential, so the pool spreads files,
  largest first. ``fast`` mode hashes nothing: sizes and Payload-Oxum only.
- ``catalog.db`` is opened by SQLite with ``immutable=1``, which never writes beside it (no
  journal, ``-wal`` or ``-shm`` file, even for a WAL database): in place in a directory archive,
  from a temporary copy (made while hashing it) for a ZIP. The catalog checks run in the main
  thread while the pool hashes the payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import stat
import threading
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import __version__, bag
from .codes import Severity
from .content import DataSourceRow
from .content import inspect as inspect_data_source
from .content.catalog import (
    SERVED_TABLES,
    catalog_problems,
    data_source_rows,
    schema_problems,
    stamp_problem,
)
from .format import (
    BAG_INFO_NAME,
    BAGIT_NAME,
    CATALOG_NAME,
    DATA_DIR,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MIMETYPE,
    MIMETYPE_NAME,
    PAYLOAD_MANIFEST_NAME,
    RELOCATED_SCHEMES,
    REQUIRED_FILES,
    SQL_STORAGE_ASSETS,
    TAG_FILES,
    TAG_MANIFEST_NAME,
    ArchiveError,
    FileEntry,
    Manifest,
    Problem,
    canonical_problem,
    case_collisions,
    is_payload_path,
    is_relocated,
    member_from_relocated,
    package_text,
    parse_manifest,
    path_problems,
    tiled_rules,
)
from .sources import ByteSource, is_remote
from .sources.directory import DirectorySource

if TYPE_CHECKING:
    from rich.progress import Progress

#: Bytes read per ``preadv``: large enough that per-call overhead vanishes, small enough that a
#: block stays in L2 cache between its SHA-256 and CRC-32 passes.
BLOCK = 1 << 20
#: What one hashing task reads at the most (a larger file is a task of its own).
BATCH_BYTES = 64 << 20
BATCH_FILES = 1024
#: Hashing threads: the reference machine's two cores.
WORKERS = 2
#: Below this many bytes to hash, a run is over before a progress bar would help.
PROGRESS_MIN_BYTES = 256 << 20

_RESERVED = frozenset((*REQUIRED_FILES, DATA_DIR))
_BAG_INFO_LABELS = (b"Bag-Software-Agent", b"Bagging-Date")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_VERSION = 2  # header bytes 18 and 19 (write and read version) of a WAL database
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Bytes 0-3 and 30-37 of a ZIP archive: a local header whose name is `mimetype` (spec §6).
_ZIP_MARKER = ((0, b"PK\x03\x04"), (30, MIMETYPE_NAME.encode()))
_FORMS = {"directory": "archive", "zip": "archive.zip"}


# -- The report -------------------------------------------------------------------------------


@dataclass
class Report:
    """What one validation run found.

    ``form`` is ``"directory"`` or ``"zip"``, or None when the path is not an archive at all.
    ``format_version`` is the archive's own (from its manifest), when it could be read.
    With ``strict``, warnings make the archive invalid too.
    """

    path: str
    form: str | None
    fast: bool
    problems: list[Problem]
    format_version: str | None = None
    bytes_verified: int = 0
    seconds: float = 0.0
    strict: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def valid(self) -> bool:
        """Conforming: no error; warnings allowed unless ``strict``."""
        return not self.errors and not (self.strict and self.warnings)

    @property
    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def __repr__(self) -> str:
        return (
            f"Report(path={self.path!r}, form={self.form!r}, valid={self.valid}, "
            f"errors={len(self.errors)}, warnings={len(self.warnings)}, fast={self.fast}"
            + (", strict=True)" if self.strict else ")")
        )

    def exit_status(self) -> int:
        """0 valid, 1 invalid."""
        return 0 if self.valid else 1

    def to_json(self) -> dict[str, Any]:
        """The report as described by ``spec/report.schema.json``."""
        return {
            "validator": {
                "name": "tiled-archive",
                "version": __version__,
                "format_version": FORMAT_VERSION,
            },
            "path": self.path,
            "form": self.form,
            "mode": "fast" if self.fast else "full",
            "strict": self.strict,
            "format_version": self.format_version,
            "valid": self.valid,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [
                {
                    "code": p.code,
                    "severity": p.severity.value,
                    "path": p.path,
                    "message": p.message,
                    "hint": p.fix,
                }
                for p in self.problems
            ],
            "bytes_verified": self.bytes_verified,
            "seconds": round(self.seconds, 6),
        }


@cache
def report_schema() -> dict[str, Any]:
    """The JSON Schema of ``validate --json`` output (shipped with the package)."""
    return json.loads(package_text("report.schema.json"))


def validate(
    path: str | Path,
    *,
    fast: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Report:
    """Check the directory or ZIP archive at ``path`` against every rule of the format.

    Full mode verifies every byte (SHA-256 against the manifest, CRC-32 of ZIP members); with
    ``fast`` only sizes and Payload-Oxum are compared, nothing is hashed, and the catalog gets
    SQLite's ``quick_check`` instead of ``integrity_check``. Every other rule is checked in both.
    With ``strict`` the report counts warnings as errors (``report.valid`` is False when any
    rule's SHOULD is broken). ``progress`` (a started rich Progress) gets a task for the
    hashing when it is long. ``path`` may be the http(s) or s3 URL of a ZIP (read by range
    requests; ``storage_options`` as :func:`tiled_archive.open` takes them).

    Raises ``OSError`` only when the archive cannot be read at all (e.g. permissions).
    """
    start = time.perf_counter()
    location = path if is_remote(path) else Path(path)
    checker = _Checker(location, fast=fast, progress=progress, storage_options=storage_options)
    checker.run()
    problems = sorted(
        dict.fromkeys(checker.problems), key=lambda p: (p.code, p.path or "", p.message)
    )
    return Report(
        path=str(path),
        form=checker.form,
        fast=fast,
        problems=problems,
        format_version=checker.format_version,
        bytes_verified=checker.bytes_verified,
        seconds=time.perf_counter() - start,
        strict=strict,
    )


# -- The checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Digest:
    """What reading one member gave: bytes read, SHA-256 and CRC-32 (None when not computed),
    or the problem that stopped the read."""

    path: str
    size: int
    sha256: str | None
    crc32: int | None
    problem: Problem | None = None


class _StopValidation(Exception):
    """Nothing more can be checked (not an archive, or a major version we do not know)."""


@dataclass
class _Checker:
    path: Path | str
    fast: bool
    progress: Progress | None
    #: For a remote archive (URL): what opening it takes (headers, S3 keys, endpoint).
    storage_options: Mapping[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    form: str | None = None
    format_version: str | None = None
    bytes_verified: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    #: The catalog's data sources, found by the catalog checks, for the data file checks.
    data_sources: list[DataSourceRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.local()
        self._task: Any = None

    def add(self, code: str, path: str | None, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(code, path, message, hint))

    def run(self) -> None:
        source = self._open()
        if source is None:
            return
        with source, contextlib.ExitStack() as self._cleanup:
            self.source = source
            try:
                self._check_archive()
            except _StopValidation:
                pass
            finally:
                if self._task is not None:
                    self.progress.remove_task(self._task)  # type: ignore[union-attr]

    @property
    def is_zip(self) -> bool:
        return self.form == "zip"

    def _check_archive(self) -> None:
        self._inventory()
        self._check_layout()
        self._check_mimetype()
        manifest = self._check_manifest()
        self._check_bagit(manifest)
        if manifest is not None:
            self._check_listing(manifest)
        catalog = self._local_catalog()
        batches = self._hash_batches()
        if not batches:  # fast mode: no pool to start (or to import)
            self._check_catalog(catalog, manifest)
        else:
            self._hash_while_checking_catalog(batches, catalog, manifest)
        if manifest is not None and not self.fast:
            self._check_digests(manifest)
        self._check_tag_manifest()
        self._check_data_files()

    def _hash_while_checking_catalog(
        self, batches: list[list[str]], catalog: Path | None, manifest: Manifest | None
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(WORKERS, thread_name_prefix="validate") as pool:
            try:
                digested = pool.map(self._digest_all, batches)
                self._check_catalog(catalog, manifest)  # while the pool hashes
                for batch in digested:
                    for result in batch:
                        self._record(result)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise

    # -- Recognition and layout ----------------------------------------------------------------

    def _open(self) -> ByteSource | None:
        """The archive's byte source, or None (with TA-E001 or TA-E100) when there is none."""
        if isinstance(self.path, str):
            return self._open_remote(self.path)
        try:
            mode = os.stat(self.path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            self.add("TA-E001", str(self.path), "no such file or directory")
            return None
        if stat.S_ISDIR(mode):
            self.form = "directory"
            return DirectorySource(self.path)
        if not stat.S_ISREG(mode):
            self.add("TA-E001", str(self.path), "neither a directory nor a regular file")
            return None
        try:
            from .sources.zip import ZipSource

            source = ZipSource(self.path)
        except ArchiveError as err:
            # A damaged tiled-archive still starts with its marker; anything else is no archive.
            if self._has_zip_marker():
                self.form = "zip"
                self.problems.append(err.problem)
            else:
                self.add("TA-E001", str(self.path), f"not a ZIP file ({err.problem.message})")
            return None
        self.form = "zip"
        return source

    def _open_remote(self, url: str) -> ByteSource | None:
        """A remote ZIP, every local header read (TA-E930/TA-E931 when it cannot be read)."""
        from .sources import remote_file
        from .sources.zip import ZipSource

        self.form = "zip"
        try:
            file = remote_file(url, self.storage_options)
        except ArchiveError as err:
            self.problems.append(err.problem)
            return None
        try:
            return ZipSource(file, every_header=True)
        except ArchiveError as err:
            head = file.pread(0, 64)
            file.close()
            if err.code in ("TA-E930", "TA-E931") or self._has_zip_marker(head):
                self.problems.append(err.problem)
            else:
                self.add("TA-E001", url, f"not a ZIP file ({err.problem.message})")
            return None

    def _has_zip_marker(self, head: bytes | None = None) -> bool:
        if head is None:
            with open(self.path, "rb") as handle:
                head = handle.read(64)
        return all(head[at : at + len(marker)] == marker for at, marker in _ZIP_MARKER)

    def _inventory(self) -> None:
        """Which files the archive holds (``present``, with sizes) and which can be read.

        A ZIP member that cannot be read (encrypted, unknown method, special file) is still
        present: its own code says what is wrong, so it is not also reported missing.
        """
        self.readable = self.source.members()
        if self.is_zip:
            self.present: dict[str, int] = {}
            for record in self.source.entries:
                if not record.is_dir:
                    self.present.setdefault(record.name, record.size)
            self.top_level = {record.name.split("/", 1)[0] for record in self.source.entries}
            self.has_data_dir = any(
                record.name.startswith(DATA_DIR + "/") for record in self.source.entries
            )
        else:
            self.present = {path: member.size for path, member in self.readable.items()}
            self.top_level = set(os.listdir(self.path))
            try:
                self.has_data_dir = stat.S_ISDIR(os.lstat(self.path / DATA_DIR).st_mode)
            except FileNotFoundError:
                self.has_data_dir = False
        self.payload = sorted(path for path in self.present if is_payload_path(path))
        if MIMETYPE_NAME not in self.present:
            # Without its marker this is some other directory or ZIP: its other "problems"
            # would only be noise.
            self.problems = [
                Problem(
                    "TA-E001", str(self.path), f"no `{MIMETYPE_NAME}` file: not a tiled-archive"
                )
            ]
            raise _StopValidation
        self.problems.extend(self.source.problems)
        if not self.is_zip:
            # ZipSource checks member names itself; a directory's names are checked here.
            for path in self.present:
                self.problems.extend(path_problems(path))
            self.problems.extend(case_collisions(self.present))
        # Folders collide on a case-insensitive filesystem just as files do.
        folders = sorted({folder for path in self.present for folder in _folders(path)})
        self.problems.extend(case_collisions(folders))

    def _check_layout(self) -> None:
        for name in REQUIRED_FILES:
            if name not in self.present:
                self.add("TA-E002", name, "required file missing")
        if not self.has_data_dir:
            self.add("TA-E002", DATA_DIR + "/", "required folder missing")
        for name in sorted(self.top_level - _RESERVED - {""}):
            self.add("TA-W001", name, "unknown top-level entry")

    def _read(self, name: str) -> bytes | None:
        """A small member's bytes; None when it is absent or unreadable (reported elsewhere)."""
        if name not in self.readable:
            return None
        try:
            return self.source.read(name)
        except ArchiveError as err:
            self.problems.append(err.problem)
            return None

    def _check_mimetype(self) -> None:
        raw = self._read(MIMETYPE_NAME)
        if raw is not None and raw != MIMETYPE.encode():
            self.add("TA-E003", MIMETYPE_NAME, f"holds {raw[:64]!r}, not {MIMETYPE!r}")

    # -- Manifest and BagIt files ----------------------------------------------------------------

    def _check_manifest(self) -> Manifest | None:
        raw = self._read(MANIFEST_NAME)
        if raw is None:
            return None
        problems, manifest = parse_manifest(raw)
        self.problems.extend(problems)
        if any(p.code == "TA-E302" for p in problems):
            raise _StopValidation  # the rules of another major version are unknown here
        if manifest is not None:
            self.format_version = manifest.format_version
            canonical = canonical_problem(raw)
            if canonical is not None:
                self.problems.append(canonical)
        return manifest

    def _check_bagit(self, manifest: Manifest | None) -> None:
        raw = self._read(BAGIT_NAME)
        if raw is not None:
            self.problems.extend(bag.check_bagit_txt(raw))
        info = self._read(BAG_INFO_NAME)
        if info is not None:
            for label in _BAG_INFO_LABELS:
                if not re.search(rb"^" + label + rb":", info, re.MULTILINE):
                    self.add("TA-W400", BAG_INFO_NAME, f"no {label.decode()} line")
        if manifest is None:
            return  # the other checks compare with the manifest
        if info is not None:
            self.problems.extend(bag.check_bag_info(info, manifest))
        raw = self._read(PAYLOAD_MANIFEST_NAME)
        if raw is not None:
            self.problems.extend(bag.check_payload_manifest(raw, manifest))
            self.problems.extend(bag.order_problems(raw, PAYLOAD_MANIFEST_NAME))

    def _check_listing(self, manifest: Manifest) -> None:
        """Manifest against the files present: missing, unlisted, wrong size (no reading)."""
        listed: dict[str, FileEntry] = {}
        for entry in manifest.files:
            listed.setdefault(entry.path, entry)
        for path, entry in listed.items():
            size = self.present.get(path)
            if size is None:
                self.add("TA-E305", path, "listed in the manifest but not in the archive")
            elif size != entry.size:
                self.add("TA-E307", path, f"{size} bytes, the manifest says {entry.size}")
        for path in self.payload:
            if path not in listed:
                self.add("TA-E306", path, "payload file not listed in the manifest")
        size = self.present.get(CATALOG_NAME)
        if size is not None and size != manifest.catalog.size:
            self.add(
                "TA-E309", CATALOG_NAME, f"{size} bytes, the manifest says {manifest.catalog.size}"
            )

    def _check_digests(self, manifest: Manifest) -> None:
        """SHA-256 against the manifest, for every file whose size was right."""
        for entry in (*manifest.files, manifest.catalog):
            digest = self.digests.get(entry.path)
            if digest is None or self.present.get(entry.path) != entry.size:
                continue
            if digest != entry.sha256:
                code = "TA-E309" if entry is manifest.catalog else "TA-E308"
                self.add(code, entry.path, f"SHA-256 is {digest}, the manifest says {entry.sha256}")

    def _check_tag_manifest(self) -> None:
        raw = self._read(TAG_MANIFEST_NAME)
        if raw is None:
            return
        lines, problems = bag.parse_digest_lines(raw, TAG_MANIFEST_NAME, "TA-E402")
        self.problems.extend(problems)
        self.problems.extend(bag.order_problems(raw, TAG_MANIFEST_NAME))
        for name in (*TAG_FILES, CATALOG_NAME):
            if name not in lines:
                self.add("TA-E402", name, f"not listed in {TAG_MANIFEST_NAME}")
        for name, expected in sorted(lines.items()):
            if name not in self.present:
                if name not in REQUIRED_FILES:  # a missing required file is TA-E002 already
                    self.add("TA-E402", name, f"{TAG_MANIFEST_NAME} lists a file that is absent")
                continue
            digest = self.digests.get(name)
            if digest is not None and digest != expected:
                self.add(
                    "TA-E402", name, f"{TAG_MANIFEST_NAME} says {expected}, the file's is {digest}"
                )

    # -- Data files (§3.2, §3.3) -------------------------------------------------------------

    def _check_data_files(self) -> None:
        """Each data source's parameters and what its files hold, except files already found
        damaged or missing (that is their one problem)."""
        damaged = {
            p.path for p in self.problems if p.code in ("TA-E111", "TA-E305", "TA-E307", "TA-E308")
        }
        for row in self.data_sources:
            folders = [a.member + "/" for a in row.assets if a.is_directory]
            if any(m in damaged for m in row.members()) or any(
                path.startswith(folder) for path in damaged for folder in folders
            ):
                continue
            inspection = inspect_data_source(self.source, row)
            self.problems.extend(inspection.problems)
            warning = inspection.bomb_warning(row.where)
            if warning is not None:
                self.problems.append(warning)

    # -- Reading every byte ----------------------------------------------------------------------

    def _local_catalog(self) -> Path | None:
        """A local file of catalog.db for SQLite: the archive's own in a directory; for a ZIP a
        copy in a temporary folder, hashed on the way (it is read only once)."""
        if CATALOG_NAME not in self.readable:
            return None
        if not self.is_zip:
            return self.path / CATALOG_NAME
        import tempfile

        work = self._cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="tiled-archive-validate-")
        )
        copy = Path(work) / CATALOG_NAME
        with open(copy, "xb") as sink:
            result = self._digest(CATALOG_NAME, sink)
        self._record(result)
        return copy if result.problem is None else None

    def _hash_batches(self) -> list[list[str]]:
        """Every readable member still to hash (none in fast mode), largest first, in batches
        of about BATCH_BYTES (at most BATCH_FILES files) so a ZIP of 200,000 small members
        costs a few hundred pool tasks, not 200,000."""
        if self.fast:
            return []
        jobs = sorted(
            (path for path in self.readable if path not in self.digests),
            key=lambda path: -self.readable[path].size,
        )
        total = sum(self.readable[path].size for path in jobs)
        if self.progress is not None and total >= PROGRESS_MIN_BYTES:
            self._task = self.progress.add_task("verifying", total=total, bytes=True)
        batches: list[list[str]] = []
        batch_bytes = 0
        for path in jobs:
            size = self.readable[path].size
            if not batches or batch_bytes + size > BATCH_BYTES or len(batches[-1]) >= BATCH_FILES:
                batches.append([])
                batch_bytes = 0
            batches[-1].append(path)
            batch_bytes += size
        return batches

    def _digest_all(self, paths: list[str]) -> list[_Digest]:
        return [self._digest(path) for path in paths]

    def _digest(self, path: str, sink: BinaryIO | None = None) -> _Digest:
        """Read one member to its end: SHA-256 (and CRC-32 in a ZIP) unless in fast mode."""
        sha = None if self.fast else hashlib.sha256()
        crc = 0 if self.is_zip and not self.fast else None
        size = 0
        try:
            for block in self._blocks(path):
                if sha is not None:
                    sha.update(block)
                if crc is not None:
                    crc = zlib.crc32(block, crc)
                if sink is not None:
                    sink.write(block)
                size += len(block)
                if self._task is not None:
                    self.progress.advance(self._task, len(block))  # type: ignore[union-attr]
        except ArchiveError as err:
            return _Digest(path, size, None, None, err.problem)
        return _Digest(path, size, sha.hexdigest() if sha is not None else None, crc)

    def _blocks(self, path: str) -> Iterator[memoryview]:
        """The member's bytes in blocks of at most BLOCK, each valid until the next one."""
        size = self.readable[path].size
        if self.is_zip:
            if self.source.span(path) is None:  # compressed: only a sequential stream
                yield from self._decompressed(path)
            else:
                yield from self._positional(partial(self.source.read_into, path), size, path)
            return
        # DirectorySource.open walks down from the root without following symbolic links. Its
        # descriptor is read directly: read_into would open the file again for every block.
        with self.source.open(path) as handle:
            fd = handle.fileno()
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_SEQUENTIAL)
            yield from self._positional(
                lambda offset, view: os.preadv(fd, [view], offset), size, path
            )

    def _positional(
        self, read_into: Callable[[int, memoryview], int], size: int, path: str
    ) -> Iterator[memoryview]:
        """Blocks read by ``read_into(offset, view)`` into this thread's reused buffer."""
        buffer = getattr(self._thread, "buffer", None)
        if buffer is None:
            buffer = self._thread.buffer = memoryview(bytearray(BLOCK))
        offset = 0
        while offset < size:
            count = read_into(offset, buffer[: min(BLOCK, size - offset)])
            if count == 0:
                raise ArchiveError(
                    "TA-E307", path, f"ends {size - offset} bytes early (changed while read?)"
                )
            yield buffer[:count]
            offset += count

    def _decompressed(self, path: str) -> Iterator[memoryview]:
        import zipfile

        try:
            with self.source.open(path) as stream:
                while chunk := stream.read(BLOCK):
                    yield memoryview(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            # zipfile checks the CRC-32 of what it decompresses itself, and says so here.
            raise ArchiveError("TA-E111", path, f"cannot decompress: {err}") from None

    def _record(self, result: _Digest) -> None:
        self.bytes_verified += result.size
        if result.problem is not None:
            self.problems.append(result.problem)
            return
        if result.sha256 is not None:
            self.digests[result.path] = result.sha256
        if result.crc32 is not None and self.is_zip:
            declared = self.source.crc32(result.path)
            if result.crc32 != declared:
                self.add(
                    "TA-E111",
                    result.path,
                    f"CRC-32 is {result.crc32:08x}, the central directory says {declared:08x}",
                )

    # -- catalog.db ------------------------------------------------------------------------------

    def _check_catalog(self, db: Path | None, manifest: Manifest | None) -> None:
        if db is None:
            return
        with open(db, "rb") as handle:
            header = handle.read(100)
        if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
            self.add("TA-E500", CATALOG_NAME, "not a SQLite 3 database")
            return
        if _WAL_VERSION in (header[18], header[19]):
            self.add("TA-E507", CATALOG_NAME, "in WAL journal mode (header bytes 18-19 are 2)")
        uri = f"{db.resolve().as_uri()}?mode=ro&immutable=1"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                # Damaged text must not stop the checks: keep undecodable bytes as surrogates
                # (which the path rules then report).
                conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
                _CatalogChecks(self, conn, manifest).run()
        except sqlite3.DatabaseError as err:
            self.add("TA-E500", CATALOG_NAME, f"SQLite: {err}")
        except UnicodeDecodeError as err:
            # Python decodes SQLite's error messages strictly, and a damaged schema's names
            # end up in them.
            self.add("TA-E500", CATALOG_NAME, f"SQLite reports damage in undecodable text: {err}")


class _CatalogChecks:
    """The rules of §3 on one open (read-only, immutable) catalog connection."""

    def __init__(self, checker: _Checker, conn: sqlite3.Connection, manifest: Manifest | None):
        self.checker = checker
        self.conn = conn
        self.manifest = manifest
        self.add = checker.add

    def run(self) -> None:
        check = "quick_check" if self.checker.fast else "integrity_check"
        findings = [row[0] for row in self.conn.execute(f"PRAGMA {check}(10)")]
        if findings != ["ok"]:
            # Nothing read from a damaged database can be trusted; stop here.
            self.add("TA-E500", CATALOG_NAME, f"{check}: " + "; ".join(findings))
            return
        tables = self._complete_tables()
        if "alembic_version" in tables:
            self._check_revision()
        if "assets" in tables:
            self._check_assets()
        if self.checker.fast:
            # Rows against Tiled's models and data files against their rows take Tiled and
            # the files' libraries: a full check's work (spec section 10).
            return
        if set(SERVED_TABLES) <= tables:
            self.checker.problems.extend(catalog_problems(self.conn))
            self._check_mimetypes()
        if {"data_sources", "structures", "nodes", "assets", "data_source_asset_association"} <= (
            tables
        ):
            self._collect_data_sources()

    def _complete_tables(self) -> set[str]:
        """The tables present and complete; the others are reported (TA-E502) and left
        unread."""
        complete, problems = schema_problems(self.conn)
        self.checker.problems.extend(problems)
        return complete

    def _rows(self, sql: str, table: str) -> list[tuple]:
        """All rows of a query on ``table``; a column Tiled's schema has but this one lacks is
        TA-E502 (and no rows)."""
        try:
            return self.conn.execute(sql).fetchall()
        except sqlite3.OperationalError as err:
            if "no such column" not in str(err):
                raise
            self.add("TA-E502", CATALOG_NAME, f"table {table!r}: {err}")
            return []

    def _check_revision(self) -> None:
        revisions = [row[0] for row in self._rows(_REVISION_SQL, "alembic_version")]
        stamp = stamp_problem(revisions)
        if stamp is not None:
            self.checker.problems.append(stamp)
        elif self.manifest is not None and self.manifest.tiled_schema_revision != revisions[0]:
            self.add(
                "TA-E501",
                MANIFEST_NAME,
                f"tiled_schema_revision is {self.manifest.tiled_schema_revision!r}, "
                f"catalog.db is stamped {revisions[0]!r}",
            )

    def _check_assets(self) -> None:
        checker = self.checker
        #: asset URI -> the member it names (None: it names none), for the data file checks.
        self.members: dict[str, str | None] = {}
        listed = {}
        if self.manifest is not None:
            for entry in self.manifest.files:
                listed.setdefault(entry.path, entry)
        payload = checker.payload
        file_assets: set[str] = set()
        folder_assets: set[str] = set()
        sql_assets = {row[0] for row in self._rows(SQL_STORAGE_ASSETS, "data_sources")}
        rows = self._rows(_ASSETS_SQL, "assets")
        for asset_id, uri, is_directory, size, hash_type, hash_content in rows:
            member = self._asset_member(uri, asset_id in sql_assets)
            if isinstance(uri, str):
                self.members[uri] = member
            if member is None:
                continue
            if is_directory:
                if not _holds_folder(payload, member):
                    self.add("TA-E504", uri, "directory asset: no payload file below it")
                folder_assets.add(member)
            elif member not in checker.present:
                what = "a folder" if _holds_folder(payload, member) else "absent"
                self.add("TA-E504", uri, f"file asset, but {member} is {what}")
            else:
                file_assets.add(member)
                entry = listed.get(member)
                if entry is not None:
                    self._check_asset_entry(uri, size, hash_type, hash_content, entry)
        for path in payload:
            if path not in file_assets and not any(
                folder in folder_assets for folder in _folders(path)
            ):
                self.add("TA-W500", path, "not referenced by any asset")

    def _asset_member(self, uri: str, is_sql_storage: bool) -> str | None:
        """The archive path an asset URI names, or None after reporting why it names none."""
        if not isinstance(uri, str):
            self.add("TA-E503", CATALOG_NAME, f"asset data_uri {uri!r} is not text")
            return None
        if is_relocated(uri):
            if self.checker.is_zip:
                self.add(
                    "TA-E503",
                    uri,
                    "a ZIP archive must use archive form (data/...)",
                    "Make the ZIP with `tiled-archive pack DIR x.zip`, which writes archive form,"
                    " not by zipping a relocated directory.",
                )
                return None
            scheme = RELOCATED_SCHEMES[is_sql_storage]
            if not uri.startswith(f"{scheme}:"):
                what = "a ragged data source's database" if is_sql_storage else "a file asset"
                self.add("TA-E503", uri, f"{what} is relocated as a {scheme}: URI")
                return None

            try:
                return member_from_relocated(uri, self.checker.path.resolve())
            except ArchiveError as err:
                self.checker.problems.append(err.problem)
            except ValueError as err:  # urlparse refuses some malformed URIs
                self.add("TA-E503", uri, f"not a file URI: {err}")
            return None
        if _URI_SCHEME.match(uri):
            self.add("TA-E503", uri, "not a file path inside the archive")
            return None
        errors = [p for p in path_problems(uri) if p.severity is Severity.ERROR]
        self.checker.problems.extend(errors)
        # A forbidden character or an overlong name still names a member; a `..` may not.
        if not is_payload_path(uri) or any(p.code == "TA-E201" for p in errors):
            self.add("TA-E503", uri, "not a path inside data/")
            return None
        return uri

    def _check_asset_entry(
        self,
        uri: str,
        size: object,
        hash_type: object,
        hash_content: object,
        entry: FileEntry,
    ) -> None:
        if size != entry.size:
            self.add("TA-E505", uri, f"asset size {size}, the manifest says {entry.size}")
        if hash_type is None and hash_content is None:
            self.add("TA-W502", uri, "no hash_type/hash_content")
        elif (hash_type, hash_content) != ("sha256", entry.sha256):
            self.add(
                "TA-E505",
                uri,
                f"asset hash {hash_type}:{hash_content}, the manifest says sha256:{entry.sha256}",
            )

    def _check_mimetypes(self) -> None:
        adapted = set(tiled_rules()["adapter_mimetypes"])
        for source_id, node_id, key, mimetype in self._rows(_MIMETYPES_SQL, "data_sources"):
            if mimetype not in adapted:
                where = f"data source {source_id} (node {node_id} {key!r})"
                self.add("TA-W501", CATALOG_NAME, f"{where}: no Tiled adapter for {mimetype!r}")

    def _collect_data_sources(self) -> None:
        """The data sources, for the §3.2/§3.3 checks that read their files once hashing is
        done (``_Checker._check_data_files``)."""
        members = getattr(self, "members", {})
        self.checker.data_sources = data_source_rows(self.conn, members.get)


_REVISION_SQL = "SELECT version_num FROM alembic_version"
_ASSETS_SQL = (
    "SELECT id, data_uri, is_directory, size, hash_type, hash_content FROM assets ORDER BY id"
)
_MIMETYPES_SQL = (
    "SELECT d.id, d.node_id, n.key, d.mimetype FROM data_sources d"
    " LEFT JOIN nodes n ON n.id = d.node_id ORDER BY d.id"
)


def _folders(path: str) -> Iterator[str]:
    """The folders ``path`` lies in, innermost first: ``a/b/c`` gives ``a/b``, ``a``."""
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def _holds_folder(sorted_paths: list[str], folder: str) -> bool:
    """Whether some path of ``sorted_paths`` lies below ``folder``."""
    prefix = folder + "/"
    at = bisect_left(sorted_paths, prefix)
    return at < len(sorted_paths) and sorted_paths[at].startswith(prefix)


# -- Output -----------------------------------------------------------------------------------


# -- Conformance fixtures -------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureCase:
    """One form of one conformance fixture and the exact set of codes it must produce."""

    fixture: Path
    form: str
    archive: Path
    expected: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.fixture.parent.name}/{self.fixture.name}"


def fixture_cases(root: Path) -> list[FixtureCase]:
    """Every fixture form below ``root`` (folders holding ``expected.json``), sorted.

    ``expected.json`` maps each form the fixture holds (``"directory"``: ``archive/``,
    ``"zip"``: ``archive.zip``) to its codes, under ``"expected"``.
    """
    cases = []
    for spec_file in sorted(Path(root).rglob("expected.json")):
        expected = json.loads(spec_file.read_text(encoding="utf-8"))["expected"]
        for form, codes in sorted(expected.items()):
            archive = spec_file.parent / _FORMS[form]
            cases.append(FixtureCase(spec_file.parent, form, archive, frozenset(codes)))
    return cases


def is_fixture_tree(path: Path) -> bool:
    """Whether ``path`` is (or holds) conformance fixtures rather than being an archive."""
    if not path.is_dir() or (path / MIMETYPE_NAME).exists():
        return False
    return next(path.rglob("expected.json"), None) is not None


def run_cases(
    cases: Iterable[FixtureCase], run: Callable[[Path], Report] = validate
) -> Iterator[tuple[FixtureCase, Report]]:
    """Validate each fixture form (full mode)."""
    for case in cases:
        yield case, run(case.archive)


__all__ = [
    "Report",
    "validate",
    "report_schema",
    "FixtureCase",
    "fixture_cases",
    "is_fixture_tree",
    "run_cases",
]
