"""Adapters for a live Tiled catalog (``from_catalog``): Tiled's own, on confined local files.

A catalog is not an archive: no manifest lists its files, and it may be large and change while
it is served. So nothing is checked at open; each time Tiled builds an adapter (every request),
the assets it will read (the data source's, or the frames of a lazy sequence read) are
resolved inside the readable storage (TA-E923) and stat-ed (a folder: its folders, walked again
when one changed, and the files its checks read), and their files inspected as an archive's
are (TA-E600..E602, the memory budget) unless these very files (same inode, size and times)
were inspected before; then Tiled's adapter is given the resolved paths. What remains is the
race between that check and the library opening the path (spec 8.1).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

from tiled.utils import ensure_uri

from ...inspectors import Inspection
from ...inspectors import inspect as inspect_files
from ...inspectors.zarr import METADATA_NAMES
from ...rules.catalog_rows import AssetRef, DataSourceRow
from ...rules.formats import ZARR_MIMETYPE
from ...rules.names import RAGGED_MIMETYPE
from ...rules.problems import ArchiveError
from ...sources.storage import ReadableStorage
from . import AdapterFactory, Adapters, _local_zarr_store, _stock_adapters

#: Inspections kept (by data source, the files read and their stat signature): a sequence's
#: frames are checked once while they stay as they are.
_KEPT = 4096


class StorageAdapters(Adapters):
    """The adapters that serve a catalog whose files lie in ``storage``."""

    def __init__(self, storage: ReadableStorage):
        super().__init__()
        self.storage = storage
        self._inspections: OrderedDict[tuple, Inspection] = OrderedDict()
        self._inspections_lock = threading.Lock()

    def _readers(self) -> dict[str, AdapterFactory]:
        local = self.storage.local_path
        adapters = _stock_adapters(lambda uri: ensure_uri(local(uri)))
        adapters[ZARR_MIMETYPE] = lambda: self._zarr_adapter(
            lambda uri: (_local_zarr_store(local(uri)), "")
        )
        adapters[RAGGED_MIMETYPE] = lambda: self._ragged_adapter(local)
        return adapters

    def inspection(self, data_source: Any, kwargs: dict[str, Any]) -> Inspection:
        assets = [(a.data_uri, a.is_directory, a.parameter, a.num) for a in data_source.assets]
        if kwargs.get("data_uris") is not None:  # Tiled's lazy sequence read: these frames only
            frames = enumerate(kwargs["data_uris"])
            assets = [(uri, False, "data_uris", num) for num, uri in frames if uri is not None]
        # Resolved and stat-ed at every adapter build (a folder walked again when one of its
        # folders changed): a file swapped (or a link put in a folder) since the last read is
        # checked again, not passed on a stale verdict. A Zarr store's checks read only its
        # metadata documents: those are stat-ed each time, not its chunks.
        resolved = [(self.storage.local_path(a[0]), *a[1:]) for a in assets]
        watched = METADATA_NAMES if data_source.mimetype == ZARR_MIMETYPE else None
        files = self.storage.files(
            ((path, is_directory) for path, is_directory, *_ in resolved), watched
        )
        key = (data_source.id, tuple(assets), files.signature)
        with self._inspections_lock:
            found = self._inspections.get(key)
        if found is None:
            row = DataSourceRow(
                data_source.id,
                f"data source {data_source.id}",
                str(getattr(data_source.structure_family, "value", data_source.structure_family)),
                data_source.mimetype,
                dict(data_source.parameters or {}),
                _as_json(data_source.structure),
                tuple(AssetRef(str(path), *rest) for path, *rest in resolved),
            )
            found = inspect_files(files, row)
            with self._inspections_lock:
                self._inspections[key] = found
                while len(self._inspections) > _KEPT:
                    self._inspections.popitem(last=False)
        if found.problems:
            first = found.problems[0]
            raise ArchiveError(first.code, first.path, first.message)
        return found

    def where(self, data_source: Any) -> str:
        uris = [a.data_uri for a in data_source.assets]
        return uris[0] if uris else f"data source {data_source.id}"


def _as_json(structure: Any) -> dict[str, Any] | None:
    """A structure as the catalog stores it (Tiled hands adapters its dataclass)."""
    if structure is None or isinstance(structure, dict):
        return structure
    return dataclasses.asdict(structure)
