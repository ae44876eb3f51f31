"""`from_catalog`: any Tiled catalog (SQLite, a real PostgreSQL server) as the in-process,
read-only Tiled client, its files read only inside the readable storage, checked as an
archive's are."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import tiled_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.testing import postgres_admin
from tiled_archive.writer import create, relocate
from tiled_archive.writer.load import load

from ..conftest import catalog_uri
from ..nodes import assert_exact, listing

pytestmark = pytest.mark.filterwarnings("ignore::tiled_archive.reader.ArchiveWarning")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("tree", ["files", "memory"])
def test_a_loaded_catalog_reads_as_the_archive(family_archives, tmp_path, request, backend, tree):
    """Every family (files Tiled registers; arrays of every dtype, sparse, awkward, ragged in
    DuckDB, tables a client wrote), node by node, values included."""
    uri = catalog_uri(backend, tmp_path, request)
    data = tmp_path / "data"
    load(family_archives[tree], uri, data, at=f"archives/{tree}")
    before = sha256(tmp_path / "catalog.db") if backend == "sqlite" else None
    with (
        tiled_archive.open(family_archives[tree]) as archive,
        tiled_archive.from_catalog(uri, readable_storage=[data]) as client,
    ):
        copy = client["archives"][tree]
        assert list(listing(copy)) == list(listing(archive))
        for key in listing(archive):
            assert_exact(listing(archive)[key], listing(copy)[key], f"/{key}/")
    if before is not None:  # read-only: not a byte written, no journal left
        assert sha256(tmp_path / "catalog.db") == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.db", "data"]


def test_an_extracted_archive_opens_from_its_catalog(family_archives, tmp_path):
    """The seed's example: from_catalog("stuff/catalog.db", readable_storage=["stuff/data"])
    on a relocated directory (what `extract` makes), ragged DuckDB included."""
    stuff = tmp_path / "stuff"
    shutil.copytree(family_archives["files"], stuff)
    relocate(stuff)
    with (
        tiled_archive.open(family_archives["files"]) as archive,
        tiled_archive.from_catalog(stuff / "catalog.db", readable_storage=[stuff / "data"]) as c,
    ):
        assert list(listing(c)) == list(listing(archive))
        for key in listing(archive):
            assert_exact(listing(archive)[key], listing(c)[key], f"/{key}/")


@pytest.fixture
def loaded(family_archives, tmp_path) -> tuple[str, Path]:
    """The files archive loaded into a new SQLite catalog: (URI, data folder)."""
    uri, data = f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "data"
    load(family_archives["files"], uri, data)
    return uri, data


def a_file_asset(db: Path, suffix: str) -> tuple[int, Path]:
    """(asset id, path) of the first file asset whose path ends with suffix."""
    with sqlite3.connect(db) as conn:
        for asset_id, uri in conn.execute("SELECT id, data_uri FROM assets ORDER BY id"):
            if uri.endswith(suffix):
                return asset_id, Path(uri.removeprefix("file://localhost"))
    raise AssertionError(f"no asset ending {suffix}")


def nodes(client, prefix: str = ""):
    """(path, node) of every node below ``client`` that can be listed, depth first (an HDF5
    file that is refused lists no children)."""
    from tiled.client.utils import ClientError

    try:
        children = list(listing(client).items())
    except ClientError:
        return
    for key, node in children:
        path = f"{prefix}/{key}".lstrip("/")
        yield path, node
        if node.structure_family == "container":
            yield from nodes(node, path)


def of_family(client, family: str) -> list[str]:
    return [path for path, node in nodes(client) if node.structure_family == family]


def node_of_asset(client, asset_id: int) -> str:
    for path, node in nodes(client):
        for source in node.data_sources() or []:
            if any(asset.id == asset_id for asset in source.assets):
                return path
    raise AssertionError(f"no node has asset {asset_id}")


def read_error(client, key: str) -> str:
    with pytest.raises(Exception) as caught:
        client[key].read()
    return str(caught.value)


def test_an_asset_outside_the_readable_storage_is_refused(loaded, tmp_path):
    """A catalog row naming another file (here this machine's /etc/passwd as a CSV), a
    symbolic link inside the storage leading out of it, and a `..` the URI text hides: each
    TA-E923 on read, nothing else read; the rest of the catalog still reads."""
    uri, data = loaded
    db = tmp_path / "catalog.db"
    csv_id, _ = a_file_asset(db, ".csv")
    npy_id, npy_path = a_file_asset(db, ".npy")
    parquet_id, parquet_path = a_file_asset(db, ".parquet")
    secret = tmp_path / "secret.npy"
    np.save(secret, np.arange(3))
    npy_path.unlink()
    npy_path.symlink_to(secret)
    dotdot = f"file://localhost{data}/../secret.npy"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE assets SET data_uri = ? WHERE id = ?", ("file://localhost/etc/passwd", csv_id)
        )
        conn.execute("UPDATE assets SET data_uri = ? WHERE id = ?", (dotdot, parquet_id))
    with tiled_archive.from_catalog(uri, readable_storage=[data], include_data_sources=True) as c:
        for asset_id, named in (
            (csv_id, "/etc/passwd"),
            (npy_id, str(secret)),
            (parquet_id, str(secret)),
        ):
            message = read_error(c, node_of_asset(c, asset_id))
            assert "TA-E923" in message and named in message and "outside" in message
        tampered = {node_of_asset(c, i) for i in (csv_id, npy_id, parquet_id)}
        others = [p for p in of_family(c, "array") if p not in tampered]
        assert others and all(np.asarray(c[path].read()).size for path in others)
    assert parquet_path.exists()


def test_readable_storage_narrower_than_the_files_refuses_the_rest(loaded):
    uri, data = loaded
    (nested,) = data.rglob("nested")  # holds one .npy; the CSV and Parquet lie beside it
    with tiled_archive.from_catalog(uri, readable_storage=[nested]) as client:
        messages = [read_error(client, path) for path in of_family(client, "table")]
        assert client["scan/nested/deeper/table_values"].read().shape == (4, 6)
    assert len(messages) == 2 and all("TA-E923" in m for m in messages)


def test_no_storage_reads_nothing(loaded):
    uri, _ = loaded
    with tiled_archive.from_catalog(uri) as client:
        assert "TA-E923" in read_error(client, of_family(client, "table")[0])


def test_a_data_file_is_checked_as_an_archives_is(loaded, tmp_path):
    """An HDF5 file of the storage with an external link to a file outside it: TA-E600 before
    h5py follows the link (Tiled's own check passes it: the file itself is inside)."""
    import h5py

    uri, data = loaded
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["x"] = np.arange(5)
    linked = data / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["inside"] = np.arange(3)
        f["x"] = h5py.ExternalLink(str(outside), "x")
    with sqlite3.connect(tmp_path / "catalog.db") as conn:
        (h5_id,) = conn.execute(
            "SELECT a.id FROM assets a WHERE a.data_uri LIKE '%.h5' ORDER BY a.id"
        ).fetchone()
        conn.execute(
            "UPDATE assets SET data_uri = ? WHERE id = ?", (f"file://localhost{linked}", h5_id)
        )
    with tiled_archive.from_catalog(uri, readable_storage=[data], include_data_sources=True) as c:
        key = node_of_asset(c, h5_id)
        with pytest.raises(Exception) as caught:
            node = c[key]
            for child in node if node.structure_family == "container" else [None]:
                (node[child] if child else node).read()
    assert "TA-E600" in str(caught.value)


def test_raw_assets_stay_inside_the_storage(loaded, tmp_path):
    """Tiled's /asset/bytes is ours here: the asset's file (ranges, ETag), a directory asset's
    files by relative_path, nothing through `..` or a link out; writes refused."""
    uri, data = loaded
    with tiled_archive.from_catalog(uri, readable_storage=[data], include_data_sources=True) as c:
        http = c.context.http_client
        api = str(c.context.api_uri).rstrip("/")
        key = of_family(c, "table")[0]
        (asset,) = c[key].data_sources()[0].assets
        path = Path(asset.data_uri.removeprefix("file://localhost"))
        whole = http.get(f"{api}/asset/bytes/{key}", params={"id": asset.id})
        assert whole.status_code == 200 and whole.content == path.read_bytes()
        part = http.get(
            f"{api}/asset/bytes/{key}", params={"id": asset.id}, headers={"Range": "bytes=1-3"}
        )
        assert part.status_code == 206 and part.content == path.read_bytes()[1:4]
        zarr_key, zarr_asset = next(
            (path, a)
            for path, n in nodes(c)
            for s in n.data_sources() or []
            for a in s.assets
            if a.is_directory
        )
        listed = http.get(f"{api}/asset/manifest/{zarr_key}", params={"id": zarr_asset.id})
        names = listed.json()["manifest"]
        assert names and all(not n.startswith("/") for n in names)
        one = http.get(
            f"{api}/asset/bytes/{zarr_key}",
            params={"id": zarr_asset.id, "relative_path": names[0]},
        )
        folder = Path(zarr_asset.data_uri.removeprefix("file://localhost"))
        assert one.status_code == 200, (zarr_key, names[0], one.text)
        assert one.content == (folder / names[0]).read_bytes()
        for escape in ("../../catalog.db", "/etc/passwd", "a/../../x"):
            answer = http.get(
                f"{api}/asset/bytes/{zarr_key}",
                params={"id": zarr_asset.id, "relative_path": escape},
            )
            assert answer.status_code in (400, 404), escape
        (folder / "escape").symlink_to(tmp_path / "catalog.db")
        answer = http.get(
            f"{api}/asset/bytes/{zarr_key}",
            params={"id": zarr_asset.id, "relative_path": "escape"},
        )
        assert answer.status_code == 422 and "TA-E923" in answer.text
        assert b"root:" not in http.get(api.removesuffix("/api/v1") + "/ui//etc/passwd").content
        with pytest.raises(Exception, match="401|403"):
            c.write_array(np.arange(3), key="new")


def test_the_catalog_is_live(family_archives, tmp_path):
    """No response cache: what a load adds after the client opened is listed."""
    uri, data = f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "data"
    load(family_archives["files"], uri, data, at="first")
    with tiled_archive.from_catalog(uri, readable_storage=[data]) as client:
        assert list(client) == ["first"]
        load(family_archives["files"], uri, data, at="second")
        assert list(client) == ["first", "second"]


@pytest.mark.parametrize(
    "uri",
    ["{tmp}/missing.db", "sqlite:///{tmp}/missing.db", "postgresql://nobody:secret@127.0.0.1:1/x"],
)
def test_a_catalog_that_cannot_open_is_a_coded_error(tmp_path, uri):
    with pytest.raises(ArchiveError) as caught:
        tiled_archive.from_catalog(uri.format(tmp=tmp_path))
    assert caught.value.code == "TA-E922" and "secret" not in str(caught.value)
    assert not (tmp_path / "missing.db").exists()  # not created


def test_an_empty_postgresql_database_is_not_a_catalog(postgres_database):
    with pytest.raises(ArchiveError) as caught:
        tiled_archive.from_catalog(postgres_database)
    assert caught.value.code == "TA-E922"


def test_a_postgresql_catalog_reads_without_writing(family_archives, postgres_catalog, tmp_path):
    """Reading takes no write: the session's role is made read-only for the database, and
    every node still reads."""
    data = tmp_path / "data"
    load(family_archives["files"], postgres_catalog, data)
    server, database = postgres_catalog.rsplit("/", 1)
    postgres_admin(server, f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    with (
        tiled_archive.open(family_archives["files"]) as archive,
        tiled_archive.from_catalog(postgres_catalog, readable_storage=[data]) as client,
    ):
        for key in listing(archive):
            assert_exact(listing(archive)[key], listing(client)[key], f"/{key}/")


def test_files_under_a_symlinked_storage_folder_read(loaded, tmp_path):
    """The storage given through a link (as /data -> /mnt/beamline) is resolved at open."""
    uri, data = loaded
    link = tmp_path / "link"
    os.symlink(data, link)
    with tiled_archive.from_catalog(uri, readable_storage=[link]) as client:
        assert all(len(client[p].read()) for p in of_family(client, "table"))


def test_a_refused_read_does_not_poison_the_next_clients_read(loaded):
    """Tiled's dask reads name their graphs by node URL: in-process clients each have a URL
    of their own, so a failed read kept alive (as a notebook keeps its last traceback) is
    not reused by another client's read of the same path (docs/upstream.md)."""
    uri, data = loaded
    with tiled_archive.from_catalog(uri) as refused:
        key = of_family(refused, "table")[0]
        with pytest.raises(Exception) as kept:
            refused[key].read()
    with tiled_archive.from_catalog(uri, readable_storage=[data]) as client:
        assert len(client[key].read())
    assert "TA-E923" in str(kept.value)


def test_a_file_swapped_after_a_read_is_checked_again(loaded, tmp_path):
    """The check of a data source's files is kept only while they stay the same files: an
    HDF5 file replaced by one with an external link after a first read is TA-E600 on the
    next read of the same client, not read on the first verdict."""
    import h5py

    uri, data = loaded
    (h5,) = data.rglob("*.h5")
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["x"] = np.full(5, 1337)
    with tiled_archive.from_catalog(uri, readable_storage=[data]) as client:
        path = next(p for p in of_family(client, "array") if p.startswith("scan/primary/"))
        first = client[path].read()
        name = path.rsplit("/", 1)[-1]
        swapped = tmp_path / "swapped.h5"
        with h5py.File(h5, "r") as original, h5py.File(swapped, "w") as f:
            for key in original:
                if key != name:
                    original.copy(key, f)
            f[name] = h5py.ExternalLink(str(outside), "x")
        os.replace(swapped, h5)
        message = read_error(client, path)
    assert np.asarray(first).size and "TA-E600" in message and "1337" not in message


def test_an_ome_tiff_naming_another_file_is_refused(loaded, tmp_path):
    """tifffile opens the files an OME-TIFF's XML names (UUID FileName) to build its series:
    such a TIFF in the storage is TA-E600 before tifffile reads it (archives alike)."""
    import tifffile

    uri, data = loaded
    frame = sorted(data.rglob("*.tif*"))[0]
    outside = tmp_path / "outside.ome.tif"
    tifffile.imwrite(outside, np.full((4, 4), 66, np.uint8))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
        '<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="4" SizeY="4" '
        'SizeC="1" SizeZ="1" SizeT="2"><TiffData FirstT="0" IFD="0" PlaneCount="1"><UUID '
        f'FileName="{frame.name}">urn:uuid:1</UUID></TiffData><TiffData FirstT="1" IFD="0" '
        f'PlaneCount="1"><UUID FileName="{outside}">urn:uuid:2</UUID></TiffData></Pixels>'
        "</Image></OME>"
    )
    tifffile.imwrite(frame, np.full((4, 4), 7, np.uint8), description=xml, metadata=None)
    with tiled_archive.from_catalog(uri, readable_storage=[data]) as client:
        (path,) = [p for p in of_family(client, "array") if "frames" in p]
        message = read_error(client, path)
    assert "TA-E600" in message and "another file" in message


@pytest.fixture
def zarr_loaded(tmp_path) -> tuple[str, Path, Path]:
    """A Zarr v3 array of 8 x 8 chunks (nested chunk folders ``c/I/J``) loaded into a new
    SQLite catalog: (URI, data folder, the store's folder)."""
    import zarr

    source = tmp_path / "source"
    source.mkdir()
    array = zarr.create_array(source / "grid.zarr", shape=(32, 32), chunks=(4, 4), dtype="i4")
    array[:] = np.arange(32 * 32, dtype="i4").reshape(32, 32)
    archive = create(tmp_path / "archive", [source])
    uri, data = f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "data"
    load(archive, uri, data)
    (store,) = data.rglob("grid.zarr")
    return uri, data, store


def test_a_link_put_in_a_chunk_folder_is_refused_on_the_next_read(zarr_loaded, tmp_path):
    """A store's folders are walked again when one changed: a chunk file replaced by a link
    out of the storage, in a nested chunk folder, is TA-E923 on the next read."""
    uri, data, store = zarr_loaded
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    with tiled_archive.from_catalog(uri, readable_storage=[data]) as client:
        path = of_family(client, "array")[0]
        assert int(client[path][5, 7]) == 5 * 32 + 7
        chunk = store / "c" / "3" / "1"
        link = chunk.with_name("link")
        os.symlink(secret, link)
        os.replace(link, chunk)
        message = read_error(client, path)
    assert "TA-E923" in message, message


def test_zarr_metadata_rewritten_in_place_is_checked_again(zarr_loaded):
    """The metadata document is what the checks read: it is stat-ed on every read, so one
    rewritten in place (its folder's times unchanged) is inspected again: TA-E602 when it no
    longer agrees with the catalog."""
    uri, data, store = zarr_loaded
    metadata = store / "zarr.json"
    with tiled_archive.from_catalog(uri, readable_storage=[data]) as client:
        path = of_family(client, "array")[0]
        assert int(client[path][1, 1]) == 33
        folder_times = store.stat().st_mtime_ns
        document = json.loads(metadata.read_text())
        document["shape"] = [64, 32]
        with open(metadata, "r+") as handle:  # same inode: the folder is not touched
            handle.truncate(0)
            handle.write(json.dumps(document))
        assert store.stat().st_mtime_ns == folder_times
        message = read_error(client, path)
    assert "TA-E602" in message, message
