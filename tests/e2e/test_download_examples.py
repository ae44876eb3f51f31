"""Downloads of what others make: Tiled's own example trees and a writable catalog filled
through Tiled's client, each served by the stock `tiled serve` CLI on loopback, compared node
by node (keys in the server's order, metadata, specs, structure, values and dtypes) through
`tiled_archive.open` of the ZIP and of the directory."""

from __future__ import annotations

import contextlib
import json
import secrets
import warnings
from pathlib import Path

import awkward as ak
import dask.array
import numpy as np
import pandas as pd
import pytest
import ragged
import tiled

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.testing import free_port, serving, stock_tiled_client
from tiled_archive.validator import validate
from tiled_archive.writer import stock_serve_command

from ..nodes import assert_exact, below, listing
from ..servers import TILED, pyobject_fixture
from ..trees import ARRAYS


def register_bytes(parent, key: str, files: list[Path]):
    """A ``bytes`` node over ``files`` (external assets), as Tiled's own tests register one."""
    from tiled.structures.bytes import BytesStructure
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import Asset, DataSource, Management

    assets = [
        Asset(
            data_uri=f.as_uri(),
            is_directory=False,
            size=f.stat().st_size,
            parameter="data_uris",
            num=i,
        )
        for i, f in enumerate(files)
    ]
    source = DataSource(
        structure_family=StructureFamily.bytes,
        structure=BytesStructure(),
        mimetype="application/octet-stream",
        management=Management.external,
        assets=assets,
    )
    return parent.new(structure_family=StructureFamily.bytes, data_sources=[source], key=key)


def assert_valid(dest: Path) -> None:
    report = validate(dest)
    assert report.errors == [], report.errors


def assert_downloads_exactly(source, dest: Path, *within: str) -> Path:
    """Download ``source`` to ``dest`` (cache beside it): the archive validates, and holds
    ``source`` exactly, below its parents ``within`` (their keys), through ``open``; a
    directory also through stock `tiled serve catalog` on it as written. Returns ``dest``."""
    tiled_archive.download(source, dest, cache_dir=dest.parent / "cache")
    assert_valid(dest)
    with tiled_archive.open(dest) as archive:
        assert_exact(source, below(archive, within), "/" + "".join(f"{k}/" for k in within))
    if dest.is_dir():
        assert_stock_serves_exactly(source, dest, *within)
        assert_valid(dest)  # stock Tiled read it (a ragged array's database too) unchanged
    return dest


def stock_client(dest: Path) -> contextlib.AbstractContextManager:
    """What stock `tiled serve catalog DEST/catalog.db -r DEST/data ... --public` serves (the
    command the CLI prints for a directory download; Tiled's own CLI code builds the app),
    in-process: a client of it. (tests/e2e/test_stock_tiled_cli.py runs the real command.)"""
    return stock_tiled_client(*stock_serve_command(dest)[2:])


def assert_stock_serves_exactly(source, dest: Path, *within: str) -> None:
    """Stock `tiled serve catalog` on ``dest`` serves ``source`` exactly. (Tiled does not serve
    a root's metadata from a catalog, so a root with metadata is compared below it.)"""
    with stock_client(dest) as client:
        copy = below(client, within)
        if not within and dict(source.metadata):
            assert list(listing(copy)) == list(listing(source))
            for key in listing(source):
                assert_exact(listing(source)[key], listing(copy)[key], f"/{key}/")
        else:
            assert_exact(source, copy, "/" + "".join(f"{k}/" for k in within))


# -- tiled serve pyobject tiled.examples.generated_minimal:tree -------------------------------


minimal_example = pyobject_fixture("tiled.examples.generated_minimal:tree")


@pytest.mark.parametrize("suffix", [".zip", ""])
def test_tileds_minimal_example_tree_downloads_exactly(minimal_example, tmp_path, suffix):
    from tiled.client import from_uri

    client = from_uri(minimal_example)
    dest = assert_downloads_exactly(client, tmp_path / f"minimal{suffix}")
    # Where it came from, in the manifest and in bag-info.txt.
    with open_archive(dest) as opened:
        provenance = opened.manifest.extra["provenance"]
        bag_info = opened.source.open("bag-info.txt").read().decode()
    assert provenance["server"] == f"{minimal_example}/api/v1/"
    assert provenance["node"] == "/" and provenance["queries"] == []
    assert provenance["tiled_version"] == tiled.__version__
    assert f"External-Identifier: {minimal_example}/api/v1//" in bag_info


def test_a_lazy_download_of_a_tree_with_no_files_reads_it_all_through_the_data_api(
    minimal_example, tmp_path
):
    """A pyobject tree hands out no files: a lazy download fetches it all now (through the
    data API, as an eager one), so the archive is complete, and reads offline exactly."""
    from tiled.client import from_uri

    client = from_uri(minimal_example)
    dest = tiled_archive.download(client, tmp_path / "lazy", lazy=True)
    with open_archive(dest) as opened:
        assert opened.absent() == [] and opened.manifest.fetch.files == {}
    assert validate(dest, complete=True).valid
    with tiled_archive.open(dest, offline=True) as archive:
        assert_exact(client, archive)


def test_provenance_names_the_search_and_no_credentials(written, tmp_path):
    from tiled.queries import Key

    search = written.search(Key("units") == "m")
    dest = tiled_archive.download(search, tmp_path / "found.zip", cache_dir=tmp_path / "cache")
    with open_archive(dest) as opened:
        provenance = opened.manifest.extra["provenance"]
    assert (
        provenance["queries"] == [{"type": "Eq", "key": "units", "value": "m"}]
        or provenance["queries"][0]["key"] == "units"
    ), provenance
    assert "api_key" not in json.dumps(provenance) and "@" not in provenance["server"]


# -- tiled serve pyobject tiled.examples.generated:tree ----------------------------------------


generated_example = pyobject_fixture("tiled.examples.generated:tree")


# Its other node, `dynamic`, changes at every read by design; of `nested`, the families other
# than arrays (its 800 MB `big_image` is covered by the one-chunk arrays below, at 1 MB). The
# directory form under make test-slow. The server alone takes 11-14 s to start (its tree is
# generated at import): the whole test under make test-slow, Tiled's minimal example stays.
@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zip", pytest.param("", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "path",
    [
        "scalars",
        "tables",
        "structured_data",
        "high_entropy",
        "nested/ragged_array",
        "nested/sparse_image",
        "nested/awkward_array",
    ],
)
def test_tileds_generated_example_nodes_download_exactly(generated_example, tmp_path, path, suffix):
    from tiled.client import from_uri

    keys = path.split("/")
    node = from_uri(generated_example)
    for key in keys:
        node = node[key]
    assert_downloads_exactly(node, tmp_path / f"{keys[-1]}{suffix}", *keys)


# -- Arrays stored as one chunk bigger than the server's response limit ----------------------


#: `tests.trees:one_chunk` served with a 1 MB response limit (Tiled's setting, from the
#: environment): every array is one block the server refuses to send whole.
one_chunk_arrays = pyobject_fixture(
    "tests.trees:one_chunk", TILED_RESPONSE_BYTESIZE_LIMIT="1000000"
)


@pytest.mark.parametrize("suffix", [".zip", ""])
def test_one_chunk_arrays_over_the_response_limit_come_in_slabs(one_chunk_arrays, tmp_path, suffix):
    from tiled.client import from_uri

    client = from_uri(one_chunk_arrays)
    with pytest.raises(Exception, match="Response would exceed 1000000"):
        client["tall"].read()  # the server refuses the whole array in one response
    dest = tmp_path / f"slabs{suffix}"
    tiled_archive.download(client, dest, cache_dir=tmp_path / "cache")
    assert_valid(dest)
    # (The archives' servers have the same limit here: the environment is shared.)
    with contextlib.ExitStack() as stack:
        copies = [stack.enter_context(tiled_archive.open(dest))]
        if not suffix:
            copies.append(stack.enter_context(stock_client(dest)))
        for copy in copies:
            for key in ("tall", "wide", "scalar"):
                assert copy[key].structure() == client[key].structure(), key
                np.testing.assert_array_equal(_in_pieces(copy[key]), _in_pieces(client[key]))


def _in_pieces(array_client):
    """A whole array read from a server that will not send it whole: in pieces."""
    if not array_client.shape:
        return array_client[...]
    if array_client.shape[0] == 1:
        half = array_client.shape[1] // 2
        return np.concatenate([array_client[0:1, :half], array_client[0:1, half:]], axis=1)
    return np.concatenate([array_client[i : i + 100] for i in range(0, array_client.shape[0], 100)])


# -- Families with no files on the server: Tiled's own storage layouts, written here ---------


in_memory = pyobject_fixture("tests.trees:in_memory")


# The directory form under make test-slow (the ZIP form covers the same download).
@pytest.mark.parametrize("suffix", [".zip", pytest.param("", marks=pytest.mark.slow)])
def test_in_memory_nodes_are_written_as_tiled_stores_them(in_memory, tmp_path, suffix):
    from tiled.client import from_uri

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dest = assert_downloads_exactly(from_uri(in_memory), tmp_path / f"memory{suffix}")
    # Strings and structured arrays written as Tiled writes them: zarr's warning to whoever
    # chose that form does not reach the user, who did not.
    assert not [w for w in caught if "Zarr V3 specification" in str(w.message)]
    with open_archive(dest) as opened:
        written = {f["node"]: f["mimetype"] for f in opened.manifest.extra["fallbacks"]}
    assert written == {
        **{f"arrays/{key}": "application/x-zarr" for key in ARRAYS},
        "sparse": "application/x-parquet;structure=sparse",
        "awkward": "application/x-awkward-buffers",
        "ragged": "application/x-ragged+sql",
        # datetime64[s] cannot be kept by Parquet (it has ms at best): Arrow IPC keeps it.
        "table": "application/vnd.apache.arrow.file",
    }


# -- tiled serve catalog --temp, filled through the client ------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A writable server (stock CLI, temporary catalog) holding what a user writes through
    Tiled's client: a composite container, an empty container, nodes with specs, and bytes
    nodes (opaque files registered from the server's readable storage)."""
    from tiled.client import from_uri

    port, key = free_port(), secrets.token_hex(16)
    here = tmp_path_factory.mktemp("written")
    blobs = here / "blobs"
    blobs.mkdir()
    (blobs / "notes.txt").write_text("opaque, but a user's\n")
    (blobs / "raw.bin").write_bytes(bytes(range(256)) * 64)
    log = here / "server.log"
    command = [TILED, "serve", "catalog", "--temp", "--api-key", key, "--port", port]
    command += ["-r", blobs]
    with serving(command, port, log=log) as server:
        client = from_uri(server.url, api_key=key)
        composite = client.create_container("comp", metadata={"m": 1}, specs=["composite"])
        composite.write_array(np.arange(5, dtype="int16"), key="arr")
        composite.write_dataframe(pd.DataFrame({"x": [1.5, 2.5], "y": ["a", "b"]}), key="tbl")
        client.create_container("empty", metadata={"why": "nothing yet"})
        client.write_array(np.eye(3), key="eye", specs=["xdi"], metadata={"units": "m"})
        # Uneven dask chunks: Tiled pads the Zarr store to whole chunks (10 -> 12; spec 3.3).
        client.write_array(dask.array.arange(10, chunks=3), key="uneven")
        client.write_array(dask.array.ones((7, 5), chunks=((4, 3), (2, 2, 1))), key="uneven_2d")
        client.write_sparse(
            coords=np.array([[0, 2, 4], [1, 3, 0]]),
            data=np.array([1.5, 2.5, 3.5]),
            shape=(5, 4),
            key="sparse",
        )
        client.write_awkward(ak.Array([[1, 2, 3], [], [4, 5]]), key="awkward")
        # A ragged array: Tiled keeps its rows in the server's DuckDB storage.
        client.write_ragged(ragged.array([[1.5, 2.5], [], [3.5]]), key="ragged")
        register_bytes(client, "notes", [blobs / "notes.txt"])
        register_bytes(client, "blobs", [blobs / "notes.txt", blobs / "raw.bin"])
        yield client


# The directory form under make test-slow (the ZIP form covers the same download).
@pytest.mark.parametrize("suffix", [".zip", pytest.param("", marks=pytest.mark.slow)])
def test_client_written_tree_downloads_exactly(written, tmp_path, suffix):
    assert_downloads_exactly(written, tmp_path / f"written{suffix}")


def test_nothing_matched_is_refused_unless_allowed(written, tmp_path):
    from tiled.queries import Key

    from tiled_archive.rules.problems import ArchiveError

    nothing = written.search(Key("no such key") == 1)
    with pytest.raises(ArchiveError) as raised:
        tiled_archive.download(nothing, tmp_path / "none.zip", cache_dir=tmp_path / "cache")
    assert raised.value.code == "TA-E913"
    assert "the search matched no node" in str(raised.value)
    assert not (tmp_path / "none.zip").exists()
    dest = tiled_archive.download(
        nothing, tmp_path / "none.zip", cache_dir=tmp_path / "cache", allow_empty=True
    )
    assert_valid(dest)
    with tiled_archive.open(dest) as archive:
        assert list(archive) == []


def test_an_empty_container_alone_gives_a_valid_archive(written, tmp_path):
    assert_downloads_exactly(written["empty"], tmp_path / "empty.zip", "empty")


# -- An archive served by tiled-archive, downloaded again ------------------------------------


# The directory form under make test-slow (the ZIP form covers the same download).
@pytest.mark.parametrize("suffix", [".zip", pytest.param("", marks=pytest.mark.slow)])
def test_an_archive_downloaded_from_tiled_archive_serve_has_the_same_files(
    written, tmp_path, suffix
):
    """archive -> the app `tiled-archive serve` runs (here in-process: `tiled_archive.open`;
    tests/e2e/test_serve_http.py runs the command) -> download: every data file byte for byte
    (the served archive's own members, through its archive route), and the tree exactly."""
    first = tiled_archive.download(
        written, tmp_path / f"first{suffix}", cache_dir=tmp_path / "cache"
    )
    with tiled_archive.open(first) as served:
        second = assert_downloads_exactly(served, tmp_path / f"second{suffix}")
    with open_archive(first) as a, open_archive(second) as b:
        files = {e.path: e.sha256 for e in a.manifest.files}
        again = {e.path: e.sha256 for e in b.manifest.files}
        fallbacks = {f["node"] for f in b.manifest.extra.get("fallbacks", [])}
    # Nothing came through the data API: every node's files were handed out raw, a ragged
    # array's DuckDB file too (an archive's is the node's own, not a deployment's storage).
    assert files and again == files and not fallbacks
