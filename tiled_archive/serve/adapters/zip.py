"""Adapters reading a ZIP archive's members in place, without extracting them.

Each is a subclass of Tiled's adapter for its format, built on first use (so opening an archive
imports only the libraries of the formats it holds): HDF5 through a file object h5py reads,
NPY memory-mapped from a stored member's span, TIFF and Parquet from the member's bytes, CSV
and file sequences from a fresh file object per file. Zarr and ragged arrays are built by
:class:`~tiled_archive.serve.adapters.ArchiveAdapters` (they share state with it).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ...reader import Archive
from ...rules.formats import FORMATS
from . import rewrite

_ALL = builtins.slice(None)
#: A mimetype's adapter class, built when Tiled first asks for it.
AdapterFactory = Callable[[], type]


def in_place_adapters(archive: Archive, member: Callable[[str], str]) -> dict[str, AdapterFactory]:
    """Factories of the classes reading each mimetype's members in place (the mimetypes whose
    row in :data:`~tiled_archive.rules.formats.FORMATS` names a way to)."""
    builders: dict[str, AdapterFactory] = {
        "hdf5": lambda: _hdf5_adapter(archive, member),
        "npy": lambda: _npy_adapter(archive, member),
        "tiff": lambda: _tiff_adapter(archive, member),
        "tiff-sequence": lambda: _sequence(
            _import("tiled.adapters.tiff", "TiffSequenceAdapter"), archive, member
        ),
        "npy-sequence": lambda: _sequence(
            _import("tiled.adapters.npy", "NPYSequenceAdapter"), archive, member
        ),
        "csv": lambda: _csv_adapter(archive, member),
        "parquet": lambda: _parquet_adapter(archive, member),
    }
    return {m: builders[f.in_place] for m, f in FORMATS.items() if f.in_place is not None}


def _import(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), name)


def _hdf5_adapter(archive: Archive, member: Callable[[str], str]) -> type:
    from tiled.adapters.hdf5 import HDF5Adapter

    token = _register(archive)

    class ZipHDF5Adapter(HDF5Adapter):
        @classmethod
        def from_catalog(cls, data_source, node, /, **kwargs):
            def to_member_uri(uri: str) -> str:
                return f"{_HDF5_SCHEME}{token}/{member(uri)}"

            return HDF5Adapter.from_catalog(
                rewrite(data_source, kwargs, to_member_uri), node, **kwargs
            )

    return ZipHDF5Adapter


def _npy_adapter(archive: Archive, member: Callable[[str], str]) -> type:
    from tiled.adapters.array import ArrayAdapter

    class ZipNPYAdapter(ArrayAdapter):
        @classmethod
        def from_catalog(cls, data_source, node, /, **kwargs):
            array = _npy_array(archive, member(data_source.assets[0].data_uri))
            return cls(array, data_source.structure, metadata=node.metadata_, specs=node.specs)

    return ZipNPYAdapter


def _tiff_adapter(archive: Archive, member: Callable[[str], str]) -> type:
    import tifffile
    from tiled.adapters.core import Adapter
    from tiled.adapters.resource_cache import with_resource_cache
    from tiled.adapters.tiff import TiffAdapter

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

    return ZipTiffAdapter


def _csv_adapter(archive: Archive, member: Callable[[str], str]) -> type:
    from tiled.adapters.core import Adapter
    from tiled.adapters.csv import CSVAdapter

    class ZipCSVAdapter(CSVAdapter):
        def __init__(self, data_uris, structure=None, *, metadata=None, specs=None, **kwargs):
            self._file_paths = _Members(archive, [member(u) for u in data_uris])
            self._read_csv_kwargs = kwargs
            Adapter.__init__(self, structure, metadata=metadata, specs=specs)

    return ZipCSVAdapter


def _parquet_adapter(archive: Archive, member: Callable[[str], str]) -> type:
    from tiled.adapters.array import ArrayAdapter
    from tiled.adapters.core import Adapter
    from tiled.adapters.parquet import ParquetDatasetAdapter

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

    return ZipParquetAdapter


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
_OPEN: dict[str, Archive] = {}


def _register(archive: Archive) -> str:
    """A token naming ``archive`` in HDF5 member URIs, which Tiled's HDF5 module learns."""
    import tiled.adapters.hdf5 as tiled_hdf5

    stock = tiled_hdf5.path_from_uri
    if not getattr(stock, "reads_archive_members", False):  # once per process

        def path_or_member(uri: Any) -> Any:
            if isinstance(uri, str) and uri.startswith(_HDF5_SCHEME):
                token, path = uri[len(_HDF5_SCHEME) :].split("/", 1)
                return _OPEN[token].open(path)
            return stock(uri)

        path_or_member.reads_archive_members = True  # type: ignore[attr-defined]
        tiled_hdf5.path_from_uri = path_or_member
    token = f"{id(archive):x}"
    _OPEN[token] = archive
    return token


def unregister(archive: Archive) -> None:
    """Forget ``archive``'s HDF5 member URIs (when it is closed)."""
    _OPEN.pop(f"{id(archive):x}", None)
