"""Celery tasks: thin interfaces over the redemption services; the database is the source of truth."""

import logging

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from redemption import binding, pipeline, throttle

logger = logging.getLogger(__name__)


# --- Seat binding ----------------------------------------------------------------------------------


class BindingTask(Task):
    """Publish each binding in its lane (a Redis broker priority), so one backlog does not hold up the others."""

    def apply_async(self, args=None, kwargs=None, **options):
        if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")) and not self.app.conf.task_always_eager:
            if options.get("retries"):
                # A binding coming back after a wait is older than anything newly queued: it goes first.
                options["priority"] = 0
            elif options.get("priority") is None and args:
                options["priority"] = throttle.allocation_lane(allocation_id=args[0])
        return super().apply_async(args, kwargs, **options)


@shared_task(
    base=BindingTask, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, ignore_result=True
)
def allocation_bind_task(self, allocation_id: int) -> None:
    """Bind one allocation; on a transient provider error, run again after the countdown the service chose."""
    try:
        if pipeline.overlapping() and not self.request.is_eager:
            pipeline.run(allocation_id, later=_bind_later)
        else:
            binding.allocation_bind(allocation_id=allocation_id)
    except binding.BindingDeferred as deferred:
        # The service already saved the attempt and its error; the attempts are bounded there.
        raise self.retry(countdown=deferred.countdown, exc=deferred) from None


def _bind_later(allocation_id: int, deferred: binding.BindingDeferred) -> None:
    """Run a binding again later whose task returned once its call started (redemption.pipeline)."""
    logger.info("allocation %s runs again in %.1f s: %s", allocation_id, deferred.countdown, deferred.reason)
    allocation_bind_task.apply_async((allocation_id,), countdown=deferred.countdown, retries=1)


@shared_task(acks_late=True, ignore_result=True)
def allocation_sweep_task() -> int:
    """Enqueue again the bindings whose broker message was lost or whose worker died."""
    ids = binding.allocation_sweep()
    if ids:
        logger.info("sweep re-enqueued %d allocation(s)", len(ids))
    return len(ids)


# --- end of seat binding ---------------------------------------------------------------------------


# --- Renewals: lifecycle and reminders, driven by beat (CELERY_BEAT_SCHEDULE["renewals-tick"]) ---


@shared_task(name="redemption.renewals_tick", ignore_result=True)
def renewals_tick() -> None:
    """Run the day's renewal work once the schedule's hour has come; otherwise retry failed reminders."""
    from redemption.renewals import renewals_tick as tick

    tick(now=timezone.now())


# Reconciliation with the provider (redemption.reconciliation): runs, the nightly schedule, corrections.
from redemption.reconciliation.tasks import (  # noqa: E402, F401
    correction_apply_task,
    correction_sweep_task,
    reconciliation_nightly_task,
    reconciliation_run_task,
)
