"""HDF5 files: what they may refer to, walked without letting the HDF5 library follow anything.

The HDF5 library follows three kinds of reference to other files by itself, below any Python
path check: external links, datasets with external raw storage, and virtual datasets whose
sources are other files. A walk that opened objects *through* such links would already have
touched the other file, so links are read as links (``H5Lget_info``/``H5Lget_val``) and only
hard links are opened; soft links are resolved segment by segment the same way.

Tiled's HDF5 adapter parses the whole tree recursively, following soft links, so the walk also
bounds what that would meet: a soft link back to an ancestor group (an endless tree), nesting
deeper than :data:`MAX_DEPTH`, and more than :data:`MAX_OBJECTS` entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..rules.budget import (
    HDF5_OBJECT_BYTES,
    HDF5_TASK_BYTES,
    HDF5_TOUCHED_BYTES,
    ChunkGrid,
    nbytes,
)
from ..rules.catalog_rows import DataSourceRow
from ..sources import ByteSource
from . import Dataset, Inspection, add

#: Deepest group nesting accepted (real NeXus files nest under 10 levels).
MAX_DEPTH = 64
#: Entries (links, as Tiled's tree walk would meet them) accepted in one file.
MAX_OBJECTS = 1_000_000
#: Soft links followed one after another before a target counts as unresolvable.
MAX_SOFT_HOPS = 40


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the file: a code, where inside the file, what."""

    code: str
    where: str
    message: str


@dataclass
class Scan:
    findings: list[Finding]
    datasets: dict[str, Dataset]


def scan(handle: BinaryIO) -> Scan:
    """Walk the HDF5 file ``handle`` as Tiled would, following nothing outside it."""
    import h5py

    result = Scan([], {})
    try:
        with h5py.File(handle, "r") as file:
            _Walk(file, result).run()
    # h5py's errors for what the library cannot parse: OSError opening, RuntimeError,
    # KeyError or ValueError from damaged heaps, dataspaces and link tables while walking.
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        result.findings.append(Finding("TA-E601", "/", f"not a readable HDF5 file: {err}"))
    return result


class _Walk:
    def __init__(self, file, result: Scan):
        import h5py

        self.h5py = h5py
        self.file = file
        self.result = result
        self.entries = 0

    def add(self, code: str, where: str, message: str) -> None:
        self.result.findings.append(Finding(code, where, message))

    def run(self) -> None:
        h5o = self.h5py.h5o
        root = self.file.id
        # Depth-first over groups, as Tiled's tree walk; each stack item carries the addresses
        # of its ancestors (a group met again among them means the tree never ends).
        stack: list[tuple[object, str, tuple[int, ...]]] = [
            (h5o.open(root, b"/"), "/", (h5o.get_info(root).addr,))
        ]
        while stack:
            group, path, ancestors = stack.pop()
            if len(ancestors) > MAX_DEPTH:
                self.add("TA-E601", path, f"groups nested deeper than {MAX_DEPTH} levels")
                return
            for name in _link_names(group):
                self.entries += 1
                if self.entries > MAX_OBJECTS:
                    self.add("TA-E601", path, f"more than {MAX_OBJECTS} entries")
                    return
                child_path = f"{path.rstrip('/')}/{name.decode('utf-8', 'replace')}"
                target = self._resolve(group, name, child_path)
                if target is None:
                    continue
                info = h5o.get_info(target)
                if info.type == h5o.TYPE_GROUP:
                    if info.addr in ancestors:
                        self.add(
                            "TA-E601",
                            child_path,
                            "link back to a group it lies in: the tree never ends",
                        )
                        return
                    stack.append((target, child_path, (*ancestors, info.addr)))
                elif info.type == h5o.TYPE_DATASET:
                    self._dataset(target, child_path)

    def _resolve(self, group, name: bytes, where: str, hops: int = 0):
        """The object link ``name`` of ``group`` names, opened only through hard links; None
        (after reporting) for an external link, and for a soft link that leaves the file or
        goes nowhere (Tiled shows a dangling link as a broken link)."""
        h5l, h5o = self.h5py.h5l, self.h5py.h5o
        if not _has_link(group, name):
            return None
        info = group.links.get_info(name)
        if info.type == h5l.TYPE_HARD:
            return h5o.open(group, name)
        if info.type == h5l.TYPE_EXTERNAL:
            filename, inner = group.links.get_val(name)
            self.add(
                "TA-E600",
                where,
                f"external link to {inner.decode(errors='replace')} in file "
                f"{filename.decode(errors='replace')!r}",
            )
            return None
        if info.type != h5l.TYPE_SOFT:
            self.add("TA-E600", where, "user-defined link (its target is unknown)")
            return None
        if hops >= MAX_SOFT_HOPS:
            self.add("TA-E601", where, f"more than {MAX_SOFT_HOPS} soft links in a row")
            return None
        target = group.links.get_val(name)
        current = h5o.open(self.file.id, b"/") if target.startswith(b"/") else group
        for segment in (s for s in target.split(b"/") if s and s != b"."):
            if h5o.get_info(current).type != h5o.TYPE_GROUP:
                return None
            current = self._resolve(current, segment, where, hops + 1)
            if current is None:
                return None
        return current

    def _dataset(self, dataset, where: str) -> None:
        h5d = self.h5py.h5d
        plist = dataset.get_create_plist()
        if plist.get_external_count():
            name = plist.get_external(0)[0].decode(errors="replace")
            self.add("TA-E600", where, f"raw data stored in external file {name!r}")
        layout = plist.get_layout()
        if layout == h5d.VIRTUAL:
            for index in range(plist.get_virtual_count()):
                filename = plist.get_virtual_filename(index)
                if filename != ".":
                    self.add(
                        "TA-E600", where, f"virtual dataset with a source in file {filename!r}"
                    )
                    break
        kind = dataset.get_type()
        itemsize = kind.get_size()
        shape = tuple(dataset.shape or ())
        chunk_bytes = None
        chunks = shape  # contiguous: Tiled's adapter takes the whole as one chunk
        if layout == h5d.CHUNKED:
            chunks = tuple(plist.get_chunk())
            chunk_bytes = nbytes(chunks, itemsize)
        if _object_values(self.h5py, kind):
            # Tiled's adapter reads such a dataset whole when it opens it (variable-length
            # strings as bytes; other object values as empty placeholders): a cost per
            # element, whatever the file holds.
            grid = ChunkGrid(shape, (1,) * len(shape), opened=HDF5_OBJECT_BYTES)
        else:
            grid = ChunkGrid(shape, chunks, opened=HDF5_TASK_BYTES, touched=HDF5_TOUCHED_BYTES)
        self.result.datasets[where] = Dataset(where, itemsize, chunk_bytes, grid)


def _object_values(h5py: Any, kind: Any) -> bool:
    """Whether h5py reads values of this HDF5 type as Python objects (variable-length strings
    and sequences, references)."""
    if isinstance(kind, (h5py.h5t.TypeVlenID, h5py.h5t.TypeReferenceID)):
        return True
    return isinstance(kind, h5py.h5t.TypeStringID) and kind.is_variable_str()


def _stacked(first: Dataset, then: Dataset) -> Dataset:
    """One dataset of several files (``data_uris``), as Tiled's adapter stacks them along the
    first axis: their lengths summed, each axis in the smallest chunk any file has (so the
    grid counts at least the chunks Tiled makes), the dearest per-chunk costs."""
    a, b = first.grid, then.grid
    if a is None or b is None or len(a.shape) != len(b.shape) or not a.shape:
        return then if a is None else first
    grid = ChunkGrid(
        (a.shape[0] + b.shape[0], *a.shape[1:]),
        tuple(min(x, y) for x, y in zip(a.chunks, b.chunks, strict=True)),
        opened=max(a.opened, b.opened),
        touched=max(a.touched, b.touched),
    )
    chunk = max(first.chunk_bytes or 0, then.chunk_bytes or 0) or None
    return Dataset(first.path, max(first.itemsize, then.itemsize), chunk, grid)


def _link_names(group) -> Iterator[bytes]:
    names: list[bytes] = []
    group.links.iterate(lambda name: names.append(name))
    yield from names


def _has_link(group, name: bytes) -> bool:
    try:
        return bool(group.links.exists(name))
    except (KeyError, ValueError):
        return False


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    datasets: dict[str, Dataset] = {}
    for path in row.members():
        with source.open(path) as handle:
            found = scan(handle)
        for finding in found.findings:
            add(result, finding.code, path, f"{finding.where}: {finding.message}")
        for where, dataset in found.datasets.items():
            earlier = datasets.get(where)
            datasets[where] = dataset if earlier is None else _stacked(earlier, dataset)
    result.datasets = datasets
    if row.family == "array":  # one dataset of the file (the `dataset` parameter)
        inner = row.parameters.get("dataset", "/")
        inner = "/" + "/".join(inner if isinstance(inner, list) else [inner]).strip("/")
        dataset = datasets.get(inner)
        result.unit = (dataset.chunk_bytes or 0) if dataset is not None else 0
        result.grid = dataset.grid if dataset is not None else None


#: The first bytes of an HDF5 file (at offset 0 when there is no user block).
SIGNATURE = b"\x89HDF\r\n\x1a\n"


def inspect_netcdf(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    """netCDF-4 files are HDF5 files (and the netCDF library lets HDF5 follow their links);
    netCDF classic files hold no references."""
    for path in row.members():
        with source.open(path) as handle:
            if handle.read(len(SIGNATURE)) != SIGNATURE:
                continue
            handle.seek(0)
            found = scan(handle)
        for finding in found.findings:
            add(result, finding.code, path, f"{finding.where}: {finding.message}")
