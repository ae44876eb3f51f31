"""The archives every mutation starts from.

The conformance suite's valid fixtures (``conformance/fixtures/valid/*``: ``minimal``,
``real-data``, ``zip64-everywhere``), and ``rich``: one archive built per session by the
reference writer (``tiled_archive.writer.create``, Tiled's own registration) from the files of
``tests/conftest.py``'s ``write_sample_tree`` (HDF5, a TIFF sequence and a TIFF, NPY, CSV,
Parquet, Zarr v2 and v3), its catalog vacuumed to 512-byte pages like the fixtures'.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from conformance.generate import FIXTURES, Tree, catalog, read_tree, seal, tree_zip
from tiled_archive.rules.names import CATALOG_NAME
from tiled_archive.rules.paths import is_payload_path

SEED_NAMES = ("minimal", "real-data", "zip64-everywhere", "rich")
CONFORMANCE_SEEDS = ("minimal", "real-data", "zip64-everywhere")


@dataclass(frozen=True)
class Seed:
    """A good archive: its files (path -> bytes, in ZIP member order) and its ZIP form."""

    name: str
    tree: Tree
    zip: bytes
    zip64: bool = False
    regions: dict[str, list[tuple[int, int]]] = field(default_factory=dict, compare=False)

    @property
    def payload(self) -> list[str]:
        return sorted(p for p in self.tree if is_payload_path(p))

    def zip_of(self, tree: Tree) -> bytes:
        """``tree`` as a ZIP by the reference ZIP writer (ZIP64 everywhere for that seed)."""
        return bytes(tree_zip(tree, force_zip64=self.zip64))


def tree_of_zip(data: bytes) -> Tree:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}


def zip_regions(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """Where the structures of a ZIP lie, as (start, length): each local header, central
    directory record, member's data, the end record, the ZIP64 end record and locator."""
    end = data.rindex(b"PK\x05\x06")
    (comment,) = struct.unpack_from("<H", data, end + 20)
    regions: dict[str, list[tuple[int, int]]] = {
        "end": [(end, 22 + comment)],
        "any": [(0, len(data))],
    }
    locator = data.rfind(b"PK\x06\x07", 0, end)
    if locator >= 0:
        (z64,) = struct.unpack_from("<Q", data, locator + 8)
        regions["zip64"] = [(z64, 56), (locator, 20)]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        start_dir = archive.start_dir
    local, member_data = [], []
    for info in infos:
        offset = info.header_offset
        name_length, extra_length = struct.unpack_from("<HH", data, offset + 26)
        header = 30 + name_length + extra_length
        local.append((offset, header))
        member_data.append((offset + header, max(1, info.compress_size)))
    central = []
    position = start_dir
    for _ in infos:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        size = 46 + name_length + extra_length + comment_length
        central.append((position, size))
        position += size
    regions.update(local=local, central=central, data=member_data)
    regions["mimetype"] = [(local[0][0], local[0][1] + member_data[0][1])]
    return regions


def conformance_seed(name: str) -> Seed:
    folder = FIXTURES / "valid" / name
    data = (folder / "archive.zip").read_bytes()
    tree = read_tree(folder / "archive") if (folder / "archive").is_dir() else tree_of_zip(data)
    return Seed(name, tree, data, zip64=name.startswith("zip64"), regions=zip_regions(data))


def build_rich(dest: str) -> None:
    """Write the sample files and archive them with the reference writer (run in a child)."""
    from tests.conftest import write_sample_tree
    from tiled_archive.writer import create

    sources = Path(dest).parent / "rich-sources"
    sources.mkdir()
    create(dest, [write_sample_tree(sources)], reproducible=True)


def rich_seed(directory: Path) -> Seed:
    tree = read_tree(directory)
    with catalog(tree) as conn:
        conn.execute("PRAGMA page_size = 512")
        conn.execute("VACUUM")
    seal(tree)
    assert CATALOG_NAME in tree
    data = bytes(tree_zip(tree))
    return Seed("rich", tree, data, regions=zip_regions(data))
