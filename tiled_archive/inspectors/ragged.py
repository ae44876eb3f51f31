"""Ragged arrays in DuckDB, as Tiled stores one a client writes (``application/x-ragged+sql``).

Tiled keeps a ragged array as rows of one table in an embedded SQL database: one row per
chunk along axis 0 (``chunk_index``), one list column per awkward buffer, the data source's
``table_name`` and ``dataset_id`` parameters naming the table and its rows. In an archive the
database is a DuckDB file, an asset of its own, and untrusted: DuckDB runs what the file
defines (views, generated columns) when a query touches it. So the database is opened read-only,
with file system access, extension loading and spilling to disk disabled and a memory limit
locked in, and only a base table with exactly the columns Tiled makes is read. What a read
loads (DuckDB loads a list column whole for any row) is counted from DuckDB's storage metadata
before any value is loaded; every buffer is checked against what awkward reads from it.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..rules.budget import read_budget
from ..rules.catalog_rows import DataSourceRow
from ..rules.formats import format_of
from ..rules.names import RAGGED_MIMETYPE
from ..rules.problems import reason
from ..rules.structures import structure_of
from ..sources import ByteSource
from . import Inspection, add, not_the_file

MIMETYPE = RAGGED_MIMETYPE
#: Bytes 8-11 of every DuckDB database file.
MAGIC = b"DUCK"
#: Columns Tiled's SQL table writer adds before the buffers (and after them, Tiled's ragged
#: adapter's ``chunk_index``), with their Arrow types.
_KEY_COLUMNS = {"_dataset_id": "int32", "_partition_id": "int16", "chunk_index": "int64"}


def connect(path: Path) -> Any:
    """A read-only ADBC connection to a DuckDB file that cannot touch any other file, load an
    extension, spill to disk, or use more memory than twice the read budget (all locked)."""
    import adbc_driver_duckdb
    import adbc_driver_manager.dbapi

    limit_mib = max(2 * read_budget(), 64 << 20) >> 20
    settings = {
        "path": str(path),
        "access_mode": "READ_ONLY",
        "enable_external_access": "false",
        "autoload_known_extensions": "false",
        "autoinstall_known_extensions": "false",
        "allow_community_extensions": "false",
        "temp_directory": "",
        "memory_limit": f"{limit_mib}MB",
        "threads": "1",
        "lock_configuration": "true",
    }
    return adbc_driver_manager.dbapi.connect(
        driver=adbc_driver_duckdb.driver_path(), entrypoint="duckdb_adbc_init", db_kwargs=settings
    )


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    """Check a ragged data source's DuckDB file against its catalog row; what any read of it
    loads (the table's values, and the file's blocks that hold them) goes to ``result.unit``."""
    members = row.members()
    if len(members) != 1:
        add(result, "TA-E601", row.where, "a ragged data source has one DuckDB file asset")
        return
    member = members[0]
    rules = format_of(MIMETYPE).parameters
    if missing := [key for key in rules if key not in row.parameters]:
        add(
            result,
            "TA-E508",
            member,
            f"data source {row.id} (node {row.node!r}) lacks parameter {missing[0]!r}",
        )
        return
    if not all(rule.check(row.parameters[key]) for key, rule in rules.items()):
        return  # TA-E508 (parameters): never put such a table name in a query
    table, dataset = row.parameters["table_name"], row.parameters["dataset_id"]
    structure = structure_of(row)
    if structure is None or source.read(member, 8, 4) != MAGIC:
        if structure is not None:
            add(result, "TA-E601", member, "not a DuckDB database file (no DUCK magic)")
        return
    stored = source.members()[member].size
    try:
        with _local(source, member) as path, contextlib.closing(connect(path)) as conn:
            problem, values = _table_problem(conn, table, dataset, structure, stored)
    except Exception as err:  # noqa: BLE001 -- DuckDB raises many types on a bad file
        not_the_file(err)
        add(result, "TA-E601", member, f"not a readable DuckDB database: {reason(err)}")
        return
    if problem is not None:
        code, message = problem
        add(result, code, member, message)
        return
    result.decoded, result.stored, result.unit = values, stored, values + stored


def _table_problem(
    conn: Any, table: str, dataset: int, structure: Any, file_size: int
) -> tuple[tuple[str, str] | None, int]:
    """(problem, the bytes of the values the table stores). DuckDB loads a list column's
    values whole, and pins the blocks of the file holding them, for a read of any row of it:
    a read of one chunk loads all chunks."""
    import pyarrow

    with conn.cursor() as cursor:
        # A database can define macros that shadow DuckDB's own functions (len, duckdb_columns)
        # in every query on it: DuckDB's functions are named by their catalog (system.main),
        # and a database defining any function, macro or view of its own is refused.
        cursor.execute(
            "SELECT function_name FROM system.main.duckdb_functions() WHERE NOT internal "
            "UNION ALL SELECT view_name FROM system.main.duckdb_views() WHERE NOT internal"
        )
        if defined := sorted({name for (name,) in cursor.fetchall()}):
            return ("TA-E601", f"the database defines functions or views {defined[:5]}"), 0
        cursor.execute(
            "SELECT count(*) FROM system.main.duckdb_tables() "
            "WHERE schema_name = 'main' AND table_name = ?",
            (table,),
        )
        if cursor.fetchall() != [(1,)]:
            return ("TA-E601", f"table {table!r} is absent (no base table of that name)"), 0
        cursor.execute(
            "SELECT column_name FROM system.main.duckdb_columns() WHERE schema_name = 'main' "
            "AND table_name = ? AND column_default IS NOT NULL",
            (table,),
        )
        if computed := [name for (name,) in cursor.fetchall()]:
            return ("TA-E601", f"table {table!r} has computed columns {computed}"), 0
        cursor.execute(f'SELECT * FROM "{table}" LIMIT 0')
        schema = cursor.fetch_arrow_table().schema
        buffers = structure.awkward_form.expected_from_buffers()
        expected = {
            name.lower(): f"list<{pyarrow.from_numpy_dtype(t)}>" for name, t in buffers.items()
        }
        expected.update(_KEY_COLUMNS)
        found = {field.name.lower(): _type_name(field.type) for field in schema}
        if found != expected:
            return (
                "TA-E601",
                f"table {table!r} has columns {found}, not the {expected} its structure needs",
            ), 0
        chunks = list(structure.chunks[0] or ())
        cursor.execute(
            f'SELECT chunk_index FROM "{table}" WHERE _dataset_id = ? '
            f"ORDER BY chunk_index LIMIT {len(chunks) + 1}",
            (dataset,),
        )
        if (held := [index for (index,) in cursor.fetchall()]) != list(range(len(chunks))):
            return (
                "TA-E602",
                f"table {table!r} holds chunks {held[:10]} of dataset {dataset}; the "
                f"structure has {len(chunks)}",
            ), 0
        values = _stored_values(cursor, table, buffers)
        # Over the budget the table is never read (TA-E912), so its values are not loaded
        # here either.
        if values + file_size > read_budget():
            return None, values
        return _levels_problem(cursor, table, dataset, structure, chunks), values


def _stored_values(cursor: Any, table: str, buffers: dict[str, Any]) -> int:
    """The bytes of the values the buffer columns store, all rows counted, from DuckDB's
    storage metadata (no value is loaded)."""
    cursor.execute(
        "SELECT lower(column_name), sum(count) FROM system.main.pragma_storage_info("
        f"'{table}') WHERE segment_type <> 'VALIDITY' AND segment_type NOT LIKE '%[]' "
        "GROUP BY ALL"
    )
    counts = dict(cursor.fetchall())
    return sum(int(counts.get(name.lower(), 0)) * t.itemsize for name, t in buffers.items())


def _levels_problem(
    cursor: Any, table: str, dataset: int, structure: Any, chunks: list[int]
) -> tuple[str, str] | None:
    """Walk the awkward form from the outside in, for all chunks at once: each
    buffer holds exactly what awkward's ``from_buffers`` reads for the level above it, as
    Tiled's writer stores it (``n + 1`` offsets for ``n`` lists, no NULLs, offsets from 0 up
    and never decreasing; as many values as the innermost lists end at), and the values the
    rows reach are the structure's ``size``. Anything else decodes to other values than the
    table holds, or fails inside awkward."""
    if not chunks:
        return None
    # Per chunk: this level's length, and the first item the chunk's rows reach (an array
    # written from a slice keeps the items before it: its offsets need not start at 0).
    length = dict(enumerate(chunks))
    first = dict.fromkeys(length, 0)
    form = structure.awkward_form
    while True:
        kind = type(form).__name__
        if kind == "RegularForm":
            length = {i: n * form.size for i, n in length.items()}
            first = {i: n * form.size for i, n in first.items()}
            form = form.content
            continue
        if kind not in ("ListOffsetForm", "NumpyForm"):
            return ("TA-E601", f"table {table!r}: awkward form {kind} is not Tiled's ragged form")
        column = f"{form.form_key}-offsets" if kind == "ListOffsetForm" else f"{form.form_key}-data"
        rows = _level_rows(cursor, table, dataset, column.lower(), length, first)
        for index, is_null, values, non_null, head, last, reached, ordered in rows:
            where = f"table {table!r}, chunk {index}, buffer {column!r}"
            if is_null or non_null != values:
                return ("TA-E601", f"{where} holds NULL values (Tiled writes none)")
            if kind == "NumpyForm":
                items = length[index] * math.prod(form.inner_shape)
                if values != items:
                    return ("TA-E602", f"{where} holds {values} values; its lists end at {items}")
                continue
            if values != length[index] + 1:
                return (
                    "TA-E602",
                    f"{where} holds {values} offsets; {length[index]} lists need "
                    f"{length[index] + 1}",
                )
            if head < 0 or not ordered:
                return ("TA-E601", f"{where}: offsets are negative or decrease")
            length[index], first[index] = last, reached
        if kind == "NumpyForm":
            break
        form = form.content
    inner = math.prod(form.inner_shape)
    reached = sum((length[i] - first[i]) * inner for i in length)
    if reached != structure.size:
        return (
            "TA-E602",
            f"table {table!r}: the rows reach {reached} values; the structure's size is "
            f"{structure.size}",
        )
    return None


def _level_rows(
    cursor: Any, table: str, dataset: int, column: str, length: dict, first: dict
) -> list[tuple]:
    """Per chunk (in order): is the list NULL, its length and non-NULL count; for offsets
    also its first item, the item at this level's length, the item the chunk's rows reach
    first, and whether it never decreases (DuckDB lists count from 1). Values are only
    counted: their order is not looked at."""
    chunks = ", ".join(f"({i}, {length[i]}, {first[i]})" for i in sorted(length))
    c = f'"{column}"'
    offsets = (
        f"{c}[1], {c}[v.n + 1], {c}[v.lo + 1], coalesce(system.main.list_bool_and("
        f"system.main.list_transform(system.main.range(1, system.main.len({c})), "
        f"i -> {c}[i] <= {c}[i + 1])), true)"
        if column.endswith("-offsets")
        else "NULL, NULL, NULL, NULL"
    )
    cursor.execute(
        f"SELECT v.chunk, {c} IS NULL, system.main.len({c}), system.main.list_count({c}), "
        f'{offsets} FROM "{table}" t JOIN (VALUES {chunks}) v(chunk, n, lo) '
        "ON t.chunk_index = v.chunk WHERE t._dataset_id = ? ORDER BY v.chunk",
        (dataset,),
    )
    return cursor.fetchall()


def load_chunks(
    conn: Any, table: str, dataset: int, buffers: list[str], chunk_indexes: list[int]
) -> list[dict[str, Any]]:
    """The rows of ``chunk_indexes`` (in order), each buffer as a NumPy array. Tiled's own
    loader makes a Python object of every value (Arrow's ``to_pylist``): about 11 times the
    buffers' bytes, past any read budget."""
    if not chunk_indexes:
        return []
    columns = ", ".join(f'"{name.lower()}"' for name in buffers)
    listed = ", ".join(str(int(i)) for i in chunk_indexes)
    with conn.cursor() as cursor:
        cursor.execute(
            f'SELECT {columns} FROM "{table}" WHERE _dataset_id = ? '
            f"AND chunk_index IN ({listed}) ORDER BY chunk_index",
            (dataset,),
        )
        data = cursor.fetch_arrow_table()
    lists = {name: data.column(name.lower()).combine_chunks() for name in buffers}
    return [
        {name: lists[name][row].values.to_numpy(zero_copy_only=False) for name in buffers}
        for row in range(data.num_rows)
    ]


def _type_name(arrow_type: Any) -> str:
    """An Arrow type as text, lists without their (arbitrary) item field name."""
    import pyarrow

    if pyarrow.types.is_list(arrow_type) or pyarrow.types.is_large_list(arrow_type):
        return f"list<{arrow_type.value_type}>"
    return str(arrow_type)


@contextlib.contextmanager
def _local(source: ByteSource, member: str) -> Iterator[Path]:
    """A local file with the member's bytes (DuckDB opens files by name): the file itself in a
    directory archive, a temporary copy of a ZIP member."""
    span = source.span(member)
    if span is not None and span.offset == 0 and span.file.stat().st_size == span.length:
        yield span.file
        return
    with tempfile.TemporaryDirectory(prefix="tiled-archive-duckdb-") as folder:
        path = Path(folder, "ragged.duckdb")
        with source.open(member) as handle, open(path, "wb") as sink:
            shutil.copyfileobj(handle, sink, 1 << 20)
        yield path
