"""NPY files (one, or a numbered sequence): the header against the bytes and the catalog."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..sources import ByteSource
from . import DataSourceRow, Inspection, add, declared_dtype, reason, structure_of
from .budget import nbytes


def read_header(handle: Any) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, header length) of an open .npy file; ValueError when the
    header is not NumPy's (numpy bounds the header's size itself)."""
    major, _ = np.lib.format.read_magic(handle)
    read = {
        1: np.lib.format.read_array_header_1_0,
        2: np.lib.format.read_array_header_2_0,
    }.get(major)
    if read is None:
        raise ValueError(f"NPY format version {major} is not supported")
    shape, fortran, dtype = read(handle)
    return tuple(shape), fortran, dtype, handle.tell()


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    structure = structure_of(row)
    frames = row.members()
    stored = 0
    for path in frames:
        size = source.members()[path].size
        stored += size
        try:
            with source.open(path) as handle:
                shape, _, dtype, header = read_header(handle)
        except Exception as err:  # noqa: BLE001 -- numpy parses the header with ast/tokenize
            add(result, "TA-E601", path, f"not a readable .npy file: {reason(err)}")
            continue
        if dtype.hasobject:
            add(result, "TA-E601", path, "holds Python objects (read only by unpickling)")
            continue
        declared = nbytes(shape, dtype.itemsize)
        if declared != size - header:
            add(
                result,
                "TA-E602",
                path,
                f"header declares {shape} {dtype} = {declared} bytes, the file holds "
                f"{size - header} after its header",
            )
            continue
        if not hasattr(structure, "shape"):  # none, or another family's (TA-E506)
            continue
        problem = frame_mismatch(structure.shape, shape, len(frames), row.mimetype)
        expected_dtype = declared_dtype(structure)
        if problem or (expected_dtype is not None and dtype != expected_dtype):
            add(
                result,
                "TA-E602",
                path,
                f"header says {shape} {dtype}, the catalog {tuple(structure.shape)} "
                f"{expected_dtype}",
            )
    result.stored = stored
    result.decoded = stored


def frame_mismatch(
    declared: tuple[int, ...], frame: tuple[int, ...], files: int, mimetype: str
) -> bool:
    """Whether one file's array of shape ``frame`` disagrees with the catalog's ``declared``
    shape: equal for a single file; for a sequence (``multipart/related``) the trailing axes
    equal and the leading ones enumerate the files, as Tiled lays them out."""
    declared = tuple(declared)
    if not mimetype.startswith("multipart/related"):
        return declared != tuple(frame)
    lead = len(declared) - len(frame)
    return lead < 1 or declared[lead:] != tuple(frame) or math.prod(declared[:lead]) != files
