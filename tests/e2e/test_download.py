"""Downloading from live Tiled servers, in-process and `tiled serve catalog` in a subprocess:
the archive must equal the server node by node, value by value, hold the server's bytes, and
survive interruptions, stopped servers and servers that will not hand out raw assets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiled_archive
from tiled_archive.downloader import BlobCache
from tiled_archive.files.blobs import Validators
from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import free_port, serving, tiled_serve_catalog
from tiled_archive.validator import validate

from ..conftest import cli, sha256_of

BYTES = "/api/v1/asset/bytes/"


@pytest.fixture(scope="module")
def server_root(sample_tree, tmp_path_factory) -> Path:
    """A Tiled catalog with registered files (HDF5, TIFF sequence, Zarr v2/v3, CSV, Parquet,
    NPY), arrays and tables written through the client, a SQL table, nested containers and
    unicode metadata."""
    import pyarrow as pa
    from tiled.client import Context, from_context
    from tiled.client.register import register
    from tiled.server.app import build_app

    root = tmp_path_factory.mktemp("server")
    (root / "writable").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Context.from_app(build_app(_catalog(root, sample_tree, init=True))) as context:
            client = from_context(context)
            asyncio.run(register(client, sample_tree, prefix="/reg"))
            run = client.create_container(
                "written", metadata={"sample": "Fe₂O₃ — ünïcode", "color": "red"}, specs=["run"]
            )
            inner = run.create_container("inner", metadata={"color": "red", "n": [1, 2]})
            inner.write_array(np.arange(24.0).reshape(4, 6), key="arr", metadata={"units": "eV"})
            run.write_dataframe(pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}), key="table")
            sql = run.create_appendable_table(
                pa.schema([("a", pa.int64()), ("b", pa.float64())]), key="sql"
            )
            sql.append_partition(0, pa.table({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]}))
            client.create_container("other", metadata={"color": "blue"}).write_array(
                np.ones(5), key="ones"
            )
    return root


def _catalog(root: Path, sample_tree: Path, *, init: bool = False):
    from tiled.catalog import from_uri

    return from_uri(
        f"sqlite:///{root}/catalog.db",
        init_if_not_exists=init,
        writable_storage=[str(root / "writable"), f"sqlite:///{root}/tables.sqlite"],
        readable_storage=[str(sample_tree.parent)],
    )


class _Counting:
    """ASGI middleware noting every request's path and Range header."""

    def __init__(self, app, log: list[tuple[str, str | None]]):
        self.app, self.log = app, log

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.log.append((scope["path"], headers.get(b"range", b"").decode() or None))
        await self.app(scope, receive, send)


@contextlib.contextmanager
def in_process(server_root: Path, sample_tree: Path, **settings) -> Iterator[tuple]:
    """A Tiled client of Tiled's own app over the catalog, and the log of its requests."""
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    # Tiled's build_app writes server settings into one process-wide object, so every app
    # says what it wants: an archive opened in-process earlier turned raw assets off.
    settings.setdefault("expose_raw_assets", True)
    app = build_app(_catalog(server_root, sample_tree), server_settings=settings)
    log: list[tuple[str, str | None]] = []
    app.add_middleware(_Counting, log=log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with Context.from_app(app) as context:
            yield from_context(context), log


#: The Range of a cached file's revalidation: its first byte, with its validators.
REVALIDATION = "bytes=0-0"


def asset_requests(log) -> list[str]:
    """The raw-asset requests that fetch bytes (revalidations of cached files not counted)."""
    return [path for path, rng in log if path.startswith(BYTES) and rng != REVALIDATION]


def revalidations(log) -> list[str]:
    return [path for path, rng in log if path.startswith(BYTES) and rng == REVALIDATION]


def assert_same_tree(expected, actual, where: str = "") -> None:
    """Keys, metadata, specs, structure families and values, node by node."""
    assert sorted(actual) == sorted(expected), where
    for key in expected:
        node, copy, path = expected[key], actual[key], f"{where}/{key}"
        assert copy.structure_family == node.structure_family, path
        assert dict(copy.metadata) == dict(node.metadata), path
        assert list(copy.specs) == list(node.specs), path
        if node.structure_family == "container":
            assert_same_tree(node, copy, path)
        elif node.structure_family == "array":
            np.testing.assert_array_equal(copy.read(), node.read(), err_msg=path)
        else:
            pd.testing.assert_frame_equal(copy.read(), node.read(), obj=path)


def assert_valid(dest: Path) -> None:
    report = validate(dest)
    assert report.errors == [], report.errors
    if dest.is_dir():
        bagit = Path(sys.executable).parent / "bagit.py"
        checked = subprocess.run([bagit, "--validate", dest], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def manifest(dest: Path) -> dict:
    with open_archive(dest) as archive:
        return archive.manifest.to_json()


# -- A whole server, in-process ----------------------------------------------------------------


# The directory form under make test-slow (the ZIP form covers the same download).
@pytest.mark.parametrize("suffix", [".zip", pytest.param("", marks=pytest.mark.slow)])
def test_archive_equals_the_server_and_holds_its_bytes(server_root, sample_tree, tmp_path, suffix):
    dest = tmp_path / f"all{suffix}"
    with in_process(server_root, sample_tree) as (client, _):
        tiled_archive.download(client, dest, cache_dir=tmp_path / "cache")
        with tiled_archive.open(dest) as archive:
            assert_same_tree(client, archive)
    assert_valid(dest)
    document = manifest(dest)
    files = {entry["path"]: entry["sha256"] for entry in document["files"]}
    # The registered files, byte for byte, below their deepest common folder on the server.
    for source in sorted(sample_tree.rglob("*")):
        if source.is_file():
            relative = source.relative_to(sample_tree.parent).as_posix()
            assert files[f"data/{sample_tree.parent.name}/{relative}"] == sha256_of(source)
    # Only the SQL table (not a file on the server) came through the data API.
    assert document["fallbacks"] == [
        {
            "node": "written/sql",
            "reason": "its data is a sqlite: asset, not a file",
            "mimetype": "application/x-parquet",
        }
    ]


@pytest.mark.slow  # ~9 s; test_cli_download_from_stock_tiled_server downloads a search too
def test_search_results_and_single_nodes_keep_their_parents(server_root, sample_tree, tmp_path):
    from tiled.queries import FullText, Key

    with in_process(server_root, sample_tree) as (client, _):
        red = client["written"].search(Key("color") == "red")
        tiled_archive.download(red, tmp_path / "red.zip", cache_dir=tmp_path / "cache")
        with tiled_archive.open(tmp_path / "red.zip") as archive:
            assert list(archive) == ["written"]
            assert dict(archive["written"].metadata) == dict(client["written"].metadata)
            assert list(archive["written"].specs) == list(client["written"].specs)
            assert_same_tree(red, archive["written"])

        array = client["written"]["inner"]["arr"]
        tiled_archive.download(array, tmp_path / "arr", cache_dir=tmp_path / "cache")
        with tiled_archive.open(tmp_path / "arr") as archive:
            assert list(archive) == ["written"] and list(archive["written"]) == ["inner"]
            assert dict(archive["written/inner"].metadata) == {"color": "red", "n": [1, 2]}
            assert_same_tree(client["written"]["inner"], archive["written"]["inner"])

        found = client.search(FullText("ünïcode"))
        tiled_archive.download(found, tmp_path / "found.zip", cache_dir=tmp_path / "cache")
        with tiled_archive.open(tmp_path / "found.zip") as archive:
            assert list(archive) == ["written"]
            assert_same_tree(found, archive)

        # A node inside an HDF5 file has no data source of its own: the data API serves it.
        inside = client["reg"]["primary"]["group"]["energy"]
        tiled_archive.download(inside, tmp_path / "energy.zip", cache_dir=tmp_path / "cache")
        with tiled_archive.open(tmp_path / "energy.zip") as archive:
            assert list(archive["reg/primary/group"]) == ["energy"]
            np.testing.assert_array_equal(archive["reg/primary/group/energy"][:], inside[:])
        assert [f["node"] for f in manifest(tmp_path / "energy.zip")["fallbacks"]] == [
            "reg/primary/group/energy"
        ]


# -- Interruptions, the cache ---------------------------------------------------------------------


class Stop(Exception):
    pass


@pytest.mark.slow  # a fault or an attack: make test-slow
def test_interrupted_download_resumes_and_the_cache_serves_repeats(
    server_root, sample_tree, tmp_path
):
    cache = tmp_path / "cache"
    seen: list[str] = []

    def stop_after_three(path: str, size: int) -> None:
        seen.append(path)
        if len(seen) == 3:
            raise Stop()

    with in_process(server_root, sample_tree) as (client, log):
        reg = client["reg"]
        with pytest.raises(Stop):
            tiled_archive.download(
                reg, tmp_path / "a.zip", cache_dir=cache, workers=1, on_file=stop_after_three
            )
        assert not (tmp_path / "a.zip").exists()
        assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # nothing half-written
        assert len(asset_requests(log)) == 3

        log.clear()
        tiled_archive.download(reg, tmp_path / "a.zip", cache_dir=cache)
        total = len(manifest(tmp_path / "a.zip")["files"])
        assert len(asset_requests(log)) == total - 3

        # An existing destination is refused before anything is asked of the server.
        log.clear()
        with pytest.raises(ArchiveError) as err:
            tiled_archive.download(reg, tmp_path / "a.zip", cache_dir=cache)
        assert err.value.code == "TA-E903" and log == []

        # Another archive of the same data (another form, another node) fetches nothing: each
        # cached file costs one revalidation (a one-byte range with its validators).
        log.clear()
        tiled_archive.download(reg["primary"], tmp_path / "b", cache_dir=cache)
        tiled_archive.download(reg, tmp_path / "c", cache_dir=cache)
        assert asset_requests(log) == []
        files = len(manifest(tmp_path / "b")["files"]) + len(manifest(tmp_path / "c")["files"])
        assert len(revalidations(log)) == files

        # A damaged blob is fetched again; a half-fetched file is finished with a range request.
        blobs = BlobCache(cache)
        digests = {e["path"]: e["sha256"] for e in manifest(tmp_path / "a.zip")["files"]}
        blobs.blob_path(digests["data/baseline.csv"]).write_bytes(b"not the csv")
        h5 = blobs.blob_path(digests["data/primary.h5"])
        content = h5.read_bytes()
        h5.unlink()
        with sqlite3.connect(cache / "index.sqlite") as index:
            key, etag, modified = index.execute(
                "SELECT key, etag, last_modified FROM remote_file WHERE key LIKE '%primary.h5%'"
            ).fetchone()
        with blobs.partial(key) as partial:
            partial.write_bytes(content[:1000])
            blobs.start_partial(key, Validators(etag, modified))
        blobs.close()
        log.clear()
        tiled_archive.download(reg, tmp_path / "d.zip", cache_dir=cache)
        requests = [(path.rsplit("/", 1)[-1], rng) for path, rng in log if path.startswith(BYTES)]
        fetched = [request for request in requests if request[1] != REVALIDATION]
        assert sorted(fetched) == [("baseline", None), ("primary", "bytes=1000-")]
        with tiled_archive.open(tmp_path / "d.zip") as archive:
            assert_same_tree(reg, archive["reg"])


def test_cache_evicts_least_recently_used_blobs(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=250)
    digests = []
    for number in range(3):
        content = bytes([number]) * 100
        digests.append(hashlib.sha256(content).hexdigest())
        with cache.partial(f"key{number}") as partial:
            partial.write_bytes(content)
            crc = zlib.crc32(content)
            cache.add(f"key{number}", partial, 100, digests[-1], crc, 0, Validators('"e"', None))
        time.sleep(0.01)
    assert cache.lookup("key0") is not None  # used again: key1 is now the least recent
    cache.evict()
    assert [cache.lookup(f"key{n}") is not None for n in range(3)] == [True, False, True]
    cache.max_bytes = 100
    cache.evict(keep={digests[0]})
    assert sorted(p.name for p in tmp_path.glob("??/*")) == [digests[0]]
    cache.close()


# -- Servers that will not hand out raw assets -------------------------------------------------


@pytest.mark.slow  # ~8 s; the data API fallback is downloaded in test_download_examples too
def test_raw_assets_disabled_still_gives_a_complete_archive(server_root, sample_tree, tmp_path):
    with in_process(server_root, sample_tree, expose_raw_assets=False) as (client, log):
        tiled_archive.download(client, tmp_path / "api.zip", cache_dir=tmp_path / "cache")
        with tiled_archive.open(tmp_path / "api.zip") as archive:
            assert_same_tree(client, archive)
    assert len(asset_requests(log)) <= 4  # refused once per worker at most, then not asked
    assert_valid(tmp_path / "api.zip")
    nodes = {f["node"]: f.get("mimetype") for f in manifest(tmp_path / "api.zip")["fallbacks"]}
    assert nodes["reg/primary/intensity"] == nodes["written/inner/arr"] == "application/x-zarr"
    assert nodes["reg/baseline"] == "application/x-parquet"


@pytest.mark.parametrize("cause", ["changed_file", "awkward_without_raw"])  # the 2nd now works
def test_what_cannot_be_fetched_is_listed_and_nothing_written(tmp_path, cause):
    import awkward
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.client.register import register
    from tiled.server.app import build_app

    (tmp_path / "files").mkdir()
    csv = tmp_path / "files" / "points.csv"
    csv.write_text("x,y\n1,2\n")
    adapter = from_uri(
        f"sqlite:///{tmp_path}/catalog.db",
        init_if_not_exists=True,
        writable_storage=[str(tmp_path / "writable")],
        readable_storage=[str(tmp_path / "files")],
    )
    settings = {"expose_raw_assets": cause != "awkward_without_raw"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Context.from_app(build_app(adapter, server_settings=settings)) as context:
            client = from_context(context)
            asyncio.run(register(client, tmp_path / "files"))
            client.write_awkward(awkward.Array([[1, 2], [3]]), key="ragged")
            csv.write_text("x,y\n1,2\n3,4\n")  # changed since registration: a new size
            if cause == "awkward_without_raw":
                # Raw assets off: the awkward array comes through the data API, as buffers.
                csv.write_text("x,y\n1,2\n")
                dest = tmp_path / "out.zip"
                tiled_archive.download(client, dest, cache_dir=tmp_path / "c")
                with tiled_archive.open(dest) as archive:
                    assert archive["ragged"].read().tolist() == [[1, 2], [3]]
                return
            with pytest.raises(ArchiveError) as err:
                tiled_archive.download(client, tmp_path / "out.zip", cache_dir=tmp_path / "c")
    assert err.value.code == "TA-E910"
    assert "points: the server sent" in str(err.value)
    assert not (tmp_path / "out.zip").exists()


# -- Over HTTP: `tiled serve catalog` in a subprocess ------------------------------------------


@contextlib.contextmanager
def tiled_serve(server_root: Path, sample_tree: Path, port: int, log: Path) -> Iterator:
    """Stock `tiled serve catalog` on loopback with an API key; its access log goes to ``log``."""
    writable = ["-w", server_root / "writable", "-w", f"sqlite:///{server_root}/tables.sqlite"]
    catalog = server_root / "catalog.db"
    command = tiled_serve_catalog(
        catalog, sample_tree.parent, port, *writable, "--api-key", "secret"
    )
    with serving(command, port, log=log) as server:
        yield f"{server.url}/api/v1", server.process


def test_cli_download_from_stock_tiled_server(server_root, sample_tree, tmp_path):
    from tiled.client import from_uri
    from tiled.queries import Key

    port = free_port()
    with tiled_serve(server_root, sample_tree, port, tmp_path / "server.log") as (url, _):
        command = ["download", url, "written"]
        command += ["--search", "color=red", "--api-key", "secret", "-o", tmp_path / "red.zip"]
        command += ["--cache-dir", tmp_path / "cache", "-q"]
        done = cli(*command)
        assert done.returncode == 0, done.stderr
        client = from_uri(url, api_key="secret")
        with tiled_archive.open(tmp_path / "red.zip") as archive:
            assert_same_tree(client["written"].search(Key("color") == "red"), archive["written"])

        missing = cli(*command[:2], "nope", "--api-key", "secret", "-o", tmp_path / "x")
        assert missing.returncode == 1 and "TA-E900" in missing.stderr
        assert not (tmp_path / "x").exists()

        # Nothing matched: a clear refusal, then --allow-empty; a directory is servable at once.
        empty = [*command[:2], "written", "--search", "color=ultraviolet", "--api-key", "secret"]
        empty += ["-o", tmp_path / "none", "--cache-dir", tmp_path / "cache"]
        refused = cli(*empty)
        assert refused.returncode == 1 and "TA-E913" in refused.stderr, refused.stderr
        assert "the search matched no node" in " ".join(refused.stderr.split())
        assert not (tmp_path / "none").exists()
        allowed = cli(*empty, "--allow-empty")
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout == ""  # piped: no progress display, not even its empty lines
        none = tmp_path / "none"
        assert f"wrote {none} (1 node, 0 bytes fetched)\n" in allowed.stderr  # `written` alone
        serve_line = f"tiled serve catalog {none / 'catalog.db'} -r {none / 'data'} --public\n"
        assert serve_line in allowed.stderr  # on one line, to copy


@pytest.mark.slow  # a fault or an attack: make test-slow
def test_server_stopped_mid_download_is_a_clear_error_then_resumes(
    server_root, sample_tree, tmp_path
):
    from tiled.client import from_uri

    port, log = free_port(), tmp_path / "server.log"
    dest = tmp_path / "reg.zip"
    with tiled_serve(server_root, sample_tree, port, log) as (url, process):

        def stop_server(path: str, size: int) -> None:
            if process.poll() is None:
                process.terminate()
                process.wait(10)

        with pytest.raises(ArchiveError) as err:
            tiled_archive.download(
                from_uri(url, api_key="secret")["reg"],
                dest,
                cache_dir=tmp_path / "cache",
                workers=1,
                retries=1,
                on_file=stop_server,
            )
    assert err.value.code == "TA-E911"
    assert "re-running resumes" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "server.log"]
    first = log.read_text().count("GET /api/v1/asset/bytes/")

    with tiled_serve(server_root, sample_tree, port, log) as (url, _):
        client = from_uri(url, api_key="secret")
        done = tiled_archive.download(client["reg"], dest, cache_dir=tmp_path / "cache")
        with tiled_archive.open(dest) as archive:
            assert_same_tree(client["reg"], archive["reg"])
    # The file fetched before the stop is only revalidated (a one-byte request).
    resumed = log.read_text().count("GET /api/v1/asset/bytes/") - first
    assert resumed == len(manifest(dest)["files"]) and done.revalidated == 1
    assert done.reused_bytes > 0


# -- Freshness: what the server sends decides whether cached bytes are still the file ---------


@pytest.mark.slow  # ~8 s; the update tests also rewrite a file in place: make test-slow
def test_a_file_changed_in_place_is_fetched_again_and_another_host_name_reuses_the_cache(
    tmp_path,
):
    """A registered file rewritten in place with the same size (new mtime, hence a new ETag)
    is fetched again, never archived stale; an unchanged one costs one revalidation, also
    when the same server is reached by another host name."""
    from tiled.client import from_uri

    served = tmp_path / "served"
    served.mkdir()
    table = served / "table.csv"
    table.write_text("x,y\n1,2\n3,4\n")
    cache = tmp_path / "cache"
    port = free_port()
    command = [str(Path(sys.executable).parent / "tiled"), "serve", "directory", "--public"]
    with serving([*command, "--port", port, served], port, log=tmp_path / "log") as server:
        deadline = time.monotonic() + 30
        while "table" not in from_uri(server.url) and time.monotonic() < deadline:
            time.sleep(0.2)  # `serve directory` registers the files once it is up
        first = tiled_archive.download(from_uri(server.url), tmp_path / "1.zip", cache_dir=cache)
        assert first.fetched_bytes == table.stat().st_size and first.reused_bytes == 0

        again = from_uri(server.url.replace("127.0.0.1", "localhost"))
        second = tiled_archive.download(again, tmp_path / "2.zip", cache_dir=cache)
        assert (second.fetched_bytes, second.reused_bytes) == (0, table.stat().st_size)
        assert second.revalidated == 1

        table.write_text("x,y\n5,6\n7,8\n")  # the same size, other bytes
        os.utime(table, (time.time() + 5, time.time() + 5))  # as a later write would
        third = tiled_archive.download(from_uri(server.url), tmp_path / "3.zip", cache_dir=cache)
        assert (third.fetched_bytes, third.reused_bytes) == (table.stat().st_size, 0)
        with tiled_archive.open(third) as archive:
            assert archive["table"].read()["x"].tolist() == [5, 7]

        # Not kept: the ZIP is the only copy of today's bytes left on disk (the old blob stays).
        fourth = tiled_archive.download(
            from_uri(server.url), tmp_path / "4.zip", cache_dir=cache, keep_cache=False
        )
        assert fourth.reused_bytes == table.stat().st_size
        today = sha256_of(table)
        assert [blob.name for blob in cache.glob("??/*") if blob.name == today] == []
        assert len(list(cache.glob("??/*"))) == 1 and validate(fourth).errors == []
    assert "serve catalog" in third.serve_command and "extract" in third.serve_command
    assert str(third.path) in str(third)
