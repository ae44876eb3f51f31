"""Tiled adapters fed by an archive: stock adapters on real paths, or on ZIP members in place.

Tiled picks an adapter class per data-source mimetype (``adapters_by_mimetype``) and calls its
``from_catalog(data_source, node, **parameters)``. The classes here are subclasses of Tiled's own,
so everything else (structures, slicing, Tiled's lazy per-frame sequence reads) stays Tiled's.
Each one first maps every asset URI to an archive member (archive form ``data/...``, or relocated
form inside this archive) and refuses anything else with TA-E503: Tiled itself skips its
readable-storage check for URIs that are not ``file://``.

Each class is built when Tiled first asks for its mimetype, so that opening an archive imports
the libraries (h5py, zarr, tifffile, ...) of the formats it holds, not of every format Tiled
reads. Modules: :mod:`.zip` (members read in place), :mod:`.guard` (the memory budget and coded
errors around every adapter).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiled.storage import EmbeddedSQLStorage, acquire_storage, release_storage
from tiled.utils import ensure_uri, path_from_uri

from ...inspectors import Inspection, ragged
from ...inspectors.zarr import confined_store
from ...reader import Archive
from ...rules.formats import ZARR_MIMETYPE, zarr_dtype_warnings_silenced
from ...rules.names import RAGGED_MIMETYPE
from ...rules.problems import ArchiveError

#: A mimetype's adapter class, built when Tiled first asks for it.
AdapterFactory = Callable[[], type]


def rewrite(data_source: Any, kwargs: dict[str, Any], to_uri: Callable[[str], str]) -> Any:
    """A copy of ``data_source`` (and a lazy ``data_uris`` kwarg) with URIs mapped by to_uri."""
    assets = [a.model_copy(update={"data_uri": to_uri(a.data_uri)}) for a in data_source.assets]
    if kwargs.get("data_uris") is not None:  # Tiled's lazy sequence path: None marks unread files
        kwargs["data_uris"] = [None if u is None else to_uri(u) for u in kwargs["data_uris"]]
    return data_source.model_copy(update={"assets": assets})


class Adapters:
    """The ``adapters_by_mimetype`` mapping for one set of files (an archive, or a catalog's
    readable storage): subclasses say how an asset URI becomes a file, and what checking a data
    source's files found (:meth:`inspection`)."""

    def __init__(self) -> None:
        self._databases: dict[Path, EmbeddedSQLStorage] = {}
        self._lock = threading.Lock()

    def mapping(self) -> dict[str, Any]:
        """mimetype -> adapter class, for ``tiled.catalog.from_uri(adapters_by_mimetype=...)``.

        Every class inspects a data source's files before Tiled's adapter opens them, bounds
        each read by the memory budget, and reports what its library fails on as TA-E601.
        """
        # Every mapping covers every mimetype Tiled knows, so none falls through to Tiled's.
        return _AdapterMapping(self, self._readers())

    def _readers(self) -> dict[str, AdapterFactory]:
        raise NotImplementedError

    def inspection(self, data_source: Any, kwargs: dict[str, Any]) -> Inspection:
        """What checking the files ``data_source`` reads (``kwargs``: Tiled's, e.g. the lazy
        ``data_uris``) found; raises the first rule they break."""
        raise NotImplementedError

    def where(self, data_source: Any) -> str:
        """What messages about a data source name (its first file)."""
        raise NotImplementedError

    def _zarr_adapter(self, open_store: Callable[[str], tuple[Any, str]]) -> type:
        """Tiled's Zarr adapters, read-only, on the store and path ``open_store`` gives for an
        asset URI (Tiled's own opens stores in append mode)."""

        class ReadOnlyZarrAdapter:
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                import zarr
                from tiled.adapters.zarr import ZarrArrayAdapter
                from tiled.structures.core import StructureFamily

                store, path = open_store(data_source.assets[0].data_uri)
                common = {"metadata": node.metadata_, "specs": node.specs, **kwargs}
                store = confined_store(store)
                if node.structure_family == StructureFamily.container:
                    group = zarr.open_group(store=store, path=path, mode="r")
                    return _quiet_zarr_group_class()(group, **common)
                array = zarr.open_array(store=store, path=path, mode="r")
                return ZarrArrayAdapter(array, structure=data_source.structure, **common)

        return ReadOnlyZarrAdapter

    def _ragged_adapter(self, local_file: Callable[[str], Path]) -> type:
        """Tiled's ragged adapter on the DuckDB file ``local_file`` gives for the data source's
        asset URI, opened read-only and confined
        (:func:`tiled_archive.inspectors.ragged.connect`), registered as Tiled's SQL storage
        for it."""
        from tiled.adapters.ragged import RaggedSQLAdapter

        database = self._database

        class ReadOnlyRaggedAdapter(RaggedSQLAdapter):
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                uri = database(local_file(data_source.assets[0].data_uri))
                local = rewrite(data_source, kwargs, lambda _: uri)
                return super().from_catalog(local, node, **kwargs)

            def _load_chunks(self, chunk_indexes: list[int]) -> list[dict[str, Any]]:
                table = self._tabular_adapter
                buffers = list(self._structure.awkward_form.expected_from_buffers())
                with contextlib.closing(table.storage.connect()) as conn:
                    return ragged.load_chunks(
                        conn, table.table_name, table.dataset_id, buffers, chunk_indexes
                    )

        return ReadOnlyRaggedAdapter

    def _database(self, path: Path) -> str:
        """The storage URI Tiled's SQL adapter finds a read-only DuckDB connection under."""
        with self._lock:
            if path not in self._databases:
                storage = _ReadOnlyDuckDB(ensure_uri(f"duckdb:///{path.resolve()}"))
                self._databases[path] = acquire_storage(storage)
            return self._databases[path].uri

    def close(self) -> None:
        with self._lock:
            for storage in self._databases.values():
                storage.dispose()
                release_storage(storage)
            self._databases.clear()


class ArchiveAdapters(Adapters):
    """The adapters that serve one open archive.

    Each adapter first has the archive inspect its data source's files
    (:meth:`Archive.inspection`), so call :meth:`Archive.data_sources` before serving: it
    refuses a catalog whose assets or data source rows break a rule.
    """

    def __init__(self, archive: Archive):
        super().__init__()
        self.archive = archive
        self._zip_store: Any = None

    def member(self, data_uri: str) -> str:
        """The archive member an asset URI names; TA-E503/TA-E504 for anything else."""
        return self.archive.asset_member(data_uri)

    def _readers(self) -> dict[str, AdapterFactory]:
        if self.archive.is_lazy:
            return self._lazy_adapters()
        return self._directory_adapters() if self.archive.is_directory else self._zip_adapters()

    def inspection(self, data_source: Any, kwargs: dict[str, Any]) -> Inspection:
        return self.archive.inspection(data_source.id)

    def where(self, data_source: Any) -> str:
        source_id = data_source.id
        row = self.archive.data_source(source_id) if source_id is not None else None
        return row.where if row is not None else f"data source {source_id}"

    # -- Directory archives: Tiled's adapters on the real files ------------------------------

    def _directory_adapters(self) -> dict[str, AdapterFactory]:
        root = self.archive.location.resolve()
        adapters = _stock_adapters(lambda uri: ensure_uri(root / self.member(uri)))
        adapters[ZARR_MIMETYPE] = lambda: self._zarr_adapter(
            lambda uri: (_local_zarr_store(root), self.member(uri))
        )
        adapters[RAGGED_MIMETYPE] = lambda: self._ragged_adapter(
            lambda uri: root / self.member(uri)
        )
        return adapters

    # -- Incomplete (lazy) archives: absent files fetched as reads need them ---------------

    def _lazy_adapters(self) -> dict[str, AdapterFactory]:
        """What reads members in place in a ZIP reads a lazy archive's files through its
        source (only the blocks a read touches are fetched); a Zarr store's keys are fetched
        one by one; anything a library opens by name is fetched whole first."""
        from .lazy import lazy_zarr_store
        from .zip import in_place_adapters

        archive, member = self.archive, self.member
        in_place = in_place_adapters(archive, member)
        in_place[ZARR_MIMETYPE] = lambda: self._zarr_adapter(
            lambda uri: (lazy_zarr_store(archive), member(uri))
        )
        in_place[RAGGED_MIMETYPE] = lambda: self._ragged_adapter(
            lambda uri: archive.local_copy(member(uri))
        )
        copies = _stock_adapters(lambda uri: ensure_uri(archive.local_copy(member(uri))))
        return {**copies, **in_place}

    # -- ZIP archives: members read in place -------------------------------------------------

    def _zip_adapters(self) -> dict[str, AdapterFactory]:
        from .zip import in_place_adapters

        archive, member = self.archive, self.member
        in_place = in_place_adapters(archive, member)
        if not archive.is_remote:
            in_place[ZARR_MIMETYPE] = lambda: self._zarr_adapter(
                lambda uri: (self._shared_zip_store(), member(uri))
            )
        else:  # a remote ZIP: zarr's ZipStore opens files by name only; a verified copy
            in_place[ZARR_MIMETYPE] = lambda: self._zarr_adapter(
                lambda uri: (_local_zarr_store(archive.local_copy(member(uri))), "")
            )
        # DuckDB opens a database by file name: a verified copy in the user cache.
        in_place[RAGGED_MIMETYPE] = lambda: self._ragged_adapter(
            lambda uri: archive.local_copy(member(uri))
        )
        # Any other format Tiled reads (JPEG, Excel, netCDF, ...): its stock adapter on a
        # verified copy of the member in the user cache, made on first read.
        copies = _stock_adapters(lambda uri: ensure_uri(archive.local_copy(member(uri))))
        return {**copies, **in_place}

    def _shared_zip_store(self) -> Any:
        import zarr

        with self._lock:
            if self._zip_store is None:
                self._zip_store = zarr.storage.ZipStore(self.archive.location, mode="r")
            return self._zip_store

    def close(self) -> None:
        from .zip import unregister

        unregister(self.archive)
        if self._zip_store is not None:
            self._zip_store.close()
        super().close()


class _ReadOnlyDuckDB(EmbeddedSQLStorage):
    """Tiled's embedded SQL storage, connecting read-only and confined (Tiled's own opens the
    file for writing)."""

    def create_adbc_connection(self) -> Any:
        return ragged.connect(path_from_uri(self.uri))


def _stock_adapters(to_uri: Callable[[str], str]) -> dict[str, AdapterFactory]:
    """Factories of subclasses of Tiled's stock adapters (by mimetype) that read each asset at
    the URI ``to_uri`` gives for it."""
    from tiled.mimetypes import DEFAULT_ADAPTERS_BY_MIMETYPE

    def subclass(mimetype: str) -> type:
        base = DEFAULT_ADAPTERS_BY_MIMETYPE[mimetype]  # imports that adapter's module only

        def from_catalog(cls, data_source, node, /, **kwargs):  # noqa: N805
            return base.from_catalog(rewrite(data_source, kwargs, to_uri), node, **kwargs)

        return type(f"Archive{base.__name__}", (base,), {"from_catalog": classmethod(from_catalog)})

    return {mimetype: (lambda m=mimetype: subclass(m)) for mimetype in DEFAULT_ADAPTERS_BY_MIMETYPE}


@functools.cache
def _quiet_zarr_group_class() -> type:
    """Tiled's Zarr group adapter, whose metadata (and its subgroups') is read without zarr's
    warning about data types that have no Zarr v3 specification
    (:func:`~tiled_archive.rules.formats.zarr_dtype_warnings_silenced` says why)."""
    from tiled.adapters.zarr import ZarrGroupAdapter

    class QuietZarrGroupAdapter(ZarrGroupAdapter):
        def metadata(self) -> dict[str, Any]:
            with zarr_dtype_warnings_silenced():
                return super().metadata()

        def __getitem__(self, key: str) -> Any:
            child = super().__getitem__(key)
            if type(child) is ZarrGroupAdapter:  # Tiled makes a subgroup's of its own class
                child.__class__ = QuietZarrGroupAdapter
            return child

    return QuietZarrGroupAdapter


def _local_zarr_store(root: Any) -> Any:
    import zarr

    return zarr.storage.LocalStore(root, read_only=True)


class _AdapterMapping(dict):
    """Adapter classes by mimetype, each built (and guarded) on first lookup. Tiled only looks
    classes up (and checks for entry-point strings, which these factories are not). A mimetype
    no adapter reads gets one that refuses with TA-W501 (``validate`` warned of it), where Tiled
    would raise a RuntimeError: a 500."""

    def __init__(self, adapters: Adapters, factories: dict[str, AdapterFactory]):
        super().__init__(factories)
        self.adapters = adapters
        self._built: dict[str, type] = {}
        self._lock = threading.Lock()

    def __getitem__(self, mimetype: str) -> type:
        from .guard import guarded

        with self._lock:
            if mimetype not in self._built:
                factory = self.get(mimetype)
                self._built[mimetype] = (
                    self._unreadable(mimetype)
                    if factory is None
                    else guarded(factory(), mimetype, self.adapters)
                )
            return self._built[mimetype]

    def _unreadable(self, mimetype: str) -> type:
        adapters = self.adapters

        class Unreadable:
            @classmethod
            def from_catalog(cls, data_source, node, /, **kwargs):
                raise ArchiveError(
                    "TA-W501",
                    adapters.where(data_source),
                    f"no Tiled adapter reads {mimetype!r}: the node is listed but not read",
                )

        return Unreadable
