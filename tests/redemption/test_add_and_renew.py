"""Adding seats and renewing on one screen: the same result whatever order the sheet lists the lines in."""

from datetime import date

import pytest
from django.urls import reverse

from licensing.models import OrderLine
from redemption import binding
from redemption.models import SeatAllocation, Subscription
from tests.admin_forms import confirmation
from tests.factories import AgreementFactory, OrderFactory, OrderLineFactory, SubscriptionFactory
from tests.redemption.conftest import provider_subscription

pytestmark = pytest.mark.django_db


def order_with(tenant, product, kinds: list[str]):
    """An agreement whose 10 seats end 2027-06-30 on the tenant, and one order with lines of these kinds."""
    agreement = AgreementFactory(customer=tenant.customer)
    provider_subscription(
        SubscriptionFactory(
            agreement=agreement, product=product, tenant=tenant, quantity=10, term_end=date(2027, 6, 30)
        )
    )
    order = OrderFactory(agreement=agreement)
    for number, kind in enumerate(kinds, start=1):
        quantity = 10 if kind == OrderLine.Kind.RENEWAL else 5
        OrderLineFactory(order=order, product=product, kind=kind, quantity=quantity, line_number=number)
    return order


def bind_on_one_screen(client, order) -> Subscription:
    page = client.get(reverse("admin:licensing_order_bind", args=[order.pk]))
    client.post(reverse("admin:licensing_order_bind", args=[order.pk]), confirmation(page))
    for allocation in SeatAllocation.objects.filter(order_line__order=order).order_by("pk"):
        binding.allocation_bind(allocation_id=allocation.pk)
    subscription = Subscription.objects.get(agreement=order.agreement)
    return subscription, page


def test_seats_added_in_the_same_confirmation_apply_before_the_renewal_whatever_the_line_order(
    client, processor, tenant, product, time_machine
):
    time_machine.move_to(date(2026, 12, 1))
    client.force_login(processor)
    renewal_first = order_with(tenant, product, [OrderLine.Kind.RENEWAL, OrderLine.Kind.ADDITIONAL])
    added_first = order_with(tenant, product, [OrderLine.Kind.ADDITIONAL, OrderLine.Kind.RENEWAL])
    one, page = bind_on_one_screen(client, renewal_first)
    other, _ = bind_on_one_screen(client, added_first)
    # 5 seats added to 10 ending 2027-06-30 blend to 2027-08-20 (rule 7); the renewal then runs a year
    # from there with the renewal line's 10 seats.
    assert (one.quantity, one.term_end) == (other.quantity, other.term_end) == (10, date(2028, 8, 20))
    text = page.content.decode()
    assert "seats added to a subscription before its renewal" in text
    assert "not the sheet&#x27;s" in text and "keeps their seat-days (rule 7)" in text
    assert text.index("Additional") < text.index("Renewal</td>")
