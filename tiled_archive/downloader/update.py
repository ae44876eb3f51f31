"""Bring a downloaded archive up to date with its server: ``tiled_archive.update(path)``.

The archive's ``provenance`` names the server, the node and the searches it was downloaded
with; the node is read again from there, as a fresh download reads it, and the new state is
compared with the archive node by node (:mod:`tiled_archive.reader.diff`). No file is fetched
that the archive already holds: the archive itself is a source of payload files
(:mod:`.previous`), each taken from it when the server still names the same content (the
validators its fetch record kept, or the digest the server reports). The new archive is
written beside the old one and put in its place in one step (a ZIP by a rename, a directory
by an exchange of the two folders where the system has one), so an interruption at any point
leaves the previous archive as it was. The manifest's ``history`` says what each update did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from rich.filesize import decimal

from ..files.faults import crash_point
from ..reader import Archive, FetchOptions, open_archive
from ..reader.diff import Differences, FileState, archive_state, catalog_state, compare
from ..reader.fetching import is_trusted
from ..rules.names import MANIFEST_NAME
from ..rules.problems import ArchiveError, clip
from ..writer import recover_beside
from . import (
    DEFAULT_CACHE_MAX_BYTES,
    DEFAULT_RETRIES,
    DEFAULT_WORKERS,
    Settings,
    Staged,
    _download_archive,
    open_node,
)
from .previous import Previous

#: The manifest fields a download writes (an update writes them anew).
DOWNLOAD_FIELDS = frozenset({"provenance", "root", "fallbacks", "fetch", "history"})

#: The searches an archive's provenance may name (Tiled's query classes, by name).
QUERY_TYPES = (
    "Comparison",
    "Contains",
    "Eq",
    "FullText",
    "In",
    "KeyLookup",
    "KeyPresent",
    "Like",
    "NotEq",
    "NotIn",
    "Regex",
    "SpecsQuery",
    "StructureFamilyQuery",
)


@dataclasses.dataclass(frozen=True)
class UpdateResult:
    """What an update found and did: the ``differences`` from the archive as it was to the
    server's node now; bytes fetched from the server and bytes taken from the archive (or the
    download cache) instead; whether the archive was rewritten (not when nothing changed,
    nor in a dry run); and the ``history`` entry recorded."""

    path: Path
    differences: Differences
    fetched_bytes: int
    reused_bytes: int
    written: bool
    dry_run: bool
    history: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.path),
            "dry_run": self.dry_run,
            "written": self.written,
            "fetched_bytes": self.fetched_bytes,
            "reused_bytes": self.reused_bytes,
            **self.differences.to_json(),
        }

    def __str__(self) -> str:
        state = "would change" if self.dry_run else "updated" if self.written else "up to date"
        if self.differences.same and not self.written:
            state = "up to date"
        lines = [
            f"{self.path}: {state}: {self.differences.summary()}; "
            f"{decimal(self.fetched_bytes)} fetched, {decimal(self.reused_bytes)} reused",
            *self.differences.lines(),
        ]
        return "\n".join(lines)


def update(
    path: str | Path,
    *,
    api_key: str | None = None,
    dry_run: bool = False,
    workers: int = DEFAULT_WORKERS,
    quiet: bool = True,
    cache_dir: str | Path | None = None,
    retries: int = DEFAULT_RETRIES,
) -> UpdateResult:
    """Bring the archive at ``path`` (a ZIP or a directory, complete or lazy, made by
    :func:`tiled_archive.download`) up to date with the server node it came from, and say
    what changed: an :class:`UpdateResult` (``str()`` of it is the summary the CLI prints).

    The server is asked again for the node and searches the manifest's ``provenance`` names
    (with ``api_key``, else ``TILED_API_KEY`` as Tiled's client reads it; the key is never written
    into the archive). Nodes added, removed and changed (metadata, specs, structure, data)
    are found; only files the server no longer names as the archive holds them are fetched
    (a lazy archive fetches none: a changed file becomes absent, fetched when read), and the
    archive is rewritten beside itself and put in place in one step, its manifest's
    ``history`` gaining an entry. Nothing is written when no node changed and the server
    sends the validators the archive kept, nor with ``dry_run`` (which fetches no file;
    nodes only the data API reads are read again to be compared).

    Raises ArchiveError: TA-E915 (the archive records no server to update from, or a search
    that cannot be asked again), TA-E911 and TA-E914 (the server cannot be reached, or wants
    a key), TA-E910 (nodes that cannot be fetched); and any code opening the archive gives.
    On any error the archive is left as it was.
    """
    # The archive itself, not a symbolic link to it (replaced, the link would become a copy).
    path = Path(os.path.realpath(path))
    if not dry_run:
        recover_beside(path)  # an earlier update killed part-way: its debris, its old archive
    if not path.exists():
        raise ArchiveError("TA-E900", str(path), "no such archive")
    if path.is_dir() == (path.suffix.lower() == ".zip"):
        form = "a directory" if path.is_dir() else "a ZIP"
        raise ArchiveError(
            "TA-E915",
            str(path),
            f"{form} named {path.name!r}: its new state would be written in the other form",
            "Rename it: a ZIP archive's name ends in .zip, a directory archive's does not.",
        )
    with open_archive(path, fetch=FetchOptions(fetch=False, offline=True)) as archive:
        provenance = _provenance(archive)
        trusted = is_trusted(path, provenance["server"])
        source = _reconnect(provenance, api_key, environment_key=trusted)
        # A lazy archive (files whose digest it has never known) stays lazy; a complete one
        # with a file gone missing is brought back complete.
        lazy = archive.is_lazy and any(entry.sha256 is None for entry in archive.manifest.files)
        before = archive_state(archive)
        previous_digest = hashlib.sha256(archive.source.read(MANIFEST_NAME)).hexdigest()
        old_record = archive.manifest.fetch.to_json() if archive.manifest.fetch else None
        found: dict[str, Any] = {}

        def before_write(staged: Staged) -> bool:
            differences = compare(before, _staged_state(staged))
            history = archive.manifest.extra.get("history")
            kept = history if isinstance(history, list) else []
            entry = _history_entry(staged, differences, previous_digest, kept)
            found.update(differences=differences, entry=entry)
            crash_point("update:compared")
            found["write"] = not dry_run and (
                not differences.same or staged.fields.get("fetch") != old_record
            )
            if found["write"]:
                staged.fields["history"] = [*kept, entry]
                # Fields of the manifest a download does not make (a newer minor version's,
                # or a user's own) are kept; those it makes are today's.
                for name, value in archive.manifest.extra.items():
                    if name not in DOWNLOAD_FIELDS:
                        staged.fields.setdefault(name, value)
            return found["write"]

        result = _download_archive(
            source,
            path,
            Settings(workers, quiet, cache_dir, DEFAULT_CACHE_MAX_BYTES, retries),
            force=True,
            streamed=not (lazy or dry_run),
            lazy=lazy or dry_run,
            probe=lazy or dry_run,
            previous=Previous(archive),
            before_write=before_write,
        )
    written = found["write"]
    return UpdateResult(
        path,
        found["differences"],
        result.fetched_bytes,
        result.reused_bytes,
        written,
        dry_run,
        found["entry"] if written else None,
    )


def _provenance(archive: Archive) -> dict[str, Any]:
    """The archive's ``provenance``, checked to name a server and a node (TA-E915)."""
    provenance = archive.manifest.extra.get("provenance")
    if (
        not isinstance(provenance, dict)
        or not isinstance(provenance.get("server"), str)
        or not isinstance(provenance.get("node"), str)
        or not isinstance(provenance.get("queries", []), list)
    ):
        raise ArchiveError(
            "TA-E915",
            str(archive.location),
            "its manifest records no server and node to update from (it was not made by a "
            "download)",
        )
    try:
        server = httpx.URL(provenance["server"])
    except (httpx.InvalidURL, TypeError, ValueError):
        server = None
    if (
        server is None
        or server.scheme not in ("http", "https")
        or not server.host
        or server.userinfo
        or not provenance["server"].isprintable()
    ):
        raise ArchiveError(
            "TA-E915",
            MANIFEST_NAME,
            f"its provenance names the server {clip(provenance['server'], 200)!r}, not an "
            "http(s) URL with a host and no credentials",
        )
    return provenance


def _reconnect(provenance: Mapping[str, Any], api_key: str | None, *, environment_key: bool) -> Any:
    """The server's node (a Tiled client) the provenance names, its searches applied. The
    key in ``TILED_API_KEY`` is sent only with ``environment_key`` (an archive this user's
    download made): an archive from elsewhere names a server of its maker's choosing, which
    must not receive this user's key unless the user gives it (``api_key``)."""
    from tiled import queries

    searches = []
    for record in provenance.get("queries", []):
        kind = record.get("type") if isinstance(record, dict) else None
        if kind not in QUERY_TYPES:
            raise ArchiveError(
                "TA-E915",
                MANIFEST_NAME,
                f"its provenance names a search of type {kind!r}, which cannot be asked again",
            )
        fields = {key: value for key, value in record.items() if key != "type"}
        try:
            searches.append(getattr(queries, kind)(**fields))
        except (TypeError, ValueError) as err:
            raise ArchiveError(
                "TA-E915", MANIFEST_NAME, f"its provenance's {kind} search is not valid: {err}"
            ) from None
    server = provenance["server"]
    withheld = api_key is None and not environment_key and os.environ.get(ENV_KEY)
    with _without_environment_key() if withheld else contextlib.nullcontext():
        try:
            node = open_node(server, provenance["node"], api_key=api_key)
        except ArchiveError as err:
            if err.problem.code != "TA-E914" or not withheld:
                raise
            raise ArchiveError(
                "TA-E914",
                server,
                "the server requires an API key; TILED_API_KEY was not sent, because this "
                "archive was not downloaded here and names the server itself",
                f"If you trust {server}, pass the key: --api-key (api_key=).",
            ) from None
    for query in searches:
        node = node.search(query)
    return node


#: The environment variable Tiled's client reads an API key from.
ENV_KEY = "TILED_API_KEY"


@contextlib.contextmanager
def _without_environment_key() -> Iterator[None]:
    """``TILED_API_KEY`` out of the environment while Tiled's client is made (it reads the
    variable then, and only then)."""
    key = os.environ.pop(ENV_KEY, None)
    try:
        yield
    finally:
        if key is not None:
            os.environ[ENV_KEY] = key


def _staged_state(staged: Staged) -> dict:
    """The staged archive's nodes, as :func:`archive_state` reads a written one."""
    run = staged.run
    record = staged.fields.get("fetch", {}).get("files", {})

    def state(path: str, size: int, sha256: str | None) -> FileState:
        item = record.get(path, {})
        return FileState(size, sha256, item.get("etag"), item.get("last_modified"))

    files = {member: state(member, blob.size, blob.sha256) for member, blob in run.ready.items()}
    for member, file in run.reused.items():
        files[member] = state(member, file.size, file.expected_sha256)
    for entry in staged.absent:
        files[entry.path] = state(entry.path, entry.size, entry.sha256)
    return catalog_state(staged.catalog, staged.member_of, files, staged.fields.get("root") or {})


def _history_entry(
    staged: Staged, differences: Differences, previous: str, history: list[Any]
) -> dict[str, Any]:
    """The manifest's record of one update (spec 4.2), dated now, or at the latest earlier
    entry's time when that is later (another machine's clock): entries stay in order."""
    provenance = staged.fields.get("provenance", {})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    times = [e["updated"] for e in history if isinstance(e, dict) and "updated" in e]
    return {
        "updated": max([now, *times]),
        "tiled_version": provenance.get("tiled_version", ""),
        "previous_manifest_sha256": previous,
        "added": len(differences.added),
        "removed": len(differences.removed),
        "changed": len(differences.changed),
        "fetched_bytes": staged.run.fetched_bytes,
    }
