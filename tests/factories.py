"""Test data factories for every model."""

import uuid
from datetime import date, timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from licensing.models import Agreement, Order, OrderLine, Product, Program
from redemption.models import SeatAllocation, Subscription
from tenants.models import Customer, Partner, Tenant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    name = factory.Sequence(lambda n: f"Reseller {n}")
    mpn_id = factory.Sequence(lambda n: f"{4000000 + n}")
    email = factory.LazyAttribute(lambda o: f"orders{o.mpn_id}@reseller.example")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"it{n}@customer.example")
    country = "US"
    partner = factory.SubFactory(PartnerFactory)


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    tenant_id = factory.LazyFunction(uuid.uuid4)
    default_domain = factory.Sequence(lambda n: f"tenant{n}.onmicrosoft.com")
    display_name = factory.Sequence(lambda n: f"Tenant {n}")
    customer = factory.SubFactory(CustomerFactory)


class AgreementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agreement

    program = Program.OV
    number = factory.Sequence(lambda n: f"V{1000000 + n}")
    customer = factory.SubFactory(CustomerFactory)
    partner = factory.LazyAttribute(lambda o: o.customer.partner)
    starts_on = date(2026, 1, 1)
    ends_on = factory.LazyAttribute(lambda o: Agreement.term_end_for(o.program, o.starts_on))


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product
        django_get_or_create = ["part_number"]

    part_number = factory.Sequence(lambda n: f"Q5Y-{n:05d}")
    description = "O365 E3 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd"
    term_months = 12


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    license_number = factory.Sequence(lambda n: f"{60000000 + n}")
    agreement = factory.SubFactory(AgreementFactory)
    ordered_on = date(2026, 11, 1)


class OrderLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OrderLine

    order = factory.SubFactory(OrderFactory)
    line_number = factory.Sequence(lambda n: n + 1)
    product = factory.SubFactory(ProductFactory)
    quantity = 10
    kind = OrderLine.Kind.NEW
    starts_on = date(2026, 11, 1)
    ends_on = factory.LazyAttribute(lambda o: o.starts_on + timedelta(days=365))
    seats_allocated = 0
    # Seats held means seats were requested (as redemption.services records it).
    seats_requested_at = factory.LazyAttribute(lambda o: timezone.now() if o.seats_allocated else None)


def mark_seats_requested(*rows) -> None:
    """Record that seats were requested against these rows, as allocation_request does."""
    for row in rows:
        if row.seats_requested_at is None:
            row.seats_requested_at = timezone.now()
            type(row).objects.filter(pk=row.pk).update(seats_requested_at=row.seats_requested_at)


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription
        skip_postgeneration_save = True

    tenant = factory.SubFactory(TenantFactory)
    agreement = factory.SubFactory(AgreementFactory, customer=factory.SelfAttribute("..tenant.customer"))
    product = factory.SubFactory(ProductFactory)
    quantity = 10
    term_end = date(2027, 11, 1)
    provider_subscription_id = factory.LazyFunction(lambda: str(uuid.uuid4()))

    @factory.post_generation
    def seats_requested(obj, create, extracted, **kwargs):
        if create:
            mark_seats_requested(obj.agreement, obj.product, obj.tenant)


class SeatAllocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SeatAllocation
        skip_postgeneration_save = True

    order_line = factory.SubFactory(OrderLineFactory)
    tenant = factory.SubFactory(TenantFactory, customer=factory.SelfAttribute("..order_line.order.agreement.customer"))
    quantity = 1
    requested_by = factory.SubFactory(UserFactory)

    @factory.post_generation
    def seats_requested(obj, create, extracted, **kwargs):
        if create:
            line = obj.order_line
            mark_seats_requested(line, line.order, line.order.agreement, line.product, obj.tenant)
