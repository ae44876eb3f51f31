"""Lazy archives against stock `tiled serve catalog` (a subprocess), bytes counted on the wire
by a proxy: a lazy download moves the catalog only; a read moves about what it touches, once;
offline reads fail at once without a connection; `fetch` completes (resuming after a cut), the
result validates and packs; an eager download afterwards moves almost nothing; an archive made
elsewhere fetches only when told; a file changed at the origin, or a redirecting origin, is
refused."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiled_archive
from tiled_archive.testing import CountingProxy
from tiled_archive.validator import validate

from ..conftest import cli
from ..servers import catalog_with_writer

MiB = 1 << 20
#: The big HDF5 dataset: 16 frames of 1 MiB, one chunk each (as detectors write them).
FRAMES = 16


@pytest.fixture(scope="module")
def origin(sample_tree, tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """Stock `tiled serve catalog` over registered files (the sample tree and a 16 MiB chunked
    HDF5) and arrays written through Tiled's client (one with uneven chunks): its port and
    its folder."""
    import dask.array
    import h5py

    root = tmp_path_factory.mktemp("origin")
    files = root / "files"
    shutil.copytree(sample_tree, files / "scan")
    frames = np.random.default_rng(1).random((FRAMES, 512, 256))
    with h5py.File(files / "big.h5", "w") as f:
        f.create_dataset("frames", data=frames, chunks=(1, 512, 256))
    with catalog_with_writer(root, files) as (client, port):
        with warnings.catch_warnings():  # Tiled's deprecations of the writes below
            warnings.simplefilter("ignore")
            written = client.create_container("written", metadata={"kind": "client"})
            written.write_array(dask.array.arange(10.0, chunks=3), key="uneven")
            written.write_dataframe(pd.DataFrame({"a": [1, 2, 3]}), key="table")
        yield port, root


@pytest.fixture
def proxy(origin) -> Iterator[CountingProxy]:
    with CountingProxy(origin[0]) as counting:
        yield counting


def _server(proxy: CountingProxy):
    from tiled.client import from_uri

    return from_uri(f"{proxy.url}/api/v1")


def _lazy(proxy: CountingProxy, dest: Path):
    return tiled_archive.download(_server(proxy), dest, lazy=True)


def _payload_bytes(dest: Path) -> int:
    manifest = json.loads((dest / "tiled-archive.json").read_text())
    return sum(entry["size"] for entry in manifest["files"])


def test_lazy_download_moves_the_catalog_and_reads_move_what_they_touch(proxy, tmp_path):
    dest = tmp_path / "lazy"
    before = proxy.received
    _lazy(proxy, dest)
    listing = proxy.received - before
    payload = _payload_bytes(dest)
    assert payload > FRAMES * MiB
    assert listing < payload / 50, listing  # names, sizes and validators: no file's bytes
    assert not [p for p in (dest / "data").rglob("*") if p.is_file()]
    report = validate(dest)
    assert report.valid and {p.code for p in report.problems} == {"TA-W310"}

    server = _server(proxy)
    expected = server["big"]["frames"][5]
    with tiled_archive.open(dest) as archive:
        before = proxy.received
        assert np.array_equal(archive["big"]["frames"][5], expected)
        moved = proxy.received - before
        assert MiB <= moved <= 3 * MiB, moved  # the frame, HDF5's metadata, a block or two
        before = proxy.received
        assert np.array_equal(archive["big"]["frames"][5], expected)
        assert proxy.received == before  # the same frame again: nothing
        # Small files are fetched whole, checked, then read as any archive's.
        for key in ("scan/baseline", "scan/v2array", "scan/v3array", "written/uneven"):
            assert np.array_equal(np.asarray(archive[key].read()), np.asarray(server[key].read()))
    assert not (dest / "data/files/big.h5").exists()  # partly fetched: never a whole file

    connections = proxy.connections
    with tiled_archive.open(dest, offline=True) as archive:
        archive["big"]["frames"][5]  # its blocks are here: read offline
        with pytest.raises(Exception, match="TA-E941") as caught:
            archive["big"]["frames"][9]
        assert f"tiled-archive fetch {dest} --node big" in str(caught.value)
        assert archive["scan/baseline"].read().equals(server["scan/baseline"].read())
        assert len(archive.search(tiled_archive_key_query("kind", "client"))) == 1
    assert proxy.connections == connections  # offline: no socket opened


def tiled_archive_key_query(key: str, value: str):
    from tiled.queries import Key

    return Key(key) == value


def test_fetch_resumes_completes_and_an_eager_download_reuses_it(proxy, tmp_path):
    dest = tmp_path / "lazy"
    _lazy(proxy, dest)
    payload = _payload_bytes(dest)
    before = proxy.received
    proxy.cut_after = proxy.received + payload // 2  # the network fails halfway
    cut = cli("fetch", dest, "--workers", "1", "-q")
    assert cut.returncode == 1 and "TA-E943" in cut.stderr, cut.stderr
    proxy.cut, proxy.cut_after = False, None
    done = cli("fetch", dest, "-q")
    assert done.returncode == 0 and "complete, digests sealed" in done.stderr, done.stderr
    moved = proxy.received - before
    assert moved <= payload * 1.10 + MiB, (moved, payload)  # resumed, not begun again

    report = validate(dest, complete=True)
    assert report.valid and not report.problems, report.problems
    packed = cli("pack", dest, tmp_path / "packed.zip", "-q")
    assert packed.returncode == 0, packed.stderr
    assert validate(tmp_path / "packed.zip").valid

    before = proxy.received
    eager = tiled_archive.download(_server(proxy), tmp_path / "eager.zip", streamed=False)
    assert proxy.received - before <= payload * 0.05, proxy.received - before
    assert eager.reused_bytes >= payload * 0.95


@pytest.mark.slow  # a refusal or a cap: make test-slow
def test_an_archive_made_elsewhere_fetches_only_when_told(proxy, tmp_path):
    made = tmp_path / "made"
    _lazy(proxy, made)
    copied = tmp_path / "copied"
    shutil.copytree(made, copied)
    before = proxy.connections
    refused = pytest.raises(Exception, match="TA-E941.*not made by your download")
    with tiled_archive.open(copied) as archive, refused:
        archive["scan/baseline"].read()
    assert proxy.connections == before
    with tiled_archive.open(copied, fetch=True) as archive:
        assert len(archive["scan/baseline"].read()) == 5
    assert proxy.connections > before


@pytest.mark.slow  # a refusal or a cap: make test-slow
def test_a_file_changed_at_the_origin_is_refused(proxy, origin, tmp_path):
    dest = tmp_path / "lazy"
    tiled_archive.download(_server(proxy), dest, lazy=True, probe=True)
    csv = origin[1] / "files" / "scan" / "baseline.csv"
    text = csv.read_bytes()
    try:
        csv.write_bytes(text.replace(b"abcde"[:1], b"z", 1))  # same size, other bytes
        with tiled_archive.open(dest) as archive, pytest.raises(Exception, match="TA-E942"):
            archive["scan/baseline"].read()
    finally:
        csv.write_bytes(text)
    assert not (dest / "data/files/scan/baseline.csv").exists()


class _Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- the http.server API
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow  # hostile and faulty inputs: make test-slow
def test_a_redirecting_origin_is_not_followed(proxy, tmp_path):
    dest = tmp_path / "lazy"
    _lazy(proxy, dest)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        manifest_path = dest / "tiled-archive.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["fetch"]["origin"] = f"http://127.0.0.1:{server.server_port}/api/v1/"
        manifest_path.write_text(json.dumps(manifest))
        refused = pytest.raises(Exception, match="TA-E943.*redirects")
        with tiled_archive.open(dest, fetch=True) as archive, refused:
            archive["scan/baseline"].read()
    finally:
        server.shutdown()


def _node_count(folder: Path) -> int:
    import sqlite3

    with sqlite3.connect(folder / "catalog.db") as conn:
        return conn.execute("SELECT count(*) FROM nodes WHERE parent IS NOT NULL").fetchone()[0]


def _write_at_origin(root: Path, key: str) -> None:
    """A node written, and a container's metadata revised, through Tiled's own client in the
    origin's catalog (the running server reads the same SQLite file)."""
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    catalog = from_uri(
        f"sqlite:///{root}/catalog.db",
        writable_storage=[str(root / "writable")],
        readable_storage=[str(root / "files")],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Context.from_app(build_app(catalog)) as context:
            client = from_context(context)
            client.write_array(np.arange(3), key=key)
            client["written"].replace_metadata({"kind": "client", "revised": True})


def test_browse_walks_on_demand_reuses_reads_and_follows_its_server(proxy, origin, tmp_path):
    url, mirror = f"{proxy.url}/api/v1", tmp_path / "mirror"
    client = tiled_archive.browse(url, mirror)
    assert {"big", "scan", "written"} <= set(client)
    top = _node_count(mirror)
    assert top == len(list(client))  # the root's children, nothing below them yet
    assert len(client["scan"]) > 5 and _node_count(mirror) > top  # listed when visited

    big = (origin[1] / "files" / "big.h5").stat().st_size
    expected = _server(proxy)["big"]["frames"][3]
    before = proxy.received
    assert np.array_equal(client["big"]["frames"][3], expected)
    tiled_archive.download(client["big"], tmp_path / "big.zip")
    moved = proxy.received - before
    assert big < moved <= 1.02 * big, (moved, big)  # the frame read is not fetched again
    assert validate(tmp_path / "big.zip").valid
    client.close()

    _write_at_origin(origin[1], "later")
    expected = _server(proxy)["big"]["frames"][9]
    connections = proxy.connections
    with tiled_archive.browse(url, mirror, offline=True) as offline:
        assert "later" not in offline and len(offline["scan"]) > 5
        assert np.array_equal(offline["big"]["frames"][9], expected)  # downloaded: here
        with pytest.raises(Exception, match="TA-E941"):
            offline["scan"]["v2array"].read()
    assert proxy.connections == connections  # offline: not one
    with tiled_archive.browse(url, mirror) as again:  # the next day: the same mirror, updated
        assert "later" in again and np.array_equal(again["later"].read(), np.arange(3))
        assert again["written"].metadata["revised"] is True
    report = validate(mirror)  # what it grew by is sealed as it grew
    assert report.valid and {p.code for p in report.problems} <= {"TA-W310"}, [
        str(p) for p in report.problems if p.code != "TA-W310"
    ]


@pytest.mark.slow  # a refusal or a cap: make test-slow
def test_a_size_cap_keeps_the_fetched_bytes_within_it(proxy, tmp_path):
    dest = tmp_path / "lazy"
    _lazy(proxy, dest)
    server = _server(proxy)
    keys = ("scan/baseline", "scan/summary", "scan/v2array", "written/uneven")
    expected = {key: np.asarray(server[key].read()) for key in keys}
    with tiled_archive.open(dest, max_bytes=1) as archive:  # room for nothing but the last
        for key in keys:  # each read fetches its files, pushing the older ones out
            assert np.array_equal(np.asarray(archive[key].read()), expected[key])
    kept = [p for p in (dest / "data").rglob("*") if p.is_file()]
    # At most the file fetched last (a cap never drops the file it just fetched).
    largest = max(e["size"] for e in json.loads((dest / "tiled-archive.json").read_text())["files"])
    assert sum(p.stat().st_size for p in kept) <= largest and len(kept) <= 1, kept
    report = validate(dest)
    assert report.valid and {p.code for p in report.problems} == {"TA-W310"}


@pytest.mark.slow  # hostile and faulty inputs: make test-slow
def test_a_work_folder_that_leads_elsewhere_is_never_followed(proxy, tmp_path):
    made = tmp_path / "made"
    _lazy(proxy, made)
    outside = tmp_path / "outside"
    outside.mkdir()
    # Handed over with its work folder a symlink: told to fetch, the link goes, not its target.
    copied = tmp_path / "copied"
    shutil.copytree(made, copied)
    (copied / ".tiled-archive-fetch").symlink_to(outside)
    with tiled_archive.open(copied, fetch=True) as archive:
        assert len(archive["scan/baseline"].read()) == 5
    assert not list(outside.iterdir())
    assert not (copied / ".tiled-archive-fetch").is_symlink()
    # This user's own archive with a symlink planted in its work folder: refused, coded.
    (made / ".tiled-archive-fetch").mkdir(exist_ok=True)
    (made / ".tiled-archive-fetch" / "partial").symlink_to(outside)
    with tiled_archive.open(made) as archive, pytest.raises(Exception, match="TA-E203"):
        archive["big"]["frames"][1]
    assert not list(outside.iterdir())


@pytest.mark.slow  # hostile and faulty inputs: make test-slow
def test_a_damaged_work_state_is_begun_afresh(proxy, tmp_path):
    dest = tmp_path / "lazy"
    _lazy(proxy, dest)
    (dest / ".tiled-archive-fetch").mkdir()
    (dest / ".tiled-archive-fetch" / "state.db").write_bytes(b"not a database" * 100)
    with tiled_archive.open(dest) as archive:
        assert len(archive["scan/baseline"].read()) == 5


@pytest.mark.slow  # hostile and faulty inputs: make test-slow
def test_a_seal_stopped_halfway_is_finished_by_the_next_fetch(proxy, tmp_path, monkeypatch):
    from tiled_archive.writer import lazy

    dest = tmp_path / "lazy"
    _lazy(proxy, dest)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # stopped after the catalog's rename, before the tag files

    monkeypatch.setattr(lazy, "reseal", crash)
    with pytest.raises(KeyboardInterrupt):
        lazy.fetch(dest)
    with pytest.raises(Exception, match="TA-E309.*stopped while it sealed"):
        tiled_archive.open(dest)
    monkeypatch.undo()
    done = cli("fetch", dest, "-q")
    assert done.returncode == 0, done.stderr
    report = validate(dest, complete=True)
    assert report.valid and not report.problems, report.problems
