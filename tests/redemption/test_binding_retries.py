"""Retries and reversals never make the provider hold more seats than were bound here."""

from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from licensing.models import OrderLine
from redemption import binding, services
from redemption.gateway import ProviderFinal, ProviderTransient
from redemption.gateway.sandbox import SandboxGateway
from redemption.models import SandboxRequest, SandboxSubscription, SeatAllocation, Subscription
from tests.redemption.conftest import line_of

pytestmark = pytest.mark.django_db
Status = SeatAllocation.Status


def bind(allocation) -> SeatAllocation:
    return binding.allocation_bind(allocation_id=allocation.pk)


def bind_now(allocation) -> SeatAllocation:
    """Bind, ignoring a scheduled backoff (as the next delivery after the countdown would)."""
    SeatAllocation.objects.filter(pk=allocation.pk).update(next_attempt_at=None)
    return bind(allocation)


@pytest.fixture
def added(agreement, product, tenant, bound_subscription, processor) -> SeatAllocation:
    """5 seats added to the 10 of `bound_subscription`, bound."""
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    return bind(services.allocation_request(order_line=line, tenant=tenant, quantity=5, acting_user=processor))


@pytest.fixture
def queued_new_seats(new_line, tenant, processor, supervisor):
    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    return services.allocation_approve(allocation=allocation, acting_user=supervisor)


def order_applied_then(error):
    """Make the sandbox apply the order, then lose the answer with `error`."""
    original = SandboxGateway.order_create

    def order_create(self, **kwargs):
        original(self, **kwargs)
        raise error

    return order_create


def test_a_new_seats_order_carries_the_allocations_key_in_its_friendly_name(queued_new_seats):
    bound = bind(queued_new_seats)
    held = SandboxSubscription.objects.get(id=bound.subscription.provider_subscription_id)
    assert held.friendly_name.endswith(f"[{bound.idempotency_key}]")
    assert held.friendly_name.startswith(bound.order_line.product.description)


@override_settings(BINDING_MAX_ATTEMPTS=1)
def test_staff_retry_after_an_applied_order_whose_answer_was_lost_adopts_it(
    queued_new_seats, tenant, processor, monkeypatch
):
    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "order_create", order_applied_then(ProviderTransient("connection reset")))
        failed = bind(queued_new_seats)
    assert failed.status == Status.FAILED and not failed.last_error_final
    # An independent provider need not remember the request ID: only the key in the order finds it.
    SandboxRequest.objects.all().delete()
    services.allocation_retry(allocation=failed, acting_user=processor)
    bound = bind(failed)
    assert bound.status == Status.BOUND
    held = SandboxSubscription.objects.filter(tenant_id=tenant.tenant_id)
    assert held.count() == 1
    assert bound.subscription.provider_subscription_id == held.get().id
    assert "found at the provider" in bound.subscription.history.earliest("history_date").history_change_reason


def test_staff_retry_after_a_final_error_on_an_applied_order_looks_it_up_first(
    queued_new_seats, tenant, processor, monkeypatch
):
    with monkeypatch.context() as patched:
        patched.setattr(
            SandboxGateway, "order_create", order_applied_then(ProviderFinal("answer names no subscription"))
        )
        failed = bind(queued_new_seats)
    assert failed.status == Status.FAILED and failed.last_error_final
    retried = services.allocation_retry(allocation=failed, acting_user=processor)
    assert retried.plan_round == 1  # a refusal outright: the next call is a new request
    assert bind(retried).status == Status.BOUND
    assert SandboxSubscription.objects.filter(tenant_id=tenant.tenant_id).count() == 1
    assert Subscription.objects.get().quantity == 10


def test_a_resumed_binding_does_not_send_a_change_the_provider_already_shows(
    agreement, product, tenant, bound_subscription, processor, monkeypatch
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = services.allocation_request(order_line=line, tenant=tenant, quantity=5, acting_user=processor)
    original = SandboxGateway.subscription_patch
    sent = []

    def patch_then_drop(self, **kwargs):
        sent.append(kwargs["changes"])
        original(self, **kwargs)
        raise ProviderTransient("connection dropped after the call was applied")

    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "subscription_patch", patch_then_drop)
        with pytest.raises(binding.BindingDeferred):
            bind(allocation)
    assert bind_now(allocation).status == Status.BOUND
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).quantity == 15
    assert len(sent) == 1  # the quantity step went once; the retry saw it done


def test_reversal_is_queued_not_sent_from_the_request(added, bound_subscription, processor, supervisor):
    allocation = added
    writes = SandboxRequest.objects.count()
    reversing = services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered twice")
    assert reversing.status == Status.REVERSING
    assert reversing.reversal_requested_by == supervisor
    assert SandboxRequest.objects.count() == writes
    with pytest.raises(ValidationError, match="Only a bound allocation"):
        services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="again")


def test_a_reversal_retries_transient_provider_errors_then_completes(
    added, bound_subscription, processor, supervisor, monkeypatch
):
    allocation, line = added, added.order_line
    services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered twice")
    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "subscription_patch", _raising(ProviderTransient("503 from the provider")))
        with pytest.raises(binding.BindingDeferred):
            bind(allocation)
        allocation.refresh_from_db()
        assert allocation.status == Status.REVERSING and "503" in allocation.last_error
        with pytest.raises(binding.BindingDeferred):
            bind_now(allocation)
    reversed_ = bind_now(allocation)
    assert reversed_.status == Status.REVERSED and reversed_.attempts == 3
    held = SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id)
    assert (held.quantity, held.commitment_end) == (10, date(2027, 6, 30))
    line.refresh_from_db()
    assert line.seats_allocated == 0


def test_a_reversal_the_provider_refuses_fails_with_its_message_and_a_supervisor_retries_it(
    added, bound_subscription, processor, supervisor, monkeypatch
):
    allocation = added
    services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered twice")
    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "subscription_patch", _raising(ProviderFinal("Provider answered 409: locked")))
        failed = bind(allocation)
    assert failed.status == Status.REVERSAL_FAILED and "409: locked" in failed.last_error
    with pytest.raises(ValidationError, match="Only a supervisor can retry a reversal"):
        services.allocation_retry(allocation=failed, acting_user=processor)
    retried = services.allocation_retry(allocation=failed, acting_user=supervisor)
    assert (retried.status, retried.plan_round) == (Status.REVERSING, 1)
    assert bind(retried).status == Status.REVERSED
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).quantity == 10


def test_a_reversal_waits_for_a_later_binding_of_the_same_subscription(
    agreement, product, tenant, bound_subscription, processor, supervisor
):
    first = bind(
        services.allocation_request(
            order_line=line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5), tenant=tenant, quantity=5,
            acting_user=processor,
        )
    )  # fmt: skip
    services.allocation_request(
        order_line=line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 2, line_number=2),
        tenant=tenant,
        quantity=2,
        acting_user=processor,
    )
    with pytest.raises(ValidationError, match="must be reversed or finish first"):
        services.allocation_reverse(allocation=first, acting_user=supervisor, reason="Ordered twice")


def test_the_sweep_resumes_a_reversal_whose_worker_died(added, bound_subscription, processor, supervisor, time_machine):
    allocation = added
    reversing = services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered twice")
    time_machine.move_to(reversing.updated_at + timedelta(minutes=5))
    assert binding.allocation_sweep() == [allocation.pk]


def _raising(error):
    def call(self, **kwargs):
        raise error

    return call


@override_settings(BINDING_MAX_ATTEMPTS=1)
def test_a_change_retried_on_a_later_day_is_planned_for_that_day_under_new_request_ids(
    agreement, product, tenant, bound_subscription, processor, monkeypatch, time_machine
):
    time_machine.move_to(date(2026, 12, 1))
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 10)
    allocation = services.allocation_request(order_line=line, tenant=tenant, quantity=10, acting_user=processor)
    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "subscription_patch", _raising(ProviderTransient("timed out")))
        failed = bind(allocation)
    first_end = failed.target_term_end
    time_machine.move_to(date(2026, 12, 15))
    retried = services.allocation_retry(allocation=failed, acting_user=processor)
    bound = bind(retried)
    assert bound.status == Status.BOUND and bound.plan_round == 1
    # Rule 7: blended from the day it is applied, 14 days later.
    assert bound.target_term_end == services.blended_end(
        today=date(2026, 12, 15), end=date(2027, 6, 30), old_qty=10, added_qty=10, term_months=12
    )
    assert bound.target_term_end != first_end


def test_an_order_that_went_through_is_never_topped_up_on_another_subscription(
    agreement, product, tenant, processor, supervisor, monkeypatch
):
    first, second = (line_of(agreement, product, OrderLine.Kind.NEW, 10, line_number=n) for n in (1, 2))
    lost = services.allocation_request(
        order_line=first, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    lost = services.allocation_approve(allocation=lost, acting_user=supervisor)
    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "order_create", order_applied_then(ProviderFinal("answer names nothing")))
        assert bind(lost).status == Status.FAILED
    other = services.allocation_request(
        order_line=second, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    other = services.allocation_approve(allocation=other, acting_user=supervisor)
    assert bind(other).status == Status.BOUND  # a second subscription was ordered: the first is unknown here
    retried = services.allocation_retry(allocation=lost, acting_user=processor)
    refused = bind(retried)
    assert refused.status == Status.FAILED
    assert "An earlier order of this binding went through at the provider" in refused.last_error
    assert sorted(SandboxSubscription.objects.values_list("quantity", flat=True)) == [10, 10]


def _request_again(line, tenant, processor, supervisor) -> SeatAllocation:
    line.refresh_from_db()
    allocation = services.allocation_request(
        order_line=line,
        tenant=tenant,
        quantity=line.quantity,
        confirm_domain=tenant.default_domain,
        acting_user=processor,
    )
    if allocation.status == Status.AWAITING_APPROVAL:
        allocation = services.allocation_approve(allocation=allocation, acting_user=supervisor)
    return allocation


def test_new_seats_bound_again_after_their_reversal_reactivate_the_subscription_not_double_it(
    queued_new_seats, new_line, tenant, processor, supervisor
):
    first = bind(queued_new_seats)
    services.allocation_reverse(allocation=first, acting_user=supervisor, reason="Bound by mistake")
    assert bind(first).status == Status.REVERSED
    held = SandboxSubscription.objects.get()
    assert (held.quantity, held.status) == (10, "suspended")

    second = bind(_request_again(new_line, tenant, processor, supervisor))

    assert second.status == Status.BOUND, second.last_error
    ours, held = Subscription.objects.get(), SandboxSubscription.objects.get()
    assert (ours.quantity, ours.status, ours.term_end) == (10, Subscription.Status.ACTIVE, new_line.ends_on)
    assert (held.quantity, held.status, held.commitment_end) == (10, "active", new_line.ends_on)
    # Undoing it again suspends the subscription again, at the provider too.
    services.allocation_reverse(allocation=second, acting_user=supervisor, reason="Still the wrong order")
    assert bind(second).status == Status.REVERSED
    held.refresh_from_db()
    assert (held.quantity, held.status) == (10, "suspended")
    assert Subscription.objects.get().status == Subscription.Status.SUSPENDED


def test_seats_are_not_added_to_a_subscription_suspended_at_the_provider(
    agreement, product, tenant, bound_subscription, processor
):
    Subscription.objects.filter(pk=bound_subscription.pk).update(status=Subscription.Status.SUSPENDED)
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    with pytest.raises(ValidationError, match="is suspended at the provider"):
        services.allocation_request(order_line=line, tenant=tenant, quantity=5, acting_user=processor)
    line.refresh_from_db()
    assert line.seats_allocated == 0 and not SeatAllocation.objects.filter(order_line=line).exists()


def test_a_queued_binding_whose_subscription_was_suspended_meanwhile_fails_with_nothing_sent(added, supervisor):
    # `added` was bound; queue 5 more, then the subscription is suspended before the worker runs.
    line = line_of(added.order_line.order.agreement, added.order_line.product, OrderLine.Kind.ADDITIONAL, 3, 2)
    queued = services.allocation_request(order_line=line, tenant=added.tenant, quantity=3, acting_user=supervisor)
    Subscription.objects.filter(pk=added.subscription_id).update(status=Subscription.Status.SUSPENDED)
    sent = SandboxRequest.objects.count()
    failed = bind(queued)
    assert (failed.status, failed.last_error_final) == (Status.FAILED, True)
    assert "is suspended at the provider" in failed.last_error
    assert SandboxRequest.objects.count() == sent


def test_a_failed_binding_whose_order_went_through_cannot_be_given_up_only_retried(
    queued_new_seats, new_line, tenant, processor, supervisor, monkeypatch
):
    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "order_create", order_applied_then(ProviderFinal("Answer names nothing")))
        failed = bind(queued_new_seats)
    assert failed.status == Status.FAILED

    with pytest.raises(ValidationError, match="went through at the provider"):
        services.allocation_reject(allocation=failed, acting_user=supervisor, reason="Looks failed")
    failed.refresh_from_db()
    new_line.refresh_from_db()
    assert failed.status == Status.FAILED and new_line.seats_left == 0
    # Retrying records the order the provider holds: one subscription of 10 seats.
    services.allocation_retry(allocation=failed, acting_user=processor)
    assert bind(failed).status == Status.BOUND
    assert list(SandboxSubscription.objects.values_list("quantity", flat=True)) == [10]


def test_added_seats_whose_quantity_went_through_but_whose_end_was_refused_cannot_be_given_up(
    agreement, product, tenant, bound_subscription, processor, supervisor, monkeypatch, time_machine
):
    time_machine.move_to(date(2026, 12, 1))
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    queued = services.allocation_request(order_line=line, tenant=tenant, quantity=5, acting_user=processor)
    original = SandboxGateway.subscription_patch

    def refuse_the_end(self, *, changes, **kwargs):
        if "commitmentEndDate" in changes:
            raise ProviderFinal("Provider answered 400: the end date cannot change now")
        return original(self, changes=changes, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(SandboxGateway, "subscription_patch", refuse_the_end)
        failed = bind(queued)
    assert (failed.status, failed.target_quantity) == (Status.FAILED, 15)
    assert failed.target_term_end != failed.previous_term_end
    assert SandboxSubscription.objects.get().quantity == 15  # the first step went through
    assert "The provider had already applied part of this binding (quantity 15)" in failed.last_error

    with pytest.raises(ValidationError, match="shows the quantity this binding planned"):
        services.allocation_reject(allocation=failed, acting_user=supervisor, reason="Looks failed")
    line.refresh_from_db()
    assert (Status(SeatAllocation.objects.get(pk=failed.pk).status), line.seats_left) == (Status.FAILED, 0)


def test_a_failed_binding_the_provider_refused_is_given_up_and_its_seats_go_back(
    queued_new_seats, new_line, supervisor, monkeypatch
):
    with monkeypatch.context() as patched:
        patched.setattr(
            SandboxGateway, "order_create", lambda self, **kwargs: (_ for _ in ()).throw(ProviderFinal("No"))
        )
        failed = bind(queued_new_seats)
    assert failed.status == Status.FAILED
    assert services.allocation_reject(allocation=failed, acting_user=supervisor, reason="Refused").status == (
        Status.REJECTED
    )
    new_line.refresh_from_db()
    assert new_line.seats_left == 10 and not SandboxSubscription.objects.exists()
