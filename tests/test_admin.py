"""Every admin page renders for staff, is refused to anonymous users, and stays cheap on big tables."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from licensing.models import OrderLine
from redemption.demo import demo_data_load
from redemption.models import SeatAllocation
from tests.conftest import requires_postgres
from tests.factories import SeatAllocationFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

OUR_APPS = {"tenants", "licensing", "redemption"}
OUR_MODELS = [model for model in admin.site._registry if model._meta.app_label in OUR_APPS]
# The reminder schedule is a single row: its list opens that row's edit page.
LISTED_MODELS = [model for model in OUR_MODELS if model.__name__ != "RenewalSchedule"]


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


DEMO_DAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def demo_desk():
    """The demo desk as of its own day; the test runs on that day too, since pages read the clock."""
    from redemption.models import RenewalSchedule

    with time_machine.travel(DEMO_DAY, tick=True):
        RenewalSchedule.load()
        yield demo_data_load(today=DEMO_DAY.date(), with_logins=False)


def test_all_domain_models_are_in_the_admin():
    names = {model.__name__ for model in OUR_MODELS}
    assert {
        "Partner",
        "Customer",
        "Tenant",
        "Agreement",
        "Product",
        "Order",
        "OrderLine",
        "Subscription",
        "SeatAllocation",
    } <= names


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda m: m.__name__)
def test_admin_pages_render_for_staff(client, superuser, demo_desk, model):
    client.force_login(superuser)
    pages = [_url(model, "changelist")]
    obj = model.objects.order_by("pk").first()
    if obj is not None:
        pages += [_url(model, "change", obj.pk), _url(model, "history", obj.pk)]
    if admin.site._registry[model].has_add_permission(_request_for(superuser)):
        pages.append(_url(model, "add"))
    for page in pages:
        # A single-row list (the reminder schedule) opens its only row directly.
        response = client.get(page, follow=True)
        assert response.status_code == 200, f"{page} answered {response.status_code}"


def test_changelists_search_by_what_staff_type(client, superuser, demo_desk):
    client.force_login(superuser)
    searches = [
        (OrderLine, "61234567", "61234567 line 1"),
        (OrderLine, "87213456AB", "61234567 line 1"),
        (SeatAllocation, "adventureworks", "adventureworks.onmicrosoft.com"),
    ]
    for model, query, expected in searches:
        response = client.get(_url(model, "changelist"), {"q": query})
        assert response.status_code == 200
        assert expected in response.text, f"searching {model.__name__} for {query!r}"


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda m: m.__name__)
def test_admin_pages_are_refused_to_anonymous_users(client, demo_desk, model):
    response = client.get(_url(model, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_order_processor_sees_orders_but_cannot_change_subscriptions(client, processor, demo_desk):
    client.force_login(processor)
    assert client.get(reverse("admin:licensing_order_changelist")).status_code == 200
    subscription = SubscriptionFactory()
    assert client.get(_url(type(subscription), "change", subscription.pk)).status_code == 200
    response = client.post(_url(type(subscription), "change", subscription.pk), {"quantity": 999})
    assert response.status_code == 403
    subscription.refresh_from_db()
    assert subscription.quantity == 10


def test_landing_page_counts_what_needs_attention(client, superuser, demo_desk):
    client.force_login(superuser)
    SeatAllocationFactory(status=SeatAllocation.Status.AWAITING_APPROVAL)
    SeatAllocationFactory(status=SeatAllocation.Status.FAILED, last_error="403 tenant is not a customer")
    SeatAllocationFactory(status=SeatAllocation.Status.FAILED)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    items = {item.label: item for item in response.context["attention"]}
    assert items["Bindings waiting for a supervisor"].count == 1
    assert items["Failed bindings"].count == 2
    # The demo has subscriptions ending in 6 and 20 days, besides ones further out.
    ending = next(item for label, item in items.items() if label.startswith("Subscriptions ending"))
    assert ending.count == 2
    followed = client.get(ending.url)
    assert followed.status_code == 200
    assert followed.context["cl"].result_count == 2
    failed = client.get(items["Failed bindings"].url)
    assert failed.context["cl"].result_count == 2


def test_landing_page_counts_rejected_bindings_and_corrections_waiting_for_a_supervisor(client, superuser, demo_desk):
    SeatAllocationFactory(status=SeatAllocation.Status.REJECTED, rejection_reason="Pilot tenant not agreed")
    client.force_login(superuser)
    items = {item.label: item for item in client.get(reverse("admin:index")).context["attention"]}
    rejected = items["Bindings asked for in the past 7 days that a supervisor rejected"]
    assert rejected.count == 1
    listed = client.get(rejected.url)
    assert listed.context["cl"].result_count == 1 and "Pilot tenant not agreed" in listed.text
    waiting = items["Corrections waiting for a supervisor before they go to the provider"]
    assert waiting.count == 0 and client.get(waiting.url).status_code == 200


def _request_for(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = user
    return request


def _bulk_rows(count: int) -> None:
    """Create `count` order lines, each with its own order, agreement, customer, allocation and subscription."""
    today = timezone.localdate()
    for index in range(count):
        allocation = SeatAllocationFactory(status=SeatAllocation.Status.QUEUED)
        SubscriptionFactory(
            tenant=allocation.tenant,
            agreement=allocation.order_line.order.agreement,
            product=allocation.order_line.product,
            term_end=today + timedelta(days=index % 90),
        )


def _queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


CHANGELIST_QUERY_BOUND = 12


@pytest.mark.parametrize("model", LISTED_MODELS, ids=lambda m: m.__name__)
def test_changelist_queries_do_not_grow_with_rows(client, superuser, model, django_assert_max_num_queries):
    client.force_login(superuser)
    _bulk_rows(3)
    url = _url(model, "changelist")
    few = _queries_for(client, url)
    _bulk_rows(60)
    with django_assert_max_num_queries(CHANGELIST_QUERY_BOUND):
        many = _queries_for(client, url)
    assert many == few, f"{model.__name__} changelist: {few} queries for a few rows, {many} for many"


def test_indexed_search_follows_relations_both_ways(client, superuser, demo_desk):
    from tenants.models import Customer, Tenant

    client.force_login(superuser)
    customers = _url(Customer, "changelist")
    tenants = _url(Tenant, "changelist")

    def names(url: str, query: str) -> set[str]:
        response = client.get(url, {"q": query})
        assert response.status_code == 200
        return {str(obj) for obj in response.context["cl"].result_list}

    assert names(customers, "wwimportersdev.onmicrosoft.com") == {"Wide World Importers"}
    assert names(customers, "4412345") == {"Northwind Traders", "Adventure Works Cycles"}
    assert names(tenants, "NORTHWIND") == {"northwindtraders.onmicrosoft.com", "northwindlabs.onmicrosoft.com"}
    tailspin = Tenant.objects.get(default_domain="tailspintoys.onmicrosoft.com")
    assert names(tenants, str(tailspin.tenant_id)) == {"tailspintoys.onmicrosoft.com"}
    assert names(tenants, "no-such-tenant") == set()


@requires_postgres
def test_big_unfiltered_lists_are_counted_from_statistics_filtered_ones_exactly(monkeypatch):
    from django.db import connection as conn

    from config import admin_tools
    from tenants.models import Partner
    from tests.factories import PartnerFactory

    PartnerFactory.create_batch(5)
    with conn.cursor() as cursor:
        cursor.execute("ANALYZE tenants_partner")
    monkeypatch.setattr(admin_tools, "ESTIMATE_ABOVE", 2)
    assert admin_tools.EstimatedCountPaginator(Partner.objects.order_by("pk"), 50).count == 5
    with CaptureQueriesContext(conn) as captured:
        assert admin_tools.EstimatedCountPaginator(Partner.objects.filter(pk__gt=0).order_by("pk"), 50).count == 5
    assert "count(" in captured[0]["sql"].lower()
    # Below the threshold the exact count is kept.
    monkeypatch.setattr(admin_tools, "ESTIMATE_ABOVE", 1000)
    PartnerFactory()
    assert admin_tools.EstimatedCountPaginator(Partner.objects.order_by("pk"), 50).count == 6


def test_roles_hold_every_permission_they_are_defined_with():
    from django.contrib.auth.models import Group

    from redemption.roles import ROLES

    for name, codenames in ROLES.items():
        granted = set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))
        assert granted == set(codenames), name


def test_orders_filter_by_a_date_range(client, superuser, demo_desk):
    from licensing.models import Order

    client.force_login(superuser)
    response = client.get(
        _url(Order, "changelist"), {"ordered_on__range__gte": "2026-11-22", "ordered_on__range__lte": "2026-11-24"}
    )
    assert response.status_code == 200
    shown = {order.license_number for order in response.context["cl"].result_list}
    assert shown == {"61234567", "61234568", "61234571"}


@requires_postgres
def test_changelist_benchmark_fills_every_list_and_measures_each_page(capsys):
    from django.core.management import call_command

    call_command("bench_admin", rows=200)
    out = capsys.readouterr().out
    assert "filled 200 orders" in out
    assert "/admin/redemption/seatallocation/?status__exact=failed" in out
    assert "slowest page" in out
