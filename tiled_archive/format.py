"""Pure rules of the tiled-archive format, version 1.0: names, path rules, the manifest model.

Nothing here touches an archive; every other module asks this one what is allowed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePath
from typing import Any

from .codes import CODES, Severity

FORMAT_NAME = "tiled-archive"
FORMAT_VERSION = "1.1"
MIMETYPE = "application/x-tiled-archive"

# Top-level names, in the order the reference writer puts them in a ZIP.
MIMETYPE_NAME = "mimetype"
MANIFEST_NAME = "tiled-archive.json"
BAGIT_NAME = "bagit.txt"
BAG_INFO_NAME = "bag-info.txt"
PAYLOAD_MANIFEST_NAME = "manifest-sha256.txt"
TAG_MANIFEST_NAME = "tagmanifest-sha256.txt"
CATALOG_NAME = "catalog.db"
DATA_DIR = "data"
TAG_FILES = (MIMETYPE_NAME, MANIFEST_NAME, BAGIT_NAME, BAG_INFO_NAME, PAYLOAD_MANIFEST_NAME)
REQUIRED_FILES = (*TAG_FILES, TAG_MANIFEST_NAME, CATALOG_NAME)

# Member data of STORED ZIP members starts on this boundary so it can be memory-mapped.
ALIGNMENT = 4096
# Tiled catalog schema revisions (alembic) that format 1.0 allows in catalog.db.
TILED_SCHEMA_REVISIONS = ("917dbbcfc4b1",)
MAX_SEGMENT_BYTES = 255

# Characters a path may not hold: control characters; `?` and `#`, which Tiled's unescaped
# `file://` URIs cannot carry; `%` and `\`, which BagIt and `sha256sum` lines would escape.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\?#%]")


@dataclass(frozen=True)
class Problem:
    """One finding: a code from the table, the member or path at fault, a specific message,
    and a hint for this case when the code's own would not fit it (``fix`` gives either)."""

    code: str
    path: str | None
    message: str
    hint: str | None = field(default=None, compare=False)

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity

    @property
    def fix(self) -> str:
        return self.hint or CODES[self.code].hint

    def __str__(self) -> str:
        where = f" {clip(self.path)}:" if self.path else ""
        return f"{self.code}{where} {clip(self.message)} ({self.fix})"


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun`` for display: "1 error", "2 errors", "0 nodes"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


#: Characters a terminal acts on (C0 and C1 controls, DEL) or that reorder the text shown
#: around them (bidirectional overrides and isolates).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clip(text: str, limit: int = 300) -> str:
    """``text`` for display: unprintable characters as escapes (``\\x1b``: a name in an
    archive must not drive the terminal showing it), at most ``limit`` characters, the middle
    elided (paths and messages from an archive can be of any length)."""
    text = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


class ArchiveError(Exception):
    """An archive (or a request about one) breaks a rule of the format."""

    def __init__(self, code: str, path: str | None, message: str, hint: str | None = None):
        self.problem = Problem(code, path, message, hint)
        super().__init__(str(self.problem))

    @property
    def code(self) -> str:
        return self.problem.code


# -- Paths ----------------------------------------------------------------------------------


def path_problems(path: str) -> list[Problem]:
    """Check one archive path (``/``-separated, relative to the archive root) against the rules."""
    problems = []
    if _FORBIDDEN.search(path) or _has_surrogates(path):
        problems.append(Problem("TA-E200", path, "forbidden character or undecodable byte"))
    segments = path.split("/")
    if (
        path.startswith("/")
        or re.match(r"^[A-Za-z]:", path)
        or any(s in ("", ".", "..") for s in segments)
    ):
        problems.append(Problem("TA-E201", path, "absolute path or empty, '.' or '..' segment"))
    if any(len(s.encode("utf-8", "surrogateescape")) > MAX_SEGMENT_BYTES for s in segments):
        problems.append(Problem("TA-E202", path, f"segment longer than {MAX_SEGMENT_BYTES} bytes"))
    if not problems and unicodedata.normalize("NFC", path) != path:
        problems.append(Problem("TA-W200", path, "not in Unicode NFC"))
    return problems


# Undecodable bytes arrive as lone surrogates (os.fsdecode, surrogateescape).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def escapes_folder(relative: str) -> bool:
    """Whether a path taken relative to a folder (a Zarr store key, a file of a directory
    asset) could leave it: empty, ``.`` or ``..`` segments, absolute, backslashes or NUL."""
    return (
        relative.startswith("/")
        or "\\" in relative
        or "\x00" in relative
        or any(s in ("", ".", "..") for s in relative.split("/"))
    )


def check_path(path: str) -> str:
    """Return ``path`` if it is a valid archive path, else raise the first error found."""
    for problem in path_problems(path):
        if problem.severity is Severity.ERROR:
            raise ArchiveError(problem.code, problem.path, problem.message)
    return path


def case_collisions(paths: Iterable[str]) -> Iterator[Problem]:
    """Paths that collide on a case-insensitive filesystem (TA-W201)."""
    seen: dict[str, str] = {}
    for path in paths:
        folded = path.casefold()
        if folded in seen and seen[folded] != path:
            yield Problem("TA-W201", path, f"differs from {seen[folded]!r} only by case")
        seen.setdefault(folded, path)


def is_payload_path(path: str) -> bool:
    return path.startswith(DATA_DIR + "/")


# -- Asset URIs in catalog.db ---------------------------------------------------------------


def member_from_data_uri(data_uri: str) -> str:
    """The archive path a canonical (relative) ``data_uri`` names, or raise TA-E503.

    In an archive, ``assets.data_uri`` is the archive path itself (``data/...``), unescaped like
    Tiled's own ``file://`` URIs. Relocated directory archives are handled by the catalog layer.
    """
    if not is_payload_path(data_uri) or any(
        p.severity is Severity.ERROR for p in path_problems(data_uri)
    ):
        raise ArchiveError("TA-E503", data_uri, "asset data_uri is not a path inside data/")
    return data_uri


#: The mimetype of a ragged array's data source: Tiled's rows in an SQL (DuckDB) table.
RAGGED_MIMETYPE = "application/x-ragged+sql"
#: The ids of assets that are a ragged data source's database: Tiled's SQL storage, whose URI
#: names the database file with Tiled's ``duckdb:`` scheme (spec 3.1).
SQL_STORAGE_ASSETS = (
    "SELECT asset_id FROM data_source_asset_association JOIN data_sources "
    f"ON data_sources.id = data_source_id WHERE data_sources.mimetype = '{RAGGED_MIMETYPE}'"
)
#: The scheme of a relocated URI: a file's, or an SQL storage's (a ragged data source's).
RELOCATED_SCHEMES = {False: "file", True: "duckdb"}


def is_relocated(data_uri: str) -> bool:
    """Whether an asset URI is in relocated form (absolute, by scheme; spec 3.1)."""
    return data_uri.startswith(tuple(f"{s}:" for s in RELOCATED_SCHEMES.values()))


def member_from_relocated(data_uri: str, root: PurePath) -> str:
    """The archive path an asset URI names in an archive whose resolved location is ``root``:
    a relocated (absolute) URI must lie under it; raise TA-E503 otherwise."""
    if not is_relocated(data_uri):
        return member_from_data_uri(data_uri)
    from tiled.utils import path_from_uri

    try:
        relative = path_from_uri(data_uri).relative_to(root)
    except ValueError:
        raise ArchiveError("TA-E503", data_uri, f"asset URI is outside {root}") from None
    return member_from_data_uri(relative.as_posix())


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


def package_text(name: str) -> str:
    """A data file shipped inside the package. Read beside this module, not through
    ``importlib.resources`` (its import is ~6 ms of a fast check's ~0.1 s; the package is
    never installed zipped: Tiled's catalog needs files on disk anyway)."""
    return (Path(__file__).parent / name).read_text(encoding="utf-8")


@cache
def catalog_schema_sql(revision: str = TILED_SCHEMA_REVISIONS[0]) -> str:
    """The SQL of the catalog Tiled initializes at ``revision`` (shipped with the package, the
    same file as spec/catalog-schema-<revision>.sql): every table, index and trigger, and the
    rows of Tiled's init."""
    return package_text(f"catalog-schema-{revision}.sql")


@cache
def tiled_rules(revision: str = TILED_SCHEMA_REVISIONS[0]) -> dict[str, Any]:
    """What the catalog checks (TA-E506, TA-W501) take from Tiled, shipped with the package:
    each served column's kind, nullability and foreign key (from its ORM), the JSON Schema of
    a node's specs, the mimetypes it has adapters for. Written from Tiled itself by
    conformance/tiled_rules.py, and tested equal to what the installed Tiled gives."""
    return json.loads(package_text(f"tiled-rules-{revision}.json"))


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of ``tiled-archive.json`` (shipped with the package)."""
    return json.loads(package_text("manifest.schema.json"))


#: How fastjsonschema compiles a schema here: no defaults filled in, no formats checked.
SCHEMA_COMPILE_OPTIONS = {"use_default": False, "use_formats": False}


class SchemaCheck:
    """One JSON Schema's verdict on documents: jsonschema's, computed only when needed.

    Most documents are valid, and jsonschema's import alone (~0.07 s) takes longer than a fast
    check of a small archive. So each document first meets the schema compiled by
    fastjsonschema (~0.01 s to import and compile, no defaults filled in, no formats): when it
    passes there, there is nothing to report. Only a document it rejects goes to jsonschema,
    whose errors are the verdict (fastjsonschema is stricter in places, e.g. ``$`` in a pattern
    does not match before a final newline; a test checks it is never laxer).
    """

    def __init__(self, schema: dict[str, Any], compiled: Callable[[Any], Any] | None = None):
        """``compiled``: fastjsonschema's code for ``schema`` when it is at hand (compiled here
        otherwise)."""
        import fastjsonschema

        self.schema = schema
        self._passes = compiled or fastjsonschema.compile(schema, **SCHEMA_COMPILE_OPTIONS)
        self._rejected: tuple[type[Exception], ...] = (fastjsonschema.JsonSchemaException,)

    def errors(self, document: Any) -> list[Any]:
        """jsonschema's ``ValidationError`` s for ``document``, by path; empty when it is valid."""
        try:
            self._passes(document)
        except self._rejected:
            import jsonschema

            validator = jsonschema.Draft202012Validator(self.schema)
            return sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        return []


@cache
def manifest_check() -> SchemaCheck:
    """The manifest schema's :class:`SchemaCheck`: with the package's compiled code of it
    (``manifest_schema_check``, written by conformance/manifest_check.py; compiling takes
    ~14 ms) when that was compiled from this schema, else compiled once per process."""
    import hashlib

    from . import manifest_schema_check as shipped

    raw = package_text("manifest.schema.json")
    current = hashlib.sha256(raw.encode("utf-8")).hexdigest() == shipped.SCHEMA_SHA256
    return SchemaCheck(json.loads(raw), shipped.validate if current else None)


def version_problem(version: str) -> Problem | None:
    """What a 1.0 reader says of an archive of ``version`` (TA-E302 or TA-W300, else None)."""
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


# -- JSON read from an archive ----------------------------------------------------------------

#: Deepest nesting of JSON an archive may hold (manifest, catalog metadata, structures...):
#: far beyond what Tiled writes, far below what recursive decoders and encoders survive.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply ``value`` (decoded JSON) nests: 0 for a scalar, 1 for a flat list or object.
    Iterative, so any depth is measured without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


class JSONTooDeep(ValueError):
    """JSON nested deeper than :data:`MAX_JSON_DEPTH`."""


def load_json(raw: bytes | str) -> Any:
    """Decode JSON from an archive, bounded: ``ValueError`` (with a message fit for a user)
    for bytes that are not UTF-8 JSON, for nesting deeper than :data:`MAX_JSON_DEPTH` and for
    integers too long for Python to convert; never ``RecursionError``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text)
    except RecursionError:
        raise JSONTooDeep(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, over-long integers
        raise ValueError(str(err).split("; use sys.set_int_max_str_digits")[0]) from None
    # Text with no more brackets than the limit cannot nest deeper: skip the walk (most
    # metadata and structures, read once per node when an archive opens).
    brackets = text.count("{") + text.count("[") if isinstance(text, str) else 0
    if brackets > MAX_JSON_DEPTH and json_depth(value) > MAX_JSON_DEPTH:
        raise JSONTooDeep(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return value


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
