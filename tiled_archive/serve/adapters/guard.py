"""Tiled's adapters kept to the memory budget, and their libraries' failures coded.

:func:`guarded` wraps an adapter class so that ``from_catalog`` first has the data source's
files inspected (what a read will decode: a chunk, a whole file, a table's partitions), and
every read the adapter then makes is checked against the budget (TA-E912) before it runs.
What a file's library raises on a damaged or hostile file becomes TA-E601, naming the member.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...files.space import out_of_space
from ...inspectors import Inspection
from ...rules.budget import (
    chunk_allowance,
    ensure_grids_open,
    ensure_within,
    largest_chunk,
    nbytes,
    selection_shape,
)
from ...rules.formats import format_of
from ...rules.problems import ArchiveError
from ...rules.problems import reason as _reason

if TYPE_CHECKING:
    from . import Adapters

#: What an adapter's library may raise on a damaged or hostile file. Tiled's own signals
#: (IndexError for a block out of range, KeyError for a missing child) pass through unchanged.
_PASS_THROUGH = (ArchiveError, IndexError, KeyError, NotImplementedError)


def _coded(where: str, mimetype: str, err: Exception) -> ArchiveError:
    """TA-E601 for what the library says of the file; TA-E906 when it says the disk is full
    (a lazy file fetched as it is read), which is no fault of the file."""
    return out_of_space(err, where) or ArchiveError(
        "TA-E601",
        where,
        f"cannot be read as {mimetype}: {_reason(err)}",
    )


def guarded(base: type, mimetype: str, adapters: Adapters) -> type:
    """``base`` (a Tiled adapter class, or ours) whose ``from_catalog`` first inspects the data
    source's files, and whose adapters then read within the memory budget. A subclass, so the
    attributes Tiled asks of the class (lazy sequence reads) are the base's."""

    class Guarded(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_catalog(cls, data_source, node, /, **kwargs):
            inspection = adapters.inspection(data_source, kwargs)
            where = adapters.where(data_source)
            if format_of(mimetype).text_table:
                kwargs["compression"] = None  # never inferred from a file name
            if inspection.opened is not None:  # the adapter decodes its files when made
                ensure_within(
                    inspection.opened,
                    where,
                    f"opening {mimetype}",
                    "Tiled's adapter decodes the whole file when it opens it, so no part "
                    "of it reads for less: raise TILED_ARCHIVE_READ_BUDGET (bytes) to open it.",
                )
            if inspection.grid is not None:  # chunks the adapter enumerates when made
                ensure_grids_open([inspection.grid], where, f"opening {mimetype}")
            try:
                adapter = super().from_catalog(data_source, node, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as err:  # noqa: BLE001 -- the library's verdict on the file
                raise _coded(where, mimetype, err) from None
            return _budgeted(adapter, inspection, where, mimetype)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _budgeted(
    adapter: Any, inspection: Inspection, where: str, mimetype: str, root: str | None = None
) -> Any:
    """``adapter`` with its read methods checked against the memory budget (TA-E912) before
    they run, and their library errors coded (TA-E601). A container's children (HDF5 groups
    and datasets, Zarr group members) are budgeted as they are looked up."""
    if adapter is None or getattr(adapter, "_tiled_archive_budgeted", False):
        return adapter  # a missing child, or one a base class looked up through us
    adapter._tiled_archive_budgeted = True
    family = str(getattr(adapter, "structure_family", "")).rsplit(".", 1)[-1]
    if family == "array":
        _array_reads(adapter, inspection, where, mimetype)
    elif family == "table":
        _table_reads(adapter, inspection.partitions, where, mimetype)
    elif family == "ragged":
        _ragged_reads(adapter, inspection.unit, where, mimetype)
    elif family == "container":
        adapter.__class__ = _children_budgeted(type(adapter))
        # A Zarr group's path in its store, where the data source's store begins (the file
        # walk names arrays from there).
        root = _zarr_path(adapter) if root is None else root
        adapter._tiled_archive_guard = (inspection, where, mimetype, root)
    return adapter


def _checked(method: Callable, cost: Callable[..., int], where: str, mimetype: str) -> Callable:
    @functools.wraps(method)
    def read(*args: Any, **kwargs: Any) -> Any:
        ensure_within(cost(*args, **kwargs), where, f"reading {mimetype}")
        try:
            return method(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as err:  # noqa: BLE001 -- the library's verdict on the file
            raise _coded(where, mimetype, err) from None

    return read


def _array_reads(adapter: Any, inspection: Inspection, where: str, mimetype: str) -> None:
    """A read costs what it returns, plus what it decodes besides (``inspection.unit``: a
    chunk, a whole file; None when the array decodes by the chunks its structure gives, as
    Zarr) unless that stays within the chunk allowance (a data source its stored bytes back:
    a large chunk the origin wrote reads in slices)."""
    structure = adapter.structure()
    shape = tuple(structure.shape)
    itemsize = structure.data_type.to_numpy_dtype().itemsize
    chunks = structure.chunks
    unit = inspection.unit
    if unit is None:
        unit = nbytes(largest_chunk(chunks), itemsize)
    if unit <= chunk_allowance(inspection.decoded, inspection.stored):
        unit = 0

    grid = inspection.grid  # chunks a read touches cost too, whatever their bytes

    def read_cost(slice: Any = None) -> int:  # noqa: A002 -- Tiled's name
        touched = grid.reading_cost(slice) if grid is not None else 0
        return nbytes(selection_shape(shape, slice), itemsize) + unit + touched

    def block_cost(block: Any, slice: Any = None) -> int:  # noqa: A002 -- Tiled's name
        try:
            block_shape = tuple(chunks[d][i] for d, i in enumerate(block))
            region = tuple(
                builtins.slice(sum(chunks[d][:i]), sum(chunks[d][: i + 1]))
                for d, i in enumerate(block)
            )
        except (IndexError, TypeError):
            block_shape, region = largest_chunk(chunks), None
        touched = grid.reading_cost(region) if grid is not None else 0
        return nbytes(selection_shape(block_shape, slice), itemsize) + unit + touched

    adapter.read = _checked(adapter.read, read_cost, where, mimetype)
    if hasattr(adapter, "read_block"):
        adapter.read_block = _checked(adapter.read_block, block_cost, where, mimetype)


def _table_reads(adapter: Any, partitions: list[int] | None, where: str, mimetype: str) -> None:
    sizes = partitions or []

    def read_cost(*args: Any, **kwargs: Any) -> int:
        return sum(sizes)

    def partition_cost(*args: Any, **kwargs: Any) -> int:
        index = args[0] if args else next(iter(kwargs.values()), 0)
        return sizes[index] if isinstance(index, int) and 0 <= index < len(sizes) else 0

    adapter.read = _checked(adapter.read, read_cost, where, mimetype)
    if hasattr(adapter, "read_partition"):
        adapter.read_partition = _checked(adapter.read_partition, partition_cost, where, mimetype)
    if hasattr(adapter, "get"):  # a column, read from the whole table
        adapter.get = _checked(adapter.get, read_cost, where, mimetype)


def _ragged_reads(adapter: Any, loaded: int | None, where: str, mimetype: str) -> None:
    """Any read loads the table's values whole, and the file's blocks holding them (DuckDB
    does for a read of any row): every read costs that, whatever chunks the slice touches
    (Tiled reads every chunk when it touches none)."""
    adapter.read = _checked(adapter.read, lambda *_, **__: loaded or 0, where, mimetype)


@functools.cache
def _children_budgeted(cls: type) -> type:
    """A container adapter class whose children are budgeted too: an HDF5 dataset by the
    storage chunk the file walk found for it, a Zarr array by its chunks."""

    class Budgeted(cls):  # type: ignore[misc, valid-type]
        def __getitem__(self, key: str) -> Any:
            return self._tiled_archive_child(key, super().__getitem__)

        def get(self, key: str, *args: Any) -> Any:
            return self._tiled_archive_child(key, lambda k: super(Budgeted, self).get(k, *args))

        def _items_slice(self, *args: Any, **kwargs: Any) -> Any:
            # Tiled makes every child's adapter for any page of a listing: their chunks
            # together are checked first (each alone may be within the budget).
            _, where, _, _ = self._tiled_archive_guard
            datasets = [self._tiled_archive_dataset(key) for key in list(self)]
            grids = [d.grid for d in datasets if d is not None and d.grid is not None]
            if grids:
                ensure_grids_open(grids, where, f"listing {len(datasets)} children")
            return super()._items_slice(*args, **kwargs)

        def _tiled_archive_dataset(self, key: str) -> Any:
            """The file walk's record of child ``key`` (None: not an array it found)."""
            inspection, _, _, root = self._tiled_archive_guard
            if inspection.datasets is None:
                return None
            group = getattr(self, "dataset", None)  # HDF5's
            if group is None:  # Zarr's, from the data source's store
                group = _zarr_path(self).removeprefix(root)
            return inspection.datasets.get("/" + f"{group or ''}/{key}".strip("/"))

        def _tiled_archive_child(self, key: str, look_up: Callable[[str], Any]) -> Any:
            inspection, where, mimetype, root = self._tiled_archive_guard
            dataset = self._tiled_archive_dataset(key)
            if dataset is not None and dataset.grid is not None:
                ensure_grids_open([dataset.grid], where, f"opening {dataset.path}")
            try:
                child = look_up(key)
            except _PASS_THROUGH:
                raise
            except Exception as err:  # noqa: BLE001 -- the library's verdict on the file
                raise _coded(where, mimetype, err) from None
            child_inspection = Inspection(
                decoded=inspection.decoded,
                stored=inspection.stored,
                # The chunk as stored (0: contiguous); unknown: the structure's chunks.
                unit=None if inspection.datasets is None else 0,
                datasets=inspection.datasets,
            )
            if dataset is not None:
                child_inspection.unit = dataset.chunk_bytes or 0
                child_inspection.grid = dataset.grid
            return _budgeted(child, child_inspection, where, mimetype, root)

    Budgeted.__name__ = Budgeted.__qualname__ = cls.__name__
    return Budgeted


def _zarr_path(adapter: Any) -> str:
    """A Zarr group adapter's path in its store ("" for anything else)."""
    return str(getattr(getattr(adapter, "_zarr_group", None), "path", "") or "")
