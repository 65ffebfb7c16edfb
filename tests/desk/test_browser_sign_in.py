"""In a real browser: a supervisor signs in with an authenticator code and works under the CSP."""

from datetime import date

import pytest

from redemption.demo import demo_data_load
from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium
from tests.licensing.sheets import csv_bytes, order_row

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"
# Reports every Content-Security-Policy violation the page causes (init scripts are not subject to it).
WATCH_CSP = (
    "window.cspViolations = [];"
    "document.addEventListener('securitypolicyviolation',"
    " e => window.cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));"
)


def test_a_supervisor_signs_in_with_a_code_and_no_page_breaks_the_content_security_policy(
    live_server, make_user, tmp_path
):
    demo_data_load(today=date(2026, 11, 24), with_logins=False)
    phone = authenticator_for(make_user("chief", "Supervisor", password=PASSWORD))
    sheet = tmp_path / "orders.csv"
    sheet.write_bytes(csv_bytes([order_row(), order_row(Line="2", Quantity="3")]))
    console: list[str] = []
    with chromium_page() as page:
        page.on("console", lambda message: console.append(message.text))
        page.add_init_script(WATCH_CSP)
        admin_login(page, live_server.url, "chief", PASSWORD, device=phone)
        assert page.locator("#attention").is_visible()
        seen = {"landing page": page.evaluate("window.cspViolations")}
        for name, path in [
            ("work queue", "/admin/licensing/orderline/?unbound=yes"),
            ("orders with their date filter", "/admin/licensing/order/"),
            ("renewals desk", "/admin/redemption/renewalsubscription/"),
            ("two-factor page", "/admin/two-factor/"),
        ]:
            page.goto(live_server.url + path)
            page.wait_for_selector("#content")
            seen[name] = page.evaluate("window.cspViolations")
        page.goto(f"{live_server.url}/admin/licensing/order/import/")
        page.set_input_files("#id_import_file", str(sheet))
        page.click("input[type=submit]")
        page.wait_for_selector("table.import-preview")
        seen["import preview"] = page.evaluate("window.cspViolations")
    assert all(not violations for violations in seen.values()), seen
    assert not [line for line in console if "Content Security Policy" in line], console
