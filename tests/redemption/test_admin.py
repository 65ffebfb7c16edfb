"""The binding flow in the admin: choose, confirm by typing, approve, watch, retry, reverse."""

import re
import uuid

import pytest
from django.urls import reverse

from licensing.models import OrderLine
from redemption.models import SeatAllocation
from tests.admin_forms import confirmation
from tests.redemption.conftest import line_of

pytestmark = pytest.mark.django_db


def test_new_seats_are_bound_by_typing_the_domain_then_approved(
    client, new_line, tenant, processor, supervisor, eager_celery, django_capture_on_commit_callbacks
):
    client.force_login(processor)
    url = reverse("admin:licensing_orderline_bind", args=[new_line.pk])
    page = client.get(url, {"tenant": tenant.pk})
    assert str(tenant.tenant_id) in page.content.decode()
    key = re.search(r'name="request_key" value="([0-9a-f-]+)"', page.content.decode())[1]
    refused = client.post(
        url, {"tenant": tenant.pk, "quantity": 10, "confirm_domain": "wrong.onmicrosoft.com", "request_key": key}
    )
    assert "is not this tenant&#x27;s default domain" in refused.content.decode()
    assert not SeatAllocation.objects.exists()
    done = client.post(
        url, {"tenant": tenant.pk, "quantity": 10, "confirm_domain": tenant.default_domain, "request_key": key}
    )
    allocation = SeatAllocation.objects.get()
    assert done.url == reverse("admin:redemption_seatallocation_status", args=[allocation.pk])
    assert allocation.status == SeatAllocation.Status.AWAITING_APPROVAL

    client.force_login(supervisor)
    approve = reverse("admin:redemption_seatallocation_decide", args=[allocation.pk, "approve"])
    # The approver sees what the binding results in, as the requester did (rule 7).
    confirm = client.get(approve).content.decode()
    assert f"<strong>10</strong> seat(s) ending <strong>{new_line.ends_on:%Y-%m-%d}</strong>" in confirm
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(approve).status_code == 302
    status = client.get(reverse("admin:redemption_seatallocation_status", args=[allocation.pk])).content.decode()
    assert 'data-status="bound"' in status
    assert "Approved and queued for binding" in status


def test_the_bind_form_sent_twice_asks_for_its_seats_once(client, new_line, tenant, processor):
    client.force_login(processor)
    url = reverse("admin:licensing_orderline_bind", args=[new_line.pk])
    form = {"tenant": tenant.pk, "quantity": 10, "confirm_domain": tenant.default_domain, "request_key": uuid.uuid4()}

    first = client.post(url, form)
    again = client.post(url, form, follow=True)

    allocation = SeatAllocation.objects.get()
    assert allocation.quantity == 10
    assert first.url == again.redirect_chain[0][0]
    assert "This form was already sent: its 10 seat(s)" in again.content.decode()
    new_line.refresh_from_db()
    assert new_line.seats_allocated == 10


def test_a_bind_form_without_its_key_asks_for_nothing(client, new_line, tenant, processor):
    client.force_login(processor)
    url = reverse("admin:licensing_orderline_bind", args=[new_line.pk])

    page = client.post(url, {"tenant": tenant.pk, "quantity": 10, "confirm_domain": tenant.default_domain})

    assert "This form is incomplete or out of date: nothing was asked" in page.content.decode()
    assert not SeatAllocation.objects.exists()


def test_a_form_key_used_for_one_line_asks_nothing_for_another(client, new_line, tenant, processor, agreement, product):
    other = line_of(agreement, product, OrderLine.Kind.NEW, 5)
    client.force_login(processor)
    key = uuid.uuid4()
    form = {"tenant": tenant.pk, "quantity": 2, "confirm_domain": tenant.default_domain, "request_key": key}
    client.post(reverse("admin:licensing_orderline_bind", args=[new_line.pk]), form)

    page = client.post(reverse("admin:licensing_orderline_bind", args=[other.pk]), form)

    assert "already asked for seats of another order line" in page.content.decode()
    assert not SeatAllocation.objects.filter(order_line=other).exists()


def test_tenants_of_other_customers_are_not_offered(client, new_line, tenant, processor):
    from tests.factories import TenantFactory

    stranger = TenantFactory(default_domain="stranger.onmicrosoft.com")
    client.force_login(processor)
    page = client.get(reverse("admin:licensing_orderline_bind", args=[new_line.pk])).content.decode()
    assert tenant.default_domain in page and stranger.default_domain not in page


def test_one_screen_queues_every_pending_add_and_renew_line(
    client, agreement, product, tenant, bound_subscription, processor, django_capture_on_commit_callbacks
):
    renewal = line_of(agreement, product, OrderLine.Kind.RENEWAL, 10, line_number=1)
    extra = OrderLine.objects.create(
        order=renewal.order,
        line_number=2,
        product=product,
        quantity=5,
        kind=OrderLine.Kind.ADDITIONAL,
        starts_on=renewal.starts_on,
        ends_on=renewal.ends_on,
    )
    client.force_login(processor)
    url = reverse("admin:licensing_order_bind", args=[renewal.order_id])
    shown = client.get(url)
    page = shown.content.decode()
    assert page.count(tenant.default_domain) == 2
    assert "15 seat(s)" in page  # the renewal's 10 plus the 5 added, chained on one subscription
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        done = client.post(url, confirmation(shown))
    assert len(callbacks) == 2
    assert sorted(SeatAllocation.objects.values_list("order_line_id", flat=True)) == sorted([renewal.pk, extra.pk])
    # On to the page that follows them by itself until they are bound.
    followed = client.get(done.url)
    assert 'data-status-url="' in followed.content.decode()
    assert client.get(done.url + "status.json").json()["counts"]["queued"] == 2


def test_reject_needs_a_reason_and_reversal_is_offered_to_supervisors(client, new_line, tenant, processor, supervisor):
    from redemption import services

    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=2, confirm_domain=tenant.default_domain, acting_user=processor
    )
    client.force_login(supervisor)
    url = reverse("admin:redemption_seatallocation_decide", args=[allocation.pk, "reject"])
    assert "Say why" in client.post(url, {"reason": ""}).content.decode()
    client.post(url, {"reason": "Customer cancelled"})
    allocation.refresh_from_db()
    assert allocation.status == SeatAllocation.Status.REJECTED
    assert allocation.rejection_reason == "Customer cancelled"


def test_verify_identity_action_on_tenants(client, tenant, processor):
    client.force_login(processor)
    client.post(
        reverse("admin:tenants_tenant_changelist"), {"action": "verify_identity", "_selected_action": [tenant.pk]}
    )
    tenant.refresh_from_db()
    assert tenant.verified_by == processor


def test_work_queue_lists_unbound_lines_with_a_bind_button(client, new_line, processor):
    client.force_login(processor)
    page = client.get(reverse("admin:licensing_orderline_changelist"), {"unbound": "yes"}).content.decode()
    assert reverse("admin:licensing_orderline_bind", args=[new_line.pk]) in page


def test_a_new_tenant_is_recorded_by_its_domain_as_the_provider_reports_it(client, customer, processor):
    from redemption.gateway.sandbox import sandbox_tenant_add

    sandbox_tenant_add(
        tenant_id="3f1c0f5e-9e7e-4b52-8f6a-1a2b3c4d5e6f", domain="newco.onmicrosoft.com", company_name="NewCo"
    )
    client.force_login(processor)
    url = reverse("admin:redemption_tenant_record", args=[customer.pk])
    looked_up = client.get(url, {"domain": " NewCo.onmicrosoft.com"}).content.decode()
    assert "3f1c0f5e-9e7e-4b52-8f6a-1a2b3c4d5e6f" in looked_up and "NewCo" in looked_up
    refused = client.post(url, {"domain": "newco.onmicrosoft.com", "confirm_domain": "newc0.onmicrosoft.com"})
    assert "Type the tenant&#x27;s default domain" in refused.content.decode()
    assert not customer.tenants.exists()
    client.post(url, {"domain": "newco.onmicrosoft.com", "confirm_domain": "NEWCO.onmicrosoft.com"})
    tenant = customer.tenants.get()
    assert (str(tenant.tenant_id), tenant.default_domain, tenant.display_name) == (
        "3f1c0f5e-9e7e-4b52-8f6a-1a2b3c4d5e6f",
        "newco.onmicrosoft.com",
        "NewCo",
    )
    assert tenant.verified_by == processor


def test_a_tenant_the_provider_does_not_know_is_not_recorded(client, customer, processor):
    client.force_login(processor)
    url = reverse("admin:redemption_tenant_record", args=[customer.pk])
    page = client.post(url, {"domain": "ghost.onmicrosoft.com", "confirm_domain": "ghost.onmicrosoft.com"})
    assert "The provider knows no tenant with the default domain ghost.onmicrosoft.com" in page.content.decode()
    assert not customer.tenants.exists()


def test_a_supervisor_rejects_several_bindings_with_one_reason(client, new_line, tenant, processor, supervisor):
    from redemption import services

    waiting = [
        services.allocation_request(
            order_line=new_line, tenant=tenant, quantity=2, confirm_domain=tenant.default_domain, acting_user=processor
        )
        for _ in range(3)
    ]
    client.force_login(supervisor)
    approvals = reverse("admin:redemption_seatallocation_changelist")
    listing = client.get(approvals, {"status__exact": "awaiting_approval"})
    assert listing.context["title"] == "Approvals"
    assert "First binding to northwind.onmicrosoft.com" in listing.content.decode()
    chosen = {"action": "reject_selected", "_selected_action": [a.pk for a in waiting[:2]], "index": "0"}
    confirm = client.post(approvals, chosen)
    assert "Reject 2 binding(s)?" in confirm.content.decode()
    confirmed = {key: value for key, value in chosen.items() if key != "index"}
    client.post(approvals, {**confirmed, "apply": "1", "reason": "Customer cancelled the order"})
    statuses = {a.pk: a.status for a in SeatAllocation.objects.all()}
    assert [statuses[a.pk] for a in waiting] == ["rejected", "rejected", "awaiting_approval"]
    assert set(SeatAllocation.objects.filter(status="rejected").values_list("rejection_reason", flat=True)) == {
        "Customer cancelled the order"
    }
    new_line.refresh_from_db()
    assert new_line.seats_allocated == 2


def test_the_work_queue_shows_customer_order_date_age_and_the_proposed_tenant(client, processor, new_line):
    new_line.order.suggested_tenant_domain = "northwind.onmicrosoft.com"
    new_line.order.save()
    client.force_login(processor)
    page = client.get(reverse("admin:licensing_orderline_changelist"), {"unbound": "yes"})
    assert page.context["title"] == "Work queue"
    text = page.content.decode()
    # The domain may wrap after a dot, never mid-name.
    assert "Northwind Traders" in text and "northwind.<wbr>onmicrosoft.<wbr>com (suggested)" in text
    assert "10 of 10" in text and "2026-11-01" in text


def test_a_supervisor_approves_several_bindings_with_one_reason(
    client, new_line, tenant, processor, supervisor, django_capture_on_commit_callbacks
):
    from redemption import services

    waiting = [
        services.allocation_request(
            order_line=new_line, tenant=tenant, quantity=2, confirm_domain=tenant.default_domain, acting_user=processor
        )
        for _ in range(2)
    ]
    client.force_login(supervisor)
    approvals = reverse("admin:redemption_seatallocation_changelist")
    chosen = {"action": "approve_selected", "_selected_action": [a.pk for a in waiting]}
    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(approvals, {**chosen, "apply": "1", "reason": "Tenant checked with the customer"})
    assert len(queued) == 2
    for allocation in waiting:
        allocation.refresh_from_db()
        assert (allocation.status, allocation.approved_by) == ("queued", supervisor)
        assert (
            allocation.history.latest("history_date").history_change_reason
            == "Approved: Tenant checked with the customer"
        )


def test_approving_from_the_list_shows_each_bindings_result_first(client, new_line, tenant, processor, supervisor):
    from redemption import services

    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    assert allocation.status == SeatAllocation.Status.AWAITING_APPROVAL
    client.force_login(supervisor)
    page = client.post(
        reverse("admin:redemption_seatallocation_changelist"),
        {"action": "approve_selected", "_selected_action": [allocation.pk], "index": "0"},
    ).content.decode()
    assert f"10 seat(s) ending {new_line.ends_on:%Y-%m-%d}" in page
    assert SeatAllocation.objects.get(pk=allocation.pk).status == SeatAllocation.Status.AWAITING_APPROVAL


def test_a_tenants_page_names_who_verified_it_without_a_link_an_order_processor_cannot_open(
    client, customer, processor
):
    from redemption.gateway.sandbox import sandbox_tenant_add

    sandbox_tenant_add(
        tenant_id="4f1c0f5e-9e7e-4b52-8f6a-1a2b3c4d5e6f", domain="namedco.onmicrosoft.com", company_name="NamedCo"
    )
    client.force_login(processor)
    url = reverse("admin:redemption_tenant_record", args=[customer.pk])
    client.post(url, {"domain": "namedco.onmicrosoft.com", "confirm_domain": "namedco.onmicrosoft.com"})
    tenant = customer.tenants.get()

    page = client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()

    assert "processor" in page
    assert reverse("admin:auth_user_change", args=[processor.pk]) not in page


def test_seats_a_supervisor_sent_back_say_why_in_the_work_queue_and_on_the_bind_page(
    client, new_line, tenant, processor, supervisor
):
    from redemption import services

    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    services.allocation_reject(allocation=allocation, acting_user=supervisor, reason="Pilot tenant not agreed")
    client.force_login(processor)

    queue = client.get(reverse("admin:licensing_orderline_changelist"), {"unbound": "yes"}).content.decode()
    bind = client.get(reverse("admin:licensing_orderline_bind", args=[new_line.pk]), {"tenant": tenant.pk})

    assert "10 seat(s) rejected" in queue and "Pilot tenant not agreed" in queue
    assert "came back: rejected" in bind.content.decode() and "Pilot tenant not agreed" in bind.content.decode()


def test_a_binding_waiting_for_a_supervisor_refreshes_for_its_requester_not_under_the_supervisors_form(
    client, new_line, tenant, processor, supervisor
):
    from redemption import services

    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    url = reverse("admin:redemption_seatallocation_status", args=[allocation.pk])
    client.force_login(processor)
    waiting = client.get(url).content.decode()
    client.force_login(supervisor)
    deciding = client.get(url).content.decode()

    assert '<meta http-equiv="refresh" content="10">' in waiting
    assert "refreshes until a supervisor decides" in waiting
    assert 'http-equiv="refresh"' not in deciding


def test_the_approvals_list_shows_the_requesters_own_reason(client, agreement, product, tenant, processor, supervisor):
    from redemption import services
    from tests.factories import TenantFactory
    from tests.redemption.conftest import known_to_provider

    first = line_of(agreement, product, OrderLine.Kind.NEW, 5)
    services.allocation_request(
        order_line=first, tenant=tenant, quantity=5, confirm_domain=tenant.default_domain, acting_user=processor
    )
    other = known_to_provider(TenantFactory(customer=agreement.customer, default_domain="northwinddev.onmicrosoft.com"))
    services.allocation_request(
        order_line=line_of(agreement, product, OrderLine.Kind.NEW, 3, 2),
        tenant=other,
        quantity=3,
        confirm_domain=other.default_domain,
        acting_user=processor,
        reason="Customer asked for the dev tenant for a pilot",
    )
    client.force_login(supervisor)

    listing = client.get(reverse("admin:redemption_seatallocation_changelist"), {"status__exact": "awaiting_approval"})

    assert f"{processor}: Customer asked for the dev tenant for a pilot" in listing.content.decode()


def test_a_supervisor_sees_whose_tenant_the_seats_go_to(client, agreement, product, tenant, processor, supervisor):
    from redemption import services
    from tests.factories import TenantFactory
    from tests.redemption.conftest import known_to_provider

    other = known_to_provider(TenantFactory(customer=agreement.customer, default_domain="fabrikamdev.onmicrosoft.com"))
    services.allocation_request(
        order_line=line_of(agreement, product, OrderLine.Kind.NEW, 5),
        tenant=tenant,
        quantity=5,
        confirm_domain=tenant.default_domain,
        acting_user=processor,
    )
    waiting = services.allocation_request(
        order_line=line_of(agreement, product, OrderLine.Kind.NEW, 3, 2),
        tenant=other,
        quantity=3,
        confirm_domain=other.default_domain,
        acting_user=processor,
        reason="Pilot",
    )
    assert waiting.status == SeatAllocation.Status.AWAITING_APPROVAL
    client.force_login(supervisor)
    customer = agreement.customer.name

    listing = client.get(reverse("admin:redemption_seatallocation_changelist"), {"status__exact": "awaiting_approval"})
    decide = client.get(reverse("admin:redemption_seatallocation_decide", args=[waiting.pk, "approve"]))
    many = client.post(
        reverse("admin:redemption_seatallocation_changelist"),
        {"action": "approve_selected", "_selected_action": [waiting.pk]},
    )
    status = client.get(reverse("admin:redemption_seatallocation_status", args=[waiting.pk]))

    assert customer in listing.content.decode()
    assert f"fabrikamdev.onmicrosoft.com</strong>, a tenant of <strong>{customer}</strong>" in decide.content.decode()
    assert f"to fabrikamdev.onmicrosoft.com of {customer}" in many.content.decode()
    assert customer in status.content.decode()


def provider_down(monkeypatch) -> list:
    """Make the provider's identity reads answer 'unavailable' (after their own wait); return the calls made."""
    from redemption.gateway.base import UNAVAILABLE_MESSAGE, ProviderUnavailable
    from redemption.gateway.sandbox import SandboxGateway

    calls = []

    def down(self, **kwargs):
        calls.append(kwargs)
        raise ProviderUnavailable(UNAVAILABLE_MESSAGE)

    monkeypatch.setattr(SandboxGateway, "tenant_for_domain", down)
    monkeypatch.setattr(SandboxGateway, "customer_identity", down)
    return calls


def test_recording_a_tenant_while_the_provider_is_down_asks_it_once(client, customer, processor, monkeypatch):
    calls = provider_down(monkeypatch)
    client.force_login(processor)
    url = reverse("admin:redemption_tenant_record", args=[customer.pk])

    page = client.post(url, {"domain": "newco.onmicrosoft.com", "confirm_domain": "newco.onmicrosoft.com"})

    assert "unavailable right now and nothing was saved" in page.content.decode()
    assert len(calls) == 1  # each read already waits its ten seconds: the page does not wait them twice
    assert not customer.tenants.exists()


def test_binding_while_the_provider_is_down_asks_it_once(client, new_line, tenant, processor, monkeypatch):
    calls = provider_down(monkeypatch)
    client.force_login(processor)
    url = reverse("admin:licensing_orderline_bind", args=[new_line.pk])
    form = {"tenant": tenant.pk, "quantity": 2, "confirm_domain": tenant.default_domain, "request_key": uuid.uuid4()}

    page = client.post(url, form)

    assert "unavailable right now and nothing was saved" in page.content.decode()
    assert len(calls) == 1
    assert not SeatAllocation.objects.exists()


def test_verifying_tenants_while_the_provider_is_down_stops_at_the_first(client, customer, processor, monkeypatch):
    from tests.factories import TenantFactory

    tenants = [TenantFactory(customer=customer) for _ in range(3)]
    calls = provider_down(monkeypatch)
    client.force_login(processor)

    page = client.post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "verify_identity", "_selected_action": [t.pk for t in tenants]},
        follow=True,
    )

    assert len(calls) == 1
    assert "2 other tenant(s) not verified: try again later." in page.content.decode()


def test_recording_a_tenant_already_on_file_says_so(client, tenant, processor):
    from tests.factories import CustomerFactory

    client.force_login(processor)
    for customer in (tenant.customer, CustomerFactory(name="Litware Inc")):
        url = reverse("admin:redemption_tenant_record", args=[customer.pk])
        form = {"domain": tenant.default_domain, "confirm_domain": tenant.default_domain}

        page = client.post(url, form)

        assert page.status_code == 200
        assert "already recorded." in page.content.decode()
    assert type(tenant).objects.count() == 1


def test_a_reason_is_kept_whole_in_the_history(new_line, tenant, processor, supervisor):
    from redemption import binding, services

    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=2, confirm_domain=tenant.default_domain, acting_user=processor
    )
    if allocation.status == SeatAllocation.Status.AWAITING_APPROVAL:
        services.allocation_approve(allocation=allocation, acting_user=supervisor)
    binding.allocation_bind(allocation_id=allocation.pk)
    why = (
        "The customer's IT lead called: these seats belong on the subsidiary's tenant, not the parent's; "
        "credit note CN-2211 to follow, and the reseller is told by mail (ticket 4411)."
    )
    assert len(why) > 100

    services.allocation_reverse(
        allocation=SeatAllocation.objects.get(pk=allocation.pk), acting_user=supervisor, reason=why
    )
    binding.allocation_bind(allocation_id=allocation.pk)

    reasons = list(SeatAllocation.objects.get(pk=allocation.pk).history.values_list("history_change_reason", flat=True))
    assert any(reason.endswith(why) for reason in reasons)


def test_the_orders_story_tells_why_seats_went_to_another_tenant(client, agreement, product, tenant, processor):
    from redemption import services
    from tests.factories import TenantFactory
    from tests.redemption.conftest import known_to_provider

    first = line_of(agreement, product, OrderLine.Kind.NEW, 5)
    services.allocation_request(
        order_line=first, tenant=tenant, quantity=5, confirm_domain=tenant.default_domain, acting_user=processor
    )
    labs = known_to_provider(TenantFactory(customer=agreement.customer, default_domain="northwindlabs.onmicrosoft.com"))
    line = line_of(agreement, product, OrderLine.Kind.NEW, 3, 2)
    services.allocation_request(
        order_line=line,
        tenant=labs,
        quantity=3,
        confirm_domain=labs.default_domain,
        acting_user=processor,
        reason="Customer wants the E3 seats on the Labs tenant (ticket 4411)",
    )
    client.force_login(processor)

    story = client.get(reverse("admin:order_story", args=[line.order_id])).content.decode()

    assert "Customer wants the E3 seats on the Labs tenant (ticket 4411)" in story


def test_approving_several_sent_twice_says_they_are_approved(client, agreement, product, processor, supervisor):
    from redemption import services
    from tests.factories import TenantFactory
    from tests.redemption.conftest import known_to_provider

    waiting = []
    for n in range(2):
        tenant = known_to_provider(TenantFactory(customer=agreement.customer))
        waiting.append(
            services.allocation_request(
                order_line=line_of(agreement, product, OrderLine.Kind.NEW, 3, n + 1),
                tenant=tenant,
                quantity=3,
                confirm_domain=tenant.default_domain,
                acting_user=processor,
                reason="Two subsidiaries",
            )
        )
    assert all(a.status == SeatAllocation.Status.AWAITING_APPROVAL for a in waiting)
    client.force_login(supervisor)
    form = {"action": "approve_selected", "_selected_action": [a.pk for a in waiting], "apply": "1", "reason": "ok"}
    approvals = reverse("admin:redemption_seatallocation_changelist")

    client.post(approvals, form)
    again = client.post(approvals, form, follow=True)

    page = again.content.decode()
    assert "2 binding(s) approved." in page and "not waiting for approval" not in page
    assert [a.history.filter(history_change_reason__startswith="Approved").count() for a in waiting] == [1, 1]
