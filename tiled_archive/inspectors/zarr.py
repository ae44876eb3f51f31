"""Zarr stores (v2 and v3, arrays and groups): metadata against the catalog, keys in the store.

Only the metadata documents are read (through the byte source, each bounded in size and
nesting) into an in-memory store, which zarr itself then parses: so codecs and data types are
zarr's own verdict, and no chunk is touched. A key that would leave the store (a child named
``..`` in consolidated metadata) is TA-E600; readers also confine every key at read time
(:class:`ConfinedStore`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..rules.budget import ZARR_ENTRY_BYTES, ZARR_TOUCHED_BYTES, ChunkGrid, nbytes
from ..rules.catalog_rows import DataSourceRow
from ..rules.paths import escapes_folder
from ..rules.problems import reason
from ..rules.schemas import load_json
from ..rules.structures import declared_dtype, structure_of
from ..sources import ByteSource
from . import Dataset, Inspection, add, not_the_file

METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")
#: Largest metadata document read (consolidated metadata of a big group stays far below).
MAX_METADATA_BYTES = 16 << 20
#: Bytes of a shard index per inner chunk (offset and length, 8 bytes each).
SHARD_INDEX_ENTRY = 16


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    folder = next((a.member for a in row.assets if a.is_directory), None)
    if folder is None:
        add(result, "TA-E601", row.assets[0].member if row.assets else row.node, "not a folder")
        return
    documents, stored = _metadata(source, folder, result)
    if documents is None:
        return
    result.stored = stored
    try:
        node = _open(documents, row.family)
        arrays = [node] if row.family == "array" else _arrays(node)
    except Exception as err:  # noqa: BLE001 -- zarr raises many types on bad metadata
        not_the_file(err)
        add(result, "TA-E601", folder, f"zarr cannot read its metadata: {reason(err)}")
        return
    for array in arrays:
        transformers = getattr(array.metadata, "storage_transformers", ())
        if transformers:
            add(result, "TA-E601", folder, f"{array.path or '/'}: storage transformers")
            return
    result.decoded = sum(nbytes(a.shape, a.dtype.itemsize) for a in arrays)
    result.unit = max((_unit(a) for a in arrays), default=0)
    # A Zarr array node is read by the catalog's structure: only the chunks a read touches
    # cost; an array of a group is listed by Tiled's array adapter, chunk lengths and all.
    if row.family == "array":
        result.grid = _grid(arrays[0], listed=0)
    else:
        result.datasets = {
            "/" + array.path.strip("/"): Dataset(
                "/" + array.path.strip("/"),
                array.dtype.itemsize,
                nbytes(array.chunks, array.dtype.itemsize),
                _grid(array, listed=ZARR_ENTRY_BYTES),
            )
            for array in arrays
        }
    structure = structure_of(row)
    if row.family == "array" and structure is not None:
        array = arrays[0]
        expected_dtype = declared_dtype(structure)
        # Byte order aside: a Zarr v3 data type has none (the bytes codec decides it, and
        # zarr reads into native order); Tiled serves the values in the catalog's order.
        if not shape_agrees(array, structure) or (
            expected_dtype is not None
            and array.dtype.newbyteorder("<") != expected_dtype.newbyteorder("<")
        ):
            add(
                result,
                "TA-E602",
                folder,
                f"zarr metadata says {tuple(array.shape)} {array.dtype} (chunks "
                f"{tuple(array.chunks)}), the catalog {tuple(structure.shape)} {expected_dtype}"
                f"{padded_text(structure)}",
                "Re-register the store with Tiled (or write the array again through Tiled's "
                "client) so the catalog describes what the store holds.",
            )


def _grid(array: Any, listed: int) -> ChunkGrid:
    return ChunkGrid(
        tuple(array.shape), tuple(array.chunks), listed=listed, touched=ZARR_TOUCHED_BYTES
    )


def _unit(array: Any) -> int:
    """The most one read of ``array`` decodes at once: a chunk, or a shard's index (16 bytes
    per inner chunk, read whole to find any one of them)."""
    chunk = nbytes(array.chunks, array.dtype.itemsize)
    shards = getattr(array, "shards", None)
    if not shards:
        return chunk
    inner = ChunkGrid(tuple(shards), tuple(array.chunks)).counts()
    return max(chunk, nbytes(inner, SHARD_INDEX_ENTRY))


def padded_shape(structure: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The store Tiled writes for an array of this structure (its Zarr adapter's
    ``init_storage``): zarr chunks of each dimension's first chunk length, and that length
    times the number of chunks, so a dimension of uneven chunks is padded to whole ones
    (``[[3, 3, 3, 1]]``: shape 12, chunks 3). Reads take the catalog's shape."""
    chunks = tuple(dimension[0] if dimension else 0 for dimension in structure.chunks)
    shape = tuple(
        dimension[0] * len(dimension) if dimension else 0 for dimension in structure.chunks
    )
    return shape, chunks


def shape_agrees(array: Any, structure: Any) -> bool:
    """The store holds the catalog's array (spec 3.3): its shape is the catalog's, or, along
    each dimension, the padded one Tiled writes (with the chunk it writes), never less than the
    catalog's."""
    padded, padded_chunks = padded_shape(structure)
    wanted = tuple(structure.shape)
    if len(array.shape) != len(wanted) or len(padded) != len(wanted):
        return False
    return all(
        stored == length or (stored == padded_length >= length and chunk == padded_chunk)
        for stored, chunk, length, padded_length, padded_chunk in zip(
            array.shape, array.chunks, wanted, padded, padded_chunks, strict=True
        )
    )


def padded_text(structure: Any) -> str:
    """How the catalog's array may also be stored, for a message."""
    padded, chunks = padded_shape(structure)
    if padded == tuple(structure.shape):
        return ""
    return f" (or, padded as Tiled writes it, {padded} in chunks {chunks})"


def _metadata(
    source: ByteSource, folder: str, result: Inspection
) -> tuple[dict[str, bytes] | None, int]:
    """The store's metadata documents by key (checked), and the bytes the store holds."""
    documents: dict[str, bytes] = {}
    stored = 0
    prefix = folder + "/"
    for path, member in source.members().items():
        if not path.startswith(prefix):
            continue
        stored += member.size
        key = path[len(prefix) :]
        if key.rsplit("/", 1)[-1] not in METADATA_NAMES:
            continue
        if member.size > MAX_METADATA_BYTES:
            add(result, "TA-E601", path, f"metadata document over {MAX_METADATA_BYTES} bytes")
            return None, stored
        raw = source.read(path)
        try:
            document = load_json(raw)
        except ValueError as err:
            add(result, "TA-E601", path, f"metadata is not JSON: {err}")
            return None, stored
        consolidated = _consolidated_keys(document)
        escaping = [k for k in consolidated if escapes_folder(k)]
        if escaping:
            add(result, "TA-E600", path, f"consolidated metadata names key {escaping[0]!r}")
            return None, stored
        documents[key] = raw
    return documents, stored


def _consolidated_keys(document: Any) -> list[str]:
    """Keys consolidated metadata names (v2 ``.zmetadata``, v3 ``consolidated_metadata``)."""
    if not isinstance(document, dict):
        return []
    for holder in (document, document.get("consolidated_metadata")):
        if isinstance(holder, dict) and isinstance(holder.get("metadata"), dict):
            return [str(k) for k in holder["metadata"]]
    return []


def _open(documents: dict[str, bytes], family: str) -> Any:
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    prototype = default_buffer_prototype()
    store = zarr.storage.MemoryStore(
        {key: prototype.buffer.from_bytes(raw) for key, raw in documents.items()}
    )
    store = store.with_read_only(True)
    if family == "array":
        return zarr.open_array(store=store, mode="r")
    return zarr.open_group(store=store, mode="r")


def _arrays(group: Any) -> list[Any]:
    """Every array of a group, at any depth (zarr walks the metadata-only store)."""
    import zarr

    return [node for _, node in group.members(max_depth=None) if isinstance(node, zarr.Array)]


def confined_store(store: Any) -> Any:
    """``store`` behind a wrapper that refuses every key leaving it (TA-E600)."""
    return _confined_store_class()(store)


@cache
def _confined_store_class() -> type:
    from zarr.storage import WrapperStore

    from ..rules.problems import ArchiveError

    def check(key: str) -> None:
        if key and escapes_folder(key):
            raise ArchiveError("TA-E600", key, "zarr key outside its store")

    class ConfinedStore(WrapperStore):
        async def get(self, key, prototype, byte_range=None):
            check(key)
            return await self._store.get(key, prototype, byte_range)

        async def get_partial_values(self, prototype, key_ranges):
            for key, _ in key_ranges:
                check(key)
            return await self._store.get_partial_values(prototype, key_ranges)

        async def exists(self, key):
            check(key)
            return await self._store.exists(key)

        def list_dir(self, prefix):
            check(prefix.rstrip("/"))
            return self._store.list_dir(prefix)

        def list_prefix(self, prefix):
            check(prefix.rstrip("/"))
            return self._store.list_prefix(prefix)

    return ConfinedStore
