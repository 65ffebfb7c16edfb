"""The desk's own pages and actions ask the same permission as the service behind them.

A viewer (a staff user with only view_ permissions) sees, and changes nothing through any door: the
binding's pages, the allocation and tenant actions, the drift's page, the tenant add page.
"""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from licensing.models import Order, OrderLine
from redemption import services
from redemption.models import Drift, ProviderCorrection, ReconciliationRun, SeatAllocation, Subscription
from redemption.reconciliation import runs
from redemption.reconciliation import services as settle
from tenants.models import Partner, Tenant
from tests import test_admin_doors
from tests.admin_forms import change_form_data
from tests.conftest import StaffClient
from tests.factories import OrderFactory, OrderLineFactory, PartnerFactory, SeatAllocationFactory
from tests.redemption.conftest import known_to_provider
from tests.test_admin_doors import Desk

pytestmark = pytest.mark.django_db
desk = test_admin_doors.desk  # Northwind's seats bound through the services, Litware beside it
Status = SeatAllocation.Status


@pytest.fixture
def viewer(make_user):
    """A staff user who may only look: every view_ permission of the back office, nothing else."""
    user = make_user("viewer", role="Order processor")
    user.groups.clear()
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label__in=["tenants", "licensing", "redemption", "desk"], codename__startswith="view_"
        )
    )
    return user


def login(user) -> StaffClient:
    client = StaffClient()
    client.force_login(user)
    return client


def allocation_in(desk: Desk, status: str, **fields) -> SeatAllocation:
    """Three added seats of a new order of Northwind's agreement, requested by the clerk, in `status`."""
    line = OrderLineFactory(
        order=OrderFactory(agreement=desk.agreement),
        product=desk.line.product,
        quantity=3,
        line_number=7,
        kind=OrderLine.Kind.ADDITIONAL,
        seats_allocated=3,
    )
    return SeatAllocationFactory(
        order_line=line,
        tenant=desk.tenant,
        quantity=3,
        status=status,
        **{"requested_by": desk.allocation.requested_by, **fields},
    )


def failed_allocation(desk: Desk) -> SeatAllocation:
    return allocation_in(desk, Status.FAILED, last_error="provider said no")


def allocation_row(allocation: SeatAllocation) -> dict:
    return SeatAllocation.objects.filter(pk=allocation.pk).values("status", "attempts", "plan_round").get()


def allocation_state(allocation: SeatAllocation) -> dict:
    """Everything the allocation and its line hold, with the history written about them."""
    return {
        "allocation": SeatAllocation.objects.filter(pk=allocation.pk).values().get(),
        "history": allocation.history.count(),
        "seats_allocated": OrderLine.objects.get(pk=allocation.order_line_id).seats_allocated,
        "subscriptions": list(Subscription.objects.order_by("pk").values()),
    }


def open_drift(desk: Desk) -> Drift:
    run = ReconciliationRun.objects.create(trigger=ReconciliationRun.Trigger.COMMAND)
    now = timezone.now()
    return Drift.objects.create(
        key=f"drift-{uuid.uuid4()}",
        kind=Drift.Kind.QUANTITY,
        tenant=desk.tenant,
        subscription=desk.subscription,
        provider_subscription_id=desk.subscription.provider_subscription_id,
        ours=15,
        provider=20,
        first_run=run,
        last_run=run,
        first_seen_at=now,
        last_seen_at=now,
    )


# --- retrying a failed binding ---------------------------------------------------------------------


def test_a_viewer_cannot_retry_a_failed_binding_from_its_page(desk, viewer):
    failed = failed_allocation(desk)
    before = allocation_row(failed)
    client = login(viewer)
    page = client.get(reverse("admin:redemption_seatallocation_status", args=[failed.pk]))
    assert page.status_code == 200 and not page.context["can_retry"]
    response = client.post(reverse("admin:redemption_seatallocation_decide", args=[failed.pk, "retry"]))
    assert response.status_code == 403
    assert allocation_row(failed) == before


def test_retrying_a_failed_binding_needs_the_permission_to_request_one(desk, viewer, processor):
    failed = failed_allocation(desk)
    with pytest.raises(ValidationError, match="Only someone who may request bindings can retry one"):
        services.allocation_retry(allocation=failed, acting_user=viewer)
    assert allocation_row(failed)["status"] == Status.FAILED
    assert services.allocation_retry(allocation=failed, acting_user=processor).status == Status.QUEUED


def test_an_order_processor_still_retries_a_failed_binding_from_its_page(desk, processor):
    failed = failed_allocation(desk)
    response = login(processor).post(reverse("admin:redemption_seatallocation_decide", args=[failed.pk, "retry"]))
    assert response.status_code == 302
    assert allocation_row(failed)["status"] == Status.QUEUED


# --- approving, rejecting, retrying and reversing one binding ---------------------------------------

# Each decision: the binding it is made on, what the supervisor posts, and the status it leaves behind.
DECISIONS = {
    "approve": (Status.AWAITING_APPROVAL, {}, Status.QUEUED),
    "reject": (Status.AWAITING_APPROVAL, {"reason": "Customer cancelled"}, Status.REJECTED),
    "retry": (Status.REVERSAL_FAILED, {}, Status.REVERSING),
    "reverse": (Status.BOUND, {"reason": "Bound to the wrong tenant"}, Status.REVERSING),
}


def decided_allocation(desk: Desk, decision: str) -> SeatAllocation:
    status = DECISIONS[decision][0]
    if status == Status.BOUND:
        return desk.added  # the subscription's latest binding: nothing later stands in its way
    if status == Status.REVERSAL_FAILED:
        return allocation_in(desk, status, subscription=desk.subscription, last_error="provider said no")
    return allocation_in(desk, status, approval_reasons=["First binding to the tenant"])


def decide(client, allocation: SeatAllocation, decision: str, data: dict):
    return client.post(reverse("admin:redemption_seatallocation_decide", args=[allocation.pk, decision]), data)


def decision_service(decision: str, allocation: SeatAllocation, user):
    if decision == "approve":
        return services.allocation_approve(allocation=allocation, acting_user=user)
    if decision == "reject":
        return services.allocation_reject(allocation=allocation, acting_user=user, reason="because")
    if decision == "retry":
        return services.allocation_retry(allocation=allocation, acting_user=user)
    return services.allocation_reverse(allocation=allocation, acting_user=user, reason="because")


@pytest.mark.parametrize("decision", DECISIONS)
@pytest.mark.parametrize("who", ["viewer", "processor"])
def test_a_binding_decision_is_refused_with_403_to_someone_who_is_not_a_supervisor(desk, request, who, decision):
    user = request.getfixturevalue(who)
    allocation = decided_allocation(desk, decision)
    before = allocation_state(allocation)
    client = login(user)
    url = reverse("admin:redemption_seatallocation_decide", args=[allocation.pk, decision])
    assert client.get(url).status_code == 403
    assert decide(client, allocation, decision, {"reason": "because"}).status_code == 403
    assert allocation_state(allocation) == before
    with pytest.raises(ValidationError, match="supervisor"):
        decision_service(decision, allocation, user)
    assert allocation_state(allocation) == before


@pytest.mark.parametrize("decision", DECISIONS)
def test_a_supervisor_still_makes_each_binding_decision_from_its_page(
    desk, make_user, decision, django_capture_on_commit_callbacks
):
    second = make_user("second", "Supervisor")
    allocation = decided_allocation(desk, decision)
    _, data, after = DECISIONS[decision]
    with django_capture_on_commit_callbacks(execute=False):
        response = decide(login(second), allocation, decision, data)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:redemption_seatallocation_status", args=[allocation.pk])
    assert SeatAllocation.objects.get(pk=allocation.pk).status == after


def test_a_supervisor_who_asked_for_a_binding_is_told_that_another_must_approve_it(desk, make_user):
    second = make_user("second", "Supervisor")
    allocation = allocation_in(desk, Status.AWAITING_APPROVAL, requested_by=second)
    before = allocation_state(allocation)
    response = decide(login(second), allocation, "approve", {})
    assert response.status_code == 200
    assert "another supervisor must approve it" in response.content.decode()
    assert allocation_state(allocation) == before


# --- a binding's status page -------------------------------------------------------------------------


def test_a_bindings_page_is_refused_to_staff_who_may_not_view_bindings(desk, make_user):
    nobody = make_user("nobody", None)
    nobody.is_superuser = False
    nobody.save()
    response = login(nobody).get(reverse("admin:redemption_seatallocation_status", args=[desk.allocation.pk]))
    assert response.status_code == 403
    assert b"northwindtraders" not in response.content


def test_a_viewer_sees_a_bindings_page(desk, viewer):
    response = login(viewer).get(reverse("admin:redemption_seatallocation_status", args=[desk.allocation.pk]))
    assert response.status_code == 200
    assert "northwindtraders.onmicrosoft.com" in response.content.decode()


# --- verifying a tenant's identity -----------------------------------------------------------------


def test_a_viewer_cannot_verify_a_tenants_identity(desk, viewer):
    spare = known_to_provider(desk.spare_tenant)
    response = login(viewer).post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "verify_identity", "_selected_action": [spare.pk], "index": "0"},
    )
    assert response.status_code == 403
    spare.refresh_from_db()
    assert not spare.is_verified
    with pytest.raises(ValidationError, match="Only someone who may change tenants"):
        services.tenant_verify(tenant=spare, acting_user=viewer)
    spare.refresh_from_db()
    assert not spare.is_verified


def test_an_order_processor_verifies_a_tenants_identity_with_the_action(desk, processor):
    spare = known_to_provider(desk.spare_tenant)
    login(processor).post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "verify_identity", "_selected_action": [spare.pk], "index": "0"},
    )
    spare.refresh_from_db()
    assert spare.is_verified and spare.verified_by == processor


# --- the actions of the lists ----------------------------------------------------------------------


def run_action(client, model, action: str, ids: list, **data):
    """Post an action on the list's selected rows: its first step (index), or its confirmation (no index)."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return client.post(url, {"action": action, "_selected_action": ids, **data})


def correction_of(desk: Desk) -> ProviderCorrection:
    drift = open_drift(desk)
    return settle.drift_push(drift=drift, acting_user=desk.allocation.requested_by, reason="Twelve were bought")


@pytest.mark.parametrize(
    "action, data",
    [
        ("approve_selected", {"index": "0"}),
        ("approve_selected", {"apply": "1", "reason": "Checked"}),
        ("reject_selected", {"index": "0"}),
        ("reject_selected", {"apply": "1", "reason": "Customer cancelled"}),
    ],
    ids=["approve", "approve-confirmed", "reject", "reject-confirmed"],
)
@pytest.mark.parametrize("who", ["viewer", "processor"])
def test_approving_or_rejecting_bindings_from_the_list_is_refused_with_403_to_non_supervisors(
    desk, request, who, action, data
):
    waiting = decided_allocation(desk, "approve")
    before = allocation_state(waiting)
    response = run_action(login(request.getfixturevalue(who)), SeatAllocation, action, [waiting.pk], **data)
    assert response.status_code == 403
    assert allocation_state(waiting) == before


def test_a_viewer_cannot_retry_failed_bindings_from_the_list(desk, viewer, processor):
    failed = failed_allocation(desk)
    before = allocation_state(failed)
    assert run_action(login(viewer), SeatAllocation, "retry_selected", [failed.pk], index="0").status_code == 403
    assert allocation_state(failed) == before
    assert run_action(login(processor), SeatAllocation, "retry_selected", [failed.pk], index="0").status_code == 302
    assert allocation_row(failed)["status"] == Status.QUEUED


def test_only_another_supervisor_approves_a_correction_from_the_list(desk, processor, make_user):
    correction = correction_of(desk)
    response = run_action(login(processor), ProviderCorrection, "approve_selected", [correction.pk], index="0")
    assert response.status_code == 403
    correction.refresh_from_db()
    assert (correction.status, correction.approved_by) == (ProviderCorrection.Status.AWAITING_APPROVAL, None)
    second = make_user("second", "Supervisor")
    client = login(second)
    # What goes to the provider is shown, in words, and asked once more: nothing is approved yet.
    confirm = run_action(client, ProviderCorrection, "approve_selected", [correction.pk], index="0")
    assert confirm.status_code == 200
    assert "quantity 15" in confirm.text and "cannot be called back" in confirm.text
    correction.refresh_from_db()
    assert correction.status == ProviderCorrection.Status.AWAITING_APPROVAL
    response = run_action(client, ProviderCorrection, "approve_selected", [correction.pk], apply="1")
    assert response.status_code == 302
    correction.refresh_from_db()
    assert (correction.status, correction.approved_by) == (ProviderCorrection.Status.QUEUED, second)


@pytest.mark.parametrize(
    "model, action", [(OrderLine, "bind_selected_lines"), (Order, "bind_selected_orders")], ids=["lines", "orders"]
)
def test_the_binding_screen_is_opened_from_a_list_only_by_someone_who_may_request_bindings(
    desk, viewer, processor, model, action
):
    pending = OrderLineFactory(order=OrderFactory(agreement=desk.agreement), product=desk.line.product, quantity=2)
    ids = [pending.pk if model is OrderLine else pending.order_id]
    assert run_action(login(viewer), model, action, ids, index="0").status_code == 403
    opened = run_action(login(processor), model, action, ids, index="0")
    assert opened.status_code == 302 and opened["Location"].startswith(reverse("admin:desk_bulk_bind"))
    assert not SeatAllocation.objects.filter(order_line=pending).exists()


def test_a_bulk_delete_is_refused_with_403_to_someone_who_may_not_delete(desk, viewer, superuser):
    spare = PartnerFactory()
    assert run_action(login(viewer), Partner, "delete_selected", [spare.pk], post="yes").status_code == 403
    assert Partner.objects.filter(pk=spare.pk).exists()
    assert run_action(login(superuser), Partner, "delete_selected", [spare.pk], post="yes").status_code == 302
    assert not Partner.objects.filter(pk=spare.pk).exists()


# --- settling drift --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["explain", "push", "accept"])
def test_a_viewer_cannot_settle_a_drift(desk, viewer, how):
    drift = open_drift(desk)
    client = login(viewer)
    page = client.get(reverse("admin:redemption_drift_settle", args=[drift.pk]))
    assert page.status_code == 200 and 'id="settle-form"' not in page.content.decode()
    response = client.post(reverse("admin:redemption_drift_settle", args=[drift.pk]), {"how": how, "reason": "x"})
    assert response.status_code == 403
    with pytest.raises(ValidationError, match="not settle it"):
        getattr(settle, f"drift_{how}")(drift=drift, acting_user=viewer, reason="because")
    drift.refresh_from_db()
    assert drift.status == Drift.Status.OPEN
    assert not ProviderCorrection.objects.exists()
    desk.subscription.refresh_from_db()
    assert desk.subscription.quantity != 20


def test_an_order_processor_explains_a_drift_on_its_page(desk, processor):
    drift = open_drift(desk)
    response = login(processor).post(
        reverse("admin:redemption_drift_settle", args=[drift.pk]), {"how": "explain", "reason": "Known"}
    )
    assert response.status_code == 302
    drift.refresh_from_db()
    assert (drift.status, drift.resolved_by) == (Drift.Status.EXPLAINED, processor)


def test_only_a_supervisor_takes_the_providers_value_of_a_drift_on_its_page(desk, processor, make_user):
    drift = open_drift(desk)
    url = reverse("admin:redemption_drift_settle", args=[drift.pk])
    page = login(processor).get(url)
    assert page.status_code == 200 and not page.context["can_accept"]
    response = login(processor).post(url, {"how": "accept", "reason": "The customer lowered it"})
    assert response.status_code == 403
    drift.refresh_from_db()
    desk.subscription.refresh_from_db()
    assert (drift.status, desk.subscription.quantity) == (Drift.Status.OPEN, 15)
    response = login(make_user("second", "Supervisor")).post(
        url, {"how": "accept", "reason": "The customer lowered it"}
    )
    assert response.status_code == 302
    drift.refresh_from_db()
    desk.subscription.refresh_from_db()
    assert (drift.status, desk.subscription.quantity) == (Drift.Status.ACCEPTED, 20)


# --- starting a reconciliation ---------------------------------------------------------------------


def test_only_a_supervisor_starts_a_reconciliation(desk, viewer, processor, make_user):
    start = reverse("admin:redemption_reconciliationrun_start")
    assert login(viewer).post(start).status_code == 403
    with pytest.raises(ValidationError, match="Only a supervisor can start a reconciliation"):
        runs.reconciliation_start(trigger=ReconciliationRun.Trigger.DESK, acting_user=processor)
    assert not ReconciliationRun.objects.exists()
    second = make_user("second", "Supervisor")
    run = runs.reconciliation_start(trigger=ReconciliationRun.Trigger.DESK, acting_user=second)
    assert (run.started_by, run.status) == (second, ReconciliationRun.Status.PENDING)


# --- old versions on the history pages -------------------------------------------------------------


def test_posting_an_old_version_is_refused_with_403_to_someone_who_may_not_change_the_record(desk, viewer):
    spare = desk.spare_tenant
    spare.display_name = "Northwind Spare (renamed)"
    spare.save()
    first = spare.history.earliest("history_date")
    url = reverse("admin:tenants_tenant_simple_history", args=[spare.pk, first.history_id])
    client = login(viewer)
    assert client.get(url).status_code == 200
    assert client.post(url, {"display_name": first.display_name}).status_code == 403
    spare.refresh_from_db()
    assert spare.display_name == "Northwind Spare (renamed)"


def test_someone_who_may_change_the_record_is_told_to_change_it_on_its_own_page(desk, processor):
    spare = desk.spare_tenant
    spare.display_name = "Northwind Spare (renamed)"
    spare.save()
    first = spare.history.earliest("history_date")
    url = reverse("admin:tenants_tenant_simple_history", args=[spare.pk, first.history_id])
    response = login(processor).post(url, {"display_name": first.display_name}, follow=True)
    assert "An old version cannot be restored here" in response.content.decode()
    spare.refresh_from_db()
    assert spare.display_name == "Northwind Spare (renamed)"


# --- adding a tenant -------------------------------------------------------------------------------


def test_the_tenant_add_form_does_not_record_a_tenant_the_provider_does_not_know(desk, processor):
    client = login(processor)
    page = client.get(reverse("admin:tenants_tenant_add"))
    assert page.status_code == 200
    data = {
        **change_form_data(page),
        "tenant_id": str(uuid.uuid4()),
        "default_domain": "ghosttenant.onmicrosoft.com",
        "display_name": "Ghost",
        "customer": desk.northwind.pk,
    }
    response = client.post(reverse("admin:tenants_tenant_add"), data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:redemption_tenant_record", args=[desk.northwind.pk]))
    assert not Tenant.objects.filter(default_domain="ghosttenant.onmicrosoft.com").exists()
    refused = client.post(
        response["Location"],
        {"domain": "ghosttenant.onmicrosoft.com", "confirm_domain": "ghosttenant.onmicrosoft.com"},
    )
    assert "The provider knows no tenant with the default domain" in refused.content.decode()
    assert not Tenant.objects.filter(default_domain="ghosttenant.onmicrosoft.com").exists()


def test_the_tenant_add_page_finds_the_customer_to_record_a_tenant_for(desk, processor):
    page = login(processor).get(reverse("admin:tenants_tenant_add"), {"q": "northwind"})
    assert page.status_code == 200
    assert reverse("admin:redemption_tenant_record", args=[desk.northwind.pk]) in page.content.decode()


def test_the_tenant_add_page_is_refused_to_a_viewer(desk, viewer):
    client = login(viewer)
    assert client.get(reverse("admin:tenants_tenant_add")).status_code == 403
    assert client.post(reverse("admin:tenants_tenant_add"), {"customer": desk.northwind.pk}).status_code == 403


def test_recording_a_tenant_needs_the_permission_to_add_one(desk, viewer):
    with pytest.raises(ValidationError, match="Only someone who may add tenants"):
        services.tenant_record(
            customer=desk.northwind,
            domain="litwareinc.onmicrosoft.com",
            confirm_domain="litwareinc.onmicrosoft.com",
            acting_user=viewer,
        )


def test_a_viewer_sees_a_change_form_without_asking_why(desk, viewer):
    page = login(viewer).get(reverse("admin:tenants_customer_change", args=[desk.northwind.pk]))
    assert page.status_code == 200 and "change_reason" not in page.text
