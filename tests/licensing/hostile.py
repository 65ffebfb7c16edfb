"""Hostile sheets, written to disk a piece at a time: building one never needs the memory reading it once did."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from openpyxl.utils import get_column_letter

from tests.licensing.sheets import ORDER_HEADER, order_row

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
MB = 1 << 20

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
    "</Types>"
)
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="xl/workbook.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>'
    "</Relationships>"
)
WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<workbook xmlns="{MAIN_NS}" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Orders" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="worksheets/sheet1.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"/>'
    '<Relationship Id="rId2" Target="sharedStrings.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"/>'
    "</Relationships>"
)


NO_SHARED_STRINGS = f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{MAIN_NS}" count="0" uniqueCount="0"/>'.encode()


def write_xlsx(path: Path, sheet: Iterable[bytes], shared_strings: Iterable[bytes] = (NO_SHARED_STRINGS,)) -> int:
    """Write a one-sheet workbook whose sheet and shared-strings XML come in pieces; return the file's size."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", ROOT_RELS)
        archive.writestr("xl/workbook.xml", WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        for name, pieces in (("xl/worksheets/sheet1.xml", sheet), ("xl/sharedStrings.xml", shared_strings)):
            with archive.open(name, "w", force_zip64=True) as part:
                for piece in pieces:
                    part.write(piece)
    return path.stat().st_size


def sheet_xml(rows: Iterable[bytes]) -> Iterator[bytes]:
    """Return a worksheet's XML around its rows, with no <dimension> to tell the reader its size."""
    yield f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{MAIN_NS}"><sheetData>'.encode()
    yield from rows
    yield b"</sheetData></worksheet>"


def cell_xml(row: int, column: int, value: str, *, shared: bool = False) -> bytes:
    """Return one cell: inline text, or a reference to the shared string `value`."""
    ref = f"{get_column_letter(column)}{row}"
    if shared:
        return f'<c r="{ref}" t="s"><v>{value}</v></c>'.encode()
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(value)}</t></is></c>'.encode()


def row_xml(row: int, values: list[str]) -> bytes:
    cells = b"".join(cell_xml(row, column, v) for column, v in enumerate(values, start=1) if v != "")
    return f'<row r="{row}">'.encode() + cells + b"</row>"


def order_values(**overrides) -> list[str]:
    row = order_row(**overrides)
    return [row[h] for h in ORDER_HEADER]


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    """Return `total` bytes of `piece` over and over, a megabyte at a time."""
    block = piece * (MB // len(piece))
    for _ in range(total // len(block)):
        yield block


def data_cells(row: int = 2, **replaced: bytes) -> list[bytes]:
    """Return the cells of a valid order row, with some columns' cells given as raw XML."""
    cells = []
    for column, (name, value) in enumerate(zip(ORDER_HEADER, order_values(), strict=True), start=1):
        if name in replaced:
            cells.append(replaced[name])
        elif value:
            cells.append(cell_xml(row, column, value))
    return cells


def huge_shared_string_workbook(path: Path, chars: int = 250 * MB) -> int:
    """A workbook whose second row's Customer is one shared string of `chars` characters."""
    customer = ORDER_HEADER.index("Customer") + 1
    data = b"".join(data_cells(Customer=cell_xml(2, customer, "0", shared=True)))
    shared = [
        f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{MAIN_NS}" count="1" uniqueCount="1"><si><t>'.encode(),
        *repeated(b"A", chars),
        b"</t></si></sst>",
    ]
    return write_xlsx(path, sheet_xml([row_xml(1, ORDER_HEADER), b'<row r="2">' + data + b"</row>"]), shared)


def whitespace_padded_workbook(path: Path, spaces: int = 250 * MB) -> int:
    """A valid two-row workbook with `spaces` bytes of whitespace between two cells of its data row."""
    cells = data_cells()
    padded = b"".join(cells[:5]) + b"".join(repeated(b" \n\t", spaces)) + b"".join(cells[5:])
    return write_xlsx(path, sheet_xml([row_xml(1, ORDER_HEADER), b'<row r="2">' + padded + b"</row>"]))


def padded_cell_workbook(path: Path, spaces: int = 250 * MB) -> int:
    """A workbook whose Customer cell is a short name inside `spaces` bytes of spaces."""
    customer = ORDER_HEADER.index("Customer") + 1
    padding = b"".join(repeated(b" ", spaces // 2))
    cell = (
        f'<c r="{get_column_letter(customer)}2" t="inlineStr"><is><t xml:space="preserve">'.encode()
        + padding
        + b"Contoso"
        + padding
        + b"</t></is></c>"
    )
    data = b"".join(data_cells(Customer=cell))
    return write_xlsx(path, sheet_xml([row_xml(1, ORDER_HEADER), b'<row r="2">' + data + b"</row>"]))


def many_rows_workbook(path: Path, rows: int = 600_000) -> int:
    """A workbook of `rows` data rows that name a license, a line and nothing else: every row is rejected."""

    def data() -> Iterator[bytes]:
        yield row_xml(1, ORDER_HEADER)
        for number in range(2, rows + 2):
            yield row_xml(number, [str(60000000 + number), str(number % 4 + 1), "2026-11-01", "OV"])

    return write_xlsx(path, sheet_xml(data()))
