"""Large sheets through the admin and a real Celery worker on Redis, on PostgreSQL."""

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from licensing.models import ImportJob, Order, OrderLine, Product
from tests.conftest import requires_postgres, requires_redis
from tests.licensing.sheets import csv_bytes, order_row
from tests.redemption.worker import Worker, database_url, wait_for

pytestmark = [requires_postgres, requires_redis, pytest.mark.django_db(transaction=True)]

ROWS = 600
BATCH = 100
# Part number of the lines from the fifth batch on: holding it shows the job part-way through.
LATE_PART = "ZZZ-99999"


@pytest.fixture
def worker(broker, settings):
    settings.IMPORT_ASYNC_ROWS = 100
    worker = Worker(
        broker_url=broker,
        concurrency=1,
        IMPORT_BATCH_SIZE=str(BATCH),
        IMPORT_FILES_DIR=str(settings.IMPORT_FILES_DIR),
    ).start()
    yield worker
    worker.stop()


@pytest.fixture
def staff_client(client, processor):
    client.force_login(processor)
    return client


def big_sheet(bad_row: int | None = None) -> bytes:
    """An order sheet of ROWS lines, four per order; data row `bad_row` (1-based) has a bad quantity."""
    rows = []
    for index in range(ROWS):
        late = index >= 4 * BATCH
        row = order_row(
            **{
                "License Number": str(60000000 + index // 4),
                "Line": str(index % 4 + 1),
                "Part Number": LATE_PART if late else "Q5Y-00001",
                "Product": "O365 E5 Annual" if late else "O365 E3 Annual",
            }
        )
        if index + 1 == bad_row:
            row["Quantity"] = "-3"
        rows.append(row)
    return csv_bytes(rows)


def upload(client, data: bytes):
    return client.post(
        reverse("admin:licensing_order_import"),
        {"format": "0", "resource": "0", "import_file": SimpleUploadedFile("big-orders.csv", data)},
    )


def job_status(job_id: int) -> str:
    return ImportJob.objects.get(pk=job_id).status


def test_large_sheet_is_checked_then_imported_by_a_worker_with_progress(staff_client, worker):
    response = upload(staff_client, big_sheet())

    job = ImportJob.objects.get()
    assert response.url == reverse("admin:licensing_importjob_change", args=[job.pk])
    assert wait_for(lambda: job_status(job.pk) == ImportJob.Status.READY, timeout=90), job_status(job.pk)
    page = staff_client.get(response.url).content.decode()
    assert f"{ROWS} of {ROWS} rows" in page
    assert f"{ROWS} new, 0 updated, 0 unchanged, 0 errors." in page
    assert "Nothing has been written yet." in page and "Confirm import" in page
    assert not Order.objects.exists()

    # Another session inserting the late part number, uncommitted, makes the worker wait at batch five.
    with psycopg.connect(database_url()) as other:
        other.execute(
            "INSERT INTO licensing_product (part_number, description, term_months, created_at, updated_at) "
            "VALUES (%s, 'held', 12, now(), now())",
            [LATE_PART],
        )
        staff_client.post(reverse("admin:licensing_importjob_confirm", args=[job.pk]))

        def part_way() -> bool:
            page = staff_client.get(response.url).content.decode()
            # The second pass (checking and writing), not the first one reading order-level values.
            return f"{4 * BATCH} of {ROWS} rows</span>" in page and "Running" in page

        assert wait_for(part_way, timeout=90), staff_client.get(response.url).content.decode()
        assert 'http-equiv="refresh"' in staff_client.get(response.url).content.decode()
        other.rollback()

    assert wait_for(lambda: job_status(job.pk) == ImportJob.Status.DONE, timeout=90), job_status(job.pk)
    page = staff_client.get(response.url).content.decode()
    assert "Imported" in page and f"{ROWS} of {ROWS} rows" in page
    assert f"{ROWS} new, 0 updated, 0 unchanged, 0 errors." in page
    assert OrderLine.objects.count() == ROWS
    assert Order.objects.count() == ROWS // 4
    assert Product.objects.get(part_number=LATE_PART).description == "O365 E5 Annual"
    assert OrderLine.history.filter(history_user__username="processor").count() == ROWS


def test_large_sheet_with_errors_ends_rejected_with_the_errors_listed_and_nothing_written(staff_client, worker):
    response = upload(staff_client, big_sheet(bad_row=ROWS - 10))

    job = ImportJob.objects.get()
    assert wait_for(lambda: job_status(job.pk) == ImportJob.Status.REJECTED, timeout=90), job_status(job.pk)
    page = staff_client.get(response.url).content.decode()
    assert f"row {ROWS - 9}, column Quantity: &#x27;-3&#x27; is not a positive whole number" in page
    assert "Rejected rows; nothing was written" in page
    assert "Confirm import" not in page
    assert not (Order.objects.exists() or Product.objects.exists())
