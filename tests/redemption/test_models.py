import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from redemption.models import InvalidTransition, SeatAllocation, Subscription
from tests.factories import OrderLineFactory, SeatAllocationFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.django_db
Status = SeatAllocation.Status


def test_provider_subscription_id_is_unique_once_set_and_may_be_unknown_many_times():
    first = SubscriptionFactory(provider_subscription_id="sub-1")
    duplicate = SubscriptionFactory.build(
        provider_subscription_id="sub-1", tenant=first.tenant, agreement=first.agreement, product=first.product
    )
    with pytest.raises(ValidationError, match="Another subscription already has this provider subscription ID"):
        duplicate.full_clean(validate_constraints=False)
    assert SubscriptionFactory(provider_subscription_id=None).pk
    assert SubscriptionFactory(provider_subscription_id=None).pk


def test_one_live_subscription_per_agreement_product_and_tenant():
    existing = SubscriptionFactory()
    twin = Subscription(
        tenant=existing.tenant,
        agreement=existing.agreement,
        product=existing.product,
        quantity=5,
        term_end=existing.term_end,
    )
    with pytest.raises(ValidationError, match="already has a subscription for this product on this tenant"):
        twin.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        twin.save()


def test_allocation_quantity_must_be_positive():
    line = OrderLineFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        SeatAllocationFactory(order_line=line, quantity=0)


def test_nobody_approves_their_own_request():
    allocation = SeatAllocationFactory(status=Status.AWAITING_APPROVAL)
    allocation.approved_by = allocation.requested_by
    with pytest.raises(ValidationError, match="Nobody approves their own"):
        allocation.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        allocation.save(update_fields=["approved_by"])
    allocation.approved_by = UserFactory(username="second-pair-of-eyes")
    allocation.save(update_fields=["approved_by"])


def test_a_bound_allocation_names_its_subscription():
    allocation = SeatAllocationFactory(status=Status.BINDING)
    allocation.status = Status.BOUND
    with pytest.raises(IntegrityError), transaction.atomic():
        allocation.save(update_fields=["status"])


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (Status.AWAITING_APPROVAL, Status.BOUND),
        (Status.QUEUED, Status.BOUND),
        (Status.BOUND, Status.QUEUED),
        (Status.REJECTED, Status.QUEUED),
        (Status.REVERSED, Status.BOUND),
        (Status.FAILED, Status.BOUND),
    ],
)
def test_allocation_refuses_transitions_the_workflow_does_not_allow(start, target):
    allocation = SeatAllocation(status=start)
    with pytest.raises(InvalidTransition, match="cannot become"):
        allocation.transition_to(target)
    assert allocation.status == start


def test_allocation_walks_the_happy_path():
    allocation = SeatAllocation(status=Status.AWAITING_APPROVAL)
    for step in (Status.QUEUED, Status.BINDING, Status.BOUND, Status.REVERSING, Status.REVERSED):
        allocation.transition_to(step)
        assert allocation.status == step


def test_allocations_get_distinct_idempotency_keys():
    first, second = SeatAllocationFactory(), SeatAllocationFactory()
    assert first.idempotency_key != second.idempotency_key
