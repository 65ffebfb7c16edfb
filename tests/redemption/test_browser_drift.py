"""In a real browser: a supervisor opens a drift from the landing page and accepts the provider's value."""

from datetime import date

import pytest
from django.core.management import call_command
from django.test import override_settings

from redemption.models import Drift, Subscription
from redemption.testing.provider_server import ProviderServer
from tests.browser import admin_login, authenticator_for, chromium_page, requires_chromium
from tests.factories import SeatAllocationFactory, SubscriptionFactory, TenantFactory

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"


def test_a_supervisor_accepts_the_providers_quantity_from_the_landing_page(live_server, make_user, tmp_path):
    server = ProviderServer(token="t").start()
    try:
        tenant = TenantFactory(default_domain="contoso.onmicrosoft.com")
        server.add_tenant(tenant.tenant_id, tenant.default_domain, tenant.display_name)
        subscription = SubscriptionFactory(tenant=tenant, quantity=25, term_end=date(2027, 6, 30))
        SeatAllocationFactory(
            order_line__order__agreement=subscription.agreement, order_line__product=subscription.product,
            order_line__quantity=25, tenant=tenant, quantity=25, status="bound", subscription=subscription,
        )  # fmt: skip
        server.add_subscription(
            tenant.tenant_id, offer_id=subscription.product.part_number, quantity=20, end=date(2027, 6, 30),
            sub_id=subscription.provider_subscription_id,
        )  # fmt: skip
        with override_settings(PROVIDER_BACKEND="http", PROVIDER_URL=server.url, PROVIDER_TOKEN="t"):
            call_command("reconcile_provider", stdout=open(tmp_path / "out.txt", "w"))  # noqa: SIM115
    finally:
        server.stop()
    assert Drift.objects.filter(status="open").count() == 1
    phone = authenticator_for(make_user("chief", "Supervisor", password=PASSWORD))

    with chromium_page() as page:
        admin_login(page, live_server.url, "chief", PASSWORD, device=phone)
        page.click("#attention >> text=Drift")
        page.wait_for_selector("#result_list")
        page.click("#result_list a[href*='/settle/']")
        page.wait_for_selector("#drift-values")
        assert page.inner_text("#drift-ours") == "25" and page.inner_text("#drift-provider") == "20"
        page.fill("#id_reason", "Customer dropped 5 seats in the admin portal")
        page.click("button[value=accept]")
        page.wait_for_selector("#drift-status[data-status='accepted']")
        assert "by chief" in page.inner_text("#drift-status")
        page.goto(f"{live_server.url}/admin/redemption/subscription/{subscription.pk}/history/")
        history = page.inner_text("#change-history")
        assert "chief" in history and "Customer dropped 5 seats in the admin portal" in history
    assert Subscription.objects.get(pk=subscription.pk).quantity == 20
