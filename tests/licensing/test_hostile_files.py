"""Files that cannot hurt: every hostile sheet is refused with a clear message, in bounded memory, writing nothing."""

import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import openpyxl
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.core.validators import validate_email
from django.urls import reverse

from licensing import formats, tasks, xlsx_parts
from licensing.importing import OrderSheetImporter
from licensing.models import ImportJob, Order, OrderLine
from licensing.services import import_job_run
from licensing.sheets import SheetError, open_sheet
from tenants.models import Customer
from tests.licensing import hostile
from tests.licensing.sheets import ORDER_HEADER, csv_bytes, order_row, xlsx_bytes

pytestmark = pytest.mark.django_db

PEAK_MB = 200
OUTPUT_BYTES = 64 * 1024
# Runs the command in a child and reports the child's own peak memory, whatever this process holds.
MEASURED = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True)
print(json.dumps({
    "returncode": done.returncode,
    "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "output": done.stdout.decode(errors="replace"),
    "errors": done.stderr.decode(errors="replace"),
}))
"""


@pytest.fixture(scope="module")
def child_env(tmp_path_factory) -> dict:
    """Return the environment of a command run in a child process: its own migrated SQLite database."""
    path = tmp_path_factory.mktemp("child") / "db.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "DEBUG": "true"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=settings.BASE_DIR, env=env, check=True, timeout=300
    )
    return env


def dry_run_in_a_child(path, env: dict) -> dict:
    """Run `manage.py import_order_sheet PATH --dry-run` in a child; return its exit code, peak memory and output."""
    command = [sys.executable, "manage.py", "import_order_sheet", str(path), "--dry-run"]
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *command],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout)


def staff_upload(client, data: bytes, name: str = "orders.csv"):
    return client.post(
        reverse("admin:licensing_order_import"),
        {"format": "0", "resource": "0", "import_file": SimpleUploadedFile(name, data)},
    )


@pytest.fixture
def staff_client(client, processor):
    client.force_login(processor)
    return client


def nothing_written() -> bool:
    return not (Order.objects.exists() or OrderLine.objects.exists() or Customer.objects.exists())


# --- bounded memory, measured in a child process -------------------------------------------------------


def test_a_workbook_with_one_huge_shared_string_is_refused_with_bounded_memory(tmp_path, child_env):
    path = tmp_path / "huge-string.xlsx"
    assert hostile.huge_shared_string_workbook(path) < 300 * 1024

    run = dry_run_in_a_child(path, child_env)

    assert run["returncode"] == 1
    assert "row 2, column Customer: this cell is longer than 1000 characters" in run["errors"]
    assert run["peak_mb"] < PEAK_MB, run
    assert len(run["output"] + run["errors"]) < OUTPUT_BYTES


def test_a_workbook_padded_with_whitespace_between_cells_imports_with_bounded_memory(tmp_path, child_env):
    path = tmp_path / "padded.xlsx"
    assert hostile.whitespace_padded_workbook(path) < 300 * 1024

    run = dry_run_in_a_child(path, child_env)

    assert run["returncode"] == 0, run["errors"]
    assert "Dry run, nothing written: 1 rows: 1 new" in run["output"]
    assert run["peak_mb"] < PEAK_MB, run


def test_a_cell_padded_with_whitespace_is_refused_with_bounded_memory(tmp_path, child_env):
    path = tmp_path / "padded-cell.xlsx"
    hostile.padded_cell_workbook(path, spaces=50 * hostile.MB)

    run = dry_run_in_a_child(path, child_env)

    assert run["returncode"] == 1
    assert "row 2, column Customer: this cell is longer than 1000 characters" in run["errors"]
    assert run["peak_mb"] < PEAK_MB, run


def many_customers_sheet(path, count: int):
    """Write an order sheet naming a customer, agreement, order and tenant domain of its own on every row."""
    rows = [
        order_row(
            **{
                "License Number": str(63000000 + n),
                "Agreement Number": f"V{6000000 + n}",
                "Customer": f"Customer {n}",
                "Customer Email": f"it@c{n}.example",
                "Tenant Domain": f"c{n}.onmicrosoft.com",
            }
        )
        for n in range(count)
    ]
    path.write_bytes(csv_bytes(rows))
    return path


def test_a_sheet_naming_a_new_customer_on_every_row_is_checked_in_flat_memory(tmp_path, child_env):
    # What the file says of its customers, agreements, orders and tenant domains waits in the database
    # between batches, not in memory: three times the rows, about the same peak.
    peaks = {}
    for count in (15_000, 45_000):
        run = dry_run_in_a_child(many_customers_sheet(tmp_path / f"{count}.csv", count), child_env)
        assert run["returncode"] == 0, run
        assert f"Dry run, nothing written: {count} rows: {count} new" in run["output"]
        peaks[count] = run["peak_mb"]

    assert peaks[45_000] - peaks[15_000] < 15, peaks
    assert peaks[45_000] < PEAK_MB, peaks


def test_a_workbook_with_too_many_rows_is_refused_with_bounded_memory_and_output(tmp_path, child_env):
    path = tmp_path / "many-rows.xlsx"
    # The row limit at a fifth of its default, so that the test takes seconds; every row is rejected.
    hostile.many_rows_workbook(path, rows=120_000)

    run = dry_run_in_a_child(path, {**child_env, "IMPORT_MAX_ROWS": "100000", "IMPORT_MAX_ERRORS": "200"})

    assert run["returncode"] == 1
    lines = run["errors"].splitlines()
    # Why the reading stopped comes first, then the first errors, then how many more there are.
    assert lines[0] == "row 100002: The sheet has more than 100000 rows; split it into smaller sheets."
    assert lines[1] == "row 2, column Reseller MPN ID: a value is required"
    assert lines[-2] == "… and 799801 more"
    assert "800001 error(s)" in lines[-1]
    assert len(lines) == 202
    assert run["peak_mb"] < PEAK_MB, run
    assert len(run["output"] + run["errors"]) < OUTPUT_BYTES


def test_with_debug_on_an_import_keeps_the_sql_of_its_last_batch_only(import_orders, settings):
    from django.db import connection, reset_queries

    settings.DEBUG = True
    settings.IMPORT_BATCH_SIZE = 10
    reset_queries()
    rows = [order_row(**{"License Number": str(61000000 + n), "Agreement Number": f"V{4000000 + n}",
                         "Customer": f"Customer {n}"}) for n in range(60)]  # fmt: skip

    report = import_orders(csv_bytes(rows))

    assert report.ok and report.new == 60
    # Six batches of statements carrying their rows' values: Django would keep them all until the request
    # ends, however long the file. None of them is held after the import.
    held = [query["sql"] for query in connection.queries]
    assert not [sql for sql in held if "61000000" in sql or "61000059" in sql]
    assert len(held) < 20


# --- one cell, one row, one part: each limit checked while reading -------------------------------------


def test_a_csv_cell_over_the_limit_is_refused_naming_its_row_and_column(import_orders):
    rows = [order_row(), order_row(Line="2", Customer="x" * 1001)]

    report = import_orders(csv_bytes(rows))

    assert [str(e) for e in report.errors] == [
        "row 3, column Customer: this cell is longer than 1000 characters, the most a cell may hold"
    ]
    assert nothing_written()


def test_a_csv_cell_far_over_the_limit_is_refused_naming_its_row(import_orders):
    rows = [order_row(), order_row(), order_row(Line="3", Product="y" * 5_000_000)]

    report = import_orders(csv_bytes(rows))

    assert len(report.errors) == 1
    assert report.errors[0].row == 4
    assert "longer than" in report.errors[0].message
    assert nothing_written()


def test_a_value_beyond_the_last_column_a_sheet_may_have_is_refused(import_orders):
    data = csv_bytes([order_row()], extra_lines="," * 300 + "stray\r\n")

    report = import_orders(data)

    assert [str(e) for e in report.errors] == ["row 3: a value in column KO, beyond the 256 columns a sheet may have"]


def test_empty_trailing_columns_are_not_counted_as_columns(import_orders):
    report = import_orders(csv_bytes([order_row()], extra_lines="," * 1000 + "\r\n"))

    assert report.errors == [] and report.new == 1


def test_a_workbook_value_beyond_the_last_column_a_sheet_may_have_is_refused(tmp_path, import_orders):
    path = tmp_path / "wide.xlsx"
    stray = hostile.cell_xml(2, 300, "stray") + hostile.cell_xml(2, 400, " ")
    data = b'<row r="2">' + b"".join(hostile.data_cells()) + stray + b"</row>"
    hostile.write_xlsx(path, hostile.sheet_xml([hostile.row_xml(1, ORDER_HEADER), data]))

    report = import_orders(path.read_bytes(), name="wide.xlsx")

    assert [str(e) for e in report.errors] == ["row 2: a value in column KN, beyond the 256 columns a sheet may have"]


def test_blank_rows_before_the_header_are_not_read_for_ever(import_orders, settings):
    settings.IMPORT_MAX_ROWS = 10

    with pytest.raises(SheetError, match="row 11: the first 10 rows are blank"):
        import_orders(b",,\r\n" * 50 + csv_bytes([order_row()]))


def test_a_quote_never_closed_is_refused_naming_its_row(import_orders):
    data = csv_bytes([order_row(), order_row(Line="2")]) + b'60000001,3,"2026-11-01,' + b"x," * 200_000

    report = import_orders(data)

    assert [(e.row, e.column) for e in report.errors] == [(4, "-")]
    assert "never closed" in report.errors[0].message
    assert nothing_written()


def test_a_utf16_file_is_refused_with_what_to_do():
    with pytest.raises(SheetError, match='save it as "CSV UTF-8"'):
        open_sheet(io.BytesIO(csv_bytes([order_row()]).decode().encode("utf-16")))


def test_a_csv_with_bytes_that_are_no_text_is_refused_naming_their_row(import_orders):
    data = csv_bytes([order_row(Customer="Café"), order_row(Line="2")], encoding="cp1252")
    data = data.replace(b"PO-1", b"PO-\x81", 1)

    report = import_orders(data)

    assert [(e.row, e.column) for e in report.errors] == [(2, "-")]
    assert "neither UTF-8 nor Windows-1252" in report.errors[0].message


def test_a_workbook_cell_over_the_limit_is_refused_naming_its_row_and_column(import_orders):
    values = [order_row()[h] for h in ORDER_HEADER]
    values[ORDER_HEADER.index("Product")] = "z" * 1001

    report = import_orders(xlsx_bytes([values], ORDER_HEADER), name="orders.xlsx")

    assert [str(e) for e in report.errors] == [
        "row 2, column Product: this cell is longer than 1000 characters, the most a cell may hold"
    ]


def test_a_long_shared_string_that_no_cell_uses_does_not_refuse_the_sheet(tmp_path, import_orders):
    path = tmp_path / "unused.xlsx"
    cells = b"".join(hostile.data_cells())
    shared = [f'<sst xmlns="{hostile.MAIN_NS}" count="1" uniqueCount="1"><si><t>{"n" * 5000}</t></si></sst>'.encode()]
    rows = [hostile.row_xml(1, ORDER_HEADER), b"<row>" + cells + b"</row>"]
    hostile.write_xlsx(path, hostile.sheet_xml(rows), shared)

    report = import_orders(path.read_bytes(), name="unused.xlsx")

    assert report.errors == [] and report.new == 1


def test_a_part_that_unpacks_past_the_limit_is_refused_as_it_unpacks(tmp_path, settings):
    settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES = 1_000_000
    path = tmp_path / "big-part.xlsx"
    hostile.whitespace_padded_workbook(path, spaces=2 * hostile.MB)

    with zipfile.ZipFile(path) as archive, pytest.raises(SheetError, match="unpacks to more than 1 MB"):
        # Read part by part, whatever the zip declares: counted as the bytes come out.
        xlsx_parts.read_part(archive, "xl/worksheets/sheet1.xml", xlsx_parts.Part())


def test_a_workbook_whose_zip_understates_a_part_is_refused(tmp_path, settings, import_orders):
    settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES = 1_000_000
    path = tmp_path / "lying.xlsx"
    hostile.whitespace_padded_workbook(path, spaces=5 * hostile.MB)
    data = bytearray(path.read_bytes())
    # The central directory claims the sheet unpacks to 1 KB.
    entry = data.rfind(b"PK\x01\x02", 0, data.rfind(b"xl/worksheets/sheet1.xml"))
    data[entry + 24 : entry + 28] = struct.pack("<I", 1024)

    with pytest.raises(SheetError, match="not a readable Excel workbook"):
        list(open_sheet(io.BytesIO(bytes(data))).rows)


def test_a_zip_listing_more_parts_than_a_workbook_has_is_refused():
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for n in range(10_001):
            archive.writestr(f"x/{n}", b"")

    with pytest.raises(SheetError, match="lists more than 10000 parts"):
        open_sheet(data)


def test_a_workbook_declaring_entities_is_refused(tmp_path):
    path = tmp_path / "laughs.xlsx"
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        + f'<worksheet xmlns="{hostile.MAIN_NS}"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>'.encode()
        + b"&lol2;</t></is></c></row></sheetData></worksheet>"
    )
    hostile.write_xlsx(path, [bomb])

    with pytest.raises(SheetError, match="declares a DTD"):
        open_sheet(io.BytesIO(path.read_bytes()))


def test_rows_of_a_workbook_keep_their_numbers_across_gaps(tmp_path, import_orders):
    path = tmp_path / "gaps.xlsx"
    rows = [hostile.row_xml(1, ORDER_HEADER), hostile.row_xml(40, hostile.order_values(Quantity="-1"))]
    hostile.write_xlsx(path, hostile.sheet_xml(rows))

    report = import_orders(path.read_bytes(), name="gaps.xlsx")

    assert [(e.row, e.column) for e in report.errors] == [(40, "Quantity")]


def test_the_preview_numbers_rows_of_a_workbook_across_gaps(tmp_path, staff_client):
    path = tmp_path / "gaps.xlsx"
    rows = [hostile.row_xml(1, ORDER_HEADER), hostile.row_xml(7, hostile.order_values())]
    rows.append(hostile.row_xml(40_000, hostile.order_values(Line="2")))
    hostile.write_xlsx(path, hostile.sheet_xml(rows))

    response = staff_upload(staff_client, path.read_bytes(), name="gaps.xlsx")

    assert [row.number for row in response.context["result"].valid_rows()] == [7, 40_000]


# --- text that is not what it claims -----------------------------------------------------------------


def test_a_nul_byte_after_the_first_8_kb_is_refused_naming_its_row(import_orders):
    rows = [order_row(Line=str(n)) for n in range(1, 80)]
    rows[60]["PO Number"] = "PO\x00-61"
    data = csv_bytes(rows)
    assert data.index(b"\x00") > 8192

    report = import_orders(data)

    assert [(e.row, e.column) for e in report.errors] == [(62, "-")]
    assert "NUL character" in report.errors[0].message
    assert nothing_written()


def test_a_nul_byte_gets_a_message_in_the_admin_not_an_error_page(staff_client):
    rows = [order_row(Line=str(n)) for n in range(1, 80)]
    rows[60]["PO Number"] = "PO\x00-61"

    response = staff_upload(staff_client, csv_bytes(rows))

    assert response.status_code == 200
    assert "row 62: this row holds a NUL character" in response.content.decode()
    assert nothing_written()


@pytest.mark.parametrize(("first", "second", "bad_row"), [("utf-8", "cp1252", 3), ("cp1252", "utf-8", 2)])
def test_a_csv_mixing_utf8_and_windows_1252_is_refused_naming_the_first_row_that_is_not_utf8(
    import_orders, first, second, bad_row
):
    header, row2 = csv_bytes([order_row(Customer="Café Zürich")], encoding=first).split(b"\r\n", 1)
    row3 = csv_bytes([order_row(Line="2", Customer="Café Münster")], encoding=second).split(b"\r\n", 1)[1]

    report = import_orders(header + b"\r\n" + row2 + row3)

    assert [(e.row, e.column) for e in report.errors] == [(bad_row, "-")]
    assert "mixes two text encodings" in report.errors[0].message
    assert nothing_written()


def test_a_windows_1252_csv_with_no_utf8_in_it_imports(import_orders):
    rows = [order_row(Line=str(n), Customer="Café Münster") for n in range(1, 400)]

    report = import_orders(csv_bytes(rows, encoding="cp1252"))

    assert report.errors == []
    assert Customer.objects.get().name == "Café Münster"


def test_a_header_naming_a_column_twice_is_refused_naming_both_columns(import_orders):
    header, row = csv_bytes([order_row(Quantity="5")]).split(b"\r\n", 1)
    data = header + b", quantity \r\n" + row.removesuffix(b"\r\n") + b",999\r\n"

    report = import_orders(data)

    assert [str(e) for e in report.errors] == [
        "row 1, column Quantity: the header names this column twice, in columns M and T; keep one"
    ]
    assert nothing_written()


# --- values that would not fit the database: rejected at preview, never at confirm --------------------

EMAIL_300 = "a" * 64 + "@" + ".".join(["b" * 45] * 5) + ".example"


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("Quantity", "99999999999", "99999999999 is more than 2147483647, the largest this column can hold"),
        ("Line", "99999999999", "99999999999 is more than 2147483647, the largest this column can hold"),
        ("Customer Email", EMAIL_300, "302 characters, longer than the 254 it may have"),
        ("Reseller Email", EMAIL_300, "302 characters, longer than the 254 it may have"),
        ("PO Number", "P" * 65, "65 characters, longer than the 64 it may have"),
        ("Reseller MPN ID", "9" * 33, "33 characters, longer than the 32 it may have"),
        ("Customer", "C" * 256, "256 characters, longer than the 255 it may have"),
    ],
)
def test_a_value_that_would_not_fit_its_column_is_rejected_at_preview_with_row_column_and_limit(
    staff_client, column, value, message
):
    validate_email(EMAIL_300)
    rows = [order_row(), order_row(**{"Line": "2", column: value})]

    response = staff_upload(staff_client, csv_bytes(rows))

    page = response.content.decode()
    assert f"row 3, column {column}: {message}" in page
    assert "Confirm import" not in page
    assert nothing_written()


def test_a_number_over_its_column_is_rejected_by_the_command_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_bytes(csv_bytes([order_row(Quantity="99999999999")]))

    with pytest.raises(CommandError, match="1 error"):
        call_command("import_order_sheet", str(path))

    assert "row 2, column Quantity: 99999999999 is more than 2147483647" in capsys.readouterr().err
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.REJECTED
    assert nothing_written()


def test_an_order_date_no_agreement_term_could_follow_is_rejected_not_a_crash(import_orders):
    row = order_row(**{"Order Date": "9999-06-01", "Start Date": "9999-06-01", "End Date": "9999-12-31"})

    report = import_orders(csv_bytes([row]))

    assert {(e.row, e.column) for e in report.errors} == {(2, "Order Date"), (2, "Start Date"), (2, "End Date")}
    assert "not a plausible date" in report.errors[0].message


# --- what the person sees: short cells, a bounded list of errors ---------------------------------------


def test_the_preview_never_echoes_more_than_a_few_hundred_characters_of_a_cell(staff_client):
    accepted = staff_upload(staff_client, csv_bytes([order_row(Product="P" * 250)])).content.decode()
    rejected = staff_upload(staff_client, csv_bytes([order_row(Quantity="Q" * 900)])).content.decode()

    assert "Confirm import" in accepted
    assert "P" * 200 + "… (250 characters)" in accepted
    assert "P" * 201 not in accepted
    assert "row 2, column Quantity:" in rejected
    assert "Q" * 201 not in rejected


@pytest.fixture
def five_errors(settings):
    settings.IMPORT_MAX_ERRORS = 5
    return [order_row(Line=str(n), Quantity="0") for n in range(1, 31)]


def test_errors_stop_being_listed_after_the_limit(import_orders, five_errors):
    report = import_orders(csv_bytes(five_errors))

    assert [e.row for e in report.errors] == [2, 3, 4, 5, 6]
    assert (report.error_count, report.errors_not_listed) == (30, 25)


def test_the_preview_lists_the_first_errors_and_says_how_many_more(staff_client, five_errors):
    page = staff_upload(staff_client, csv_bytes(five_errors)).content.decode()

    assert "row 6, column Quantity:" in page
    assert "row 7, column Quantity:" not in page
    assert "and 25 more" in page


def test_the_command_lists_the_first_errors_and_says_how_many_more(tmp_path, capsys, five_errors):
    path = tmp_path / "orders.csv"
    path.write_bytes(csv_bytes(five_errors))

    with pytest.raises(CommandError, match="30 error"):
        call_command("import_order_sheet", str(path))

    err = capsys.readouterr().err.splitlines()
    assert err[4].startswith("row 6, column Quantity:")
    assert err[5] == "… and 25 more"


def test_the_import_job_page_lists_the_first_errors_and_says_how_many_more(
    staff_client, settings, monkeypatch, django_capture_on_commit_callbacks, five_errors
):
    settings.IMPORT_ASYNC_ROWS = 2
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_upload(staff_client, csv_bytes(five_errors))

    job = ImportJob.objects.get()
    assert (job.status, job.error_count, len(job.errors)) == ("rejected", 30, 5)
    page = staff_client.get(response.url).content.decode()
    assert "row 6, column Quantity:" in page
    assert "and 25 more" in page


def test_the_refusal_that_stopped_the_reading_is_listed_first(import_orders, five_errors):
    data = csv_bytes(five_errors) + b"61,1,2026-11-01,x\x00\r\n"

    report = import_orders(data)

    assert [e.row for e in report.errors] == [32, 2, 3, 4, 5]
    assert "NUL character" in report.errors[0].message
    assert report.error_count == 31


# --- a crash leaves its job failed, with a message -----------------------------------------------------


@pytest.fixture
def crashing_import(monkeypatch):
    def crash(self, *args, **kwargs):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(OrderSheetImporter, "_write_lines", crash)


def test_an_import_that_crashes_in_the_command_leaves_its_job_failed_with_a_message(tmp_path, capsys, crashing_import):
    path = tmp_path / "orders.csv"
    path.write_bytes(csv_bytes([order_row()]))

    with pytest.raises(CommandError, match="nothing was written"):
        call_command("import_order_sheet", str(path))

    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.FAILED
    assert "unexpected error" in job.error_lines()[0]
    assert "RuntimeError: the disk caught fire" in capsys.readouterr().err
    assert nothing_written()


def test_an_import_that_crashes_on_confirm_in_the_admin_leaves_its_job_failed_with_a_message(
    staff_client, crashing_import
):
    response = staff_upload(staff_client, csv_bytes([order_row()]))
    confirm = response.context["confirm_form"].initial

    response = staff_client.post(reverse("admin:licensing_order_process_import"), confirm, follow=True)

    assert response.status_code == 200
    assert "The import stopped on an unexpected error" in response.content.decode()
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.FAILED
    assert nothing_written()


def test_an_import_that_crashes_in_the_worker_leaves_its_job_failed_with_a_message(
    staff_client, settings, monkeypatch, django_capture_on_commit_callbacks, crashing_import
):
    settings.IMPORT_ASYNC_ROWS = 1
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_upload(staff_client, csv_bytes([order_row(), order_row(Line="2")]))
    job = ImportJob.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:licensing_importjob_confirm", args=[job.pk]))

    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    page = staff_client.get(response.url).content.decode()
    assert "The import failed; nothing was written" in page
    assert "RuntimeError: the disk caught fire" in page
    assert nothing_written()


def test_the_import_job_history_page_answers(staff_client):
    job = ImportJob.objects.create(kind="order_sheet", file_name="orders.csv", status="done")

    response = staff_client.get(reverse("admin:licensing_importjob_history", args=[job.pk]))

    assert response.status_code == 200


def test_a_small_workbook_unpacking_to_many_empty_rows_goes_to_a_worker_unread_and_is_refused_there(
    tmp_path, staff_client, monkeypatch, django_capture_on_commit_callbacks
):
    # A file that unpacks to 2 MB of formatted empty rows (10 MB in the page's limit, lowered here): reading them
    # would hold the page for nothing, as 250 MB of them would for minutes.
    monkeypatch.setattr(formats, "PREVIEW_MAX_UNPACKED_BYTES", hostile.MB)
    path = tmp_path / "empty-rows.xlsx"
    rows = (f'<row r="{n}"><c r="A{n}" s="1"/></row>'.encode() for n in range(1, 60_001))
    assert hostile.write_xlsx(path, hostile.sheet_xml(rows)) < 2 * hostile.MB / 5
    counted = []
    monkeypatch.setattr(formats, "measure_sheet", lambda *args, **kwargs: counted.append(args))
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: None)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_upload(staff_client, path.read_bytes(), name="empty-rows.xlsx")

    job = ImportJob.objects.get()
    assert response.url == reverse("admin:licensing_importjob_change", args=[job.pk])
    assert counted == []  # the page read none of its rows
    page = staff_client.get(response.url).content.decode()
    assert "The sheet empty-rows.xlsx is being checked in the background: it unpacks to 2 MB" in page

    import_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.REJECTED
    assert "The file is empty." in staff_client.get(response.url).content.decode()
    assert nothing_written()


def a_bad_row_then_an_unreadable_one(rows: int) -> bytes:
    """An order sheet of `rows` lines whose row 10 has a bad quantity and whose last row holds a NUL byte."""
    lines = [order_row(**{"License Number": str(61000000 + n), "Line": "1"}) for n in range(rows)]
    lines[8]["Quantity"] = "ten"
    lines[-1]["PO Number"] = "PO\x00"
    return csv_bytes(lines)


def test_the_preview_lists_the_rows_rejected_before_the_row_that_stopped_the_reading(staff_client):
    response = staff_upload(staff_client, a_bad_row_then_an_unreadable_one(150))

    page = response.content.decode()
    assert "row 151: this row holds a NUL character" in page
    assert "row 10, column Quantity:" in page  # the command lists it too: staff fix both at once
    assert nothing_written()


def test_a_background_job_lists_the_rows_rejected_before_the_row_that_stopped_the_reading(
    staff_client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.IMPORT_ASYNC_ROWS = 100
    monkeypatch.setattr(tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0]))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_upload(staff_client, a_bad_row_then_an_unreadable_one(150))

    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.REJECTED
    page = staff_client.get(response.url).content.decode()
    assert "row 151: this row holds a NUL character" in page and "row 10, column Quantity:" in page
    assert nothing_written()


def test_a_workbook_whose_first_tab_is_notes_gets_the_header_hint_in_the_admin(staff_client):
    workbook = openpyxl.Workbook()
    workbook.active.title = "Read me"
    workbook.active.append(["Orders of November, see the next tab"])
    orders = workbook.create_sheet("Orders")
    orders.append(ORDER_HEADER)
    orders.append([order_row()[h] for h in ORDER_HEADER])
    data = io.BytesIO()
    workbook.save(data)

    page = staff_upload(staff_client, data.getvalue(), name="orders.xlsx").content.decode()

    assert "first visible worksheet" in page and "header but no rows" not in page
    assert nothing_written()


def test_a_refused_file_still_shows_the_columns_the_importer_reads(staff_client):
    page = staff_upload(staff_client, b"\xff\xfeO\x00r\x00", name="orders.csv").content.decode()

    assert "UTF-16" in page
    assert "License Number, Line" in page


def test_a_run_of_zero_bytes_in_a_row_is_named_by_its_row(import_orders):
    rows = [order_row(Line=str(n)) for n in range(1, 5)]
    rows[3]["PO Number"] = "PO" + "\x00" * 9
    data = csv_bytes(rows)
    assert data.index(b"\x00") < 8192

    report = import_orders(data)

    assert [(e.row, e.column) for e in report.errors] == [(5, "-")]
    assert "NUL character" in report.errors[0].message
    assert nothing_written()


def test_an_empty_upload_is_told_once(staff_client):
    response = staff_upload(staff_client, b"")

    page = response.content.decode()
    assert response.status_code == 200
    assert page.count("empty") == 1 and "The file is empty." in page
    assert nothing_written()


def test_a_workbook_declaring_too_much_is_refused_at_the_upload_not_in_the_background(
    tmp_path, settings, staff_client, monkeypatch
):
    # Over the page's limit (a worker would check it) and over the import's: refused at once.
    monkeypatch.setattr(formats, "PREVIEW_MAX_UNPACKED_BYTES", hostile.MB)
    settings.IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES = 1_000_000
    path = tmp_path / "declared.xlsx"
    hostile.whitespace_padded_workbook(path, spaces=2 * hostile.MB)

    response = staff_upload(staff_client, path.read_bytes(), name="declared.xlsx")

    assert response.status_code == 200
    assert "over the 1 MB limit; it is refused" in response.content.decode()
    assert not ImportJob.objects.exists()
