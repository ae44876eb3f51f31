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
are :mod:`.parameters`; what the catalog's rows may say, :mod:`.catalog`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..format import Problem, clip
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
    slice is asked for (a chunk, a whole TIFF page series, a ragged array's stored values);
    ``partitions`` the decoded bytes of each table partition; ``opened`` what making the
    adapter decodes, before any read (an Excel workbook: every sheet); ``datasets`` HDF5
    datasets' chunk sizes by path inside the file.
    """

    problems: list[Problem] = field(default_factory=list)
    decoded: int | None = None
    stored: int | None = None
    unit: int | None = None
    partitions: list[int] | None = None
    opened: int | None = None
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
    from . import arrow, hdf5, jpeg, npy, ragged, tables, tiff, xlsx, zarr
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
        ragged.MIMETYPE: ragged.inspect,
        arrow.MIMETYPE: arrow.inspect,
        "image/jpeg": jpeg.inspect,
        "multipart/related;type=image/jpeg": jpeg.inspect,
        xlsx.MIMETYPE: xlsx.inspect,
    }
    inspector = inspectors.get(row.mimetype)
    members = source.members()
    if inspector is not None and all(
        a.member in members or a.is_directory for a in row.assets
    ):  # a missing member is TA-E504, reported by the catalog checks
        inspector(source, row, result)
    return result


def reason(err: BaseException) -> str:
    """What a library's exception says, for a user: its message's first line (no exception
    class names, no traceback), at most 300 characters."""
    details = getattr(err, "errors", None)
    if callable(details):  # pydantic: the first failing field says more than the summary line
        try:
            first = details()[0]
            where = ".".join(str(part) for part in first["loc"])
            return clip(f"{where}: {first['msg']}" if where else str(first["msg"]))
        except (TypeError, LookupError, AttributeError):
            pass
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
