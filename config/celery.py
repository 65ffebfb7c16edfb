"""Celery application: tasks are discovered in each app's tasks.py."""

import os
import select

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **kwargs) -> None:
    """Treat each task like a request: keep the connection within CONN_MAX_AGE, drop it when broken.

    Celery's own Django fixup closes every connection before and after each task, which costs a new
    PostgreSQL backend per task; CELERY_DB_REUSE_MAX turns that off and this takes its place.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return  # in-process (tests, eager mode): the caller owns the connection and its transaction
    from django.db import close_old_connections, connection

    close_old_connections()
    if kwargs.get("signal") is task_prerun:
        health_check_without_round_trip(connection)


def health_check_without_round_trip(connection) -> None:
    """Do CONN_HEALTH_CHECKS' work for the task about to run without its `SELECT 1` round trip.

    Between tasks nothing is expected from PostgreSQL: a socket with something to read means the
    server ended the session (a restart, an idle timeout, pg_terminate_backend: each sends its
    FATAL before closing) or the connection is gone. Such a connection is closed and the task opens
    a new one; otherwise the check counts as done for this task.
    """
    pg = connection.connection
    if connection.vendor != "postgresql" or pg is None or connection.in_atomic_block:
        return
    try:
        readable = bool(select.select([pg.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        readable = True
    if readable or pg.closed or pg.broken:
        connection.close()
    else:
        connection.health_check_done = True
