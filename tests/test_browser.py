from datetime import date

import pytest

from redemption.demo import demo_data_load
from tests.browser import admin_login, chromium_page, requires_chromium

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]


def test_staff_logs_in_sees_the_landing_page_and_opens_the_orders(live_server, make_user):
    demo_data_load(today=date(2026, 11, 24), with_logins=False)
    make_user("desk", "Order processor", password="pw-for-tests-123")
    with chromium_page() as page:
        admin_login(page, live_server.url, "desk", "pw-for-tests-123")
        assert page.locator("#attention").is_visible()
        assert "Failed bindings" in page.inner_text("#attention")
        page.click("#content-main a[href='/admin/licensing/order/']")
        page.wait_for_selector("#result_list")
        rows = page.locator("#result_list tbody tr")
        assert rows.count() == 9
        assert "61234567" in page.inner_text("#result_list")
        page.fill("#searchbar", "61234567")
        page.press("#searchbar", "Enter")
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 1
