"""What a data file may say, checked before any library reads it for Tiled.

An archive is untrusted input, and so is every data file in it: an HDF5 file can name other
files for the HDF5 library to open, a header can declare far more data than the member holds,
a few compressed bytes can decode to gigabytes. The checks here read only the files' own
headers and metadata, through a :class:`~tiled_archive.sources.ByteSource` (so only archive
members are ever opened), and give

- findings: the format rules a data source's files break (TA-E600 a file refers to another
  file, TA-E601 a file that cannot be read as its mimetype says, TA-E602 a declared size the
  bytes or the catalog contradict), reported by ``validate`` and refused before a read;
- costs: what reading it will decode, for the reader's memory budget (:mod:`.budget`) and for
  ``validate``'s decompression warning (TA-W600).

One module per format; :func:`inspect` picks by mimetype. Parameters a data source may carry
are :mod:`.parameters`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..format import JSONTooDeep, Problem, clip, load_json
from ..sources import ByteSource
from .budget import BOMB_MIN_BYTES, BOMB_RATIO


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


@dataclass
class Inspection:
    """What checking one data source found, and what reading it costs.

    ``decoded`` and ``stored`` give the bytes the whole data source decodes to and the bytes it
    occupies (None when not known); ``unit`` is the most one read decodes at once whatever
    slice is asked for (a chunk, a whole TIFF page series); ``partitions`` the decoded bytes of
    each table partition; ``datasets`` HDF5 datasets' chunk sizes by path inside the file.
    """

    problems: list[Problem] = field(default_factory=list)
    decoded: int | None = None
    stored: int | None = None
    unit: int | None = None
    partitions: list[int] | None = None
    datasets: dict[str, Any] | None = None

    def bomb_warning(self, path: str) -> Problem | None:
        """TA-W600 when the data decodes to more than BOMB_RATIO times what it stores."""
        if self.decoded is None or not self.stored or self.decoded < BOMB_MIN_BYTES:
            return None
        ratio = self.decoded / self.stored
        if ratio <= BOMB_RATIO:
            return None
        return Problem(
            "TA-W600",
            path,
            f"{self.stored} bytes stored decode to {self.decoded} bytes ({ratio:.0f}:1)",
        )


Inspector = Callable[[ByteSource, DataSourceRow, Inspection], None]


def inspect(source: ByteSource, row: DataSourceRow) -> Inspection:
    """Check the files of one data source against what its catalog row declares."""
    from . import hdf5, npy, tables, tiff, zarr
    from .parameters import parameter_problems

    result = Inspection()
    result.problems.extend(parameter_problems(row))
    inspectors: dict[str, Inspector] = {
        "application/x-hdf5": hdf5.inspect,
        "application/x-netcdf": hdf5.inspect_netcdf,
        "application/x-npy": npy.inspect,
        "multipart/related;type=application/x-npy": npy.inspect,
        "image/tiff": tiff.inspect,
        "multipart/related;type=image/tiff": tiff.inspect,
        "application/x-zarr": zarr.inspect,
        "application/x-parquet": tables.inspect_parquet,
        "application/x-parquet;structure=sparse": tables.inspect_parquet,
        "text/csv": tables.inspect_csv,
        "text/csv;header=present": tables.inspect_csv,
        "text/csv;header=absent": tables.inspect_csv,
        "multipart/related;type=text/csv": tables.inspect_csv,
    }
    inspector = inspectors.get(row.mimetype)
    members = source.members()
    if inspector is not None and all(
        a.member in members or a.is_directory for a in row.assets
    ):  # a missing member is TA-E504, reported by the catalog checks
        inspector(source, row, result)
    return result


_ROWS_SQL = (
    "SELECT d.id, n.key, d.structure_family, d.mimetype, d.parameters, s.structure"
    " FROM data_sources d LEFT JOIN nodes n ON n.id = d.node_id"
    " LEFT JOIN structures s ON s.id = d.structure_id ORDER BY d.id"
)
_ASSETS_SQL = (
    "SELECT x.data_source_id, a.data_uri, a.is_directory, x.parameter, x.num"
    " FROM data_source_asset_association x JOIN assets a ON a.id = x.asset_id"
    " ORDER BY x.data_source_id, x.num"
)


def data_source_rows(
    conn: sqlite3.Connection, member_of: Callable[[str], str | None]
) -> tuple[list[DataSourceRow], list[Problem]]:
    """Every data source of a catalog whose JSON decodes, with its assets as archive members
    (``member_of`` maps a data URI to a member, or None for one that names none: reported by
    the asset checks, and its data source is left out). The problems are JSON nested too deeply
    (TA-E509); other undecodable rows are TA-E506, reported by the catalog checks."""
    assets: dict[int, list[AssetRef]] = {}
    unresolved: set[int] = set()
    for source_id, uri, is_directory, parameter, num in conn.execute(_ASSETS_SQL):
        member = member_of(uri) if isinstance(uri, str) else None
        if member is None:
            unresolved.add(source_id)
        else:
            assets.setdefault(source_id, []).append(
                AssetRef(member, bool(is_directory), parameter, num)
            )
    rows, problems = [], []
    for source_id, key, family, mimetype, parameters, structure in conn.execute(_ROWS_SQL):
        decoded = []
        for column, value in (("parameters", parameters), ("structure", structure)):
            try:
                decoded.append(None if value is None else load_json(value))
            except (ValueError, TypeError) as err:
                if isinstance(err, JSONTooDeep):
                    problems.append(
                        Problem(
                            "TA-E509", f"catalog.db data source {source_id}", f"{column}: {err}"
                        )
                    )
                decoded.append(_UNDECODABLE)
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
    return rows, problems


_UNDECODABLE = object()


def node_json_problems(conn: sqlite3.Connection) -> list[Problem]:
    """TA-E509 for each node whose metadata or specs nest deeper than the format allows
    (Tiled's JSON encoders recurse, so such a node could not even be listed)."""
    problems = []
    for node_id, key, metadata, specs in conn.execute(
        "SELECT id, key, metadata, specs FROM nodes ORDER BY id"
    ):
        for column, value in (("metadata", metadata), ("specs", specs)):
            if not isinstance(value, (str, bytes)):
                continue
            try:
                load_json(value)
            except JSONTooDeep as err:
                problems.append(
                    Problem("TA-E509", f"catalog.db node {node_id} ({key!r})", f"{column}: {err}")
                )
    return problems


def reason(err: BaseException) -> str:
    """What a library's exception says, for a user: its message's first line (no exception
    class names, no traceback), at most 300 characters."""
    text = str(err).strip()
    if not text:
        return "the file's library could not read it"
    line = text.splitlines()[0]
    return clip(f"no entry {line}" if isinstance(err, KeyError) else line)


def add(result: Inspection, code: str, path: str, message: str) -> None:
    result.problems.append(Problem(code, path, message))


def structure_of(row: DataSourceRow) -> Any:
    """The row's structure as Tiled's structure class; None when it has none, or one Tiled
    cannot load (TA-E506, reported by the catalog checks)."""
    if row.structure is None:
        return None
    from tiled.structures.core import STRUCTURE_TYPES, StructureFamily

    try:
        structure_class = STRUCTURE_TYPES[StructureFamily(row.family)]
    except (KeyError, ValueError):
        return None
    if structure_problem(structure_class, row.structure) is not None:
        return None
    return structure_class.from_json(row.structure)


def structure_problem(structure_class: type, decoded: object) -> str | None:
    """Why Tiled's own structure class refuses ``decoded`` (None when it accepts it).

    As Tiled reads it (``from_json``, which is lenient), then type-checked field by field
    (pydantic over the same dataclass), then what Tiled derives from it when serving: the
    numpy dtype of an array, the Arrow schema of a table.
    """
    if not isinstance(decoded, dict):
        return "not a JSON object"
    try:
        structure = structure_class.from_json(decoded)  # type: ignore[attr-defined]
        _type_adapter(structure_class).validate_python(decoded)
        if hasattr(structure, "data_type"):
            structure.data_type.to_numpy_dtype()
        if hasattr(structure, "arrow_schema"):
            _ = structure.arrow_schema_decoded
    # Tiled's decoders run on untrusted JSON and fail in many ways (KeyError, TypeError,
    # ValueError, pydantic and pyarrow errors...): any exception means Tiled cannot load it.
    except Exception as err:
        return reason(err)
    return None


@cache
def _type_adapter(structure_class: type) -> Any:
    import pydantic

    return pydantic.TypeAdapter(structure_class)


def declared_dtype(structure: Any) -> Any:
    """The NumPy dtype of an array structure (None when it cannot be decoded: TA-E506)."""
    try:
        return structure.data_type.to_numpy_dtype()
    except Exception:  # noqa: BLE001 -- as structure_of
        return None
