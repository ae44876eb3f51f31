"""Tiled adapters fed by an archive: stock adapters on real paths, or on ZIP members in place.

Tiled picks an adapter class per data-source mimetype (``adapters_by_mimetype``) and calls its
``from_catalog(data_source, node, **parameters)``. The classes here are subclasses of Tiled's own,
so everything else (structures, slicing, Tiled's lazy per-frame sequence reads) stays Tiled's.
Each one first maps every asset URI to an archive member (archive form ``data/...``, or relocated
form inside this archive) and refuses anything else with TA-E503: Tiled itself skips its
readable-storage check for URIs that are not ``file://``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import tiled.adapters.hdf5 as tiled_hdf5
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.core import Adapter
from tiled.adapters.csv import CSVAdapter
from tiled.adapters.hdf5 import HDF5Adapter
from tiled.adapters.npy import NPYSequenceAdapter
from tiled.adapters.parquet import ParquetDatasetAdapter
from tiled.adapters.ragged import RaggedSQLAdapter
from tiled.adapters.resource_cache import with_resource_cache
from tiled.adapters.tiff import TiffAdapter, TiffSequenceAdapter
from tiled.adapters.zarr import ZarrArrayAdapter, ZarrGroupAdapter
from tiled.mimetypes import DEFAULT_ADAPTERS_BY_MIMETYPE
from tiled.storage import EmbeddedSQLStorage, acquire_storage, release_storage
from tiled.structures.core import StructureFamily
from tiled.utils import ensure_uri, path_from_uri

from .content import Inspection, ragged
from .content import reason as _reason
from .content.budget import ensure_within, largest_chunk, nbytes, selection_shape
from .content.zarr import confined_store
from .format import ArchiveError
from .reader import Archive

ZARR = "application/x-zarr"
_ALL = builtins.slice(None)


def _rewrite(data_source: Any, kwargs: dict[str, Any], to_uri: Callable[[str], str]) -> Any:
    """A copy of ``data_source`` (and a lazy ``data_uris`` kwarg) with URIs mapped by to_uri."""
    assets = [a.model_copy(update={"data_uri": to_uri(a.data_uri)}) for a in data_source.assets]
    if kwargs.get("data_uris") is not None:  # Tiled's lazy sequence path: None marks unread files
        kwargs["data_uris"] = [None if u is None else to_uri(u) for u in kwargs["data_uris"]]
    return data_source.model_copy(update={"assets": assets})


class ArchiveAdapters:
    """The ``adapters_by_mimetype`` mapping that serves one open archive.

    Each adapter first has the archive inspect its data source's files
    (:meth:`Archive.inspection`), so call :meth:`Archive.data_sources` before serving: it
    refuses a catalog whose assets or data source rows break a rule.
    """

    def __init__(self, archive: Archive):
        self.archive = archive
        self._zip_store: Any = None
        self._databases: dict[Path, EmbeddedSQLStorage] = {}
        self._lock = threading.Lock()

    def member(self, data_uri: str) -> str:
        """The archive member an asset URI names; TA-E503/TA-E504 for anything else."""
        return self.archive.asset_member(data_uri)

    def mapping(self) -> dict[str, type]:
        """mimetype -> adapter class, for ``tiled.catalog.from_uri(adapters_by_mimetype=...)``.

        Every class inspects a data source's files before Tiled's adapter opens them, bounds
        each read by the memory budget, and reports what its library fails on as TA-E601.
        """
        readers = self._directory_adapters() if self.archive.is_directory else self._zip_adapters()
        # Both cover every mimetype Tiled knows, so none falls through to Tiled's stock one.
        return _AdapterMapping(
            self, {mimetype: _guarded(base, mimetype, self) for mimetype, base in readers.items()}
        )

    def where(self, source_id: int | None) -> str:
        """What messages about a data source name (its first member)."""
        row = self.archive.data_sources().get(source_id) if source_id is not None else None
        return row.where if row is not None else f"data source {source_id}"

    # -- Directory archives: Tiled's adapters on the real files ------------------------------

    def _directory_adapters(self) -> dict[str, type]:
        root = self.archive.location.resolve()
        adapters = _stock_adapters(
            DEFAULT_ADAPTERS_BY_MIMETYPE, lambda uri: ensure_uri(root / self.member(uri))
        )
        # Tiled's Zarr adapter opens stores in append mode; an archive is opened read-only.
        adapters[ZARR] = self._zarr_adapter(lambda: _local_zarr_store(root))
        adapters[ragged.MIMETYPE] = self._ragged_adapter(lambda path: root / path)
        return adapters

    # -- ZIP archives: members read in place -------------------------------------------------

    def _zip_adapters(self) -> dict[str, type]:
        archive, member = self.archive, self.member
        _install_hdf5_hook()
        token = _register(self)

        class ZipHDF5Adapter(HDF5Adapter):
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                def to_member_uri(uri: str) -> str:
                    return f"{_HDF5_SCHEME}{token}/{member(uri)}"

                return HDF5Adapter.from_catalog(
                    _rewrite(data_source, kwargs, to_member_uri), node, **kwargs
                )

        class ZipNPYAdapter(ArrayAdapter):
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                array = _npy_array(archive, member(data_source.assets[0].data_uri))
                return cls(array, data_source.structure, metadata=node.metadata_, specs=node.specs)

        class ZipTiffAdapter(TiffAdapter):
            def __init__(self, data_uri, structure=None, *, metadata=None, specs=None):
                path = member(data_uri)
                span = archive.span(path)
                if span is not None:  # tifffile reads an embedded file natively
                    self._file = with_resource_cache(
                        (tifffile.TiffFile, span.file, span.offset),
                        tifffile.TiffFile,
                        str(span.file),
                        offset=span.offset,
                        size=span.length,
                    )
                else:
                    self._file = tifffile.TiffFile(archive.open(path))
                Adapter.__init__(self, structure, metadata=metadata, specs=specs)

        class ZipCSVAdapter(CSVAdapter):
            def __init__(self, data_uris, structure=None, *, metadata=None, specs=None, **kwargs):
                self._file_paths = _Members(archive, [member(u) for u in data_uris])
                self._read_csv_kwargs = kwargs
                Adapter.__init__(self, structure, metadata=metadata, specs=specs)

        class ZipParquetAdapter(ParquetDatasetAdapter):
            """Tiled's Parquet adapter reading each partition from its member when asked."""

            def __init__(self, data_uris, structure, *, metadata=None, specs=None):
                uris = [data_uris] if isinstance(data_uris, str) else list(data_uris)
                self._partition_members = [member(u) for u in uris]
                Adapter.__init__(self, structure, metadata=metadata, specs=specs)

            def read_partition(self, partition, fields=None):
                import pyarrow.parquet as pq

                handle = archive.open(self._partition_members[partition])
                return pq.read_table(handle, columns=fields).to_pandas()

            def read(self, fields=None):
                import pandas

                count = len(self._partition_members)
                return pandas.concat([self.read_partition(i, fields) for i in range(count)])

            def get(self, key):
                if key not in self.structure().columns:
                    return None
                return ArrayAdapter.from_array(self.read([key])[key].values)

        in_place = {
            "application/x-hdf5": ZipHDF5Adapter,
            "application/x-npy": ZipNPYAdapter,
            "image/tiff": ZipTiffAdapter,
            "multipart/related;type=image/tiff": _sequence(TiffSequenceAdapter, archive, member),
            "multipart/related;type=application/x-npy": _sequence(
                NPYSequenceAdapter, archive, member
            ),
            "text/csv": ZipCSVAdapter,
            "text/csv;header=present": ZipCSVAdapter,
            "application/x-parquet": ZipParquetAdapter,
            ZARR: self._zarr_adapter(self._shared_zip_store),
            # DuckDB opens a database by file name: a verified copy in the user cache.
            ragged.MIMETYPE: self._ragged_adapter(archive.local_copy),
        }
        # Any other format Tiled reads (JPEG, Excel, netCDF, ...): its stock adapter on a
        # verified copy of the member in the user cache, made on first read.
        others = {k: v for k, v in DEFAULT_ADAPTERS_BY_MIMETYPE.items() if k not in in_place}
        copies = _stock_adapters(others, lambda uri: ensure_uri(archive.local_copy(member(uri))))
        return {**copies, **in_place}

    def _shared_zip_store(self) -> Any:
        import zarr

        with self._lock:
            if self._zip_store is None:
                self._zip_store = zarr.storage.ZipStore(self.archive.location, mode="r")
            return self._zip_store

    def _zarr_adapter(self, store_factory: Callable[[], Any]) -> type:
        member = self.member

        class ArchiveZarrAdapter:
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                import zarr

                path = member(data_source.assets[0].data_uri)
                common = {"metadata": node.metadata_, "specs": node.specs, **kwargs}
                store = confined_store(store_factory())
                if node.structure_family == StructureFamily.container:
                    group = zarr.open_group(store=store, path=path, mode="r")
                    return ZarrGroupAdapter(group, **common)
                array = zarr.open_array(store=store, path=path, mode="r")
                return ZarrArrayAdapter(array, structure=data_source.structure, **common)

        return ArchiveZarrAdapter

    def _ragged_adapter(self, local_file: Callable[[str], Path]) -> type:
        """Tiled's ragged adapter on the data source's DuckDB file, opened read-only and
        confined (:func:`.content.ragged.connect`), registered as Tiled's SQL storage for it."""
        member, database = self.member, self._database

        class ArchiveRaggedAdapter(RaggedSQLAdapter):
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                uri = database(local_file(member(data_source.assets[0].data_uri)))
                local = _rewrite(data_source, kwargs, lambda _: uri)
                return super().from_catalog(local, node, **kwargs)

            def _load_chunks(self, chunk_indexes: list[int]) -> list[dict[str, Any]]:
                table = self._tabular_adapter
                buffers = list(self._structure.awkward_form.expected_from_buffers())
                with contextlib.closing(table.storage.connect()) as conn:
                    return ragged.load_chunks(
                        conn, table.table_name, table.dataset_id, buffers, chunk_indexes
                    )

        return ArchiveRaggedAdapter

    def _database(self, path: Path) -> str:
        """The storage URI Tiled's SQL adapter finds a read-only DuckDB connection under."""
        with self._lock:
            if path not in self._databases:
                storage = _ReadOnlyDuckDB(ensure_uri(f"duckdb:///{path.resolve()}"))
                self._databases[path] = acquire_storage(storage)
            return self._databases[path].uri

    def close(self) -> None:
        _unregister(self)
        if self._zip_store is not None:
            self._zip_store.close()
        with self._lock:
            for storage in self._databases.values():
                storage.dispose()
                release_storage(storage)
            self._databases.clear()


class _ReadOnlyDuckDB(EmbeddedSQLStorage):
    """Tiled's embedded SQL storage, connecting read-only and confined (Tiled's own opens the
    file for writing)."""

    def create_adbc_connection(self) -> Any:
        return ragged.connect(path_from_uri(self.uri))


def _stock_adapters(stock: Mapping[str, type], to_uri: Callable[[str], str]) -> dict[str, type]:
    """Subclasses of Tiled's ``stock`` adapters (by mimetype) that read each asset at the URI
    ``to_uri`` gives for it."""
    adapters: dict[str, type] = {}
    for mimetype in list(stock):
        base = stock[mimetype]

        def from_catalog(cls, data_source, node, /, _base=base, **kwargs):  # noqa: N805
            return _base.from_catalog(_rewrite(data_source, kwargs, to_uri), node, **kwargs)

        adapters[mimetype] = type(
            f"Archive{base.__name__}", (base,), {"from_catalog": classmethod(from_catalog)}
        )
    return adapters


def _local_zarr_store(root: Any) -> Any:
    import zarr

    return zarr.storage.LocalStore(root, read_only=True)


def _npy_array(archive: Archive, path: str) -> np.ndarray:
    """An .npy member as an array: memory-mapped from its span, read whole when compressed."""
    with archive.open(path) as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(handle)
        header = handle.tell()
        span = archive.span(path)
        if span is None or dtype.hasobject:
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
    return np.memmap(
        span.file,
        dtype=dtype,
        mode="r",
        offset=span.offset + header,
        shape=shape,
        order="F" if fortran else "C",
    )


class _Members(Sequence):
    """Stands in for a list of file paths: each item is a fresh file object over a member."""

    def __init__(self, archive: Archive, paths: list[str | None]):
        self._archive, self._paths = archive, paths

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, builtins.slice):
            return [self._archive.open(p) for p in self._paths[index] if p is not None]
        path = self._paths[index]
        if path is None:
            raise IndexError(index)
        return self._archive.open(path)


def _sequence(base: type, archive: Archive, member: Callable[[str], str]) -> type:
    """A Tiled file-sequence adapter reading its files from archive members."""

    class ZipSequenceAdapter(base):
        def __init__(self, data_uris=None, structure=None, **kwargs):
            uris = list(data_uris or [])
            super().__init__(data_uris=uris, structure=structure, **kwargs)
            self.filepaths = _Members(archive, [None if u is None else member(u) for u in uris])

        def _load_from_files(self, slice=_ALL):  # noqa: A002 -- Tiled's name
            # Tiled's TIFF sequence hands file *names* to tifffile.TiffSequence; read one by one.
            if isinstance(slice, int):
                return self._read_one(self.filepaths[slice])[None, ...]
            files = (
                [self.filepaths[i] for i in slice]
                if isinstance(slice, Iterable)
                else self.filepaths[slice]
            )
            return np.asarray([self._read_one(f) for f in files])

    ZipSequenceAdapter.__name__ = f"Zip{base.__name__}"
    return ZipSequenceAdapter


# Tiled's HDF5 adapter reopens its file by path for every read (tiled.adapters.hdf5 calls
# path_from_uri, then h5py.File). h5py also reads Python file objects, so that module's
# path_from_uri learns one private URI scheme naming a member of an open archive.
_HDF5_SCHEME = "tiled-archive-member://"
_OPEN: dict[str, ArchiveAdapters] = {}
_stock_hdf5_path_from_uri = tiled_hdf5.path_from_uri


def _hdf5_path_or_member(uri: Any) -> Any:
    if isinstance(uri, str) and uri.startswith(_HDF5_SCHEME):
        token, path = uri[len(_HDF5_SCHEME) :].split("/", 1)
        return _OPEN[token].archive.open(path)
    return _stock_hdf5_path_from_uri(uri)


def _install_hdf5_hook() -> None:
    tiled_hdf5.path_from_uri = _hdf5_path_or_member


def _register(adapters: ArchiveAdapters) -> str:
    token = f"{id(adapters):x}"
    _OPEN[token] = adapters
    return token


def _unregister(adapters: ArchiveAdapters) -> None:
    _OPEN.pop(f"{id(adapters):x}", None)


# -- Guarding Tiled's adapters ---------------------------------------------------------------

#: What an adapter's library may raise on a damaged or hostile file. Tiled's own signals
#: (IndexError for a block out of range, KeyError for a missing child) pass through unchanged.
_PASS_THROUGH = (ArchiveError, IndexError, KeyError, NotImplementedError)


def _coded(where: str, mimetype: str, err: Exception) -> ArchiveError:
    return ArchiveError(
        "TA-E601",
        where,
        f"cannot be read as {mimetype}: {_reason(err)}",
    )


def _guarded(base: type, mimetype: str, adapters: ArchiveAdapters) -> type:
    """``base`` (a Tiled adapter class, or ours) whose ``from_catalog`` first inspects the data
    source's files, and whose adapters then read within the memory budget. A subclass, so the
    attributes Tiled asks of the class (lazy sequence reads) are the base's."""

    class Guarded(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_catalog(cls, data_source, node, /, **kwargs):
            inspection = adapters.archive.inspection(data_source.id)
            where = adapters.where(data_source.id)
            if mimetype.startswith("text/csv") or mimetype == "multipart/related;type=text/csv":
                kwargs["compression"] = None  # never inferred from a file name
            try:
                adapter = super().from_catalog(data_source, node, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as err:  # noqa: BLE001 -- the library's verdict on the file
                raise _coded(where, mimetype, err) from None
            return _budgeted(adapter, inspection, where, mimetype)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


class _AdapterMapping(dict):
    """Adapter classes by mimetype. A mimetype no adapter reads gets one that refuses with
    TA-W501 (``validate`` warned of it), where Tiled would raise a RuntimeError: a 500."""

    def __init__(self, adapters: ArchiveAdapters, classes: dict[str, type]):
        super().__init__(classes)
        self.adapters = adapters

    def __missing__(self, mimetype: str) -> type:
        adapters = self.adapters

        class Unreadable:
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                raise ArchiveError(
                    "TA-W501",
                    adapters.where(data_source.id),
                    f"no Tiled adapter reads {mimetype!r}: the node is listed but not read",
                )

        return Unreadable


def _budgeted(adapter: Any, inspection: Inspection, where: str, mimetype: str) -> Any:
    """``adapter`` with its read methods checked against the memory budget (TA-E912) before
    they run, and their library errors coded (TA-E601). A container's children (HDF5 groups
    and datasets, Zarr group members) are budgeted as they are looked up."""
    if adapter is None or getattr(adapter, "_tiled_archive_budgeted", False):
        return adapter  # a missing child, or one a base class looked up through us
    adapter._tiled_archive_budgeted = True
    family = str(getattr(adapter, "structure_family", "")).rsplit(".", 1)[-1]
    if family == "array":
        _array_reads(adapter, inspection.unit, where, mimetype)
    elif family == "table":
        _table_reads(adapter, inspection.partitions, where, mimetype)
    elif family == "ragged":
        _ragged_reads(adapter, inspection.unit, where, mimetype)
    elif family == "container":
        adapter.__class__ = _children_budgeted(type(adapter))
        adapter._tiled_archive_guard = (inspection, where, mimetype)
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


def _array_reads(adapter: Any, unit: int | None, where: str, mimetype: str) -> None:
    """``unit``: what any read decodes besides the result (a chunk, a whole file); None when
    the array decodes by the chunks its structure gives (Zarr)."""
    structure = adapter.structure()
    shape = tuple(structure.shape)
    itemsize = structure.data_type.to_numpy_dtype().itemsize
    chunks = structure.chunks
    if unit is None:
        unit = nbytes(largest_chunk(chunks), itemsize)

    def read_cost(slice: Any = None) -> int:  # noqa: A002 -- Tiled's name
        return nbytes(selection_shape(shape, slice), itemsize) + unit

    def block_cost(block: Any, slice: Any = None) -> int:  # noqa: A002 -- Tiled's name
        try:
            block_shape = tuple(chunks[d][i] for d, i in enumerate(block))
        except (IndexError, TypeError):
            block_shape = largest_chunk(chunks)
        return nbytes(selection_shape(block_shape, slice), itemsize) + unit

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

        def _tiled_archive_child(self, key: str, look_up: Callable[[str], Any]) -> Any:
            inspection, where, mimetype = self._tiled_archive_guard
            try:
                child = look_up(key)
            except _PASS_THROUGH:
                raise
            except Exception as err:  # noqa: BLE001 -- the library's verdict on the file
                raise _coded(where, mimetype, err) from None
            unit = None
            if inspection.datasets is not None:  # HDF5: chunk as stored, 0 when contiguous
                path = "/" + f"{getattr(self, 'dataset', None) or ''}/{key}".strip("/")
                dataset = inspection.datasets.get(path)
                unit = (dataset.chunk_bytes or 0) if dataset is not None else 0
            child_inspection = Inspection(unit=unit, datasets=inspection.datasets)
            return _budgeted(child, child_inspection, where, mimetype)

    Budgeted.__name__ = Budgeted.__qualname__ = cls.__name__
    return Budgeted
