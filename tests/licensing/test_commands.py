"""The import and export commands: summaries, exit codes, every error as `row N, column C: reason`."""

import csv

import openpyxl
import pytest
from django.core.management import CommandError, call_command

from licensing.models import Order, OrderLine
from tests.factories import OrderLineFactory
from tests.licensing.sheets import agreement_row, csv_bytes, order_row

pytestmark = pytest.mark.django_db


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_import_order_sheet_prints_a_summary(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", csv_bytes([order_row(), order_row(Line="2")]))

    call_command("import_order_sheet", path)
    call_command("import_order_sheet", path)

    out = capsys.readouterr().out
    assert "2 rows: 2 new, 0 updated, 0 unchanged" in out
    assert "2 rows: 0 new, 0 updated, 2 unchanged" in out
    assert OrderLine.objects.count() == 2


def test_import_order_sheet_with_errors_prints_each_and_exits_non_zero(tmp_path, capsys):
    rows = [order_row(Quantity="0"), order_row(Line="2", **{"Order Type": "Upgrade"})]
    path = write(tmp_path, "orders.csv", csv_bytes(rows, delimiter=";", encoding="cp1252"))

    with pytest.raises(CommandError, match="2 error") as error:
        call_command("import_order_sheet", path)

    # manage.py turns a CommandError into this exit status.
    assert error.value.returncode == 1
    err = capsys.readouterr().err
    assert "row 2, column Quantity: '0' is not a positive whole number" in err
    assert "row 3, column Order Type: 'Upgrade' is not an order type" in err
    assert not Order.objects.exists()


def test_import_command_raises_command_error_on_a_file_that_is_not_a_sheet(tmp_path):
    path = write(tmp_path, "notes.pdf", b"%PDF-1.4 not a sheet")

    with pytest.raises(CommandError, match="1 error"):
        call_command("import_order_sheet", path)


def test_dry_run_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, "orders.csv", csv_bytes([order_row()]))

    call_command("import_order_sheet", path, "--dry-run")

    assert "Dry run, nothing written: 1 rows: 1 new" in capsys.readouterr().out
    assert not Order.objects.exists()


def test_import_agreements_command(tmp_path, capsys):
    path = write(tmp_path, "agreements.csv", csv_bytes([agreement_row()]))

    call_command("import_agreements", path)

    assert "1 rows: 1 new" in capsys.readouterr().out


def test_export_order_sheet_csv_has_bom_and_neutralised_formulas(tmp_path):
    OrderLineFactory(order__po_number='=HYPERLINK("http://evil")', product__description="+cmd|' /C calc'!A0")
    OrderLineFactory(order__agreement__customer__name="@SUM(1+1)")
    path = str(tmp_path / "export.csv")

    call_command("export_order_sheet", path)

    raw = (tmp_path / "export.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert {r["PO Number"] for r in rows} >= {'\'=HYPERLINK("http://evil")'}
    assert "'+cmd|' /C calc'!A0" in {r["Product"] for r in rows}
    assert "'@SUM(1+1)" in {r["Customer"] for r in rows}
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())


def test_export_order_sheet_xlsx_neutralised_and_reimports_unchanged(tmp_path, capsys):
    call_command("import_order_sheet", write(tmp_path, "in.csv", csv_bytes([order_row(**{"PO Number": "-5"})])))
    path = str(tmp_path / "export.xlsx")

    call_command("export_order_sheet", path)

    sheet = openpyxl.load_workbook(path).active
    header = [c.value for c in sheet[1]]
    values = dict(zip(header, [c.value for c in sheet[2]], strict=True))
    assert values["PO Number"] == "'-5"
    assert sheet.cell(2, header.index("PO Number") + 1).data_type == "s"
    assert values["License Number"] == "60000001"
    capsys.readouterr()
    call_command("import_order_sheet", path)
    assert "1 rows: 0 new, 0 updated, 1 unchanged" in capsys.readouterr().out
    assert Order.objects.get().po_number == "-5"
