"""In a real browser: a clerk records a new customer's tenant by its domain and binds the order's seats."""

import pytest
from django.urls import reverse

from licensing.models import OrderLine
from redemption.models import SeatAllocation
from tests.browser import admin_login, chromium_page, requires_chromium
from tests.factories import AgreementFactory, CustomerFactory, OrderFactory, OrderLineFactory

pytestmark = [pytest.mark.browser, requires_chromium, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-for-tests-123"


def test_a_clerk_records_the_suggested_tenant_by_domain_and_binds_it(live_server, make_user):
    make_user("desk", "Order processor", password=PASSWORD)
    customer = CustomerFactory(name="Fourth Coffee")  # imported this morning: no tenant yet
    order = OrderFactory(
        agreement=AgreementFactory(customer=customer), suggested_tenant_domain="fourthcoffee.onmicrosoft.com"
    )
    line = OrderLineFactory(order=order, kind=OrderLine.Kind.NEW, quantity=12)
    with chromium_page() as page:
        admin_login(page, live_server.url, "desk", PASSWORD)
        page.goto(live_server.url + reverse("admin:licensing_orderline_bind", args=[line.pk]))
        page.click("text=Record a new tenant for Fourth Coffee")
        page.wait_for_selector("#lookup-tenant")
        assert page.input_value("#id_domain") == "fourthcoffee.onmicrosoft.com"
        page.click("#lookup-tenant input[type=submit]")
        page.wait_for_selector("#provider-identity")
        assert page.inner_text("#found-name") == "Fourth Coffee"
        page.fill("#id_confirm_domain", "fourthcoffee.onmicrosoft.com")
        page.click("#record-tenant input[type=submit]")
        page.wait_for_selector("#resolved-tenant-id")
        assert page.inner_text("#resolved-domain") == "fourthcoffee.onmicrosoft.com"
        page.fill("#id_confirm_domain", "fourthcoffee.onmicrosoft.com")
        page.click("#bind-form input[type=submit]")
        page.wait_for_selector("#allocation-status")
        assert page.get_attribute("#allocation-status", "data-status") == "awaiting_approval"
    allocation = SeatAllocation.objects.get()
    assert (allocation.tenant.default_domain, allocation.quantity) == ("fourthcoffee.onmicrosoft.com", 12)
