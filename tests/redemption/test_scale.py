"""Several workers, one provider budget: real Celery workers on Redis, PostgreSQL, a provider over HTTP."""

import itertools
import threading
import time

import psycopg
import pytest
from django.db import connection
from django.test import override_settings

from redemption import binding
from redemption.gateway import budget_get
from redemption.models import SeatAllocation
from redemption.tasks import allocation_bind_task
from redemption.testing.provider_server import Fault, ProviderServer, busiest_second
from tests.conftest import requires_postgres, requires_redis
from tests.factories import AgreementFactory, OrderFactory, OrderLineFactory, SeatAllocationFactory, TenantFactory
from tests.redemption.worker import Worker, database_url, wait_for

pytestmark = [requires_postgres, requires_redis, pytest.mark.django_db(transaction=True)]
Status = SeatAllocation.Status
TOKEN = "scale-token"


@pytest.fixture
def provider(broker):
    server = ProviderServer(token=TOKEN).start()
    with override_settings(PROVIDER_BACKEND="http", PROVIDER_URL=server.url, PROVIDER_TOKEN=TOKEN, PROVIDER_TIMEOUT=5):
        budget_get().reset()
        yield server
    server.stop()


@pytest.fixture
def workers(broker, provider):
    started = []

    def start(concurrency: int = 1, name: str = "", **env):
        worker = Worker(
            broker_url=broker, provider_url=provider.url, token=TOKEN, concurrency=concurrency, name=name, **env
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def new_seats(provider, count: int, *, order=None, tenant=None) -> list[int]:
    """Queue `count` new-seat allocations on tenants the provider knows (one order unless given)."""
    order = order or OrderFactory()
    ids = []
    for _ in range(count):
        line = OrderLineFactory(order=order, quantity=1)
        allocation = SeatAllocationFactory(
            order_line=line,
            tenant=tenant or TenantFactory(customer=order.agreement.customer),
            status=Status.QUEUED,
            quantity=1,
        )
        provider.add_tenant(
            allocation.tenant.tenant_id, allocation.tenant.default_domain, allocation.tenant.display_name
        )
        ids.append(allocation.pk)
    return ids


def enqueue(ids: list[int]) -> None:
    for allocation_id in ids:
        allocation_bind_task.delay(allocation_id)


def all_bound(ids: list[int]) -> bool:
    return SeatAllocation.objects.filter(pk__in=ids, status=Status.BOUND).count() == len(ids)


def other_backends() -> tuple[int, int]:
    """Return the PostgreSQL sessions on the test database besides this one, and the advisory locks held."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (sessions,) = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        (locks,) = cursor.fetchone()
    return sessions, locks


def test_two_worker_processes_share_one_budget_and_keep_the_provider_under_its_limit(provider, workers):
    provider.rate_limit_set(10, burst=2)
    ids = new_seats(provider, 30)
    workers(concurrency=2, PROVIDER_RATE_LIMIT="10")
    started = time.monotonic()
    enqueue(ids)
    assert wait_for(lambda: all_bound(ids), timeout=60)
    # 30 calls at 10/s: about three seconds, however many processes ask at once.
    assert time.monotonic() - started > 2.5
    calls = provider.state.calls
    assert [call["status"] for call in calls].count(429) == 0
    assert len(calls) == 30 and busiest_second(calls) <= 11


def test_two_hosts_learn_a_provider_rate_lower_than_configured_from_its_429s(provider, workers):
    # The provider takes 10 calls/s; the installation was told 15. After the first refusal's pause, each
    # refusal cuts the shared rate (15, 12, 9.6/s) once, whichever host received it; then the calls go through.
    provider.rate_limit_set(10, burst=2)
    ids = new_seats(provider, 50)
    workers(name="host-a", PROVIDER_RATE_LIMIT="15")
    workers(name="host-b", PROVIDER_RATE_LIMIT="15")
    enqueue(ids)
    assert wait_for(lambda: all_bound(ids), timeout=120)
    statuses = [call["status"] for call in sorted(provider.state.calls, key=lambda call: call["at"])]
    assert statuses.count(429) <= 6 and 429 not in statuses[-20:], statuses
    assert statuses.count(201) == 50


def test_a_429_pauses_the_other_workers_calls_too(provider, workers, broker):
    import redis

    from redemption.gateway.budget import REDIS_KEY

    provider.latency = 0.05
    # Enough work that a worker not told of the pause would keep calling all through it.
    ids = new_seats(provider, 30)
    workers(name="host-a")
    workers(name="host-b")
    provider.inject(Fault("throttle", retry_after=2))
    enqueue(ids)
    assert wait_for(lambda: all_bound(ids), timeout=90)
    calls = provider.state.calls
    throttled = next(call for call in calls if call["status"] == 429)
    # The pause starts when the throttled worker has read the 429 and told the budget; it ends Retry-After
    # later. Redis keeps it on its own clock: read it on the provider's (monotonic) clock.
    client = redis.Redis.from_url(broker)
    seconds, micros = client.time()
    now = time.monotonic()
    paused_until = now - (seconds + micros / 1e6 - float(client.hget(REDIS_KEY, "paused_until")))
    paused_from = paused_until - 2
    assert throttled["at"] <= paused_from + 0.01
    during = [call for call in calls if paused_from < call["at"] < paused_until - 0.05]
    # The other worker (one process) may have had one call on its way when the pause began: no more,
    # and none once it could have heard of the pause.
    assert len(during) <= 1
    assert [call for call in during if call["at"] > paused_from + 0.5] == []
    # The work carries on after it, each binding sent once (the throttled one once more).
    assert [call for call in calls if call["at"] >= paused_until - 0.05]
    assert len([call for call in calls if call["status"] != 429]) == 30
    assert SeatAllocation.objects.filter(pk__in=ids, attempts=1).count() == 30


@pytest.mark.parametrize("pause", [1.6, 4.0], ids=["sleeps", "defers"])
def test_waiting_for_a_slot_holds_no_database_connection_or_lock(provider, workers, pause):
    first, second = new_seats(provider, 2)
    workers(concurrency=1)
    enqueue([first])
    assert wait_for(lambda: all_bound([first]))
    # The worker keeps its connection between tasks (CONN_MAX_AGE).
    assert other_backends()[0] >= 1
    budget_get().pause(seconds=pause)
    enqueue([second])
    time.sleep(0.6)
    seen = []
    while budget_get().paused_for() > 0.2:
        seen.append(other_backends())
        time.sleep(0.1)
    assert seen and set(seen) == {(0, 0)}
    assert wait_for(lambda: all_bound([second]), timeout=30)
    assert SeatAllocation.objects.get(pk=second).attempts == 1


def test_a_small_order_is_not_queued_behind_a_huge_one(provider, workers):
    tenant = TenantFactory()
    huge = new_seats(provider, 40, order=OrderFactory(agreement=AgreementFactory(customer=tenant.customer)))
    small = new_seats(provider, 2)
    enqueue(huge)
    enqueue(small)
    workers(concurrency=1)
    assert wait_for(lambda: all_bound(huge + small), timeout=90)
    done = list(SeatAllocation.objects.filter(pk__in=huge + small).order_by("bound_at").values_list("pk", flat=True))
    # Oldest first within a lane: the huge order's first ten, then the small order, then the rest.
    assert max(done.index(pk) for pk in small) < 15
    assert done[:10] == huge[:10]


def test_a_worker_process_claims_its_next_binding_while_its_call_is_in_flight_and_sends_one_call_at_a_time(
    provider, workers
):
    provider.latency = 0.3
    ids = new_seats(provider, 6)
    enqueue(ids)
    workers(concurrency=1)
    assert wait_for(lambda: all_bound(ids), timeout=60)
    allocations = list(SeatAllocation.objects.filter(pk__in=ids).order_by("first_sent_at"))
    # Each binding after the first was claimed (first_sent_at) while the one before it was still waiting
    # for the provider's answer: before that one was recorded bound.
    assert all(later.first_sent_at < earlier.bound_at for earlier, later in itertools.pairwise(allocations))
    # ...and still one call at a time, each allocation's order sent once.
    assert provider.state.most_in_flight == 1
    posts = [call for call in provider.state.calls if call["method"] == "POST"]
    assert len(posts) == len({call["request_id"] for call in posts}) == 6


def test_a_worker_stopped_during_a_call_records_its_result_before_it_exits(provider, workers):
    (allocation_id,) = new_seats(provider, 1)
    provider.inject(Fault("delay", method="POST", seconds=2))
    worker = workers(concurrency=1)
    enqueue([allocation_id])
    assert wait_for(lambda: provider.state.in_flight == 1, timeout=30, interval=0.05)
    worker.stop()
    # No worker runs now: the result was recorded before the process exited.
    assert all_bound([allocation_id])
    assert len([call for call in provider.state.calls if call["method"] == "POST"]) == 1


def test_no_installation_rate_calls_held_by_a_pause_go_spread_after_it_not_all_at_once(broker):
    budget = budget_get()
    budget.reset()
    budget.pause(seconds=0.3)
    gone = []

    def call() -> None:
        budget.take()
        gone.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert min(gone) - started >= 0.25
    # Eight callers at one instant would meet seven 429s: they go over about half a second.
    assert max(gone) - min(gone) > 0.1


def test_a_started_binding_whose_subscription_nobody_has_locked_is_taken_up_again_one_in_hand_is_not():
    left, in_hand = (SeatAllocationFactory(status=Status.BINDING) for _ in range(2))
    SeatAllocationFactory(status=Status.QUEUED)
    line = in_hand.order_line
    key = f"subscription:{line.order.agreement_id}:{line.product_id}:{in_hand.tenant_id}"
    # A worker on another host is working on `in_hand`: its session holds the subscription's lock.
    with psycopg.connect(database_url(), autocommit=True) as worker_session:
        worker_session.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
        assert binding.allocation_orphans() == [left.pk]
        # Looking took and gave back the locks it tried: nothing stays locked by this session.
        assert other_backends()[1] == 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert cursor.fetchone()[0] == 0
