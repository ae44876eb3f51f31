"""Raw assets of a served archive (`/asset/bytes`, `/asset/manifest`): Tiled's client gets the
archive's own files through them (`raw_export()`), only files of the node's own asset, with
HTTP ranges as Starlette's file responses answer them, and never bytes the manifest disowns."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.writer import convert, create

API = "http://tiled-archive.invalid/api/v1"


@pytest.fixture(scope="module")
def served(sample_archives):
    return sample_archives


def leaves(node, path=""):
    """(path, data sources, client) of every node below ``node`` that has data sources (an
    HDF5 file's node, not the arrays inside it)."""
    for key, child in node.items():
        sources = child.include_data_sources().data_sources()
        if sources:
            yield f"{path}/{key}", sources, child
        elif child.structure_family == "container":
            yield from leaves(child, f"{path}/{key}")


def digests(values) -> list[str]:
    return sorted(hashlib.sha256(v).hexdigest() for v in values)


@pytest.mark.parametrize("form", ["zip", "dir"])
def test_raw_export_gives_each_nodes_own_files_from_the_archive(served, form):
    with open_archive(served[form]) as opened:
        members = {e.path: opened.read(e.path) for e in opened.manifest.files}
    exported_nodes = 0
    with tiled_archive.open(served[form]) as client:
        for path, sources, node in leaves(client):
            assets = [a for source in sources for a in source.assets]
            expected = []
            for asset in assets:
                if asset.is_directory:
                    expected += [
                        v for m, v in members.items() if m.startswith(asset.data_uri + "/")
                    ]
                else:
                    expected.append(members[asset.data_uri])
            mapping = {}
            keys = node.raw_export(destination=mapping)
            assert len(keys) == len(expected), path
            assert digests(b.getvalue() for b in mapping.values()) == digests(expected), path
            exported_nodes += 1
    # HDF5, TIFF sequence (several assets), Zarr v2 and v3 (directory assets), CSV, Parquet.
    assert exported_nodes >= 8


def test_a_zarr_directory_asset_lists_paths_inside_it(served):
    with tiled_archive.open(served["zip"]) as client:
        node = client["scan/v3array"]
        (asset,) = node.include_data_sources().data_sources()[0].assets
        http = client.context.http_client
        listing = http.get(f"{API}/asset/manifest/scan/v3array", params={"id": asset.id}).json()
        assert "zarr.json" in listing["manifest"]
        assert all(not p.startswith("/") and ".." not in p for p in listing["manifest"])
        file_asset = http.get(f"{API}/asset/manifest/scan/baseline", params={"id": 1})
        assert file_asset.status_code in (400, 404)


ESCAPES = [
    "../../catalog.db",
    "..",
    ".",
    "",
    "/etc/passwd",
    "zarr.json/../../../catalog.db",
    "./zarr.json",
    "a//zarr.json",
    "..\\..\\catalog.db",
    "zarr.json\x00",
    "no-such-file",
]


@pytest.mark.parametrize("relative_path", ESCAPES)
def test_relative_path_stays_inside_its_directory_asset(served, relative_path):
    with tiled_archive.open(served["zip"]) as client:
        (asset,) = client["scan/v3array"].include_data_sources().data_sources()[0].assets
        response = client.context.http_client.get(
            f"{API}/asset/bytes/scan/v3array",
            params={"id": asset.id, "relative_path": relative_path},
        )
    assert response.status_code in (400, 404), response.text
    assert b"SQLite format" not in response.content and b"root:" not in response.content


def test_a_node_serves_only_its_own_assets(served):
    with tiled_archive.open(served["zip"]) as client:
        http = client.context.http_client
        (own,) = client["scan/baseline"].include_data_sources().data_sources()[0].assets
        (other,) = client["scan/summary"].include_data_sources().data_sources()[0].assets
        assert http.get(f"{API}/asset/bytes/scan/baseline", params={"id": own.id}).is_success
        elsewhere = http.get(f"{API}/asset/bytes/scan/baseline", params={"id": other.id})
        assert elsewhere.status_code == 404
        with_path = http.get(
            f"{API}/asset/bytes/scan/baseline", params={"id": own.id, "relative_path": "x"}
        )
        assert with_path.status_code == 400
        (folder,) = client["scan/v2array"].include_data_sources().data_sources()[0].assets
        no_path = http.get(f"{API}/asset/bytes/scan/v2array", params={"id": folder.id})
        assert no_path.status_code == 400 and "relative_path" in no_path.text


# -- HTTP ranges: answered as Starlette's FileResponse answers them for the same file ---------


@pytest.fixture(scope="module")
def range_pair(served):
    """(our route's URL getter, Starlette FileResponse over the same file, the file's size)."""
    path = served["dir"] / "data/scan/baseline.csv"
    oracle = TestClient(Starlette(routes=[Route("/f", lambda r: FileResponse(path))]))
    client = tiled_archive.open(served["dir"])
    (asset,) = client["scan/baseline"].include_data_sources().data_sources()[0].assets
    assert asset.data_uri.endswith("data/scan/baseline.csv")

    def ours(headers):
        return client.context.http_client.get(
            f"{API}/asset/bytes/scan/baseline", params={"id": asset.id}, headers=headers
        )

    yield ours, lambda headers: oracle.get("/f", headers=headers), path.stat().st_size
    client.close()


def single_ranges(size: int):
    offsets = st.integers(0, size + 5)
    return st.one_of(
        st.tuples(offsets, offsets)
        .filter(lambda p: p[0] <= p[1])
        .map(lambda p: f"bytes={p[0]}-{p[1]}"),
        offsets.map(lambda a: f"bytes={a}-"),
        offsets.map(lambda n: f"bytes=-{n}"),
    )


@given(data=st.data())
def test_single_ranges_are_answered_as_starlette_answers_them(range_pair, data):
    ours, oracle, size = range_pair
    header = data.draw(single_ranges(size))
    mine = ours({"Range": header, "Accept-Encoding": "identity"})
    theirs = oracle({"Range": header, "Accept-Encoding": "identity"})
    assert mine.status_code == theirs.status_code, header
    assert mine.headers.get("content-range") == theirs.headers.get("content-range"), header
    if mine.status_code != 416:
        assert mine.content == theirs.content, header


def test_ranges_this_server_does_not_split_get_the_whole_file(range_pair, served):
    ours, _, size = range_pair
    whole = (served["dir"] / "data/scan/baseline.csv").read_bytes()
    for header in ["bytes=0-1,5-9", "items=0-4", "bytes=9-3", "nonsense"]:
        response = ours({"Range": header})
        assert (response.status_code, response.content) == (200, whole), header
    stale = ours({"Range": "bytes=0-9", "If-Range": '"some other version"'})
    assert (stale.status_code, stale.content) == (200, whole)
    etag = ours({}).headers["etag"]
    assert etag == f'"{hashlib.sha256(whole).hexdigest()}"'
    current = ours({"Range": "bytes=0-9", "If-Range": etag})
    assert (current.status_code, current.content) == (206, whole[:10])


def test_head_gives_the_headers_of_the_file(served):
    with tiled_archive.open(served["zip"]) as client:
        response = client.context.http_client.head(f"{API}/asset/bytes/scan/baseline?id=1")
    size = (served["dir"] / "data/scan/baseline.csv").stat().st_size
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(size)
    assert response.headers["content-disposition"] == 'attachment; filename="baseline.csv"'


def test_a_member_that_differs_from_the_manifest_is_never_sent_whole(served, tmp_path):
    """Same size, one byte changed: opening does not hash data files, but sending one whole
    does, first: the answer is a 422 naming TA-E308, not the wrong bytes."""
    damaged = shutil.copytree(served["dir"], tmp_path / "damaged")
    target = damaged / "data/scan/baseline.csv"
    body = bytearray(target.read_bytes())
    body[-2] ^= 1
    target.write_bytes(bytes(body))
    with tiled_archive.open(damaged) as client:
        http = client.context.http_client
        refused = http.get(f"{API}/asset/bytes/scan/baseline?id=1")
        assert refused.status_code == 422 and "TA-E308" in refused.text
        assert "data/scan/baseline.csv" in refused.text
        # A range is not hashed (the manifest has one digest per file): it is what is there.
        head = http.get(f"{API}/asset/bytes/scan/baseline?id=1", headers={"Range": "bytes=0-3"})
        assert head.content == bytes(body[:4])


def test_odd_ids_and_ranges_get_plain_answers(range_pair, served):
    ours, _, size = range_pair
    whole = (served["dir"] / "data/scan/baseline.csv").read_bytes()
    with tiled_archive.open(served["zip"]) as client:
        http = client.context.http_client
        for asset_id in [2**63, -1, 10**30]:
            response = http.get(f"{API}/asset/bytes/scan/baseline", params={"id": asset_id})
            assert response.status_code == 404, asset_id
    # Positions nobody can mean are not ranges (Python cannot even read 4,301 digits).
    for header in ["bytes=0-" + "9" * 4400, "bytes=" + "0" * 4400 + "1-2"]:
        assert (ours({"Range": header}).status_code, ours({"Range": header}).content) == (
            200,
            whole,
        )
    # The unit is case-insensitive (RFC 9110).
    assert ours({"Range": "BYTES=0-3"}).content == whole[:4]


def damaged_copy(served, tmp_path, change):
    damaged = shutil.copytree(served["dir"], tmp_path / "damaged")
    target = damaged / "data/scan/baseline.csv"
    target.write_bytes(change(target.read_bytes()))
    return damaged


def test_a_range_over_the_whole_of_a_damaged_file_is_refused_too(served, tmp_path):
    damaged = damaged_copy(served, tmp_path, lambda b: b[:-2] + bytes([b[-2] ^ 1]) + b[-1:])
    with tiled_archive.open(damaged) as client:
        http = client.context.http_client
        for header in ["bytes=0-", "bytes=-100000", "bytes=0-99999999"]:
            response = http.get(f"{API}/asset/bytes/scan/baseline?id=1", headers={"Range": header})
            assert response.status_code == 422 and "TA-E308" in response.text, header


def test_a_member_shorter_than_listed_is_a_clean_error_before_any_byte(served, tmp_path):
    damaged = damaged_copy(served, tmp_path, lambda b: b[:20])
    with tiled_archive.open(damaged) as client:
        http = client.context.http_client
        for headers in [{}, {"Range": "bytes=0-"}, {"Range": "bytes=5-9"}]:
            response = http.get(f"{API}/asset/bytes/scan/baseline?id=1", headers=headers)
            assert response.status_code == 422 and "TA-E307" in response.text, headers


def test_in_process_raw_assets_stream_instead_of_sitting_in_memory(tmp_path):
    """A 96 MiB file through the in-process client: Python's allocations stay at a few chunks
    (the transport hands the body over chunk by chunk), and a body left unread does not keep
    the archive from closing."""
    import tracemalloc

    import numpy as np

    source = tmp_path / "big"
    source.mkdir()
    np.save(source / "ones.npy", np.ones(12 << 20))  # 96 MiB
    archive = convert(create(tmp_path / "dir", [source]), tmp_path / "big.zip")
    with tiled_archive.open(archive) as client:
        node = client["big/ones"]
        (asset,) = node.include_data_sources().data_sources()[0].assets
        url = node.item["links"]["self"].replace("/metadata", "/asset/bytes", 1)
        http = client.context.http_client
        tracemalloc.start()
        try:
            digest, size = hashlib.sha256(), 0
            headers = {"Accept-Encoding": "identity"}
            with http.stream("GET", url, params={"id": asset.id}, headers=headers) as response:
                for chunk in response.iter_raw():
                    digest.update(chunk)
                    size += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert size == (source / "ones.npy").stat().st_size
        assert digest.hexdigest() == hashlib.sha256((source / "ones.npy").read_bytes()).hexdigest()
        assert peak < 24 << 20, f"{peak / 2**20:.0f} MiB allocated at the peak"
        unread = http.stream("GET", url, params={"id": asset.id}).__enter__()
        assert unread.status_code == 200
    # (closing the client above returned although one body was never read)


@pytest.mark.parametrize("form", ["zip", "dir"])
def test_a_file_of_any_length_comes_whole_with_tileds_own_encodings(served, form):
    """Tiled's client accepts blosc2, and Tiled 0.2.20 blosc2-compresses raw bytes, failing
    (a 500) on a streamed body whose length is not a multiple of 8 (docs/upstream.md): every file of
    the Zarr v2 store, `.zarray` (of such a length) included, comes whole."""
    with open_archive(served[form]) as opened:
        members = {e.path: opened.read(e.path) for e in opened.manifest.files}
    with tiled_archive.open(served[form]) as client:
        (asset,) = client["scan/v2array"].include_data_sources().data_sources()[0].assets
        http = client.context.http_client
        assert "blosc2" in http.headers["accept-encoding"]
        inside = {
            m[len(asset.data_uri) + 1 :]: v
            for m, v in members.items()
            if m.startswith(asset.data_uri + "/")
        }
        assert any(len(v) % 8 for v in inside.values())
        for name, expected in inside.items():
            answer = http.get(
                f"{API}/asset/bytes/scan/v2array", params={"id": asset.id, "relative_path": name}
            )
            assert answer.status_code == 200 and answer.content == expected, name
