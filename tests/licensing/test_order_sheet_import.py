"""Importing order sheets: what is accepted, what is rejected, and that the whole file applies or nothing does."""

import io
import re
import zipfile
from datetime import date

import openpyxl
import pytest
from django.db import IntegrityError
from django.utils import timezone

from licensing.importing import base as importing_base
from licensing.models import Agreement, ImportJob, Order, OrderLine, Product
from tenants.models import Customer, Partner
from tests.factories import AgreementFactory, CustomerFactory, OrderLineFactory, PartnerFactory, TenantFactory
from tests.licensing.sheets import ORDER_HEADER, agreement_row, csv_bytes, order_row, xlsx_bytes

pytestmark = pytest.mark.django_db

ENCODINGS = ["utf-8", "utf-8-sig", "cp1252"]
SEPARATORS = [",", ";"]


def two_orders() -> list[dict]:
    return [
        order_row(),
        order_row(**{"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1", "Quantity": "5"}),
        order_row(
            **{
                "License Number": "60000002",
                "Order Date": "2026-10-15",
                "Start Date": "2026-10-15",
                "End Date": "2027-10-14",
                "Order Type": "Additional",
            }
        ),
    ]


def nothing_written() -> bool:
    return not (Order.objects.exists() or OrderLine.objects.exists() or Customer.objects.exists())


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("delimiter", SEPARATORS)
def test_order_sheet_creates_everything_in_any_encoding_and_separator(import_orders, encoding, delimiter, superuser):
    report = import_orders(csv_bytes(two_orders(), encoding=encoding, delimiter=delimiter), user=superuser)

    assert report.errors == []
    assert (report.new, report.updated, report.unchanged) == (3, 0, 0)
    customer = Customer.objects.get()
    assert customer.name == "Société Générale Café"
    assert Partner.objects.get().mpn_id == "4412345"
    assert Product.objects.get(part_number="Q5Y-00001").description == "O365 E3, ShrdSvr\nAnnual"
    assert OrderLine.objects.count() == 3
    agreement = Agreement.objects.get()
    # Introduced only by the sheet: starts on its earliest order date and runs the program's term.
    assert agreement.starts_on == date(2026, 10, 15)
    assert agreement.ends_on == date(2029, 10, 15)
    assert agreement.customer == customer


def _earlier_order() -> dict:
    return order_row(
        **{
            "License Number": "60000002",
            "Order Date": "2026-10-15",
            "Start Date": "2026-10-15",
            "End Date": "2027-10-14",
        }
    )


def test_an_agreement_met_only_in_order_sheets_starts_on_its_earliest_order_date_whichever_file_came_first(
    import_orders,
):
    import_orders(csv_bytes([order_row()]))
    assert Agreement.objects.get().starts_on == date(2026, 11, 1)

    preview = import_orders(csv_bytes([_earlier_order()]), dry_run=True)
    report = import_orders(csv_bytes([_earlier_order()]))

    assert preview.errors == report.errors == []
    assert (report.new, report.updated) == (1, 0)
    agreement = Agreement.objects.get()
    assert (agreement.starts_on, agreement.ends_on) == (date(2026, 10, 15), date(2029, 10, 15))
    # The same as the two files in the other order, or as one file.
    assert agreement.history.first().history_type == "~"
    again = import_orders(csv_bytes([order_row()]))
    assert (again.new, again.updated, again.unchanged) == (0, 0, 1)
    assert Agreement.objects.get().starts_on == date(2026, 10, 15)


def test_an_agreement_the_agreements_sheet_named_keeps_its_dates_whatever_the_order_dates(
    import_orders, import_agreements
):
    import_orders(csv_bytes([order_row()]))
    import_agreements(
        csv_bytes(
            [
                agreement_row(
                    **{"Agreement Number": order_row()["Agreement Number"], "Customer": order_row()["Customer"]}
                )
            ]
        )
    )
    assert Agreement.objects.get().starts_on == date(2026, 1, 1)
    import_orders(csv_bytes([order_row(**{"License Number": "60000003", "Order Date": "2025-12-01"})]))
    assert (Agreement.objects.get().starts_on, Agreement.objects.get().ends_on) == (
        date(2026, 1, 1),
        date(2028, 12, 31),
    )


def test_import_is_recorded_with_who_which_file_and_what_changed(import_orders, superuser):
    report = import_orders(csv_bytes(two_orders()), user=superuser, name="monday.csv")

    job = ImportJob.objects.get(pk=report.job_id)
    assert (job.file_name, job.created_by, job.status, job.new_count) == ("monday.csv", superuser, "done", 3)
    history = OrderLine.history.first()
    assert history.history_user == superuser
    assert "monday.csv" in history.history_change_reason
    assert Order.history.filter(history_type="+").count() == 2


def test_reimporting_the_same_sheet_changes_nothing(import_orders):
    data = csv_bytes(two_orders())
    import_orders(data)
    history_rows = OrderLine.history.count() + Order.history.count() + Customer.history.count()

    report = import_orders(data)

    assert (report.new, report.updated, report.unchanged) == (0, 0, 3)
    assert OrderLine.history.count() + Order.history.count() + Customer.history.count() == history_rows


def test_corrected_sheet_updates_only_what_changed(import_orders):
    rows = two_orders()
    import_orders(csv_bytes(rows))
    rows[1]["Quantity"] = "7"

    report = import_orders(csv_bytes(rows))

    assert (report.new, report.updated, report.unchanged) == (0, 1, 2)
    assert OrderLine.objects.get(order__license_number="60000001", line_number=2).quantity == 7
    assert OrderLine.history.filter(history_type="~").count() == 1


def test_a_changed_reseller_email_is_reported_as_an_update(import_orders):
    import_orders(csv_bytes([order_row()]))
    corrected = csv_bytes([order_row(**{"Reseller Email": "licensing@contoso.example"})])

    preview = import_orders(corrected, dry_run=True)
    report = import_orders(corrected)

    assert (preview.new, preview.updated, preview.unchanged) == (0, 1, 0)
    assert (report.new, report.updated, report.unchanged) == (0, 1, 0)
    assert Partner.objects.get().email == "licensing@contoso.example"
    assert Partner.history.filter(history_type="~").count() == 1


def test_an_email_written_in_other_capitals_is_the_same_address_across_files(import_orders):
    import_orders(csv_bytes([order_row()]))
    shouting = csv_bytes(
        [order_row(**{"Customer Email": "IT@Societe.Example", "Reseller Email": "Orders@Contoso.example"})]
    )

    report = import_orders(shouting)

    assert report.errors == []
    assert (report.new, report.updated, report.unchanged) == (0, 0, 1)
    assert Customer.objects.get().email == "it@societe.example"
    assert Partner.objects.get().email == "orders@contoso.example"
    assert not Customer.history.filter(history_type="~").exists()


def test_an_email_written_in_other_capitals_is_the_same_address_within_a_file(import_orders):
    rows = [
        order_row(),
        order_row(**{"Line": "2", "Customer Email": "IT@SOCIETE.EXAMPLE", "Reseller Email": "ORDERS@contoso.example"}),
    ]

    report = import_orders(csv_bytes(rows))

    assert report.errors == []
    assert report.new == 2
    # The address as the file first wrote it.
    assert Customer.objects.get().email == "it@societe.example"


def test_a_different_email_in_the_same_file_is_still_a_conflict(import_orders):
    rows = [order_row(), order_row(**{"Line": "2", "Customer Email": "it2@societe.example"})]

    report = import_orders(csv_bytes(rows))

    assert [(e.row, e.column) for e in report.errors] == [(3, "Customer Email")]
    assert nothing_written()


def test_headers_match_in_any_order_case_and_spacing(import_orders):
    header = [f"  {h.upper()} " for h in reversed(ORDER_HEADER)]
    rows = [{f"  {k.upper()} ": v for k, v in order_row().items()}]

    report = import_orders(csv_bytes(rows, header=header))

    assert report.errors == []
    assert OrderLine.objects.get().quantity == 10


def test_us_dates_excel_numbers_and_trailing_empty_rows_are_read(import_orders):
    row = order_row(**{"Order Date": "11/1/2026", "Start Date": "11/1/2026", "End Date": "10/31/2027"})
    row.update({"Quantity": "10.0", "Line": "1.0", "Program": " open value "})

    report = import_orders(csv_bytes([row], extra_lines=",,,,,,,,,,,,,,,,,,\r\n\r\n , ,\r\n"))

    assert report.errors == []
    line = OrderLine.objects.get()
    assert (line.quantity, line.line_number, line.starts_on) == (10, 1, date(2026, 11, 1))


@pytest.mark.parametrize("quantity", ["1.000", "10.000", "1,000", "2.500"])
def test_a_quantity_with_a_thousands_separator_is_refused_not_read_as_a_few_seats(import_orders, quantity):
    # In a semicolon-separated sheet from Excel in much of Europe, 1.000 is a thousand seats.
    report = import_orders(csv_bytes([order_row(Quantity=quantity)], delimiter=";"))

    assert [str(error) for error in report.errors] == [
        f"row 2, column Quantity: '{quantity}' could be read two ways (a thousands separator or decimals): "
        "write the number without separators"
    ]
    assert not OrderLine.objects.exists()


def formula_workbook(cached: bytes | None) -> bytes:
    """An order sheet whose Quantity is the formula 5*2, with `cached` as the value Excel calculated (or none)."""
    row = {**order_row(), "Quantity": "=5*2"}
    out = io.BytesIO()
    workbook = openpyxl.Workbook()
    workbook.active.append(ORDER_HEADER)
    workbook.active.append([row[h] for h in ORDER_HEADER])
    workbook.save(out)
    if cached is None:
        return out.getvalue()
    source, patched = zipfile.ZipFile(io.BytesIO(out.getvalue())), io.BytesIO()
    with zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<f>5*2</f><v />", b"<f>5*2</f><v>" + cached + b"</v>")
            target.writestr(item, data)
    return patched.getvalue()


def test_a_formula_is_read_by_the_value_excel_calculated_and_refused_without_one(import_orders):
    refused = import_orders(formula_workbook(None), name="orders.xlsx")
    assert [str(error) for error in refused.errors] == [
        "row 2, column Quantity: the cell holds a formula with no calculated value (the workbook was not saved "
        "by Excel): open it in Excel and save it again"
    ]
    assert import_orders(formula_workbook(b"10"), name="orders.xlsx").errors == []
    assert OrderLine.objects.get().quantity == 10


def test_dates_in_a_built_in_east_asian_date_format_are_read(import_orders):
    # Japanese Excel writes 2026年11月1日 as a date serial in built-in format 31, which it never defines.
    header = ORDER_HEADER
    row = order_row()
    workbook = openpyxl.Workbook()
    workbook.active.append(header)
    workbook.active.append([date(2026, 11, 1) if h == "Order Date" else row[h] for h in header])
    workbook.active.cell(row=2, column=header.index("Order Date") + 1).number_format = 'yyyy"年"m"月"d"日"'
    out = io.BytesIO()
    workbook.save(out)
    source, patched = zipfile.ZipFile(io.BytesIO(out.getvalue())), io.BytesIO()
    with zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/styles.xml":
                custom = re.search(rb'<numFmt numFmtId="(\d+)" formatCode="yyyy&quot;[^>]*/>', data)
                used = b'numFmtId="' + custom.group(1) + b'"'
                data = data.replace(custom.group(0), b"").replace(used, b'numFmtId="31"')
            target.writestr(item, data)

    report = import_orders(patched.getvalue(), name="orders.xlsx")

    assert report.errors == []
    assert Order.objects.get().ordered_on == date(2026, 11, 1)


@pytest.mark.parametrize("name", ["orders.csv", "orders.xlsx"])
def test_dates_with_surrounding_spaces_are_read(import_orders, name):
    row = order_row(**{"Order Date": " 2026-11-01", "Start Date": "\xa011/1/2026", "End Date": "2027-10-31\xa0 "})
    data = xlsx_bytes([[row[h] for h in ORDER_HEADER]], ORDER_HEADER) if name.endswith("xlsx") else csv_bytes([row])

    report = import_orders(data, name=name)

    assert report.errors == []
    line = OrderLine.objects.get()
    assert (line.order.ordered_on, line.starts_on, line.ends_on) == (
        date(2026, 11, 1),
        date(2026, 11, 1),
        date(2027, 10, 31),
    )


def test_xlsx_from_excel_is_imported(import_orders):
    values = [order_row()[h] for h in ORDER_HEADER]
    values[0] = 60000001.0  # Excel keeps numbers as floats
    values[1] = 1.0
    values[2] = date(2026, 11, 1)
    values[12] = 10.0
    values[14] = date(2026, 11, 1)
    values[15] = date(2027, 10, 31)

    report = import_orders(xlsx_bytes([values, [None] * 19], ORDER_HEADER), name="orders.xlsx")

    assert report.errors == []
    line = OrderLine.objects.get()
    assert (line.order.license_number, line.quantity, line.ends_on) == ("60000001", 10, date(2027, 10, 31))


def test_unknown_tenant_domain_is_kept_as_the_suggested_tenant(import_orders):
    import_orders(csv_bytes([order_row(**{"Tenant Domain": "SocieteCafe.onmicrosoft.com"})]))

    assert Order.objects.get().suggested_tenant_domain == "societecafe.onmicrosoft.com"


def test_order_level_blank_on_one_line_takes_the_orders_value(import_orders):
    rows = [order_row(), order_row(**{"Line": "2", "Customer": "", "Order Date": "", "PO Number": ""})]

    report = import_orders(csv_bytes(rows))

    assert report.errors == []
    assert Order.objects.get().lines.count() == 2


# --- rejections -------------------------------------------------------------------------------------

REJECTIONS = [
    ({"Customer Email": ""}, "Customer Email", "a value is required"),
    ({"Program": "Select Plus"}, "Program", "is not a program"),
    ({"Order Type": "Upgrade"}, "Order Type", "is not an order type"),
    ({"Quantity": "0"}, "Quantity", "is not a positive whole number"),
    ({"Quantity": "2.5"}, "Quantity", "is not a positive whole number"),
    ({"Quantity": "ten"}, "Quantity", "is not a positive whole number"),
    ({"End Date": "2026-11-01"}, "End Date", "the end date must be after the start date"),
    ({"Start Date": "31/12/2026"}, "Start Date", "is not a date"),
    ({"Customer Email": "it@@example"}, "Customer Email", "is not a valid email address"),
    ({"Tenant Domain": "contoso.com"}, "Tenant Domain", "is not a tenant domain"),
]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252"])
@pytest.mark.parametrize("delimiter", SEPARATORS)
@pytest.mark.parametrize(("change", "column", "reason"), REJECTIONS)
def test_bad_row_is_rejected_with_row_column_and_reason_and_nothing_is_written(
    import_orders, change, column, reason, encoding, delimiter
):
    rows = [order_row(**{"License Number": "60000009"}), order_row(**change)]

    report = import_orders(csv_bytes(rows, encoding=encoding, delimiter=delimiter))

    assert [str(e).split(":")[0] for e in report.errors] == [f"row 3, column {column}"]
    assert reason in report.errors[0].message
    assert nothing_written()


@pytest.mark.parametrize("program", ["Open License", "OL", " ol "])
def test_open_license_row_without_authorization_number_is_rejected(import_orders, program):
    rows = [
        order_row(Program=program, **{"Authorization Number": "87213456AB"}),
        order_row(Program=program, **{"Line": "2", "Part Number": "AAA-00002", "Authorization Number": ""}),
    ]

    report = import_orders(csv_bytes(rows))

    assert [str(e) for e in report.errors] == [
        "row 3, column Authorization Number: a value is required for an Open License (OL) order"
    ]
    assert nothing_written()


def test_open_value_rows_need_no_authorization_number(import_orders):
    report = import_orders(csv_bytes([order_row(Program="OVS", **{"Authorization Number": ""})]))

    assert report.errors == []
    assert Agreement.objects.get().authorization_number == ""


def test_every_rejected_row_is_reported(import_orders):
    rows = [order_row(**{"Quantity": "-1"}), order_row(**{"Line": "2", "Order Type": "x", "Quantity": "0"})]

    report = import_orders(csv_bytes(rows))

    assert [str(e).rsplit(":", 1)[0].split(":")[0] for e in report.errors] == [
        "row 2, column Quantity",
        "row 3, column Quantity",
        "row 3, column Order Type",
    ] or sorted((e.row, e.column) for e in report.errors) == [(2, "Quantity"), (3, "Order Type"), (3, "Quantity")]


def test_same_license_and_line_twice_with_different_content_is_rejected(import_orders):
    report = import_orders(csv_bytes([order_row(), order_row(**{"Quantity": "11"})]))

    assert [(e.row, e.column) for e in report.errors] == [(3, "Line")]
    assert "row 2" in report.errors[0].message
    assert nothing_written()


def test_same_line_twice_with_the_same_content_is_accepted_once(import_orders):
    report = import_orders(csv_bytes([order_row(), order_row()]))

    assert report.errors == []
    assert OrderLine.objects.count() == 1


def test_agreement_number_of_another_customer_is_rejected(import_orders):
    AgreementFactory(number="V1000001", customer__name="Someone Else")

    report = import_orders(csv_bytes([order_row()]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Agreement Number")]
    assert "Someone Else" in report.errors[0].message
    assert not Order.objects.exists()


@pytest.mark.parametrize(("held", "written"), [("V1000001", "v1000001"), ("v1000001", " V1000001 ")])
def test_an_agreement_number_in_another_case_is_the_same_agreement(import_orders, held, written):
    AgreementFactory(number=held, customer__name="Someone Else")

    report = import_orders(csv_bytes([order_row(**{"Agreement Number": written})]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Agreement Number")]
    assert "Someone Else" in report.errors[0].message
    assert Agreement.objects.count() == 1 and not Order.objects.exists()


def test_a_new_agreement_number_is_held_in_capitals(import_orders):
    assert import_orders(csv_bytes([order_row(**{"Agreement Number": "v1000009"})])).errors == []
    assert list(Agreement.objects.values_list("number", flat=True)) == ["V1000009"]


def test_tenant_domain_of_another_customer_is_rejected(import_orders):
    TenantFactory(default_domain="othertenant.onmicrosoft.com", customer__name="Other Customer")

    report = import_orders(csv_bytes([order_row(**{"Tenant Domain": "othertenant.onmicrosoft.com"})]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Tenant Domain")]
    assert "Other Customer" in report.errors[0].message
    assert not Order.objects.exists()


def test_mpn_id_of_another_partner_is_rejected(import_orders):
    PartnerFactory(mpn_id="4412345", name="Fabrikam IT Services")

    report = import_orders(csv_bytes([order_row()]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Reseller MPN ID")]
    assert "Fabrikam IT Services" in report.errors[0].message


def test_customer_name_matches_without_regard_to_case_and_spaces(import_orders):
    customer = CustomerFactory(
        name="Société Générale Café", partner__mpn_id="4412345", partner__name="Contoso Reseller Ltd"
    )

    report = import_orders(csv_bytes([order_row(Customer="  SOCIÉTÉ GÉNÉRALE CAFÉ ")]))

    assert report.errors == []
    assert Customer.objects.get() == customer
    assert Order.objects.get().agreement.customer == customer


@pytest.mark.parametrize(
    "name",
    [
        "Ärztekammer Wien",
        "ÉCOLE POLYTECHNIQUE",
        "Østfold Kraft AS",
        "ΟΜΙΛΟΣ ΕΠΙΧΕΙΡΗΣΕΩΝ ΑΕ",  # noqa: RUF001 (Greek, as written)
        "İSTANBUL BİLİŞİM A.Ş.",
    ],
)
def test_reimporting_a_customer_named_beyond_ascii_changes_nothing(import_orders, name):
    import_orders(csv_bytes([order_row(Customer=name)]))
    customer_history = Customer.history.count()

    preview = import_orders(csv_bytes([order_row(Customer=name)]), dry_run=True)
    report = import_orders(csv_bytes([order_row(Customer=name)]))
    other_case = import_orders(csv_bytes([order_row(Customer=name.lower(), **{"License Number": "60000009"})]))

    assert (preview.errors, preview.unchanged) == ([], 1)
    assert (report.errors, report.new, report.updated, report.unchanged) == ([], 0, 0, 1)
    assert (other_case.errors, other_case.new) == ([], 1)
    assert Customer.objects.get().name == name
    assert Customer.history.count() == customer_history
    assert Order.objects.filter(agreement__customer__name=name).count() == 2


def test_order_line_with_seats_bound_is_never_silently_changed(import_orders):
    import_orders(csv_bytes([order_row()]))
    OrderLine.objects.update(seats_allocated=4, seats_requested_at=timezone.now())

    report = import_orders(csv_bytes([order_row(Quantity="12")]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Quantity")]
    assert "already has seats requested or bound (4 held)" in report.errors[0].message
    assert OrderLine.objects.get().quantity == 10


def test_order_line_with_seats_bound_reimports_unchanged(import_orders):
    data = csv_bytes([order_row()])
    import_orders(data)
    OrderLine.objects.update(seats_allocated=10)

    report = import_orders(data)

    assert report.errors == [] and report.unchanged == 1


def test_existing_bound_line_from_factory_rejects_a_change(import_orders):
    line = OrderLineFactory(seats_allocated=2, quantity=10)
    order, agreement = line.order, line.order.agreement
    row = order_row(
        **{
            "License Number": order.license_number,
            "Line": str(line.line_number),
            "Agreement Number": agreement.number,
            "Customer": agreement.customer.name,
            "Reseller": agreement.partner.name,
            "Reseller MPN ID": agreement.partner.mpn_id,
            "Part Number": line.product.part_number,
            "Quantity": "3",
        }
    )

    report = import_orders(csv_bytes([row]))

    assert report.errors and report.errors[0].column == "Quantity"
    line.refresh_from_db()
    assert line.quantity == 10


def test_dry_run_reports_the_same_and_writes_nothing(import_orders):
    report = import_orders(csv_bytes(two_orders()), dry_run=True)

    assert (report.new, report.errors) == (3, [])
    assert nothing_written()
    assert not ImportJob.objects.exists()


# --- whole-file refusals ----------------------------------------------------------------------------


def test_sheet_without_required_columns_is_refused_by_column(import_orders):
    header = [h for h in ORDER_HEADER if h not in ("Quantity", "Order Type")]

    report = import_orders(csv_bytes([order_row()], header=header))

    assert [str(e) for e in report.errors] == [
        "row 1, column Quantity: this required column is missing from the header",
        "row 1, column Order Type: this required column is missing from the header",
    ]


def header_on_row_3(header: list[str], name: str) -> bytes:
    if name.endswith("csv"):
        return b"\r\n,,\r\n" + ",".join(header).encode() + b"\r\n"
    workbook = openpyxl.Workbook()
    for column, label in enumerate(header, start=1):
        workbook.active.cell(row=3, column=column, value=label)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


@pytest.mark.parametrize("name", ["orders.csv", "orders.xlsx"])
def test_a_header_below_blank_rows_is_named_by_its_own_row(import_orders, name):
    missing = header_on_row_3([h for h in ORDER_HEADER if h != "Quantity"], name)
    assert [str(e) for e in import_orders(missing, name=name).errors] == [
        "row 3, column Quantity: this required column is missing from the header"
    ]
    empty = header_on_row_3(ORDER_HEADER, name)
    assert [str(e) for e in import_orders(empty, name=name).errors] == ["row 4: the sheet has a header but no rows"]


def test_a_duplicate_another_import_wrote_meanwhile_is_explained_and_nothing_is_written(import_orders, monkeypatch):
    def raced(self, *args, **kwargs):
        # What PostgreSQL answers when another import added the same customer after this one checked.
        raise IntegrityError('duplicate key value violates unique constraint "customer_name_key_unique"\nDETAIL: …')

    monkeypatch.setattr(importing_base.SheetImporter, "write_parents", raced)

    report = import_orders(csv_bytes([order_row()]))

    assert [str(error) for error in report.errors] == [
        "The database refused this import's write: another import or a person most likely added the same records "
        'while it ran (duplicate key value violates unique constraint "customer_name_key_unique"). Nothing was '
        "written; import the file again, it will find them."
    ]
    assert not Customer.objects.exists() and not OrderLine.objects.exists()


def test_a_title_above_the_header_is_named_as_the_row_taken_for_it(import_orders):
    data = b"Contoso order export, November\r\n" + csv_bytes([order_row()])

    report = import_orders(data)

    assert len(report.errors) == 1
    assert str(report.errors[0]).startswith(
        "row 1: this row, the first that is not blank, is taken as the header, but it names none of the 15 "
        "columns this sheet needs (missing: License Number, Line, Order Date"
    )
    assert "with the header as its first row (no title above it)" in report.errors[0].message


def test_header_only_sheet_is_refused(import_orders):
    report = import_orders(",".join(ORDER_HEADER).encode() + b"\r\n,,,\r\n")

    assert len(report.errors) == 1 and "no rows" in report.errors[0].message


# --- rows of one order far apart in a long file ----------------------------------------------------


@pytest.fixture(params=["records held", "records spilled"])
def small_batches(request, settings, monkeypatch):
    """Handle two rows per batch, so that the lines of one order are checked in different batches.

    Partners, customers, agreements, products and tenant domains stay in memory between batches, or (a file
    naming more than RECORDS_HELD_MAX of them) wait in the file state like the orders: both ways are checked.
    """
    settings.IMPORT_BATCH_SIZE = 2
    if request.param == "records spilled":
        monkeypatch.setattr(importing_base, "RECORDS_HELD_MAX", 0)


def far_apart(*rows: dict) -> list[dict]:
    """Put other orders' lines between the given rows, so that each falls in a batch of its own."""
    spread = []
    for index, row in enumerate(rows):
        spread.append(row)
        spread.append(order_row(**{"License Number": f"6100000{index}", "PO Number": f"PO-X{index}"}))
    return spread


@pytest.mark.parametrize("dry_run", [True, False])
def test_same_line_with_different_content_far_apart_is_rejected(import_orders, small_batches, dry_run):
    report = import_orders(csv_bytes(far_apart(order_row(), order_row(**{"Quantity": "11"}))), dry_run=dry_run)

    assert [(e.row, e.column) for e in report.errors] == [(4, "Line")]
    assert "also on row 2" in report.errors[0].message
    assert nothing_written()


def test_same_line_with_the_same_content_far_apart_is_accepted_once(import_orders, small_batches):
    report = import_orders(csv_bytes(far_apart(order_row(), order_row())))

    assert report.errors == []
    assert (report.new, report.unchanged) == (3, 1)
    assert OrderLine.objects.filter(order__license_number="60000001").count() == 1


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(("column", "value"), [("PO Number", "PO-OTHER"), ("Agreement Number", "V1000002")])
def test_order_level_conflict_far_apart_names_the_first_row(import_orders, small_batches, column, value, dry_run):
    rows = far_apart(order_row(), order_row(**{"Line": "2", column: value}))

    report = import_orders(csv_bytes(rows), dry_run=dry_run)

    assert [(e.row, e.column) for e in report.errors] == [(4, column)]
    # What the first row says, too: the clerk need not look it up.
    assert f"differs from row 2, which says {order_row()[column]!r}" in report.errors[0].message
    assert nothing_written()


def test_order_level_blank_far_apart_takes_the_orders_value_from_an_earlier_row(import_orders, small_batches):
    blank = {"Line": "2", "Customer": "", "Order Date": "", "Agreement Number": "", "Program": "", "PO Number": ""}
    rows = far_apart(order_row(**{"Tenant Domain": "cafe.onmicrosoft.com"}), order_row(**blank))

    report = import_orders(csv_bytes(rows))

    assert report.errors == []
    order = Order.objects.get(license_number="60000001")
    assert [line.line_number for line in order.lines.order_by("line_number")] == [1, 2]
    assert (order.po_number, order.suggested_tenant_domain) == ("PO-1", "cafe.onmicrosoft.com")


BLANK_ORDER_LEVEL = {
    "Order Date": "",
    "Program": "",
    "Agreement Number": "",
    "Reseller": "",
    "Customer": "",
    "PO Number": "",
    "Tenant Domain": "",
}


@pytest.mark.parametrize("dry_run", [True, False])
def test_order_level_blank_far_apart_takes_the_orders_value_from_a_later_row(import_orders, small_batches, dry_run):
    # The blank line comes first; the line stating the order's values is in a later batch of the file.
    rows = far_apart(
        order_row(**BLANK_ORDER_LEVEL | {"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1"}),
        order_row(**{"Tenant Domain": "cafe.onmicrosoft.com"}),
    )

    report = import_orders(csv_bytes(rows), dry_run=dry_run)

    assert report.errors == []
    assert (report.new, report.updated, report.unchanged) == (4, 0, 0)
    if not dry_run:
        order = Order.objects.get(license_number="60000001")
        assert [line.line_number for line in order.lines.order_by("line_number")] == [1, 2]
        assert (order.ordered_on, order.po_number, order.suggested_tenant_domain) == (
            date(2026, 11, 1),
            "PO-1",
            "cafe.onmicrosoft.com",
        )
        assert (order.agreement.number, order.agreement.customer.name) == ("V1000001", "Société Générale Café")


def test_order_level_blank_taking_a_later_rows_value_imports_the_same_in_preview_and_confirm(
    import_orders, small_batches
):
    rows = far_apart(
        order_row(**{"Line": "3", "Customer": "", "PO Number": "", "Agreement Number": ""}),
        order_row(**{"Line": "2", "Order Date": "", "Program": "", "Reseller": ""}),
        order_row(),
    )

    dry = import_orders(csv_bytes(rows), dry_run=True)
    real = import_orders(csv_bytes(rows))
    again = import_orders(csv_bytes(rows))

    assert dry.errors == real.errors == again.errors == []
    assert (dry.new, dry.updated, dry.unchanged) == (real.new, real.updated, real.unchanged) == (6, 0, 0)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 6)
    assert Order.objects.get(license_number="60000001").lines.count() == 3


@pytest.mark.parametrize("dry_run", [True, False])
def test_order_level_conflict_after_a_blank_names_the_row_that_states_the_value(import_orders, small_batches, dry_run):
    rows = far_apart(
        order_row(**{"Line": "2", "Order Date": ""}),
        order_row(),
        order_row(**{"Line": "3", "Order Date": "2026-11-02"}),
    )

    report = import_orders(csv_bytes(rows), dry_run=dry_run)

    assert [(e.row, e.column) for e in report.errors] == [(6, "Order Date")]
    assert "'2026-11-02' differs from row 4, which says '2026-11-01'" in report.errors[0].message
    assert nothing_written()


def test_an_order_level_blank_with_no_value_anywhere_in_the_file_is_still_required(import_orders, small_batches):
    rows = far_apart(order_row(Customer=""), order_row(**{"Line": "2", "Customer": ""}))

    report = import_orders(csv_bytes(rows))

    assert [(e.row, e.column, e.message) for e in report.errors] == [
        (2, "Customer", "a value is required"),
        (4, "Customer", "a value is required"),
    ]
    assert nothing_written()


def test_dry_run_of_a_long_file_reports_what_the_real_run_does(import_orders, small_batches):
    rows = far_apart(
        order_row(),
        order_row(**{"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1"}),
        order_row(**{"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1"}),
        order_row(**{"Line": "3", "Customer": "", "PO Number": ""}),
    )

    dry = import_orders(csv_bytes(rows), dry_run=True)
    real = import_orders(csv_bytes(rows))
    again = import_orders(csv_bytes(rows))

    assert dry.errors == real.errors == again.errors == []
    assert (dry.new, dry.updated, dry.unchanged) == (real.new, real.updated, real.unchanged) == (7, 0, 1)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 8)
    assert Order.objects.get(license_number="60000001").lines.count() == 3


# --- customers, agreements, partners, products and tenant domains far apart --------------------------

FABRIKAM = {
    "License Number": "62000001",
    "Agreement Number": "V5000001",
    "Customer": "Fabrikam",
    "Customer Email": "it@fabrikam.example",
    "Reseller": "Alpine Reseller",
    "Reseller MPN ID": "7700001",
    "Part Number": "ZZZ-00001",
    "Product": "O365 E5",
    "Tenant Domain": "fabrikam.onmicrosoft.com",
}
TAILSPIN = {"Agreement Number": "V5000002", "Customer": "Tailspin", "Customer Email": "it@tailspin.example"}


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(
    ("later", "column", "message"),
    [
        ({"Customer Email": "other@fabrikam.example"}, "Customer Email", "differs from row 2"),
        (
            TAILSPIN | {"Agreement Number": "V5000001", "Tenant Domain": ""},
            "Agreement Number",
            "is for customer 'Fabrikam' in row 2 of this file",
        ),
        ({"Reseller": "Other Reseller"}, "Reseller MPN ID", "belongs to 'Alpine Reseller' (as row 2 says)"),
        ({"Product": "O365 E1"}, "Product", "differs from row 2"),
        (TAILSPIN, "Tenant Domain", "is given for customer 'Fabrikam' on row 2"),
    ],
)
def test_a_record_stated_differently_far_apart_names_the_first_row(
    import_orders, small_batches, later, column, message, dry_run
):
    rows = far_apart(order_row(**FABRIKAM), order_row(**FABRIKAM | {"License Number": "62000002"} | later))

    report = import_orders(csv_bytes(rows), dry_run=dry_run)

    assert [(e.row, e.column) for e in report.errors] == [(4, column)]
    assert message in report.errors[0].message
    assert nothing_written()


def test_records_met_again_far_apart_are_written_once_and_the_dry_run_says_so(import_orders, small_batches):
    rows = far_apart(
        order_row(**FABRIKAM),
        order_row(**FABRIKAM | {"License Number": "62000002"}),
        # The order's agreement and customer come from its first line, two batches back.
        order_row(**FABRIKAM | {"Line": "2", "Agreement Number": "", "Customer": "", "Program": ""}),
    )

    dry = import_orders(csv_bytes(rows), dry_run=True)
    real = import_orders(csv_bytes(rows))

    assert dry.errors == real.errors == []
    assert (dry.new, dry.updated, dry.unchanged) == (real.new, real.updated, real.unchanged) == (6, 0, 0)
    assert Customer.objects.filter(name="Fabrikam").count() == 1
    agreement = Agreement.objects.get(number="V5000001")
    assert (agreement.customer.name, agreement.partner.mpn_id) == ("Fabrikam", "7700001")
    assert agreement.orders.count() == 2
    assert Order.objects.get(license_number="62000001").lines.count() == 2
    assert Product.objects.get(part_number="ZZZ-00001").description == "O365 E5"


# --- an order we hold, named again by a later file ------------------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_held_orders_new_line_with_order_level_blanks_takes_the_held_orders_values(import_orders, dry_run):
    import_orders(csv_bytes([order_row(**{"Tenant Domain": "cafe.onmicrosoft.com"})]))
    line = order_row(**BLANK_ORDER_LEVEL | {"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1"})

    report = import_orders(csv_bytes([line]), dry_run=dry_run)

    assert report.errors == []
    assert (report.new, report.updated, report.unchanged) == (1, 0, 0)
    order = Order.objects.get()
    assert order.lines.count() == (1 if dry_run else 2)
    assert (order.ordered_on, order.po_number, order.suggested_tenant_domain) == (
        date(2026, 11, 1),
        "PO-1",
        "cafe.onmicrosoft.com",
    )
    assert (Agreement.objects.count(), Customer.objects.count(), Partner.objects.count()) == (1, 1, 1)


def test_a_held_orders_lines_reimported_with_order_level_blanks_are_unchanged(import_orders, small_batches):
    rows = far_apart(order_row(), order_row(**{"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1"}))
    import_orders(csv_bytes(rows))
    history = Order.history.count() + OrderLine.history.count() + Agreement.history.count()
    blanked = far_apart(order_row(**BLANK_ORDER_LEVEL), order_row(**rows[2] | BLANK_ORDER_LEVEL))

    dry = import_orders(csv_bytes(blanked), dry_run=True)
    report = import_orders(csv_bytes(blanked))

    assert dry.errors == report.errors == []
    assert (dry.new, dry.updated, dry.unchanged) == (report.new, report.updated, report.unchanged) == (0, 0, 4)
    assert Order.history.count() + OrderLine.history.count() + Agreement.history.count() == history


def test_a_value_another_line_of_the_file_states_comes_before_the_held_orders(import_orders, small_batches):
    import_orders(csv_bytes([order_row()]))
    rows = far_apart(
        order_row(**{"Line": "2", "Part Number": "AAA-00002", "Order Date": "", "PO Number": ""}),
        order_row(**{"Order Date": "2026-10-20", "PO Number": "PO-2"}),
    )

    dry = import_orders(csv_bytes(rows), dry_run=True)
    report = import_orders(csv_bytes(rows))

    assert dry.errors == report.errors == []
    assert (dry.new, dry.updated, dry.unchanged) == (report.new, report.updated, report.unchanged)
    assert report.new == 3
    order = Order.objects.get(license_number="60000001")
    assert (order.ordered_on, order.po_number, order.lines.count()) == (date(2026, 10, 20), "PO-2", 2)


@pytest.mark.parametrize(
    ("change", "column", "message"),
    [
        ({"Customer": "Tailspin Toys"}, "Agreement Number", "belongs to customer 'Société Générale Café'"),
        ({"Program": "OVS"}, "Program", "is held as Open Value, not Open Value Subscription"),
    ],
)
def test_a_held_order_stated_differently_beside_blanks_is_still_refused(import_orders, change, column, message):
    import_orders(csv_bytes([order_row()]))
    line = order_row(**BLANK_ORDER_LEVEL | {"Line": "2", "Part Number": "AAA-00002", "Product": "O365 E1"} | change)

    report = import_orders(csv_bytes([line]))

    assert [(e.row, e.column) for e in report.errors] == [(2, column)]
    assert message in report.errors[0].message
    assert OrderLine.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "column", "message"),
    [
        (
            {"Customer": "Tailspin Toys"},
            "Agreement Number",
            "agreement V1000001 is for customer 'Société Générale Café' in row 2 of this file, not to this row's "
            "customer",
        ),
        ({"Program": "OVS"}, "Program", "agreement V1000001 is Open Value in row 2 of this file, not Open Value Sub"),
    ],
)
def test_an_agreement_this_file_brings_stated_differently_later_is_named_by_its_row(
    import_orders, change, column, message
):
    other = {"License Number": "60000002", "Customer Email": "it@tailspin.example"} | change

    report = import_orders(csv_bytes([order_row(), order_row(**other)]))

    assert [(e.row, e.column) for e in report.errors] == [(3, column)]
    assert message in report.errors[0].message
    assert not Agreement.objects.exists()


def test_a_blank_reseller_is_not_taken_from_a_held_order_of_another_mpn_id(import_orders):
    import_orders(csv_bytes([order_row()]))
    line = order_row(**{"Line": "2", "Part Number": "AAA-00002", "Reseller": "", "Reseller MPN ID": "4499999"})

    report = import_orders(csv_bytes([line]))

    assert [(e.row, e.column, e.message) for e in report.errors] == [(2, "Reseller", "a value is required")]
    assert not Partner.objects.filter(mpn_id="4499999").exists()


def test_agreement_dates_a_person_set_are_not_moved_by_order_dates(import_orders, client, superuser):
    from django.urls import reverse

    from tests.admin_forms import change_form_data

    import_orders(csv_bytes([order_row()]))
    agreement = Agreement.objects.get()
    client.force_login(superuser)
    url = reverse("admin:licensing_agreement_change", args=[agreement.pk])
    data = {**change_form_data(client.get(url)), "starts_on": "2026-12-01", "ends_on": "2029-11-30"}
    assert client.post(url, data).status_code == 302
    import_orders(csv_bytes([_earlier_order()]))
    agreement.refresh_from_db()
    assert (agreement.starts_on, agreement.ends_on) == (date(2026, 12, 1), date(2029, 11, 30))


def test_seats_requested_while_the_file_is_imported_refuse_the_change_of_their_line(import_orders, monkeypatch):
    from licensing.importing import OrderSheetImporter

    import_orders(csv_bytes([order_row()]))
    write_lines = OrderSheetImporter._write_lines

    def requested_meanwhile(self, new_lines, changed_lines):
        # A clerk's request commits after the import checked the line and before it writes it.
        OrderLine.objects.update(seats_allocated=5, seats_requested_at=timezone.now())
        return write_lines(self, new_lines, changed_lines)

    monkeypatch.setattr(OrderSheetImporter, "_write_lines", requested_meanwhile)
    report = import_orders(csv_bytes([order_row(Quantity="8")]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Line")]
    assert "were requested while this file was being imported (5 held)" in report.errors[0].message
    assert OrderLine.objects.get().quantity == 10
