"""Which ``data_sources.parameters`` keys each mimetype may carry in an archive (TA-E508).

Tiled passes a data source's parameters to its adapter as keyword arguments
(``from_catalog(data_source, node, **parameters)``), and several adapters hand them on to the
library that reads the file: ``data_uri`` to a TIFF or NPY adapter opens any file, CSV
parameters go to ``pandas.read_csv`` (``compression``, ``storage_options``, ``engine``...).
So an archive may carry only the keys Tiled's own registration and writers produce, with the
JSON types they produce; the table is the spec's (section 3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..format import Problem


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_hdf5_path(value: Any) -> bool:
    """An HDF5 path inside the file: a string or a list of segments, no empty/`..` segment."""
    segments = value if isinstance(value, list) else [value]
    if not all(isinstance(s, str) for s in segments):
        return False
    parts = [p for s in segments for p in s.strip("/").split("/") if s.strip("/")]
    return all(p not in ("", ".", "..") and "\x00" not in p for p in parts)


def _one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value in allowed


#: mimetype -> {key: check of the JSON value}. A mimetype absent from the table takes none.
ALLOWED: dict[str, dict[str, Callable[[Any], bool]]] = {
    "application/x-hdf5": {
        "dataset": _is_hdf5_path,
        "swmr": _is_bool,
        "libver": _one_of("earliest", "latest", "v108", "v110", "v112", "v114"),
        "locking": lambda v: v is None or isinstance(v, bool) or v == "best-effort",
    },
}


def parameter_problems(row: Any, where: str | None) -> Iterator[Problem]:
    """TA-E508 for every key of the row's parameters its mimetype may not carry."""
    allowed = ALLOWED.get(row.mimetype, {})
    for key, value in sorted(row.parameters.items()):
        check = allowed.get(key)
        if check is None:
            yield Problem(
                "TA-E508",
                where or f"data source {row.id}",
                f"data source {row.id} (node {row.node!r}, {row.mimetype}) carries "
                f"parameter {key!r}, which that mimetype may not",
            )
        elif not check(value):
            yield Problem(
                "TA-E508",
                where or f"data source {row.id}",
                f"data source {row.id} (node {row.node!r}): parameter {key!r} = "
                f"{str(value)[:80]!r} is not an allowed value",
            )
