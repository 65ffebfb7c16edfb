"""The binding services: refusals, four eyes, the seat-day maths, binding and reversal."""

import uuid
from datetime import date, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from licensing.models import OrderLine
from redemption import binding, services
from redemption.gateway import ProviderFinal
from redemption.gateway.sandbox import SandboxGateway
from redemption.models import SandboxSubscription, SeatAllocation, Subscription
from tests.factories import CustomerFactory, TenantFactory
from tests.redemption.conftest import known_to_provider, line_of

pytestmark = pytest.mark.django_db
Status = SeatAllocation.Status


def request(line, tenant, user, quantity=None, **kwargs):
    return services.allocation_request(
        order_line=line, tenant=tenant, quantity=quantity or line.quantity, acting_user=user, **kwargs
    )


def assert_nothing_written(line):
    line.refresh_from_db()
    assert line.seats_allocated == 0
    assert not SeatAllocation.objects.exists()


def bind(allocation):
    return binding.allocation_bind(allocation_id=allocation.pk)


def test_tenant_of_another_customer_is_refused(new_line, processor):
    stranger = known_to_provider(TenantFactory(customer=CustomerFactory(), default_domain="other.onmicrosoft.com"))
    with pytest.raises(ValidationError, match="seats only go to a tenant of the agreement's own customer"):
        request(new_line, stranger, processor, confirm_domain="other.onmicrosoft.com")
    assert_nothing_written(new_line)


def test_more_seats_than_left_is_refused(new_line, tenant, processor):
    with pytest.raises(ValidationError, match="has 10 of 10 seat"):
        request(new_line, tenant, processor, quantity=11, confirm_domain=tenant.default_domain)
    assert_nothing_written(new_line)


def test_new_seats_need_the_typed_domain(new_line, tenant, processor):
    with pytest.raises(ValidationError, match="Type the tenant's default domain"):
        request(new_line, tenant, processor)
    assert_nothing_written(new_line)


def test_typed_domain_that_is_not_the_tenants_is_refused(new_line, tenant, processor):
    with pytest.raises(ValidationError, match="is not this tenant's default domain"):
        request(new_line, tenant, processor, confirm_domain="northwindlabs.onmicrosoft.com")
    assert_nothing_written(new_line)


def test_typed_domain_ignores_case_and_spaces(new_line, tenant, supervisor):
    allocation = request(new_line, tenant, supervisor, confirm_domain="  NorthWind.onmicrosoft.com ")
    assert allocation.status == Status.AWAITING_APPROVAL


def test_identity_reported_differently_by_the_provider_is_refused(new_line, customer, processor):
    tenant = TenantFactory(customer=customer, default_domain="northwind.onmicrosoft.com")
    services_tenant = known_to_provider(tenant)
    services_tenant.default_domain = "contoso.onmicrosoft.com"
    from redemption.gateway.sandbox import sandbox_tenant_add

    sandbox_tenant_add(tenant_id=tenant.tenant_id, domain="contoso.onmicrosoft.com", company_name="Contoso")
    tenant.refresh_from_db()
    with pytest.raises(ValidationError, match=r"default domain contoso\.onmicrosoft\.com instead of northwind"):
        request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    assert_nothing_written(new_line)
    tenant.refresh_from_db()
    assert tenant.verified_at is None


def test_tenant_unknown_to_the_provider_is_refused(new_line, customer, processor):
    tenant = TenantFactory(customer=customer, default_domain="ghost.onmicrosoft.com")
    with pytest.raises(ValidationError, match="The provider knows no tenant with ID"):
        request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    assert_nothing_written(new_line)


@override_settings(SANDBOX_FAILURE_RATE=2.0)
def test_provider_unavailable_while_resolving_identity_says_try_again(new_line, tenant, processor, monkeypatch):
    monkeypatch.setattr("redemption.gateway.sandbox.time.sleep", lambda seconds: None)
    with pytest.raises(ValidationError, match="provider is unavailable right now and nothing was saved"):
        request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    assert_nothing_written(new_line)


def test_a_refusal_while_resolving_identity_is_told_as_a_refusal_not_as_try_again(
    new_line, tenant, processor, monkeypatch
):
    def refuse(self, **kwargs):
        raise ProviderFinal("Provider answered 403: this partner may not read the tenant")

    monkeypatch.setattr(SandboxGateway, "customer_identity", refuse)
    with pytest.raises(ValidationError) as refused:
        request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    assert (refused.value.code, refused.value.messages) == (
        "provider_refused",
        ["Provider answered 403: this partner may not read the tenant"],
    )
    assert_nothing_written(new_line)


def test_other_tenant_than_the_agreements_needs_a_reason(agreement, product, tenant, bound_subscription, processor):
    other = known_to_provider(TenantFactory(customer=tenant.customer, default_domain="northwindlabs.onmicrosoft.com"))
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    with pytest.raises(ValidationError, match="needs a written reason and a supervisor's approval"):
        request(line, other, processor, confirm_domain=other.default_domain)
    assert_nothing_written(line)
    allocation = request(line, other, processor, confirm_domain=other.default_domain, reason="Customer moved")
    assert allocation.status == Status.AWAITING_APPROVAL
    assert any("Affinity override" in r for r in allocation.approval_reasons)


def test_a_failed_binding_still_holds_the_agreement_to_its_tenant(agreement, new_line, tenant, processor):
    # The first binding of a new agreement failed at the provider: its seats are still held and a retry
    # would bind them, so the agreement's seats stay with its tenant until it is rejected.
    known_to_provider(tenant)
    first = request(new_line, tenant, processor, quantity=5, confirm_domain=tenant.default_domain)
    for status in (Status.QUEUED, Status.BINDING, Status.FAILED):
        SeatAllocation.objects.filter(pk=first.pk).update(status=status)
    other = known_to_provider(TenantFactory(customer=tenant.customer, default_domain="northwindlabs.onmicrosoft.com"))
    with pytest.raises(ValidationError, match="needs a written reason and a supervisor's approval"):
        request(new_line, other, processor, quantity=5, confirm_domain=other.default_domain)


def test_additional_seats_go_to_the_agreements_tenant_without_typing(
    agreement, product, tenant, bound_subscription, processor, django_capture_on_commit_callbacks
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        allocation = request(line, tenant, processor)
    assert allocation.status == Status.QUEUED
    assert len(callbacks) == 1
    line.refresh_from_db()
    assert line.seats_allocated == 5


def test_first_binding_to_a_tenant_waits_for_a_supervisor(new_line, tenant, processor):
    allocation = request(new_line, tenant, processor, quantity=3, confirm_domain=tenant.default_domain)
    assert allocation.status == Status.AWAITING_APPROVAL
    assert allocation.approval_reasons == [f"First binding to {tenant.default_domain}"]
    tenant.refresh_from_db()
    assert tenant.verified_domain == tenant.default_domain


@override_settings(BINDING_APPROVAL_THRESHOLD=4)
def test_binding_over_the_threshold_waits_for_a_supervisor(agreement, product, tenant, bound_subscription, processor):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    assert request(line, tenant, processor).approval_reasons == ["More than 4 seats"]


@override_settings(BINDING_APPROVAL_THRESHOLD=4)
def test_a_binding_split_into_small_ones_waits_for_a_supervisor_once_the_line_is_over_the_threshold(
    agreement, product, tenant, bound_subscription, processor, supervisor
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 9)
    whole = request(line, tenant, processor)
    services.allocation_reject(allocation=whole, acting_user=supervisor, reason="Not this many")
    line.refresh_from_db()
    first = request(line, tenant, processor, quantity=3)
    second = request(line, tenant, processor, quantity=3)
    assert (first.status, first.approval_reasons) == (Status.QUEUED, [])
    assert second.status == Status.AWAITING_APPROVAL
    assert second.approval_reasons == [f"More than 4 seats of {line} (3 requested before, 3 now)"]


def test_nobody_approves_their_own_request(new_line, tenant, supervisor):
    allocation = request(new_line, tenant, supervisor, confirm_domain=tenant.default_domain)
    with pytest.raises(ValidationError, match="another supervisor must approve it"):
        services.allocation_approve(allocation=allocation, acting_user=supervisor)
    allocation.refresh_from_db()
    assert allocation.status == Status.AWAITING_APPROVAL


def test_order_processor_cannot_approve(new_line, tenant, processor, make_user):
    clerk2 = make_user("clerk2")
    allocation = request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    with pytest.raises(ValidationError, match="Only a supervisor"):
        services.allocation_approve(allocation=allocation, acting_user=clerk2)


def test_approval_queues_and_binding_creates_the_subscription(
    new_line, tenant, processor, supervisor, django_capture_on_commit_callbacks
):
    allocation = request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.allocation_approve(allocation=allocation, acting_user=supervisor)
    assert len(callbacks) == 1
    allocation = bind(allocation)
    assert allocation.status == Status.BOUND
    subscription = allocation.subscription
    assert (subscription.quantity, subscription.term_end) == (10, new_line.ends_on)
    held = SandboxSubscription.objects.get(id=subscription.provider_subscription_id)
    assert (held.quantity, held.offer_id, held.tenant_id) == (10, "Q5Y-00003", tenant.tenant_id)
    history = list(
        allocation.history.order_by("history_date").values_list("history_user__username", "history_change_reason")
    )
    assert history[0] == ("processor", f"Requested; waiting for a supervisor: First binding to {tenant.default_domain}")
    assert history[1] == ("boss", "Approved and queued for binding")
    assert history[-1][1].startswith("Bound")


def test_reject_releases_the_seats_with_the_reason(new_line, tenant, processor, supervisor):
    allocation = request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    with pytest.raises(ValidationError, match="Say why"):
        services.allocation_reject(allocation=allocation, acting_user=supervisor, reason=" ")
    allocation = services.allocation_reject(allocation=allocation, acting_user=supervisor, reason="Wrong tenant")
    assert allocation.status == Status.REJECTED
    new_line.refresh_from_db()
    assert new_line.seats_allocated == 0
    assert allocation.history.first().history_change_reason == "Rejected: Wrong tenant"


@time_machine.travel(date(2027, 1, 1), tick=False)
def test_additional_seats_blend_the_end_date(agreement, product, tenant, bound_subscription, processor):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    preview = services.allocation_preview(order_line=line, tenant=tenant, quantity=5)
    # 10 seats with 180 days left, 5 seats for a 365-day term: (10*180 + 5*365) / 15 = 241.67 -> 242 days.
    assert preview.quantity == 15
    assert preview.term_end == date(2027, 1, 1) + timedelta(days=242)
    allocation = bind(request(line, tenant, processor))
    bound_subscription.refresh_from_db()
    assert allocation.status == Status.BOUND
    assert (bound_subscription.quantity, bound_subscription.term_end) == (15, preview.term_end)
    held = SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id)
    assert (held.quantity, held.commitment_end) == (15, preview.term_end)


def test_blended_end_rounds_to_the_nearest_day_and_counts_calendar_months():
    today = date(2028, 2, 1)  # the next 12 months include 29 Feb 2028? no: 2028-02-01 + 12 months = 366 days
    assert services.term_days_from(today, 12) == 366
    # Expired subscription: no days left, so only the added seats count.
    assert services.blended_end(today=today, end=date(2028, 1, 1), old_qty=1, added_qty=1, term_months=12) == (
        today + timedelta(days=183)
    )
    # 1 * 10 + 2 * 366 = 742 / 3 = 247.33 -> 247
    assert services.blended_end(
        today=today, end=today + timedelta(days=10), old_qty=1, added_qty=2, term_months=12
    ) == today + timedelta(days=247)


@time_machine.travel(date(2027, 5, 1), tick=False)
def test_renewal_starts_the_next_term_at_the_current_end(agreement, product, tenant, bound_subscription, processor):
    line = line_of(agreement, product, OrderLine.Kind.RENEWAL, 12)
    preview = services.allocation_preview(order_line=line, tenant=tenant, quantity=12)
    assert (preview.quantity, preview.term_end) == (12, date(2028, 6, 30))
    allocation = bind(request(line, tenant, processor))
    bound_subscription.refresh_from_db()
    assert allocation.status == Status.BOUND
    assert (bound_subscription.quantity, bound_subscription.term_end) == (12, date(2028, 6, 30))


@time_machine.travel(date(2027, 8, 15), tick=False)
def test_renewal_after_expiry_starts_today_and_reactivates(agreement, product, tenant, bound_subscription, processor):
    Subscription.objects.filter(pk=bound_subscription.pk).update(status=Subscription.Status.EXPIRED)
    SandboxSubscription.objects.filter(id=bound_subscription.provider_subscription_id).update(status="suspended")
    line = line_of(agreement, product, OrderLine.Kind.RENEWAL, 10)
    assert services.allocation_preview(order_line=line, tenant=tenant, quantity=10).term_end == date(2028, 8, 15)
    bind(request(line, tenant, processor))
    bound_subscription.refresh_from_db()
    assert (bound_subscription.term_end, bound_subscription.status) == (date(2028, 8, 15), "active")
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).status == "active"


def test_binding_twice_binds_once(agreement, product, tenant, bound_subscription, processor):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = request(line, tenant, processor)
    bind(allocation)
    bind(allocation)
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).quantity == 15
    assert SeatAllocation.objects.get(pk=allocation.pk).attempts == 1


def test_final_provider_refusal_fails_with_its_message_and_can_be_retried(
    agreement, product, tenant, bound_subscription, processor, monkeypatch
):
    from redemption.gateway import ProviderFinal

    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = request(line, tenant, processor)

    def refuse(self, **kwargs):
        raise ProviderFinal("Provider answered 400: offer not available in this market")

    with monkeypatch.context() as patched:
        patched.setattr("redemption.gateway.sandbox.SandboxGateway.subscription_patch", refuse)
        allocation = bind(allocation)
    assert allocation.status == Status.FAILED
    assert "offer not available in this market" in allocation.last_error
    allocation = services.allocation_retry(allocation=allocation, acting_user=processor)
    assert bind(allocation).status == Status.BOUND


@override_settings(BINDING_MAX_ATTEMPTS=2, SANDBOX_FAILURE_RATE=2.0)
def test_transient_errors_retry_then_fail_after_the_bounded_attempts(
    agreement, product, tenant, bound_subscription, processor
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = request(line, tenant, processor)
    with pytest.raises(binding.BindingDeferred) as deferred:
        bind(allocation)
    assert 1 <= deferred.value.countdown <= 3
    allocation.refresh_from_db()
    assert allocation.status == Status.QUEUED and "injected failure" in allocation.last_error
    SeatAllocation.objects.filter(pk=allocation.pk).update(next_attempt_at=None)
    allocation = bind(allocation)
    assert allocation.status == Status.FAILED
    assert allocation.last_error.startswith("Gave up after 2 attempts")


def test_reversal_of_additional_seats_sets_the_subscription_back(
    agreement, product, tenant, bound_subscription, processor, supervisor
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = bind(request(line, tenant, processor))
    with pytest.raises(ValidationError, match="Only a supervisor"):
        services.allocation_reverse(allocation=allocation, acting_user=processor, reason="x")
    allocation = services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered twice")
    # The request only queues the reversal: the provider still holds the added seats.
    assert allocation.status == Status.REVERSING
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).quantity == 15
    allocation = bind(allocation)
    bound_subscription.refresh_from_db()
    assert allocation.status == Status.REVERSED
    assert (bound_subscription.quantity, bound_subscription.term_end) == (10, date(2027, 6, 30))
    held = SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id)
    assert (held.quantity, held.commitment_end) == (10, date(2027, 6, 30))
    line.refresh_from_db()
    assert line.seats_allocated == 0


def test_a_reversed_bindings_page_says_what_it_was_and_what_the_subscription_went_back_to(
    agreement, product, tenant, bound_subscription, processor, supervisor, client
):
    allocation = bind(request(line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5), tenant, processor))
    bind(services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered twice"))
    client.force_login(supervisor)

    page = client.get(reverse("admin:redemption_seatallocation_status", args=[allocation.pk])).text

    assert "Was bound to" in page and "set back to 10 seat(s), ending 2027-06-30" in page


def test_reversal_of_new_seats_suspends_the_subscription(new_line, tenant, processor, supervisor, make_user):
    allocation = request(new_line, tenant, processor, confirm_domain=tenant.default_domain)
    services.allocation_approve(allocation=allocation, acting_user=supervisor)
    allocation = bind(allocation)
    services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Wrong order")
    assert SandboxSubscription.objects.get(id=allocation.subscription.provider_subscription_id).status == "active"
    assert bind(allocation).status == Status.REVERSED
    allocation.subscription.refresh_from_db()
    assert allocation.subscription.status == Subscription.Status.SUSPENDED
    assert SandboxSubscription.objects.get(id=allocation.subscription.provider_subscription_id).status == "suspended"


def test_reversal_is_refused_after_the_window(agreement, product, tenant, bound_subscription, processor, supervisor):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = bind(request(line, tenant, processor))
    with (
        time_machine.travel(allocation.bound_at + timedelta(days=8)),
        pytest.raises(ValidationError, match="within 7 days"),
    ):
        services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Too late")
    assert SeatAllocation.objects.get(pk=allocation.pk).status == Status.BOUND


def test_a_reason_of_characters_nobody_sees_is_no_reason(
    agreement, product, tenant, bound_subscription, processor, supervisor
):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    allocation = bind(request(line, tenant, processor))
    with pytest.raises(ValidationError, match="Say why the binding is reversed"):
        services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="\u200b \u2060\u200e")
    assert SeatAllocation.objects.get(pk=allocation.pk).status == Status.BOUND
    reversed_ = services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="\u200bOrdered twice")
    assert reversed_.reversal_reason == "Ordered twice"


def test_sweep_enqueues_lost_and_abandoned_bindings(agreement, product, tenant, bound_subscription, processor):
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 6)
    lost = request(line, tenant, processor, quantity=3)
    abandoned = request(line, tenant, processor, quantity=3)
    SeatAllocation.objects.filter(pk=abandoned.pk).update(status=Status.BINDING)
    assert binding.allocation_sweep() == []
    with time_machine.travel(lost.updated_at + timedelta(seconds=200)):
        assert sorted(binding.allocation_sweep()) == sorted([lost.pk, abandoned.pk])


def test_tenant_verify_records_the_provider_identity(tenant, processor):
    tenant = services.tenant_verify(tenant=tenant, acting_user=processor)
    assert tenant.verified_by == processor
    assert str(tenant.verified_tenant_id) == str(tenant.tenant_id)


def test_tenant_record_refuses_a_domain_that_is_not_a_default_domain(customer, processor):
    with pytest.raises(ValidationError, match="not a default tenant domain"):
        services.tenant_record(
            customer=customer, domain="northwind.com", confirm_domain="northwind.com", acting_user=processor
        )


def test_the_sandbox_knows_the_tenants_an_imported_sheet_suggests_and_nothing_else(new_line):
    from redemption.gateway.sandbox import SandboxGateway

    new_line.order.suggested_tenant_domain = "contosoimported.onmicrosoft.com"
    new_line.order.save()
    first = SandboxGateway().tenant_for_domain(domain="contosoimported.onmicrosoft.com")
    again = SandboxGateway().tenant_for_domain(domain="contosoimported.onmicrosoft.com")
    assert first == again and first.company_name == "Northwind Traders"
    from redemption.gateway import ProviderNotFound

    with pytest.raises(ProviderNotFound):
        SandboxGateway().tenant_for_domain(domain="neverimported.onmicrosoft.com")


@time_machine.travel(date(2027, 5, 1), tick=False)
def test_a_renewal_is_bound_whole_never_a_term_per_part(
    agreement, product, tenant, bound_subscription, processor, client
):
    line = line_of(agreement, product, OrderLine.Kind.RENEWAL, 50)
    # Each part would set the quantity to itself and start a further term: 10 seats to 2028, then 40 to 2029.
    with pytest.raises(ValidationError, match="is a renewal: it sets the subscription to its 50 seat"):
        services.allocation_request(order_line=line, tenant=tenant, quantity=10, acting_user=processor)
    client.force_login(processor)
    url = reverse("admin:licensing_orderline_bind", args=[line.pk]) + f"?tenant={tenant.pk}"
    page = client.post(url, {"tenant": tenant.pk, "quantity": 10, "request_key": uuid.uuid4()}).content.decode()
    assert "bound whole, not 10 seat(s) of it" in page
    assert not SeatAllocation.objects.filter(order_line=line).exists()
    assert 'type="hidden" name="quantity" value="50"' in client.get(url).content.decode()

    bind(services.allocation_request(order_line=line, tenant=tenant, quantity=50, acting_user=processor))
    bound_subscription.refresh_from_db()
    assert (bound_subscription.quantity, bound_subscription.term_end) == (50, date(2028, 6, 30))


@time_machine.travel(date(2027, 8, 15), tick=False)
def test_seats_added_after_the_term_end_make_the_subscription_active_again(
    agreement, product, tenant, bound_subscription, processor
):
    # Ended 2027-06-30, expired since: days_left is 0, so the 5 added seats carry a whole term blended
    # with the 10 held: 2027-08-15 + (10 * 0 + 5 * 366) / 15 = 122 days, 2027-12-15 (rule 7).
    Subscription.objects.filter(pk=bound_subscription.pk).update(status=Subscription.Status.EXPIRED)
    line = line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5)
    preview = services.allocation_preview(order_line=line, tenant=tenant, quantity=5)
    assert (preview.quantity, preview.term_end, preview.status) == (15, date(2027, 12, 15), "active")
    bind(request(line, tenant, processor))
    bound_subscription.refresh_from_db()
    # In its term again: not expired (rule 8), and its reminders follow the new end (rule 9).
    assert (bound_subscription.quantity, bound_subscription.term_end, bound_subscription.status) == (
        15,
        date(2027, 12, 15),
        "active",
    )


@pytest.mark.parametrize("ended", [Subscription.Status.EXPIRED, Subscription.Status.DISABLED])
def test_a_renewal_of_an_ended_subscription_is_reversed_to_where_it_was(
    agreement, product, tenant, bound_subscription, processor, supervisor, ended
):
    with time_machine.travel(date(2027, 8, 15), tick=False):
        Subscription.objects.filter(pk=bound_subscription.pk).update(status=ended)
        line = line_of(agreement, product, OrderLine.Kind.RENEWAL, 8)
        allocation = bind(request(line, tenant, processor))
        bound_subscription.refresh_from_db()
        assert (bound_subscription.quantity, bound_subscription.term_end) == (8, date(2028, 8, 15))
    with time_machine.travel(date(2027, 8, 18), tick=False):
        services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Ordered by mistake")
        reversed_ = bind(allocation)
    assert reversed_.status == Status.REVERSED, reversed_.last_error
    bound_subscription.refresh_from_db()
    assert (bound_subscription.quantity, bound_subscription.term_end, bound_subscription.status) == (
        10,
        date(2027, 6, 30),
        ended,
    )
    at_provider = SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id)
    assert (at_provider.quantity, at_provider.commitment_end) == (10, date(2027, 6, 30))
    assert OrderLine.objects.get(pk=line.pk).seats_allocated == 0


def test_a_binding_retried_after_a_later_one_was_bound_blocks_that_ones_reversal(
    agreement, product, tenant, bound_subscription, processor, supervisor, monkeypatch
):
    from redemption.gateway import ProviderTransient

    first = request(line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 2, line_number=1), tenant, processor)
    patch = SandboxGateway.subscription_patch

    def unreachable(self, **kwargs):
        raise ProviderTransient("The provider is unreachable.")

    monkeypatch.setattr(SandboxGateway, "subscription_patch", unreachable)
    with override_settings(BINDING_MAX_ATTEMPTS=1):
        assert bind(first).status == Status.FAILED
    monkeypatch.setattr(SandboxGateway, "subscription_patch", patch)
    second = bind(request(line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 3, line_number=2), tenant, processor))
    services.allocation_retry(allocation=SeatAllocation.objects.get(pk=first.pk), acting_user=processor)
    assert bind(first).status == Status.BOUND  # 10 + 3, then + 2: 15
    # Setting the subscription back to before the 3 would take the 2 bound after them too.
    with pytest.raises(ValidationError, match=rf"reverse it first \(allocation {first.pk}\)|{first.pk}"):
        services.allocation_reverse(allocation=second, acting_user=supervisor, reason="Ordered by mistake")
    assert SandboxSubscription.objects.get(id=bound_subscription.provider_subscription_id).quantity == 15


def test_the_reverse_page_shows_what_the_subscription_goes_back_to_and_only_when_it_can(
    agreement, product, tenant, bound_subscription, processor, supervisor, client
):
    first = bind(request(line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 5), tenant, processor))
    client.force_login(supervisor)
    confirm = client.get(reverse("admin:redemption_seatallocation_decide", args=[first.pk, "reverse"])).text
    assert "15 -&gt; 10 seat(s), end" in confirm and "as before this binding" in confirm

    later = bind(request(line_of(agreement, product, OrderLine.Kind.ADDITIONAL, 2, 2), tenant, processor))
    status = client.get(reverse("admin:redemption_seatallocation_status", args=[first.pk])).text
    assert reverse("admin:redemption_seatallocation_decide", args=[first.pk, "reverse"]) not in status
    assert "Not reversible now: A later binding of this subscription is bound or on its way" in status
    assert f"(binding {later.pk})" in status
