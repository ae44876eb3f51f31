"""Everything Tiled's client can write round-trips (#28): a writable stock Tiled server,
filled through Tiled's own client with every case of the sweep (each its own node), is
downloaded whole once per path and each node compared with the live server's, node by node
(`tests/nodes.py` `assert_exact`: keys in order, metadata, specs, structure, dtypes, values).

The paths: the per-asset download (``streamed=False``) to a ZIP and to a directory, and the
archive route (``tiled_archive.serve.router:router``) to a ZIP: for the whole tree the route
refuses (data in the server's SQL storage) and the download takes the per-asset path; every
other top-level node comes through the route alone. Each archive must
validate (``tiled-archive validate``, exit 0) and read as the live server through
``tiled_archive.open``, through ``tiled_archive.from_catalog`` on its directory form (the
download's own directory, or ``tiled-archive extract`` of the ZIP), and through stock
``tiled serve catalog`` on that directory; ``pack``, ``extract`` and ``load`` must succeed.

One server serves the whole module: stock ``tiled serve config`` with the storage
``tiled serve catalog --temp --api-key KEY`` makes (a new SQLite catalog, a writable folder
and a DuckDB file for appendable tables, one API key) and the archive route mounted, since
``tiled serve catalog`` takes no routers. The per-asset path uses Tiled's own routes only, as
against ``tiled serve catalog --temp``.

Left out, as Tiled's own bugs or limits rather than the archive's:

- dask chunks whose first is shorter than a later one (``((1, 1000),)``, ``((2, 3, 3, 2),)``):
  Tiled 0.2.20 sizes the Zarr store from the first chunk and the live server answers every
  read with 500 (docs/upstream.md, Bug 5), so there is nothing live to compare with;
- awkward arrays in several partitions: ``AwkwardStructure`` has no chunks and the client
  writes an awkward array in one request only.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import dask
import dask.array
import dask.dataframe
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import ragged
import xarray

import tiled_archive
from tiled_archive.testing import free_port, serving, stock_tiled_client
from tiled_archive.writer import stock_serve_command

from ..conftest import cli
from ..nodes import assert_exact, listing
from ..servers import REPOSITORY, TILED

#: Every case through every path and reader takes a minute and a half of one core: run by
#: `make test-slow` (CI runs it after `make test`).
pytestmark = pytest.mark.slow

KEY = secrets.token_hex(16)

#: Each case of the sweep: its node's path on the server.
NODES = [
    "arrays/uneven_1d",
    "arrays/uneven_2d",
    "arrays/auto_chunked",
    "arrays/dims",
    "dtypes/unicode",
    "dtypes/bytes",
    "dtypes/record_void",
    "dtypes/record_struct",
    "dtypes/datetime64",
    "dtypes/complex",
    "tables/appendable",
    "tables/partitioned",
    "sparse",
    "awkward",
    "ragged",
    "xarray",
    "nested",
]

#: Where the server keeps its catalog and storage (set by the `server` fixture).
STORAGE: dict[str, Path] = {}

#: The ways an archive is made: the per-asset download to a ZIP and to a directory, and the
#: archive route's stream to a ZIP.
PATHS = ["assets-zip", "assets-dir", "streamed-zip"]

#: The ways an archive is read: in-process (`open`), its directory form's catalog
#: (`from_catalog`), stock `tiled serve catalog` on its directory form.
READERS = ["open", "from_catalog", "stock"]

#: Auto-chunked: Tiled's client cuts an array into chunks of at most 100 MB to upload it
#: (``Container._SUGGESTED_MAX_UPLOAD_SIZE``), so only an array over 100 MB is chunked by it:
#: 5000 x 2600 float64 (104 MB) is cut into rows of 4807 and 193. Arange compresses well, so
#: the files stay small (about 12 MB).
AUTO_SHAPE = (5000, 2600)


def write_sweep(client) -> None:
    """Every case, through Tiled's own client (its public writing methods; ``new`` with
    ``write_block`` where that is how the client writes several blocks)."""
    from tiled.client.xarray import write_xarray_dataset
    from tiled.structures.array import ArrayStructure, BuiltinDtype, StructDtype
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import DataSource
    from tiled.structures.sparse import COOStructure

    arrays = client.create_container("arrays", metadata={"what": "chunking"})
    # Chunks that do not divide the shape: dask's usual short last chunk.
    arrays.write_array(dask.array.arange(10, chunks=3), key="uneven_1d")
    values_2d = dask.array.arange(35, dtype="int32").reshape(7, 5)
    arrays.write_array(values_2d.rechunk(((4, 3), (2, 2, 1))), key="uneven_2d")
    auto = np.arange(np.prod(AUTO_SHAPE), dtype="float64").reshape(AUTO_SHAPE)
    written = arrays.write_array(auto, key="auto_chunked")
    assert written.structure().chunks == ((4807, 193), (2600,))  # Tiled chose them
    arrays.write_array(np.arange(6.0).reshape(2, 3), key="dims", dims=["y", "x"])

    dtypes = client.create_container("dtypes")
    dtypes.write_array(np.array(["a", "bcé", ""]), key="unicode")
    dtypes.write_array(np.array([b"a", b"bc", b""]), key="bytes")
    record = np.array(
        [(1, 2.5, b"x"), (3, 4.5, b"yz")], dtype=[("a", "<i4"), ("b", "<f8"), ("c", "S2")]
    )
    # write_array keeps a record dtype as raw void (V14): the server serves it so.
    dtypes.write_array(record, key="record_void")
    # With the fields: the structure's StructDtype, given to `new`.
    structure = ArrayStructure(
        data_type=StructDtype.from_numpy_dtype(record.dtype), chunks=((2,),), shape=(2,)
    )
    source = DataSource(structure=structure, structure_family=StructureFamily.array)
    dtypes.new(StructureFamily.array, [source], key="record_struct").write(record)
    dates = np.array(["2020-01-01T00:00:00.123", "NaT", "1969-12-31"], dtype="datetime64[ms]")
    dtypes.write_array(dates, key="datetime64")
    dtypes.write_array(np.array([1 + 2j, -3.5 - 4j, 0j]), key="complex")

    tables = client.create_container("tables")
    schema = pa.schema([("n", pa.int64()), ("x", pa.float64()), ("label", pa.string())])
    appendable = tables.create_appendable_table(schema, npartitions=3, key="appendable")
    for partition in range(3):
        for rows in (2, 1):  # each partition appended to twice
            base = 10 * partition + rows
            appendable.append_partition(
                partition,
                pa.table(
                    {
                        "n": list(range(base, base + rows)),
                        "x": [0.5 * i for i in range(rows)],
                        "label": [f"p{partition}r{i}" for i in range(rows)],
                    },
                    schema=schema,
                ),
            )
    frame = pd.DataFrame({"a": np.arange(10), "b": np.arange(10) * 1.5, "c": list("abcdefghij")})
    tables.write_table(dask.dataframe.from_pandas(frame, npartitions=3), key="partitioned")

    # Sparse, in two blocks along the first axis (coordinates within each block).
    sparse_structure = COOStructure(
        shape=(10, 4),
        chunks=((5, 5), (4,)),
        data_type=BuiltinDtype.from_numpy_dtype(np.dtype("float64")),
        coord_data_type=BuiltinDtype.from_numpy_dtype(np.dtype("int64")),
    )
    sparse_source = DataSource(structure=sparse_structure, structure_family=StructureFamily.sparse)
    sparse = client.new(StructureFamily.sparse, [sparse_source], key="sparse")
    sparse.write_block(coords=np.array([[2, 4], [0, 3]]), data=np.array([3.1, 2.8]), block=(0, 0))
    sparse.write_block(coords=np.array([[0, 1], [1, 2]]), data=np.array([6.7, 1.2]), block=(1, 0))

    client.write_awkward(
        ak.Array([[{"x": 1, "y": [1.5]}], [], [{"x": 2, "y": []}, {"x": 3, "y": [2.5, 3.5]}]]),
        key="awkward",
    )

    # Ragged: Tiled keeps its rows in the server's DuckDB storage, beside appendable tables.
    client.write_ragged(ragged.array([[1.5, 2.5], [], [3.5]]), key="ragged")

    # An xarray Dataset: a container (spec xarray_dataset) of arrays with dims and specs.
    dataset = xarray.Dataset(
        {"signal": (("time", "channel"), np.arange(8.0).reshape(4, 2), {"units": "V"})},
        coords={"time": ("time", np.arange(4) * 0.5)},
        attrs={"sample": "Si"},
    )
    write_xarray_dataset(client, dataset, key="xarray")

    nested = client.create_container(
        "nested", metadata={"level": 1, "deep": {"list": [1, "two"]}}, specs=["sweep-outer"]
    )
    inner = nested.create_container(
        "inner", metadata={"level": 2, "text": "ünïcode ✓"}, specs=["sweep-inner", "another"]
    )
    inner.write_array(
        np.arange(4, dtype="uint8"), key="leaf", metadata={"units": "m"}, specs=["xdi"]
    )
    inner.write_table(pd.DataFrame({"t": [0.5, 1.5]}), key="table", metadata={"rows": 2})
    composite = nested.create_container("composite", metadata={"m": 1}, specs=["composite"])
    composite.write_array(np.arange(3, dtype="int16"), key="arr")
    composite.write_table(pd.DataFrame({"x": [1.5, 2.5, 3.5]}), key="tbl")


@pytest.fixture(scope="module", autouse=True)
def one_request_at_a_time() -> Iterator[None]:
    """Dask computes in the calling thread: Tiled's client reads a table's partitions (and
    writes an array's blocks) one request after another. Tiled 0.2.20 serving an appendable
    table from its DuckDB storage breaks under the partition reads its own client sends at
    once (dask's threads): 500s ("Attempting to execute an unsuccessful or closed pending
    query result", from ADBC), a 200 with rows missing, then a server that accepts no more
    connections. One at a time it serves the table every time."""
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_request_at_a_time) -> Iterator[Any]:
    """The writable server (see the module's docstring), filled by :func:`write_sweep`: the
    root node's client."""
    from tiled.client import from_uri

    root = tmp_path_factory.mktemp("sweep-server")
    (root / "data").mkdir()
    config = root / "config.yml"
    config.write_text(
        f"""\
authentication:
  single_user_api_key: {KEY}
trees:
  - path: /
    tree: catalog
    args:
      uri: sqlite:///{root / "catalog.db"}
      init_if_not_exists: true
      writable_storage:
        - {root / "data"}
        - duckdb:///{root / "tables.duckdb"}
routers:
  - tiled_archive.serve.router:router
"""
    )
    port = free_port()
    command = [TILED, "serve", "config", config, "--port", port]
    env = {"PYTHONPATH": str(REPOSITORY)}
    with serving(command, port, log=root / "server.log", env=env) as running:
        client = from_uri(running.url, api_key=KEY)
        write_sweep(client)
        STORAGE["root"] = root
        yield client


def node_at(root, path: str):
    """The node at ``path`` (``a/b``) below ``root``, through the listing Tiled stores."""
    node = root
    for key in path.split("/"):
        node = listing(node)[key]
    return node


class Remembered:
    """A live leaf node whose data is read from the server once, then kept: every archive's
    copy is compared with the same answer, and the server is not asked nine times for the
    104 MB array. Everything else is the node's own."""

    def __init__(self, node: Any):
        self._node, self._data = node, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def __getitem__(self, index: Any) -> Any:
        return self._node[index]

    def read(self) -> Any:
        if self._data is None:
            self._data = self._node.read()
        return self._data


@pytest.fixture(scope="module")
def live(server) -> dict[str, Any]:
    """Each case's live node (a leaf :class:`Remembered`; a container as it is, its children
    read live at each comparison)."""
    nodes = {path: node_at(server, path) for path in NODES}
    return {
        path: node if node.structure_family == "container" else Remembered(node)
        for path, node in nodes.items()
    }


@dataclasses.dataclass(frozen=True)
class Archive:
    """One path's archive: ``dest`` as downloaded, and ``directory``, its directory form
    (``dest`` itself, or ``tiled-archive extract`` of the ZIP)."""

    dest: Path
    directory: Path


#: Top-level nodes whose subtree the archive route carries: all but those in the server's SQL
#: storage (one DuckDB database holding every node's rows: sending it would send other nodes'
#: data), `tables` (an appendable table, which the format has no form for) and `ragged`; a
#: download of those asks the route, is refused, and takes the per-asset path.
ROUTED = ["arrays", "dtypes", "sparse", "awkward", "xarray", "nested"]


def download(server, path: str, dest: Path, cache: Path) -> Path:
    """``server``'s whole tree downloaded by ``path``. Through the route, the whole tree is
    refused (400: the SQL table) and the download takes the per-asset path, asking the route
    first: the route's own archives are checked node by node in
    :func:`test_the_route_archives_each_case_itself`."""
    if path.startswith("assets-"):
        return tiled_archive.download(server, dest, cache_dir=cache, streamed=False).path
    client = server.context.http_client
    seen: list[str] = []
    client.event_hooks["request"].append(lambda request: seen.append(request.url.path))
    try:
        done = tiled_archive.download(server, dest, cache_dir=cache)
    finally:
        client.event_hooks["request"].pop()
    assert [p for p in seen if "/archive/" in p] == ["/api/v1/archive/"], seen
    assert not done.streamed and [p for p in seen if "/asset/" in p]
    return dest


class Archives:
    """Each path's archive of the whole tree, made once, when a test first asks for it; a
    path whose download (or extract) failed raises that same error for every test of it."""

    def __init__(self, server: Any, out: Path):
        self.server, self.out = server, out
        self.made: dict[str, Archive | tuple[BaseException, Any]] = {}

    def __getitem__(self, path: str) -> Archive:
        if path not in self.made:
            try:
                self.made[path] = self._make(path)
            except Exception as err:
                self.made[path] = (err, err.__traceback__)
        made = self.made[path]
        if isinstance(made, tuple):
            raise made[0].with_traceback(made[1])
        return made

    def _make(self, path: str) -> Archive:
        out = self.out / path
        out.mkdir()
        suffix = ".zip" if path.endswith("-zip") else ""
        dest = download(self.server, path, out / f"sweep{suffix}", out / "cache")
        if not suffix:
            return Archive(dest, dest)
        extracted = cli("extract", dest, out / "extracted")
        assert extracted.returncode == 0, extracted.stderr
        return Archive(dest, out / "extracted")


@pytest.fixture(scope="module")
def archives(server, tmp_path_factory) -> Archives:
    return Archives(server, tmp_path_factory.mktemp("sweep-archives"))


@pytest.fixture(scope="module", params=[f"{p}-{r}" for p in PATHS for r in READERS])
def reader(request, archives) -> Iterator[Any]:
    """The root node's client of a reader on a path's archive (the parameter: path-reader).
    One reader is open at a time, as each would be in its own process: Tiled keeps one
    configuration per storage location per process, and stock Tiled (in-process here) opens
    a ragged array's DuckDB file as writable storage where `open` and `from_catalog` open it
    read-only."""
    path, kind = request.param.rsplit("-", 1)
    archive = archives[path]
    if kind == "open":
        opened = tiled_archive.open(archive.dest)
    elif kind == "from_catalog":
        catalog, data = archive.directory / "catalog.db", archive.directory / "data"
        opened = tiled_archive.from_catalog(catalog, readable_storage=[data])
    else:
        opened = stock_tiled_client(*stock_serve_command(archive.directory)[2:])
    with opened as root:
        yield root


@pytest.mark.parametrize("path", PATHS)
def test_the_archive_validates(archives, path):
    """The whole tree downloads by this path, and `tiled-archive validate` passes the
    archive as downloaded (exit 0), and its directory form."""
    archive = archives[path]
    for where in {archive.dest, archive.directory}:
        done = cli("validate", where)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_archive_lists_the_live_tree(reader, server):
    """Each reader lists the server's top-level nodes, in its order."""
    assert list(listing(reader)) == list(listing(server))


@pytest.mark.parametrize("node", NODES)
def test_each_node_reads_as_live(reader, live, node):
    """The node, read through this reader of this path's archive, equals the live server's
    node exactly (family, metadata, specs, structure, dtype and values; a container's
    children in order, recursively)."""
    assert_exact(live[node], node_at(reader, node), f"/{node}/")


@pytest.mark.parametrize("path", PATHS)
def test_pack_extract_and_load_succeed(archives, path, tmp_path, server):
    """`pack` of the directory form, `extract` of the packed ZIP, `load` of the archive into
    a new SQLite catalog each succeed (exit 0); the packed ZIP validates and the loaded
    catalog lists the live tree."""
    archive = archives[path]
    packed = tmp_path / "packed.zip"
    done = cli("pack", archive.directory, packed)
    assert done.returncode == 0, done.stderr
    done = cli("validate", packed)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("extract", packed, tmp_path / "extracted")
    assert done.returncode == 0, done.stderr
    catalog, data = tmp_path / "loaded.db", tmp_path / "loaded-data"
    done = cli("load", archive.dest, catalog, "--data", data, "--at", "sweep")
    assert done.returncode == 0, done.stderr
    with tiled_archive.from_catalog(catalog, readable_storage=[data]) as loaded:
        assert list(listing(loaded["sweep"])) == list(listing(server))


@pytest.mark.parametrize("key", ROUTED)
def test_the_route_archives_each_case_itself(server, live, key, tmp_path):
    """Each top-level node the route can carry comes through it alone (no raw-asset
    request), validates, and reads as the live server's, node by node; a second download
    fetches nothing."""
    node = listing(server)[key]
    client = server.context.http_client
    seen: list[str] = []
    client.event_hooks["request"].append(lambda request: seen.append(request.url.path))
    try:
        done = tiled_archive.download(node, tmp_path / "routed.zip", cache_dir=tmp_path / "c")
    finally:
        client.event_hooks["request"].pop()
    assert done.streamed and not [p for p in seen if "/asset/" in p], seen
    validated = cli("validate", done.path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    with tiled_archive.open(done) as opened:
        for path in [n for n in NODES if n == key or n.startswith(f"{key}/")]:
            assert_exact(live[path], node_at(opened, path), f"/{path}/")
    again = tiled_archive.download(node, tmp_path / "again", cache_dir=tmp_path / "c")
    assert again.streamed and again.fetched_bytes == 0
    assert again.reused_bytes == done.fetched_bytes


def test_create_from_the_catalog_refuses_a_table_in_sql_storage(server, tmp_path):
    """`create --catalog` of the deployment's catalog: the appendable table lives in rows of
    the shared SQL storage, which has no form in an archive: TA-E508 before anything is
    written, with a hint naming the download (which reads it as Parquet)."""
    catalog = STORAGE["root"] / "catalog.db"
    done = cli("create", tmp_path / "x.zip", "--catalog", catalog, "--node", "tables")
    assert done.returncode == 1 and "TA-E508" in done.stderr, done.stderr
    assert "tiled-archive download" in " ".join(done.stderr.split())
    assert not (tmp_path / "x.zip").exists()
