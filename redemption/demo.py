"""Demo data for `make run`: a small, believable distributor's desk, loaded idempotently."""

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from licensing.models import Agreement, Order, OrderLine, Product, Program
from redemption.gateway.sandbox import sandbox_tenant_add
from redemption.models import SandboxSubscription, SeatAllocation, Subscription
from redemption.roles import roles_sync
from tenants.models import Customer, Partner, Tenant

DEMO_NAMESPACE = uuid.UUID("6f1d1c0e-3b7a-4e43-9a59-0d1f6a6c2e11")


def demo_uuid(name: str) -> uuid.UUID:
    """Return a stable UUID for a demo object, so that reloading finds the same rows."""
    return uuid.uuid5(DEMO_NAMESPACE, name)


PARTNERS = [
    ("Contoso Reseller Ltd", "4412345", "licensing@contoso-reseller.example"),
    ("Fabrikam IT Services", "5523456", "orders@fabrikam-it.example"),
]
# name, email, country, partner MPN ID, tenants (domain prefix, display name)
CUSTOMERS = [
    (
        "Northwind Traders",
        "it@northwind.example",
        "US",
        "4412345",
        [("northwindtraders", "Northwind Traders"), ("northwindlabs", "Northwind Labs")],
    ),
    (
        "Adventure Works Cycles",
        "admin@adventure-works.example",
        "GB",
        "4412345",
        [("adventureworks", "Adventure Works Cycles")],
    ),
    ("Tailspin Toys", "office@tailspintoys.example", "DE", "5523456", [("tailspintoys", "Tailspin Toys")]),
    (
        "Wide World Importers",
        "it@wideworldimporters.example",
        "NL",
        "5523456",
        [("wideworldimporters", "Wide World Importers"), ("wwimportersdev", "WWI Development")],
    ),
    ("Litware Inc", "sysadmin@litware.example", "US", "5523456", []),
]
PRODUCTS = [
    ("Q5Y-00003", "O365 E3 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd"),
    ("U4S-00002", "O365 E1 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd"),
    ("J29-00003", "O365 BusPrem ShrdSvr SNGL SubsVL OLP NL Annual Qlfd"),
]
# program, number, authorization number, customer
AGREEMENTS = [
    (Program.OL, "87213456", "87213456AB", "Northwind Traders"),
    (Program.OV, "V7788123", "", "Northwind Traders"),
    (Program.OV, "V4412871", "", "Adventure Works Cycles"),
    (Program.OVS, "V5590342", "", "Tailspin Toys"),
    (Program.OV, "V6612093", "", "Wide World Importers"),
    (Program.OL, "88120977", "88120977CD", "Litware Inc"),
]
# Subscriptions already bound: agreement, tenant prefix, part, seats, days until term end.
SUBSCRIPTIONS = [
    ("V4412871", "adventureworks", "Q5Y-00003", 50, 20),
    ("V5590342", "tailspintoys", "U4S-00002", 15, 58),
    ("V6612093", "wideworldimporters", "J29-00003", 40, 85),
    ("V7788123", "northwindlabs", "U4S-00002", 10, 6),
]
# Orders waiting for binding: license number, agreement, days ago, suggested tenant,
# lines (kind, part, seats).
OPEN_ORDERS = [
    ("61234567", "87213456", 1, "northwindtraders.onmicrosoft.com", [("new", "Q5Y-00003", 25)]),
    ("61234568", "V4412871", 2, "", [("renewal", "Q5Y-00003", 50), ("additional", "Q5Y-00003", 10)]),
    ("61234569", "V5590342", 3, "", [("additional", "U4S-00002", 5)]),
    ("61234570", "V6612093", 4, "", [("new", "Q5Y-00003", 150)]),
    ("61234571", "88120977", 0, "", [("new", "J29-00003", 12)]),
]
# Tenants the sandbox provider knows that the desk has not recorded yet (to show "record a new tenant").
SANDBOX_ONLY_TENANTS = [("Litware Inc", "litwareinc", "Litware Inc")]
DEMO_USERS = [
    ("admin", "Demo administrator", None, True),
    ("clerk", "Demo order processor", "Order processor", False),
    ("supervisor", "Demo supervisor", "Supervisor", False),
]


@dataclass
class DemoResult:
    created: dict[str, int] = field(default_factory=dict)
    logins: list[tuple[str, str, str]] = field(default_factory=list)

    def count(self, label: str, was_created: bool) -> None:
        self.created[label] = self.created.get(label, 0) + int(was_created)


def _users(result: DemoResult) -> None:
    User = get_user_model()
    for username, full_name, group_name, superuser in DEMO_USERS:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={
                "first_name": full_name,
                "is_staff": True,
                "is_superuser": superuser,
                "email": f"{username}@o365-desk.example",
            },
        )
        if created:
            user.set_password(settings.DEMO_PASSWORD)
            user.save(update_fields=["password"])
        if group_name:
            if not Group.objects.filter(name=group_name).exists():
                roles_sync()
            user.groups.add(Group.objects.get(name=group_name))
        result.count("users", created)
        result.logins.append((username, settings.DEMO_PASSWORD, group_name or "superuser"))


@transaction.atomic
def demo_data_load(*, today: date | None = None, with_logins: bool = True) -> DemoResult:
    """Create the demo desk where it is missing; a second run finds everything and changes nothing."""
    today = today or timezone.localdate()
    result = DemoResult()
    if with_logins:
        _users(result)
    clerk = get_user_model().objects.filter(is_staff=True).order_by("-is_superuser", "id").first()
    if clerk is None:
        # Without demo logins the history of the bound demo orders still needs a requester.
        clerk, _ = get_user_model().objects.get_or_create(
            username="demo-loader", defaults={"is_active": False, "first_name": "Demo data loader"}
        )

    partners = {}
    for name, mpn_id, email in PARTNERS:
        partners[mpn_id], created = Partner.objects.get_or_create(
            mpn_id=mpn_id, defaults={"name": name, "email": email}
        )
        result.count("partners", created)

    customers, tenants = {}, {}
    for name, email, country, mpn_id, tenant_rows in CUSTOMERS:
        customers[name], created = Customer.objects.get_or_create(
            name=name, defaults={"email": email, "country": country, "partner": partners[mpn_id]}
        )
        result.count("customers", created)
        for prefix, display_name in tenant_rows:
            tenants[prefix], created = Tenant.objects.get_or_create(
                default_domain=f"{prefix}.onmicrosoft.com",
                defaults={
                    "tenant_id": demo_uuid(f"tenant:{prefix}"),
                    "display_name": display_name,
                    "customer": customers[name],
                },
            )
            result.count("tenants", created)

    products = {}
    for part_number, description in PRODUCTS:
        products[part_number], created = Product.objects.get_or_create(
            part_number=part_number, defaults={"description": description, "term_months": 12}
        )
        result.count("products", created)

    agreements = {}
    for program, number, authorization_number, customer_name in AGREEMENTS:
        customer = customers[customer_name]
        starts_on = today - timedelta(days=300)
        agreements[number], created = Agreement.objects.get_or_create(
            program=program,
            number=number,
            defaults={
                "authorization_number": authorization_number,
                "customer": customer,
                "partner": customer.partner,
                "starts_on": starts_on,
                "ends_on": Agreement.term_end_for(program, starts_on),
                "osm_email": customer.email,
            },
        )
        result.count("agreements", created)

    for index, (number, prefix, part_number, seats, days_left) in enumerate(SUBSCRIPTIONS):
        agreement, tenant, product = agreements[number], tenants[prefix], products[part_number]
        term_end = today + timedelta(days=days_left)
        subscription, created = Subscription.objects.get_or_create(
            agreement=agreement,
            product=product,
            tenant=tenant,
            defaults={
                "quantity": seats,
                "term_end": term_end,
                "provider_subscription_id": str(demo_uuid(f"subscription:{number}:{part_number}")),
            },
        )
        result.count("subscriptions", created)
        # The order that bought the subscription, bound a year ago, so its story is complete.
        ordered_on = term_end - timedelta(days=365)
        order, created = Order.objects.get_or_create(
            license_number=f"6100{index:04d}",
            defaults={"agreement": agreement, "ordered_on": ordered_on, "po_number": f"PO-{2000 + index}"},
        )
        result.count("orders", created)
        line, created = OrderLine.objects.get_or_create(
            order=order,
            line_number=1,
            defaults={
                "product": product,
                "quantity": seats,
                "kind": OrderLine.Kind.NEW,
                "starts_on": ordered_on,
                "ends_on": term_end,
                "seats_allocated": seats,
            },
        )
        result.count("order lines", created)
        # Seats hang on these rows now: what they were bought under is fixed (config.guards).
        requested_at = timezone.make_aware(datetime.combine(ordered_on, time(9)))
        if created:
            SeatAllocation.objects.create(
                order_line=line,
                tenant=tenant,
                quantity=seats,
                status=SeatAllocation.Status.BOUND,
                subscription=subscription,
                requested_by=clerk,
                attempts=1,
                bound_at=requested_at + timedelta(minutes=5),
            )
        rows = (
            (OrderLine, line.pk),
            (Order, order.pk),
            (Agreement, agreement.pk),
            (Tenant, tenant.pk),
            (Product, product.pk),
        )
        for model, pk in rows:
            model.objects.filter(pk=pk, seats_requested_at=None).update(seats_requested_at=requested_at)

    for license_number, number, days_ago, suggested, lines in OPEN_ORDERS:
        agreement = agreements[number]
        ordered_on = today - timedelta(days=days_ago)
        order, created = Order.objects.get_or_create(
            license_number=license_number,
            defaults={
                "agreement": agreement,
                "ordered_on": ordered_on,
                "po_number": f"PO-{license_number[-4:]}",
                "suggested_tenant_domain": suggested,
            },
        )
        result.count("orders", created)
        for line_number, (kind, part_number, seats) in enumerate(lines, start=1):
            _, created = OrderLine.objects.get_or_create(
                order=order,
                line_number=line_number,
                defaults={
                    "product": products[part_number],
                    "quantity": seats,
                    "kind": kind,
                    "starts_on": ordered_on,
                    "ends_on": ordered_on + timedelta(days=365),
                },
            )
            result.count("order lines", created)
    _sandbox(result)
    return result


def _sandbox(result: DemoResult) -> None:
    """Make the provisioning sandbox know the demo tenants and hold the demo subscriptions."""
    for tenant in Tenant.objects.filter(
        default_domain__in=[f"{row[0]}.onmicrosoft.com" for c in CUSTOMERS for row in c[4]]
    ):
        sandbox_tenant_add(tenant_id=tenant.tenant_id, domain=tenant.default_domain, company_name=tenant.display_name)
    for _, prefix, company_name in SANDBOX_ONLY_TENANTS:
        sandbox_tenant_add(
            tenant_id=demo_uuid(f"tenant:{prefix}"), domain=f"{prefix}.onmicrosoft.com", company_name=company_name
        )
    demo_ids = [str(demo_uuid(f"subscription:{row[0]}:{row[2]}")) for row in SUBSCRIPTIONS]
    for subscription in Subscription.objects.filter(provider_subscription_id__in=demo_ids).select_related(
        "tenant", "product"
    ):
        _, created = SandboxSubscription.objects.get_or_create(
            id=subscription.provider_subscription_id,
            defaults={
                "tenant_id": subscription.tenant.tenant_id,
                "offer_id": subscription.product.part_number,
                "quantity": subscription.quantity,
                "status": "active",
                "commitment_end": subscription.term_end,
            },
        )
        result.count("sandbox subscriptions", created)


def sandbox_only_tenants() -> list[tuple[str, str, uuid.UUID]]:
    """Return (customer, domain, tenant ID) of tenants the sandbox knows but the desk has to record."""
    return [
        (customer, f"{prefix}.onmicrosoft.com", demo_uuid(f"tenant:{prefix}"))
        for customer, prefix, _ in SANDBOX_ONLY_TENANTS
    ]
