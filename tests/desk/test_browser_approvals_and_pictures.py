"""In a real browser: a supervisor approves several customers' bindings at once with one reason (a real
worker on Redis then binds them), and the landing page's pictures carry data and open their lists."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from licensing.models import OrderLine
from redemption.demo import demo_data_load
from redemption.models import SeatAllocation
from redemption.services import allocation_request
from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium
from tests.conftest import requires_postgres, requires_redis
from tests.desk.conftest import bound_at
from tests.factories import (
    AgreementFactory,
    CustomerFactory,
    OrderFactory,
    OrderLineFactory,
    SeatAllocationFactory,
    TenantFactory,
)
from tests.redemption.conftest import known_to_provider
from tests.redemption.worker import Worker, wait_for

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"
DEMO_DAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
REASON = "Tenants confirmed with each customer by phone"


def first_bindings(clerk) -> list[SeatAllocation]:
    """Three new-seats bindings of two customers, each the first to its tenant: all wait for approval."""
    asked = []
    for name, domain, lines in [("Fourth Coffee", "fourthcoffee", 2), ("Tailspin Toys", "tailspin", 1)]:
        customer = CustomerFactory(name=name)
        tenant = known_to_provider(TenantFactory(customer=customer, default_domain=f"{domain}.onmicrosoft.com"))
        order = OrderFactory(agreement=AgreementFactory(customer=customer))
        for number in range(1, lines + 1):
            line = OrderLineFactory(order=order, kind=OrderLine.Kind.NEW, quantity=5, line_number=number)
            asked.append(
                allocation_request(
                    order_line=line,
                    tenant=tenant,
                    quantity=5,
                    confirm_domain=tenant.default_domain,
                    acting_user=clerk,
                )
            )
    return asked


@requires_postgres
@requires_redis
def test_a_supervisor_approves_three_bindings_of_two_customers_with_one_reason(live_server, make_user, broker):
    clerk = make_user("desk", "Order processor", password=PASSWORD)
    phone = authenticator_for(make_user("chief", "Supervisor", password=PASSWORD))
    waiting = first_bindings(clerk)
    assert {allocation.status for allocation in waiting} == {SeatAllocation.Status.AWAITING_APPROVAL}
    worker = Worker(broker_url=broker, concurrency=2).start()
    try:
        with chromium_page() as page:
            admin_login(page, live_server.url, "chief", PASSWORD, device=phone)
            page.goto(
                live_server.url
                + reverse("admin:redemption_seatallocation_changelist")
                + "?status__exact=awaiting_approval"
            )
            page.wait_for_selector("#result_list")
            assert page.locator("#result_list tbody tr").count() == 3
            # One click selects them all, one reason approves them all.
            page.check("#action-toggle")
            page.select_option("select[name=action]", "approve_selected")
            page.click("button[name=index]")
            page.wait_for_selector("#decide-many")
            assert page.locator("#deciding li").count() == 3
            page.fill("#id_reason", REASON)
            page.click("#decide-many input[type=submit]")
            page.wait_for_selector("ul.messagelist >> text=3 binding(s) approved.")
        ids = [allocation.pk for allocation in waiting]
        assert wait_for(lambda: SeatAllocation.objects.filter(pk__in=ids, status="bound").count() == 3)
    finally:
        worker.stop()
    approved = SeatAllocation.objects.filter(pk__in=ids)
    assert {(a.approved_by.username, a.status) for a in approved} == {("chief", "bound")}
    # The one reason is kept with each binding, under the supervisor's name.
    kept = SeatAllocation.history.filter(id__in=ids, history_change_reason=f"Approved: {REASON}")
    assert sorted(kept.values_list("id", "history_user__username")) == sorted((pk, "chief") for pk in ids)


def test_the_landing_pages_pictures_carry_data_and_each_bar_opens_its_list(live_server, make_user):
    with time_machine.travel(DEMO_DAY, tick=True):
        demo_data_load(today=DEMO_DAY.date(), with_logins=False)
        # Two bindings this morning, three hours ago, and one failure: the demo's own were bound last year.
        for _ in range(2):
            bound_at(DEMO_DAY - timedelta(hours=3))
        SeatAllocationFactory(status=SeatAllocation.Status.FAILED, last_error="The provider refused the order.")
        root = make_user("root", role=None, password=PASSWORD)
        phone = authenticator_for(root)
        with chromium_page() as page:
            admin_login(page, live_server.url, "root", PASSWORD, device=phone)
            page.goto(live_server.url + reverse("admin:index"))
            figures = page.locator("#charts figure.chart")
            assert figures.count() == 3
            captions = [figures.nth(n).locator("figcaption").inner_text() for n in range(3)]
            assert not [caption for caption in captions if "nothing yet" in caption], captions
            # The first picture's first bar: its tooltip names the seats; clicking it lists those subscriptions.
            renewals_bar = figures.nth(0).locator("svg a rect").first
            assert renewals_bar.bounding_box()["height"] >= 1
            tip = renewals_bar.locator("title").text_content()
            seats = int(tip.split(": ")[1].split()[0])
            renewals_bar.click()
            page.wait_for_selector("#result_list")
            assert "/admin/redemption/subscription/" in page.url
            assert page.locator("#result_list tbody tr").count() >= 1
            listed = sum(int(text) for text in page.locator("#result_list tbody td.field-quantity").all_inner_texts())
            assert listed == seats, tip
            # Bindings per hour: the bar of three hours ago opens the two allocations bound then.
            page.goto(live_server.url + reverse("admin:index"))
            bound_bar = page.locator("#charts figure.chart").nth(1).locator("svg a rect[fill]").first
            assert bound_bar.locator("title").text_content().endswith(": 2 bound")
            bound_bar.click()
            page.wait_for_selector("#result_list")
            assert page.locator("#result_list tbody tr").count() == 2
            # Open work by age: a bar opens the work queue of that age, with its lines.
            page.goto(live_server.url + reverse("admin:index"))
            page.locator("#charts figure.chart").nth(2).locator("svg a rect").first.click()
            page.wait_for_selector("#result_list")
            assert "/admin/licensing/orderline/" in page.url
            assert page.locator("#result_list tbody tr").count() >= 1
