"""The admin: preview then confirm, large files through a worker, and safe exports."""

import csv
import io

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from licensing import tasks
from licensing.models import Agreement, ImportJob, Order, OrderLine
from licensing.services import import_job_run
from tests.factories import OrderLineFactory, SubscriptionFactory
from tests.licensing.sheets import agreement_row, csv_bytes, order_row

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, processor):
    client.force_login(processor)
    return client


def upload(client, url_name, data: bytes, name="orders.csv"):
    return client.post(
        reverse(url_name),
        {"format": "0", "resource": "0", "import_file": SimpleUploadedFile(name, data)},
    )


def test_admin_import_shows_a_preview_and_imports_only_on_confirm(staff_client):
    response = upload(staff_client, "admin:licensing_order_import", csv_bytes([order_row(), order_row(Line="2")]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "2 rows: 2 new, 0 updated, 0 unchanged, 0 errors." in page
    assert "Confirm import" in page
    assert not Order.objects.exists()

    confirm = response.context["confirm_form"].initial
    response = staff_client.post(reverse("admin:licensing_order_process_import"), confirm, follow=True)

    assert OrderLine.objects.count() == 2
    assert "2 new, 0 updated, 0 unchanged rows" in response.content.decode()
    job = ImportJob.objects.get()
    assert (job.file_name, job.created_by.username, job.status) == ("orders.csv", "processor", "done")
    assert job.confirmed_by == job.created_by  # checked and confirmed on the page by the same person


def test_an_order_sheet_imported_from_the_work_queue_returns_to_the_lines_still_to_bind(staff_client):
    response = upload(staff_client, "admin:licensing_orderline_import", csv_bytes([order_row()]))
    confirm = response.context["confirm_form"].initial

    done = staff_client.post(reverse("admin:licensing_orderline_process_import"), confirm)

    assert done.url == reverse("admin:licensing_orderline_changelist") + "?unbound=yes"


def test_admin_preview_of_the_same_file_again_says_unchanged(staff_client, import_orders):
    data = csv_bytes([order_row()])
    import_orders(data)

    response = upload(staff_client, "admin:licensing_orderline_import", data)

    assert "1 rows: 0 new, 0 updated, 1 unchanged" in response.content.decode()


def test_admin_import_lists_rejected_rows_and_offers_no_confirm(staff_client):
    data = csv_bytes([order_row(Quantity="0"), order_row(Line="2", **{"Customer Email": "x"})], delimiter=";")

    response = upload(staff_client, "admin:licensing_order_import", data)

    page = response.content.decode()
    assert "row 2, column Quantity: &#x27;0&#x27; is not a positive whole number" in page
    assert "row 3, column Customer Email:" in page
    assert "Confirm import" not in page
    assert not Order.objects.exists()


def test_admin_preview_and_confirm_take_an_order_level_blank_from_a_later_batch(staff_client, settings):
    settings.IMPORT_BATCH_SIZE = 2
    blank = {"Line": "2", "Part Number": "AAA-00002", "Customer": "", "Order Date": "", "Agreement Number": ""}
    rows = [order_row(**blank), order_row(**{"License Number": "61000001"}), order_row()]

    response = upload(staff_client, "admin:licensing_order_import", csv_bytes(rows))

    assert "3 rows: 3 new, 0 updated, 0 unchanged, 0 errors." in response.content.decode()
    confirm = response.context["confirm_form"].initial
    response = staff_client.post(reverse("admin:licensing_order_process_import"), confirm, follow=True)
    assert "3 new, 0 updated, 0 unchanged rows" in response.content.decode()
    assert Order.objects.get(license_number="60000001").lines.count() == 2


def test_a_worker_checks_and_imports_an_order_level_blank_from_a_later_batch(
    staff_client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.IMPORT_ASYNC_ROWS = 2
    settings.IMPORT_BATCH_SIZE = 2
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    blank = {"Line": "2", "Part Number": "AAA-00002", "Customer": "", "Program": "", "Reseller": ""}
    rows = [order_row(**blank), order_row(**{"License Number": "61000001"}), order_row()]

    with django_capture_on_commit_callbacks(execute=True):
        upload(staff_client, "admin:licensing_order_import", csv_bytes(rows))
    job = ImportJob.objects.get()
    assert (job.status, job.new_count, job.errors) == ("ready", 3, [])
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:licensing_importjob_confirm", args=[job.pk]))

    job.refresh_from_db()
    assert (job.status, job.new_count) == ("done", 3)
    assert Order.objects.get(license_number="60000001").lines.count() == 2


def test_admin_preview_refuses_an_excel_error_cell_and_offers_no_confirm(staff_client):
    data = csv_bytes([order_row(), order_row(Line="2", Customer="#N/A")])

    response = upload(staff_client, "admin:licensing_order_import", data)

    page = response.content.decode()
    assert "row 3, column Customer: the cell holds the Excel error #N/A" in page
    assert "Confirm import" not in page
    assert not Order.objects.exists()


def test_admin_import_refuses_a_file_that_is_not_a_sheet_with_one_message(staff_client):
    response = upload(staff_client, "admin:licensing_order_import", b"%PDF-1.7 ...", name="scan.pdf")

    assert "This file is not a sheet" in response.content.decode()


def test_admin_import_refuses_a_file_over_the_size_limit(staff_client, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 50

    response = upload(staff_client, "admin:licensing_order_import", csv_bytes([order_row()]))

    assert "the limit is" in response.content.decode()
    assert not Order.objects.exists()


def test_admin_agreements_import(staff_client):
    response = upload(staff_client, "admin:licensing_agreement_import", csv_bytes([agreement_row()]))
    staff_client.post(reverse("admin:licensing_agreement_process_import"), response.context["confirm_form"].initial)

    assert Agreement.objects.get().number == "V2000001"


def test_large_file_is_checked_and_imported_by_a_worker_after_confirmation(
    staff_client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.IMPORT_ASYNC_ROWS = 2
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    rows = [order_row(Line=str(n)) for n in range(1, 5)]

    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_client, "admin:licensing_order_import", csv_bytes(rows))
    job = ImportJob.objects.get()
    assert response.url == reverse("admin:licensing_importjob_change", args=[job.pk])
    assert (job.status, job.rows_total, job.new_count) == ("ready", 4, 4)
    assert not Order.objects.exists()

    page = staff_client.get(response.url).content.decode()
    assert "4 of 4 rows" in page and "Confirm import" in page
    assert "The sheet orders.csv is being checked in the background: it has more than 2 rows." in page

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:licensing_importjob_confirm", args=[job.pk]))

    job.refresh_from_db()
    assert job.status == "done"
    assert OrderLine.objects.count() == 4
    assert "Imported" in staff_client.get(response.url).content.decode()


def test_background_job_with_errors_shows_them_and_writes_nothing(
    staff_client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.IMPORT_ASYNC_ROWS = 1
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    rows = [order_row(), order_row(Line="2", Quantity="-3")]

    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_client, "admin:licensing_order_import", csv_bytes(rows))

    job = ImportJob.objects.get()
    assert job.status == "rejected"
    page = staff_client.get(response.url).content.decode()
    assert "row 3, column Quantity:" in page
    assert "Confirm import" not in page
    response = staff_client.post(reverse("admin:licensing_importjob_confirm", args=[job.pk]), follow=True)
    assert "cannot be confirmed" in response.content.decode()
    assert not Order.objects.exists()


def test_running_job_page_refreshes_itself(staff_client):
    job = ImportJob.objects.create(kind="order_sheet", file_name="big.csv", rows_total=10, status="running")

    page = staff_client.get(reverse("admin:licensing_importjob_change", args=[job.pk])).content.decode()

    assert 'http-equiv="refresh"' in page


def export(client, url_name, fmt: str, resource: str = "0"):
    formats = {"csv": "0", "xlsx": "1"}
    response = client.post(reverse(url_name), {"format": formats[fmt], "resource": resource})
    assert response.status_code == 200, response.content[:500]
    return response.content


@pytest.mark.parametrize(("url_name", "resource"), [
    ("admin:licensing_order_export", "0"),
    ("admin:licensing_order_export", "1"),
    ("admin:licensing_orderline_export", "0"),
    ("admin:licensing_agreement_export", "0"),
])  # fmt: skip
def test_admin_csv_exports_have_a_bom_and_no_live_formulas(staff_client, url_name, resource):
    OrderLineFactory(order__po_number="=1+2", order__agreement__customer__name="-2+3", order__agreement__number="@A1")

    content = export(staff_client, url_name, "csv", resource)

    assert content.startswith(b"\xef\xbb\xbf")
    cells = [c for row in csv.reader(io.StringIO(content.decode("utf-8-sig"))) for c in row]
    assert any(c.startswith("'") for c in cells)
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)


def test_admin_xlsx_export_has_no_formulas(staff_client):
    OrderLineFactory(order__po_number="=cmd|' /C calc'!A0")

    content = export(staff_client, "admin:licensing_orderline_export", "xlsx")

    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    values = [c.value for row in sheet.iter_rows() for c in row if c.value is not None]
    assert "'=cmd|' /C calc'!A0" in values
    assert all(c.data_type != "f" for row in sheet.iter_rows() for c in row)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_admin_export_of_formula_like_cells_imports_back_unchanged(staff_client, import_orders, fmt):
    first = {"PO Number": "-5", "Customer": "@Home Networks", "Product": "+ Teams Phone", "Reseller": "=Contoso"}
    import_orders(csv_bytes([order_row(**first)]))
    content = export(staff_client, "admin:licensing_orderline_export", fmt)

    report = import_orders(content, name=f"export.{fmt}")

    assert (report.errors, report.new, report.updated, report.unchanged) == ([], 0, 0, 1)
    order = Order.objects.get()
    assert (order.po_number, order.agreement.customer.name) == ("-5", "@Home Networks")
    assert OrderLine.objects.get().product.description == "+ Teams Phone"
    assert order.agreement.partner.name == "=Contoso"


def test_a_quote_not_before_a_formula_character_is_kept(import_orders):
    report = import_orders(csv_bytes([order_row(**{"PO Number": "'05", "Customer": "'t Hooge Huys"})]))

    assert report.errors == []
    assert Order.objects.get().po_number == "'05"
    assert Order.objects.get().agreement.customer.name == "'t Hooge Huys"


def test_admin_subscription_export_is_neutralised(client, superuser):
    client.force_login(superuser)
    SubscriptionFactory(tenant__customer__name="+Evil Corp")

    content = export(client, "admin:redemption_subscription_export", "csv")

    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[0]["Customer"] == "'+Evil Corp"
    assert rows[0]["Tenant Domain"].endswith(".onmicrosoft.com")


@pytest.mark.parametrize(
    "url_name", ["admin:licensing_order_process_import", "admin:licensing_agreement_process_import"]
)
@pytest.mark.parametrize(
    "tampered",
    [
        {"format": "7"},
        {"format": "abc"},
        {"resource": "9"},
        {"import_file_name": "does-not-exist"},
        {"import_file_name": "../../etc/passwd"},
    ],
)
def test_a_tampered_import_confirmation_is_refused_and_imports_nothing(staff_client, url_name, tampered):
    sheet = csv_bytes([agreement_row() if "agreement" in url_name else order_row()])
    preview = upload(staff_client, url_name.replace("process_import", "import"), sheet)
    confirm = {**preview.context["confirm_form"].initial, **tampered}

    response = staff_client.post(reverse(url_name), confirm)

    assert response.status_code == 400
    assert "Nothing was imported" in response.content.decode()
    assert not Order.objects.exists() and not Agreement.objects.exists()


def test_an_import_confirmation_reads_and_removes_only_the_file_this_session_previewed(staff_client, tmp_path):
    import os
    import tempfile

    other = os.path.join(tempfile.gettempdir(), f"another-upload-{os.getpid()}-{id(tmp_path)}.csv")
    with open(other, "wb") as f:  # another clerk's upload waiting for its confirmation
        f.write(csv_bytes([order_row()]))
    try:
        response = staff_client.post(
            reverse("admin:licensing_order_process_import"),
            {"format": "0", "import_file_name": os.path.basename(other), "original_file_name": "mine.csv"},
        )
        assert response.status_code == 400
        assert os.path.exists(other)
        assert not Order.objects.exists()
    finally:
        os.remove(other)


def test_an_import_is_confirmed_once(staff_client):
    preview = upload(staff_client, "admin:licensing_order_import", csv_bytes([order_row()]))
    confirm = preview.context["confirm_form"].initial
    assert staff_client.post(reverse("admin:licensing_order_process_import"), confirm).status_code == 302
    again = staff_client.post(reverse("admin:licensing_order_process_import"), confirm)
    assert again.status_code == 400
    assert OrderLine.objects.count() == 1


def test_another_session_cannot_confirm_an_import_it_did_not_preview(staff_client, make_user):
    from tests.conftest import StaffClient

    preview = upload(staff_client, "admin:licensing_order_import", csv_bytes([order_row()]))
    other = StaffClient()
    other.force_login(make_user("clerk2"))
    response = other.post(reverse("admin:licensing_order_process_import"), preview.context["confirm_form"].initial)
    assert response.status_code == 400
    assert not Order.objects.exists()
    assert (
        staff_client.post(
            reverse("admin:licensing_order_process_import"), preview.context["confirm_form"].initial
        ).status_code
        == 302
    )


def test_a_job_confirmed_by_another_clerk_is_written_in_their_name_and_says_who_confirmed_it(
    staff_client, client, make_user, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.IMPORT_ASYNC_ROWS = 1
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_client, "admin:licensing_order_import", csv_bytes([order_row(), order_row(Line="2")]))
    job = ImportJob.objects.get()
    colleague = make_user("colleague")
    client.force_login(colleague)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:licensing_importjob_confirm", args=[job.pk]))

    job.refresh_from_db()
    assert (job.status, job.created_by.username, job.confirmed_by) == ("done", "processor", colleague)
    assert {record.history_user for record in Order.history.all()} == {colleague}
    assert "by processor · confirmed by colleague" in client.get(response.url).content.decode().replace("&middot;", "·")


def test_only_who_may_import_that_sheet_sees_the_confirm_button(
    staff_client, make_user, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Permission
    from django.test import Client

    settings.IMPORT_ASYNC_ROWS = 1
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_client, "admin:licensing_order_import", csv_bytes([order_row(), order_row(Line="2")]))
    # May follow imports (they import agreements) but not import order sheets.
    agreements_only = make_user("agreements-clerk", role=None)
    agreements_only.is_superuser = False
    agreements_only.save()
    agreements_only.user_permissions.add(Permission.objects.get(codename="add_agreement"))
    client = Client()
    client.force_login(agreements_only)

    page = client.get(response.url)
    assert page.status_code == 200 and "Confirm import" not in page.content.decode()
    assert (
        client.post(reverse("admin:licensing_importjob_confirm", args=[ImportJob.objects.get().pk])).status_code == 403
    )
    assert "Confirm import" in staff_client.get(response.url).content.decode()
    assert not Order.objects.exists()


def test_the_confirm_service_itself_refuses_who_may_not_import_that_sheet(make_user):
    from django.core.exceptions import PermissionDenied

    from licensing.services import import_job_confirm

    job = ImportJob.objects.create(kind="order_sheet", file_name="big.csv", status="ready", dry_run=True)
    viewer = make_user("viewer-only", role=None)
    viewer.is_superuser = False
    viewer.save()
    with pytest.raises(PermissionDenied):
        import_job_confirm(job_id=job.pk, acting_user=viewer)
    job.refresh_from_db()
    assert (job.status, job.dry_run, job.confirmed_by) == ("ready", True, None)
