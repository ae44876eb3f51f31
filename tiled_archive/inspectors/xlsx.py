"""Excel workbooks (XLSX): what parsing every sheet takes, from the workbook's own XML.

Tiled's ``ExcelAdapter`` parses every sheet into a DataFrame when it is made (pandas over
openpyxl), before any read. An XLSX is a ZIP of XML: its XML can compress a thousand to one,
and openpyxl fills the gaps between rows and up to a sheet's declared ``<dimension>`` with
empty cells, so a few hundred bytes naming cell XFD1048576 ask for 17 billion cells. The
cost counted is ``XML_EXPANSION`` bytes per byte of its parts (inflated) plus ``CELL_BYTES``
per cell of the rectangle each XML part spans (rows up to the last row number, columns up to
the widest), found by streaming every XML part through expat (no tree is built). XML with a
DOCTYPE (which can define entities) is refused: Excel writes none.
"""

from __future__ import annotations

import re
import zipfile
from xml.parsers import expat

from ..rules.budget import read_budget
from ..rules.catalog_rows import DataSourceRow
from ..rules.formats import XLSX_MIMETYPE
from ..rules.problems import reason
from ..sources import ByteSource
from . import Inspection, add, not_the_file

MIMETYPE = XLSX_MIMETYPE
#: Bytes of memory pandas' DataFrames take per byte of sheet XML (measured: 2.9 for numbers
#: and short strings), and per cell the sheet's rectangle holds (row lists and object arrays).
XML_EXPANSION = 4
CELL_BYTES = 24
#: Parts (ZIP members) of one workbook at the most.
MAX_PARTS = 10_000
_CELL_REF = re.compile(r"\$?([A-Za-z]{1,3})\$?([0-9]{1,7})$")


class _Refused(Exception):
    """The workbook's XML holds what no workbook needs (message: what)."""


def inspect(source: ByteSource, row: DataSourceRow, result: Inspection) -> None:
    stored = cost = 0
    for path in row.members():
        stored += source.members()[path].size
        try:
            cost += _workbook_cost(source, path)
        except _Refused as err:
            add(result, "TA-E601", path, f"not a workbook Tiled may read: {err}")
            return
        except Exception as err:  # noqa: BLE001 -- zipfile and expat raise many types
            not_the_file(err)
            add(result, "TA-E601", path, f"not a readable XLSX file: {reason(err)}")
            return
    result.opened = result.decoded = cost
    result.stored = stored


def _workbook_cost(source: ByteSource, path: str) -> int:
    with source.open(path) as handle, zipfile.ZipFile(handle) as workbook:
        parts = [info for info in workbook.infolist() if not info.is_dir()]
        if len(parts) > MAX_PARTS:
            raise _Refused(f"more than {MAX_PARTS} parts")
        cost = XML_EXPANSION * sum(info.file_size for info in parts)
        if cost > read_budget():
            return cost  # refused by its size alone: no need to read it
        for info in parts:
            if not info.filename.endswith((".xml", ".rels")):
                continue  # images and other binary parts: counted, never parsed by pandas
            with workbook.open(info) as part:
                cost += CELL_BYTES * _cells_spanned(part)
        return cost


def _cells_spanned(part) -> int:
    """Rows x columns of the rectangle a sheet's cells (and its ``<dimension>``) span."""
    rows = columns = row = column = 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal rows, columns, row, column
        tag = name.rsplit(" ", 1)[-1]
        if tag == "row":
            row = _number(attributes.get("r"), row + 1)
            rows, column = max(rows, row), 0
        elif tag == "c":
            ref = _CELL_REF.match(attributes.get("r", ""))
            column = _column(ref.group(1)) if ref else column + 1
            columns = max(columns, column)
        elif tag == "dimension":
            end = attributes.get("ref", "").rsplit(":", 1)[-1]
            ref = _CELL_REF.match(end)
            if ref:
                columns = max(columns, _column(ref.group(1)))
                rows = max(rows, int(ref.group(2)))

    def doctype(*_: object) -> None:
        raise _Refused("an XML DOCTYPE (entity definitions)")

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    parser.StartDoctypeDeclHandler = doctype
    while chunk := part.read(1 << 20):
        parser.Parse(chunk, False)
    parser.Parse(b"", True)
    return rows * columns


def _number(text: str | None, default: int) -> int:
    return int(text) if text is not None and text.isdigit() and len(text) <= 7 else default


def _column(letters: str) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + ord(letter) - ord("A") + 1
    return number
