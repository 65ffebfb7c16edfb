"""Shared fixtures: people in each role, and the skip rules for real services."""

import os
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections
from django.test import Client

from config.celery import app as celery_app
from redemption.roles import roles_sync
from tests import clock

requires_postgres = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="needs PostgreSQL: set DATABASE_URL=postgres://... (make test does on CI via .ci/run)",
)


def redis_broker_url() -> str | None:
    """Return the Redis broker URL when one is configured and answering, else None."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        return None
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return None
    return url


requires_redis = pytest.mark.skipif(
    redis_broker_url() is None,
    reason="needs a Redis broker: set CELERY_BROKER_URL=redis://... to a running Redis",
)


def pytest_addoption(parser):
    parser.addoption(
        "--clock-shift-days",
        type=int,
        default=int(os.environ.get(clock.SHIFT_ENV) or 0),
        help=f"Run every test with the clock this many days ahead (also {clock.SHIFT_ENV}).",
    )


def pytest_configure(config):
    clock.shift_days_set(config.getoption("clock_shift_days"))


def pytest_report_header(config):
    days = clock.shift_days()
    return f"clock: moved {days} days ahead" if days else "clock: today"


@pytest.fixture(autouse=True)
def _moved_clock():
    """Start each test on the moved clock when the session asks for one (see tests/clock.py)."""
    days = clock.shift_days()
    if not days:
        yield
        return
    with time_machine.travel(datetime.now(UTC) + timedelta(days=days), tick=True):
        yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Create the test databases; before they are dropped, end every other session still connected.

    A live server's threads, a worker that did not exit in time, or ORM calls made inside Playwright's
    event loop (their connections live in another context) can still hold a connection at the end,
    and PostgreSQL refuses to drop a database in use.
    """
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            if conn.vendor != "postgresql":
                continue
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            conn.close()


@pytest.fixture
def broker():
    """Return the Redis broker URL, with its database emptied before and after the test."""
    import redis

    url = redis_broker_url()
    # Only the configured broker database is emptied, never the whole server.
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


class StaffClient(Client):
    """A test client whose force_login is a complete staff sign-in: the second factor included.

    Tests of sign-in itself use a plain django.test.Client and go through the login form.
    """

    def force_login(self, user, backend=None) -> None:
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        super().force_login(user, backend)
        if user.is_staff:
            device, _ = TOTPDevice.objects.get_or_create(user=user, confirmed=True, defaults={"name": "Test phone"})
            session = self.session
            session[DEVICE_ID_SESSION_KEY] = device.persistent_id
            session.save()


@pytest.fixture
def client() -> StaffClient:
    return StaffClient()


@pytest.fixture
def eager_celery():
    """Run enqueued tasks in-process, as soon as the transaction commits."""
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_eager_propagates = False


@pytest.fixture
def make_user(django_user_model):
    """Return a factory for staff users in a role ("Order processor", "Supervisor" or None for superuser)."""

    def make(username: str, role: str | None = "Order processor", password: str = "pw-for-tests-123"):
        if role and not Group.objects.filter(name=role).exists():
            roles_sync()  # a transactional test before this one flushed the migration's roles
        user = django_user_model.objects.create_user(
            username=username, password=password, is_staff=True, is_superuser=role is None
        )
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def processor(make_user):
    return make_user("processor", "Order processor")


@pytest.fixture
def supervisor(make_user):
    return make_user("boss", "Supervisor")


@pytest.fixture
def superuser(make_user):
    return make_user("root", None)
