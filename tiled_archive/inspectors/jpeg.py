"""JPEG files (one, or a numbered sequence): frame headers against the catalog.

Tiled's JPEG adapters decode a file whole (``numpy.asarray(Image.open(path))``) for any
slice, and a few kilobytes of JPEG can declare 65,535 x 65,535 pixels: so the header's size
is checked against the catalog's shape (which the budget counts) and a whole file is each
read's unit. A progressive JPEG is decoded from coefficient buffers of 2 bytes per sample
held for the whole image, so it counts three times its pixels.
"""

from __future__ import annotations

import warnings

from ..rules.budget import nbytes
from ..rules.catalog_rows import DataSourceRow
from ..rules.problems import reason
from ..sources import ByteSource
from . import Inspection, add, not_the_file
from .npy import frame_problem, frames_of

#: The modes Pillow decodes a JPEG to, and the samples per pixel of each (all 8-bit).
BANDS = {"L": 1, "RGB": 3, "CMYK": 4}
PROGRESSIVE_FACTOR = 3


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    import numpy as np
    from PIL import Image

    structure, frames = frames_of(row, result)
    stored = decoded = unit = 0
    for path in frames:
        stored += source.members()[path].size
        try:
            with (
                source.open(path) as handle,
                warnings.catch_warnings(),
            ):
                # Pillow warns of (and past twice the limit refuses) huge images: the budget
                # below decides, with a code.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(handle, formats=["JPEG"]) as image:
                    width, height = image.size
                    mode, progressive = image.mode, bool(image.info.get("progressive"))
        except Exception as err:  # noqa: BLE001 -- Pillow raises many types on bad input
            not_the_file(err)
            add(result, "TA-E601", path, f"not a readable JPEG file: {reason(err)}")
            continue
        if mode not in BANDS:
            add(result, "TA-E601", path, f"a JPEG of mode {mode!r}, which Tiled cannot serve")
            continue
        shape = (height, width) if BANDS[mode] == 1 else (height, width, BANDS[mode])
        file_bytes = nbytes(shape, 1)
        decoded += file_bytes
        unit = max(unit, file_bytes * (PROGRESSIVE_FACTOR if progressive else 1))
        problem = frame_problem(structure, shape, np.dtype("u1"), len(frames), row.mimetype)
        if problem:
            add(result, "TA-E602", path, problem)
    result.stored, result.decoded, result.unit = stored, decoded, unit
