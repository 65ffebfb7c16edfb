"""Fixtures of the desk's tests: customers with seats already bound, and orders to bind."""

from datetime import date

import pytest

from licensing.models import OrderLine
from redemption.models import SeatAllocation
from tests.factories import (
    AgreementFactory,
    CustomerFactory,
    OrderFactory,
    OrderLineFactory,
    ProductFactory,
    SeatAllocationFactory,
    SubscriptionFactory,
    TenantFactory,
)
from tests.redemption.conftest import known_to_provider, provider_subscription


def customer_with_seats(name: str, domain: str, product):
    """A customer whose tenant already holds 10 seats of the product under an agreement."""
    customer = CustomerFactory(name=name)
    tenant = known_to_provider(TenantFactory(customer=customer, default_domain=domain))
    agreement = AgreementFactory(customer=customer)
    provider_subscription(
        SubscriptionFactory(
            agreement=agreement, product=product, tenant=tenant, quantity=10, term_end=date(2027, 6, 30)
        )
    )
    return customer, tenant, agreement


@pytest.fixture
def three_orders():
    e3, e5 = ProductFactory(part_number="Q5Y-00003"), ProductFactory(part_number="AAA-00005")
    _, northwind, agreement_a = customer_with_seats("Northwind Traders", "northwind.onmicrosoft.com", e3)
    _, litware, agreement_b = customer_with_seats("Litware", "litware.onmicrosoft.com", e3)
    one = OrderFactory(agreement=agreement_a)
    two = OrderFactory(agreement=agreement_a, suggested_tenant_domain="northwind.onmicrosoft.com")
    three = OrderFactory(agreement=agreement_b)
    lines = [
        OrderLineFactory(order=one, product=e3, kind=OrderLine.Kind.RENEWAL, quantity=10, line_number=1),
        OrderLineFactory(order=one, product=e3, kind=OrderLine.Kind.ADDITIONAL, quantity=5, line_number=2),
        OrderLineFactory(order=two, product=e5, kind=OrderLine.Kind.NEW, quantity=3, line_number=1),
        OrderLineFactory(order=three, product=e5, kind=OrderLine.Kind.NEW, quantity=4, line_number=1),
    ]
    return {"lines": lines, "orders": (one, two, three), "northwind": northwind, "litware": litware}


def bound_at(when) -> SeatAllocation:
    """An allocation the worker bound at `when` (claimed, then bound with its subscription)."""
    allocation = SeatAllocationFactory(status=SeatAllocation.Status.QUEUED)
    line = allocation.order_line
    subscription = SubscriptionFactory(
        agreement=line.order.agreement, product=line.product, tenant=allocation.tenant, quantity=allocation.quantity
    )
    rows = SeatAllocation.objects.filter(pk=allocation.pk)
    rows.update(status=SeatAllocation.Status.BINDING)
    rows.update(status=SeatAllocation.Status.BOUND, subscription=subscription, bound_at=when)
    return allocation
