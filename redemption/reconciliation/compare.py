"""What differs between the three records of a seat: pure comparisons, no database, no provider."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from licensing.models import OrderLine
from redemption.gateway.base import ProviderSubscription
from redemption.models import Drift, SeatAllocation, Subscription

Kind = Drift.Kind
# Statuses the provider shows for a subscription in use, and ours that mean "in use".
LIVE_HERE = frozenset({Subscription.Status.ACTIVE, Subscription.Status.EXPIRED})


@dataclass(frozen=True)
class Finding:
    """One drift as a run finds it; `key` says what it is about, so a second run finds the same one."""

    kind: str
    key: str
    offer_id: str = ""
    tenant_id: int | None = None
    subscription_id: int | None = None
    order_line_id: int | None = None
    provider_subscription_id: str | None = None
    ours: Any = None
    provider: Any = None


def tenant_unknown(tenant_pk: int) -> Finding:
    return Finding(Kind.TENANT_UNKNOWN, f"tenant_unknown:{tenant_pk}", tenant_id=tenant_pk)


def subscription_finding(kind: str, tenant_pk: int, subscription: Subscription, ours, provider) -> Finding:
    """A difference in one of our subscriptions the provider lists, keyed by tenant and provider ID."""
    provider_id = subscription.provider_subscription_id
    return Finding(
        kind,
        f"{kind}:{tenant_pk}:{provider_id}",
        offer_id=subscription.product.part_number,
        tenant_id=tenant_pk,
        subscription_id=subscription.pk,
        provider_subscription_id=provider_id,
        ours=ours,
        provider=provider,
    )


def provider_findings(
    tenant_pk: int,
    ours: Iterable[Subscription],
    theirs: Iterable[ProviderSubscription],
    ended: Iterable[Subscription] = (),
) -> list[Finding]:
    """Compare the subscriptions we hold on a tenant (not deprovisioned) with what the provider lists.

    `ended` are the tenant's subscriptions our lifecycle deprovisioned: still listed, they are ours, not
    made elsewhere; still active there, a person looks (a status drift).
    """
    listed = {item.id: item for item in theirs}
    findings = []
    held = set()
    for subscription in ended:
        item = listed.get(subscription.provider_subscription_id)
        if item is None:
            continue
        held.add(item.id)
        if item.status == "active":
            status = subscription_finding(Kind.STATUS, tenant_pk, subscription, subscription.status, item.status)
            findings.append(status)
    for subscription in ours:
        provider_id = subscription.provider_subscription_id
        if not provider_id:
            continue
        held.add(provider_id)

        def finding(kind: str, mine, other, *, _subscription=subscription) -> Finding:
            return subscription_finding(kind, tenant_pk, _subscription, mine, other)

        item = listed.get(provider_id)
        if item is None:
            findings.append(finding(Kind.MISSING_AT_PROVIDER, subscription.quantity, None))
            continue
        if item.quantity != subscription.quantity:
            findings.append(finding(Kind.QUANTITY, subscription.quantity, item.quantity))
        if item.commitment_end is not None and item.commitment_end != subscription.term_end:
            findings.append(finding(Kind.TERM_END, subscription.term_end.isoformat(), item.commitment_end.isoformat()))
        suspended_there = item.status == "suspended"
        if (subscription.status in LIVE_HERE and suspended_there) or (
            subscription.status == Subscription.Status.SUSPENDED and item.status == "active"
        ):
            findings.append(finding(Kind.STATUS, subscription.status, item.status))
    for provider_id, item in listed.items():
        if provider_id not in held:
            findings.append(
                Finding(
                    Kind.UNKNOWN_AT_PROVIDER,
                    f"{Kind.UNKNOWN_AT_PROVIDER}:{tenant_pk}:{provider_id}",
                    offer_id=item.offer_id,
                    tenant_id=tenant_pk,
                    provider_subscription_id=provider_id,
                    ours=None,
                    provider=item.quantity,
                )
            )
    return findings


def seats_accounted_for(allocations: Iterable[SeatAllocation]) -> int:
    """Return the seats a subscription's bindings account for: added seats add, a renewal sets the quantity.

    `allocations` are the subscription's allocations still at the provider, in the order they were bound.
    """
    seats = 0
    for allocation in allocations:
        if allocation.order_line.kind == OrderLine.Kind.RENEWAL:
            seats = allocation.quantity
        else:
            seats += allocation.quantity
    return seats


def seats_finding(tenant_pk: int, subscription: Subscription, accounted: int) -> Finding | None:
    if subscription.quantity == accounted:
        return None
    return Finding(
        Kind.SEATS_VS_ORDERS,
        f"{Kind.SEATS_VS_ORDERS}:{subscription.pk}",
        offer_id=subscription.product.part_number,
        tenant_id=tenant_pk,
        subscription_id=subscription.pk,
        provider_subscription_id=subscription.provider_subscription_id,
        ours=subscription.quantity,
        provider=accounted,
    )


def unbound_finding(line: OrderLine, bound: int, tenant_pk: int | None) -> Finding | None:
    if bound >= line.quantity:
        return None
    return Finding(
        Kind.UNBOUND_SEATS,
        f"{Kind.UNBOUND_SEATS}:{line.pk}",
        offer_id=line.product.part_number,
        tenant_id=tenant_pk,
        order_line_id=line.pk,
        ours=line.quantity - bound,
        provider=None,
    )
