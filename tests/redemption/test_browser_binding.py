"""In a real browser: bind a new order's seats by typing the tenant's domain, approve, see it bound.

The worker runs in eager mode (each task runs in the web process as soon as its transaction commits),
so the binding happens when the supervisor approves; the provider is the sandbox.
"""

import re

import pytest
from django.urls import reverse

from redemption.models import SandboxSubscription, SeatAllocation
from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"


def test_processor_binds_new_seats_by_typing_the_domain_and_a_supervisor_approves(
    live_server, make_user, new_line, tenant, eager_celery
):
    make_user("desk", "Order processor", password=PASSWORD)
    chief_phone = authenticator_for(make_user("chief", "Supervisor", password=PASSWORD))
    order = new_line.order

    with chromium_page() as page:
        admin_login(page, live_server.url, "desk", PASSWORD)
        page.goto(live_server.url + reverse("admin:licensing_order_change", args=[order.pk]))
        page.click(".object-tools >> text=Bind seats")
        page.wait_for_selector("#pending-lines")
        page.click("#pending-lines >> text=Choose the tenant and bind")

        page.wait_for_selector("#choose-tenant")
        page.select_option("#id_tenant", str(tenant.pk))
        page.click("#choose-tenant input[type=submit]")
        page.wait_for_selector("#resolved-tenant-id")
        assert page.inner_text("#resolved-tenant-id") == str(tenant.tenant_id)
        assert page.inner_text("#resolved-domain") == "northwind.onmicrosoft.com"
        assert page.inner_text("#resolved-name") == tenant.display_name

        page.fill("#id_confirm_domain", "  Northwind.onmicrosoft.com ")
        page.click("#bind-form input[type=submit]")
        page.wait_for_selector("#allocation-status")
        assert page.get_attribute("#allocation-status", "data-status") == "awaiting_approval"
        assert "First binding to northwind.onmicrosoft.com" in page.inner_text("#content-main")
        allocation_id = int(re.search(r"/seatallocation/(\d+)/status/", page.url).group(1))

        page.context.clear_cookies()
        admin_login(page, live_server.url, "chief", PASSWORD, device=chief_phone)
        approvals = reverse("admin:redemption_seatallocation_changelist") + "?status__exact=awaiting_approval"
        page.goto(live_server.url + approvals)
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 1
        page.check(f"#result_list input.action-select[value='{allocation_id}']")
        page.select_option("select[name=action]", "approve_selected")
        page.click("button[name=index]")
        page.wait_for_selector("#decide-many")
        page.fill("#id_reason", "Tenant confirmed with the customer by phone")
        page.click("#decide-many input[type=submit]")
        page.wait_for_selector("ul.messagelist >> text=1 binding(s) approved.")

        page.goto(live_server.url + reverse("admin:redemption_seatallocation_status", args=[allocation_id]))
        page.wait_for_selector("#allocation-status[data-status='bound']")
        history = page.inner_text("#allocation-history")
        assert "Approved: Tenant confirmed with the customer by phone" in history
        assert "chief" in history and "desk" in history

    allocation = SeatAllocation.objects.select_related("subscription").get(pk=allocation_id)
    assert (allocation.requested_by.username, allocation.approved_by.username) == ("desk", "chief")
    held = SandboxSubscription.objects.get(id=allocation.subscription.provider_subscription_id)
    assert (held.tenant_id, held.quantity) == (tenant.tenant_id, 10)
