"""Section 3: ``catalog.db``, opened by SQLite read-only and immutable (nothing is written
beside it): its integrity, schema and stamp, its asset URIs against the members and the
manifest, and (full mode) every row against Tiled's rules."""

from __future__ import annotations

import contextlib
import re
import shlex
import sqlite3
from bisect import bisect_left
from pathlib import Path, PurePath
from typing import Any

from ..rules.catalog_rows import (
    SERVED_TABLES,
    catalog_problems,
    data_source_rows,
    schema_problems,
    stamp_problem,
)
from ..rules.codes import Severity
from ..rules.manifest import FileEntry, Manifest
from ..rules.names import (
    CATALOG_NAME,
    DATA_DIR,
    MANIFEST_NAME,
    RELOCATED_SCHEMES,
    SQL_STORAGE_ASSETS,
)
from ..rules.paths import (
    is_payload_path,
    is_relocated,
    member_from_relocated,
    path_problems,
    relocation_folder,
)
from ..rules.problems import ArchiveError
from ..rules.schemas import tiled_rules
from .layout import folders_of

_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_VERSION = 2  # header bytes 18 and 19 (write and read version) of a WAL database
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class CatalogChecks:
    """Opening the catalog, on the run's state (:class:`~.checker.Checker`)."""

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
                _CatalogRules(self, conn, manifest).run()
        except sqlite3.DatabaseError as err:
            self.add("TA-E500", CATALOG_NAME, f"SQLite: {err}")
        except UnicodeDecodeError as err:
            # Python decodes SQLite's error messages strictly, and a damaged schema's names
            # end up in them.
            self.add("TA-E500", CATALOG_NAME, f"SQLite reports damage in undecodable text: {err}")


class _CatalogRules:
    """The rules of §3 on one open (read-only, immutable) catalog connection."""

    def __init__(self, checker: Any, conn: sqlite3.Connection, manifest: Manifest | None):
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
        payload = sorted({*checker.payload, *checker.absent})  # absent ones are named too
        file_assets: set[str] = set()
        folder_assets: set[str] = set()
        sql_assets = {row[0] for row in self._rows(SQL_STORAGE_ASSETS, "data_sources")}
        rows = self._rows(_ASSETS_SQL, "assets")
        self.folder = self._relocation_folder(
            [row[1] for row in rows], sorted(listed) if self.manifest is not None else payload
        )
        #: Assets read through the folder a moved archive was relocated in (TA-W503).
        self.moved_assets = 0
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
            elif member not in checker.present and member not in checker.absent:
                what = "a folder" if _holds_folder(payload, member) else "absent"
                self.add("TA-E504", uri, f"file asset, but {member} is {what}")
            else:
                file_assets.add(member)
                entry = listed.get(member)
                if entry is not None:
                    self._check_asset_entry(uri, size, hash_type, hash_content, entry)
        for path in payload:
            if path not in file_assets and not (
                folder_assets and any(folder in folder_assets for folder in folders_of(path))
            ):
                self.add("TA-W500", path, "not referenced by any asset")
        if self.moved_assets:
            self.add(
                "TA-W503",
                CATALOG_NAME,
                f"asset URIs point at {self.folder.as_posix().rstrip('/')}/{DATA_DIR}/ (relocated"
                " there, then moved or copied): stock `tiled serve catalog` would not find the"
                " files",
                f"Run `tiled-archive relocate {shlex.quote(str(checker.path))}` before serving"
                " it with stock `tiled serve catalog`.",
            )

    def _relocation_folder(self, uris: list[object], names: list[str]) -> PurePath | None:
        """The folder a directory archive's relocated URIs are read relative to: its own, or
        the one it was relocated in before a move (``names``: the sorted payload paths the
        archive holds, by its manifest); None for a ZIP, where none is allowed."""
        if self.checker.is_zip:
            return None
        self.own = Path(self.checker.path).resolve()

        def holds(path: str) -> bool:
            at = bisect_left(names, path)
            return (at < len(names) and names[at] == path) or _holds_folder(names, path)

        return relocation_folder(uris, self.own, holds)

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
                member = member_from_relocated(uri, self.folder)
                self.moved_assets += self.folder != self.own
                return member
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
            if entry.sha256 is not None:  # else not known yet (an incomplete archive, §4.1)
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
        done (``DataFileChecks._check_data_files``)."""
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


def _holds_folder(sorted_paths: list[str], folder: str) -> bool:
    """Whether some path of ``sorted_paths`` lies below ``folder``."""
    prefix = folder + "/"
    at = bisect_left(sorted_paths, prefix)
    return at < len(sorted_paths) and sorted_paths[at].startswith(prefix)
