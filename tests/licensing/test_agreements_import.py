from datetime import date

import pytest

from licensing.importing import base as importing_base
from licensing.models import Agreement
from tenants.models import Partner
from tests.factories import AgreementFactory
from tests.licensing.sheets import AGREEMENT_HEADER, agreement_row, csv_bytes, order_row, xlsx_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
@pytest.mark.parametrize("delimiter", [",", ";"])
def test_agreements_sheet_creates_agreements(import_agreements, encoding, delimiter):
    rows = [
        agreement_row(Customer="Café Müller"),
        agreement_row(
            **{
                "Agreement Number": "V2000002",
                "Program": "Open Value Subscription",
                "Start Date": "1/1/2026",
                "End Date": "12/31/2028",
            }
        ),
    ]

    report = import_agreements(csv_bytes(rows, encoding=encoding, delimiter=delimiter))

    assert report.errors == [] and report.new == 2
    agreement = Agreement.objects.get(number="V2000002")
    assert (agreement.program, agreement.starts_on, agreement.ends_on) == ("ovs", date(2026, 1, 1), date(2028, 12, 31))
    assert Agreement.objects.get(number="V2000001").customer.name == "Café Müller"
    assert agreement.osm_email == "admin@northwind.example"


def test_agreements_sheet_reimport_is_unchanged_and_a_correction_updates(import_agreements):
    import_agreements(csv_bytes([agreement_row()]))
    assert import_agreements(csv_bytes([agreement_row()])).unchanged == 1

    report = import_agreements(csv_bytes([agreement_row(**{"End Date": "2029-01-31"})]))

    assert (report.updated, report.unchanged) == (1, 0)
    assert Agreement.objects.get().ends_on == date(2029, 1, 31)


def test_a_blank_authorization_number_or_manager_email_keeps_what_the_agreement_holds(import_agreements):
    held = {"Program": "Open License", "Agreement Number": "L5000001", "Authorization Number": "AUTH-77"}
    import_agreements(csv_bytes([agreement_row(**held)]))
    blank = {**held, "Authorization Number": "", "Online Services Manager Email": ""}

    report = import_agreements(csv_bytes([agreement_row(**blank)]))

    assert (report.errors, report.updated, report.unchanged) == ([], 0, 1)
    agreement = Agreement.objects.get()
    assert (agreement.authorization_number, agreement.osm_email) == ("AUTH-77", "admin@northwind.example")
    corrected = import_agreements(csv_bytes([agreement_row(**{**held, "Authorization Number": "AUTH-78"})]))
    assert corrected.updated == 1 and Agreement.objects.get().authorization_number == "AUTH-78"


def test_an_order_sheet_uploaded_as_agreements_is_refused_before_its_dates_move_an_agreement(import_agreements):
    import_agreements(csv_bytes([agreement_row(**{"Agreement Number": "V1000001", "End Date": "2029-03-01"})]))

    report = import_agreements(csv_bytes([order_row(**{"Agreement Number": "V1000001", "End Date": "2027-02-28"})]))

    assert [str(error) for error in report.errors] == [
        "row 1: this is an order sheet (its header has License Number, Line, Part Number, Quantity, Order Type): "
        "import it as an order sheet; nothing was imported"
    ]
    assert Agreement.objects.get().ends_on == date(2029, 3, 1)


def test_agreements_sheet_reports_a_changed_reseller_email_as_an_update(import_agreements):
    import_agreements(csv_bytes([agreement_row()]))
    corrected = csv_bytes([agreement_row(**{"Reseller Email": "licensing@contoso.example"})])

    preview = import_agreements(corrected, dry_run=True)
    report = import_agreements(corrected)

    assert (preview.updated, preview.unchanged) == (1, 0)
    assert (report.updated, report.unchanged) == (1, 0)
    assert Partner.objects.get().email == "licensing@contoso.example"


def test_agreements_sheet_from_xlsx(import_agreements):
    values = [agreement_row()[h] for h in AGREEMENT_HEADER]
    values[-2], values[-1] = date(2026, 1, 1), date(2028, 12, 31)

    report = import_agreements(xlsx_bytes([values], AGREEMENT_HEADER))

    assert report.errors == [] and Agreement.objects.count() == 1


def test_agreement_number_of_another_customer_is_stopped(import_agreements):
    AgreementFactory(number="V2000001", customer__name="Someone Else")

    report = import_agreements(csv_bytes([agreement_row()]))

    assert [(e.row, e.column) for e in report.errors] == [(2, "Agreement Number")]
    assert Agreement.objects.get().customer.name == "Someone Else"


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"End Date": "2025-12-31"}, "End Date"),
        ({"Program": "Enterprise"}, "Program"),
        ({"Online Services Manager Email": "nobody"}, "Online Services Manager Email"),
        ({"Reseller MPN ID": ""}, "Reseller MPN ID"),
    ],
)
def test_bad_agreement_row_is_rejected(import_agreements, change, column):
    report = import_agreements(csv_bytes([agreement_row(**{"Agreement Number": "V9"}), agreement_row(**change)]))

    assert [(e.row, e.column) for e in report.errors] == [(3, column)]
    assert not Agreement.objects.exists()


@pytest.fixture(params=[10_000, 0])
def small_batches(request, settings, monkeypatch):
    """Two rows per batch; records held in memory between batches, or waiting in the file state."""
    settings.IMPORT_BATCH_SIZE = 2
    monkeypatch.setattr(importing_base, "RECORDS_HELD_MAX", request.param)


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_agreement_stated_differently_far_apart_names_the_first_row(import_agreements, small_batches, dry_run):
    other = {"Agreement Number": "V2000009", "Customer": "Tailspin", "Reseller MPN ID": "4400009", "Reseller": "Other"}
    rows = [agreement_row(), agreement_row(**other), agreement_row(**{"End Date": "2029-01-31"})]

    report = import_agreements(csv_bytes(rows), dry_run=dry_run)

    assert [(e.row, e.column) for e in report.errors] == [(4, "End Date")]
    assert "differs from row 2" in report.errors[0].message
    assert not Agreement.objects.exists()


def test_agreements_met_again_far_apart_are_written_once(import_agreements, small_batches):
    other = {"Agreement Number": "V2000009", "Customer": "Tailspin", "Reseller MPN ID": "4400009", "Reseller": "Other"}
    rows = [agreement_row(), agreement_row(**other), agreement_row()]

    report = import_agreements(csv_bytes(rows))

    assert report.errors == [] and (report.new, report.unchanged) == (2, 1)
    assert Agreement.objects.get(number="V2000001").customer.name == "Northwind Traders"
