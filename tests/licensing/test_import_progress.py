"""Progress of a long import: an order sheet's first pass shows, so the page never sits at 0 while it reads."""

import io

import pytest
from django.core.cache import cache
from django.urls import reverse

from licensing.models import ImportJob
from licensing.services import _progress_key, import_job_progress, sheet_import
from licensing.sheets import open_sheet
from tests.licensing.sheets import csv_bytes, order_row

pytestmark = pytest.mark.django_db


def sheet_of(rows: int):
    data = csv_bytes(
        [order_row(**{"License Number": str(60000000 + n // 5), "Line": str(n % 5 + 1)}) for n in range(rows)]
    )
    return open_sheet(io.BytesIO(data), file_name="orders.csv")


def test_an_order_sheet_reports_its_first_pass_then_its_check_batch_by_batch(settings):
    settings.IMPORT_BATCH_SIZE = 10
    heard = []

    report = sheet_import(
        kind=ImportJob.Kind.ORDER_SHEET,
        sheet=sheet_of(25),
        dry_run=True,
        progress=lambda rows, first_pass=False: heard.append((rows, first_pass)),
    )

    assert report.errors == [] and report.rows_total == 25
    assert heard == [(10, True), (20, True), (25, True), (10, False), (20, False), (25, False)]


def test_a_running_job_page_says_it_is_reading_the_first_pass(client, processor):
    job = ImportJob.objects.create(
        kind=ImportJob.Kind.ORDER_SHEET, file_name="big.csv", status=ImportJob.Status.RUNNING, rows_total=600
    )
    client.force_login(processor)
    cache.set(_progress_key(job.pk), (120, True))
    try:
        page = client.get(reverse("admin:licensing_importjob_change", args=[job.pk])).content.decode()
        assert "120 of 600 rows read (first pass: the order-level values of each order" in page
        assert 'value="120"' in page

        cache.set(_progress_key(job.pk), (40, False))
        page = client.get(reverse("admin:licensing_importjob_change", args=[job.pk])).content.decode()
        assert "40 of 600 rows</span>" in page and "first pass" not in page
        assert import_job_progress(job=job).text(job.rows_total) == "40 of 600 rows"
    finally:
        cache.delete(_progress_key(job.pk))


def test_a_finished_job_shows_the_rows_it_went_through():
    job = ImportJob.objects.create(
        kind=ImportJob.Kind.ORDER_SHEET,
        file_name="big.csv",
        status=ImportJob.Status.DONE,
        rows_total=600,
        rows_done=600,
    )
    cache.set(_progress_key(job.pk), (120, True))
    try:
        assert import_job_progress(job=job).text(job.rows_total) == "600 of 600 rows"
    finally:
        cache.delete(_progress_key(job.pk))


def test_a_job_counting_its_rows_says_so_with_a_bar_that_does_not_pretend(client, processor):
    job = ImportJob.objects.create(
        kind=ImportJob.Kind.ORDER_SHEET, file_name="big.xlsx", status=ImportJob.Status.RUNNING
    )
    client.force_login(processor)
    cache.set(_progress_key(job.pk), (3000, False, True))
    try:
        page = client.get(reverse("admin:licensing_importjob_change", args=[job.pk])).content.decode()
        assert "counting the rows: 3000 so far" in page
        assert "<progress></progress>" in page  # no total yet: the bar only says work is going on
    finally:
        cache.delete(_progress_key(job.pk))


def test_the_worker_counts_the_rows_first_and_reports_them_as_it_goes(settings, monkeypatch):
    from django.core.files.base import ContentFile

    from licensing import services

    data = csv_bytes(
        [order_row(**{"License Number": str(60000000 + n // 5), "Line": str(n % 5 + 1)}) for n in range(2500)]
    )
    job = ImportJob(kind=ImportJob.Kind.ORDER_SHEET, file_name="big.csv", dry_run=True)
    job.file.save("big.csv", ContentFile(data), save=False)
    job.save()
    heard = []
    monkeypatch.setattr(services.cache, "set", lambda key, value, timeout=None: heard.append(value))

    services.import_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.rows_total) == (ImportJob.Status.READY, 2500)
    # Counting (1000, 2000 rows so far), then the first pass and the check against the total counted.
    assert heard[:5] == [(0, False), (0, False, True), (1000, False, True), (2000, False, True), (0, False)]
