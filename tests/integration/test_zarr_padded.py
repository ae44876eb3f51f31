"""A Zarr store padded to whole chunks, as Tiled stores an array its client writes in uneven
chunks (spec 3.3): every path reads the catalog's shape, and every conversion keeps it valid."""

from __future__ import annotations

import pytest

import tiled_archive
from tiled_archive.testing import stock_tiled_client
from tiled_archive.validator import validate
from tiled_archive.writer import convert, stock_serve_command
from tiled_archive.writer.load import load

from ..conftest import FIXTURES

PADDED = FIXTURES / "valid" / "zarr-padded-as-tiled-writes"
VALUES = list(range(10))  # stored in 12 elements, chunks of 3


def assert_reads_the_catalogs_shape(root) -> None:
    node = root["sample"]["padded"]
    assert node.structure().shape == (10,)
    assert node.read().tolist() == VALUES
    assert node[7:].tolist() == VALUES[7:]
    assert node.read_block((3,)).tolist() == VALUES[9:]  # the short last chunk


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    out = tmp_path_factory.mktemp("padded")
    extracted = convert(PADDED / "archive.zip", out / "extracted")
    return {
        "directory": PADDED / "archive",
        "zip": PADDED / "archive.zip",
        "extracted": extracted,
        "packed": convert(extracted, out / "packed.zip"),
    }


@pytest.mark.parametrize("form", ["directory", "zip", "extracted", "packed"])
def test_every_form_is_valid_and_reads_the_catalogs_shape(forms, form):
    assert validate(forms[form]).problems == []
    with tiled_archive.open(forms[form]) as root:
        assert_reads_the_catalogs_shape(root)


def test_stock_tiled_serves_the_extracted_copy_alike(forms):
    with stock_tiled_client(*stock_serve_command(forms["extracted"])[2:]) as stock:
        assert_reads_the_catalogs_shape(stock)


def test_loaded_it_reads_from_its_catalog_and_through_stock_tiled(tmp_path):
    db, data = tmp_path / "catalog.db", tmp_path / "data"
    loaded = load(PADDED / "archive.zip", f"sqlite:///{db}", data)
    with tiled_archive.from_catalog(db, [data]) as root:
        assert_reads_the_catalogs_shape(root)
    with stock_tiled_client(*loaded.serve_command()[2:], "--public") as stock:
        assert_reads_the_catalogs_shape(stock)
