"""What a catalog's rows may say (spec 3), checked on an SQLite connection to ``catalog.db``:
Tiled's tables and columns, node and data-source rows, structures, JSON, times, references.

The rules Tiled itself enforces (its ORM's columns) come from Tiled at the packaged schema
revision through the packaged ``tiled-rules`` file, derived from Tiled and tested equal, so that
checking needs no Tiled import. :class:`DataSourceRow` is one data source with its assets, as
the inspectors and the reader are given it.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

from .names import CATALOG_NAME, FORMAT_VERSION, TILED_SCHEMA_REVISIONS
from .problems import Problem, clip, reason
from .schemas import (
    MAX_JSON_DEPTH,
    JSONTooDeep,
    SchemaCheck,
    catalog_schema_sql,
    load_json,
    tiled_rules,
)
from .structures import structure_problem


@dataclass(frozen=True)
class AssetRef:
    """One asset of a data source, as an archive member (a file, or a folder such as Zarr)."""

    member: str
    is_directory: bool
    parameter: str | None
    num: int | None


@dataclass(frozen=True)
class DataSourceRow:
    """What the catalog says of one data source, decoded."""

    id: int
    node: str  # for messages: the node's key (or path)
    family: str
    mimetype: str
    parameters: dict[str, Any]
    structure: dict[str, Any] | None
    assets: tuple[AssetRef, ...]

    def members(self) -> list[str]:
        """File members in the order the adapter receives them (``num``)."""
        ordered = sorted(self.assets, key=lambda a: (a.num is None, a.num or 0))
        return [a.member for a in ordered if not a.is_directory]

    @property
    def where(self) -> str:
        """What messages about this data source name: its first member (file or folder), or
        the data source itself when it has no asset."""
        members = self.members() or [a.member for a in self.assets]
        return members[0] if members else f"catalog.db data source {self.id} ({self.node!r})"


#: The tables an archive's catalog must have (TA-E502); the others of Tiled's schema are
#: checked for their columns when present.
REQUIRED_TABLES = (
    "alembic_version",
    "nodes",
    "nodes_closure",
    "structures",
    "data_sources",
    "assets",
    "data_source_asset_association",
    "revisions",
    "metadata_fts5",
)
#: The tables Tiled reads to serve a catalog (``nodes_closure`` serves only writes and deletes,
#: ``metadata_fts5`` is SQLite's own).
SERVED_TABLES = (
    "nodes",
    "structures",
    "data_sources",
    "assets",
    "data_source_asset_association",
    "revisions",
)


@cache
def rules_fingerprint() -> str:
    """What the verdict of :func:`catalog_problems` depends on besides the catalog's bytes:
    these rules (this module's source and what they take from Tiled) and Tiled's structure
    classes (its version). A reader may keep a clean verdict under the catalog's SHA-256 and
    this, and skip the checks."""
    import hashlib

    import tiled

    rules = hashlib.sha256(Path(__file__).read_bytes())
    rules.update(json.dumps(tiled_rules(), sort_keys=True).encode())
    return f"{rules.hexdigest()[:16]}-{tiled.__version__}"


#: At most this many rows are reported for each rule; a damaged catalog can break one rule
#: on every row.
ROWS_PER_RULE = 20
#: Families whose nodes need no data source (those of every other family need exactly one:
#: Tiled 0.2.20 serves one per node), as an SQL list.
_CONTAINERS = "('container')"


def schema_problems(
    conn: sqlite3.Connection, required: Collection[str] = REQUIRED_TABLES
) -> tuple[set[str], list[Problem]]:
    """The tables present with every column Tiled's schema gives them, and TA-E502 for each
    ``required`` table that is missing and each table of Tiled's schema that lacks columns
    (Tiled reads optional ones too, such as ``access_tags``, when serving a node)."""
    schema = tiled_schema_columns()
    present = {name for (name,) in conn.execute(_TABLES_SQL)}
    complete, problems = set(), []
    for name in sorted(set(required) | (present & set(schema))):
        if name not in present:
            problems.append(Problem("TA-E502", CATALOG_NAME, f"no table {name!r}"))
            continue
        columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')}
        missing = sorted(schema.get(name, set()) - columns)
        if missing:
            problems.append(
                Problem("TA-E502", CATALOG_NAME, f"table {name!r} lacks columns {missing}")
            )
        else:
            complete.add(name)
    return complete, problems


@cache
def tiled_schema_columns() -> dict[str, frozenset[str]]:
    """Each table of Tiled's catalog schema and its columns, from the packaged schema SQL (a
    test keeps it equal to what Tiled's init creates), so that checking them needs no Tiled."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(catalog_schema_sql())
        tables = [name for (name,) in conn.execute(_TABLES_SQL)]
        return {
            name: frozenset(row[1] for row in conn.execute(f'PRAGMA table_info("{name}")'))
            for name in tables
        }


_TABLES_SQL = "SELECT name FROM sqlite_master WHERE type = 'table'"


def stamp_problem(revisions: list[object]) -> Problem | None:
    """TA-E501 unless ``alembic_version`` holds exactly one revision this format allows."""
    if len(revisions) == 1 and revisions[0] in TILED_SCHEMA_REVISIONS:
        return None
    allowed = ", ".join(TILED_SCHEMA_REVISIONS)
    return Problem(
        "TA-E501", CATALOG_NAME, f"stamped {revisions}; format {FORMAT_VERSION} allows {allowed}"
    )


def catalog_problems(conn: sqlite3.Connection) -> list[Problem]:
    """Every TA-E506 and TA-E509 in a catalog whose tables are all present and complete
    (TA-E502 is checked first, by the caller)."""
    problems: list[Problem] = []
    for table in SERVED_TABLES:
        problems.extend(_column_problems(conn, table))
        problems.extend(_text_problems(conn, table))
        problems.extend(_reference_problems(conn, table))
    problems.extend(_root_problems(conn))
    problems.extend(_node_problems(conn))
    problems.extend(_data_source_problems(conn))
    problems.extend(_structure_problems(conn))
    problems.extend(_json_problems(conn))
    return problems


# -- Values of each column's type (from Tiled's ORM) ------------------------------------------


def _orm_columns(table: str, *kinds: str) -> list[dict[str, Any]]:
    """The columns Tiled's ORM gives ``table`` (all of them, or those of ``kinds``), as the
    packaged rules hold them: ``name``, ``kind``, ``nullable``, ``values``, ``references``."""
    columns = tiled_rules()["columns"][table]
    return [column for column in columns if not kinds or column["kind"] in kinds]


@cache
def _columns(table: str) -> tuple[tuple[str, str, str], ...]:
    """``(column, SQL true when the value fits, what it must be)`` for each column of a table
    Tiled's ORM defines."""
    columns = []
    for column in _orm_columns(table):
        name = f'"{column["name"]}"'
        kind = column["kind"]
        if kind == "boolean":
            test, what = f"{name} IN (0, 1)", "0 or 1"
        elif kind == "integer":
            test, what = f"typeof({name}) = 'integer'", "an integer"
        elif kind == "enum":
            allowed = ", ".join(f"'{value}'" for value in column["values"])
            test, what = f"{name} IN ({allowed})", "one of " + ", ".join(column["values"])
        elif kind == "json":
            # SQLite refuses JSON nested over 1,000 levels: Python judges text that may nest
            # that deep (_json_problems).
            deep = f"{_brackets(name)} > {MAX_JSON_DEPTH}"
            test = f"typeof({name}) = 'text' AND (json_valid({name}) OR {deep})"
            what = "JSON text"
        else:  # text and time (whose grammar _time_problems checks)
            test, what = f"typeof({name}) = 'text'", "text"
        if column["nullable"]:
            test, what = f"{name} IS NULL OR {test}", f"NULL or {what}"
        columns.append((column["name"], f"coalesce({test}, 0)", what))
    return tuple(columns)


def columns_table() -> str:
    """What each column of the served tables must hold, as spec/FORMAT.md appendix A gives it
    (check 1 of TA-E506; the other checks narrow some columns further)."""
    rows = ["| table | column | value |", "|---|---|---|"]
    for table in SERVED_TABLES:
        for column, _, what in _columns(table):
            rows.append(f"| `{table}` | `{column}` | {what} |")
    return "\n".join(rows) + "\n"


def _column_problems(conn: sqlite3.Connection, table: str) -> Iterator[Problem]:
    columns = _columns(table)
    tests = ", ".join(test for _, test, _ in columns)
    failing = " OR ".join(f"NOT {test}" for _, test, _ in columns)
    sql = f'SELECT {_label(table)}, {tests} FROM "{table}" WHERE {failing} LIMIT ?'
    for label, *passed in conn.execute(sql, (ROWS_PER_RULE,)):
        for (column, _, what), ok in zip(columns, passed, strict=True):
            if not ok:
                yield _problem(table, label, f"{column} must be {what}")


def _text_problems(conn: sqlite3.Connection, table: str) -> Iterator[Problem]:
    """Text Tiled decodes: UTF-8 (SQLite stores any bytes), and times of the fixed grammar."""
    texts = _orm_columns(table, "text", "enum", "json", "time")
    problems = _utf8_problems(conn, table, [column["name"] for column in texts])
    times = [column["name"] for column in texts if column["kind"] == "time"]
    problems.extend(_time_problems(conn, table, times))
    return iter(problems[:ROWS_PER_RULE])


#: Rows whose text is decoded at once: joined in SQL, with an ASCII separator so that no
#: broken sequence at the end of one value can pair with bytes at the start of the next.
_UTF8_BATCH = 2048


def _utf8_problems(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[Problem]:
    joined = " || char(10) || ".join(f"coalesce(\"{name}\", '')" for name in columns)
    batch = (
        "SELECT CAST(group_concat(joined, char(10)) AS BLOB), min(r), max(r) FROM"
        f' (SELECT rowid AS r, {joined} AS joined FROM "{table}" WHERE rowid > ?'
        f" ORDER BY rowid LIMIT {_UTF8_BATCH})"
    )
    selected = ", ".join(f'CAST("{name}" AS BLOB)' for name in columns)
    rows = f'SELECT {_label(table)}, {selected} FROM "{table}" WHERE rowid BETWEEN ? AND ?'
    problems: list[Problem] = []
    after = -(1 << 63)
    while len(problems) < ROWS_PER_RULE:
        text, first, last = conn.execute(batch, (after,)).fetchone()
        if last is None:
            break
        after = last
        try:
            text.decode("utf-8")
            continue
        except UnicodeDecodeError:
            pass
        for label, *values in conn.execute(rows, (first, last)):
            for column, value in zip(columns, values, strict=True):
                try:
                    if isinstance(value, bytes):
                        value.decode("utf-8")
                except UnicodeDecodeError as err:
                    problems.append(_problem(table, label, f"{column}: {reason(err)}"))
    return problems


#: The times an archive's catalog may hold (spec §3): what SQLite's defaults
#: (``CURRENT_TIMESTAMP``, ``strftime('%Y-%m-%d %H:%M:%f')``) and SQLAlchemy write, UTC, no
#: offset. Every Python's ``datetime.fromisoformat`` (SQLAlchemy's parser for SQLite) reads it
#: the same way; 3.11's reads much more (``T``, ``Z``, week dates) and 3.10's does not.
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{3}|[0-9]{6}))?"
)


def time_problem(text: str) -> str | None:
    """Why ``text`` is not a catalog time (None when it is one): the fixed grammar
    ``YYYY-MM-DD HH:MM:SS`` with an optional fraction of 3 or 6 digits, naming a real time."""
    match = _TIME.fullmatch(text)
    if match is None:
        return f"{clip(text, 40)!r} is not a time YYYY-MM-DD HH:MM:SS[.fff or .ffffff] (UTC)"
    year, month, day, hour, minute, second, _ = match.groups()
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as err:
        return f"{text!r}: {err}"
    return None


def _time_problems(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[Problem]:
    """Each distinct time (rows written together share them) against the grammar of
    :func:`time_problem`."""
    problems = []
    for column in columns:
        distinct = (
            f'SELECT DISTINCT CAST("{column}" AS BLOB) FROM "{table}"'
            f" WHERE typeof(\"{column}\") = 'text'"
        )
        for (value,) in conn.execute(distinct).fetchall():
            try:
                problem = time_problem(value.decode("utf-8"))
            except UnicodeDecodeError:
                continue  # _utf8_problems
            if problem is None:
                continue
            rows = (
                f'SELECT {_label(table)} FROM "{table}" WHERE CAST("{column}" AS BLOB) = ? LIMIT ?'
            )
            for (label,) in conn.execute(rows, (value, ROWS_PER_RULE)):
                problems.append(_problem(table, label, f"{column}: {problem}"))
    return problems


def _reference_problems(conn: sqlite3.Connection, table: str) -> Iterator[Problem]:
    """Foreign keys Tiled's ORM declares (SQLite enforces none unless asked to)."""
    for column in _orm_columns(table):
        if column["references"] is None:
            continue
        name, (target_table, target) = column["name"], column["references"]
        sql = (
            f'SELECT {_label(table)}, "{name}" FROM "{table}"'
            f' WHERE "{name}" IS NOT NULL AND "{name}" NOT IN'
            f' (SELECT "{target}" FROM "{target_table}") LIMIT ?'
        )
        for label, value in conn.execute(sql, (ROWS_PER_RULE,)):
            yield _problem(table, label, f"{name} {value!r} names no row of {target_table}")


_LABEL = {  # SQL giving each row's label in messages (qualified: some queries join)
    "nodes": "'node ' || nodes.id || ' (' || quote(nodes.key) || ')'",
    "structures": "'structure ' || quote(structures.id)",
    "data_sources": "'data source ' || data_sources.id",
    "assets": "'asset ' || id",
    "data_source_asset_association": ("'data source ' || data_source_id || ' asset ' || asset_id"),
    "revisions": "'revision ' || id",
}


def _label(table: str) -> str:
    """SQL giving a row's label as bytes, so that text that is not UTF-8 reads the same
    whatever the connection's text factory."""
    return f"CAST({_LABEL[table]} AS BLOB)"


def _decoded(label: object, table: str) -> str:
    if isinstance(label, bytes):
        return label.decode("utf-8", "backslashreplace")
    return label if isinstance(label, str) else table


def _problem(table: str, label: object, message: str) -> Problem:
    label = _decoded(label, table)
    return Problem("TA-E506", CATALOG_NAME, f"{label}: {message}")


# -- What Tiled's models require of the values --------------------------------------------------


def _root_problems(conn: sqlite3.Connection) -> Iterator[Problem]:
    """The root's row, as Tiled's init inserts it: id 0, no parent, a container (Tiled serves
    the root from its configuration, but every top-level node names it as its parent); and
    no other node without a parent (Tiled would never reach it)."""
    root = conn.execute("SELECT parent, structure_family FROM nodes WHERE id = 0").fetchone()
    if root is None:
        yield Problem("TA-E506", CATALOG_NAME, "no root node (the row of nodes with id 0)")
    elif root[0] is not None or root[1] != "container":
        yield _problem(
            "nodes",
            b"node 0 (the root)",
            f"the root must have parent NULL and family container, not {root[0]!r}, {root[1]!r}",
        )
    sql = f"SELECT {_label('nodes')} FROM nodes WHERE parent IS NULL AND id != 0 LIMIT ?"
    for (label,) in conn.execute(sql, (ROWS_PER_RULE,)):
        yield _problem("nodes", label, "parent is NULL: only the root (id 0) has none")


def _node_problems(conn: sqlite3.Connection) -> Iterator[Problem]:
    """Metadata is an object, specs Tiled's specs; a node that holds data has one data source
    of its family, a container at most one."""
    for table in ("nodes", "revisions"):
        sql = (
            f"SELECT {_label(table)} FROM {table} WHERE typeof(metadata) = 'text'"
            " AND json_valid(metadata) AND json_type(metadata) != 'object' LIMIT ?"
        )
        for (label,) in conn.execute(sql, (ROWS_PER_RULE,)):
            yield _problem(table, label, "metadata must be a JSON object")
        sql = (
            f"SELECT {_label(table)}, specs FROM {table} WHERE typeof(specs) = 'text'"
            " AND json_valid(specs) AND specs != '[]'"
        )
        found = (
            _problem(table, label, f"specs: {problem}")
            for label, specs in conn.execute(sql)
            if (problem := _specs_problem(specs)) is not None
        )
        yield from islice(found, ROWS_PER_RULE)
    for label, count, family, families in conn.execute(_NODE_SOURCES_SQL, (ROWS_PER_RULE,)):
        if count > 1:
            yield _problem("nodes", label, f"{count} data sources; Tiled serves one per node")
        elif count == 0:
            yield _problem(
                "nodes", label, f"a node of family {family} needs a data source; it has none"
            )
        else:
            yield _problem(
                "nodes", label, f"its data source's structure_family is {families}, not {family}"
            )


_NODE_SOURCES_SQL = (
    f"SELECT {_label('nodes')}, count(d.id), nodes.structure_family,"
    " group_concat(d.structure_family) FROM nodes LEFT JOIN data_sources d"
    " ON d.node_id = nodes.id GROUP BY nodes.id HAVING count(d.id) > 1"
    f" OR (count(d.id) = 0 AND nodes.structure_family NOT IN {_CONTAINERS})"
    " OR (count(d.id) = 1 AND min(d.structure_family) != nodes.structure_family) LIMIT ?"
)


def _specs_problem(text: str) -> str | None:
    """Why a node's specs are not Tiled's, or None: what ``Spec(**spec)`` takes for each (keys
    ``name`` and ``version`` only) and its pydantic ``Specs`` on the JSON (at most 20, ``name``
    text and ``version`` text or null, each at most 255 characters), as the packaged rules'
    JSON Schema of them says."""
    try:
        specs = load_json(text)
    except JSONTooDeep:
        return None  # TA-E509
    if not isinstance(specs, list):
        return "not a JSON array"
    errors = _specs_check().errors(specs)
    if not errors:
        return None
    from jsonschema.exceptions import best_match

    error = best_match(errors)
    where = "".join(f"[{part!r}]" for part in error.absolute_path)
    # jsonschema's message quotes the whole value; a length says what is wrong with a long one.
    unit = {"maxLength": "characters", "maxItems": "specs"}.get(str(error.validator))
    if unit is not None:
        message = f"{len(error.instance)} {unit}; Tiled allows at most {error.validator_value}"
    else:
        message = clip(error.message, 120)
    return f"{where}: {message}" if where else message


@cache
def _specs_check() -> SchemaCheck:
    return SchemaCheck(tiled_rules()["specs"])


def _data_source_problems(conn: sqlite3.Connection) -> Iterator[Problem]:
    """Parameters and properties are objects (Tiled's DataSource model refuses NULL); a data
    source that holds data has a structure; every data source has an asset."""
    for column in ("parameters", "properties"):
        sql = (
            f"SELECT {_label('data_sources')} FROM data_sources WHERE {column} IS NULL"
            f" OR (typeof({column}) = 'text' AND json_valid({column})"
            f" AND json_type({column}) != 'object') LIMIT ?"
        )
        for (label,) in conn.execute(sql, (ROWS_PER_RULE,)):
            yield _problem("data_sources", label, f"{column} must be a JSON object")
    sql = (
        f"SELECT {_label('data_sources')}, structure_family FROM data_sources"
        f" WHERE structure_id IS NULL AND structure_family NOT IN {_CONTAINERS} LIMIT ?"
    )
    for label, family in conn.execute(sql, (ROWS_PER_RULE,)):
        yield _problem("data_sources", label, f"a data source of family {family} needs a structure")
    sql = (
        f"SELECT {_label('data_sources')} FROM data_sources WHERE id NOT IN"
        " (SELECT data_source_id FROM data_source_asset_association) LIMIT ?"
    )
    for (label,) in conn.execute(sql, (ROWS_PER_RULE,)):
        yield _problem("data_sources", label, "no asset: its adapter would have no file to read")
    # A table has a file per partition (Tiled's table adapters read range(npartitions) of
    # them, and its client makes a task per partition before it asks for any): a declared
    # number the files do not back is refused before a client is given it.
    sql = (
        f"SELECT {_label('data_sources')}, json_extract(s.structure, '$.npartitions'),"
        " (SELECT count(*) FROM data_source_asset_association a"
        "  WHERE a.data_source_id = data_sources.id AND a.parameter = 'data_uris') AS files"
        " FROM data_sources JOIN structures s ON s.id = data_sources.structure_id"
        " WHERE data_sources.structure_family = 'table' AND json_valid(s.structure)"
        " AND files > 0 AND json_type(s.structure, '$.npartitions') = 'integer'"
        " AND json_extract(s.structure, '$.npartitions') != files LIMIT ?"
    )
    for label, declared, files in conn.execute(sql, (ROWS_PER_RULE,)):
        yield _problem(
            "data_sources",
            label,
            f"its structure declares {declared} partitions, its data has {files} file(s)",
        )


def _structure_problems(conn: sqlite3.Connection) -> Iterator[Problem]:
    """Each structure, once for each family that uses it, as Tiled's structure class loads it
    (structures are shared by content hash, so 10,000 like arrays check one)."""
    from tiled.structures.core import STRUCTURE_TYPES, StructureFamily

    sql = (
        f"SELECT DISTINCT {_label('structures')}, d.structure_family, structure"
        " FROM data_sources d JOIN structures ON structures.id = d.structure_id"
        " WHERE typeof(structure) = 'text' AND json_valid(structure)"
    )
    found = 0
    for label, family, text in conn.execute(sql):
        try:
            structure_class = STRUCTURE_TYPES[StructureFamily(family)]
            decoded = load_json(text)
        except (KeyError, ValueError):
            continue  # an unknown family, TA-E509 or not JSON: reported above
        problem = structure_problem(structure_class, decoded)
        if problem is not None:
            yield _problem("structures", label, f"not a valid {family} structure: {problem}")
            found += 1
            if found == ROWS_PER_RULE:
                return


# -- Reading the rows ---------------------------------------------------------------------------

_ROWS_SQL = (
    "SELECT d.id, n.key, d.structure_family, d.mimetype, d.parameters, s.structure"
    " FROM data_sources d LEFT JOIN nodes n ON n.id = d.node_id"
    " LEFT JOIN structures s ON s.id = d.structure_id WHERE {} ORDER BY d.id"
)
_ASSETS_SQL = (
    "SELECT x.data_source_id, a.data_uri, a.is_directory, x.parameter, x.num"
    " FROM data_source_asset_association x JOIN assets a ON a.id = x.asset_id"
    " WHERE {} ORDER BY x.data_source_id, x.num"
)


def data_source_rows(
    conn: sqlite3.Connection,
    member_of: Callable[[str], str | None],
    only: int | None = None,
) -> list[DataSourceRow]:
    """Every data source of a catalog whose JSON decodes (or only the one of id ``only``),
    with its assets as archive members (``member_of`` maps a data URI to a member, or None
    for one that names none: reported by the asset checks, and its data source is left out).
    Undecodable rows are TA-E506 or TA-E509, reported by :func:`catalog_problems`."""
    assets: dict[int, list[AssetRef]] = {}
    unresolved: set[int] = set()
    chosen: tuple[int, ...] = () if only is None else (only,)
    assets_sql = _ASSETS_SQL.format("1" if only is None else "x.data_source_id = ?")
    for source_id, uri, is_directory, parameter, num in conn.execute(assets_sql, chosen):
        member = member_of(uri) if isinstance(uri, str) else None
        if member is None:
            unresolved.add(source_id)
        else:
            assets.setdefault(source_id, []).append(
                AssetRef(member, bool(is_directory), parameter, num)
            )
    rows = []
    # Data sources share their structures (by content hash) and mostly have `{}` parameters:
    # each distinct text is decoded once. The rows share the decoded values: read-only.
    decoded_texts: dict[object, Any] = {None: None}
    rows_sql = _ROWS_SQL.format("1" if only is None else "d.id = ?")
    for source_id, key, family, mimetype, parameters, structure in conn.execute(rows_sql, chosen):
        decoded = []
        for value in (parameters, structure):
            if value not in decoded_texts:
                try:
                    decoded_texts[value] = load_json(value)
                except (ValueError, TypeError):
                    decoded_texts[value] = _UNDECODABLE
            decoded.append(decoded_texts[value])
        if _UNDECODABLE in decoded or not isinstance(mimetype, str) or source_id in unresolved:
            continue
        params, struct = decoded
        rows.append(
            DataSourceRow(
                source_id,
                str(key),
                str(family),
                mimetype,
                params if isinstance(params, dict) else {},
                struct if isinstance(struct, dict) else None,
                tuple(assets.get(source_id, ())),
            )
        )
    return rows


_UNDECODABLE = object()


def _json_problems(conn: sqlite3.Connection) -> Iterator[Problem]:
    """TA-E509 for JSON nested deeper than the format allows (Tiled's JSON encoders recurse,
    so such a node could not even be listed), in every JSON column Tiled reads. Only text
    holding more brackets than the limit can nest that deep, and only that text is decoded
    (in Python, which also judges what SQLite's parser refuses as too deep for it)."""
    for table in SERVED_TABLES:
        for column in _orm_columns(table, "json"):
            name = f'"{column["name"]}"'
            sql = (
                f'SELECT {_label(table)}, {name}, json_valid({name}) FROM "{table}"'
                f" WHERE typeof({name}) = 'text' AND {_brackets(name)} > ?"
            )
            for label, value, valid in conn.execute(sql, (MAX_JSON_DEPTH,)):
                where = f"catalog.db {_decoded(label, table)}"
                try:
                    load_json(value)
                except JSONTooDeep as err:
                    yield Problem("TA-E509", where, f"{column['name']}: {err}")
                except ValueError as err:
                    if valid:  # SQLite's parser accepts what Python's cannot (long integers)
                        yield _problem(table, label, f"{column['name']}: {err}")
                    else:  # the column check let it through to be judged here
                        yield _problem(table, label, f"{column['name']} must be JSON text: {err}")


def _brackets(column: str) -> str:
    """SQL counting the opening brackets (``[`` and ``{``) of a text column."""
    return (
        f"(2 * length({column}) - length(replace({column}, '[', ''))"
        f" - length(replace({column}, '{{', '')))"
    )
