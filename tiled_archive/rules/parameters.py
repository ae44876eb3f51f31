"""The ``data_sources.parameters`` an archive may carry, as named sets (TA-E508): which keys, and
which values, checked how. :mod:`.formats` says which mimetype takes which set.

Tiled passes a data source's parameters to its adapter as keyword arguments
(``from_catalog(data_source, node, **parameters)``), and several adapters hand them on to the
library that reads the file: ``data_uri`` to a TIFF or NPY adapter opens any file, CSV
parameters go to ``pandas.read_csv`` (``compression``, ``storage_options``, ``engine``...).
So an archive may carry only the keys Tiled's own registration and writers produce, with the
JSON types they produce; the table is the spec's (section 3.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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


@dataclass(frozen=True)
class Allowed:
    """One parameter a mimetype may carry: how its value is checked, and what the spec says."""

    check: Callable[[Any], bool]
    description: str


#: An HDF5 file's adapter parameters, as Tiled's HDF5 registration writes them.
HDF5_PARAMETERS: dict[str, Allowed] = {
    "dataset": Allowed(
        _is_hdf5_path,
        "a path inside the file: a string, or a list of strings (its segments); no empty, "
        "`.` or `..` segment",
    ),
    "swmr": Allowed(_is_bool, "`true` or `false`"),
    "libver": Allowed(
        _one_of("earliest", "latest", "v108", "v110", "v112", "v114"),
        "`earliest`, `latest`, `v108`, `v110`, `v112` or `v114`",
    ),
    "locking": Allowed(
        lambda v: v is None or isinstance(v, bool) or v == "best-effort",
        "`true`, `false`, `null` or `best-effort`",
    ),
    "slice": Allowed(
        lambda v: isinstance(v, str) and _NUMPY_SLICE.fullmatch(v) is not None,
        "a NumPy index as text: digits, `-`, `:`, `,`, `.`, spaces and brackets",
    ),
    "squeeze": Allowed(_is_bool, "`true` or `false`"),
}
#: A CSV file's separator, under either of the names pandas takes.
CSV_PARAMETERS: dict[str, Allowed] = {
    key: Allowed(
        lambda v: isinstance(v, str) and len(v) == 1 and v not in "\x00\r\n",
        "one character (not NUL, CR or LF)",
    )
    for key in ("sep", "delimiter")
}
#: Tiled's ragged writer names the table in its SQL (quoted, so no quote may be in it) and
#: selects the rows by dataset; both are required (section 3.3).
RAGGED_PARAMETERS: dict[str, Allowed] = {
    "table_name": Allowed(
        lambda v: isinstance(v, str) and _RAGGED_TABLE.fullmatch(v) is not None,
        "`table_` and 32 lowercase hex digits, as Tiled names it",
    ),
    "dataset_id": Allowed(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31,
        "a positive 32-bit integer",
    ),
}
#: The adapter arguments an asset may be given as (``data_source_asset_association``).
ASSET_PARAMETERS = ("data_uri", "data_uris")
_NUMPY_SLICE = re.compile(r"[\[(]?[-0-9:., ]*[\])]?")
_RAGGED_TABLE = re.compile(r"table_[0-9a-f]{32}")
