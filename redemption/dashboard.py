"""What the landing page shows: work waiting for a person, as counts linking to filtered lists."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Model
from django.urls import reverse
from django.utils import timezone

from licensing.models import OrderLine
from redemption.models import Drift, ProviderCorrection, SeatAllocation, Subscription
from redemption.throttle import throttling_now


@dataclass(frozen=True)
class AttentionItem:
    label: str
    count: int
    url: str
    tone: str  # "info", "warn" or "alert": how the landing page colours it


def attention_items(*, visible: Callable[[type[Model]], bool] = lambda model: True) -> list[AttentionItem]:
    """Return the counts behind the landing page, each with the filtered list it opens.

    Only counts of the models `visible` allows (a person's view permissions); throttling is everyone's news.
    """
    today = timezone.localdate()
    soon = today + timedelta(days=settings.EXPIRING_SOON_DAYS)
    allocations = reverse("admin:redemption_seatallocation_changelist")
    items = _throttling_items(allocations)
    if visible(OrderLine):
        items.append(
            AttentionItem(
                "Order lines with seats not yet bound",
                OrderLine.objects.filter(seats_allocated__lt=F("quantity")).count(),
                reverse("admin:licensing_orderline_changelist") + "?unbound=yes",
                "info",
            )
        )
    if visible(SeatAllocation):
        items += [
            AttentionItem(
                "Bindings waiting for a supervisor",
                SeatAllocation.objects.filter(status=SeatAllocation.Status.AWAITING_APPROVAL).count(),
                f"{allocations}?status__exact={SeatAllocation.Status.AWAITING_APPROVAL}",
                "warn",
            ),
            AttentionItem(
                "Failed bindings",
                SeatAllocation.objects.filter(status__in=SeatAllocation.FAILURES).count(),
                f"{allocations}?status__in={','.join(sorted(SeatAllocation.FAILURES))}",
                "alert",
            ),
            # Whoever asked learns that a supervisor turned it down, and why (the list shows the reason).
            AttentionItem(
                "Bindings asked for in the past 7 days that a supervisor rejected",
                SeatAllocation.objects.filter(
                    status=SeatAllocation.Status.REJECTED,
                    # As the list's "Past 7 days" counts: from when they were asked for.
                    created_at__gte=timezone.now() - timedelta(days=7),
                ).count(),
                f"{allocations}?status__exact={SeatAllocation.Status.REJECTED}&age=7d",
                "info",
            ),
        ]
    if visible(ProviderCorrection):
        items.append(
            AttentionItem(
                "Corrections waiting for a supervisor before they go to the provider",
                ProviderCorrection.objects.filter(status=ProviderCorrection.Status.AWAITING_APPROVAL).count(),
                reverse("admin:redemption_providercorrection_changelist")
                + f"?status__exact={ProviderCorrection.Status.AWAITING_APPROVAL}",
                "warn",
            )
        )
    if visible(Drift):
        items.append(
            AttentionItem(
                "Drift: the provider, our records and the orders disagree",
                Drift.objects.filter(status=Drift.Status.OPEN).count(),
                reverse("admin:redemption_drift_changelist") + f"?status__exact={Drift.Status.OPEN}",
                "alert",
            )
        )
    if visible(Subscription):
        items.append(
            AttentionItem(
                f"Subscriptions ending in the next {settings.EXPIRING_SOON_DAYS} days",
                Subscription.objects.filter(
                    status=Subscription.Status.ACTIVE, term_end__gte=today, term_end__lte=soon
                ).count(),
                _ending_soon_url(),
                "warn",
            )
        )
    return items


def _throttling_items(allocations: str) -> list[AttentionItem]:
    """Say how much binding work waits behind the provider's limit, only while calls are throttled."""
    throttling = throttling_now()
    if throttling is None:
        return []
    minutes = f"{throttling.minutes} minute{'s' if throttling.minutes != 1 else ''}"
    return [
        AttentionItem(
            f"provider throttling: about {minutes} of work queued",
            throttling.waiting,
            f"{allocations}?status__exact={SeatAllocation.Status.QUEUED}",
            "warn",
        )
    ]


def _ending_soon_url() -> str:
    """Open the renewals desk on its own window when one matches the setting, else the subscription list."""
    days = settings.EXPIRING_SOON_DAYS
    if days in (30, 60, 90):
        return reverse("admin:redemption_renewalsubscription_changelist") + f"?window=within{days}"
    return reverse("admin:redemption_subscription_changelist") + f"?ending=within{days}"
