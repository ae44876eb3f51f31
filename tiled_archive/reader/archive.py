"""Open an archive (directory or ZIP) read-only: its manifest, catalog and members.

Nothing here writes to the archive. SQLite cannot open a database inside a ZIP, so a ZIP's
``catalog.db`` is copied once, verified against the manifest's SHA-256, into a cache keyed by that
digest; data members are never copied, only read by position.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import threading
import warnings
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath, PurePosixPath
from typing import BinaryIO

from ..catalog import db_file as catalog_db
from ..files import verdicts
from ..files.blobs import BlobCache, Validators, default_cache_dir, url_key
from ..files.cache_root import cache_root
from ..files.hashing import CHUNK, sha256_of
from ..files.work import partial_name
from ..inspectors import Inspection
from ..inspectors import inspect as inspect_data_source
from ..rules.catalog_rows import (
    DataSourceRow,
    catalog_problems,
    data_source_rows,
    schema_problems,
    stamp_problem,
)
from ..rules.formats import parameter_problems
from ..rules.manifest import FileEntry, Manifest, version_problem
from ..rules.names import (
    CATALOG_NAME,
    FETCH_WORK_DIR,
    MANIFEST_NAME,
    MIMETYPE,
    MIMETYPE_NAME,
    REQUIRED_FILES,
)
from ..rules.paths import (
    is_relocated,
    member_from_data_uri,
    member_from_relocated,
    relocation_folder,
)
from ..rules.problems import ArchiveError, Problem, reason
from ..sources import ByteSource, Member, Span, open_source
from ..sources.directory import DirectorySource
from ..sources.lazy import Absent, LazySource
from .fetching import FetchOptions, fetch_policy


class ArchiveWarning(UserWarning):
    """A SHOULD of the format is not met; the archive is still read."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


#: Warnings about what a remote reader pays (TA-W103: more requests), not said on opening a
#: local archive.
REMOTE_ONLY_WARNINGS = frozenset({"TA-W103"})


class Archive:
    """An open archive. Use :func:`open_archive`; close it (or use ``with``) when done."""

    def __init__(self, source: ByteSource, fetch: FetchOptions | None = None):
        self.source = source
        errors = [p for p in source.problems if p.severity == "error"]
        if errors:
            source.close()
            raise ArchiveError(
                errors[0].code,
                errors[0].path,
                errors[0].message
                + (
                    f" (and {len(errors) - 1} more problems; run `tiled-archive validate`)"
                    if len(errors) > 1
                    else ""
                ),
            )
        # One warning per code, however many members it concerns (a re-zipped archive has a
        # TA-W102 for every member).
        by_code: dict[str, list[Problem]] = {}
        for problem in source.problems:
            if problem.code in REMOTE_ONLY_WARNINGS and isinstance(source.location, Path):
                continue  # costs requests only when read over the network; validate says it
            by_code.setdefault(problem.code, []).append(problem)
        for code, found in by_code.items():
            first = found[0]
            more = f" (and {len(found) - 1} more members)" if len(found) > 1 else ""
            warnings.warn(
                ArchiveWarning(Problem(code, first.path, first.message + more)), stacklevel=3
            )
        missing = [name for name in REQUIRED_FILES if not source.holds(name)]
        if missing:
            raise ArchiveError(
                "TA-E002" if MIMETYPE_NAME not in missing else "TA-E001",
                missing[0],
                "required file missing",
            )
        source.prefetch([MIMETYPE_NAME, MANIFEST_NAME])  # one request for a remote archive
        if source.read(MIMETYPE_NAME) != MIMETYPE.encode():
            raise ArchiveError("TA-E003", MIMETYPE_NAME, "wrong format marker")
        self.manifest = self._read_manifest()
        self._entries_by_path: dict[str, FileEntry] | None = None
        self._node_paths: dict[str, str] | None = None
        if self.manifest.fetch is not None and isinstance(source, DirectorySource):
            self.source = source = self._lazy_source(source, fetch or FetchOptions())
        newer = version_problem(self.manifest.format_version)
        if newer:
            warnings.warn(ArchiveWarning(newer), stacklevel=3)
        self._catalog: Path | None = None
        #: local_copy's results: each is verified once per open archive.
        self._copies: dict[str, Path] = {}
        #: Payload files whose bytes verify() has checked against the manifest.
        self._verified: set[str] = set()
        self._verifying: dict[str, threading.Lock] = {}
        self._verifying_lock = threading.Lock()
        self._data_sources: dict[int, DataSourceRow] | None = None
        #: data_source's answers, each read once.
        self._rows: dict[int, DataSourceRow | None] = {}
        self._catalog_checked = False
        #: relocation_folder's answer, found once from the catalog's URIs.
        self._relocation_folder: PurePath | None = None
        self._inspections: dict[int, Inspection] = {}

    def _read_manifest(self) -> Manifest:
        """The manifest, checked (raising the first rule it breaks); bytes judged clean before
        (kept under their SHA-256, :mod:`tiled_archive.files.verdicts`) are not judged again,
        and their file list is decoded when first used."""
        raw = self.source.read(MANIFEST_NAME)
        self._manifest_sha256 = digest = hashlib.sha256(raw).hexdigest()
        summary = verdicts.kept("manifest", digest)
        if isinstance(summary, dict):
            with contextlib.suppress(KeyError, TypeError, ValueError):  # a damaged cache entry
                return Manifest.from_summary(summary, raw)
        manifest = Manifest.loads(raw)
        verdicts.keep("manifest", digest, manifest.summary())
        return manifest

    @property
    def _entries(self) -> dict[str, FileEntry]:
        """The manifest's files by path (built on first use)."""
        if self._entries_by_path is None:
            self._entries_by_path = {entry.path: entry for entry in self.manifest.files}
        return self._entries_by_path

    def _lazy_source(self, directory: DirectorySource, options: FetchOptions) -> LazySource:
        """The source of an incomplete archive (spec 4.1): absent files fetched when read,
        as ``options`` and this user's trust allow."""
        record = self.manifest.fetch
        assert record is not None
        directory.close()
        policy = fetch_policy(
            directory.location,
            record.origin,
            fetch=options.fetch,
            offline=options.offline,
            api_key=options.api_key,
            max_bytes=options.max_bytes,
        )
        return LazySource(
            directory.location,
            self._fetch_entries(),
            policy,
            record.origin,
            self.fetch_command,
            functools.partial(_into_blob_cache, record.origin),
        )

    def refresh(self) -> None:
        """Read the manifest and catalog again after the archive grew (a browse mirror,
        :mod:`tiled_archive.browser`): files it lists now are added to the lazy source, and
        the catalog's rows are checked again when first asked for."""
        if isinstance(self.source, LazySource):
            self.source.restat(list(REQUIRED_FILES))
        manifest = self._read_manifest()
        if not isinstance(self.source, LazySource) or manifest.fetch is None:
            raise ArchiveError("TA-E904", str(self.location), "only a lazy archive grows")
        self.manifest = manifest
        self._entries_by_path = None
        self.source.extend(self._fetch_entries())
        self._catalog = None
        self._data_sources = None
        self._rows = {}
        self._catalog_checked = False
        self._node_paths = None
        self._relocation_folder = None

    def _fetch_entries(self) -> list[Absent]:
        record = self.manifest.fetch
        assert record is not None
        return [
            Absent(
                path,
                self._entries[path].size,
                self._entries[path].sha256,
                source.url,
                source.etag,
                source.last_modified,
            )
            for path, source in record.files.items()
            if path in self._entries
        ]

    @property
    def is_lazy(self) -> bool:
        """Whether this is an incomplete-capable (lazy) directory archive (spec 4.1)."""
        return isinstance(self.source, LazySource)

    def absent(self) -> list[str]:
        """Payload files the archive does not hold yet (an incomplete archive's; else none)."""
        return sorted(self.source.absent()) if isinstance(self.source, LazySource) else []

    def fetch_command(self, path: str | None = None) -> str:
        """The ``tiled-archive fetch`` command that brings payload file ``path`` (its node's),
        or every absent file."""
        import shlex

        command = ["tiled-archive", "fetch", str(self.location)]
        node = self.node_of(path) if path is not None else None
        if node:
            command += ["--node", node]
        return shlex.join(command)

    def node_of(self, path: str) -> str | None:
        """The path of the node whose data source holds payload file ``path`` (None: none)."""
        if self._node_paths is None:
            self._node_paths = self._member_nodes()
        found = self._node_paths.get(path)
        if found is None:  # a file inside a directory asset
            for member, node in self._node_paths.items():
                if path.startswith(member + "/"):
                    return node
        return found

    def files_of_nodes(self, nodes: list[str]) -> set[str]:
        """The payload files of the data sources of ``nodes`` and of every node below them
        (node paths, ``/``-separated; ``""`` or ``/`` is the whole tree)."""
        if self._node_paths is None:
            self._node_paths = self._member_nodes()
        prefixes = [node.strip("/") for node in nodes]
        chosen = {
            member
            for member, node in self._node_paths.items()
            if any(not p or node == p or node.startswith(p + "/") for p in prefixes)
        }
        return {
            entry.path
            for entry in self.manifest.files
            if entry.path in chosen or any(entry.path.startswith(m + "/") for m in chosen)
        }

    def _member_nodes(self) -> dict[str, str]:
        """Each asset's member (file or folder) -> the path of the node it belongs to."""
        uri = f"{self.catalog_path().resolve().as_uri()}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute("SELECT id, parent, key FROM nodes").fetchall()
            owners = dict(conn.execute("SELECT id, node_id FROM data_sources").fetchall())
        parents = {node_id: (parent, str(key)) for node_id, parent, key in rows}

        def path_of(node_id: int) -> str:
            parts = []
            while True:
                parent, key = parents.get(node_id, (None, ""))
                if parent is None:
                    return "/".join(reversed(parts))
                parts.append(key)
                node_id = parent

        return {
            asset.member: path_of(owners[row.id])
            for row in self.data_sources().values()
            if row.id in owners
            for asset in row.assets
        }

    @property
    def location(self) -> Path | str:
        """The archive's path, or its URL when it is remote."""
        return self.source.location

    @property
    def is_remote(self) -> bool:
        """Whether the archive is read over the network (its location is a URL)."""
        return not isinstance(self.location, Path)

    @property
    def is_directory(self) -> bool:
        return isinstance(self.source, DirectorySource)

    def members(self) -> Mapping[str, Member]:
        """Every regular file of the archive, by archive path."""
        return self.source.members()

    def payload(self) -> list[str]:
        """Paths of the payload files, as the manifest lists them."""
        return [entry.path for entry in self.manifest.files]

    def payload_entry(self, path: str) -> FileEntry | None:
        """The manifest's entry for payload file ``path`` (None: the manifest lists no such
        file, whether or not the archive holds one)."""
        return self._entries.get(path)

    def open(self, path: str) -> BinaryIO:
        """A seekable read-only file over one member (positional reads, no extraction)."""
        return self.source.open(self._member(path))

    def read(self, path: str) -> bytes:
        return self.source.read(self._member(path))

    def span(self, path: str) -> Span | None:
        """Where the member's bytes lie in a local file, for ``numpy.memmap`` (None: compressed)."""
        return self.source.span(self._member(path))

    def _member(self, path: str) -> str:
        if path not in self.source.members():
            raise ArchiveError("TA-E305", path, f"no such member in {self.location}")
        return path

    def catalog_path(self) -> Path:
        """A local path of ``catalog.db``, verified against the manifest. Open it read-only.

        A directory archive's own file; for a ZIP, a verified copy in :func:`cache_root`.
        """
        if self._catalog is None:
            expected = self.manifest.catalog
            if isinstance(self.source, DirectorySource):
                path = self.source.location / CATALOG_NAME
                version = verdicts.version_of(path)
                if verdicts.known_sha256(version) != expected.sha256:
                    try:
                        _verify(self.source.open(CATALOG_NAME), expected, None, "TA-E309")
                    except ArchiveError as err:
                        sealing = self.source.location / FETCH_WORK_DIR / "sealing.json"
                        if not sealing.is_file():
                            raise
                        hint = (
                            f"A `{self.fetch_command()}` was stopped while it sealed: run it again."
                        )
                        found = err.problem
                        raise ArchiveError(found.code, found.path, found.message, hint) from None
                    verdicts.remember_sha256(path, version, expected.sha256)
            else:
                path = cache_root() / "catalogs" / f"{expected.sha256}.db"
                if not path.is_file():
                    self.source.prefetch([CATALOG_NAME])  # one request for a remote archive
                self.copy_verified(expected, path, "TA-E309", remember=True)
            self._catalog = path
        return self._catalog

    def node_count(self) -> int:
        """How many nodes the catalog holds below its root (Tiled's root row, key ``""``
        and no parent, not counted)."""
        uri = f"{self.catalog_path().resolve().as_uri()}?mode=ro&immutable=1"
        return catalog_db.node_count(uri)

    def asset_member(self, data_uri: str) -> str:
        """The member (file or folder) an asset URI of the catalog names: archive form, or
        relocated form inside this directory archive (or inside the folder it was relocated in
        before it was moved, :meth:`relocation_folder`); TA-E503/TA-E504 for anything else."""
        members = self.source.members()
        if data_uri in self._entries and data_uri in members:
            return data_uri  # a payload file: its path was checked with the manifest
        # A remote archive has no place on this machine to be relocated to: archive form only.
        if self.is_remote:
            member = data_uri
        elif is_relocated(data_uri):
            member = member_from_relocated(data_uri, self.relocation_folder())
        else:
            member = member_from_data_uri(data_uri)
        if member not in members and not any(m.startswith(member + "/") for m in members):
            raise ArchiveError("TA-E504", data_uri, "asset points at nothing in the archive")
        return member

    def relocation_folder(self) -> PurePath | None:
        """The folder the catalog's relocated asset URIs are read relative to (spec 3.1).

        For a directory archive, its own resolved location, or, when it was moved or copied
        after being relocated, the folder it was relocated in: the URIs then name
        ``FOLDER/data/P`` and each is read as this archive's own member ``data/P`` (which the
        manifest must list), never at the path it names. A local ZIP's own location (relocated
        URIs are TA-E503 there); None for a remote archive, read in archive form only.
        """
        if self.is_remote:
            return None
        if self._relocation_folder is None:
            own = Path(self.location).resolve()
            if not self.is_directory:
                self._relocation_folder = own
            else:
                listed = sorted(self._entries)

                def holds(path: str) -> bool:  # a listed file, or a folder of listed files
                    at = bisect_left(listed, path)
                    if at < len(listed) and listed[at] == path:
                        return True
                    at = bisect_left(listed, path + "/")
                    return at < len(listed) and listed[at].startswith(path + "/")

                self._relocation_folder = relocation_folder(self._asset_uris(), own, holds)
        return self._relocation_folder

    def _asset_uris(self) -> list[str]:
        """Every asset URI of the catalog (bytes that are not UTF-8 replaced: such a URI names
        no member, and the row checks report it)."""
        uri = f"{self.catalog_path().resolve().as_uri()}?mode=ro&immutable=1"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
                return [row[0] for row in conn.execute("SELECT data_uri FROM assets")]
        except sqlite3.DatabaseError as err:
            code = "TA-E502" if "no such" in str(err) else "TA-E500"
            raise ArchiveError(code, CATALOG_NAME, f"SQLite: {reason(err)}") from None

    @contextlib.contextmanager
    def _catalog_connection(self) -> Iterator[sqlite3.Connection]:
        """The verified catalog, read-only (an error reading it is TA-E500, or TA-E502 for a
        missing table or column of Tiled's schema)."""
        from sqlalchemy.exc import DatabaseError

        uri = f"{self.catalog_path().resolve().as_uri()}?mode=ro&immutable=1"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                yield conn
        except (sqlite3.DatabaseError, DatabaseError, UnicodeDecodeError) as err:
            code = "TA-E502" if "no such" in str(err) else "TA-E500"
            raise ArchiveError(code, CATALOG_NAME, f"SQLite: {reason(err)}") from None

    def check_catalog(self) -> None:
        """Check the catalog as Tiled will load it, raising the first problem: its integrity
        and schema (TA-E500..TA-E502), every row Tiled reads (TA-E506), every asset URI
        (TA-E503/TA-E504), every data source's parameters (TA-E508) and the nesting of its
        JSON (TA-E509). Once per catalog: a clean verdict is kept under the catalog's SHA-256,
        the manifest's and, for a directory archive, its location (relocated URIs are read
        relative to it), and not made again while those and the rules are unchanged."""
        if self._catalog_checked:
            return
        identity = f"{self.manifest.catalog.sha256}\n{self._manifest_sha256}\n"
        if self.is_directory:
            identity += str(Path(self.location).resolve())
        key = hashlib.sha256(identity.encode()).hexdigest()
        if verdicts.kept("catalog", key) is None:
            with self._catalog_connection() as conn:
                conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
                check = [row[0] for row in conn.execute("PRAGMA quick_check(1)")]
                if check != ["ok"]:
                    raise ArchiveError("TA-E500", CATALOG_NAME, f"quick_check: {check[0]}")
                revisions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
                stamp = stamp_problem(revisions)
                if stamp is not None:
                    raise ArchiveError(stamp.code, stamp.path, stamp.message)
                _raise_first(schema_problems(conn)[1])
                _raise_first(catalog_problems(conn))
                # The rows Tiled reads are UTF-8 now: decoded in C, not by the lambda above.
                conn.text_factory = str
                rows = self._every_row(conn)
            _raise_first([problem for row in rows for problem in parameter_problems(row)])
            verdicts.keep("catalog", key, True)
        self._catalog_checked = True

    def data_source(self, source_id: int) -> DataSourceRow | None:
        """Data source ``source_id`` (None: there is none), its assets as members, read when
        first asked for (after :meth:`check_catalog`)."""
        if self._data_sources is not None:
            return self._data_sources.get(source_id)
        if source_id not in self._rows:
            self.check_catalog()
            with self._catalog_connection() as conn:
                found = data_source_rows(conn, self.asset_member, only=source_id)
            self._rows[source_id] = found[0] if found else None
        return self._rows[source_id]

    def data_sources(self) -> dict[int, DataSourceRow]:
        """Every data source of the catalog by id, their assets as members (after
        :meth:`check_catalog`, which raises the first problem)."""
        if self._data_sources is None:
            self.check_catalog()
            with self._catalog_connection() as conn:
                self._data_sources = {row.id: row for row in self._every_row(conn)}
        return self._data_sources

    def _every_row(self, conn: sqlite3.Connection) -> list[DataSourceRow]:
        """Every data source's row, its assets as members: every asset URI of the catalog
        resolved once (TA-E503/TA-E504 for the first that names no member), whether or not a
        data source names it."""
        members = {uri: self.asset_member(uri) for (uri,) in conn.execute(_ASSET_URIS)}
        return data_source_rows(conn, members.get)

    def inspection(self, source_id: int) -> Inspection:
        """What data source ``source_id``'s files hold and cost to read (checked once per open
        archive, spec 3.3); raises the first rule they break (TA-E600, TA-E601, TA-E602)."""
        found = self._inspections.get(source_id)
        if found is None:
            row = self.data_source(source_id)
            found = Inspection() if row is None else inspect_data_source(self.source, row)
            self._inspections[source_id] = found
        _raise_first(found.problems)
        return found

    def check_data_files(self) -> None:
        """Inspect every data source's files now (raising the first problem), as before
        handing the archive to software that has no such checks (stock Tiled)."""
        for source_id in self.data_sources():
            self.inspection(source_id)

    def local_copy(self, path: str) -> Path:
        """A local file (or folder) holding payload file (or folder) ``path``, for readers that
        need a real file: a directory archive's own; for a ZIP, a copy in :func:`cache_root`
        (``members/<sha256>/<name>``), each file verified against the manifest (TA-E308) once
        per open archive, and copied only when the cache lacks it or holds other bytes."""
        if path in self._copies:
            return self._copies[path]
        entries = self._folder(path)  # TA-E305 unless the manifest lists it
        if isinstance(self.source, LazySource):
            self.source.ensure_below(path)  # a library opens it by name: every file here
        if isinstance(self.source, DirectorySource):
            target = self.source.location / path
        else:
            if len(entries) == 1 and entries[0].path == path:
                key = entries[0].sha256
            else:
                listing = "\n".join(f"{e.path[len(path) :]} {e.sha256}" for e in entries)
                key = hashlib.sha256(listing.encode()).hexdigest()
            target = cache_root() / "members" / key / PurePosixPath(path).name
            for entry in entries:
                inside = entry.path[len(path) + 1 :]  # "" for the file itself
                self.copy_verified(entry, target / inside if inside else target, remember=True)
        self._copies[path] = target
        return target

    def verify(self, entry: FileEntry) -> None:
        """Check the bytes of the manifest's payload file ``entry`` against it (TA-E305,
        TA-E308), once per open archive: before a file is handed out whole as the archive's."""
        if entry.path in self._verified:
            return
        with self._verifying_lock:
            lock = self._verifying.setdefault(entry.path, threading.Lock())
        with lock:  # concurrent first requests for one file wait for one hash, not hash it all
            if entry.path not in self._verified:
                if isinstance(self.source, LazySource):
                    self.source.ensure(entry.path)  # fetched whole and checked
                if entry.sha256 is not None:
                    _verify(self.open(entry.path), entry, None, "TA-E308")
                self._verified.add(entry.path)

    def _folder(self, path: str) -> list[FileEntry]:
        """The manifest's files at ``path`` or below it (TA-E305 when there are none)."""
        entries = [
            e for e in self.manifest.files if e.path == path or e.path.startswith(path + "/")
        ]
        if not entries:
            raise ArchiveError(
                "TA-E305", path, f"no such payload file or folder in {self.location}"
            )
        return entries

    def copy_verified(
        self,
        entry: FileEntry,
        target: Path,
        code: str = "TA-E308",
        *,
        replace: bool = True,
        remember: bool = False,
    ) -> bool:
        """Make ``target`` a read-only copy of member ``entry.path``, checked against the
        entry's SHA-256; return whether this call wrote it. A copy already there is hashed and
        kept when it matches; one with other bytes is made again (a cache file altered since is
        never used) or, without ``replace``, is TA-E921 and left as it is. No partial file
        stays behind, whatever stops the copy. With ``remember`` (a copy in the user cache,
        checked again on every use), the copy's digest is kept under its version
        (:mod:`tiled_archive.files.verdicts`): it is hashed again only once changed."""
        if target.is_file():
            version = verdicts.version_of(target) if remember else None
            if verdicts.known_sha256(version) == entry.sha256:
                return False  # hashed before, unchanged since
            if sha256_of(target) == entry.sha256:
                verdicts.remember_sha256(target, version, entry.sha256)
                return False
        if target.exists() and not replace:
            raise ArchiveError("TA-E921", str(target), f"holds other bytes than {entry.path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Named with its owner: should this process be killed mid-copy, a later run (load's
        # sweep of the folders it copies into) removes the partial file.
        partial = target.parent / partial_name(target)
        try:
            with open(partial, "xb") as sink:
                _verify(self.source.open(entry.path), entry, sink, code)
        except BaseException:  # closing can fail too (a full disk flushing the last bytes)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        os.chmod(sink.name, 0o444)
        try:
            if replace:
                os.replace(sink.name, target)
            else:  # never over a file that appeared meanwhile
                os.link(sink.name, target)
        except FileExistsError:
            return self.copy_verified(entry, target, code, replace=False, remember=remember)
        finally:  # moved by os.replace, else a name of its own to drop
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sink.name)
        if remember:
            verdicts.remember_sha256(target, verdicts.version_of(target), entry.sha256)
        return True

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Archive {self.location} format {self.manifest.format_version}>"


def _into_blob_cache(
    origin: str,
    file: Absent,
    path: Path,
    sha256: str,
    crc32: int,
    validators: tuple[str | None, str | None],
) -> None:
    """A file a lazy archive fetched, indexed in the download cache by its URL: a later
    download of it from the same server finds it there (after asking whether it changed)."""
    cache = BlobCache(default_cache_dir(), max_bytes=None)
    try:
        cache.adopt(
            url_key(origin + file.url), path, file.size, sha256, crc32, Validators(*validators)
        )
    finally:
        cache.close()


#: Every asset URI of a catalog.
_ASSET_URIS = "SELECT data_uri FROM assets"


def _raise_first(problems: list[Problem]) -> None:
    errors = [p for p in problems if p.severity.value == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more; run `tiled-archive validate`)" if errors[1:] else ""
        raise ArchiveError(errors[0].code, errors[0].path, errors[0].message + more)


def _verify(source: BinaryIO, entry: FileEntry, sink: BinaryIO | None, code: str) -> None:
    digest = hashlib.sha256()
    with source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
    if digest.hexdigest() != entry.sha256:
        raise ArchiveError(code, entry.path, "SHA-256 differs from the manifest")


def open_archive(
    path: str | Path, storage_options: Mapping | None = None, fetch: FetchOptions | None = None
) -> Archive:
    """Open a directory or ZIP archive, or a ZIP at an http(s) URL, read-only (raises
    ArchiveError with the rule broken). ``storage_options``: for a URL (headers, timeout).
    ``fetch``: for an incomplete (lazy) archive, whether and how it fetches absent files."""
    return Archive(open_source(path, storage_options), fetch)


__all__ = ["Archive", "ArchiveWarning", "FetchOptions", "open_archive"]
