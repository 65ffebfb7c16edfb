"""Reliability on PostgreSQL with real Celery workers on Redis against a local provider over HTTP."""

import threading
import time
import uuid
from datetime import date

import pytest
import redis
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import override_settings

from licensing.models import OrderLine
from redemption import binding, services
from redemption.models import SeatAllocation
from redemption.tasks import allocation_bind_task
from redemption.testing.provider_server import Fault, ProviderServer
from tests.conftest import requires_postgres, requires_redis
from tests.factories import (
    AgreementFactory,
    CustomerFactory,
    OrderFactory,
    OrderLineFactory,
    ProductFactory,
    SubscriptionFactory,
    TenantFactory,
)
from tests.redemption.worker import Worker, wait_for

pytestmark = [requires_postgres, requires_redis, pytest.mark.django_db(transaction=True)]
Status = SeatAllocation.Status
TOKEN = "reliability-token"


@pytest.fixture
def provider():
    server = ProviderServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def http_provider(provider):
    with override_settings(
        PROVIDER_BACKEND="http", PROVIDER_URL=provider.url, PROVIDER_TOKEN=TOKEN, PROVIDER_TIMEOUT=5
    ):
        yield provider


@pytest.fixture
def workers(broker, http_provider):
    started = []

    def start(concurrency: int = 2, **env):
        worker = Worker(
            broker_url=broker, provider_url=http_provider.url, token=TOKEN, concurrency=concurrency, **env
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def setup(http_provider, django_user_model):
    """A customer with a tenant holding 10 seats, known to the provider; lines to bind."""
    customer = CustomerFactory()
    tenant = TenantFactory(customer=customer)
    http_provider.add_tenant(tenant.tenant_id, tenant.default_domain, tenant.display_name)
    agreement = AgreementFactory(customer=customer)
    product = ProductFactory()
    subscription = SubscriptionFactory(
        agreement=agreement, product=product, tenant=tenant, quantity=10, term_end=date(2027, 6, 30)
    )
    http_provider.add_subscription(
        tenant.tenant_id,
        offer_id=product.part_number,
        quantity=10,
        end=date(2027, 6, 30),
        sub_id=subscription.provider_subscription_id,
    )

    def line(quantity: int, kind=OrderLine.Kind.ADDITIONAL) -> OrderLine:
        return OrderLineFactory(order=OrderFactory(agreement=agreement), product=product, quantity=quantity, kind=kind)

    # Transactional tests empty the database, roles included: a superuser stands in for the clerk.
    user = django_user_model.objects.create_superuser("clerk", password="pw-for-tests-123")
    return {"tenant": tenant, "subscription": subscription, "line": line, "user": user, "customer": customer}


def request(setup, line, quantity):
    return services.allocation_request(
        order_line=line, tenant=setup["tenant"], quantity=quantity, acting_user=setup["user"]
    )


def all_bound(ids) -> bool:
    return SeatAllocation.objects.filter(pk__in=ids, status=Status.BOUND).count() == len(ids)


def provider_quantity(provider, setup) -> int:
    return {s["id"]: s["quantity"] for s in provider.subscriptions_of(setup["tenant"].tenant_id)}[
        setup["subscription"].provider_subscription_id
    ]


def test_two_people_asking_for_the_last_seats_at_once_one_wins(setup, broker):
    line = setup["line"](5)
    barrier = threading.Barrier(2)
    outcomes = []

    def ask():
        barrier.wait()
        try:
            outcomes.append(request(setup, line, 5))
        except ValidationError as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [o for o in outcomes if isinstance(o, ValidationError)]
    assert len(errors) == 1 and "has 0 of 5 seat(s) left" in errors[0].messages[0]
    line.refresh_from_db()
    assert line.seats_allocated == 5
    assert SeatAllocation.objects.filter(order_line=line).count() == 1


def test_the_same_task_delivered_twice_binds_once(setup, workers, http_provider):
    ids = [request(setup, setup["line"](2), 2).pk for _ in range(5)]
    for allocation_id in ids:
        allocation_bind_task.delay(allocation_id)  # a second delivery of each
    workers(concurrency=2)
    assert wait_for(lambda: all_bound(ids))
    time.sleep(1)  # let the duplicates run out
    assert provider_quantity(http_provider, setup) == 10 + 5 * 2
    assert SeatAllocation.objects.filter(pk__in=ids, attempts=1).count() == 5


def test_a_worker_whose_database_session_was_ended_between_tasks_binds_the_next_one(setup, workers, http_provider):
    workers(concurrency=1)
    first = request(setup, setup["line"](2), 2)
    assert wait_for(lambda: all_bound([first.pk]))
    # A database restart, an idle-session timeout or an administrator ends the worker's session.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        (ended,) = cursor.fetchone()
    assert ended >= 1
    second = request(setup, setup["line"](3), 3)
    assert wait_for(lambda: all_bound([second.pk]), timeout=30)
    second.refresh_from_db()
    assert second.attempts == 1 and second.last_error == ""
    assert provider_quantity(http_provider, setup) == 15


def test_worker_killed_after_the_provider_applied_the_call(setup, workers, http_provider):
    # The provider applies the PATCH, then takes its time answering: the worker dies meanwhile.
    http_provider.inject(Fault("delay", method="PATCH", seconds=4))
    worker = workers(concurrency=1)
    allocation = request(setup, setup["line"](7), 7)
    assert wait_for(lambda: http_provider.state.applied_writes >= 1, timeout=30)
    worker.kill_children()
    assert wait_for(lambda: all_bound([allocation.pk]), timeout=60)
    assert provider_quantity(http_provider, setup) == 17
    allocation.refresh_from_db()
    assert allocation.attempts == 2
    new = request(setup, setup["line"](3), 3)
    assert wait_for(lambda: all_bound([new.pk]))
    assert provider_quantity(http_provider, setup) == 20


def test_a_worker_host_that_died_outright_has_its_binding_taken_up_by_the_next_worker_and_the_seats_land_once(
    setup, workers, http_provider
):
    # The provider applies the PATCH, then takes its time answering: the whole worker dies meanwhile,
    # with the only copy of the message (Redis keeps none of the messages being worked on).
    http_provider.inject(Fault("delay", method="PATCH", seconds=4))
    worker = workers(concurrency=1)
    allocation = request(setup, setup["line"](7), 7)
    assert wait_for(lambda: http_provider.state.applied_writes >= 1, timeout=30)
    worker.kill()
    assert SeatAllocation.objects.get(pk=allocation.pk).status == Status.BINDING
    # No sweep and no message: the worker that starts finds the binding nobody carries on.
    workers(concurrency=1)
    assert wait_for(lambda: all_bound([allocation.pk]), timeout=60)
    assert provider_quantity(http_provider, setup) == 17
    # Resumed with its stored plan: the provider is read first, and the step it shows done is not sent again.
    patches = [call["request_id"] for call in http_provider.state.calls if call["method"] == "PATCH"]
    assert len(patches) == len(set(patches))


def test_new_seats_order_replayed_after_a_dropped_connection_creates_one_subscription(setup, workers, http_provider):
    customer, tenant = setup["customer"], setup["tenant"]
    line = setup["line"](4, kind=OrderLine.Kind.NEW)
    line.product = ProductFactory()
    line.save()
    http_provider.inject(Fault("drop_after_apply", method="POST"))
    allocation = services.allocation_request(
        order_line=line, tenant=tenant, quantity=4, confirm_domain=tenant.default_domain, acting_user=setup["user"]
    )
    assert allocation.status == Status.QUEUED
    workers(concurrency=1)
    assert wait_for(lambda: all_bound([allocation.pk]), timeout=60)
    offers = [s for s in http_provider.subscriptions_of(tenant.tenant_id) if s["offerId"] == line.product.part_number]
    assert [s["quantity"] for s in offers] == [4]
    assert customer.pk


def test_sweep_recovers_allocations_whose_messages_were_flushed(setup, broker, workers, http_provider):
    ids = [request(setup, setup["line"](1), 1).pk for _ in range(6)]
    redis.Redis.from_url(broker).flushdb()
    workers(concurrency=2)
    time.sleep(2)
    assert not all_bound(ids)
    with override_settings(BINDING_STALE_SECONDS=0):
        assert sorted(binding.allocation_sweep()) == sorted(ids)
    assert wait_for(lambda: all_bound(ids))
    assert provider_quantity(http_provider, setup) == 16


def test_many_additions_to_one_subscription_across_workers_add_up(setup, workers, http_provider):
    http_provider.latency = 0.02
    ids = [request(setup, setup["line"](n), n).pk for n in range(1, 21)]
    workers(concurrency=2)
    workers(concurrency=2)
    assert wait_for(lambda: all_bound(ids), timeout=120)
    assert provider_quantity(http_provider, setup) == 10 + sum(range(1, 21))
    setup["subscription"].refresh_from_db()
    assert setup["subscription"].quantity == 220
    assert uuid.UUID(str(SeatAllocation.objects.get(pk=ids[0]).idempotency_key))


def test_staff_retry_after_an_applied_order_whose_answer_was_lost_leaves_one_subscription(
    setup, workers, http_provider
):
    # The provider applies the order and drops the answer, then stays unavailable until the worker
    # gives up; it also forgets the request ID, as an independent provider may.
    tenant = setup["tenant"]
    line = setup["line"](4, kind=OrderLine.Kind.NEW)
    line.product = ProductFactory()
    line.save()
    allocation = services.allocation_request(
        order_line=line, tenant=tenant, quantity=4, confirm_domain=tenant.default_domain, acting_user=setup["user"]
    )
    http_provider.inject(Fault("drop_after_apply", method="POST"))
    http_provider.inject(Fault("error", status=503, times=1000))
    workers(concurrency=1, BINDING_MAX_ATTEMPTS="2")
    assert wait_for(lambda: SeatAllocation.objects.get(pk=allocation.pk).status == Status.FAILED, timeout=60)
    with http_provider.lock:
        http_provider.faults.clear()
        http_provider.state.answers.clear()
    services.allocation_retry(allocation=SeatAllocation.objects.get(pk=allocation.pk), acting_user=setup["user"])
    assert wait_for(lambda: all_bound([allocation.pk]), timeout=60)
    offers = [s for s in http_provider.subscriptions_of(tenant.tenant_id) if s["offerId"] == line.product.part_number]
    assert [s["quantity"] for s in offers] == [4]
    allocation.refresh_from_db()
    assert allocation.subscription.provider_subscription_id == offers[0]["id"]
    assert sum(1 for call in http_provider.state.calls if call["method"] == "POST") == 1


def test_reversal_survives_transient_provider_errors_and_a_killed_worker(setup, workers, http_provider):
    worker = workers(concurrency=1)
    allocation = request(setup, setup["line"](5), 5)
    assert wait_for(lambda: all_bound([allocation.pk]))
    assert provider_quantity(http_provider, setup) == 15
    calls = len(http_provider.state.calls)
    services.allocation_reverse(
        allocation=SeatAllocation.objects.get(pk=allocation.pk), acting_user=setup["user"], reason="Ordered twice"
    )
    # Two 503s, then a PATCH that is applied but answered too late: the worker dies meanwhile.
    http_provider.inject(Fault("error", method="PATCH", status=503, times=2))
    http_provider.inject(Fault("delay", method="PATCH", seconds=4))
    writes = http_provider.state.applied_writes
    assert wait_for(lambda: http_provider.state.applied_writes > writes, timeout=60)
    assert calls < len(http_provider.state.calls)
    worker.kill_children()
    assert wait_for(lambda: SeatAllocation.objects.get(pk=allocation.pk).status == Status.REVERSED, timeout=90), (
        SeatAllocation.objects.get(pk=allocation.pk).last_error
    )
    assert provider_quantity(http_provider, setup) == 10
    held = {s["id"]: s for s in http_provider.subscriptions_of(setup["tenant"].tenant_id)}
    assert held[setup["subscription"].provider_subscription_id]["commitmentEndDate"] == "2027-06-30"
    allocation.refresh_from_db()
    assert allocation.attempts >= 3
    assert allocation.order_line.seats_allocated == 0


def test_a_change_applied_but_answered_with_garbage_is_looked_up_on_retry_not_left_binding(
    setup, broker, http_provider
):
    http_provider.inject(Fault("garbled", method="PATCH", body={"quantity": "many"}))
    allocation = request(setup, setup["line"](5), 5)
    with pytest.raises(binding.BindingDeferred, match="cannot be read"):
        binding.allocation_bind(allocation_id=allocation.pk)
    allocation.refresh_from_db()
    assert allocation.status == Status.QUEUED
    assert "answered 200 with a subscription that cannot be read" in allocation.last_error
    SeatAllocation.objects.filter(pk=allocation.pk).update(next_attempt_at=None)
    assert binding.allocation_bind(allocation_id=allocation.pk).status == Status.BOUND
    assert provider_quantity(http_provider, setup) == 15
    # The retry read the subscription and found the quantity applied: only the plan's other step (the
    # term end) went out, under its own request ID.
    calls = http_provider.state.calls
    assert [c["method"] for c in calls] == ["PATCH", "GET", "GET", "PATCH"]
    assert calls[0]["request_id"] != calls[3]["request_id"]
    allocation.refresh_from_db()
    assert allocation.subscription.quantity == 15
    held = http_provider.subscriptions_of(setup["tenant"].tenant_id)[0]
    assert held["commitmentEndDate"] == allocation.target_term_end.isoformat()


def test_seats_are_added_to_a_subscription_whose_provider_id_is_long_and_not_url_safe(setup, broker, http_provider):
    odd = "sub+" + "/".join(uuid.uuid4().hex for _ in range(3)) + "=="
    tenant, agreement, product = setup["tenant"], setup["subscription"].agreement, ProductFactory()
    held = SubscriptionFactory(
        agreement=agreement, product=product, tenant=tenant, quantity=10, provider_subscription_id=odd
    )
    http_provider.add_subscription(
        tenant.tenant_id, offer_id=product.part_number, quantity=10, end=held.term_end, sub_id=odd
    )
    line = OrderLineFactory(
        order=OrderFactory(agreement=agreement), product=product, quantity=5, kind=OrderLine.Kind.ADDITIONAL
    )

    allocation = request(setup, line, 5)
    assert binding.allocation_bind(allocation_id=allocation.pk).status == Status.BOUND
    assert next(s for s in http_provider.subscriptions_of(tenant.tenant_id) if s["id"] == odd)["quantity"] == 15
    held.refresh_from_db()
    assert (held.provider_subscription_id, held.quantity) == (odd, 15)
