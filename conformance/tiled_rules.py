"""Write what the catalog checks take from Tiled: ``tiled_archive/tiled-rules-<revision>.json``.

    .venv/bin/python conformance/tiled_rules.py          # rewrite the package file
    .venv/bin/python conformance/tiled_rules.py --check  # exit 1 if it would change

TA-E506 checks every row Tiled reads against Tiled's own rules: the type, nullability and
foreign key of each column (from its ORM, ``tiled.catalog.orm``), what a node's specs may be
(its pydantic ``Specs`` and the ``Spec`` dataclass), and TA-W501 which mimetypes it has an
adapter for. Importing those modules imports Tiled's server stack (dask, pandas, FastAPI:
about 4 s), which ``validate`` otherwise never needs. So they are written down once, by this
script, from Tiled itself, and the test suite derives them again and compares: the file cannot
drift from the Tiled the package is tested with.

What the file holds:

- ``columns``: for each table Tiled serves from, each column in the ORM's order: ``kind``
  (``boolean``, ``integer``, ``enum``, ``json``, ``text`` or ``time``), ``nullable`` (false for
  primary keys), ``values`` (an enum's), ``references`` (``[table, column]`` of a foreign key);
- ``specs``: the JSON Schema of Tiled's ``Specs`` (pydantic's own), with each spec's keys closed
  to the ``Spec`` dataclass's fields (Tiled builds it with ``Spec(**spec)``, which refuses others);
- ``adapter_mimetypes``: the keys of ``tiled.mimetypes.DEFAULT_ADAPTERS_BY_MIMETYPE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def package_file(revision: str) -> Path:
    """Where the package keeps the rules for a Tiled schema revision."""
    return ROOT / "tiled_archive" / "rules" / f"tiled-rules-{revision}.json"


def derive() -> dict[str, Any]:
    """The rules, from the installed Tiled."""
    import pydantic
    import tiled
    from tiled.mimetypes import DEFAULT_ADAPTERS_BY_MIMETYPE
    from tiled.server.schemas import Specs
    from tiled.structures.core import Spec

    from tiled_archive.rules.catalog_rows import SERVED_TABLES

    specs = pydantic.TypeAdapter(Specs).json_schema()
    specs["$defs"]["Spec"]["additionalProperties"] = False
    assert set(specs["$defs"]["Spec"]["properties"]) == {f.name for f in dataclasses.fields(Spec)}
    return {
        "tiled": tiled.__version__,
        "columns": {table: _columns(table) for table in SERVED_TABLES},
        "specs": specs,
        "adapter_mimetypes": sorted(DEFAULT_ADAPTERS_BY_MIMETYPE),
    }


def _columns(table: str) -> list[dict[str, Any]]:
    from sqlalchemy import JSON, Boolean, DateTime, Enum, Integer, String
    from tiled.catalog import orm

    kinds = [  # Enum before String: SQLAlchemy's Enum is a String
        (Boolean, "boolean"),
        (Integer, "integer"),
        (Enum, "enum"),
        (JSON, "json"),
        (DateTime, "time"),
        (String, "text"),
    ]
    columns = []
    for column in orm.Base.metadata.tables[table].columns:
        kind = next(name for type_, name in kinds if isinstance(column.type, type_))
        (key,) = column.foreign_keys or [None]
        columns.append(
            {
                "name": column.name,
                "kind": kind,
                "nullable": bool(column.nullable and not column.primary_key),
                "values": list(column.type.enums) if kind == "enum" else None,
                "references": [key.column.table.name, key.column.name] if key else None,
            }
        )
    return columns


def render(rules: dict[str, Any]) -> str:
    return json.dumps(rules, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on change")
    args = parser.parse_args(argv)
    from tiled_archive.rules.names import TILED_SCHEMA_REVISIONS

    target = package_file(TILED_SCHEMA_REVISIONS[0])
    text = render(derive())
    if args.check:
        same = target.is_file() and target.read_text(encoding="utf-8") == text
        print(f"{target}: {'up to date' if same else 'differs from what Tiled has'}")
        return int(not same)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
