"""The rows guard their own state whatever writes them: the shell, a bulk update, raw SQL on PostgreSQL."""

import uuid
from datetime import date

import pytest
from django.db import IntegrityError, transaction

from config.guards import RowGuardError
from licensing.models import OrderLine
from redemption import binding, services
from redemption.models import SeatAllocation, Subscription
from tests.conftest import requires_postgres
from tests.factories import OrderFactory, ProductFactory, TenantFactory
from tests.redemption.conftest import known_to_provider

pytestmark = pytest.mark.django_db
Status = SeatAllocation.Status


@pytest.fixture
def bound(new_line, tenant, processor, supervisor):
    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=10, confirm_domain=tenant.default_domain, acting_user=processor
    )
    services.allocation_approve(allocation=allocation, acting_user=supervisor)
    return binding.allocation_bind(allocation_id=allocation.pk)


def test_requesting_seats_fixes_what_they_hang_on(new_line, tenant, processor):
    services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=2, confirm_domain=tenant.default_domain, acting_user=processor
    )
    new_line.refresh_from_db()
    tenant.refresh_from_db()
    for row in (new_line, new_line.order, new_line.order.agreement, new_line.product, tenant):
        row.refresh_from_db()
        assert row.seats_requested_at is not None, type(row).__name__
        assert row.fixed_reason()


def test_a_product_whose_seats_were_requested_keeps_its_part_number_and_term(bound):
    product = bound.order_line.product
    product.refresh_from_db()
    offer = product.part_number
    product.part_number = "AAA-99999"
    with pytest.raises(RowGuardError, match="its part number, the offer sent to the provider, and its term"):
        product.save()
    product.refresh_from_db()
    assert product.part_number == offer
    # Its term sets the end date of the renewals and added seats already requested or waiting for approval.
    product.term_months = 36
    with pytest.raises(RowGuardError, match="its term, which sets the end date they are bound to"):
        product.save()
    product.refresh_from_db()
    assert product.term_months == 12
    # What is not sent to the provider may still be corrected.
    product.description = "Office 365 E3 (annual)"
    product.save()


def test_identity_confirmation_has_its_history_row(new_line, tenant, processor):
    services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=2, confirm_domain=tenant.default_domain, acting_user=processor
    )
    confirmed = tenant.history.filter(verified_at__isnull=False).earliest("history_date")
    assert confirmed.history_user == processor
    assert confirmed.history_change_reason.startswith("Identity confirmed for binding seats of")
    assert str(confirmed.verified_tenant_id) == str(tenant.tenant_id)


def test_a_bound_tenants_identity_cannot_change_from_the_shell(bound, tenant):
    tenant.refresh_from_db()
    tenant.tenant_id = uuid.uuid4()
    tenant.default_domain = "litware.onmicrosoft.com"
    with pytest.raises(RowGuardError, match="its customer, tenant ID and default domain are fixed"):
        tenant.save()
    tenant.refresh_from_db()
    assert tenant.default_domain == "northwind.onmicrosoft.com"


def test_a_bound_line_keeps_its_product_and_never_drops_below_its_seats(bound, new_line):
    line = OrderLine.objects.get(pk=new_line.pk)
    line.kind = OrderLine.Kind.RENEWAL
    with pytest.raises(RowGuardError, match="order, product, kind, line number and coverage dates are fixed"):
        line.save()
    line = OrderLine.objects.get(pk=new_line.pk)
    line.quantity = 3
    with pytest.raises(RowGuardError, match="cannot go below 10"):
        line.save()
    assert OrderLine.objects.get(pk=new_line.pk).quantity == 10


def test_a_line_whose_seats_were_requested_can_go_down_to_its_seats_held_never_up(new_line, tenant, processor):
    services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=4, confirm_domain=tenant.default_domain, acting_user=processor
    )
    line = OrderLine.objects.get(pk=new_line.pk)
    line.quantity = 11
    with pytest.raises(RowGuardError, match=r"down to the 4 seat\(s\) held, not up from the 10 the order bought"):
        line.save()
    line.quantity = 4
    line.save()
    assert OrderLine.objects.get(pk=new_line.pk).seats_left == 0


def test_a_stale_instance_never_writes_back_the_seat_count(new_line, tenant, processor):
    stale = OrderLine.objects.get(pk=new_line.pk)
    services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=4, confirm_domain=tenant.default_domain, acting_user=processor
    )
    stale.quantity = 9  # down, to no fewer than the 4 held: allowed
    stale.save()
    assert OrderLine.objects.get(pk=new_line.pk).seats_allocated == 4
    assert stale.seats_allocated == 4


def test_allocations_and_subscriptions_are_never_saved_whole_or_deleted(bound):
    with pytest.raises(RowGuardError, match="only through the binding flow"):
        bound.save()
    with pytest.raises(RowGuardError, match="only through the binding flow"):
        bound.delete()
    with pytest.raises(RowGuardError, match="never deleted"):
        bound.subscription.delete()
    assert SeatAllocation.objects.filter(pk=bound.pk, status=Status.BOUND).exists()


def test_an_unbound_tenant_can_move_and_is_confirmed_again(customer, processor):
    tenant = known_to_provider(TenantFactory(customer=customer, default_domain="spare.onmicrosoft.com"))
    tenant = services.tenant_verify(tenant=tenant, acting_user=processor)
    tenant.default_domain = "sparetwo.onmicrosoft.com"
    tenant.save()
    tenant.refresh_from_db()
    assert tenant.verified_at is None and tenant.verified_domain == ""


def test_the_binding_request_refuses_a_tenant_changed_after_it_was_checked(new_line, tenant, processor):
    stale = type(tenant).objects.get(pk=tenant.pk)
    type(tenant).objects.filter(pk=tenant.pk).update(default_domain="northwindother.onmicrosoft.com")
    with pytest.raises(Exception, match="changed while"):
        services.allocation_request(
            order_line=new_line, tenant=stale, quantity=2, confirm_domain=stale.default_domain, acting_user=processor
        )
    assert not SeatAllocation.objects.exists()


@requires_postgres
def test_the_database_refuses_what_bypasses_the_orm(bound, tenant, new_line):
    attempts = [
        lambda: type(tenant).objects.filter(pk=tenant.pk).update(tenant_id=uuid.uuid4()),
        lambda: type(tenant).objects.filter(pk=tenant.pk).update(seats_requested_at=None),
        lambda: OrderLine.objects.filter(pk=new_line.pk).update(order=OrderFactory()),
        lambda: OrderLine.objects.filter(pk=new_line.pk).update(product=ProductFactory()),
        lambda: OrderLine.objects.filter(pk=new_line.pk).update(quantity=60),
        lambda: OrderLine.objects.filter(pk=new_line.pk).update(ends_on=date(2040, 1, 1)),
        lambda: type(new_line.product).objects.filter(pk=new_line.product_id).update(part_number="AAA-99999"),
        lambda: type(new_line.product).objects.filter(pk=new_line.product_id).update(term_months=36),
        lambda: SeatAllocation.objects.filter(pk=bound.pk).update(status=Status.QUEUED),
        lambda: SeatAllocation.objects.filter(pk=bound.pk).update(quantity=20),
        lambda: Subscription.objects.filter(pk=bound.subscription_id).update(tenant=TenantFactory()),
        lambda: SeatAllocation.objects.filter(pk=bound.pk).delete(),
        lambda: type(tenant).objects.filter(pk=tenant.pk).delete(),
    ]
    for attempt in attempts:
        with pytest.raises(IntegrityError), transaction.atomic():
            attempt()
    bound.refresh_from_db()
    assert (bound.status, bound.quantity) == (Status.BOUND, 10)


def test_a_line_whose_seats_were_requested_keeps_its_coverage_dates(new_line, tenant, processor):
    allocation = services.allocation_request(
        order_line=new_line, tenant=tenant, quantity=4, confirm_domain=tenant.default_domain, acting_user=processor
    )
    ends_on = allocation.order_line.ends_on
    # The binding's end date is the line's: moved after the request (even before an approval), the
    # subscription would be bound to a date nobody saw.
    line = OrderLine.objects.get(pk=new_line.pk)
    line.ends_on = ends_on.replace(year=ends_on.year + 13)
    with pytest.raises(RowGuardError, match="coverage dates are fixed"):
        line.save()
    assert OrderLine.objects.get(pk=new_line.pk).ends_on == ends_on
