"""In a real browser: upload an order sheet in the admin, read the preview, confirm, find the orders."""

import pytest

from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium
from tests.licensing.sheets import csv_bytes, order_row

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]


def test_staff_uploads_an_order_sheet_previews_confirms_and_finds_the_orders(live_server, make_user, tmp_path):
    phone = authenticator_for(make_user("desk", role=None, password="pw-for-tests-123"))
    sheet = tmp_path / "monday-orders.csv"
    rows = [
        order_row(),
        order_row(Line="2", Quantity="3"),
        order_row(**{"License Number": "60000077", "Customer": "Tailspin Toys", "Agreement Number": "V7"}),
    ]
    sheet.write_bytes(csv_bytes(rows, delimiter=";", encoding="cp1252"))

    with chromium_page() as page:
        admin_login(page, live_server.url, "desk", "pw-for-tests-123", device=phone)
        page.goto(f"{live_server.url}/admin/licensing/order/")
        page.click("a.import_link")
        page.set_input_files("#id_import_file", str(sheet))
        page.click("input[type=submit]")

        assert "3 rows: 3 new, 0 updated, 0 unchanged, 0 errors." in page.inner_text(".import-summary")
        assert page.locator("table.import-preview tr.new").count() == 3

        page.click("input[name=confirm]")

        assert "Import finished" in page.inner_text("ul.messagelist")
        changelist = page.inner_text("#result_list")
        assert "60000001" in changelist and "60000077" in changelist
