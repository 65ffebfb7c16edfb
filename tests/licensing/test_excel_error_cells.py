"""A cell holding an Excel error (#N/A, #REF! ...) is refused by its row and column, never imported as text."""

import io
from datetime import date

import openpyxl
import pytest

from licensing.models import Agreement, Order, OrderLine
from tenants.models import Customer
from tests.licensing.sheets import AGREEMENT_HEADER, ORDER_HEADER, agreement_row, csv_bytes, order_row, xlsx_bytes

pytestmark = pytest.mark.django_db

EXCEL_ERRORS = [
    "#N/A",
    "#REF!",
    "#VALUE!",
    "#DIV/0!",
    "#NAME?",
    "#NULL!",
    "#NUM!",
    "#GETTING_DATA",
    "#SPILL!",
    "#CALC!",
]


def nothing_written() -> bool:
    return not (
        Order.objects.exists() or OrderLine.objects.exists() or Customer.objects.exists() or Agreement.objects.exists()
    )


def order_values(**overrides) -> list:
    """Return an order row as Excel holds it: numbers as numbers, dates as dates."""
    row = order_row(**overrides)
    values = [row[h] for h in ORDER_HEADER]
    for column, value in (("Order Date", date(2026, 11, 1)), ("Start Date", date(2026, 11, 1)),
                          ("End Date", date(2027, 10, 31)), ("Quantity", 10)):  # fmt: skip
        if column not in overrides:
            values[ORDER_HEADER.index(column)] = value
    return values


@pytest.mark.parametrize("error", EXCEL_ERRORS)
def test_an_excel_error_in_a_csv_from_excel_is_refused_naming_row_and_column(import_orders, error):
    rows = [order_row(**{"License Number": "60000009"}), order_row(Customer=error)]

    report = import_orders(csv_bytes(rows, encoding="cp1252", delimiter=";"))

    assert [str(e) for e in report.errors] == [f"row 3, column Customer: the cell holds the Excel error {error}"]
    assert nothing_written()


@pytest.mark.parametrize(
    "column",
    [
        "License Number",
        "Order Date",
        "Quantity",
        "Customer Email",
        "Tenant Domain",
        "PO Number",
        "Authorization Number",
    ],
)
def test_an_excel_error_is_refused_in_any_column_required_or_not(import_orders, column):
    report = import_orders(csv_bytes([order_row(**{column: " #n/a "})]))

    assert [str(e) for e in report.errors] == [f"row 2, column {column}: the cell holds the Excel error #N/A"]
    assert nothing_written()


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("error", EXCEL_ERRORS)
def test_an_excel_error_in_a_workbook_is_refused_naming_row_and_column(import_orders, error, dry_run):
    # openpyxl writes the classic errors as error cells (t="e"), the newer ones as text: both are refused.
    rows = [order_values(), order_values(Line=2, **{"PO Number": error})]

    report = import_orders(xlsx_bytes(rows, ORDER_HEADER), name="orders.xlsx", dry_run=dry_run)

    assert [str(e) for e in report.errors] == [f"row 3, column PO Number: the cell holds the Excel error {error}"]
    assert nothing_written()


def test_a_workbook_error_cell_is_refused_whatever_error_it_names(import_orders):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(ORDER_HEADER)
    sheet.append(order_values())
    cell = sheet.cell(row=2, column=ORDER_HEADER.index("Customer") + 1)
    # An error a later Excel may add: the cell's type says it is an error, whatever its text.
    cell.value, cell.data_type = "#FUTURE!", "e"
    out = io.BytesIO()
    workbook.save(out)

    report = import_orders(out.getvalue(), name="orders.xlsx")

    assert [str(e) for e in report.errors] == ["row 2, column Customer: the cell holds the Excel error #FUTURE!"]
    assert nothing_written()


def test_an_excel_error_on_an_order_level_cell_is_not_taken_as_the_orders_value(import_orders):
    rows = [order_row(Customer="#N/A"), order_row(**{"Line": "2", "Part Number": "AAA-00002", "Customer": ""})]

    report = import_orders(csv_bytes(rows))

    assert (report.errors[0].row, report.errors[0].column) == (2, "Customer")
    assert "the cell holds the Excel error #N/A" in report.errors[0].message
    assert nothing_written()


def test_text_that_merely_contains_a_hash_is_imported(import_orders):
    report = import_orders(csv_bytes([order_row(**{"Customer": "Café #N/A Holdings", "PO Number": "#REF!-7"})]))

    assert report.errors == []
    assert (Customer.objects.get().name, Order.objects.get().po_number) == ("Café #N/A Holdings", "#REF!-7")


@pytest.mark.parametrize("error", ["#N/A", "#VALUE!", "#SPILL!"])
def test_an_excel_error_in_an_agreements_sheet_csv_is_refused(import_agreements, error):
    rows = [agreement_row(**{"Agreement Number": "V2000009"}), agreement_row(**{"Customer Email": error})]

    report = import_agreements(csv_bytes(rows))

    assert [str(e) for e in report.errors] == [f"row 3, column Customer Email: the cell holds the Excel error {error}"]
    assert not Agreement.objects.exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_excel_error_in_an_agreements_workbook_is_refused(import_agreements, dry_run):
    values = [agreement_row()[h] for h in AGREEMENT_HEADER]
    values[-2], values[-1] = date(2026, 1, 1), date(2028, 12, 31)
    values[AGREEMENT_HEADER.index("Customer")] = "#REF!"

    report = import_agreements(xlsx_bytes([values], AGREEMENT_HEADER), name="agreements.xlsx", dry_run=dry_run)

    assert [str(e) for e in report.errors] == ["row 2, column Customer: the cell holds the Excel error #REF!"]
    assert not Agreement.objects.exists()
