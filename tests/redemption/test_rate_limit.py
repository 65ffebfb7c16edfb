"""One provider call budget for the installation: slots at the rate, a 429's pause for every caller."""

import itertools
import statistics
import threading
import time
import uuid
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from redemption import binding, services, throttle
from redemption.gateway import ProviderThrottled, budget_get
from redemption.gateway.base import OrderRequest
from redemption.gateway.budget import (
    BudgetHeldBack,
    CallBudget,
    DatabaseSchedule,
    LocalSchedule,
    RateCut,
    RedisSchedule,
)
from redemption.gateway.http import HttpGateway
from redemption.gateway.sandbox import SandboxGateway
from redemption.models import SeatAllocation
from redemption.testing.provider_server import Fault, ProviderServer
from tests.conftest import redis_broker_url
from tests.factories import AgreementFactory, OrderFactory, OrderLineFactory, SeatAllocationFactory, TenantFactory
from tests.redemption.conftest import known_to_provider

Status = SeatAllocation.Status
TENANT = uuid.UUID("0f6f1c3e-8a52-4c4b-b3a4-0d8e7c1f2a11")


# The schedule tests run outside a test transaction, as workers use the database schedule (inside one it
# takes a connection of its own).
on_the_database = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["local", "database", "redis"])
def schedule(request):
    """Each place the schedule can live, emptied before and after the test."""
    if request.param == "local":
        yield LocalSchedule()
        return
    if request.param == "database":
        found = DatabaseSchedule()
        found.reset()
        yield found
        found.reset()
        return
    url = redis_broker_url()
    if url is None:
        pytest.skip("needs a Redis broker: set CELERY_BROKER_URL=redis://... to a running Redis")
    found = RedisSchedule(url)
    found.reset()
    yield found
    found.reset()


def waits(schedule, count: int, *, rate: float, burst: int = 1, max_wait: float = 60.0) -> list[float]:
    interval = 1 / rate if rate else 0.0
    return [schedule.reserve(interval=interval, burst=burst, max_wait=max_wait)[1] for _ in range(count)]


def slots(schedule, count: int, *, rate: float, burst: int = 1) -> list[tuple[float, float]]:
    """Reserve `count` slots; return when each comes (not before, not after), on this process's clock."""
    interval = 1 / rate if rate else 0.0
    found = []
    for _ in range(count):
        before = time.monotonic()
        wait = schedule.reserve(interval=interval, burst=burst, max_wait=60.0)[1]
        found.append((before + wait, time.monotonic() + wait))
    return found


def at_offsets(found: list[tuple[float, float]], offsets: list[float]) -> bool:
    """Whether the slots can be at these offsets from the first (each slot is known within its call's time)."""
    (first_lo, first_hi), tolerance = found[0], 0.001
    return all(
        lo - first_hi - tolerance <= offset <= hi - first_lo + tolerance
        for (lo, hi), offset in zip(found, offsets, strict=True)
    )


@on_the_database
def test_calls_are_spread_evenly_at_the_rate(schedule):
    # Slots 50 ms apart, whoever asks: each caller sleeps until its own.
    found = slots(schedule, 5, rate=20)
    assert at_offsets(found, [0, 0.05, 0.1, 0.15, 0.2]), found


@on_the_database
def test_a_burst_goes_at_once_after_a_quiet_spell_then_the_rate_holds(schedule):
    assert max(waits(schedule, 3, rate=20, burst=3)) < 0.001
    time.sleep(0.2)
    found = slots(schedule, 5, rate=20, burst=3)
    # Three at once (as fast as they ask), then the rate.
    assert at_offsets(found[3:], [0, 0.05]) and found[3][0] - found[0][1] < 0.051, found


@on_the_database
def test_a_slot_further_than_the_caller_may_wait_is_not_taken(schedule):
    waits(schedule, 10, rate=20)
    reserved, wait = schedule.reserve(interval=0.05, burst=1, max_wait=0.1)
    assert not reserved and 0.4 < wait <= 0.5
    # Refused, it took nothing: the next caller gets the same slot.
    assert 0.4 < schedule.reserve(interval=0.05, burst=1, max_wait=1.0)[1] <= 0.5


@on_the_database
def test_a_pause_holds_every_callers_next_slot(schedule):
    assert waits(schedule, 1, rate=0) == [0.0]
    schedule.pause(seconds=0.5)
    assert 0.4 < schedule.paused_for() <= 0.5
    assert 0.4 < waits(schedule, 1, rate=0)[0] <= 0.5
    # A shorter pause asked meanwhile does not cut the longer one.
    schedule.pause(seconds=0.1)
    assert schedule.paused_for() > 0.3
    rated = waits(schedule, 2, rate=20)
    assert 0.3 < rated[0] <= 0.5 and 0.04 < rated[1] - rated[0] < 0.06


@on_the_database
def test_a_caller_asleep_until_its_slot_when_a_429_comes_waits_out_the_pause(schedule):
    budget = CallBudget(rate=10, burst=1, schedule=schedule)
    waits(schedule, 4, rate=10)  # the next slot is 0.4 s away
    went = []

    def call():
        budget.take()
        went.append(time.monotonic())
        connection.close()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.1)
    budget.pause(seconds=1.0)  # another worker's call was answered 429, Retry-After: 1
    paused_at = time.monotonic()
    caller.join(5)
    # Not at its slot 0.3 s later, but after the pause, in a fresh slot.
    assert went and went[0] - paused_at >= 0.95


@on_the_database
def test_without_a_rate_calls_are_never_held_back_unless_paused(schedule):
    assert max(waits(schedule, 50, rate=0)) < 0.001


def step(schedule, *, rate: float, recovery: float = 0.0) -> float:
    """Return the time between slots reserved one after the other (the schedule's pace now).

    A reading is short by the time its reservation took to ask, and a slow moment of the machine between
    two asks cuts one short by that much: the median of three readings leaves such a one out.
    """
    interval = 1 / rate
    waits = [schedule.reserve(interval=interval, burst=1, max_wait=60.0, recovery=recovery)[1] for _ in range(4)]
    return statistics.median(later - earlier for earlier, later in itertools.pairwise(waits))


@on_the_database
def test_429s_soon_after_a_pause_cut_the_rate_once_and_the_cut_is_won_back(schedule):
    # Configured 20/s (50 ms apart).
    cut = RateCut(rate=20, recovery=10, floor=1)
    # A lone 429 (a call that went out late and bunched with the next) only pauses.
    schedule.pause(seconds=0.0, cut=cut)
    assert 0.04 < step(schedule, rate=20) <= 0.0501
    # Another soon after that pause: the provider's rate is lower now. 80% of 20/s: 62.5 ms apart.
    schedule.pause(seconds=0.0, cut=cut)
    assert 0.052 < step(schedule, rate=20) <= 0.0626
    # The other answers of the same moment (calls already on their way) do not cut it again.
    schedule.pause(seconds=0.0, cut=cut)
    assert 0.052 < step(schedule, rate=20) <= 0.0626
    # Won back at 10 calls/s each second: after 0.5 s it is past 20/s, and the configured rate holds.
    time.sleep(0.5)
    assert 0.04 < step(schedule, rate=20, recovery=10) <= 0.0501


@on_the_database
def test_without_a_rate_429s_pause_and_cut_nothing(schedule):
    schedule.pause(seconds=0.0, cut=RateCut())
    schedule.pause(seconds=0.0, cut=RateCut())
    # A rate configured later starts from the configured pace.
    assert 0.04 < step(schedule, rate=20) <= 0.0501


@on_the_database
def test_the_budget_tells_the_rate_it_goes_at_after_a_cut_and_while_it_is_won_back(schedule):
    budget = CallBudget(rate=20, burst=1, schedule=schedule)
    assert budget.rate_now() == 20
    budget.cut = RateCut(rate=20, recovery=10, floor=1)
    budget.pause(seconds=0.0)
    assert budget.rate_now() == 20  # a lone 429 cuts nothing
    budget.pause(seconds=0.0)
    # 80%, and 10 calls/s won back each second since (up to 0.2 s of a slow machine's time allowed).
    assert 16 <= budget.rate_now() < 18
    time.sleep(0.5)
    assert budget.rate_now() == 20  # won back, never above the configured rate
    assert CallBudget(rate=0, burst=1, schedule=schedule).rate_now() == 0


# --- the gateways take slots -----------------------------------------------------------------------


@pytest.fixture
def server():
    server = ProviderServer(token="secret").start()
    server.add_tenant(TENANT, "northwind.onmicrosoft.com", "Northwind Traders")
    yield server
    server.stop()


ORDER = OrderRequest(
    reference_customer_id=str(TENANT),
    offer_id="Q5Y-00003",
    quantity=5,
    commitment_end=date(2027, 11, 1),
    friendly_name="O365 E3",
    partner_id="4412345",
)


def test_http_calls_go_out_at_the_budgets_rate(server):
    client = HttpGateway(
        base_url=server.url, token="secret", timeout=2, budget=CallBudget(rate=20, burst=1, schedule=LocalSchedule())
    )
    started = time.monotonic()
    for _ in range(7):
        client.subscription_list(tenant_id=TENANT)
    arrived = [call["at"] for call in server.state.calls]
    # Slots 50 ms apart from the first, taken no earlier than `started`. Each call arrives after its slot,
    # by however long the caller took to wake up and send it (longer on a busy machine), never before it.
    late_enough = [round(at - started - index * 0.05, 4) for index, at in enumerate(arrived)]
    assert len(arrived) == 7 and min(late_enough) > -0.001, late_enough


def test_a_429_pauses_every_caller_of_the_budget_not_only_the_one_throttled(server):
    shared = CallBudget(rate=0, burst=1, schedule=LocalSchedule())
    first, second = (HttpGateway(base_url=server.url, token="secret", timeout=2, budget=shared) for _ in range(2))
    server.inject(Fault("throttle", retry_after=1))
    with pytest.raises(ProviderThrottled):
        first.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)
    second.subscription_list(tenant_id=TENANT)
    throttled, listed = server.state.calls
    assert throttled["status"] == 429 and listed["status"] == 200
    assert listed["at"] - throttled["at"] >= 0.95


def test_a_caller_that_cannot_wait_so_long_is_held_back_without_a_call(server):
    client = HttpGateway(base_url=server.url, token="secret", timeout=2)
    client.budget.pause(seconds=30)
    with pytest.raises(BudgetHeldBack):
        client.order_create(tenant_id=TENANT, request_id=uuid.uuid4(), order=ORDER)
    assert server.state.calls == []


def test_a_provider_slower_than_the_configured_rate_is_learned_from_its_429s(server):
    # Configured 15/s, the provider takes 10/s: the first refusal pauses, each one after cuts the budget's
    # rate (15, 12, 9.6/s) until it is under the provider's; then the calls go through.
    server.rate_limit_set(10, burst=2)
    client = HttpGateway(
        base_url=server.url, token="secret", timeout=2, budget=CallBudget(rate=15, burst=1, schedule=LocalSchedule())
    )
    answers = []
    for _ in range(40):
        try:
            client.subscription_list(tenant_id=TENANT)
            answers.append(200)
        except ProviderThrottled:
            answers.append(429)
    assert answers.count(429) <= 4 and 429 not in answers[-20:], answers
    # Without the cut the refusals go on to the end, one soon after every pause.


def test_the_provider_server_throttles_beyond_its_rate_with_retry_after(server):
    server.rate_limit_set(5, burst=2)
    client = HttpGateway(base_url=server.url, token="secret", timeout=2)
    client.subscription_list(tenant_id=TENANT)
    client.subscription_list(tenant_id=TENANT)
    with pytest.raises(ProviderThrottled) as throttled:
        client.subscription_list(tenant_id=TENANT)
    assert throttled.value.retry_after == 1
    assert [call["status"] for call in server.state.calls] == [200, 200, 429]


# --- on the database (the embedded default: SQLite) ------------------------------------------------


@pytest.mark.django_db
@override_settings(PROVIDER_RATE_LIMIT=20, PROVIDER_RATE_BURST=1, CELERY_BROKER_URL="filesystem://")
def test_bindings_through_the_database_budget_go_out_at_the_rate(monkeypatch):
    budget = budget_get()
    assert isinstance(budget.schedule, DatabaseSchedule)
    allocations = [SeatAllocationFactory(status=Status.QUEUED, quantity=2) for _ in range(5)]
    for allocation in allocations:
        known_to_provider(allocation.tenant)
    sent = []
    order_create = SandboxGateway.order_create

    def timed(self, **kwargs):
        sent.append(time.monotonic())
        return order_create(self, **kwargs)

    monkeypatch.setattr(SandboxGateway, "order_create", timed)
    started = time.monotonic()
    for allocation in allocations:
        assert binding.allocation_bind(allocation_id=allocation.pk).status == Status.BOUND
    # The slots are 50 ms apart from the first, taken no earlier than `started`, and no call goes out before
    # its slot (it may go out later: a busy machine delays a call, never brings one forward). The 5 ms are
    # SQLite's clock, which counts whole milliseconds.
    late_enough = [round(at - started - index * 0.05, 3) for index, at in enumerate(sent)]
    assert len(sent) == 5 and min(late_enough) > -0.005, late_enough


@pytest.mark.django_db
def test_a_throttled_binding_waits_without_using_an_attempt(new_line, tenant, processor, monkeypatch):
    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, acting_user=processor, confirm_domain=tenant.default_domain
    )
    SeatAllocation.objects.filter(pk=allocation.pk).update(status=Status.QUEUED)

    def throttled(self, **kwargs):
        raise ProviderThrottled("The provider is throttling requests.", 30)

    monkeypatch.setattr(SandboxGateway, "order_create", throttled)
    with override_settings(BINDING_MAX_ATTEMPTS=1):
        for _ in range(3):
            SeatAllocation.objects.filter(pk=allocation.pk).update(next_attempt_at=None)
            with pytest.raises(binding.BindingDeferred) as deferred:
                binding.allocation_bind(allocation_id=allocation.pk)
            assert 30 <= deferred.value.countdown <= 31
    allocation.refresh_from_db()
    # Nothing reached the provider: the next attempt orders without looking the order up first.
    assert (allocation.status, allocation.attempts, allocation.first_sent_at) == (Status.QUEUED, 0, None)
    assert "throttling" in allocation.last_error


@pytest.mark.django_db
def test_a_binding_whose_slot_is_far_is_deferred_before_it_touches_anything(new_line, tenant, processor):
    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, acting_user=processor, confirm_domain=tenant.default_domain
    )
    SeatAllocation.objects.filter(pk=allocation.pk).update(status=Status.QUEUED)
    budget = budget_get()
    budget.pause(seconds=20)
    try:
        with pytest.raises(binding.BindingDeferred) as deferred:
            binding.allocation_bind(allocation_id=allocation.pk)
    finally:
        budget.reset()
    assert 19 <= deferred.value.countdown <= 21
    allocation.refresh_from_db()
    assert (allocation.status, allocation.attempts, allocation.first_sent_at) == (Status.QUEUED, 0, None)


# --- the queue behind the limit --------------------------------------------------------------------


def _queued(count: int, **fields) -> list[SeatAllocation]:
    return [SeatAllocationFactory(status=Status.QUEUED, **fields) for _ in range(count)]


def _attention(client, *, pauses: tuple[float, ...] = ()) -> dict:
    """Return the landing page's attention items by label, after the 429 pauses given (forgotten after)."""
    budget = budget_get()
    for seconds in pauses:
        budget.pause(seconds=seconds)
    try:
        return {item.label: item for item in client.get(reverse("admin:index")).context["attention"]}
    finally:
        budget.reset()


@pytest.mark.django_db
def test_the_landing_page_says_how_much_work_waits_while_throttled(client, superuser):
    client.force_login(superuser)
    _queued(3)
    assert not any(label.startswith("provider throttling") for label in _attention(client))
    with override_settings(PROVIDER_RATE_LIMIT=0.02):
        items = _attention(client)
    # 3 bindings at one call every 50 s: about 3 minutes.
    assert items["provider throttling: about 3 minutes of work queued"].count == 3
    items = _attention(client, pauses=(100,))
    assert items["provider throttling: about 2 minutes of work queued"].count == 3
    with override_settings(PROVIDER_RATE_LIMIT=0.02):
        # The provider refused calls made at 0.02/s twice in a row: the budget goes at 80% of it now.
        items = _attention(client, pauses=(0, 0))
    # 3 bindings at one call every 62.5 s: about 4 minutes, not 3.
    assert items["provider throttling: about 4 minutes of work queued"].count == 3


@pytest.mark.django_db
@override_settings(PROVIDER_RATE_LIMIT=0.1, BINDING_STALE_SECONDS=120)
def test_the_sweep_leaves_a_long_queue_to_the_rate_instead_of_sending_it_again(time_machine):
    allocations = _queued(30)
    start = timezone.now()
    time_machine.move_to(start + timedelta(seconds=200))
    # 30 bindings at 0.1 calls/s take 300 s: none is taken for lost yet.
    assert binding.allocation_sweep() == []
    time_machine.move_to(start + timedelta(seconds=500))
    assert sorted(binding.allocation_sweep()) == sorted(a.pk for a in allocations)


@pytest.mark.django_db
@override_settings(PROVIDER_RATE_LIMIT=0.1, BINDING_STALE_SECONDS=120)
def test_the_sweep_waits_on_the_rate_the_provider_taught_the_budget(time_machine):
    allocations = _queued(30)
    start = timezone.now()
    budget = budget_get()
    # Two 429s in a row at 0.1/s: the budget goes at 0.08/s, and 30 bindings take 375 s.
    budget.pause(seconds=0)
    budget.pause(seconds=0)
    try:
        time_machine.move_to(start + timedelta(seconds=450))
        assert binding.allocation_sweep() == []
        time_machine.move_to(start + timedelta(seconds=600))
        assert sorted(binding.allocation_sweep()) == sorted(a.pk for a in allocations)
    finally:
        budget.reset()


@pytest.mark.django_db
def test_a_tenants_or_orders_backlog_goes_in_later_lanes_than_a_small_order():
    tenant = TenantFactory()
    agreement = AgreementFactory(customer=tenant.customer)
    huge = OrderFactory(agreement=agreement)
    lines = [OrderLineFactory(order=huge, line_number=n + 1) for n in range(12)]
    backlog = [SeatAllocationFactory(status=Status.QUEUED, order_line=line, tenant=tenant) for line in lines]
    small = SeatAllocationFactory(status=Status.QUEUED)
    lanes = [throttle.allocation_lane(allocation_id=a.pk) for a in backlog]
    assert lanes == [0] * 10 + [3, 3]
    assert throttle.allocation_lane(allocation_id=small.pk) == 0
    # Work done (or given up) is no longer ahead of anyone.
    SeatAllocation.objects.filter(pk__in=[a.pk for a in backlog[:5]]).update(status=Status.FAILED)
    assert throttle.allocation_lane(allocation_id=backlog[11].pk) == 0
