"""Two people binding seats of one agreement at the same moment: the affinity rule and four eyes still hold."""

import threading
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from licensing.models import OrderLine
from redemption import services
from redemption.models import SeatAllocation
from tests.conftest import requires_postgres
from tests.factories import AgreementFactory, SubscriptionFactory, TenantFactory
from tests.redemption.conftest import known_to_provider, line_of

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]
Status = SeatAllocation.Status


@pytest.fixture
def two_tenants(customer, product):
    """Two tenants of the customer, each already holding seats of another agreement (neither is a first binding)."""
    tenants = []
    for domain in ("northwindtraders.onmicrosoft.com", "northwindlabs.onmicrosoft.com"):
        tenant = known_to_provider(TenantFactory(customer=customer, default_domain=domain))
        SubscriptionFactory(agreement=AgreementFactory(customer=customer), product=product, tenant=tenant)
        tenants.append(tenant)
    return tenants


def both_at_once(monkeypatch, asks):
    """Run the requests in threads that have all passed the checks made before any lock, then let them race."""
    barrier = threading.Barrier(len(asks), timeout=30)
    resolve = services.tenant_identity_resolve

    def resolve_then_wait(*, tenant):
        identity = resolve(tenant=tenant)
        barrier.wait()
        return identity

    monkeypatch.setattr(services, "tenant_identity_resolve", resolve_then_wait)
    outcomes = [None] * len(asks)

    def run(index, ask):
        try:
            outcomes[index] = ask()
        except ValidationError as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index, ask)) for index, ask in enumerate(asks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def ask(line, tenant, user, **kwargs):
    return lambda: services.allocation_request(
        order_line=line, tenant=tenant, quantity=5, confirm_domain=tenant.default_domain, acting_user=user, **kwargs
    )


def test_two_lines_of_an_agreement_sent_to_two_tenants_at_once_one_waits_for_the_affinity_reason(
    monkeypatch, agreement, product, two_tenants, make_user
):
    first, second = line_of(agreement, product, OrderLine.Kind.NEW, 10), line_of(agreement, product, "new", 10, 2)
    clerk, other_clerk = make_user("clerk"), make_user("clerk2")
    outcomes = both_at_once(monkeypatch, [ask(first, two_tenants[0], clerk), ask(second, two_tenants[1], other_clerk)])
    allocations = [o for o in outcomes if isinstance(o, SeatAllocation)]
    refusals = [o for o in outcomes if isinstance(o, ValidationError)]
    assert len(allocations) == 1 and len(refusals) == 1, outcomes
    assert allocations[0].status == Status.QUEUED
    winner = allocations[0].tenant.default_domain
    assert f"already has seats on {winner}" in refusals[0].messages[0]
    assert "needs a written reason and a supervisor's approval" in refusals[0].messages[0]
    assert SeatAllocation.objects.count() == 1
    assert sorted(OrderLine.objects.values_list("seats_allocated", flat=True)) == [0, 5]


def test_with_a_reason_the_one_that_lost_the_race_waits_for_a_supervisor(
    monkeypatch, agreement, product, two_tenants, make_user
):
    first, second = line_of(agreement, product, OrderLine.Kind.NEW, 10), line_of(agreement, product, "new", 10, 2)
    clerk = make_user("clerk")
    reason = "The labs tenant runs these seats"
    outcomes = both_at_once(
        monkeypatch,
        [ask(first, two_tenants[0], clerk, reason=reason), ask(second, two_tenants[1], clerk, reason=reason)],
    )
    assert all(isinstance(o, SeatAllocation) for o in outcomes), outcomes
    statuses = sorted((o.status, tuple(o.approval_reasons)) for o in SeatAllocation.objects.all())
    winner = next(o for o in outcomes if o.status == Status.QUEUED).tenant.default_domain
    assert statuses == [
        (Status.AWAITING_APPROVAL, (f"Affinity override: the agreement's seats are on {winner}",)),
        (Status.QUEUED, ()),
    ]


def test_the_same_form_sent_twice_at_once_asks_for_its_seats_once(
    monkeypatch, agreement, product, two_tenants, make_user
):
    line = line_of(agreement, product, OrderLine.Kind.NEW, 10)
    clerk = make_user("clerk")
    key = uuid.uuid4()
    outcomes = both_at_once(
        monkeypatch,
        [ask(line, two_tenants[0], clerk, request_key=key), ask(line, two_tenants[0], clerk, request_key=key)],
    )
    assert all(isinstance(o, SeatAllocation) for o in outcomes), outcomes
    assert outcomes[0].pk == outcomes[1].pk
    assert sorted([outcomes[0].repeated, outcomes[1].repeated]) == [False, True]
    assert SeatAllocation.objects.count() == 1
    assert OrderLine.objects.get(pk=line.pk).seats_allocated == 5
