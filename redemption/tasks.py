"""Celery tasks: thin wrappers that take ids, call one service and report."""

from celery import shared_task
from django.utils import timezone

# --- Renewals: lifecycle and reminders, driven by beat (CELERY_BEAT_SCHEDULE["renewals-tick"]) ---


@shared_task(name="redemption.renewals_tick", ignore_result=True)
def renewals_tick() -> None:
    """Run the day's renewal work once the schedule's hour has come; otherwise retry failed reminders."""
    from redemption.renewals import renewals_tick as tick

    tick(now=timezone.now())
