"""Celery tasks of reconciliation: thin interfaces over its services."""

import contextlib
import logging
import random

from celery import shared_task

from redemption.gateway import ProviderTransient
from redemption.models import ReconciliationRun
from redemption.reconciliation import runs, services

logger = logging.getLogger(__name__)
CORRECTION_ATTEMPTS = 8


@shared_task(acks_late=True, ignore_result=True)
def reconciliation_run_task(run_id: int) -> None:
    """Carry out a run started from the desk."""
    # A run that stops is recorded as such; the next one resumes it.
    with contextlib.suppress(runs.RunFailed):
        runs.reconciliation_run(run=ReconciliationRun.objects.get(pk=run_id), workers=4)


@shared_task(ignore_result=True)
def reconciliation_nightly_task() -> None:
    """Reconcile every tenant (or resume the run that stopped), once a night from beat."""
    run = runs.reconciliation_start(trigger=ReconciliationRun.Trigger.NIGHTLY)
    with contextlib.suppress(runs.RunFailed):
        runs.reconciliation_run(run=run, workers=4)


@shared_task(bind=True, acks_late=True, max_retries=CORRECTION_ATTEMPTS, ignore_result=True)
def correction_apply_task(self, correction_id: int) -> None:
    """Send an approved correction to the provider; transient errors retry with backoff."""
    try:
        services.correction_apply(correction_id=correction_id, last_attempt=self.request.retries >= self.max_retries)
    except ProviderTransient as exc:
        countdown = min(300, 2 ** (self.request.retries + 1)) * random.uniform(0.5, 1.5)
        raise self.retry(countdown=countdown, exc=exc) from exc


@shared_task(acks_late=True, ignore_result=True)
def correction_sweep_task() -> int:
    """Queue again the approved corrections whose message was lost (beat)."""
    ids = services.correction_sweep()
    if ids:
        logger.info("sweep re-enqueued %d correction(s)", len(ids))
    return len(ids)
