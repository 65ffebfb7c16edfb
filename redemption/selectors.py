"""Read-only views across the apps: find anything by a number read out on the phone, tell an order's story."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db.models import Model, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from licensing.models import Agreement, Order, OrderLine
from redemption.models import Drift, SeatAllocation, Subscription
from tenants.models import Customer, Partner, Tenant
from tenants.validators import ONMICROSOFT_SUFFIX, normalize_domain

LOOKUP_LIMIT = 25


@dataclass(frozen=True)
class LookupHit:
    kind: str
    label: str
    detail: str
    url: str
    story_url: str = ""


def _admin_url(obj: Model) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def _order_hits(orders: QuerySet[Order], why: str) -> list[LookupHit]:
    return [
        LookupHit(
            "Order",
            order.license_number,
            " · ".join(
                part
                for part in (
                    why,
                    str(order.agreement),
                    str(order.agreement.customer),
                    f"ordered {order.ordered_on:%Y-%m-%d}",
                )
                # "under Open License 89000001" already names the agreement.
                if part and not (part == str(order.agreement) and why.endswith(part))
            ),
            _admin_url(order),
            reverse("admin:order_story", args=[order.pk]),
        )
        for order in orders.select_related("agreement__customer")[:LOOKUP_LIMIT]
    ]


def sent_back() -> QuerySet[SeatAllocation]:
    """Bindings whose seats went back to their line (rejected, reversed), the latest first: narrow by line."""
    return SeatAllocation.objects.filter(status__in=SeatAllocation.RELEASED).order_by("-updated_at", "-id")


def may_view(user) -> Callable[[type[Model]], bool]:
    """Return whether `user` may see records of a model (its view permission)."""
    return lambda model: user.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}")


def lookup_anything(query: str, *, visible: Callable[[type[Model]], bool] = lambda model: True) -> list[LookupHit]:
    """Return what a number or name a partner reads out can be: orders, agreements, partners, tenants ...

    Only records of the models `visible` allows are looked for (a person's view permissions: may_view).
    """
    # A NUL is in no number, and PostgreSQL refuses it in a query.
    text = query.replace("\x00", "").strip()
    if not text:
        return []
    hits: list[LookupHit] = []
    if visible(Order):
        hits += _order_hits(Order.objects.filter(license_number=text), "license number")
        hits += _order_hits(Order.objects.filter(po_number=text), "PO number")
    if visible(Agreement):
        # Agreement numbers are held in capitals and read out in any case ("v1000001" is V1000001).
        by_number = Agreement.objects.filter(number__iexact=text).select_related("customer", "partner")
        for agreement in by_number[:LOOKUP_LIMIT]:
            hits.append(
                LookupHit(
                    "Agreement", str(agreement), f"{agreement.customer} · {agreement.partner}", _admin_url(agreement)
                )
            )
            if visible(Order):
                # Each order's whole story is one click away, most recent first.
                hits += _order_hits(agreement.orders.order_by("-ordered_on", "-pk"), f"under {agreement}")
        by_authorization = Agreement.objects.filter(authorization_number__iexact=text).select_related("customer")
        for agreement in by_authorization[:LOOKUP_LIMIT]:
            hits.append(
                LookupHit(
                    "Agreement", str(agreement), f"authorization number · {agreement.customer}", _admin_url(agreement)
                )
            )
            if visible(Order):
                # Read out as the authorization number, the agreement's orders are as near as by its number.
                hits += _order_hits(agreement.orders.order_by("-ordered_on", "-pk"), f"under {agreement}")
    if visible(Partner):
        partners = Partner.objects.filter(Q(mpn_id=text) | Q(name__icontains=text)).order_by("name")
        for partner in partners[:LOOKUP_LIMIT]:
            hits.append(LookupHit("Partner", partner.name, f"MPN ID {partner.mpn_id}", _admin_url(partner)))
    domain = normalize_domain(text)
    if "." not in domain:
        domain += ONMICROSOFT_SUFFIX
    tenants = Tenant.objects.filter(default_domain=domain)
    try:
        key = uuid.UUID(text)
    except ValueError:
        key = None
    if key is not None:
        tenants = tenants | Tenant.objects.filter(tenant_id=key)
    if key is not None and visible(SeatAllocation):
        for allocation in SeatAllocation.objects.filter(idempotency_key=key).select_related("order_line__order"):
            hits.append(
                LookupHit(
                    "Binding",
                    str(allocation),
                    allocation.get_status_display(),
                    _admin_url(allocation),
                    reverse("admin:order_story", args=[allocation.order_line.order_id]) if visible(Order) else "",
                )
            )
    if visible(Tenant):
        for tenant in tenants.select_related("customer")[:LOOKUP_LIMIT]:
            hits.append(
                LookupHit(
                    "Tenant", tenant.default_domain, f"{tenant.customer} · {tenant.tenant_id}", _admin_url(tenant)
                )
            )
    if visible(Order):
        hits += _order_hits(Order.objects.filter(suggested_tenant_domain=domain), "suggested tenant")
    if visible(Order) and visible(SeatAllocation):
        # The orders whose seats went to the tenant: where a partner's "which order is this tenant's" leads.
        bound_here = Order.objects.filter(lines__allocations__tenant__in=tenants).exclude(
            suggested_tenant_domain=domain
        )
        hits += _order_hits(bound_here.distinct().order_by("-ordered_on", "-pk"), "seats on this tenant")
    if visible(Subscription):
        for subscription in Subscription.objects.filter(provider_subscription_id=text).select_related(
            "tenant", "product"
        ):
            hits.append(
                LookupHit(
                    "Subscription", str(subscription), subscription.get_status_display(), _admin_url(subscription)
                )
            )
    if visible(Customer):
        for customer in Customer.objects.filter(name__icontains=text).select_related("partner")[:LOOKUP_LIMIT]:
            hits.append(LookupHit("Customer", customer.name, f"partner {customer.partner}", _admin_url(customer)))
    return hits


@dataclass(frozen=True)
class StoryEvent:
    when: datetime
    who: str
    what: str
    subject: str
    changes: list[str] = field(default_factory=list)
    why: str = ""


# Bookkeeping of the binding machinery: kept in the history, not worth a person's reading.
INTERNAL_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "idempotency_key",
        "plan_round",
        "planned_on",
        "next_attempt_at",
        "first_sent_at",
        "last_error_final",
        "approval_reasons",
        "seats_requested_at",
        "previous_quantity",
        "previous_term_end",
        "previous_status",
        "target_status",
        "plan_action",
    }
)


def readable(field, value) -> str:
    """Return a stored value as a person reads it: labels for choices, dates to the minute, local time."""
    if value in (None, ""):
        return "—"
    if field.choices:
        return str(dict(field.flatchoices).get(value, value))
    if isinstance(value, datetime):
        return f"{timezone.localtime(value):%Y-%m-%d %H:%M}"
    if isinstance(value, date):
        return f"{value:%Y-%m-%d}"
    return str(value)


def _named(field, pk) -> str:
    """Name the record a history row points at (it keeps only the id), where it still exists."""
    if pk is None:
        return "—"
    return str(field.related_model._default_manager.filter(pk=pk).first() or pk)


def _field_changes(old, new) -> list[str]:
    """Describe what changed between two historical records in words, read-only fields included."""
    changes = []
    for tracked in new.tracked_fields:
        if tracked.name in INTERNAL_FIELDS:
            continue
        before, after = getattr(old, tracked.attname), getattr(new, tracked.attname)
        if before != after:
            label = str(tracked.verbose_name)
            if tracked.is_relation:
                changes.append(f"{label}: {_named(tracked, before)} → {_named(tracked, after)}")
            else:
                changes.append(f"{label}: {readable(tracked, before)} → {readable(tracked, after)}")
    return changes


def _events_for(records: list, subject) -> list[StoryEvent]:
    """Turn one object's historical records (oldest first) into events with their field changes."""
    events = []
    previous = None
    for record in records:
        changes = []
        if previous is not None:
            changes = _field_changes(previous, record)
        verb = {"+": "created", "~": "changed", "-": "deleted"}[record.history_type]
        if record.history_type == "~" and not changes and not record.history_change_reason:
            previous = record
            continue
        events.append(
            StoryEvent(
                when=record.history_date,
                who=str(record.history_user or "system"),
                what=verb,
                subject=subject(record),
                changes=changes,
                why=record.history_change_reason or "",
            )
        )
        previous = record
    return events


def _history_by_object(model, ids) -> dict[int, list]:
    grouped: dict[int, list] = {}
    for record in (
        model.history.filter(id__in=list(ids)).select_related("history_user").order_by("history_date", "history_id")
    ):
        grouped.setdefault(record.id, []).append(record)
    return grouped


@dataclass
class OrderStory:
    order: Order
    lines: list[OrderLine]
    subscriptions: list[Subscription]
    events: list[StoryEvent]
    drifts: list[Drift] = field(default_factory=list)
    # What the viewer may see, so that a section withheld is not mistaken for one with nothing in it.
    sees_bindings: bool = True
    sees_subscriptions: bool = True
    sees_customer: bool = True


def order_story(order: Order, *, user=None) -> OrderStory:
    """Gather an order, its lines, where their seats went and who did what, oldest event first.

    For `user`, only what they may view: bindings, subscriptions and drift each need their own view
    permission, as their pages do (None: everything).
    """
    sees = lambda model: user is None or user.has_perm(f"redemption.view_{model._meta.model_name}")  # noqa: E731
    order = Order.objects.select_related("agreement__customer", "agreement__partner").get(pk=order.pk)
    lines = list(order.lines.select_related("product").order_by("line_number"))
    by_line: dict[int, list[SeatAllocation]] = {line.pk: [] for line in lines}
    all_allocations = list(
        SeatAllocation.objects.filter(order_line__order=order)
        .select_related("tenant", "requested_by", "approved_by", "reversal_requested_by", "subscription")
        .order_by("created_at")
        if sees(SeatAllocation)
        else []
    )
    for allocation in all_allocations:
        by_line[allocation.order_line_id].append(allocation)
    for line in lines:
        line.story_allocations = by_line[line.pk]
    subscriptions = list(
        Subscription.objects.filter(agreement=order.agreement).select_related("tenant", "product").order_by("id")
        if sees(Subscription)
        else []
    )
    events: list[StoryEvent] = []
    for records in _history_by_object(Order, [order.pk]).values():
        events += _events_for(records, lambda r: f"order {r.license_number}")
    for records in _history_by_object(OrderLine, [line.pk for line in lines]).values():
        events += _events_for(records, lambda r: f"line {r.line_number}")
    for records in _history_by_object(SeatAllocation, [a.pk for a in all_allocations]).values():
        events += _events_for(records, lambda r: f"allocation #{r.id} ({r.quantity} seats)")
    bound_ids = {a.subscription_id for a in all_allocations if a.subscription_id} if sees(Subscription) else set()
    for records in _history_by_object(Subscription, bound_ids).values():
        events += _events_for(records, lambda r: f"subscription #{r.id}")
    events.sort(key=lambda event: event.when)
    drifts = list(
        Drift.objects.filter(
            Q(order_line__order=order) | Q(subscription__in=[s.pk for s in subscriptions]), status=Drift.Status.OPEN
        ).select_related("tenant", "order_line")
        if sees(Drift)
        else []
    )
    return OrderStory(
        order,
        lines,
        subscriptions,
        events,
        drifts,
        sees_bindings=sees(SeatAllocation),
        sees_subscriptions=sees(Subscription),
        sees_customer=user is None or user.has_perm("tenants.view_customer"),
    )


__all__ = ["LookupHit", "OrderStory", "StoryEvent", "lookup_anything", "may_view", "order_story", "sent_back"]
