"""A dead broker delays work; it never fails the request that saved it, and the sweeps pick the work up."""

import io
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app as celery_app
from licensing import tasks as licensing_tasks
from licensing.models import ImportJob, OrderLine
from licensing.services import import_job_create, import_job_run, import_job_sweep
from redemption import tasks as redemption_tasks
from redemption.binding import allocation_sweep
from redemption.models import SeatAllocation
from redemption.services import allocation_request
from tests.factories import OrderLineFactory, SubscriptionFactory
from tests.licensing.sheets import csv_bytes, order_row

pytestmark = pytest.mark.django_db
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def dead_broker(monkeypatch):
    # Celery prefers the CELERY_BROKER_URL environment variable over its configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", DEAD_BROKER)
    monkeypatch.setattr(celery_app.conf, "broker_url", DEAD_BROKER)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    _forget_connections()
    yield
    _forget_connections()
    celery_app.conf.task_always_eager = eager


def _forget_connections() -> None:
    """Forget Celery's pooled broker connections so that the next send connects to the current URL."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def test_binding_request_is_kept_when_the_broker_is_down_and_the_sweep_sends_it(
    dead_broker, processor, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    subscription = SubscriptionFactory(quantity=10)
    line = OrderLineFactory(
        order__agreement=subscription.agreement,
        product=subscription.product,
        kind=OrderLine.Kind.ADDITIONAL,
        quantity=5,
    )
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        allocation = allocation_request(order_line=line, tenant=subscription.tenant, quantity=5, acting_user=processor)

    allocation.refresh_from_db()
    assert allocation.status == SeatAllocation.Status.QUEUED
    assert "Broker unavailable" in caplog.text

    sent: list[int] = []
    monkeypatch.setattr(redemption_tasks.allocation_bind_task, "apply_async", lambda args, **_: sent.append(args[0]))
    later = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        allocation_sweep(now=later)
    assert sent == [allocation.pk]


def test_large_import_is_kept_when_the_broker_is_down_and_the_sweep_runs_it(
    dead_broker, processor, monkeypatch, caplog, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.IMPORT_FILES_DIR = tmp_path
    data = csv_bytes([order_row(Line=str(n)) for n in range(1, 4)])
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        job = import_job_create(
            kind="order_sheet", upload=io.BytesIO(data), file_name="orders.csv", acting_user=processor
        )

    job.refresh_from_db()
    assert job.status == ImportJob.Status.PENDING
    assert "Broker unavailable" in caplog.text

    monkeypatch.setattr(
        licensing_tasks.import_job_run_task, "apply_async", lambda args, **_: import_job_run(job_id=args[0])
    )
    assert import_job_sweep() == []  # not yet overdue
    with django_capture_on_commit_callbacks(execute=True):
        assert import_job_sweep(now=timezone.now() + timedelta(minutes=5)) == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.rows_total, job.new_count) == (ImportJob.Status.READY, 3, 3)


def test_an_import_left_running_by_a_dead_worker_runs_again_and_one_run_in_a_dead_process_fails(
    processor, monkeypatch, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.IMPORT_FILES_DIR = tmp_path
    data = csv_bytes([order_row()])
    monkeypatch.setattr(licensing_tasks.import_job_run_task, "apply_async", lambda args, **_: None)
    with django_capture_on_commit_callbacks(execute=True):
        queued = import_job_create(
            kind="order_sheet", upload=io.BytesIO(data), file_name="o.csv", acting_user=processor
        )
    long_ago = timezone.now() - timedelta(hours=2)
    ImportJob.objects.filter(pk=queued.pk).update(status=ImportJob.Status.RUNNING, started_at=long_ago)
    in_process = ImportJob.objects.create(kind="order_sheet", file_name="x.csv", status=ImportJob.Status.RUNNING)
    ImportJob.objects.filter(pk=in_process.pk).update(created_at=long_ago)

    with django_capture_on_commit_callbacks(execute=True):
        assert import_job_sweep() == [queued.pk]

    queued.refresh_from_db()
    in_process.refresh_from_db()
    assert queued.status == ImportJob.Status.PENDING
    assert in_process.status == ImportJob.Status.FAILED
