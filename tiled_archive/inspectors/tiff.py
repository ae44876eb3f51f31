"""TIFF files (one, or a numbered sequence): page headers against the bytes and the catalog.

Tiled reads a TIFF whole (``TiffFile.asarray``), so one read decodes every page of its first
series whatever slice is asked for: that is the read's unit for the budget.
"""

from __future__ import annotations

from typing import Any

from ..rules.budget import nbytes
from ..rules.catalog_rows import DataSourceRow
from ..rules.problems import reason
from ..sources import ByteSource
from . import Inspection, add, not_the_file
from .npy import frame_problem, frames_of

#: IFDs parsed per file at the most (a crafted file can chain millions of them).
MAX_PAGES = 100_000


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    import tifffile

    structure, frames = frames_of(row, result)
    stored = decoded = unit = 0
    for path in frames:
        size = source.members()[path].size
        stored += size
        try:
            # _multifile=False: an OME-TIFF's series would open the files its XML names.
            with (
                source.open(path) as handle,
                tifffile.TiffFile(handle, name=path, _multifile=False) as tif,
            ):
                if len(tif.pages) > MAX_PAGES:
                    add(result, "TA-E601", path, f"more than {MAX_PAGES} pages")
                    continue
                other = other_ome_file(tif, path.rsplit("/", 1)[-1])
                if other is not None:
                    add(result, "TA-E600", path, f"OME-XML names another file: {other!r}")
                    continue
                series = tif.series[0]
                shape, dtype = tuple(series.shape), series.dtype
                pages = [p for p in series.pages if p is not None]
                short = [
                    page.index
                    for page in pages
                    if page.compression == 1 and sum(page.databytecounts) < page.nbytes
                ]
                outside = [
                    page.index
                    for page in pages
                    if any(
                        o + c > size
                        for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)
                    )
                ]
        except Exception as err:  # noqa: BLE001 -- tifffile raises many types on bad input
            not_the_file(err)
            add(result, "TA-E601", path, f"not a readable TIFF file: {reason(err)}")
            continue
        if outside:
            add(result, "TA-E602", path, f"page {outside[0]} has data beyond the file's end")
            continue
        if short:
            add(
                result,
                "TA-E602",
                path,
                f"uncompressed page {short[0]} declares more bytes than it stores",
            )
            continue
        file_bytes = nbytes(shape, dtype.itemsize)
        decoded += file_bytes
        unit = max(unit, file_bytes)
        problem = frame_problem(structure, shape, dtype, len(frames), row.mimetype)
        if problem:
            add(result, "TA-E602", path, problem)
    result.stored, result.decoded, result.unit = stored, decoded, unit


def other_ome_file(tif: Any, own_name: str) -> str | None:
    """The first file other than itself that an OME-TIFF's XML names (``UUID FileName``):
    tifffile opens such files, by a path joined onto this file's folder, to build the series."""
    if not tif.is_ome:
        return None
    import re

    for name in re.findall(r"""FileName\s*=\s*["']([^"']*)["']""", tif.ome_metadata or ""):
        if name != own_name:
            return name
    return None
