"""Reconciliation against the local provider server, whose state the tests change behind our back."""

import json
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from unittest.mock import patch

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse

from licensing.models import OrderLine
from redemption import binding, services
from redemption.models import Drift, ProviderCorrection, ReconciliationRun, SeatAllocation, Subscription
from redemption.reconciliation import runs
from redemption.reconciliation import services as settle
from redemption.statements import slot_unlock, subscription_lock
from redemption.testing.provider_server import Fault, ProviderServer
from tests.conftest import StaffClient, requires_postgres, requires_redis
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

pytestmark = pytest.mark.django_db
TOKEN = "reconcile-token"
TODAY = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
Kind = Drift.Kind


@pytest.fixture
def provider(time_machine):
    time_machine.move_to(TODAY)
    server = ProviderServer(token=TOKEN).start()
    with override_settings(PROVIDER_BACKEND="http", PROVIDER_URL=server.url, PROVIDER_TOKEN=TOKEN, PROVIDER_TIMEOUT=5):
        yield server
    server.stop()


def known(server, tenant):
    server.add_tenant(tenant.tenant_id, tenant.default_domain, tenant.display_name)
    return tenant


def bound(line, tenant, user, boss):
    allocation = services.allocation_request(
        order_line=line, tenant=tenant, quantity=line.quantity, confirm_domain=tenant.default_domain, acting_user=user
    )
    if allocation.status == allocation.Status.AWAITING_APPROVAL:
        services.allocation_approve(allocation=allocation, acting_user=boss)
    allocation = binding.allocation_bind(allocation_id=allocation.pk)
    assert allocation.status == allocation.Status.BOUND, allocation.last_error
    return allocation.subscription


@pytest.fixture
def desk(provider, processor, supervisor):
    """Northwind with two tenants bound through the HTTP provider; Fabrikam's tenant; a line left unbound."""
    northwind = CustomerFactory(name="Northwind Traders")
    main = known(provider, TenantFactory(customer=northwind, default_domain="northwind.onmicrosoft.com"))
    labs = known(provider, TenantFactory(customer=northwind, default_domain="northwindlabs.onmicrosoft.com"))
    agreement = AgreementFactory(customer=northwind)
    e3, e5, visio = (ProductFactory(part_number=p) for p in ("Q5Y-00003", "AAA-00005", "VIS-00001"))
    order = OrderFactory(agreement=agreement, ordered_on=date(2026, 11, 25))
    e3_sub = bound(OrderLineFactory(order=order, product=e3, quantity=10, line_number=1), main, processor, supervisor)
    e5_sub = bound(OrderLineFactory(order=order, product=e5, quantity=5, line_number=2), main, processor, supervisor)
    labs_agreement = AgreementFactory(customer=northwind)
    labs_sub = bound(
        OrderLineFactory(order=OrderFactory(agreement=labs_agreement), product=visio, quantity=3, line_number=1),
        labs,
        processor,
        supervisor,
    )
    fabrikam = known(provider, TenantFactory(default_domain="fabrikam.onmicrosoft.com"))
    legacy = SubscriptionFactory(tenant=fabrikam, quantity=7, term_end=date(2027, 3, 31))
    provider.add_subscription(
        fabrikam.tenant_id, offer_id=legacy.product.part_number, quantity=7, end=date(2027, 3, 31),
        sub_id=legacy.provider_subscription_id,
    )  # fmt: skip
    old_order = OrderFactory(agreement=agreement, ordered_on=date(2026, 11, 1), suggested_tenant_domain="")
    unbound = OrderLineFactory(order=old_order, product=e3, quantity=4, line_number=1, kind=OrderLine.Kind.ADDITIONAL)
    return {
        "main": main, "labs": labs, "fabrikam": fabrikam, "e3": e3_sub, "e5": e5_sub, "labs_sub": labs_sub,
        "legacy": legacy, "unbound": unbound,
    }  # fmt: skip


def held(server, subscription) -> dict:
    return server.state.subscriptions[subscription.provider_subscription_id]


def reconcile(*args) -> list[dict]:
    out = StringIO()
    call_command("reconcile_provider", "--format", "json", *args, stdout=out)
    return json.loads(out.getvalue())


def as_set(rows: list[dict]) -> set[tuple]:
    return {(r["kind"], r["tenant_id"], r["subscription_id"], r["offer_id"], r["ours"], r["provider"]) for r in rows}


def test_each_kind_of_drift_is_found_exactly_once(desk, provider):
    main, labs, fabrikam = (str(desk[name].tenant_id) for name in ("main", "labs", "fabrikam"))
    e3, e5, labs_sub, legacy = desk["e3"], desk["e5"], desk["labs_sub"], desk["legacy"]
    with provider.lock:
        held(provider, e3).update(quantity=8, commitmentEndDate="2028-01-31")
        held(provider, e5)["status"] = "suspended"
        del provider.state.subscriptions[labs_sub.provider_subscription_id]
        provider.state.tenants.pop(fabrikam)
    stranger = provider.add_subscription(desk["main"].tenant_id, offer_id="PRJ-00001", quantity=2, end=date(2027, 1, 1))
    found = reconcile()
    assert as_set(found) == {
        ("quantity", main, e3.provider_subscription_id, "Q5Y-00003", 10, 8),
        ("term_end", main, e3.provider_subscription_id, "Q5Y-00003", e3.term_end.isoformat(), "2028-01-31"),
        ("status", main, e5.provider_subscription_id, "AAA-00005", "active", "suspended"),
        ("missing_at_provider", labs, labs_sub.provider_subscription_id, "VIS-00001", 3, None),
        ("unknown_at_provider", main, stranger, "PRJ-00001", None, 2),
        ("tenant_unknown", fabrikam, None, None, None, None),
        # Fabrikam's tenant unknown there, its subscription is still checked against our own records.
        ("seats_vs_orders", fabrikam, legacy.provider_subscription_id, legacy.product.part_number, 7, 0),
        ("unbound_seats", main, None, "Q5Y-00003", 4, None),
    }
    assert len(found) == 8


def test_a_tenant_the_provider_does_not_answer_for_keeps_its_drifts_open_as_they_were(desk, provider):
    drift = quantity_changed_in_the_portal(provider, desk, 8)
    main = str(desk["main"].tenant_id)
    with provider.lock:
        tenant = provider.state.tenants.pop(main)
    found = reconcile()
    assert ("tenant_unknown", main) in {(r["kind"], r["tenant_id"]) for r in found}
    # Its subscriptions were not read: the drift was neither found again nor found gone.
    assert Drift.objects.get(pk=drift.pk).status == Drift.Status.OPEN
    with provider.lock:
        provider.state.tenants[main] = tenant
    reconcile()
    assert Drift.objects.get(kind=Kind.QUANTITY, status=Drift.Status.OPEN).pk == drift.pk


def test_a_subscription_whose_bindings_do_not_add_up_is_a_drift(desk, provider):
    legacy = desk["legacy"]
    found = reconcile("--tenant", str(desk["fabrikam"].tenant_id))
    assert as_set(found) == {
        ("seats_vs_orders", str(desk["fabrikam"].tenant_id), legacy.provider_subscription_id,
         legacy.product.part_number, 7, 0),
    }  # fmt: skip


def test_a_second_unchanged_run_adds_nothing_and_a_fixed_drift_closes_itself(desk, provider):
    e3 = desk["e3"]
    with provider.lock:
        held(provider, e3)["quantity"] = 8
    first = reconcile()
    second = reconcile()
    assert as_set(first) == as_set(second)
    run = ReconciliationRun.objects.order_by("-pk").first()
    assert run.new_count == 0 and run.closed_count == 0
    assert Drift.objects.filter(kind=Kind.QUANTITY).count() == 1
    with provider.lock:
        held(provider, e3)["quantity"] = 10
    out = StringIO()
    call_command("reconcile_provider", stdout=out)
    assert out.getvalue().strip().endswith("3 tenant(s) checked, 2 drift(s) open (0 new, 1 resolved by themselves)")
    gone = Drift.objects.get(kind=Kind.QUANTITY)
    assert gone.status == Drift.Status.CLOSED and gone.closed_at is not None


def test_a_drift_seen_by_a_run_started_meanwhile_is_not_closed_as_gone(desk, provider):
    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 8
    reconcile()
    nightly = runs.reconciliation_start(trigger="nightly")
    # While the nightly run goes through its tenants, a run of one tenant finds the drift again.
    some = runs.reconciliation_start(tenant_ids=[str(desk["main"].tenant_id)], trigger="nightly")
    runs.reconciliation_run(run=some)

    runs._close_gone(nightly)

    drift = Drift.objects.get(kind=Kind.QUANTITY)
    assert (drift.status, drift.last_run_id) == (Drift.Status.OPEN, some.pk)


def test_our_own_deprovisioned_subscription_still_listed_is_not_taken_for_one_made_elsewhere(desk, provider):
    legacy = desk["legacy"]
    Subscription.objects.filter(pk=legacy.pk).update(status=Subscription.Status.DEPROVISIONED)

    reconcile()

    found = {
        (d.kind, d.provider_subscription_id, d.ours, d.provider) for d in Drift.objects.filter(tenant=legacy.tenant)
    }
    # Still active there: a person looks. Suspended there: nothing to look at.
    assert found == {(Kind.STATUS, legacy.provider_subscription_id, "deprovisioned", "active")}
    with provider.lock:
        held(provider, legacy)["status"] = "suspended"
    reconcile()
    assert not Drift.objects.filter(tenant=legacy.tenant, status=Drift.Status.OPEN).exists()


def test_a_run_for_some_tenants_checks_and_prints_only_those(desk, provider):
    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 8
        held(provider, desk["labs_sub"])["quantity"] = 1
    found = reconcile("--tenant", str(desk["labs"].tenant_id))
    assert {(r["kind"], r["tenant_id"]) for r in found} == {("quantity", str(desk["labs"].tenant_id))}
    assert not Drift.objects.filter(tenant=desk["main"]).exists()


def test_accepting_the_providers_value_changes_our_subscription_with_the_reason(desk, provider, supervisor, processor):
    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 8
    reconcile()
    drift = Drift.objects.get(kind=Kind.QUANTITY)
    with pytest.raises(ValidationError, match="Only a supervisor"):
        settle.drift_accept(drift=drift, acting_user=processor, reason="customer lowered it")
    settle.drift_accept(drift=drift, acting_user=supervisor, reason="Customer lowered it in the portal")
    subscription = Subscription.objects.get(pk=desk["e3"].pk)
    assert subscription.quantity == 8
    last = subscription.history.latest("history_date")
    assert last.history_user == supervisor and "Customer lowered it in the portal" in last.history_change_reason
    drift.refresh_from_db()
    assert (drift.status, drift.resolved_by) == (Drift.Status.ACCEPTED, supervisor)
    assert reconcile() and not Drift.objects.filter(kind=Kind.QUANTITY, status=Drift.Status.OPEN).exists()


def test_accepting_a_later_term_end_of_a_lapsed_subscription_makes_it_active_again(desk, provider, supervisor):
    # Expired here (rule 8) while the customer renewed it in the portal.
    Subscription.objects.filter(pk=desk["e3"].pk).update(status=Subscription.Status.EXPIRED)
    drift = term_end_changed_in_the_portal(provider, desk)

    settle.drift_accept(drift=drift, acting_user=supervisor, reason="Customer renewed it in the portal")

    subscription = Subscription.objects.get(pk=desk["e3"].pk)
    assert (subscription.term_end, subscription.status) == (date(2030, 1, 1), Subscription.Status.ACTIVE)
    assert "Customer renewed it in the portal" in subscription.history.latest("history_date").history_change_reason


def term_end_changed_in_the_portal(provider, desk) -> Drift:
    """Move e3's term end at the provider to 2030-01-01 and reconcile: the term-end drift found."""
    with provider.lock:
        held(provider, desk["e3"])["commitmentEndDate"] = "2030-01-01"
    reconcile()
    return Drift.objects.get(kind=Kind.TERM_END)


def test_pushing_ours_goes_through_a_supervisor_and_the_worker(
    desk, provider, supervisor, make_user, django_capture_on_commit_callbacks
):
    from config.celery import app

    drift = term_end_changed_in_the_portal(provider, desk)
    correction = settle.drift_push(drift=drift, acting_user=supervisor, reason="The portal change was a mistake")
    assert correction.status == ProviderCorrection.Status.AWAITING_APPROVAL
    with pytest.raises(ValidationError, match="another supervisor must approve"):
        settle.correction_approve(correction=correction, acting_user=supervisor)
    second = make_user("second-boss", "Supervisor")
    provider.inject(Fault("error", method="PATCH", status=503, times=1))
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            settle.correction_approve(correction=correction, acting_user=second)
    finally:
        app.conf.task_always_eager = False
    correction.refresh_from_db()
    assert correction.status == ProviderCorrection.Status.DONE and correction.attempts == 2
    assert held(provider, desk["e3"])["commitmentEndDate"] == desk["e3"].term_end.isoformat()
    patches = [c for c in provider.state.calls if c["method"] == "PATCH"]
    assert len({c["request_id"] for c in patches}) == 1  # the retry was the same request
    drift.refresh_from_db()
    assert drift.status == Drift.Status.PUSHED
    # The drift's page names who asked and who let it go, and what was sent, in words.
    client = StaffClient()
    client.force_login(second)
    page = client.get(reverse("admin:redemption_drift_settle", args=[drift.pk])).text
    assert f"Ours pushed to the provider, approved by {second}" in page
    assert f"term end {desk['e3'].term_end.isoformat()}: Sent to the provider (asked by {supervisor}" in page


def test_a_drift_whose_correction_is_on_its_way_is_not_settled_another_way_until_it_is_rejected(
    desk, provider, processor, supervisor, make_user
):
    drift = term_end_changed_in_the_portal(provider, desk)
    correction = settle.drift_push(drift=drift, acting_user=processor, reason="The portal change was a mistake")
    second = make_user("second-boss", "Supervisor")
    for how in (settle.drift_explain, settle.drift_accept, settle.drift_push):
        with pytest.raises(ValidationError, match=r"already on its way \(awaiting approval\)"):
            how(drift=drift, acting_user=supervisor, reason="Customer changed it in the portal")
    drift.refresh_from_db()
    assert drift.status == Drift.Status.OPEN
    assert Subscription.objects.get(pk=desk["e3"].pk).term_end == desk["e3"].term_end
    # Its page offers no second way either: it says which correction settles it, and how to stop that one.
    client = StaffClient()
    client.force_login(supervisor)
    page = client.get(reverse("admin:redemption_drift_settle", args=[drift.pk])).text
    assert 'id="settle-form"' not in page
    assert f"Correction #{correction.pk} (term end {desk['e3'].term_end.isoformat()}) is awaiting approval" in page
    settle.correction_reject(correction=correction, acting_user=second, reason="The portal change stands")
    assert 'id="settle-form"' in client.get(reverse("admin:redemption_drift_settle", args=[drift.pk])).text
    settle.drift_accept(drift=drift, acting_user=supervisor, reason="Customer changed it in the portal")
    assert Subscription.objects.get(pk=desk["e3"].pk).term_end == date(2030, 1, 1)


def test_an_approved_correction_whose_message_was_lost_is_sent_again_and_reaches_the_provider_once(
    desk, provider, supervisor, make_user, time_machine, django_capture_on_commit_callbacks
):
    from redemption.tasks import correction_apply_task

    drift = term_end_changed_in_the_portal(provider, desk)
    correction = settle.drift_push(drift=drift, acting_user=supervisor, reason="The portal change was a mistake")
    # Approved, but the message never reaches a worker (a flushed broker, a worker host that died).
    with django_capture_on_commit_callbacks(execute=False):
        settle.correction_approve(correction=correction, acting_user=make_user("second-boss", "Supervisor"))
    # Still on its way, or waiting out a retry's backoff: not lost yet.
    time_machine.shift(timedelta(minutes=10))
    assert settle.correction_sweep() == []
    time_machine.shift(timedelta(minutes=6))
    with patch.object(correction_apply_task, "apply_async") as sent, django_capture_on_commit_callbacks(execute=True):
        assert settle.correction_sweep() == [correction.pk]
    assert sent.call_args.args[0] == (correction.pk,)
    # The sweep's message and a late original both arrive: one PATCH, one attempt.
    settle.correction_apply(correction_id=correction.pk)
    settle.correction_apply(correction_id=correction.pk)
    correction.refresh_from_db()
    assert (correction.status, correction.attempts) == (ProviderCorrection.Status.DONE, 1)
    assert held(provider, desk["e3"])["commitmentEndDate"] == desk["e3"].term_end.isoformat()
    assert len([c for c in provider.state.calls if c["method"] == "PATCH"]) == 1
    assert Drift.objects.get(pk=drift.pk).status == Drift.Status.PUSHED
    time_machine.shift(timedelta(hours=1))
    assert settle.correction_sweep() == []


def test_beat_runs_the_sweeps_as_registered_tasks():
    from config.celery import app

    app.loader.import_default_modules()  # what a worker imports when it starts
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"redemption.tasks.allocation_sweep_task", "redemption.reconciliation.tasks.correction_sweep_task"} <= tasks
    assert tasks <= set(app.tasks)


def test_explaining_settles_a_drift_that_has_no_value_to_take(desk, provider, processor):
    reconcile()
    drift = Drift.objects.get(kind=Kind.UNBOUND_SEATS)
    with pytest.raises(ValidationError, match="Only a quantity, term end or status"):
        settle.drift_push(drift=drift, acting_user=processor, reason="x")
    settle.drift_explain(drift=drift, acting_user=processor, reason="Customer pays the remaining seats in January")
    drift.refresh_from_db()
    assert (drift.status, drift.resolution_reason) == (
        Drift.Status.EXPLAINED,
        "Customer pays the remaining seats in January",
    )


@override_settings(RECONCILE_UNBOUND_DAYS=31)
def test_unbound_seats_wait_the_configured_days(desk, provider):
    assert Kind.UNBOUND_SEATS not in {row["kind"] for row in reconcile()}


def test_a_run_that_stops_is_resumed_by_the_next(desk, provider, monkeypatch):
    monkeypatch.setattr(runs, "CHUNK", 1)
    monkeypatch.setattr(runs, "READ_ATTEMPTS", 1)
    provider.inject(Fault("error", method="GET", path_contains=str(desk["labs"].tenant_id), status=503, times=1))
    with pytest.raises(CommandError, match="could not complete"):
        reconcile()
    stopped = ReconciliationRun.objects.get()
    assert stopped.status == ReconciliationRun.Status.FAILED and stopped.tenants_done >= 1
    calls = len(provider.state.calls)
    reconcile()
    resumed = ReconciliationRun.objects.order_by("-pk").first()
    assert resumed.status == ReconciliationRun.Status.DONE and resumed.tenants_done == 3
    # Only the tenants the stopped run had not finished were read again.
    assert len(provider.state.calls) - calls == 3 - stopped.tenants_done


# --- in the desk -------------------------------------------------------------------------------------


def test_the_landing_page_counts_open_drift_and_the_list_shows_both_values(desk, provider, client, processor):
    from django.urls import reverse

    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 8
    reconcile()
    client.force_login(processor)
    items = {item.label: item for item in client.get(reverse("admin:index")).context["attention"]}
    drift_item = next(item for label, item in items.items() if label.startswith("Drift"))
    assert drift_item.count == Drift.objects.filter(status=Drift.Status.OPEN).count() == 3
    listing = client.get(drift_item.url)
    rows = {(d.kind, str(d.ours), str(d.provider)) for d in listing.context["cl"].result_list}
    assert ("quantity", "10", "8") in rows
    page = client.get(reverse("admin:redemption_drift_settle", args=[Drift.objects.get(kind=Kind.QUANTITY).pk]))
    assert "Accept the provider" not in page.text  # a supervisor's decision
    assert "Push ours to the provider" in page.text and "Mark explained" in page.text


def test_a_supervisor_starts_a_run_from_the_desk_and_an_order_processor_cannot(
    desk, provider, client, processor, supervisor, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    start = reverse("admin:redemption_reconciliationrun_start")
    client.force_login(processor)
    assert client.post(start).status_code == 403
    client.force_login(supervisor)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(start)
    run = ReconciliationRun.objects.get()
    assert (run.trigger, run.started_by, run.status) == ("desk", supervisor, "pending")
    assert response.url == reverse("admin:redemption_reconciliationrun_change", args=[run.pk])
    assert len(queued) == 1
    runs.reconciliation_run(run=run)
    page = client.get(response.url).text
    assert "3 of 3 tenants checked" in page
    # Its status is said once, as it is now: not a name frozen when the run was queued.
    assert "waiting for a worker" not in page.lower() and "tenant(s) checked" not in page
    assert "Cursor" not in page


@pytest.mark.django_db(transaction=True)
@requires_postgres
@requires_redis
def test_a_pushed_correction_reaches_the_provider_through_a_real_worker(broker, make_user, django_user_model):
    """On PostgreSQL with a Celery worker on Redis: approve a push, the worker sends it, the drift is settled."""
    server = ProviderServer(token=TOKEN).start()
    worker = None
    try:
        tenant = known(server, TenantFactory(default_domain="contoso.onmicrosoft.com"))
        subscription = SubscriptionFactory(tenant=tenant, quantity=12, term_end=date(2027, 6, 30))
        server.add_subscription(
            tenant.tenant_id, offer_id=subscription.product.part_number, quantity=9, end=date(2027, 6, 30),
            sub_id=subscription.provider_subscription_id,
        )  # fmt: skip
        with override_settings(PROVIDER_BACKEND="http", PROVIDER_URL=server.url, PROVIDER_TOKEN=TOKEN):
            reconcile("--tenant", str(tenant.tenant_id))
        drift = Drift.objects.get(kind=Kind.QUANTITY)
        first, second = make_user("boss-one", "Supervisor"), make_user("boss-two", "Supervisor")
        correction = settle.drift_push(drift=drift, acting_user=first, reason="Twelve were bought and paid")
        settle.correction_approve(correction=correction, acting_user=second)
        worker = Worker(broker_url=broker, provider_url=server.url, token=TOKEN, concurrency=1).start()
        assert wait_for(lambda: Drift.objects.get(pk=drift.pk).status == Drift.Status.PUSHED, timeout=60)
        assert held(server, subscription)["quantity"] == 12
        assert ProviderCorrection.objects.get().status == ProviderCorrection.Status.DONE
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def quantity_changed_in_the_portal(provider, desk, quantity: int) -> Drift:
    with provider.lock:
        held(provider, desk["e3"])["quantity"] = quantity
    reconcile()
    return Drift.objects.get(kind=Kind.QUANTITY, status=Drift.Status.OPEN)


def claimed(line: OrderLine, desk, processor) -> SeatAllocation:
    """Request the line's seats for the main tenant and claim them as a worker would (plan saved, lock let go)."""
    allocation = services.allocation_request(
        order_line=line, tenant=desk["main"], quantity=line.quantity, acting_user=processor
    )
    key = subscription_lock(subscription_id=desk["e3"].pk)
    found = SeatAllocation.objects.get(pk=allocation.pk)
    found.live_subscription_id = desk["e3"].pk
    assert binding._claim(found)
    slot_unlock(key)
    return allocation


def test_a_correction_asked_before_a_binding_is_not_sent_over_it(desk, provider, processor, supervisor, make_user):
    # Four more seats on their way (planned, their lock taken) when the portal change is found.
    allocation = claimed(added_seats(desk, 4), desk, processor)
    drift = quantity_changed_in_the_portal(provider, desk, 8)  # ours 10
    correction = settle.drift_push(drift=drift, acting_user=processor, reason="Ten were bought")
    # The binding planned before the drift was found finishes: 14 here and at the provider.
    assert binding.allocation_bind(allocation_id=allocation.pk).status == SeatAllocation.Status.BOUND
    assert held(provider, desk["e3"])["quantity"] == 14

    settle.correction_approve(correction=correction, acting_user=make_user("second-boss", "Supervisor"))
    correction = settle.correction_apply(correction_id=correction.pk)

    # Sending the 10 asked for would take the 4 seats just bound away at the provider.
    assert correction.status == ProviderCorrection.Status.FAILED
    assert "We hold quantity 14 now" in correction.last_error and "nothing was sent" in correction.last_error
    assert held(provider, desk["e3"])["quantity"] == 14
    assert Drift.objects.get(pk=drift.pk).status == Drift.Status.OPEN


def test_a_bindings_own_change_found_as_drift_cannot_be_accepted_while_the_binding_is_unfinished(
    desk, provider, processor, supervisor
):
    # Four more seats planned and sent; the provider applied them but its answer was lost (ours still 10).
    allocation = claimed(added_seats(desk, 4), desk, processor)
    drift = quantity_changed_in_the_portal(provider, desk, 14)

    # Taking 14 as ours would have the binding plan 4 more on top of it: 18 at the provider.
    with pytest.raises(ValidationError, match=f"binding {allocation.pk} of this subscription is not finished"):
        settle.drift_accept(drift=drift, acting_user=supervisor, reason="Customer added four in the portal")
    assert Subscription.objects.get(pk=desk["e3"].pk).quantity == 10

    assert binding.allocation_bind(allocation_id=allocation.pk).status == SeatAllocation.Status.BOUND
    assert held(provider, desk["e3"])["quantity"] == 14
    reconcile()
    assert Drift.objects.get(pk=drift.pk).status == Drift.Status.CLOSED


def test_a_correction_whose_drift_went_away_is_not_sent_and_can_be_rejected_from_the_list(
    desk, provider, processor, make_user, client
):
    drift = quantity_changed_in_the_portal(provider, desk, 8)
    correction = settle.drift_push(drift=drift, acting_user=processor, reason="Ten were bought")
    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 10
    reconcile()  # the drift is gone by itself
    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 12
    reconcile()  # a new one, accepted: we hold 12
    second = make_user("second-boss", "Supervisor")
    settle.drift_accept(
        drift=Drift.objects.get(kind=Kind.QUANTITY, status=Drift.Status.OPEN), acting_user=second, reason="Bought 12"
    )
    settle.correction_approve(correction=correction, acting_user=second)
    correction = settle.correction_apply(correction_id=correction.pk)
    assert correction.status == ProviderCorrection.Status.FAILED and "settled meanwhile" in correction.last_error
    assert held(provider, desk["e3"])["quantity"] == 12

    # A supervisor rejects it from the list, with a reason, after a confirmation.
    client.force_login(second)
    url = reverse("admin:redemption_providercorrection_changelist")
    page = client.post(url, {"action": "reject_selected", "_selected_action": [correction.pk], "index": "0"})
    assert "Reject 1 correction(s)" in page.content.decode()
    client.post(
        url, {"action": "reject_selected", "_selected_action": [correction.pk], "apply": "1", "reason": "Stale"}
    )
    correction.refresh_from_db()
    assert correction.status == ProviderCorrection.Status.REJECTED and "Stale" in correction.last_error


def test_a_failed_correction_sent_on_a_second_approval_names_who_sent_it(desk, provider, processor, make_user):
    drift = term_end_changed_in_the_portal(provider, desk)
    correction = settle.drift_push(drift=drift, acting_user=processor, reason="The portal change was a mistake")
    first, second = make_user("first-boss", "Supervisor"), make_user("second-boss", "Supervisor")
    provider.inject(Fault("final", method="PATCH", status=409, message="Locked for billing", times=1))
    settle.correction_approve(correction=correction, acting_user=first)
    assert settle.correction_apply(correction_id=correction.pk).status == ProviderCorrection.Status.FAILED

    settle.correction_approve(correction=correction, acting_user=second)
    correction = settle.correction_apply(correction_id=correction.pk)

    assert (correction.status, correction.approved_by) == (ProviderCorrection.Status.DONE, second)
    assert Drift.objects.get(pk=drift.pk).resolved_by == second


def test_an_explained_drift_stays_explained_until_its_values_change(desk, provider, processor):
    drift = quantity_changed_in_the_portal(provider, desk, 8)
    settle.drift_explain(drift=drift, acting_user=processor, reason="Customer returns two seats in January")

    reconcile()
    assert not Drift.objects.filter(kind=Kind.QUANTITY, status=Drift.Status.OPEN).exists()

    with provider.lock:
        held(provider, desk["e3"])["quantity"] = 7
    reconcile()
    reopened = Drift.objects.get(kind=Kind.QUANTITY, status=Drift.Status.OPEN)
    assert (reopened.ours, reopened.provider) == (10, 7)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_accepting_a_drift_waits_for_a_binding_of_its_subscription_under_way(desk, provider, make_user):
    import threading

    from django.db import connection, connections

    from redemption.statements import slot_unlock, subscription_lock

    with provider.lock:
        held(provider, desk["e3"])["status"] = "suspended"
    reconcile()
    drift = Drift.objects.get(kind=Kind.STATUS)
    boss = make_user("accepting-boss", "Supervisor")
    # A binding of the subscription holds its lock from its plan (which read "active") to its result.
    key = subscription_lock(subscription_id=desk["e3"].pk)
    done = threading.Event()

    def accept():
        try:
            settle.drift_accept(drift=drift, acting_user=boss, reason="Suspended for non-payment")
        finally:
            connections.close_all()
            done.set()

    accepting = threading.Thread(target=accept)
    accepting.start()
    try:
        # Were it written now, the binding's result would write "active" over it when it finishes.
        assert not done.wait(1.0)
        assert Subscription.objects.get(pk=desk["e3"].pk).status == Subscription.Status.ACTIVE
    finally:
        slot_unlock(key)
        connection.close()
    assert done.wait(10)
    accepting.join()
    assert Subscription.objects.get(pk=desk["e3"].pk).status == Subscription.Status.SUSPENDED


def added_seats(desk, quantity: int = 2) -> OrderLine:
    return OrderLineFactory(
        order=OrderFactory(agreement=desk["e3"].agreement),
        product=desk["e3"].product,
        quantity=quantity,
        kind=OrderLine.Kind.ADDITIONAL,
    )


def test_seats_are_not_added_over_a_change_made_in_the_portal_until_the_drift_is_settled(
    desk, provider, processor, supervisor
):
    drift = quantity_changed_in_the_portal(provider, desk, 12)  # ours 10: the customer added two in the portal
    line = added_seats(desk)

    with pytest.raises(ValidationError, match=r"differently from us \(quantity differs: ours 10, the provider's 12"):
        services.allocation_request(order_line=line, tenant=desk["main"], quantity=2, acting_user=processor)

    assert held(provider, desk["e3"])["quantity"] == 12
    settle.drift_accept(drift=drift, acting_user=supervisor, reason="Customer added two in the portal")
    bound(line, desk["main"], processor, supervisor)
    assert held(provider, desk["e3"])["quantity"] == 14
    reconcile()
    assert not Drift.objects.filter(status=Drift.Status.OPEN, kind=Kind.QUANTITY).exists()
    assert Drift.objects.get(pk=drift.pk).resolved_by == supervisor


def test_a_binding_queued_before_the_drift_was_found_fails_with_the_reason_and_sends_nothing(desk, provider, processor):
    allocation = services.allocation_request(
        order_line=added_seats(desk), tenant=desk["main"], quantity=2, acting_user=processor
    )
    assert allocation.status == SeatAllocation.Status.QUEUED
    with provider.lock:
        held(provider, desk["e3"])["status"] = "suspended"
    reconcile()
    writes = provider.state.applied_writes

    allocation = binding.allocation_bind(allocation_id=allocation.pk)

    assert allocation.status == SeatAllocation.Status.FAILED
    assert "status differs: ours active, the provider's suspended" in allocation.last_error
    assert "Settle the drift first" in allocation.last_error
    assert provider.state.applied_writes == writes
    assert held(provider, desk["e3"])["status"] == "suspended"


def test_a_binding_is_not_reversed_over_a_change_made_in_the_portal(desk, provider, supervisor):
    allocation = desk["e5"].allocations.get()
    quantity = held(provider, desk["e5"])["quantity"]
    with provider.lock:
        held(provider, desk["e5"])["quantity"] = quantity + 3
    reconcile()

    with pytest.raises(ValidationError, match="reversing this binding would overwrite that change"):
        services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Wrong product")

    assert held(provider, desk["e5"])["quantity"] == quantity + 3
    assert SeatAllocation.objects.get(pk=allocation.pk).status == SeatAllocation.Status.BOUND


def test_a_reversal_asked_before_a_portal_change_was_found_fails_with_the_reason_and_sends_nothing(
    desk, provider, supervisor
):
    allocation = desk["e5"].allocations.get()
    allocation = services.allocation_reverse(allocation=allocation, acting_user=supervisor, reason="Wrong product")
    quantity = held(provider, desk["e5"])["quantity"]
    with provider.lock:
        held(provider, desk["e5"])["quantity"] = quantity + 3
    reconcile()
    writes = provider.state.applied_writes

    allocation = binding.allocation_bind(allocation_id=allocation.pk)

    assert allocation.status == SeatAllocation.Status.REVERSAL_FAILED
    assert "reversing this binding would overwrite that change" in allocation.last_error
    assert provider.state.applied_writes == writes
    assert held(provider, desk["e5"])["quantity"] == quantity + 3
