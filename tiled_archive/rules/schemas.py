"""The packaged rule data (JSON Schemas, Tiled's catalog schema and what the catalog checks
take from Tiled), JSON decoding with a depth limit, and :class:`SchemaCheck`: fastjsonschema's
compiled check first, jsonschema's explanation only for a document it rejects.

The files read here live beside this module; ``spec/`` holds generated copies of the published
ones (``conformance/spec_copies.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from .names import (
    TILED_SCHEMA_REVISIONS,
)


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
