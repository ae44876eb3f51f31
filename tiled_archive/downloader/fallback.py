"""What the server will not hand out raw is read through its data API: arrays into a Zarr
store, tables into Parquet files, under a fallback folder of ``data/`` with sanitized, unique
segments for the node paths."""

from __future__ import annotations

import itertools
import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import TaskID

from ..files.blobs import Blob
from ..files.hashing import copy_hashing
from ..rules.formats import (
    ARROW_MIMETYPE,
    AWKWARD_MIMETYPE,
    PARQUET_MIMETYPE,
    SPARSE_MIMETYPE,
    ZARR_MIMETYPE,
    zarr_dtype_warnings_silenced,
)
from ..rules.names import DATA_DIR, RAGGED_MIMETYPE
from ..rules.paths import FORBIDDEN_CHARACTERS
from .plan import walk
from .state import Node, Run, children, staged_asset
from .transfer import NotServed, check, parallel, retrying

#: Arrays read through the data API are fetched in slabs of about this size.
SLAB_BYTES = 64 << 20
# Where data read through the data API goes, below data/ (a suffix is added if taken).
FALLBACK_FOLDER = "data-api"


def fetch_fallbacks(run: Run) -> None:
    """Read nodes not fetched raw through the data API: a container is expanded into its
    children, an array becomes a Zarr store and a table Parquet files."""
    raw = {remote.member for node in run.nodes if node.method == "raw" for remote in node.files}
    for member in set(run.ready) - raw:  # fetched before its node was refused
        del run.ready[member]
    for member in set(run.reused) - raw:  # or taken from the archive an update replaces
        run.reused_bytes -= run.reused.pop(member).size
    for node in list(run.nodes):
        if node.method == "data-api" and node.attributes["structure_family"] == "container":
            node.method = "container"
            for child in children(node.client):
                walk(run, child, fallback_reason=node.reason)
    leaves = [node for node in run.nodes if node.method == "data-api"]
    prefix = _fallback_prefix(run)
    names = _FolderNames()
    folders = {id(node): f"{prefix}/{names.path(node.path)}" for node in leaves}
    run.progress.update(run.listing, total=len(run.nodes))  # the refused containers' nodes
    if not leaves:
        return  # no empty "data API 0/0" bar
    bar = run.progress.add_task("data API", total=len(leaves))
    parallel(run, leaves, lambda node: _fallback(run, bar, node, folders[id(node)]))


def _fallback_prefix(run: Run) -> str:
    raw = [remote.member for node in run.nodes if node.method == "raw" for remote in node.files]
    taken = {member.split("/")[1] for member in [*run.ready, *raw]}
    name, number = FALLBACK_FOLDER, 1
    while name in taken:
        number += 1
        name = f"{FALLBACK_FOLDER}-{number}"
    return f"{DATA_DIR}/{name}"


def _fallback(run: Run, bar: TaskID, node: Node, folder_member: str) -> None:
    family = node.attributes["structure_family"]
    folder = run.staging / folder_member
    structure = node.attributes["structure"]
    parameters: dict[str, Any] = {}
    try:
        if family == "array":
            # The layout Tiled itself writes for the array, which the user did not choose:
            # zarr's warning about data types without a v3 spec is not theirs to act on.
            with zarr_dtype_warnings_silenced():
                _write_zarr(run, node, folder)
            assets = [staged_asset(folder, True, "data_uri", None)]
            mimetype = ZARR_MIMETYPE
        elif family == "table":
            partitions, mimetype = _write_table(run, node, folder)
            assets = [
                staged_asset(path, False, "data_uris", number)
                for number, path in enumerate(partitions)
            ]
        elif family == "sparse":
            assets = _write_sparse(run, node, folder)
            mimetype = SPARSE_MIMETYPE
        elif family == "awkward":
            assets = _write_awkward(node, folder)
            mimetype = AWKWARD_MIMETYPE
        elif family == "ragged":
            assets, parameters = _write_ragged(node, folder)
            mimetype = RAGGED_MIMETYPE
        else:
            node.error = f"no data-API fallback for {family} nodes ({node.reason})"
            return
    except NotServed as err:
        node.error = f"data API: {err} ({node.reason})"
        return
    except (ValueError, TypeError) as err:  # a dtype or schema the local writer refuses
        node.error = f"could not write it locally: {err!r} ({node.reason})"
        return
    node.archived = [
        {
            "structure_family": family,
            "structure": structure,
            "mimetype": mimetype,
            "parameters": parameters,
            "properties": {},
            "management": "external",
            "assets": assets,
        }
    ]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            size, sha, crc = copy_hashing(handle, None, with_crc32=True)
        member = path.relative_to(run.staging).as_posix()
        run.file_ready(member, Blob(path, size, sha, crc, int(time.time())))
    run.progress.advance(bar)


def _data(run: Run, node: Node, link: str, params: dict[str, Any], accept: str) -> bytes:
    """One data-API response body (whole: a slab or a partition, bounded in size)."""
    # Links may carry a template query (``?partition={index}``); params replace it.
    url = node.client.item["links"][link].split("?", 1)[0]

    def attempt() -> bytes:
        response = run.http.get(url, params=params, headers={"Accept": accept})
        check(response)
        return response.content

    return retrying(run, attempt, url)


def _write_zarr(run: Run, node: Node, folder: Path) -> None:
    """An array as a Zarr store (as Tiled's ``write_array`` makes), fetched in slabs of at most
    :data:`SLAB_BYTES` (less when the server's response limit is lower: its refusal names the
    limit), so memory stays flat and no request exceeds what the server answers, even for an
    array stored as one huge chunk. The store is chunked like the server's blocks, cut to the
    slab where a block is bigger; the server's structure is kept in the catalog (Tiled slices
    blocks out of the store by it, whatever the store's own chunks)."""
    import numpy as np
    import zarr
    from tiled.structures.array import ArrayStructure

    structure = ArrayStructure.from_json(node.attributes["structure"])
    dtype = structure.data_type.to_numpy_dtype()
    shape = tuple(structure.shape)
    limit = SLAB_BYTES
    while True:
        block = _slab_shape(shape, dtype.itemsize, limit)
        first_block = (dim[0] if dim else 1 for dim in structure.chunks)
        chunks = tuple(max(1, min(a, b)) for a, b in zip(first_block, block, strict=True))
        target = zarr.create_array(
            store=str(folder), shape=shape, chunks=chunks, dtype=dtype, overwrite=True
        )
        if 0 in shape:
            return
        try:
            for region in _slabs(shape, block):
                selection = ",".join(f"{s.start}:{s.stop}" for s in region)
                params = {"slice": selection} if region else {}
                raw = _data(run, node, "full", params, "application/octet-stream")
                expected = tuple(s.stop - s.start for s in region)
                target[region] = np.frombuffer(raw, dtype=dtype).reshape(expected)
            return
        except NotServed as err:
            smaller = _response_limit(str(err))
            if smaller is None or limit <= dtype.itemsize:
                raise
            limit = min(limit // 2, smaller // 2)


def _slab_shape(shape: tuple[int, ...], itemsize: int, limit: int) -> tuple[int, ...]:
    """The largest block of ``shape`` within ``limit`` bytes that is whole along its trailing
    axes: those that fit are taken whole, the next one cut into runs, the leading ones one
    index at a time (at least one element)."""
    block = [1] * len(shape)
    size = itemsize
    for axis in reversed(range(len(shape))):
        if size * shape[axis] <= limit:
            block[axis] = shape[axis]
            size *= shape[axis]
        else:
            block[axis] = max(1, limit // size)
            break
    return tuple(block)


def _slabs(shape: tuple[int, ...], block: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """The regions of ``shape`` in blocks of ``block``, in C order (``()`` for a 0-d array)."""
    starts = [range(0, size, step) for size, step in zip(shape, block, strict=True)]
    for corner in itertools.product(*starts):
        yield tuple(
            slice(start, min(start + step, size))
            for start, step, size in zip(corner, block, shape, strict=True)
        )


def _response_limit(message: str) -> int | None:
    """The byte limit in Tiled's refusal of a response too large ("Response would exceed N")."""
    match = re.search(r"Response would exceed (\d+)", message)
    return int(match.group(1)) if match else None


def _init_storage(adapter: Any, family: str, structure: Any, mimetype: str, folder: Path) -> Any:
    """The data source Tiled's storage writer ``adapter.init_storage`` lays out in ``folder``
    (as the server does for a client's write), its assets pointing there."""
    from tiled.storage import FileStorage
    from tiled.structures.data_source import DataSource
    from tiled.utils import ensure_uri

    return adapter.init_storage(
        FileStorage(ensure_uri(folder.parent)),
        DataSource(structure_family=family, structure=structure, mimetype=mimetype),
        [folder.name],
    )


def _staged(data_source: Any) -> list[dict[str, Any]]:
    """The assets a Tiled storage writer (``init_storage``) made, as staged assets."""
    from tiled.utils import path_from_uri

    return [
        staged_asset(path_from_uri(a.data_uri), a.is_directory, a.parameter, a.num)
        for a in data_source.assets
    ]


def _write_sparse(run: Run, node: Node, folder: Path) -> list[dict[str, Any]]:
    """A sparse array as Tiled stores one a client writes: one Parquet file per block
    (``SparseBlocksParquetAdapter``), each block fetched as the table Tiled serves (columns
    ``dim0``... and ``data``)."""
    import pyarrow.ipc
    from tiled.adapters.sparse_blocks_parquet import SparseBlocksParquetAdapter
    from tiled.structures.sparse import COOStructure

    structure = COOStructure.from_json(node.attributes["structure"])
    data_source = _init_storage(
        SparseBlocksParquetAdapter, "sparse", structure, SPARSE_MIMETYPE, folder
    )
    adapter = SparseBlocksParquetAdapter(
        [a.data_uri for a in data_source.assets], structure=structure
    )
    for block in itertools.product(*(range(len(sizes)) for sizes in structure.chunks)):
        # Arrow, as Tiled's own client asks: Tiled 0.2.20 fails to serve a sparse block as
        # Parquet (docs/upstream.md).
        raw = _data(run, node, "block", {"block": ",".join(map(str, block))}, ARROW_MIMETYPE)
        adapter.write_block(pyarrow.ipc.open_file(raw).read_pandas(), block)
    return _staged(data_source)


def _write_awkward(node: Node, folder: Path) -> list[dict[str, Any]]:
    """An awkward array as Tiled stores one a client writes: its buffers, one file each
    (``AwkwardBuffersAdapter``), read through Tiled's client (which fetches the buffers)."""
    import awkward
    from tiled.adapters.awkward import AwkwardBuffersAdapter
    from tiled.storage import DirectoryContainer
    from tiled.structures.awkward import AwkwardStructure
    from tiled.utils import path_from_uri

    structure = AwkwardStructure.from_json(node.attributes["structure"])
    data_source = _init_storage(
        AwkwardBuffersAdapter, "awkward", structure, AWKWARD_MIMETYPE, folder
    )
    form, length, buffers = awkward.to_buffers(node.client.read())
    expected = set(structure.awkward_form.expected_from_buffers())
    if set(buffers) != expected or length != structure.length:
        raise ValueError("the array read back does not have the buffers its structure names")
    container = DirectoryContainer(path_from_uri(data_source.assets[0].data_uri))
    adapter = AwkwardBuffersAdapter(container, structure)
    adapter.write({key: memoryview(value).tobytes() for key, value in buffers.items()})
    return _staged(data_source)


def _write_ragged(node: Node, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A ragged array as Tiled stores one a client writes (``RaggedSQLAdapter``): a table in
    an embedded DuckDB database of its own, one row per chunk along axis 0, each chunk read
    through Tiled's client (in smaller runs of rows when the server's response limit says so).
    Returns the staged asset and the data source's parameters (the table and dataset)."""
    from types import SimpleNamespace

    from tiled.adapters.ragged import RaggedSQLAdapter
    from tiled.storage import acquire_storage, parse_storage, release_storage
    from tiled.structures.data_source import DataSource
    from tiled.structures.ragged import RaggedStructure

    structure = RaggedStructure.from_json(node.attributes["structure"])
    folder.mkdir(parents=True)
    path = folder / "ragged.duckdb"
    storage = acquire_storage(parse_storage(f"duckdb:///{path}"))
    try:
        data_source = RaggedSQLAdapter.init_storage(
            storage,
            DataSource(structure_family="ragged", structure=structure, mimetype=RAGGED_MIMETYPE),
        )
        writer = RaggedSQLAdapter.from_catalog(data_source, SimpleNamespace(metadata_={}, specs=[]))
        start = 0
        for index, length in enumerate(structure.chunks[0] or ()):
            writer.write_block(_ragged_rows(node, start, start + length), (index,))
            start += length
    finally:
        storage.dispose()  # DuckDB checkpoints on close: the rows are in the file, no WAL
        release_storage(storage)
    return [staged_asset(path, False, "data_uri", None)], dict(data_source.parameters)


def _ragged_rows(node: Node, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a ragged node, as one ragged array, fetched in halves while the
    server refuses a response as too large."""
    import awkward
    import ragged

    try:
        return node.client[start:stop]
    except Exception as err:
        if stop - start < 2 or _response_limit(str(err)) is None:
            raise
    middle = (start + stop) // 2
    halves = [_ragged_rows(node, start, middle), _ragged_rows(node, middle, stop)]
    return ragged.array(awkward.concatenate([half._impl for half in halves]))


def _write_table(run: Run, node: Node, folder: Path) -> tuple[list[Path], str]:
    """A table as one file per partition, as Tiled writes them, each written from the Arrow
    the server sends: Parquet, unless Parquet would change a column's type (it has no
    second-resolution timestamps: ``datetime64[s]`` would read back as ``[ms]``); then Arrow
    IPC files (Tiled's ``ArrowAdapter`` layout), which keep every Arrow type."""
    import pyarrow
    import pyarrow.parquet

    folder.mkdir(parents=True)
    paths: list[Path] = []
    mimetype = PARQUET_MIMETYPE
    for number in range(node.attributes["structure"]["npartitions"]):
        raw = _data(run, node, "partition", {"partition": number}, ARROW_MIMETYPE)
        table = pyarrow.ipc.open_file(raw).read_all()
        if mimetype == PARQUET_MIMETYPE:
            path = folder / f"partition-{number}.parquet"
            pyarrow.parquet.write_table(table, path)
            # The partitions share one schema: the first says whether Parquet keeps it.
            if number == 0 and (
                pyarrow.parquet.read_schema(path).remove_metadata()
                != table.schema.remove_metadata()
            ):
                path.unlink()
                mimetype = ARROW_MIMETYPE
        if mimetype == ARROW_MIMETYPE:
            path = folder / f"partition-{number}.arrow"
            with pyarrow.ipc.new_file(path, table.schema) as sink:
                sink.write_table(table)
        paths.append(path)
    return paths, mimetype


class _FolderNames:
    """The folders of one run's fallback nodes, segment by segment."""

    def __init__(self) -> None:
        self._segments: dict[tuple[str, ...], str] = {}
        self._taken: dict[tuple[str, ...], set[str]] = {}

    def path(self, path: tuple[str, ...]) -> str:
        """A folder below the fallback folder for a node path: sanitized keys, made unique
        among siblings (also ignoring case) with ``~2``, ``~3``..."""
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            if prefix not in self._segments:
                taken = self._taken.setdefault(prefix[:-1], set())
                segment = base = _safe_segment(prefix[-1])
                number = 1
                while segment.casefold() in taken:
                    number += 1
                    segment = f"{base}~{number}"
                taken.add(segment.casefold())
                self._segments[prefix] = segment
        return "/".join(self._segments[path[:depth]] for depth in range(1, len(path) + 1))


def _safe_segment(key: str) -> str:
    """A node key as an archive path segment (for data read through the data API): characters
    the format forbids become ``_``, and the segment is NFC and at most 255 bytes."""
    text = FORBIDDEN_CHARACTERS.sub("_", unicodedata.normalize("NFC", key).replace("/", "_"))
    text = "".join(ch for ch in text if not "\ud800" <= ch <= "\udfff")
    if text in ("", ".", ".."):
        text = f"_{text}"
    while len(text.encode()) > 255:
        text = text[:-1]
    return text
