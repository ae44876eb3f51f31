"""The manifest model (spec 4): :class:`FileEntry`, :class:`Manifest`, parsing and the
canonical JSON form, and which format versions a reader accepts.

Pure: nothing here touches an archive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class FileEntry:
    """One file of the archive: its path, size in bytes and SHA-256 (lowercase hex)."""

    path: str
    size: int
    sha256: str


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
        }

    def dumps(self) -> bytes:
        """Canonical bytes: sorted keys, two-space indent, UTF-8, final newline."""
        return canonical_manifest(self.to_json())

    @classmethod
    def loads(cls, raw: bytes) -> Manifest:
        """Parse and check manifest bytes; raise ArchiveError with the first rule broken."""
        problems, manifest = parse_manifest(raw)
        errors = [p for p in problems if p.severity is Severity.ERROR]
        if errors:
            raise ArchiveError(errors[0].code, errors[0].path, errors[0].message)
        assert manifest is not None
        return manifest


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
    files = tuple(FileEntry(**entry) for entry in document["files"])
    seen: set[str] = set()
    for entry in files:
        if entry.path in seen:
            problems.append(Problem("TA-E304", entry.path, "listed twice in the manifest"))
        seen.add(entry.path)
        if not is_payload_path(entry.path):
            problems.append(Problem("TA-E303", entry.path, "manifest path is not below data/"))
        problems.extend(path_problems(entry.path))
    known = {
        "format",
        "format_version",
        "producer",
        "created",
        "tiled_schema_revision",
        "catalog",
        "files",
    }
    manifest = Manifest(
        catalog=FileEntry(**document["catalog"]),
        files=files,
        created=document["created"],
        tiled_schema_revision=document["tiled_schema_revision"],
        producer=document["producer"],
        format_version=document["format_version"],
        extra={k: v for k, v in document.items() if k not in known},
    )
    return problems, manifest
