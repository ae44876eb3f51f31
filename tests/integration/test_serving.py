"""Serving archives to the Tiled client: in-process (ZIP, directory), our HTTP server, and stock
`tiled serve catalog` on the extracted copy must all give the source data."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import tiled_archive
from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.writer import convert, create, reseal

from ..conftest import sha256_of, tree_digests


@pytest.fixture(scope="module")
def served(sample_archives):
    return sample_archives


def expected_values(source: Path) -> dict[str, object]:
    import h5py
    import tifffile
    import zarr

    with h5py.File(source / "primary.h5") as f:
        intensity = f["intensity"][:]
        energy = f["group/energy"][:]
    return {
        "primary/intensity": intensity,
        "primary/group/energy": energy,
        "frames/frame_": np.stack(
            [tifffile.imread(source / f"frames/frame_{i:03d}.tif") for i in range(4)]
        ),
        "nested/single": tifffile.imread(source / "nested/single.tiff"),
        "nested/deeper/table_values": np.load(source / "nested/deeper/table_values.npy"),
        "v2array": zarr.open_array(source / "v2array.zarr", mode="r")[:],
        "v3array": zarr.open_array(source / "v3array.zarr", mode="r")[:],
        "baseline": pd.read_csv(source / "baseline.csv"),
        "summary": pd.read_parquet(source / "summary.parquet"),
    }


TABLES = {"baseline", "summary"}
ARRAYS = [
    "primary/intensity",
    "primary/group/energy",
    "frames/frame_",
    "nested/single",
    "nested/deeper/table_values",
    "v2array",
    "v3array",
]


def read_values(client) -> dict[str, object]:
    scan = client["scan"]
    values: dict[str, object] = {key: scan[key].read() for key in TABLES}
    values.update({key: scan[key][:] for key in ARRAYS})
    values["primary/intensity[2:4, 3:9, ::2]"] = scan["primary/intensity"][2:4, 3:9, ::2]
    values["metadata"] = dict(scan["primary"].metadata)
    return values


def assert_same(values: dict[str, object], source: Path) -> None:
    expected = expected_values(source)
    for key, value in expected.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(
                values[key].reset_index(drop=True), value, check_dtype=False
            )
        else:
            np.testing.assert_array_equal(values[key], value, err_msg=key)
    np.testing.assert_array_equal(
        values["primary/intensity[2:4, 3:9, ::2]"], expected["primary/intensity"][2:4, 3:9, ::2]
    )
    assert values["metadata"]["sample"] == "Si (111) — ünïcode"


@pytest.mark.parametrize("form", ["zip", "dir", "extracted"])
def test_in_process_client_reads_every_format(served, sample_tree, form):
    with tiled_archive.open(served[form]) as client:
        assert_same(read_values(client), sample_tree)
        assert sorted(client["scan"]) == sorted(
            ["baseline", "primary", "summary", "v2array", "v3array", "frames", "nested"]
        )


def test_search_and_export_work_in_process(served, tmp_path):
    from tiled.queries import FullText, Key

    with tiled_archive.open(served["zip"]) as client:
        scan = client["scan"]
        assert list(scan.search(FullText("ünïcode"))) == ["primary"]
        assert list(scan.search(Key("sample") == "Si (111) — ünïcode")) == ["primary"]
        scan["nested/deeper/table_values"].export(tmp_path / "values.csv")
        exported = np.loadtxt(tmp_path / "values.csv", delimiter=",")
        np.testing.assert_array_equal(exported, np.arange(24.0).reshape(4, 6))


def test_writes_are_refused_and_archive_bytes_never_change(served):
    from tiled.client.utils import ClientError

    for form in ("zip", "dir"):
        before = _digests(served[form])
        with tiled_archive.open(served[form]) as client:
            with pytest.raises(ClientError) as err:
                client.write_array(np.ones(3), key="new")
            assert err.value.response.status_code in (401, 403)
            with pytest.raises(ClientError):
                client["scan"]["primary"].update_metadata({"sample": "changed"})
            with pytest.raises(ClientError):
                client["scan"].delete_contents("baseline")
            client["scan"]["primary/intensity"][:]  # a read in the same session
        assert _digests(served[form]) == before, form
        leftovers = [
            p
            for p in Path(served[form]).parent.rglob("*")
            if p.name.endswith(("-journal", "-wal", "-shm"))
        ]
        assert leftovers == []


def _digests(path: Path) -> dict[str, str]:
    return tree_digests(path) if path.is_dir() else {path.name: sha256_of(path)}


# -- Untrusted archives: refused before any byte of data is read -------------------------------


@pytest.mark.parametrize(
    ("data_uri", "code"),
    [
        ("file://localhost/etc/passwd", "TA-E503"),
        ("/etc/passwd", "TA-E503"),
        ("data/../../../etc/passwd", "TA-E503"),
        ("http://example.invalid/x.h5", "TA-E503"),
        ("data/scan/not-there.h5", "TA-E504"),
    ],
)
def test_catalog_pointing_outside_is_refused(served, tmp_path, data_uri, code):
    evil = convert(served["zip"], tmp_path / "evil")
    with sqlite3.connect(evil / "catalog.db") as conn:
        conn.execute(
            "UPDATE assets SET data_uri = ? WHERE data_uri LIKE '%primary.h5'", (data_uri,)
        )
    reseal(evil)  # a consistent, signed-looking archive: only the catalog is malicious
    with pytest.raises(ArchiveError) as err:
        tiled_archive.open(evil)
    assert err.value.code == code


def test_symlink_inside_directory_archive_is_refused(served, tmp_path):
    evil = convert(served["zip"], tmp_path / "evil")
    target = evil / "data" / "scan" / "primary.h5"
    target.unlink()
    os.symlink("/etc/hostname", target)
    with pytest.raises(ArchiveError) as err:
        tiled_archive.open(evil)
    assert err.value.code == "TA-E203"


def test_response_cache_answers_repeats_without_the_app(served):
    """Repeated identical GETs are answered from the cache; refusals and new requests are not."""
    from asgi_lifespan import LifespanManager

    from tiled_archive.reader import open_archive
    from tiled_archive.serve.app import ArchiveServer

    server = ArchiveServer(open_archive(served["zip"]), api_key="k1", public=False)
    reached = []
    inner = server.app.app

    async def counting(scope, receive, send):
        if scope["type"] == "http":
            reached.append(scope["path"])
        await inner(scope, receive, send)

    server.app.app = counting

    async def scenario():
        async with (
            LifespanManager(server.app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=server.app), base_url="http://x"
            ) as http,
        ):
            good = {"Authorization": "Apikey k1"}
            # The first response sets Tiled's CSRF cookie (never cached); the client then sends
            # it, so the second request is the first of a repeating kind.
            first = await http.get("/api/v1/metadata/scan/primary", headers=good)
            await http.get("/api/v1/metadata/scan/primary", headers=good)
            second = await http.get("/api/v1/metadata/scan/primary", headers=good)
            denied = [await http.get("/api/v1/metadata/scan/primary") for _ in range(2)]
            return first, second, denied

    import asyncio

    try:
        first, second, denied = asyncio.run(scenario())
    finally:
        server.close()
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert [r.status_code for r in denied] == [401, 401]
    # Two passes for three good requests, one per refused request (refusals are not kept).
    assert reached.count("/api/v1/metadata/scan/primary") == 4


def test_a_workbook_over_the_budget_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    """Tiled's Excel adapter parses every sheet when it is made: over the budget, opening the
    workbook is TA-E912, with a hint that fits (no slice of it reads for less)."""
    from tiled.client.utils import ClientError

    source = tmp_path / "source"
    source.mkdir()
    pd.DataFrame({"x": range(2000)}).to_excel(source / "sheet.xlsx", index=False)
    packed = create(tmp_path / "x.zip", [source])
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", "10000")
    with tiled_archive.open(packed) as client, pytest.raises(ClientError) as refused:
        list(client["source"]["sheet"])
    message = str(refused.value)
    assert "TA-E912" in message and "opens it" in message and "slice" not in message
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", "10000000")
    with tiled_archive.open(packed) as client:
        sheet = client["source"]["sheet"]
        assert sheet[next(iter(sheet))].read()["x"].tolist() == list(range(2000))


def test_declared_chunks_are_refused_before_tiled_enumerates_them(tmp_path, monkeypatch):
    """Tiled's HDF5 adapter makes a task per storage chunk when it opens a dataset, and every
    child's adapter for any page of a listing: with a budget of three datasets' chunks less
    one, each dataset opens and reads, but a listing (all three at once) is TA-E912, and so is
    a dataset of more chunks than the budget, before anything is enumerated."""
    import h5py
    from tiled.client.utils import ClientError

    from tiled_archive.rules.budget import HDF5_TASK_BYTES

    source = tmp_path / "source"
    source.mkdir()
    with h5py.File(source / "grid.h5", "w") as f:
        for name in ("a", "b", "c"):
            f.create_dataset(name, data=np.arange(1000, dtype="u1") % 7, chunks=(1,))
    packed = create(tmp_path / "x.zip", [source])
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(3 * 1000 * HDF5_TASK_BYTES - 1))
    with tiled_archive.open(packed) as client:
        grid = client["source"]["grid"]
        assert grid["b"][0:5].tolist() == [0, 1, 2, 3, 4]  # one dataset: within the budget
        with pytest.raises(ClientError) as refused:
            dict(grid.items())
        message = str(refused.value)
        assert "TA-E912" in message and "3000 storage chunks in 3 arrays" in message
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(1000 * HDF5_TASK_BYTES - 1))
    with tiled_archive.open(packed) as client, pytest.raises(ClientError) as refused:
        client["source"]["grid"]["a"]
    assert "TA-E912" in str(refused.value) and "1000 storage chunks" in str(refused.value)


def test_formats_without_an_in_place_reader_come_from_a_verified_copy(tmp_path, monkeypatch):
    """JPEG and Excel members of a ZIP: Tiled's stock adapters on copies in the user cache."""
    from PIL import Image

    monkeypatch.setenv("TILED_ARCHIVE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "source"
    source.mkdir()
    pixels = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    Image.fromarray(pixels).save(source / "photo.jpg", quality=95)
    sheet = pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]})
    sheet.to_excel(source / "sheet.xlsx", index=False)
    packed = create(tmp_path / "x.zip", [source])

    with tiled_archive.open(packed) as client:
        photo = client["source"]["photo"].read()
        workbook = client["source"]["sheet"]  # a container of sheets
        table = workbook[next(iter(workbook))].read()
    assert np.array_equal(photo, np.asarray(Image.open(source / "photo.jpg")))
    assert table.to_dict("list") == sheet.to_dict("list")
    copies = sorted(p.name for p in (tmp_path / "cache" / "members").rglob("*") if p.is_file())
    assert copies == ["photo.jpg", "sheet.xlsx"]

    # A copy altered in the cache (same size) is never served: it is made again from the ZIP.
    with open_archive(packed) as archive:
        copy = archive.local_copy("data/source/photo.jpg")
    copy.chmod(0o644)
    copy.write_bytes(bytes(copy.stat().st_size))
    with open_archive(packed) as archive:
        assert sha256_of(archive.local_copy("data/source/photo.jpg")) == sha256_of(
            source / "photo.jpg"
        )


@pytest.mark.parametrize("suffix", [".zip", ""])
def test_a_large_chunk_the_origin_wrote_reads_in_slices_a_bomb_does_not(
    tmp_path, monkeypatch, suffix
):
    """One chunk larger than the read budget: a slice of it reads when the chunk's stored
    bytes back it (random values, as Tiled's client writes a user's big dask chunk), and the
    whole is still refused; the same chunk of zeros (a thousandth of it stored) is refused
    for any slice (TA-E912)."""
    import zarr
    from tiled.client.utils import ClientError

    source = tmp_path / "source"
    source.mkdir()
    values = np.random.default_rng(3).random(3_000_000)  # 24 MB, one chunk
    zarr.create_array(source / "big.zarr", data=values, chunks=values.shape)
    zarr.create_array(source / "zeros.zarr", data=np.zeros_like(values), chunks=values.shape)
    archive = create(tmp_path / f"x{suffix}", [source])
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", str(10_000_000))
    with tiled_archive.open(archive) as client:
        np.testing.assert_array_equal(client["source"]["big"][10:20], values[10:20])
        for read in (lambda: client["source"]["big"][:], lambda: client["source"]["zeros"][:3]):
            with pytest.raises(ClientError) as refused:
                read()
            assert "TA-E912" in str(refused.value)


def test_archives_opened_in_one_process_keep_their_own_keys(sample_archives):
    """Tiled's build_app configures one process-wide settings object (docs/upstream.md): a
    second archive opened public made the first, opened with a key, readable by anyone and
    by the second's key. Each app answers with its own settings."""
    from starlette.testclient import TestClient

    from tiled_archive.reader import open_archive
    from tiled_archive.serve.app import ArchiveServer

    url = "/api/v1/metadata/"
    private = ArchiveServer(open_archive(sample_archives["zip"]), api_key="first", public=False)
    with TestClient(private.app) as first:
        assert first.get(url).status_code == 401
        public = ArchiveServer(open_archive(sample_archives["dir"]), api_key="second")
        with TestClient(public.app) as second:
            assert second.get(url).status_code == 200
            assert first.get(url).status_code == 401
            assert first.get(url, headers={"Authorization": "Apikey second"}).status_code == 401
            assert first.get(url, headers={"Authorization": "Apikey first"}).status_code == 200
            assert second.get(url, headers={"Authorization": "Apikey first"}).status_code == 401
        public.close()
    private.close()
