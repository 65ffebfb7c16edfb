"""In a real browser, with a real worker on Redis: bind lines of three orders of two customers on one
screen, and watch the batch page reach "All bound." by itself."""

import pytest

from redemption.models import SeatAllocation
from tests.browser import admin_login, chromium_page, requires_chromium
from tests.conftest import requires_postgres, requires_redis
from tests.redemption.worker import Worker

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
    requires_postgres,
    requires_redis,
    pytest.mark.django_db(transaction=True),
]
PASSWORD = "pw-for-tests-123"


def test_a_clerk_binds_three_orders_on_one_screen_and_the_batch_page_follows_them(
    live_server,
    make_user,
    three_orders,
    broker,
):
    make_user("desk", "Order processor", password=PASSWORD)
    two, three = three_orders["orders"][1], three_orders["orders"][2]
    worker = Worker(broker_url=broker, concurrency=2).start()
    try:
        with chromium_page() as page:
            admin_login(page, live_server.url, "desk", PASSWORD)
            page.goto(f"{live_server.url}/admin/licensing/orderline/?unbound=yes")
            page.check("#action-toggle")
            page.select_option("select[name=action]", "bind_selected_lines")
            page.click("button[name=index]")
            page.wait_for_selector("#bulk-bind-form")
            page.fill(f"#id_confirm_{two.pk}", "northwind.onmicrosoft.com")
            page.fill(f"#id_confirm_{three.pk}", "litware.onmicrosoft.com")
            page.click("#bulk-bind-form input[type=submit]")
            page.wait_for_selector("#batch-rows")
            assert page.locator("#batch-rows tbody tr").count() == 4
            page.evaluate("window.openedOnce = true")
            # No reload: the page polls and shows the end by itself.
            page.wait_for_selector("#batch-state >> text=All bound.", timeout=60_000)
            assert page.evaluate("window.openedOnce === true"), "the page reloaded"
            assert page.inner_text("#count-bound") == "4"
            assert page.locator("#batch-rows tr[data-status='bound']").count() == 4
    finally:
        worker.stop()
    assert SeatAllocation.objects.filter(status="bound").count() == 4
