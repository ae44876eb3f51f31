"""The one table of data-source mimetypes: for each, what tiled-archive knows of it.

A row says which inspector checks its files before any library reads them
(:mod:`tiled_archive.inspectors`), which adapter parameters it may carry (:mod:`.parameters`,
TA-E508), how Tiled's adapter takes its files (``data_uri`` or ``data_uris``), and how a ZIP
member of it is read in place (else from a verified local copy). Every layer reads this table;
none keeps a map of its own. A mimetype absent from it is served by Tiled's stock adapter (if
Tiled has one), takes no parameter and has no inspector.

The spec's tables (section 3.2) are rendered from it (:func:`parameters_table`,
:func:`asset_forms_table`), and a test keeps them equal.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .names import RAGGED_MIMETYPE
from .parameters import (
    ASSET_PARAMETERS,
    CSV_PARAMETERS,
    HDF5_PARAMETERS,
    RAGGED_PARAMETERS,
    Allowed,
)
from .problems import Problem

ZARR_MIMETYPE = "application/x-zarr"
PARQUET_MIMETYPE = "application/x-parquet"
SPARSE_MIMETYPE = "application/x-parquet;structure=sparse"
ARROW_MIMETYPE = "application/vnd.apache.arrow.file"
AWKWARD_MIMETYPE = "application/x-awkward-buffers"
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@contextlib.contextmanager
def zarr_dtype_warnings_silenced() -> Iterator[None]:
    """Within the block, no ``UnstableSpecificationWarning`` from zarr (a FutureWarning).

    zarr warns whenever it turns the metadata of a v3 array of a data type that has no Zarr v3
    specification yet (fixed-length strings and bytes, structured) into JSON: whoever *writes*
    such an array should know that its form may change and other libraries may not read it.
    Tiled's Zarr group adapter turns its group's metadata into JSON to register it and to
    serve each subgroup's, so the warning reached a user of ``create`` or ``open`` reading a
    store someone else wrote, once per array and read. Matched by its message, so that zarr
    is not imported for it."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"The data type .* does not have a Zarr V3 specification",
            category=FutureWarning,
        )
        yield


@dataclass(frozen=True)
class Format:
    """One mimetype's row.

    - ``inspector``: ``module.function`` in :mod:`tiled_archive.inspectors`, or None (no checks);
    - ``parameters``: the adapter parameters it may carry (none when empty);
    - ``asset_form``: ``data_uri`` (one file, ``num`` NULL), ``data_uris`` (a list), or None
      where Tiled's adapter reads its data source's assets itself;
    - ``in_place``: how a STORED ZIP member is read without a copy (``hdf5``, ``npy``,
      ``tiff``, ``csv``, ``parquet``, ``npy-sequence``, ``tiff-sequence``), or None;
    - ``text_table``: a text table pandas reads (compression is never inferred from its name).
    """

    mimetype: str
    inspector: str | None = None
    parameters: Mapping[str, Allowed] = field(default_factory=dict)
    asset_form: str | None = None
    in_place: str | None = None
    text_table: bool = False


_CSV = {"inspector": "tables.inspect_csv", "parameters": CSV_PARAMETERS, "text_table": True}

#: mimetype -> its row. The order is the spec's.
FORMATS: dict[str, Format] = {
    f.mimetype: f
    for f in (
        Format("application/x-hdf5", "hdf5.inspect", HDF5_PARAMETERS, in_place="hdf5"),
        Format("application/x-netcdf", "hdf5.inspect_netcdf"),
        Format("image/tiff", "tiff.inspect", asset_form="data_uri", in_place="tiff"),
        Format("image/jpeg", "jpeg.inspect", asset_form="data_uri"),
        Format("application/x-npy", "npy.inspect", asset_form="data_uri", in_place="npy"),
        Format("text/csv", **_CSV, asset_form="data_uris", in_place="csv"),
        Format("text/csv;header=present", **_CSV, asset_form="data_uris", in_place="csv"),
        Format("text/csv;header=absent", **_CSV),
        Format("multipart/related;type=text/csv", **_CSV, asset_form="data_uris"),
        Format(
            PARQUET_MIMETYPE, "tables.inspect_parquet", asset_form="data_uris", in_place="parquet"
        ),
        Format(SPARSE_MIMETYPE, "tables.inspect_parquet", asset_form="data_uris"),
        Format(ARROW_MIMETYPE, "arrow.inspect", asset_form="data_uris"),
        Format(
            "multipart/related;type=image/tiff",
            "tiff.inspect",
            asset_form="data_uris",
            in_place="tiff-sequence",
        ),
        Format("multipart/related;type=image/jpeg", "jpeg.inspect", asset_form="data_uris"),
        Format(
            "multipart/related;type=application/x-npy",
            "npy.inspect",
            asset_form="data_uris",
            in_place="npy-sequence",
        ),
        Format(ZARR_MIMETYPE, "zarr.inspect"),
        Format(RAGGED_MIMETYPE, "ragged.inspect", RAGGED_PARAMETERS),
        Format(XLSX_MIMETYPE, "xlsx.inspect"),
        Format(AWKWARD_MIMETYPE),
    )
}
_UNKNOWN = Format("")


def format_of(mimetype: str) -> Format:
    """The row of ``mimetype``; an empty row (no inspector, no parameters) when it has none."""
    return FORMATS.get(mimetype, _UNKNOWN)


_ASSET_FORM_TEXT = {
    "data_uri": "`data_uri`, `num` NULL (one file)",
    "data_uris": "`data_uris` (a list, in `num` order: Tiled writes 0, 1, ...)",
}


def parameters_table() -> str:
    """The allow-list as it appears in spec/FORMAT.md section 3.2."""
    rows = ["| mimetype | parameter | value |", "|---|---|---|"]
    for f in FORMATS.values():
        rows += [f"| `{f.mimetype}` | `{k}` | {a.description} |" for k, a in f.parameters.items()]
    return "\n".join(rows) + "\n"


def asset_forms_table() -> str:
    """The asset forms as they appear in spec/FORMAT.md section 3.2."""
    rows = ["| mimetype | each asset's `parameter`, `num` |", "|---|---|"]
    rows += [
        f"| `{f.mimetype}` | {_ASSET_FORM_TEXT[f.asset_form]} |"
        for f in FORMATS.values()
        if f.asset_form
    ]
    return "\n".join(rows) + "\n"


def parameter_problems(row: Any) -> Iterator[Problem]:
    """TA-E508 for every key of the row's parameters its mimetype may not carry, and for an
    asset given to the adapter as anything but ``data_uri``/``data_uris``, or in another form
    than its mimetype's adapter takes (:attr:`Format.asset_form`)."""
    row_format = format_of(row.mimetype)
    form = row_format.asset_form
    for asset in row.assets:
        if asset.parameter not in ASSET_PARAMETERS:
            yield Problem(
                "TA-E508",
                asset.member,
                f"data source {row.id} (node {row.node!r}) gives this asset to its adapter as "
                f"{asset.parameter!r}, not data_uri or data_uris",
            )
            continue
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
    allowed = row_format.parameters
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
