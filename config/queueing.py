"""Hand work to Celery once the transaction that created it has committed."""

import logging

from celery import Task
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task: Task, *args, countdown: float | None = None) -> None:
    """Send `task` after commit; if the broker is down, log it and carry on.

    The database is the source of truth: every queued record is found again by a periodic sweep, so
    a dead broker delays the work instead of failing the request that saved it.
    """

    def send() -> None:
        try:
            task.apply_async(args, countdown=countdown)
        except Exception as exc:  # kombu/redis raise several types for "no broker"; none may escape
            logger.warning("Broker unavailable, %s%r left for the sweep: %s", task.name, args, exc)

    transaction.on_commit(send)
