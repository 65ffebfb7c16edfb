"""Celery application: tasks are discovered in each app's tasks.py."""

import os

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
    from django.db import close_old_connections

    close_old_connections()
