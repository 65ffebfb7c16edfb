"""Fixtures for binding tests: a customer with tenants the sandbox provider knows, and order lines."""

from datetime import date, timedelta

import pytest

from licensing.models import OrderLine
from redemption.gateway.sandbox import sandbox_tenant_add
from redemption.models import SandboxSubscription
from tests.factories import (
    AgreementFactory,
    CustomerFactory,
    OrderFactory,
    OrderLineFactory,
    ProductFactory,
    SubscriptionFactory,
    TenantFactory,
)


def known_to_provider(tenant):
    """Register the tenant with the sandbox provider exactly as we hold it."""
    sandbox_tenant_add(tenant_id=tenant.tenant_id, domain=tenant.default_domain, company_name=tenant.display_name)
    return tenant


def provider_subscription(subscription):
    """Make the sandbox provider hold the subscription as we hold it."""
    SandboxSubscription.objects.create(
        id=subscription.provider_subscription_id,
        tenant_id=subscription.tenant.tenant_id,
        offer_id=subscription.product.part_number,
        quantity=subscription.quantity,
        commitment_end=subscription.term_end,
    )
    return subscription


@pytest.fixture
def customer():
    return CustomerFactory(name="Northwind Traders")


@pytest.fixture
def tenant(customer):
    return known_to_provider(TenantFactory(customer=customer, default_domain="northwind.onmicrosoft.com"))


@pytest.fixture
def agreement(customer):
    return AgreementFactory(customer=customer)


@pytest.fixture
def product():
    return ProductFactory(part_number="Q5Y-00003")


@pytest.fixture
def new_line(agreement, product):
    order = OrderFactory(agreement=agreement)
    return OrderLineFactory(order=order, product=product, quantity=10, kind=OrderLine.Kind.NEW, line_number=1)


@pytest.fixture
def bound_subscription(agreement, product, tenant):
    """A subscription of 10 seats already on the tenant, ending 2027-06-30, held by the provider too."""
    return provider_subscription(
        SubscriptionFactory(
            agreement=agreement, product=product, tenant=tenant, quantity=10, term_end=date(2027, 6, 30)
        )
    )


def line_of(agreement, product, kind, quantity, line_number=1):
    order = OrderFactory(agreement=agreement)
    return OrderLineFactory(
        order=order,
        product=product,
        quantity=quantity,
        kind=kind,
        line_number=line_number,
        starts_on=date(2026, 11, 1),
        ends_on=date(2026, 11, 1) + timedelta(days=365),
    )
