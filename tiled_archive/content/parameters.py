"""Which ``data_sources.parameters`` keys each mimetype may carry in an archive (TA-E508).

Tiled passes a data source's parameters to its adapter as keyword arguments
(``from_catalog(data_source, node, **parameters)``), and several adapters hand them on to the
library that reads the file: ``data_uri`` to a TIFF or NPY adapter opens any file, CSV
parameters go to ``pandas.read_csv`` (``compression``, ``storage_options``, ``engine``...).
So an archive may carry only the keys Tiled's own registration and writers produce, with the
JSON types they produce; the table is the spec's (section 3.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..format import RAGGED_MIMETYPE, Problem


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


#: mimetype -> {key: what is allowed}. A mimetype absent from the table takes no parameter.
ALLOWED: dict[str, dict[str, Allowed]] = {
    "application/x-hdf5": {
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
    },
    **{
        mimetype: {
            key: Allowed(
                lambda v: isinstance(v, str) and len(v) == 1 and v not in "\x00\r\n",
                "one character (not NUL, CR or LF)",
            )
            for key in ("sep", "delimiter")
        }
        for mimetype in (
            "text/csv",
            "text/csv;header=present",
            "text/csv;header=absent",
            "multipart/related;type=text/csv",
        )
    },
    # Tiled's ragged writer names the table in its SQL (quoted, so no quote may be in it) and
    # selects the rows by dataset; both are required (section 3.3).
    RAGGED_MIMETYPE: {
        "table_name": Allowed(
            lambda v: isinstance(v, str) and _RAGGED_TABLE.fullmatch(v) is not None,
            "`table_` and 32 lowercase hex digits, as Tiled names it",
        ),
        "dataset_id": Allowed(
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31,
            "a positive 32-bit integer",
        ),
    },
}
#: The adapter arguments an asset may be given as (``data_source_asset_association``).
ASSET_PARAMETERS = ("data_uri", "data_uris")
#: How Tiled's adapter for a mimetype takes its files, where the association decides it
#: (``init_adapter_from_catalog`` and file sequences build the adapter's arguments from it):
#: one file as ``data_uri`` with ``num`` NULL (a ``num`` makes it a list), or a list as
#: ``data_uris``. Any other form ends every read of the node in a TypeError inside Tiled. The
#: adapters of the other mimetypes read their data source's assets themselves.
ASSET_FORMS: dict[str, str] = {
    **dict.fromkeys(("image/tiff", "image/jpeg", "application/x-npy"), "data_uri"),
    **dict.fromkeys(
        (
            "text/csv",
            "text/csv;header=present",
            "multipart/related;type=text/csv",
            "application/x-parquet",
            "application/x-parquet;structure=sparse",
            "application/vnd.apache.arrow.file",
            "multipart/related;type=image/tiff",
            "multipart/related;type=image/jpeg",
            "multipart/related;type=application/x-npy",
        ),
        "data_uris",
    ),
}
_ASSET_FORM_TEXT = {
    "data_uri": "`data_uri`, `num` NULL (one file)",
    "data_uris": "`data_uris` (a list, in `num` order: Tiled writes 0, 1, ...)",
}
_NUMPY_SLICE = re.compile(r"[\[(]?[-0-9:., ]*[\])]?")
_RAGGED_TABLE = re.compile(r"table_[0-9a-f]{32}")


def markdown_table() -> str:
    """The allow-list as it appears in spec/FORMAT.md section 3.2."""
    rows = ["| mimetype | parameter | value |", "|---|---|---|"]
    for mimetype, keys in ALLOWED.items():
        rows += [f"| `{mimetype}` | `{key}` | {a.description} |" for key, a in keys.items()]
    return "\n".join(rows) + "\n"


def asset_forms_table() -> str:
    """The asset forms as they appear in spec/FORMAT.md section 3.2."""
    rows = ["| mimetype | each asset's `parameter`, `num` |", "|---|---|"]
    rows += [f"| `{m}` | {_ASSET_FORM_TEXT[form]} |" for m, form in ASSET_FORMS.items()]
    return "\n".join(rows) + "\n"


def parameter_problems(row: Any) -> Iterator[Problem]:
    """TA-E508 for every key of the row's parameters its mimetype may not carry, and for an
    asset given to the adapter as anything but ``data_uri``/``data_uris``, or in another form
    than its mimetype's adapter takes (:data:`ASSET_FORMS`)."""
    for asset in row.assets:
        if asset.parameter not in ASSET_PARAMETERS:
            yield Problem(
                "TA-E508",
                asset.member,
                f"data source {row.id} (node {row.node!r}) gives this asset to its adapter as "
                f"{asset.parameter!r}, not data_uri or data_uris",
            )
            continue
        form = ASSET_FORMS.get(row.mimetype)
        if form == "data_uri" and (asset.parameter != form or asset.num is not None):
            yield Problem(
                "TA-E508",
                asset.member,
                f"data source {row.id} (node {row.node!r}, {row.mimetype}) gives this asset to "
                f"its adapter as {asset.parameter!r} with num {asset.num!r}; Tiled's adapter "
                "takes one file, as data_uri with num NULL",
            )
        elif form == "data_uris" and asset.parameter != form:
            yield Problem(
                "TA-E508",
                asset.member,
                f"data source {row.id} (node {row.node!r}, {row.mimetype}) gives this asset to "
                f"its adapter as {asset.parameter!r}; Tiled's adapter takes a list, data_uris",
            )
    allowed = ALLOWED.get(row.mimetype, {})
    for key, value in sorted(row.parameters.items()):
        rule = allowed.get(key)
        if rule is None:
            yield Problem(
                "TA-E508",
                row.where,
                f"data source {row.id} (node {row.node!r}, {row.mimetype}) carries "
                f"parameter {key!r}, which that mimetype may not",
            )
        elif not rule.check(value):
            yield Problem(
                "TA-E508",
                row.where,
                f"data source {row.id} (node {row.node!r}): parameter {key!r} = "
                f"{str(value)[:80]!r} is not an allowed value",
            )
