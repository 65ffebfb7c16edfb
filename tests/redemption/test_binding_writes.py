"""How a binding writes: under its subscription's lock, each step recorded with its history row."""

import threading
import time

import psycopg
import pytest
from django.db import IntegrityError, connection
from django.utils import timezone

from licensing.models import OrderLine
from redemption import binding, services, statements
from redemption.gateway.sandbox import SandboxGateway
from redemption.models import SandboxSubscription, SeatAllocation, Subscription
from tests.conftest import requires_postgres
from tests.redemption.conftest import line_of

pytestmark = pytest.mark.django_db
Status = SeatAllocation.Status


def queued(line, tenant, user):
    allocation = services.allocation_request(
        order_line=line, tenant=tenant, quantity=line.quantity, acting_user=user, confirm_domain=tenant.default_domain
    )
    if allocation.status == Status.AWAITING_APPROVAL:
        SeatAllocation.objects.filter(pk=allocation.pk).update(status=Status.QUEUED)
    return allocation


def other_session() -> psycopg.Connection:
    """A second PostgreSQL session on the test database, in autocommit."""
    s = connection.settings_dict
    return psycopg.connect(
        host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
        user=s["USER"],
        password=s["PASSWORD"] or None,
        dbname=s["NAME"],
        autocommit=True,
    )


def other_session_can_lock(key: str) -> bool:
    """Try the subscription's advisory lock from a second PostgreSQL session."""
    with other_session() as other:
        (taken,) = other.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key]).fetchone()
        if taken:
            other.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
        return taken


@requires_postgres
def test_nobody_else_can_change_the_subscription_while_the_provider_is_called(new_line, tenant, processor, monkeypatch):
    allocation = queued(new_line, tenant, processor)
    key = f"subscription:{new_line.order.agreement_id}:{new_line.product_id}:{tenant.pk}"
    seen = {}
    order_create = SandboxGateway.order_create

    def watched(self, **kwargs):
        seen["free_during_call"] = other_session_can_lock(key)
        return order_create(self, **kwargs)

    monkeypatch.setattr(SandboxGateway, "order_create", watched)
    assert binding.allocation_bind(allocation_id=allocation.pk).status == Status.BOUND
    assert seen == {"free_during_call": False}
    # A worker keeps its connection between tasks: the lock must not outlive the binding.
    assert other_session_can_lock(key)


@pytest.fixture
def slow_commits():
    """Make every commit that changed an allocation take half a second (a deferred trigger sleeping at COMMIT),
    so a lock released before its write is committed lets the next holder in while the write is not visible."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE CONSTRAINT TRIGGER test_slow_commit AFTER UPDATE ON redemption_seatallocation "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_slow_commit ON redemption_seatallocation")
        cursor.execute("DROP FUNCTION test_slow_commit()")


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_whoever_takes_the_lock_next_reads_the_binding_recorded(new_line, tenant, processor, monkeypatch, slow_commits):
    """As a worker runs it (autocommit): the result and the lock's release go in one round trip, the
    release after the commit, so the next holder never finds the allocation still binding, however long
    the commit takes."""
    allocation = queued(new_line, tenant, processor)
    key = f"subscription:{new_line.order.agreement_id}:{new_line.product_id}:{tenant.pk}"
    next_holder = {}
    order_create = SandboxGateway.order_create

    def take_the_lock_next():
        with other_session() as other:
            other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
            (status,) = other.execute(
                "SELECT status FROM redemption_seatallocation WHERE id = %s", [allocation.pk]
            ).fetchone()
            next_holder["status"] = status
            other.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])

    waiter = threading.Thread(target=take_the_lock_next)

    def watched(self, **kwargs):
        waiter.start()
        time.sleep(0.2)  # the other session is now waiting for the lock
        return order_create(self, **kwargs)

    monkeypatch.setattr(SandboxGateway, "order_create", watched)
    writes = []
    monkeypatch.setattr(statements, "_write_then_release", _recording(statements._write_then_release, writes))
    assert binding.allocation_bind(allocation_id=allocation.pk).status == Status.BOUND
    waiter.join(timeout=10)
    assert next_holder == {"status": Status.BOUND}
    assert len(writes) == 1  # the result released the lock itself
    assert other_session_can_lock(key)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_result_write_that_fails_writes_nothing_and_leaves_the_lock_free(new_line, tenant, processor):
    allocation = queued(new_line, tenant, processor)
    key = "subscription:test-failing-write"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
    lease = statements.Lease(key)
    # The guard refuses a jump from queued to bound: the statement fails on the server.
    change = statements.Change("allocation", SeatAllocation, {"status": Status.BOUND}, "not allowed", pk=allocation.pk)
    with pytest.raises(IntegrityError):
        statements.write_with_history([change], now=timezone.now(), then_release=lease)
    assert lease.released and other_session_can_lock(key)
    allocation.refresh_from_db()
    assert allocation.status == Status.QUEUED
    assert allocation.history.filter(history_change_reason="not allowed").count() == 0


def _recording(function, calls: list):
    def recorded(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return recorded


def test_a_new_binding_records_every_step_with_who_when_and_why(new_line, tenant, processor):
    allocation = queued(new_line, tenant, processor)
    bound = binding.allocation_bind(allocation_id=allocation.pk)
    subscription = Subscription.objects.get(pk=bound.subscription.pk)
    assert (subscription.quantity, subscription.term_end, subscription.agreement_id) == (
        10,
        new_line.ends_on,
        new_line.order.agreement_id,
    )
    steps = list(allocation.history.order_by("history_id").values("status", "history_type", "history_change_reason"))
    assert [step["status"] for step in steps[-2:]] == [Status.BINDING, Status.BOUND]
    assert steps[-2]["history_change_reason"].startswith("Binding: attempt 1; targets: New subscription of 10 seat(s)")
    assert steps[-1]["history_change_reason"] == f"Bound: {subscription}"
    created = subscription.history.get()
    assert (created.history_type, created.history_change_reason, created.quantity) == (
        "+",
        f"Created by binding {allocation.pk}",
        10,
    )
    last = allocation.history.order_by("history_id").last()
    assert last.subscription_id == subscription.pk and last.bound_at is not None


def test_added_seats_record_the_subscription_change_with_its_history(
    agreement, product, tenant, bound_subscription, processor
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = queued(line, tenant, processor)
    binding.allocation_bind(allocation_id=allocation.pk)
    bound_subscription.refresh_from_db()
    assert bound_subscription.quantity == 15
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).quantity == 15
    change = bound_subscription.history.order_by("history_id").last()
    assert (change.history_type, change.quantity, change.history_change_reason) == (
        "~",
        15,
        f"Seats added by binding {allocation.pk}",
    )
    assert SeatAllocation.objects.get(pk=allocation.pk).previous_quantity == 10
