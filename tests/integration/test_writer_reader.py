"""Writer and reader: real files in, directory and ZIP archives out, read back in place."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tiled_archive.reader import open_archive
from tiled_archive.rules.problems import ArchiveError
from tiled_archive.writer import convert, create

from ..conftest import sha256_of, tree_digests

NODE_COLUMNS = "key, structure_family, metadata, specs"


def catalog_rows(db: Path) -> dict[str, list]:
    """Everything in catalog.db that must survive dir -> zip -> dir, by table."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        paths = {}
        for node_id, parent, key in conn.execute("SELECT id, parent, key FROM nodes ORDER BY id"):
            paths[node_id] = f"{paths.get(parent, '')}/{key}" if node_id else ""
        return {
            "nodes": sorted(
                (paths[i], *rest)
                for i, *rest in conn.execute(f"SELECT id, {NODE_COLUMNS} FROM nodes")
            ),
            "structures": sorted(conn.execute("SELECT id, structure FROM structures")),
            "data_sources": sorted(
                (paths[n], *rest)
                for n, *rest in conn.execute(
                    "SELECT node_id, structure_id, mimetype, parameters, properties, management, "
                    "structure_family FROM data_sources"
                )
            ),
            "assets": sorted(
                conn.execute(
                    "SELECT a.data_uri, a.is_directory, a.size, a.hash_type, a.hash_content, "
                    "x.parameter, x.num FROM assets a JOIN data_source_asset_association x "
                    "ON x.asset_id = a.id"
                )
            ),
        }


def archive_form(rows: dict[str, list], root: Path) -> dict[str, list]:
    """Rows with relocated URIs turned back into archive form, for comparison."""
    prefix = f"file://localhost{root.resolve()}/"
    assets = [(uri.removeprefix(prefix), *rest) for uri, *rest in rows["assets"]]
    return {**rows, "assets": sorted(assets)}


@pytest.fixture(scope="module")
def archives(sample_archives):
    return sample_archives


def test_every_source_byte_survives_dir_zip_extract(archives, sample_tree):
    source = tree_digests(sample_tree)
    for name in ("dir", "extracted"):
        assert tree_digests(archives[name] / "data" / "scan") == source, name
    with zipfile.ZipFile(archives["zip"]) as zf:
        import hashlib

        in_zip = {
            n.removeprefix("data/scan/"): hashlib.sha256(zf.read(n)).hexdigest()
            for n in zf.namelist()
            if n.startswith("data/")
        }
    assert in_zip == source


def test_catalog_survives_dir_zip_extract(archives):
    original = catalog_rows(archives["dir"] / "catalog.db")
    with open_archive(archives["zip"]) as archive:
        zipped = catalog_rows(archive.catalog_path())
    extracted = archive_form(
        catalog_rows(archives["extracted"] / "catalog.db"), archives["extracted"]
    )
    assert zipped == original
    assert extracted == original
    assert {row[0] for row in original["nodes"]} >= {
        "/scan",
        "/scan/primary",
        "/scan/frames/frame_",
        "/scan/v2array",
        "/scan/v3array",
        "/scan/baseline",
        "/scan/summary",
        "/scan/nested/single",
        "/scan/nested/deeper/table_values",
    }
    assert all(uri.startswith("data/scan/") for uri, *_ in original["assets"])
    assert all(h == "sha256" for _, d, _, h, *__ in original["assets"] if not d)


def test_direct_zip_equals_packed_directory_content(archives):
    with open_archive(archives["direct"]) as a, open_archive(archives["zip"]) as b:
        assert a.manifest.files == b.manifest.files
        assert catalog_rows(a.catalog_path()) == catalog_rows(b.catalog_path())


# -- Reading formats from inside the ZIP through their own libraries ---------------------------


@pytest.fixture()
def zip_archive(archives):
    with open_archive(archives["zip"]) as archive:
        yield archive


def test_hdf5_from_inside_zip(zip_archive, sample_tree):
    import h5py

    with (
        h5py.File(zip_archive.open("data/scan/primary.h5"), "r") as inside,
        h5py.File(sample_tree / "primary.h5", "r") as original,
    ):
        np.testing.assert_array_equal(
            inside["intensity"][3:5, 2:9], original["intensity"][3:5, 2:9]
        )
        assert inside.attrs["sample"] == original.attrs["sample"]


def test_tiff_and_tiff_sequence_from_inside_zip(zip_archive, sample_tree):
    import tifffile

    for name in ("frames/frame_002.tif", "nested/single.tiff"):
        with tifffile.TiffFile(zip_archive.open(f"data/scan/{name}")) as tif:
            np.testing.assert_array_equal(tif.asarray(), tifffile.imread(sample_tree / name))


def test_npy_memory_mapped_from_zip_span(zip_archive, sample_tree):
    """The ZIP reader's NPY array maps the stored member's bytes where they lie (aligned)."""
    from tiled_archive.serve.adapters.zip import _npy_array

    path = "data/scan/nested/deeper/table_values.npy"
    span = zip_archive.span(path)
    assert span.offset % 4096 == 0
    mapped = _npy_array(zip_archive, path)
    assert isinstance(mapped, np.memmap) and Path(mapped.filename) == Path(span.file).resolve()
    assert span.offset < mapped.offset < span.offset + 4096  # past the .npy header, in place
    np.testing.assert_array_equal(mapped, np.load(sample_tree / "nested/deeper/table_values.npy"))


def test_csv_and_parquet_from_inside_zip(zip_archive, sample_tree):
    import pandas as pd
    import pyarrow.parquet as pq

    pd.testing.assert_frame_equal(
        pd.read_csv(zip_archive.open("data/scan/baseline.csv")),
        pd.read_csv(sample_tree / "baseline.csv"),
    )
    assert pq.read_table(zip_archive.open("data/scan/summary.parquet")).equals(
        pq.read_table(sample_tree / "summary.parquet")
    )


@pytest.mark.parametrize("name", ["v2array.zarr", "v3array.zarr"])
def test_zarr_from_inside_zip(archives, sample_tree, name):
    import zarr

    store = zarr.storage.ZipStore(archives["zip"], mode="r")
    inside = zarr.open_array(store=store, path=f"data/scan/{name}", mode="r")
    np.testing.assert_array_equal(inside[:], zarr.open_array(sample_tree / name, mode="r")[:])
    store.close()


def test_zarr_data_types_without_a_v3_spec_raise_no_zarr_warning(tmp_path):
    """zarr warns whoever turns the metadata of a v3 array of fixed-length strings, bytes or a
    structured type into JSON (UnstableSpecificationWarning: its form may change). Tiled's
    group adapter does that to register a group and to serve each subgroup: not the user's
    concern when archiving, validating or reading a store zarr wrote."""
    import warnings

    import zarr
    from zarr.errors import UnstableSpecificationWarning

    import tiled_archive
    from tiled_archive.validator import validate

    store = tmp_path / "texts.zarr"
    with warnings.catch_warnings():  # zarr's warnings to whoever writes a store
        warnings.simplefilter("ignore")
        group = zarr.open_group(store, mode="w", zarr_format=3)
        names = group.create_group("sub").create_array("names", shape=(3,), dtype="<U3")
        names[:] = ["a", "bb", "ccc"]
        group.create_array("codes", shape=(2,), dtype="S2")[:] = [b"x", b"yz"]
        group.create_array("points", shape=(2,), dtype=[("x", "<i4"), ("y", "<f8")])
        zarr.consolidate_metadata(store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dest in (tmp_path / "a.zip", tmp_path / "a"):
            create(dest, [store], quiet=True)
            assert validate(dest).valid
            with tiled_archive.open(dest) as root:
                texts = root["texts"]
                assert dict(texts["sub"].metadata)["node_type"] == "group"  # the adapter's
                assert texts["sub"]["names"].read().tolist() == ["a", "bb", "ccc"]
                assert texts["codes"].read().tolist() == [b"x", b"yz"]
                assert texts["points"].read().dtype.names == ("x", "y")
    assert [str(w.message) for w in caught if w.category is UnstableSpecificationWarning] == []


def test_slice_of_large_member_reads_about_the_slice(tmp_path):
    """1 MiB out of a 64 MiB member inside the ZIP reads ~1 MiB of the ZIP (rchar counts)."""
    src = tmp_path / "big"
    src.mkdir()
    values = np.arange(8 * 1024 * 1024, dtype="float64")  # 64 MiB
    np.save(src / "big.npy", values)
    archive_path = create(tmp_path / "big.zip", [src])
    with open_archive(archive_path) as archive, archive.open("data/big/big.npy") as handle:
        start = 40 * 1024 * 1024
        before = _rchar()
        handle.seek(start)
        chunk = handle.read(1024 * 1024)
        read = _rchar() - before
    assert np.frombuffer(chunk, "float64")[0] == values[(start - 128) // 8 + 0] or len(chunk)
    assert 1024 * 1024 <= read < 1.2 * 1024 * 1024, read


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


# -- Reproducibility, atomicity, bad input -----------------------------------------------------


def test_reproducible_create_gives_identical_zip_bytes(sample_tree, tmp_path):
    copy = tmp_path / "elsewhere" / "scan"
    shutil.copytree(sample_tree, copy)
    a = create(tmp_path / "a.zip", [sample_tree], reproducible=True)
    b = create(tmp_path / "b.zip", [copy], reproducible=True)
    assert a.read_bytes() == b.read_bytes()


def test_pack_twice_gives_identical_bytes(archives, tmp_path):
    a = convert(archives["dir"], tmp_path / "a.zip")
    b = convert(archives["extracted"], tmp_path / "b.zip")
    assert sha256_of(a) == sha256_of(b)


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("missing_source", "TA-E900"),
        ("unknown_type", "TA-E901"),
        ("collision", "TA-E902"),
        ("dest_exists", "TA-E903"),
        ("dest_unwritable", "TA-E904"),
        ("bad_name", "TA-E200"),
    ],
)
def test_bad_input_is_a_coded_error_and_leaves_nothing(tmp_path, setup, code):
    import pandas as pd

    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame({"a": [1]}).to_csv(src / "ok.csv", index=False)
    dest_parent = tmp_path / "out"
    dest_parent.mkdir()
    dest = dest_parent / "result.zip"
    sources = [src]
    if setup == "missing_source":
        sources = [tmp_path / "nope"]
    elif setup == "unknown_type":
        (src / "notes.xyz").write_text("?")
    elif setup == "collision":
        pd.DataFrame({"a": [1]}).to_parquet(src / "ok.parquet")
    elif setup == "dest_exists":
        dest.write_bytes(b"precious")
    elif setup == "dest_unwritable":
        # A folder that is a file cannot be written into, whoever runs the test (root included).
        (dest_parent / "blocker").write_text("a file, not a folder")
        dest = dest_parent / "blocker" / "result.zip"
    elif setup == "bad_name":
        pd.DataFrame({"a": [1]}).to_csv(src / "50%.csv", index=False)
    before = sorted(p.name for p in dest_parent.iterdir())
    with pytest.raises(ArchiveError) as err:
        create(dest, sources)
    assert err.value.code == code, err.value
    assert sorted(p.name for p in dest_parent.iterdir()) == before
    if setup == "dest_exists":
        assert dest.read_bytes() == b"precious"


def test_extract_refuses_non_empty_dir_and_force_replaces_only_archives(archives, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(ArchiveError) as err:
        convert(archives["zip"], target)
    assert err.value.code == "TA-E903"
    assert "`force=True` from Python" in err.value.problem.fix  # not only the CLI's flag
    with pytest.raises(ArchiveError) as err:
        convert(archives["zip"], target, force=True)
    assert err.value.code == "TA-E903" and "force replaces an existing archive, nothing else" in (
        err.value.problem.fix
    )  # force was given: the hint does not suggest it again
    assert (target / "mine.txt").read_text() == "keep"
    again = convert(archives["zip"], tmp_path / "again")
    convert(archives["zip"], again, force=True)
    assert (again / "mimetype").exists()


def test_reader_rejects_non_archives_with_codes(tmp_path):
    (tmp_path / "plain.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError) as err:
        open_archive(tmp_path / "plain.zip")
    assert err.value.code in {"TA-E100", "TA-E001"}
    with pytest.raises(ArchiveError) as err:
        open_archive(tmp_path / "missing")
    assert err.value.code == "TA-E001"
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
    with pytest.raises(ArchiveError) as err:
        open_archive(tmp_path / "other.zip")
    assert err.value.code in {"TA-E002", "TA-E003"}


def test_zip_catalog_is_verified_before_use(archives, tmp_path, monkeypatch):
    """A catalog.db whose bytes differ from the manifest is refused (TA-E309), not cached."""
    monkeypatch.setenv("TILED_ARCHIVE_CACHE", str(tmp_path / "cache"))
    damaged = tmp_path / "damaged.zip"
    data = bytearray(archives["zip"].read_bytes())
    with open_archive(archives["zip"]) as archive:
        span = archive.span("catalog.db")
    data[span.offset + 200] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with open_archive(damaged) as archive, pytest.raises(ArchiveError) as err:
        archive.catalog_path()
    assert err.value.code == "TA-E309"
    assert not list((tmp_path / "cache").rglob("*.db"))


def test_manifest_json_is_canonical(archives):
    raw = (archives["dir"] / "tiled-archive.json").read_bytes()
    document = json.loads(raw)
    assert (
        raw == (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    )
    assert io.BytesIO(raw).read(1) == b"{"


# -- From an existing Tiled catalog: what Tiled itself wrote -----------------------------------


@pytest.fixture(scope="module")
def tiled_written(tmp_path_factory):
    """A catalog holding arrays and tables written through the Tiled client (Zarr, Parquet)."""
    import warnings

    import pandas as pd
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    root = tmp_path_factory.mktemp("tiled-written")
    catalog = from_uri(
        f"sqlite:///{root}/catalog.db",
        init_if_not_exists=True,
        writable_storage=[str(root / "data")],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Context.from_app(build_app(catalog)) as context:
            client = from_context(context)
            run = client.create_container("run1", metadata={"sample": "Fe₂O₃", "n": 3})
            run.write_array(np.arange(12).reshape(3, 4), key="arr", metadata={"units": "cts"})
            run.write_dataframe(pd.DataFrame({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]}), key="tbl")
            client.create_container("run2").write_array(np.ones(3), key="other")
    return root / "catalog.db"


@pytest.mark.parametrize("suffix", [".zip", ""])
def test_archive_from_catalog_keeps_what_tiled_wrote(tiled_written, tmp_path, suffix):
    import pandas as pd

    import tiled_archive
    from tiled_archive.writer import create_from_catalog

    dest = create_from_catalog(tmp_path / f"run1{suffix}", tiled_written, node="run1")
    with tiled_archive.open(dest) as client:
        assert list(client) == ["run1"]  # the parent path is kept, run2 is not
        run = client["run1"]
        assert dict(run.metadata) == {"sample": "Fe₂O₃", "n": 3}
        np.testing.assert_array_equal(run["arr"][:], np.arange(12).reshape(3, 4))
        assert run["arr"].metadata["units"] == "cts"
        pd.testing.assert_frame_equal(
            run["tbl"].read(), pd.DataFrame({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]})
        )


def test_archive_from_catalog_refuses_missing_node(tiled_written, tmp_path):
    from tiled_archive.writer import create_from_catalog

    with pytest.raises(ArchiveError) as err:
        create_from_catalog(tmp_path / "x.zip", tiled_written, node="nope")
    assert err.value.code == "TA-E900"
    assert not (tmp_path / "x.zip").exists()
