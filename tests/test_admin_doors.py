"""Every admin door passes through the same guards as the services.

Seats are bound through the services; then, as an order processor, a supervisor and a superuser,
every admin page of every model is tried: change forms and inlines posted with a guarded field
changed, old versions posted back from the history pages, single and bulk deletes. None may change
what the bound seats hang on, none may answer a 500, and each refusal says why.
"""

import uuid
from dataclasses import dataclass

import pytest
from django.contrib import admin
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from config.guards import RowGuardError
from licensing.models import Agreement, Order, OrderLine, Product
from redemption import binding, services
from redemption.models import RenewalSchedule, SandboxSubscription, SeatAllocation, Subscription
from tenants.models import VERIFIED_FIELDS, Customer, Partner, Tenant
from tests.admin_forms import change_form_data, inline_prefix
from tests.factories import (
    AgreementFactory,
    CustomerFactory,
    OrderFactory,
    OrderLineFactory,
    ProductFactory,
    TenantFactory,
)
from tests.redemption.conftest import known_to_provider

pytestmark = pytest.mark.django_db
Status = SeatAllocation.Status
ROLES = ["Order processor", "Supervisor", None]  # None: a superuser


@dataclass
class Desk:
    northwind: Customer
    litware: Customer
    tenant: Tenant
    spare_tenant: Tenant
    agreement: Agreement
    litware_agreement: Agreement
    order: Order
    line: OrderLine
    added_line: OrderLine
    open_order: Order
    other_product: Product
    subscription: Subscription
    allocation: SeatAllocation
    added: SeatAllocation


@pytest.fixture
def desk(make_user) -> Desk:
    """Northwind's seats bound through the services: 10 new, then 5 added; Litware beside it."""
    clerk, boss = make_user("clerk"), make_user("boss", "Supervisor")
    northwind = CustomerFactory(name="Northwind Traders")
    litware = CustomerFactory(name="Litware")
    tenant = known_to_provider(TenantFactory(customer=northwind, default_domain="northwindtraders.onmicrosoft.com"))
    spare_tenant = TenantFactory(customer=northwind, default_domain="northwindspare.onmicrosoft.com")
    known_to_provider(TenantFactory(customer=litware, default_domain="litwareinc.onmicrosoft.com"))
    agreement = AgreementFactory(customer=northwind)
    product = ProductFactory(part_number="Q5Y-00003")
    order = OrderFactory(agreement=agreement, license_number="61234567")
    line = OrderLineFactory(order=order, product=product, quantity=10, kind=OrderLine.Kind.NEW, line_number=1)
    allocation = services.allocation_request(
        order_line=line, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=clerk
    )
    services.allocation_approve(allocation=allocation, acting_user=boss)
    allocation = binding.allocation_bind(allocation_id=allocation.pk)
    added_line = OrderLineFactory(
        order=OrderFactory(agreement=agreement, license_number="61234568"),
        product=product,
        quantity=5,
        kind=OrderLine.Kind.ADDITIONAL,
        line_number=1,
    )
    added = services.allocation_request(order_line=added_line, tenant=tenant, quantity=5, acting_user=clerk)
    added = binding.allocation_bind(allocation_id=added.pk)
    assert (allocation.status, added.status) == (Status.BOUND, Status.BOUND)
    litware_agreement = AgreementFactory(customer=litware)
    return Desk(
        northwind=northwind,
        litware=litware,
        tenant=tenant,
        spare_tenant=spare_tenant,
        agreement=agreement,
        litware_agreement=litware_agreement,
        order=order,
        line=line,
        added_line=added_line,
        open_order=OrderFactory(agreement=litware_agreement),
        other_product=ProductFactory(part_number="AAA-11111"),
        subscription=Subscription.objects.get(),
        allocation=allocation,
        added=added,
    )


def guarded_state(desk: Desk) -> dict:
    """What the bound seats hang on, as the database holds it."""
    return {
        "tenant": Tenant.objects.filter(pk=desk.tenant.pk)
        .values("customer_id", "tenant_id", "default_domain", "seats_requested_at", *VERIFIED_FIELDS)
        .get(),
        "agreement": Agreement.objects.filter(pk=desk.agreement.pk)
        .values("customer_id", "program", "number", "seats_requested_at")
        .get(),
        "orders": list(
            Order.objects.filter(agreement=desk.agreement)
            .order_by("pk")
            .values("pk", "agreement_id", "license_number", "seats_requested_at")
        ),
        "lines": list(
            OrderLine.objects.filter(pk__in=[desk.line.pk, desk.added_line.pk])
            .order_by("pk")
            .values("pk", "order_id", "product_id", "kind", "line_number", "quantity", "seats_allocated")
        ),
        "product": Product.objects.filter(pk=desk.line.product_id).values("part_number", "seats_requested_at").get(),
        "subscriptions": list(Subscription.objects.order_by("pk").values()),
        "allocations": list(SeatAllocation.objects.order_by("pk").values()),
        "provider": list(SandboxSubscription.objects.order_by("id").values("id", "quantity", "status")),
    }


def attacks(desk: Desk) -> dict[type, tuple[list, dict]]:
    """For each model: the bound objects to try, and the guarded fields with the values to try."""
    litware_id = str(uuid.uuid4())
    return {
        Tenant: (
            [desk.tenant],
            {"customer": desk.litware.pk, "tenant_id": litware_id, "default_domain": "litware.onmicrosoft.com"},
        ),
        Agreement: ([desk.agreement], {"customer": desk.litware.pk, "program": "ol", "number": "X-RENUMBERED"}),
        Order: ([desk.order], {"agreement": desk.litware_agreement.pk, "license_number": "99999999"}),
        OrderLine: (
            [desk.line, desk.added_line],
            {
                "order": desk.open_order.pk,
                "product": desk.other_product.pk,
                "kind": OrderLine.Kind.RENEWAL,
                "line_number": "9",
                "quantity": "1",
            },
        ),
        Subscription: (
            [desk.subscription],
            {"quantity": "42", "status": "active", "tenant": desk.spare_tenant.pk, "term_end": "2030-01-01"},
        ),
        SeatAllocation: ([desk.allocation, desk.added], {"status": Status.QUEUED, "quantity": "3", "tenant": ""}),
        Customer: ([desk.northwind], {"partner": desk.litware.partner.pk}),
        Partner: ([desk.northwind.partner], {"mpn_id": "0000000"}),
        Product: ([desk.line.product], {"part_number": "AAA-99999"}),
    }


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def as_role(client, make_user):
    def login(role):
        user = make_user(f"door-{role or 'root'}".replace(" ", "-").lower(), role)
        client.force_login(user)
        return client

    return login


def assert_refused(response) -> None:
    assert response.status_code in (200, 302, 403), response.status_code


@pytest.mark.parametrize("role", ROLES, ids=["processor", "supervisor", "superuser"])
def test_no_change_form_or_inline_rewrites_what_bound_seats_hang_on(desk, as_role, role):
    client = as_role(role)
    before = guarded_state(desk)
    for model, (objects, fields) in attacks(desk).items():
        for obj in objects:
            page = client.get(_url(model, "change", obj.pk))
            assert page.status_code in (200, 302)  # a binding's page is its status page
            data = change_form_data(page) if page.status_code == 200 and page.context.get("adminform") else {}
            for name, value in fields.items():
                response = client.post(_url(model, "change", obj.pk), {**data, name: value})
                assert_refused(response)
                assert guarded_state(desk) == before, f"{model.__name__}.{name} changed by {role or 'superuser'}"


@pytest.mark.parametrize("role", ROLES, ids=["processor", "supervisor", "superuser"])
def test_inlines_cannot_rewrite_a_tenant_or_a_bound_line(desk, as_role, role):
    client = as_role(role)
    before = guarded_state(desk)
    pages = [
        (
            Customer,
            desk.northwind.pk,
            Tenant,
            {"tenant_id": str(uuid.uuid4()), "default_domain": "litware.onmicrosoft.com"},
        ),
        (Order, desk.order.pk, OrderLine, {"product": desk.other_product.pk, "kind": "renewal", "quantity": "2"}),
    ]
    for parent, pk, model, fields in pages:
        page = client.get(_url(parent, "change", pk))
        data = change_form_data(page)
        prefix = inline_prefix(page, model)
        for name, value in fields.items():
            response = client.post(_url(parent, "change", pk), {**data, f"{prefix}-0-{name}": value})
            assert_refused(response)
            assert guarded_state(desk) == before, f"{model.__name__}.{name} changed inline by {role or 'superuser'}"
        # Deleting the row from the inline is refused too.
        response = client.post(_url(parent, "change", pk), {**data, f"{prefix}-0-DELETE": "on"})
        assert_refused(response)
        assert guarded_state(desk) == before


@pytest.mark.parametrize("role", ROLES, ids=["processor", "supervisor", "superuser"])
def test_history_pages_show_old_versions_and_never_restore_them(desk, as_role, role):
    client = as_role(role)
    before = guarded_state(desk)
    schedule = RenewalSchedule.load()
    schedule.offsets, schedule.send_hour = "30,7", 9
    schedule.save()
    schedule_before = RenewalSchedule.objects.values("offsets", "send_hour").get()
    targets = [(model, obj) for model, (objects, _) in attacks(desk).items() for obj in objects]
    targets.append((RenewalSchedule, schedule))
    for model, obj in targets:
        history = client.get(_url(model, "history", obj.pk))
        assert history.status_code == 200
        for version in model.history.filter(**{model._meta.pk.attname: obj.pk}):
            url = _url(model, "simple_history", obj.pk, version.history_id)
            page = client.get(url)
            assert page.status_code == 200
            assert b'name="_save"' not in page.content, f"{url} offers to save an old version"
            response = client.post(url, {**change_form_data(page), **_version_data(version)})
            assert_refused(response)
            assert guarded_state(desk) == before, f"{url} restored an old version for {role or 'superuser'}"
    assert RenewalSchedule.objects.values("offsets", "send_hour").get() == schedule_before


def _version_data(version) -> dict:
    """Every editable column of an old version, as a revert would post it."""
    data = {}
    for field in version.instance._meta.concrete_fields:
        value = getattr(version.instance, field.attname)
        if value is not None and not field.primary_key:
            data[field.name] = str(value)
    return data


@pytest.mark.parametrize("role", ROLES, ids=["processor", "supervisor", "superuser"])
def test_nothing_bound_can_be_deleted_one_by_one_or_in_bulk(desk, as_role, role):
    client = as_role(role)
    before = guarded_state(desk)
    for model, (objects, _) in attacks(desk).items():
        for obj in objects:
            page = client.get(_url(model, "delete", obj.pk))
            assert page.status_code in (200, 302, 403)
            assert_refused(client.post(_url(model, "delete", obj.pk), {"post": "yes"}))
            bulk = {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
            assert_refused(client.post(_url(model, "changelist"), bulk))
            assert model.objects.filter(pk=obj.pk).exists(), f"{model.__name__} {obj.pk} deleted by {role}"
            assert guarded_state(desk) == before


def test_every_admin_page_of_every_model_answers_without_a_server_error(desk, as_role):
    """Change, delete, history and version pages of every registered model, for every role."""
    ours = [m for m in admin.site._registry if m._meta.app_label in {"tenants", "licensing", "redemption"}]
    for role in ROLES:
        client = as_role(role)
        for model in ours:
            obj = model._default_manager.order_by("pk").first()
            if obj is None:
                continue
            for view in ("change", "delete", "history"):
                response = client.get(_url(model, view, obj.pk), follow=True)
                assert response.status_code in (200, 403), f"{model.__name__} {view}: {response.status_code}"


def test_addresses_and_searches_no_row_could_match_answer_without_a_server_error(desk, as_role):
    """Typed or hand-edited addresses: a word where an id goes, a NUL, a number too big for any date."""
    ours = [m for m in admin.site._registry if m._meta.app_label in {"tenants", "licensing", "redemption", "desk"}]
    client = as_role(None)
    odd = ["abc", "%C2%B2", "99999999999999999999"]
    for model in ours:
        obj = model._default_manager.order_by("pk").first()
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        addresses = [f"{base}{value}/change/" for value in odd]
        if obj is not None:
            addresses += [f"{base}{obj.pk}/history/{value}/" for value in odd]
        addresses += [f"{base}?q=clerk", f"{base}?q=%00", f"{base}?q=10.0.0.1"]
        for address in addresses:
            response = client.get(address, follow=True)
            assert response.status_code in (200, 403, 404), f"{address}: {response.status_code}"
    for address in [
        "/admin/tenants/tenant/add/?customer=%C2%B2",
        "/admin/tenants/tenant/add/?q=North%00wind",
        "/admin/licensing/agreement/?ending=within99999999999",
        "/admin/redemption/subscription/?ending=within99999999999",
    ]:
        assert client.get(address, follow=True).status_code == 200, address


def test_a_version_that_is_not_a_number_is_not_found(desk, as_role):
    client = as_role("Order processor")
    for model, obj in [(Tenant, desk.tenant), (Order, desk.order), (SeatAllocation, desk.allocation)]:
        assert (
            client.get(f"/admin/{model._meta.app_label}/{model._meta.model_name}/{obj.pk}/history/abc/").status_code
            == 404
        )


def test_sign_in_records_are_found_by_user_name(desk, as_role):
    from desk.models import SignInEvent

    SignInEvent.objects.create(kind=SignInEvent.Kind.LOCKED_OUT, username="clerk", ip_address="10.0.0.1")
    client = as_role("Supervisor")
    by_name = client.get("/admin/desk/signinevent/?q=clerk").content.decode()
    by_address = client.get("/admin/desk/signinevent/?q=10.0.0.1").content.decode()
    assert "1 result" in by_name and "1 result" in by_address
    assert client.get("/admin/desk/lockedaccount/?q=clerk").status_code == 200


def test_a_choice_that_is_not_even_an_id_is_a_form_error(desk, as_role):
    client = as_role("Order processor")
    url = _url(Customer, "change", desk.litware.pk)
    data = change_form_data(client.get(url))

    response = client.post(url, {**data, "partner": "abc"})

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    page = client.get(_url(Order, "change", desk.open_order.pk))
    data = change_form_data(page)
    response = client.post(
        _url(Order, "change", desk.open_order.pk),
        {**data, "agreement": "²", f"{inline_prefix(page, OrderLine)}-0-product": "x"},
    )
    assert response.status_code == 200


def test_the_reminder_schedule_opened_first_by_a_clerk_is_not_written_in_their_name(as_role):
    client = as_role("Order processor")
    assert client.get("/admin/redemption/renewalschedule/", follow=True).status_code == 200
    created = RenewalSchedule.history.get()
    assert created.history_user is None
    assert created.history_change_reason.startswith("Created from the settings")


# --- each door of the issue, one by one -----------------------------------------------------------


def test_reverting_a_bound_allocation_to_queued_is_refused_and_nothing_binds_again(desk, as_role):
    client = as_role("Order processor")
    queued = desk.allocation.history.filter(status=Status.QUEUED).earliest("history_date")
    response = client.post(_url(SeatAllocation, "simple_history", desk.allocation.pk, queued.history_id), {})
    assert response.status_code == 403  # allocations change only through the services: nobody may change one here
    desk.allocation.refresh_from_db()
    assert desk.allocation.status == Status.BOUND
    assert binding.allocation_sweep() == []
    assert SandboxSubscription.objects.get().quantity == 15


def test_reverting_an_order_line_keeps_its_allocated_seats(desk, as_role):
    client = as_role("Supervisor")
    first = desk.line.history.earliest("history_date")
    assert first.seats_allocated == 0
    client.post(_url(OrderLine, "simple_history", desk.line.pk, first.history_id), _version_data(first))
    desk.line.refresh_from_db()
    assert desk.line.seats_allocated == 10
    assert desk.line.seats_left == 0


def test_the_reminder_schedule_cannot_be_changed_by_an_order_processor(desk, as_role):
    schedule = RenewalSchedule.load()
    client = as_role("Order processor")
    response = client.post(_url(RenewalSchedule, "change", schedule.pk), {"offsets": "1", "send_hour": "0"})
    assert response.status_code == 403
    assert RenewalSchedule.objects.get().offsets == schedule.offsets


def test_a_bound_tenants_identity_is_read_only_with_the_reason(desk, as_role):
    client = as_role("Order processor")
    page = client.get(_url(Tenant, "change", desk.tenant.pk)).content.decode()
    assert "its customer, tenant ID and default domain are fixed" in page
    assert 'name="tenant_id"' not in page and 'name="default_domain"' not in page
    spare = client.get(_url(Tenant, "change", desk.spare_tenant.pk)).content.decode()
    assert 'name="tenant_id"' in spare


def test_an_unbound_tenants_identity_can_be_corrected_and_must_be_confirmed_again(desk, as_role):
    spare = desk.spare_tenant
    known_to_provider(spare)
    spare = services.tenant_verify(tenant=spare, acting_user=desk.allocation.requested_by)
    assert spare.is_verified
    client = as_role("Order processor")
    data = change_form_data(client.get(_url(Tenant, "change", spare.pk)))
    response = client.post(
        _url(Tenant, "change", spare.pk), {**data, "default_domain": "northwindbackup.onmicrosoft.com"}
    )
    assert response.status_code == 302
    spare.refresh_from_db()
    assert spare.default_domain == "northwindbackup.onmicrosoft.com"
    assert not spare.is_verified and spare.verified_tenant_id is None


def post_line_quantity(client, desk, quantity: str) -> list:
    """Post the bound line's quantity changed on its own change form and on its order's inline."""
    responses = []
    for url in (_url(OrderLine, "change", desk.line.pk), _url(Order, "change", desk.order.pk)):
        page = client.get(url)
        data = change_form_data(page)
        if "quantity" in data:
            data["quantity"] = quantity
        else:
            data[f"{inline_prefix(page, OrderLine)}-0-quantity"] = quantity
        responses.append(client.post(url, data))
    return responses


def test_a_quantity_below_the_bound_seats_is_a_form_error_not_a_server_error(desk, as_role):
    for response in post_line_quantity(as_role("Order processor"), desk, "4"):
        assert response.status_code == 200
        assert "10 seat(s) of this line are requested or bound" in response.content.decode()
    desk.line.refresh_from_db()
    assert desk.line.quantity == 10


def test_a_bound_lines_quantity_cannot_grow_into_seats_the_order_never_bought(desk, as_role):
    for response in post_line_quantity(as_role("Order processor"), desk, "60"):
        assert response.status_code == 200
        assert "not up from the 10 the order bought" in response.content.decode()
    desk.line.refresh_from_db()
    assert (desk.line.quantity, desk.line.seats_allocated, desk.line.seats_left) == (10, 10, 0)


def test_a_refused_delete_says_why(desk, as_role):
    client = as_role(None)
    page = client.get(_url(Tenant, "delete", desk.tenant.pk)).content.decode()
    assert "cannot be deleted" in page and "Seats have been requested for this tenant since" in page
    assert 'value="Yes' not in page  # no confirmation is offered


def test_a_form_opened_before_a_binding_cannot_undo_its_seat_count(desk, as_role):
    client = as_role("Order processor")
    line = OrderLineFactory(order=desk.order, product=desk.line.product, quantity=6, line_number=2)
    data = change_form_data(client.get(_url(OrderLine, "change", line.pk)))
    services.allocation_request(
        order_line=line,
        tenant=desk.tenant,
        quantity=4,
        confirm_domain=desk.tenant.default_domain,
        acting_user=desk.allocation.requested_by,
    )
    ends_on = line.ends_on
    # The clerk saves the page opened before: only what the form may still change is written (the
    # quantity, down to the seats held); the coverage dates are fixed now, and the seat count is the service's.
    response = client.post(_url(OrderLine, "change", line.pk), {**data, "quantity": "5", "ends_on": "2040-12-31"})
    assert response.status_code == 302
    line.refresh_from_db()
    assert (line.seats_allocated, line.quantity, line.ends_on) == (4, 5, ends_on)


@pytest.mark.parametrize("role", ROLES, ids=["processor", "supervisor", "superuser"])
def test_an_agreement_never_moves_to_another_customer_even_before_any_seats(desk, as_role, role):
    # Litware's agreement has an open order and no seats requested: still its customer's for good.
    client = as_role(role)
    agreement = desk.litware_agreement
    url = _url(Agreement, "change", agreement.pk)
    page = client.get(url)
    data = change_form_data(page)
    assert "customer" not in data
    assert "An agreement number belongs to exactly one customer, for good" in page.content.decode()

    client.post(url, {**data, "customer": desk.northwind.pk})

    agreement.refresh_from_db()
    assert agreement.customer_id == desk.litware.pk


def test_an_agreements_customer_is_refused_by_the_row_and_the_database(desk):
    agreement = Agreement.objects.get(pk=desk.litware_agreement.pk)
    agreement.customer = desk.northwind
    with pytest.raises(RowGuardError, match=f"Agreement {agreement.number} belongs to Litware, for good"):
        agreement.save()
    if connection.vendor == "postgresql":
        with pytest.raises(IntegrityError, match="its customer_id never change"), transaction.atomic():
            Agreement.objects.filter(pk=agreement.pk).update(customer=desk.northwind)
    assert Agreement.objects.get(pk=agreement.pk).customer_id == desk.litware.pk
    # What is not its identity may still be corrected.
    agreement.refresh_from_db()
    agreement.number = "V7654321"
    agreement.save()


def test_an_orders_suggested_tenant_is_one_of_its_own_customers(desk, as_role):
    client = as_role("Order processor")
    url = _url(Order, "change", desk.open_order.pk)
    data = change_form_data(client.get(url))

    # Litware's order, pointing at Northwind's tenant: the work queue would offer it.
    foreign = client.post(url, {**data, "suggested_tenant_domain": desk.tenant.default_domain})
    garbled = client.post(url, {**data, "suggested_tenant_domain": "not a domain"})

    assert foreign.status_code == 200
    assert "belongs to customer Northwind Traders, not to this order&#x27;s customer" in foreign.content.decode()
    assert garbled.status_code == 200
    assert "is not a default tenant domain" in garbled.content.decode()
    desk.open_order.refresh_from_db()
    assert desk.open_order.suggested_tenant_domain == ""
    own = client.post(url, {**data, "suggested_tenant_domain": " LitwareInc.onmicrosoft.com "})
    assert own.status_code == 302
    desk.open_order.refresh_from_db()
    assert desk.open_order.suggested_tenant_domain == "litwareinc.onmicrosoft.com"


def test_a_change_form_asks_why_and_the_reason_goes_into_the_history_of_the_record_and_its_inline_rows(desk, as_role):
    customer = desk.spare_tenant.customer
    client = as_role("Order processor")
    url = _url(Customer, "change", customer.pk)
    page = client.get(url)
    tenants = inline_prefix(page, Tenant)
    row = next(
        n for n in range(10) if page.context["inline_admin_formsets"][0].formset.forms[n].instance == desk.spare_tenant
    )
    data = {
        **change_form_data(page),
        "email": "it@northwind.example",
        f"{tenants}-{row}-display_name": "Northwind Spare (old)",
        "change_reason": "\u200b ",
    }
    refused = client.post(url, data)
    assert refused.status_code == 200 and "Say why" in refused.text
    assert Customer.objects.get(pk=customer.pk).email != "it@northwind.example"

    assert client.post(url, {**data, "change_reason": "The customer's IT moved to a shared mailbox"}).status_code == 302
    customer.refresh_from_db()
    tenant = Tenant.objects.get(pk=desk.spare_tenant.pk)
    assert (customer.email, tenant.display_name) == ("it@northwind.example", "Northwind Spare (old)")
    for record in (customer, tenant):
        last = record.history.latest("history_date")
        assert last.history_change_reason == "The customer's IT moved to a shared mailbox"
        assert last.history_user.username == "door-order-processor"
