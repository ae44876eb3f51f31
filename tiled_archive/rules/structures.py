"""Tiled's structure classes, as the rules use them: decode a catalog row's ``structure``
into Tiled's own pydantic model (a problem when it does not decode), and the dtype it declares.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from .problems import reason

if TYPE_CHECKING:
    from .catalog_rows import DataSourceRow


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
