"""Files that are not sheets, too big, or XLSX bombs get one clear message."""

import io
import zipfile
from unittest.mock import ANY

import openpyxl
import pytest

from licensing.models import OrderLine
from licensing.sheets import SheetError, measure_sheet, open_sheet
from tests.licensing.sheets import ORDER_HEADER, csv_bytes, order_row, xlsx_bytes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"\r\n\r\n", "The file is empty."),
        (b"%PDF-1.4 binary", "not a sheet"),
        (b"\x00\x01\x02 abc", "not a sheet"),
        (b"just some words on a line\nand another\n", "not a sheet"),
        (b"PK\x03\x04 broken zip", "not a readable Excel workbook"),
    ],
)
def test_file_that_is_not_a_sheet_gets_one_clear_message(data, message):
    with pytest.raises(SheetError, match=message):
        open_sheet(io.BytesIO(data))


def test_file_over_the_size_limit_is_refused_before_it_is_read(settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 100

    with pytest.raises(SheetError, match="the limit is"):
        open_sheet(io.BytesIO(b"a,b\n" + b"1,2\n" * 100))


def test_xlsx_that_inflates_beyond_the_limit_is_refused(settings):
    settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES = 1_000_000
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("[Content_Types].xml", "<Types/>")
        bomb.writestr("xl/worksheets/sheet1.xml", "<a>" + "0" * 5_000_000 + "</a>")
    assert len(data.getvalue()) < 100_000

    with pytest.raises(SheetError, match="refused"):
        open_sheet(data)


def test_xlsx_with_too_many_rows_is_refused(settings):
    settings.IMPORT_MAX_ROWS = 3
    values = [order_row()[h] for h in ORDER_HEADER]
    sheet = open_sheet(io.BytesIO(xlsx_bytes([values] * 5, ORDER_HEADER)))

    with pytest.raises(SheetError, match="row 5: The sheet has more than 3 rows"):
        list(sheet.rows)


@pytest.mark.django_db
def test_xlsx_rows_are_counted_by_the_values_they_hold_not_by_the_last_row_formatted(import_orders, settings):
    settings.IMPORT_MAX_ROWS = 3
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(ORDER_HEADER)
    for line in range(1, 4):
        row = order_row(Line=str(line), **{"Part Number": f"AAA-0000{line}"})
        sheet.append([row[h] for h in ORDER_HEADER])
    # Excel keeps a formatted cell without a value, and declares the sheet down to it.
    sheet.cell(1_048_576, 1).number_format = "0.00"
    out = io.BytesIO()
    workbook.save(out)
    with zipfile.ZipFile(out) as archive:
        assert b'<dimension ref="A1:S1048576" />' in archive.read("xl/worksheets/sheet1.xml")

    report = import_orders(out.getvalue(), name="orders.xlsx")

    assert report.errors == []
    assert OrderLine.objects.count() == 3


def test_csv_with_too_many_rows_is_refused(settings):
    settings.IMPORT_MAX_ROWS = 3
    sheet = open_sheet(io.BytesIO(b"a,b\n" + b"1,2\n" * 5))

    with pytest.raises(SheetError, match="more than 3 rows"):
        list(sheet.rows)


def test_measuring_a_sheet_stops_past_the_bounds_it_is_given():
    data = csv_bytes([order_row(Line=str(n)) for n in range(1, 6)])

    assert measure_sheet(io.BytesIO(data)).rows == 5
    assert measure_sheet(io.BytesIO(data), rows_over=2) == (3, ANY, True)
    whole = measure_sheet(io.BytesIO(data))
    assert measure_sheet(io.BytesIO(data), chars_over=whole.chars // 2).more
    assert not measure_sheet(io.BytesIO(data), rows_over=5, chars_over=whole.chars).more
