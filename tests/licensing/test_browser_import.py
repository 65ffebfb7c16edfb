"""In a real browser: upload an order sheet in the admin, read the preview, confirm, find the orders."""

import os
from pathlib import Path

import pytest

from tests.licensing.sheets import csv_bytes, order_row

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]


@pytest.fixture
def page():
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser.new_page()
        browser.close()


def test_staff_uploads_an_order_sheet_previews_confirms_and_finds_the_orders(live_server, page, make_user, tmp_path):
    make_user("desk", role=None, password="pw-for-tests-123")
    sheet = tmp_path / "monday-orders.csv"
    rows = [
        order_row(),
        order_row(Line="2", Quantity="3"),
        order_row(**{"License Number": "60000077", "Customer": "Tailspin Toys", "Agreement Number": "V7"}),
    ]
    sheet.write_bytes(csv_bytes(rows, delimiter=";", encoding="cp1252"))

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "desk")
    page.fill("#id_password", "pw-for-tests-123")
    page.click("input[type=submit]")
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
