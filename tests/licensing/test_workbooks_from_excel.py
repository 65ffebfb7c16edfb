"""Workbooks as Excel writes them: a sheet is read as the clerk sees it, and a damaged one is refused."""

import io
import zipfile

import openpyxl
import pytest

from licensing.models import Agreement, Order
from licensing.sheets import SheetError, open_sheet
from licensing.xlsx import unpacked_bytes
from tenants.models import Customer
from tests.licensing import hostile
from tests.licensing.sheets import ORDER_HEADER, order_row

pytestmark = pytest.mark.django_db


def saved(workbook) -> bytes:
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def orders_sheet(sheet, **overrides) -> None:
    sheet.append(ORDER_HEADER)
    sheet.append(list(order_row(**overrides).values()))


def test_a_workbook_zip_feature_nobody_reads_is_refused_as_unreadable_not_an_error():
    workbook = openpyxl.Workbook()
    orders_sheet(workbook.active)
    data = bytearray(saved(workbook))
    # The zip directory asks for a "version needed to extract" of 23.3, which no reader knows.
    entry = data.find(b"PK\x01\x02")
    data[entry + 6] = 233

    with pytest.raises(SheetError, match="not a readable Excel workbook"):
        unpacked_bytes(io.BytesIO(bytes(data)))
    with pytest.raises(SheetError, match="not a readable Excel workbook"):
        list(open_sheet(io.BytesIO(bytes(data)), file_name="orders.xlsx").rows)


def test_the_first_visible_sheet_is_read_not_a_hidden_one_before_it(import_orders):
    workbook = openpyxl.Workbook()
    hidden = workbook.active
    hidden.title = "old"
    orders_sheet(hidden, Quantity="99")
    hidden.sheet_state = "hidden"
    lists = workbook.create_sheet("Lists")
    lists.append(["OL", "OV", "OVS"])
    lists.sheet_state = "veryHidden"
    orders_sheet(workbook.create_sheet("Orders"), Quantity="5")
    workbook.active = 2

    report = import_orders(saved(workbook), name="orders.xlsx")

    assert not report.errors
    assert Order.objects.get().lines.get().quantity == 5


def test_a_workbook_with_only_hidden_sheets_is_refused():
    workbook = openpyxl.Workbook()
    orders_sheet(workbook.active)
    data = io.BytesIO()
    # openpyxl will not save such a workbook: its workbook part is edited as another program might write it.
    with zipfile.ZipFile(io.BytesIO(saved(workbook))) as source, zipfile.ZipFile(data, "w") as target:
        for name in source.namelist():
            part = source.read(name)
            if name == "xl/workbook.xml":
                assert part.count(b'state="visible"') == 1
                part = part.replace(b'state="visible"', b'state="hidden"')
            target.writestr(name, part)

    with pytest.raises(SheetError, match="no visible worksheet"):
        open_sheet(io.BytesIO(data.getvalue()), file_name="orders.xlsx")


def test_numbers_excel_shows_with_leading_zeros_keep_them(import_orders):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    orders_sheet(sheet, **{"License Number": 80000102, "Agreement Number": 9100102})
    # Excel's "0000000000" custom format: the cell holds 80000102 and shows 0080000102.
    sheet["A2"].number_format = sheet["E2"].number_format = "0000000000"

    report = import_orders(saved(workbook), name="orders.xlsx")

    assert not report.errors
    assert Order.objects.get().license_number == "0080000102"
    assert Agreement.objects.get().number == "0009100102"


def test_characters_excel_writes_escaped_are_read_as_the_cell_shows_them(tmp_path, import_orders):
    # Excel keeps a carriage return in a cell as _x000D_ (here in its shared strings, as Excel writes text),
    # and a text that only looks like such an escape with its underscore escaped: _x005F_x0041_.
    values = hostile.order_values(**{"PO Number": "PO_x005F_x0041_7"})
    customer = ORDER_HEADER.index("Customer") + 1
    cells = b"".join(
        hostile.cell_xml(2, column, "0", shared=True) if column == customer else hostile.cell_xml(2, column, value)
        for column, value in enumerate(values, start=1)
        if value != ""
    )
    strings = f'<sst xmlns="{hostile.MAIN_NS}"><si><t>Northwind Traders_x000D_</t></si></sst>'.encode()
    path = tmp_path / "escaped.xlsx"
    hostile.write_xlsx(
        path, hostile.sheet_xml([hostile.row_xml(1, ORDER_HEADER), b'<row r="2">' + cells + b"</row>"]), [strings]
    )

    report = import_orders(path.read_bytes(), name="orders.xlsx")

    assert not report.errors
    assert Customer.objects.get().name == "Northwind Traders"  # the carriage return is surrounding space
    assert Order.objects.get().po_number == "PO_x0041_7"
