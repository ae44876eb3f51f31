"""What reading Arrow IPC, JPEG and Excel files costs, found from their headers alone: equal
to what their libraries decode for real files, and refused or coded for crafted ones."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conformance.generate import arrow_first_batch_everywhere, arrow_footer_start, arrow_ipc_bytes
from tiled_archive.inspectors import Inspection, arrow, jpeg, xlsx
from tiled_archive.rules.catalog_rows import AssetRef, DataSourceRow
from tiled_archive.sources.directory import DirectorySource


def row(mimetype: str, *names: str, structure: dict | None = None) -> DataSourceRow:
    assets = tuple(AssetRef(name, False, "data_uris", i) for i, name in enumerate(names))
    family = "table" if "arrow" in mimetype else "array"
    return DataSourceRow(1, "x", family, mimetype, {}, structure, assets)


def inspected(folder: Path, data_source: DataSourceRow) -> Inspection:
    result = Inspection()
    {
        arrow.MIMETYPE: arrow.inspect,
        xlsx.MIMETYPE: xlsx.inspect,
    }.get(data_source.mimetype, jpeg.inspect)(DirectorySource(folder), data_source, result)
    return result


def buffers_bytes(table: pa.Table) -> int:
    """What pyarrow holds once it has read ``table``: every buffer of every chunk, and the
    dictionaries, once per batch (as each batch's file block carries its own)."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            total += sum(b.size for b in chunk.buffers() if b is not None)
    return total


TABLE = pa.table(
    {
        "i": np.arange(50_000),
        "s": pa.array([f"row {i}" for i in range(50_000)]),
        "f": np.linspace(0, 1, 50_000),
    }
)


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_arrow_cost_is_what_pyarrow_decodes(tmp_path, compression):
    (tmp_path / "t.arrow").write_bytes(
        arrow_ipc_bytes(TABLE, batch_rows=12_000, compression=compression)
    )
    result = inspected(tmp_path, row(arrow.MIMETYPE, "t.arrow"))
    assert result.problems == []
    read = ipc.open_file(tmp_path / "t.arrow").read_all()
    # Buffers are padded to 8 bytes in the file: at most 8 bytes per buffer more.
    assert 0 <= result.partitions[0] - buffers_bytes(read) <= 8 * 4 * 3 * 5
    assert result.stored == (tmp_path / "t.arrow").stat().st_size


def test_arrow_dictionaries_count(tmp_path):
    table = pa.table({"d": pa.array(["a long repeated value"] * 1000).dictionary_encode()})
    (tmp_path / "t.arrow").write_bytes(arrow_ipc_bytes(table))
    result = inspected(tmp_path, row(arrow.MIMETYPE, "t.arrow"))
    dictionary = table.column("d").chunks[0].dictionary
    assert result.partitions[0] >= buffers_bytes(table) + dictionary.nbytes - 8


def test_a_compressed_buffer_states_its_decoded_size(tmp_path):
    """A zstd batch of 10**7 int64 zeros is a few KB and counts 80 MB."""
    zeros = pa.table({"z": np.zeros(10**7, "i8")})
    (tmp_path / "t.arrow").write_bytes(arrow_ipc_bytes(zeros, compression="zstd"))
    result = inspected(tmp_path, row(arrow.MIMETYPE, "t.arrow"))
    assert (tmp_path / "t.arrow").stat().st_size < 100_000
    assert result.partitions == [80_000_000]


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda b: b[:-3], "TA-E601"),  # no magic at the end
        (lambda b: b"XXXXXX" + b[6:], "TA-E601"),
        (lambda b: b[:-10] + struct.pack("<i", 2**31 - 1) + b[-6:], "TA-E601"),  # footer size
        (lambda b: b[:1000] + b[arrow_footer_start(b) :], "TA-E602"),  # batches past the cut
    ],
)
def test_arrow_damage_is_coded(tmp_path, damage, code):
    (tmp_path / "t.arrow").write_bytes(damage(arrow_ipc_bytes(TABLE)))
    result = inspected(tmp_path, row(arrow.MIMETYPE, "t.arrow"))
    assert [p.code for p in result.problems] == [code], result.problems


def array_structure(shape: list[int]) -> dict:
    return {
        "data_type": {"endianness": "not_applicable", "kind": "u", "itemsize": 1, "dt_units": None},
        "chunks": [[n] for n in shape],
        "shape": shape,
        "dims": None,
        "resizable": False,
    }


@pytest.mark.parametrize(
    ("mode", "options"),
    [("L", {}), ("RGB", {}), ("CMYK", {}), ("RGB", {"progressive": True})],
)
def test_jpeg_shape_is_what_pillow_decodes(tmp_path, mode, options):
    Image.new(mode, (40, 30)).save(tmp_path / "p.jpg", **options)
    decoded = np.asarray(Image.open(tmp_path / "p.jpg"))
    result = inspected(
        tmp_path, row("image/jpeg", "p.jpg", structure=array_structure(list(decoded.shape)))
    )
    assert result.problems == []
    assert result.decoded == decoded.nbytes
    assert result.unit == decoded.nbytes * (3 if options else 1)


def test_a_jpeg_sequence_is_checked_frame_by_frame(tmp_path):
    for i in range(3):
        Image.new("L", (40, 30)).save(tmp_path / f"f{i}.jpg")
    Image.new("L", (41, 30)).save(tmp_path / "f3.jpg")
    names = [f"f{i}.jpg" for i in range(4)]
    sequence = array_structure([4, 30, 40])
    sequence["chunks"] = [[1, 1, 1, 1], [30], [40]]
    result = inspected(
        tmp_path, row("multipart/related;type=image/jpeg", *names, structure=sequence)
    )
    assert [(p.code, p.path) for p in result.problems] == [("TA-E602", "f3.jpg")]


def test_not_a_jpeg_is_coded(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "p.jpg", format="PNG")
    result = inspected(tmp_path, row("image/jpeg", "p.jpg", structure=array_structure([4, 4])))
    assert [p.code for p in result.problems] == ["TA-E601"]


def test_workbook_cost_counts_its_xml_and_cells(tmp_path):
    frame = pd.DataFrame({"a": range(1000), "b": [f"v{i}" for i in range(1000)]})
    frame.to_excel(tmp_path / "w.xlsx", index=False)
    with zipfile.ZipFile(tmp_path / "w.xlsx") as workbook:
        parts_bytes = sum(i.file_size for i in workbook.infolist())
    result = inspected(tmp_path, row(xlsx.MIMETYPE, "w.xlsx"))
    assert result.problems == []
    cells = 1001 * 2  # header row and 1000 rows, two columns (the dimension agrees)
    assert result.opened == xlsx.XML_EXPANSION * parts_bytes + xlsx.CELL_BYTES * cells


def rewritten(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as source:
        parts = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dest:
        for info, data in parts:
            dest.writestr(info, edit(info.filename, data))


def test_a_doctype_in_a_workbook_is_refused(tmp_path):
    pd.DataFrame({"a": [1]}).to_excel(tmp_path / "w.xlsx", index=False)
    rewritten(
        tmp_path / "w.xlsx",
        lambda name, data: (
            b'<!DOCTYPE x [<!ENTITY e "e">]>' + data if name == "xl/workbook.xml" else data
        ),
    )
    result = inspected(tmp_path, row(xlsx.MIMETYPE, "w.xlsx"))
    assert [p.code for p in result.problems] == ["TA-E601"]
    assert "DOCTYPE" in result.problems[0].message


def test_a_workbook_of_compressed_xml_counts_without_being_read(tmp_path, monkeypatch):
    """XML that inflates past the budget is counted from the workbook's directory alone."""
    monkeypatch.setenv("TILED_ARCHIVE_READ_BUDGET", "1000000")
    pd.DataFrame({"a": [1]}).to_excel(tmp_path / "w.xlsx", index=False)
    rewritten(
        tmp_path / "w.xlsx",
        lambda name, data: data + b" " * 10**6 if name == "xl/worksheets/sheet1.xml" else data,
    )
    result = inspected(tmp_path, row(xlsx.MIMETYPE, "w.xlsx"))
    assert result.problems == [] and result.opened > 4 * 10**6


def arrow_file_bytes() -> bytes:
    return arrow_ipc_bytes(TABLE.slice(0, 3000), batch_rows=1000, compression="zstd")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_damaged_arrow_files_are_coded_or_counted(tmp_path, data):
    """Any bytes changed anywhere (footer, headers, buffers): a coded problem or a count, never
    an exception, and never more than the budget's worth of header bytes read."""
    original = bytearray(arrow_file_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        end = len(original) - 1  # the footer and the message headers are most at stake
        at = data.draw(st.integers(0, end) | st.integers(end - 700, end) | st.integers(0, 400))
        original[at] = data.draw(st.integers(0, 255))
    (tmp_path / "t.arrow").write_bytes(bytes(original))
    result = inspected(tmp_path, row(arrow.MIMETYPE, "t.arrow"))
    assert {p.code for p in result.problems} <= {"TA-E601", "TA-E602"}
    assert result.problems or result.partitions is not None


def test_a_footer_listing_one_batch_many_times_is_refused(tmp_path):
    """Each block's header is read and counted once: blocks that overlap (here the first
    batch listed 1,000 times over a file of 1,000 batches) are TA-E602."""
    data = arrow_first_batch_everywhere(1000)
    footer = arrow.FlatBuffer(data[arrow_footer_start(data) : -10])
    blocks = footer.structs(footer.root(), 3, 24)  # Footer.recordBatches
    assert len(blocks) == 1000
    assert len({footer.data[at : at + 24] for at in blocks}) == 1
    (tmp_path / "t.arrow").write_bytes(data)
    result = inspected(tmp_path, row(arrow.MIMETYPE, "t.arrow"))
    assert [p.code for p in result.problems] == ["TA-E602"]
    assert "overlap" in result.problems[0].message
