"""The manifest model (spec 4): :class:`FileEntry`, :class:`Manifest`, parsing and the
canonical JSON form, and which format versions a reader accepts.

Pure: nothing here touches an archive.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .codes import Severity
from .names import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
)
from .paths import (
    is_payload_path,
    path_problems,
)
from .problems import ArchiveError, Problem
from .schemas import (
    load_json,
    manifest_check,
)

# -- The manifest ---------------------------------------------------------------------------

#: The manifest's top-level fields this format defines; any other is kept in ``extra``.
KNOWN_FIELDS = frozenset(
    {
        "format",
        "format_version",
        "producer",
        "created",
        "tiled_schema_revision",
        "catalog",
        "files",
        "fetch",
    }
)


@dataclass(frozen=True)
class FileEntry:
    """One file of the archive: its path, size in bytes and SHA-256 (lowercase hex; None only
    for a file of an incomplete archive whose digest is not known yet, spec 4.1)."""

    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class FetchSource:
    """Where one payload file of an incomplete archive comes from (spec 4.1): ``url``, relative
    to the origin, and the validators the origin gave for it (None: not recorded)."""

    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchRecord:
    """The manifest's ``fetch``: the origin (an http(s) URL ending in ``/``) and, by archive
    path, where each file that may be absent comes from."""

    origin: str
    files: Mapping[str, FetchSource]

    def url(self, path: str) -> str:
        """The absolute URL of payload file ``path`` (a relative URL checked to stay below the
        origin, :func:`fetch_problems`)."""
        return self.origin + self.files[path].url

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FetchRecord:
        """The record of a ``fetch`` object valid against the manifest schema."""
        files = {
            path: FetchSource(item["url"], item.get("etag"), item.get("last_modified"))
            for path, item in document["files"].items()
        }
        return cls(document["origin"], files)

    def to_json(self) -> dict[str, Any]:
        files = {}
        for path, source in self.files.items():
            item = {"url": source.url}
            if source.etag is not None:
                item["etag"] = source.etag
            if source.last_modified is not None:
                item["last_modified"] = source.last_modified
            files[path] = item
        return {"origin": self.origin, "files": files}


@dataclass(frozen=True)
class Manifest:
    """The content of ``tiled-archive.json``."""

    catalog: FileEntry
    files: tuple[FileEntry, ...]
    created: str
    tiled_schema_revision: str
    producer: dict[str, str] = field(default_factory=lambda: {"name": FORMAT_NAME})
    format_version: str = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    #: The incomplete-archive record (spec 4.1); None for an archive that holds every file.
    fetch: FetchRecord | None = None

    @property
    def payload_oxum(self) -> str:
        """BagIt's ``octets.count`` of the payload."""
        return f"{sum(f.size for f in self.files)}.{len(self.files)}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "producer": dict(self.producer),
            "created": self.created,
            "tiled_schema_revision": self.tiled_schema_revision,
            "catalog": _entry_json(self.catalog),
            "files": [_entry_json(f) for f in sorted(self.files, key=lambda f: f.path)],
        } | ({"fetch": self.fetch.to_json()} if self.fetch is not None else {})

    def dumps(self) -> bytes:
        """Canonical bytes: sorted keys, two-space indent, UTF-8, final newline."""
        return canonical_manifest(self.to_json())

    @classmethod
    def from_json(
        cls,
        document: Mapping[str, Any],
        files: Sequence[FileEntry],
        fetch: FetchRecord | None = None,
    ) -> Manifest:
        """The model of a manifest document valid against the schema, its ``files`` given."""
        return cls(
            catalog=FileEntry(**document["catalog"]),
            files=files,  # type: ignore[arg-type]  # a tuple, or a ListedFiles read later
            created=document["created"],
            tiled_schema_revision=document["tiled_schema_revision"],
            producer=document["producer"],
            format_version=document["format_version"],
            extra={k: v for k, v in document.items() if k not in KNOWN_FIELDS},
            fetch=fetch,
        )

    def summary(self) -> dict[str, Any]:
        """The manifest's document without its file list: with the bytes it was read from,
        all :meth:`from_summary` needs."""
        document = self.to_json()
        del document["files"]
        return document

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], raw: bytes) -> Manifest:
        """The manifest of bytes ``raw`` already judged clean, whose :meth:`summary` was kept:
        its file list is decoded from ``raw`` when first used (a manifest lists every payload
        file, so opening an archive of 100,000 files need not build 100,000 entries)."""
        fetch = FetchRecord.from_json(summary["fetch"]) if "fetch" in summary else None
        return cls.from_json(summary, ListedFiles(raw), fetch)

    @classmethod
    def loads(cls, raw: bytes) -> Manifest:
        """Parse and check manifest bytes; raise ArchiveError with the first rule broken."""
        problems, manifest = parse_manifest(raw)
        errors = [p for p in problems if p.severity is Severity.ERROR]
        if errors:
            raise ArchiveError(errors[0].code, errors[0].path, errors[0].message)
        assert manifest is not None
        return manifest


class ListedFiles(Sequence[FileEntry]):
    """A manifest's ``files``, decoded from the manifest's bytes (already judged clean) on
    first use; then as the tuple :func:`parse_manifest` builds."""

    def __init__(self, raw: bytes):
        self._raw: bytes | None = raw
        self._files: tuple[FileEntry, ...] = ()

    def _decoded(self) -> tuple[FileEntry, ...]:
        if self._raw is not None:
            listed = json.loads(self._raw)["files"]  # judged clean: no depth walk again
            self._files = tuple(FileEntry(e["path"], e["size"], e.get("sha256")) for e in listed)
            self._raw = None
        return self._files

    def __len__(self) -> int:
        return len(self._decoded())

    def __getitem__(self, index):  # type: ignore[override]  # int or slice, as a tuple's
        return self._decoded()[index]

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListedFiles):
            other = other._decoded()
        return self._decoded() == other

    def __hash__(self) -> int:
        return hash(self._decoded())

    def __repr__(self) -> str:
        return f"ListedFiles({self._decoded()!r})"


def canonical_manifest(document: dict[str, Any]) -> bytes:
    """A manifest document's canonical bytes (spec §4): keys sorted by code point at every
    level, two-space indent, `": "` after keys, UTF-8 with only what JSON must escape escaped,
    ``files`` sorted by path, and a final newline."""
    files = document.get("files")
    if isinstance(files, list) and all(isinstance(f, dict) for f in files):
        document = {**document, "files": sorted(files, key=lambda f: str(f.get("path")))}
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def canonical_problem(raw: bytes) -> Problem | None:
    """TA-W301 when manifest bytes that parse are not their canonical form."""
    try:
        document = load_json(raw)
    except ValueError:
        return None  # TA-E300
    if not isinstance(document, dict) or canonical_manifest(document) == raw:
        return None
    return Problem(
        "TA-W301", MANIFEST_NAME, "not in canonical form (spec section 4); readers accept it"
    )


def _entry_json(entry: FileEntry) -> dict[str, Any]:
    if entry.sha256 is None:
        return {"path": entry.path, "size": entry.size}
    return {"path": entry.path, "size": entry.size, "sha256": entry.sha256}


def version_problem(version: str) -> Problem | None:
    """What a reader of this format version says of an archive of ``version`` (TA-E302 or
    TA-W300, else None)."""
    major, minor = (int(part) for part in version.split("."))
    ours_major, ours_minor = (int(part) for part in FORMAT_VERSION.split("."))
    if major != ours_major:
        return Problem(
            "TA-E302", MANIFEST_NAME, f"format version {version}, reader supports {ours_major}.x"
        )
    if minor > ours_minor:
        return Problem(
            "TA-W300", MANIFEST_NAME, f"format version {version} is newer than {FORMAT_VERSION}"
        )
    return None


def parse_manifest(raw: bytes) -> tuple[list[Problem], Manifest | None]:
    """All problems of manifest bytes, and the model when it could be built."""
    try:
        document = load_json(raw)
    except ValueError as err:
        return [Problem("TA-E300", MANIFEST_NAME, f"not UTF-8 JSON: {err}")], None
    schema_errors = manifest_check().errors(document)
    if schema_errors:
        return [
            Problem(
                "TA-E301", MANIFEST_NAME, f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
            )
            for e in schema_errors
        ], None
    problems = []
    version = version_problem(document["format_version"])
    if version:
        problems.append(version)
        if version.severity is Severity.ERROR:
            return problems, None
    files = tuple(
        FileEntry(entry["path"], entry["size"], entry.get("sha256")) for entry in document["files"]
    )
    seen: set[str] = set()
    for entry in files:
        if entry.path in seen:
            problems.append(Problem("TA-E304", entry.path, "listed twice in the manifest"))
        seen.add(entry.path)
        if not is_payload_path(entry.path):
            problems.append(Problem("TA-E303", entry.path, "manifest path is not below data/"))
        problems.extend(path_problems(entry.path))
    fetch = FetchRecord.from_json(document["fetch"]) if "fetch" in document else None
    if fetch is not None:
        problems.extend(fetch_problems(fetch, seen))
    problems.extend(history_problems(document.get("history", [])))
    problems.extend(
        Problem("TA-E310", entry.path, "no sha256, and not a file the fetch record lists")
        for entry in files
        if entry.sha256 is None and (fetch is None or entry.path not in fetch.files)
    )
    return problems, Manifest.from_json(document, files, fetch)


def history_problems(history: list[dict[str, Any]]) -> list[Problem]:
    """TA-W311 for each entry of the manifest's ``history`` (schema-checked) recorded as
    earlier than the one before it (spec 4.2: informative, so a warning)."""
    return [
        Problem(
            "TA-W311",
            MANIFEST_NAME,
            f"history entry {number} was updated {entry['updated']}, before entry "
            f"{number - 1} ({earlier['updated']})",
        )
        for number, (earlier, entry) in enumerate(itertools.pairwise(history), start=1)
        if entry["updated"] < earlier["updated"]
    ]


#: What a fetch URL may hold: RFC 3986's unreserved and sub-delimiter characters, ``:``, ``@``,
#: ``/``, ``?`` and percent escapes; no fragment, no space, nothing a server could read as
#: another request.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def fetch_problems(fetch: FetchRecord, listed: set[str]) -> list[Problem]:
    """TA-E310 for every way the fetch record could make a reader contact anything but its
    origin, or name a file the manifest does not list (spec 4.1)."""
    problems = []
    origin = urlsplit(fetch.origin)
    if (
        origin.scheme not in ("http", "https")
        or not origin.hostname
        or origin.username is not None
        or origin.password is not None
        or origin.query
        or origin.fragment
        or not origin.path.endswith("/")
        or not _URL_CHARACTERS.fullmatch(
            fetch.origin.split("://", 1)[-1].replace("[", "", 1).replace("]", "", 1)
        )  # an IPv6 host is in brackets
    ):
        problems.append(
            Problem(
                "TA-E310",
                MANIFEST_NAME,
                f"fetch origin {fetch.origin!r} is not an http(s) URL with a host, no "
                "credentials, query or fragment, ending in /",
            )
        )
    for path, source in fetch.files.items():
        if path not in listed:
            problems.append(Problem("TA-E310", path, "in the fetch record, not in files"))
        url = source.url
        segments = url.split("?", 1)[0].split("/")
        if (
            not _URL_CHARACTERS.fullmatch(url)
            or url.startswith("/")
            or _SCHEME.match(url.split("/", 1)[0])
            or "%2f" in url.split("?", 1)[0].lower()
            or "%5c" in url.split("?", 1)[0].lower()
            or {".", ".."} & set(segments)
            or any(s.lower().replace("%2e", ".") in (".", "..") for s in segments)
        ):
            problems.append(
                Problem(
                    "TA-E310", path, f"fetch URL {url!r} is not a relative URL below the origin"
                )
            )
        for name, value in (("etag", source.etag), ("last_modified", source.last_modified)):
            if value is not None and not _HEADER_VALUE.fullmatch(value):
                problems.append(
                    Problem("TA-E310", path, f"fetch {name} {value!r} is not visible ASCII")
                )
    return problems


#: What a validator may hold, sent back in a request header: visible ASCII and spaces.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
