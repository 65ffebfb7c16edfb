"""Business operations on what was bought: importing order sheets and agreements."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from config.queueing import enqueue_on_commit
from licensing.cells import RowError
from licensing.importing import AgreementsImporter, ImportReport, OrderSheetImporter, SheetImporter
from licensing.models import ImportJob
from licensing.sheets import Sheet, SheetError, measure_sheet, open_sheet

logger = logging.getLogger(__name__)

IMPORTERS: dict[str, type[SheetImporter]] = {
    ImportJob.Kind.ORDER_SHEET: OrderSheetImporter,
    ImportJob.Kind.AGREEMENTS: AgreementsImporter,
}
# How much of an unexpected error's own text a person is shown.
FAILURE_CHARS = 300
INTERRUPTED = "The import was interrupted (the process running it stopped); nothing was written."


def _progress_key(job_id: int) -> str:
    return f"licensing:import-job:{job_id}:rows-done"


@dataclass(frozen=True)
class JobProgress:
    """How far a job has gone: rows gone through, and whether that is the first of an order sheet's two passes
    (reading each order's order-level values before any row is checked)."""

    rows: int
    first_pass: bool = False
    counting: bool = False  # the worker is counting the sheet's rows before it checks them

    def text(self, total: int) -> str:
        if self.counting:
            return f"counting the rows: {self.rows} so far"
        if not total:
            return f"{self.rows} rows"  # not counted yet (waiting for a worker) or none to count
        if self.first_pass:
            return (
                f"{self.rows} of {total} rows read "
                "(first pass: the order-level values of each order, before any row is checked)"
            )
        return f"{self.rows} of {total} rows"


def import_job_progress(*, job: ImportJob) -> JobProgress:
    """Return how far a job has gone, live while it runs."""
    if job.is_active:
        held = cache.get(_progress_key(job.pk))
        if isinstance(held, tuple):
            return JobProgress(*held)
        if isinstance(held, int):
            return JobProgress(held)
    return JobProgress(job.rows_done)


def sheet_import(
    *,
    kind: str,
    sheet: Sheet,
    acting_user=None,
    dry_run: bool = False,
    job: ImportJob | None = None,
    keep_row_outcomes: bool = False,
    progress: Callable[..., None] | None = None,
) -> ImportReport:
    """Check a sheet and, unless it is a dry run or any row is rejected, apply all of it at once.

    A real import is recorded as an ImportJob (who, which file, when, what it changed); every row it
    writes gets a history record naming that job and file.
    """
    user = acting_user if acting_user is not None and acting_user.is_authenticated else None
    if job is None and not dry_run:
        job = ImportJob.objects.create(
            # Checked and confirmed by the same person, on the page (or the command line: nobody).
            kind=kind,
            file_name=sheet.file_name[:255],
            created_by=user,
            confirmed_by=user,
            status=ImportJob.Status.RUNNING,
        )
    reason = f"Import #{job.pk} of {sheet.file_name}" if job else f"Import of {sheet.file_name}"
    importer = IMPORTERS[kind](
        acting_user=user,
        change_reason=reason,
        dry_run=dry_run,
        batch_size=settings.IMPORT_BATCH_SIZE,
        keep_row_outcomes=keep_row_outcomes,
        progress=progress,
    )
    report = importer.report
    try:
        with transaction.atomic():
            try:
                importer.run(sheet)
            except SheetError as exc:
                report.add_stop(reading_error(exc, default_row=report.rows_total + 2))
            if not report.ok or dry_run:
                # Rule: an import applies completely or changes nothing.
                transaction.set_rollback(True)
            elif job is not None:
                _finish(job, report, ImportJob.Status.DONE)
    except Exception as exc:
        # Whatever went wrong, the transaction is rolled back: the job says so instead of running for ever.
        logger.exception("Import of %s failed", sheet.file_name)
        report.add_stop(concurrent_write_error(exc) if isinstance(exc, IntegrityError) else failure_error(exc))
        if job is not None:
            report.job_id = job.pk
            _finish(job, report, ImportJob.Status.FAILED)
        return report
    if job is not None:
        report.job_id = job.pk
        if not report.ok:
            _finish(job, report, ImportJob.Status.REJECTED)
        elif dry_run:
            _finish(job, report, ImportJob.Status.READY)
    return report


def reading_error(exc: SheetError, *, default_row: int | None = None) -> RowError:
    """Return a reading refusal as a report lists it: at its row and column, or about the whole file."""
    return RowError(exc.row if exc.row is not None else default_row, exc.column or "-", exc.message)


def failure_error(exc: BaseException) -> RowError:
    """Return an unexpected error as a person is told of it."""
    detail = f"{type(exc).__name__}: {exc}"
    if len(detail) > FAILURE_CHARS:
        detail = detail[:FAILURE_CHARS] + "…"
    return RowError(
        None, "-", f"The import stopped on an unexpected error and nothing was written ({detail}). It is logged."
    )


def concurrent_write_error(exc: IntegrityError) -> RowError:
    """Return a duplicate the database refused at the write (the file's rows were all checked) as a person reads it."""
    detail = str(exc).splitlines()[0][:FAILURE_CHARS] if str(exc) else type(exc).__name__
    return RowError(
        None,
        "-",
        "The database refused this import's write: another import or a person most likely added the same "
        f"records while it ran ({detail}). Nothing was written; import the file again, it will find them.",
    )


def _finish(job: ImportJob, report: ImportReport, status: str) -> None:
    job.status = status
    job.rows_done = job.rows_total = report.rows_total
    job.new_count, job.updated_count, job.unchanged_count = report.new, report.updated, report.unchanged
    job.error_count = report.error_count
    job.errors = [{"row": e.row, "column": e.column, "message": e.message} for e in report.errors]
    job.finished_at = timezone.now()
    job.save()


def _fail(job: ImportJob, exc: BaseException) -> None:
    report = ImportReport(kind=job.kind, file_name=job.file_name)
    report.add_stop(failure_error(exc))
    _finish(job, report, ImportJob.Status.FAILED)


def order_sheet_import(
    *, sheet: Sheet, acting_user=None, dry_run: bool = False, keep_row_outcomes: bool = False
) -> ImportReport:
    """Import an order sheet: partners, customers, agreements, products, orders and order lines."""
    return sheet_import(
        kind=ImportJob.Kind.ORDER_SHEET,
        sheet=sheet,
        acting_user=acting_user,
        dry_run=dry_run,
        keep_row_outcomes=keep_row_outcomes,
    )


def agreements_import(
    *, sheet: Sheet, acting_user=None, dry_run: bool = False, keep_row_outcomes: bool = False
) -> ImportReport:
    """Import an agreements sheet: partners, customers and agreements."""
    return sheet_import(
        kind=ImportJob.Kind.AGREEMENTS,
        sheet=sheet,
        acting_user=acting_user,
        dry_run=dry_run,
        keep_row_outcomes=keep_row_outcomes,
    )


def file_import(*, kind: str, path: str, acting_user=None, dry_run: bool = False) -> ImportReport:
    """Import a sheet file from disk; a file that is no sheet gives one clear error."""
    try:
        with open(path, "rb") as handle:
            sheet = open_sheet(handle, file_name=path.rsplit("/", 1)[-1])
            return sheet_import(kind=kind, sheet=sheet, acting_user=acting_user, dry_run=dry_run)
    except SheetError as exc:
        report = ImportReport(kind=kind, file_name=path, dry_run=dry_run)
        report.add_stop(reading_error(exc))
        return report


def import_job_create(*, kind: str, upload: IO[bytes], file_name: str, acting_user) -> ImportJob:
    """Keep an uploaded sheet for a worker to check, and queue the check; nothing is imported yet."""
    # The rows are counted by the worker (import_job_run): a large file is not read in the request.
    job = ImportJob(
        kind=kind,
        file_name=file_name[:255],
        created_by=acting_user,
        dry_run=True,
        queued_at=timezone.now(),
    )
    job.file.save(file_name.rsplit("/", 1)[-1][:100], File(upload), save=False)
    job.save()
    _enqueue(job)
    return job


def import_job_may_confirm(*, user, job: ImportJob) -> bool:
    """Whether `user` may have the job's rows written: whoever may import that kind of sheet."""
    model = "order" if job.kind == ImportJob.Kind.ORDER_SHEET else "agreement"
    return user is not None and user.has_perm(f"licensing.add_{model}")


def import_job_confirm(*, job_id: int, acting_user) -> ImportJob:
    """Queue the real import of a checked job; refuse someone who may not import it (PermissionDenied) and a
    job that is not waiting for confirmation (ValueError)."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if not import_job_may_confirm(user=acting_user, job=job):
            raise PermissionDenied
        if job.status != ImportJob.Status.READY:
            raise ValueError(f"Import #{job.pk} is {job.get_status_display().lower()}: it cannot be confirmed.")
        job.dry_run = False
        job.status = ImportJob.Status.PENDING
        job.rows_done = 0
        job.queued_at = timezone.now()
        job.confirmed_by = acting_user if acting_user is not None and acting_user.is_authenticated else None
        job.save(update_fields=["dry_run", "status", "rows_done", "queued_at", "confirmed_by"])
        _enqueue(job)
    return job


def _enqueue(job: ImportJob) -> None:
    from licensing.tasks import import_job_run_task

    enqueue_on_commit(import_job_run_task, job.pk)


def import_job_sweep(*, now: datetime | None = None) -> list[int]:
    """Hand jobs to a worker again when their message was lost or the worker running them died.

    Claims are conditional (pending -> running), so a job queued twice still runs once; an import is
    one transaction, so a job whose worker died wrote nothing and can simply run again.
    """
    now = now or timezone.now()
    waiting_since = now - timedelta(seconds=settings.IMPORT_SWEEP_AFTER_SECONDS)
    running_since = now - timedelta(seconds=settings.IMPORT_STALE_SECONDS)
    requeued: list[int] = []
    with transaction.atomic():
        lost = ImportJob.objects.select_for_update(skip_locked=True).filter(
            status=ImportJob.Status.PENDING, queued_at__lt=waiting_since
        )
        stuck = ImportJob.objects.select_for_update(skip_locked=True).filter(
            Q(started_at__lt=running_since) | Q(started_at__isnull=True, created_at__lt=running_since),
            status=ImportJob.Status.RUNNING,
        )
        for job in [*lost, *stuck]:
            if not job.file:
                # Run in a web or command process that stopped: its transaction was rolled back.
                job.status = ImportJob.Status.FAILED
                job.finished_at = now
                job.errors = [{"row": None, "column": "-", "message": INTERRUPTED}]
                job.error_count = 1
                job.save(update_fields=["status", "finished_at", "errors", "error_count"])
                continue
            job.status = ImportJob.Status.PENDING
            job.queued_at = now
            job.save(update_fields=["status", "queued_at"])
            _enqueue(job)
            requeued.append(job.pk)
    return requeued


def _count_rows(job: ImportJob, handle: IO[bytes], key: str) -> None:
    """Count the job's rows first, for the progress of the check that follows."""
    cache.set(key, (0, False, True), timeout=86400)
    try:
        counted = measure_sheet(handle, progress=lambda rows: cache.set(key, (rows, False, True), timeout=86400)).rows
    except SheetError:
        # The check reads up to the same place and reports it, with what it finds in the rows before.
        handle.seek(0)
        counted = 0
    job.rows_total = counted
    ImportJob.objects.filter(pk=job.pk).update(rows_total=counted)
    cache.set(key, (0, False), timeout=86400)


def import_job_run(*, job_id: int) -> ImportJob | None:
    """Run a queued job (check, or check and write); a second worker on the same job does nothing."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now(), rows_done=0
    )
    if not claimed:
        return None
    job = ImportJob.objects.select_related("created_by", "confirmed_by").get(pk=job_id)
    key = _progress_key(job.pk)
    cache.set(key, (0, False), timeout=86400)
    try:
        with job.file.open("rb") as handle:
            if not job.rows_total:
                _count_rows(job, handle, key)
            sheet = open_sheet(handle, file_name=job.file_name)
            sheet_import(
                kind=job.kind,
                sheet=sheet,
                # Written in the name of whoever confirmed it; checked in the uploader's.
                acting_user=(job.confirmed_by or job.created_by) if not job.dry_run else job.created_by,
                dry_run=job.dry_run,
                job=job,
                progress=lambda done, first_pass=False: cache.set(key, (done, first_pass), timeout=86400),
            )
    except SheetError as exc:
        report = ImportReport(kind=job.kind, file_name=job.file_name)
        report.add_stop(reading_error(exc))
        _finish(job, report, ImportJob.Status.REJECTED)
    except Exception as exc:
        # Outside sheet_import's own guard: the stored file could not be opened or read.
        logger.exception("Import job %s failed", job.pk)
        _fail(job, exc)
    finally:
        cache.delete(key)
    job.refresh_from_db()
    return job
