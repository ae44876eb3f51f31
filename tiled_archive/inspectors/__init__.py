"""What a data file may say, checked before any library reads it for Tiled.

An archive is untrusted input, and so is every data file in it: an HDF5 file can name other
files for the HDF5 library to open, a header can declare far more data than the member holds,
a few compressed bytes can decode to gigabytes. The checks here read only the files' own
headers and metadata, through a :class:`~tiled_archive.sources.ByteSource` (so only archive
members are ever opened), and give

- findings: the format rules a data source's files break (TA-E600 a file refers to another
  file, TA-E601 a file that cannot be read as its mimetype says, TA-E602 a declared size the
  bytes or the catalog contradict), reported by ``validate`` and refused before a read;
- costs: what reading it will decode, for the reader's memory budget
  (:mod:`tiled_archive.rules.budget`) and for ``validate``'s decompression warning (TA-W600).

One module per format; :func:`inspect` picks by mimetype. Parameters a data source may carry
are in :mod:`tiled_archive.rules.formats`; what the catalog's rows may say,
:mod:`tiled_archive.rules.catalog_rows`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..files.space import out_of_space
from ..rules.budget import BOMB_MIN_BYTES, BOMB_RATIO, ChunkGrid
from ..rules.catalog_rows import DataSourceRow
from ..rules.formats import format_of, parameter_problems
from ..rules.problems import ArchiveError, Problem
from ..sources import ByteSource


@dataclass(frozen=True)
class Dataset:
    """One array inside a file or store (an HDF5 dataset, an array of a Zarr group), by path:
    its itemsize, storage chunk bytes (None: contiguous) and chunk grid."""

    path: str
    itemsize: int
    chunk_bytes: int | None
    grid: ChunkGrid | None = None


@dataclass
class Inspection:
    """What checking one data source found, and what reading it costs.

    ``decoded`` and ``stored`` give the bytes the whole data source decodes to and the bytes it
    occupies (None when not known); ``unit`` is the most one read decodes at once whatever
    slice is asked for (a chunk, a whole TIFF page series, a ragged array's stored values);
    ``partitions`` the decoded bytes of each table partition; ``opened`` what making the
    adapter decodes, before any read (an Excel workbook: every sheet); ``datasets`` the arrays
    inside a file or store by path (HDF5 datasets, a Zarr group's arrays); ``grid`` an array
    data source's storage chunks, whose number costs memory whatever their bytes.
    """

    problems: list[Problem] = field(default_factory=list)
    decoded: int | None = None
    stored: int | None = None
    unit: int | None = None
    partitions: list[int] | None = None
    opened: int | None = None
    datasets: dict[str, Dataset] | None = None
    grid: ChunkGrid | None = None

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
    """Check the files of one data source against what its catalog row declares (its
    mimetype's inspector, as :data:`~tiled_archive.rules.formats.FORMATS` names it)."""
    row_format = format_of(row.mimetype)
    result = Inspection()
    result.problems.extend(parameter_problems(row))
    members = source.members()
    if row_format.inspector is not None and all(
        a.member in members or a.is_directory for a in row.assets
    ):  # a missing member is TA-E504, reported by the catalog checks
        _inspector(row_format.inspector)(source, row, result)
    return result


def _inspector(name: str) -> Inspector:
    """``module.function`` of this package (the module imported on first use)."""
    module, function = name.split(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def not_the_file(err: BaseException) -> None:
    """Raise what a library met that is not the file's fault: an operational error of the
    byte source (``TA-E9xx``: a lazy file that could not be fetched), or a full disk
    (TA-E906). An inspector calls it first when a library fails, then reports the rest as
    the file's."""
    if isinstance(err, ArchiveError):
        if err.code.startswith("TA-E9"):
            raise err
        return
    full = out_of_space(err)
    if full is not None:
        raise full from None


def add(result: Inspection, code: str, path: str, message: str, hint: str | None = None) -> None:
    """A finding on ``result`` (``hint``: for this case, when the code's own would not fit)."""
    result.problems.append(Problem(code, path, message, hint))
