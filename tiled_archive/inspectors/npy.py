"""NPY files (one, or a numbered sequence): the header against the bytes and the catalog."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..rules.budget import nbytes
from ..rules.catalog_rows import DataSourceRow
from ..rules.problems import reason
from ..rules.structures import declared_dtype, structure_of
from ..sources import ByteSource
from . import Inspection, add, not_the_file


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
    structure, frames = frames_of(row, result)
    stored = 0
    for path in frames:
        size = source.members()[path].size
        stored += size
        try:
            with source.open(path) as handle:
                shape, _, dtype, header = read_header(handle)
        except Exception as err:  # noqa: BLE001 -- numpy parses the header with ast/tokenize
            not_the_file(err)
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
        problem = frame_problem(structure, shape, dtype, len(frames), row.mimetype)
        if problem:
            add(result, "TA-E602", path, problem)
    result.stored = stored
    result.decoded = stored


def frames_of(row: DataSourceRow, result: Inspection) -> tuple[Any, list[str]]:
    """The structure and files of an array stored one file per frame (NPY, TIFF, JPEG), with
    TA-E602 added when its chunks are not the ones Tiled's adapter serves."""
    structure = structure_of(row)
    chunking = chunk_mismatch(structure, row.mimetype)
    if chunking is not None:
        add(result, "TA-E602", row.where, chunking)
    return structure, row.members()


def frame_problem(
    structure: Any, shape: tuple[int, ...], dtype: Any, files: int, mimetype: str
) -> str | None:
    """How one file's own shape and dtype disagree with the catalog's structure (None when
    they agree, or when there is no array structure to compare: TA-E506's)."""
    if not hasattr(structure, "shape"):
        return None
    expected = declared_dtype(structure)
    if frame_mismatch(structure.shape, shape, files, mimetype) or (
        expected is not None and dtype != expected
    ):
        return (
            f"the file holds {shape} {dtype}, the catalog says {tuple(structure.shape)} {expected}"
        )
    return None


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


def chunk_mismatch(structure: Any, mimetype: str) -> str | None:
    """Why an NPY or TIFF array's ``chunks`` are not the ones Tiled's adapter serves (None
    when they are): one file is one chunk (``read_block`` serves block 0 only, and serves it
    whole), so every dimension has one chunk, its length; a sequence is sliced along its
    first dimension only, whose chunk lengths add up to its length."""
    if not hasattr(structure, "shape") or not hasattr(structure, "chunks"):
        return None  # none, or another family's (TA-E506)
    shape = tuple(structure.shape)
    chunks = tuple(tuple(lengths) for lengths in structure.chunks)
    whole = tuple((length,) for length in shape)
    if mimetype.startswith("multipart/related"):
        leading = chunks[0] if chunks else ()
        if (
            shape
            and len(chunks) == len(shape)
            and chunks[1:] == whole[1:]
            and sum(leading) == shape[0]
            and all(n > 0 for n in leading)
        ):
            return None
        return (
            f"the catalog chunks {list(map(list, chunks))} a sequence of shape {list(shape)}; "
            "Tiled serves only its first dimension in chunks (adding up to its length), every "
            "other dimension whole"
        )
    if chunks == whole:
        return None
    return (
        f"the catalog chunks {list(map(list, chunks))} an array of shape {list(shape)}; "
        f"Tiled serves one file as one chunk: {list(map(list, whole))}"
    )
