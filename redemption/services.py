"""Requests to bind seats, approvals, rejections, retries, reversals, tenant identity and previews.

With redemption.binding (what a worker does with a queued allocation), the only way allocations change.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from config.queueing import enqueue_on_commit
from licensing.models import Agreement, OrderLine, Product
from redemption.gateway import (
    ProviderError,
    ProviderNotFound,
    gateway_get,
    request_id_for,
)
from redemption.gateway.base import TenantIdentity
from redemption.models import PlanAction, SeatAllocation, Subscription
from tenants.models import Customer, Tenant
from tenants.validators import normalize_domain

logger = logging.getLogger(__name__)
Status = SeatAllocation.Status


def save_with_reason(allocation: SeatAllocation, user, reason: str, fields: list[str]) -> None:
    """Save an allocation with its history row naming who and why (rule 12)."""
    allocation._history_user = user
    allocation._change_reason = reason[:100]
    allocation.save(update_fields=[*fields, "updated_at"])


def _save_subscription(subscription: Subscription, user, reason: str, fields: list[str] | None = None) -> None:
    subscription._history_user = user
    subscription._change_reason = reason[:100]
    if fields is None:
        subscription.save()
    else:
        subscription.save(update_fields=[*fields, "updated_at"])


def _is_supervisor(user) -> bool:
    return bool(user and user.is_active and user.has_perm("redemption.supervisor"))


# --- the subscription a binding lands on, and what it will look like --------------------------------


def subscription_for(*, agreement: Agreement, product: Product, tenant: Tenant) -> Subscription | None:
    """Return the live subscription of this agreement's product on this tenant, if any."""
    return (
        Subscription.objects.filter(agreement=agreement, product=product, tenant=tenant)
        .exclude(status=Subscription.Status.DEPROVISIONED)
        .first()
    )


def agreement_tenant(*, agreement: Agreement, product: Product | None = None) -> Tenant | None:
    """Return the tenant the agreement's seats live on (rule 3): the product's, else the latest one."""
    live = Subscription.objects.filter(agreement=agreement).exclude(status=Subscription.Status.DEPROVISIONED)
    if product is not None:
        same = live.filter(product=product).select_related("tenant").first()
        if same:
            return same.tenant
    latest = live.select_related("tenant").order_by("-created_at", "-id").first()
    if latest:
        return latest.tenant
    pending = (
        SeatAllocation.objects.filter(
            order_line__order__agreement=agreement,
            status__in=[Status.AWAITING_APPROVAL, Status.QUEUED, Status.BINDING, Status.BOUND],
        )
        .select_related("tenant")
        .order_by("created_at", "id")
        .first()
    )
    return pending.tenant if pending else None


def term_days_from(day: date, months: int) -> int:
    """Return the length in days of a term of `months` calendar months starting on `day`."""
    return ((day + relativedelta(months=months)) - day).days


def blended_end(*, today: date, end: date, old_qty: int, added_qty: int, term_months: int) -> date:
    """Return the end date that keeps seat-days when adding seats mid-term (rule 7)."""
    days_left = max(0, (end - today).days)
    term_days = term_days_from(today, term_months)
    days = Fraction(old_qty * days_left + added_qty * term_days, old_qty + added_qty)
    # Round half up to the nearest whole day.
    return today + timedelta(days=int(days + Fraction(1, 2)))


@dataclass(frozen=True)
class Preview:
    """What a proposed allocation will do to the subscription, as of `today`."""

    action: str  # PlanAction
    quantity: int
    term_end: date
    status: str
    previous_quantity: int | None
    previous_term_end: date | None
    previous_status: str
    subscription: Subscription | None

    @property
    def description(self) -> str:
        if self.subscription is None:
            return f"New subscription of {self.quantity} seat(s) ending {self.term_end:%Y-%m-%d}"
        return (
            f"{self.previous_quantity} -> {self.quantity} seat(s), "
            f"end {self.previous_term_end:%Y-%m-%d} -> {self.term_end:%Y-%m-%d}"
        )


def allocation_preview(
    *,
    order_line: OrderLine,
    tenant: Tenant,
    quantity: int,
    today: date | None = None,
    base: Subscription | None = None,
    lookup: bool = True,
) -> Preview:
    """Return the resulting quantity and end date of binding `quantity` seats of the line to the tenant.

    `base` is the subscription to start from; without it the live one is looked up, unless `lookup`
    is false (the caller already knows there is none).
    """
    today = today or timezone.localdate()
    product = order_line.product
    subscription = base
    if subscription is None and lookup:
        subscription = subscription_for(agreement=order_line.order.agreement, product=product, tenant=tenant)
    if subscription is None:
        return Preview(PlanAction.ORDER, quantity, order_line.ends_on, "active", None, None, "", None)
    old_qty, old_end, old_status = subscription.quantity, subscription.term_end, subscription.status
    if order_line.kind == OrderLine.Kind.RENEWAL:
        starts = old_end if old_end >= today else today
        return Preview(
            PlanAction.PATCH,
            quantity,
            starts + relativedelta(months=product.term_months),
            "active",
            old_qty,
            old_end,
            old_status,
            subscription,
        )
    new_end = blended_end(
        today=today, end=old_end, old_qty=old_qty, added_qty=quantity, term_months=product.term_months
    )
    return Preview(
        PlanAction.PATCH, old_qty + quantity, new_end, old_status, old_qty, old_end, old_status, subscription
    )


# --- tenants ---------------------------------------------------------------------------------------


def tenant_identity_resolve(*, tenant: Tenant) -> TenantIdentity:
    """Ask the provider who the tenant is; refuse with a message a person can act on."""
    try:
        return gateway_get().customer_identity(tenant_id=tenant.tenant_id)
    except ProviderNotFound as exc:
        raise ValidationError(
            f"The provider knows no tenant with ID {tenant.tenant_id} ({tenant.default_domain}): "
            "check the tenant ID with the customer.",
            code="tenant_unknown",
        ) from exc
    except ProviderError as exc:
        raise ValidationError(exc.message, code="provider_unavailable") from exc


def _identity_mismatch(tenant: Tenant, identity: TenantIdentity) -> str:
    problems = []
    if identity.tenant_id != tenant.tenant_id:
        problems.append(f"tenant ID {identity.tenant_id} instead of {tenant.tenant_id}")
    if normalize_domain(identity.domain) != tenant.default_domain:
        problems.append(f"default domain {identity.domain} instead of {tenant.default_domain}")
    if not problems:
        return ""
    return (
        f"The provider reports {' and '.join(problems)}: this is not the tenant we hold. "
        "Nothing was bound; check the tenant's record with the customer."
    )


def tenant_verify(*, tenant: Tenant, acting_user) -> Tenant:
    """Resolve the tenant's identity through the provider and record it when it matches (rule 4)."""
    identity = tenant_identity_resolve(tenant=tenant)
    mismatch = _identity_mismatch(tenant, identity)
    if mismatch:
        raise ValidationError(mismatch, code="identity_mismatch")
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        tenant.verified_at = timezone.now()
        tenant.verified_by = acting_user
        tenant.verified_tenant_id = identity.tenant_id
        tenant.verified_domain = identity.domain
        tenant.verified_display_name = identity.company_name
        tenant._history_user = acting_user
        tenant._change_reason = "Identity verified with the provider"
        tenant.save(
            update_fields=[
                "verified_at",
                "verified_by",
                "verified_tenant_id",
                "verified_domain",
                "verified_display_name",
                "updated_at",
            ]
        )
    return tenant


def tenant_record(*, customer: Customer, tenant_id, default_domain: str, display_name: str = "", acting_user) -> Tenant:
    """Record a new tenant of a customer; its identity is checked with the provider before any binding."""
    tenant = Tenant(
        tenant_id=tenant_id,
        default_domain=normalize_domain(default_domain),
        display_name=display_name.strip(),
        customer=customer,
    )
    tenant.full_clean()
    with transaction.atomic():
        tenant._history_user = acting_user
        tenant._change_reason = f"Recorded for {customer.name}"
        tenant.save()
    return tenant


# --- requests, approvals and their refusals --------------------------------------------------------


def allocation_request(
    *,
    order_line: OrderLine,
    tenant: Tenant,
    quantity: int,
    confirm_domain: str | None = None,
    acting_user,
    reason: str = "",
) -> SeatAllocation:
    """Ask for `quantity` seats of the line to be bound to the tenant; queue it or hold it for approval."""
    agreement = order_line.order.agreement
    reason = (reason or "").strip()
    if tenant.customer_id != agreement.customer_id:
        raise ValidationError(
            f"{tenant.default_domain} belongs to {tenant.customer}, but order {order_line.order} is for "
            f"{agreement.customer}: seats only go to a tenant of the agreement's own customer.",
            code="wrong_customer",
        )
    if quantity is None or int(quantity) <= 0:
        raise ValidationError("Bind at least one seat.", code="quantity")
    quantity = int(quantity)
    if quantity > order_line.seats_left:
        raise ValidationError(_seats_left_message(order_line, quantity), code="seats_exhausted")
    existing = agreement_tenant(agreement=agreement, product=order_line.product)
    override = existing is not None and existing.pk != tenant.pk
    if override and not reason:
        raise ValidationError(
            f"Agreement {agreement.number} already has seats on {existing.default_domain}. Sending these to "
            f"{tenant.default_domain} needs a written reason and a supervisor's approval.",
            code="affinity_reason_required",
        )
    person_chooses = order_line.kind == OrderLine.Kind.NEW or existing is None or override
    if person_chooses or confirm_domain:
        if not normalize_domain(confirm_domain or ""):
            raise ValidationError(
                f"Type the tenant's default domain ({tenant.default_domain}) to confirm it is the right tenant.",
                code="confirm_domain_required",
            )
        if normalize_domain(confirm_domain) != tenant.default_domain:
            raise ValidationError(
                f"The domain typed, {normalize_domain(confirm_domain)}, is not this tenant's default domain "
                f"{tenant.default_domain}: check which tenant the customer means.",
                code="confirm_domain_mismatch",
            )
    first_binding = not _tenant_has_bindings(tenant)
    identity = None
    if person_chooses or first_binding:
        # Identity before seats (rule 4); asked before any lock, nothing is written on refusal.
        identity = tenant_identity_resolve(tenant=tenant)
        mismatch = _identity_mismatch(tenant, identity)
        if mismatch:
            raise ValidationError(mismatch, code="identity_mismatch")

    approval_reasons = []
    if quantity > settings.BINDING_APPROVAL_THRESHOLD:
        approval_reasons.append(f"More than {settings.BINDING_APPROVAL_THRESHOLD} seats")
    if first_binding:
        approval_reasons.append(f"First binding to {tenant.default_domain}")
    if override:
        approval_reasons.append(f"Affinity override: the agreement's seats are on {existing.default_domain}")

    with transaction.atomic():
        # Rule 1: the check and the hold happen under the line's row lock.
        line = OrderLine.objects.select_for_update().get(pk=order_line.pk)
        if quantity > line.seats_left:
            raise ValidationError(_seats_left_message(line, quantity), code="seats_exhausted")
        line.seats_allocated += quantity
        line._history_user = acting_user
        line._change_reason = f"{quantity} seat(s) requested for {tenant.default_domain}"
        line.save(update_fields=["seats_allocated", "updated_at"])
        if identity is not None:
            Tenant.objects.filter(pk=tenant.pk).update(
                verified_at=timezone.now(),
                verified_by=acting_user,
                verified_tenant_id=identity.tenant_id,
                verified_domain=identity.domain,
                verified_display_name=identity.company_name,
            )
        allocation = SeatAllocation(
            order_line=line,
            tenant=tenant,
            quantity=quantity,
            requested_by=acting_user,
            reason=reason,
            approval_reasons=approval_reasons,
            status=Status.AWAITING_APPROVAL if approval_reasons else Status.QUEUED,
        )
        allocation._history_user = acting_user
        allocation._change_reason = (
            "Requested; waiting for a supervisor" if approval_reasons else "Requested and queued for binding"
        )
        allocation.save()
        if allocation.status == Status.QUEUED:
            allocation_enqueue(allocation.pk)
    order_line.seats_allocated = line.seats_allocated
    return allocation


def _seats_left_message(line: OrderLine, quantity: int) -> str:
    return (
        f"{line} has {line.seats_left} of {line.quantity} seat(s) left to bind; {quantity} asked. "
        "Someone may have just bound them: reload to see the line's allocations."
    )


def _tenant_has_bindings(tenant: Tenant) -> bool:
    return (
        Subscription.objects.filter(tenant=tenant).exists()
        or SeatAllocation.objects.filter(
            tenant=tenant, status__in=[Status.QUEUED, Status.BINDING, Status.BOUND]
        ).exists()
    )


def allocation_enqueue(allocation_id: int, countdown: float | None = None) -> None:
    from redemption.tasks import allocation_bind_task

    enqueue_on_commit(allocation_bind_task, allocation_id, countdown=countdown)


def _locked(allocation: SeatAllocation) -> SeatAllocation:
    return SeatAllocation.objects.select_for_update().select_related("order_line").get(pk=allocation.pk)


def allocation_approve(*, allocation: SeatAllocation, acting_user) -> SeatAllocation:
    """Approve a binding waiting for a supervisor (rule 5) and queue it."""
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can approve a binding.", code="not_supervisor")
    with transaction.atomic():
        allocation = _locked(allocation)
        if allocation.requested_by_id == acting_user.pk:
            raise ValidationError("You requested this binding: another supervisor must approve it.", code="own_request")
        if allocation.status != Status.AWAITING_APPROVAL:
            raise ValidationError(
                f"This binding is {allocation.get_status_display().lower()}, not waiting for approval.",
                code="not_awaiting_approval",
            )
        allocation.transition_to(Status.QUEUED)
        allocation.approved_by = acting_user
        save_with_reason(allocation, acting_user, "Approved and queued for binding", ["status", "approved_by"])
        allocation_enqueue(allocation.pk)
    return allocation


def _release_seats(allocation: SeatAllocation, acting_user, why: str) -> None:
    line = OrderLine.objects.select_for_update().get(pk=allocation.order_line_id)
    line.seats_allocated -= allocation.quantity
    line._history_user = acting_user
    line._change_reason = why[:100]
    line.save(update_fields=["seats_allocated", "updated_at"])


def allocation_reject(*, allocation: SeatAllocation, acting_user, reason: str) -> SeatAllocation:
    """Reject a binding waiting for approval, or give up a failed one; its seats go back to the line."""
    reason = (reason or "").strip()
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can reject a binding.", code="not_supervisor")
    if not reason:
        raise ValidationError("Say why the binding is rejected.", code="reason_required")
    with transaction.atomic():
        allocation = _locked(allocation)
        if allocation.status not in (Status.AWAITING_APPROVAL, Status.FAILED):
            raise ValidationError(
                f"A {allocation.get_status_display().lower()} binding cannot be rejected.", code="invalid_transition"
            )
        allocation.transition_to(Status.REJECTED)
        allocation.rejection_reason = reason
        save_with_reason(allocation, acting_user, f"Rejected: {reason}", ["status", "rejection_reason"])
        _release_seats(allocation, acting_user, f"{allocation.quantity} seat(s) released: binding rejected")
    return allocation


def allocation_retry(*, allocation: SeatAllocation, acting_user) -> SeatAllocation:
    """Queue a failed binding again, from a fresh count of attempts."""
    with transaction.atomic():
        allocation = _locked(allocation)
        if allocation.status != Status.FAILED:
            raise ValidationError(
                f"Only a failed binding can be retried; this one is {allocation.get_status_display().lower()}.",
                code="invalid_transition",
            )
        allocation.transition_to(Status.QUEUED)
        allocation.attempts = 0
        allocation.next_attempt_at = None
        if allocation.last_error_final or allocation.plan_action == PlanAction.PATCH:
            # The provider refused (nothing applied) or the change is absolute and recomputed anyway:
            # plan afresh under a new MS-RequestId. An order that may have gone through keeps its ID.
            allocation.plan_action = ""
            allocation.plan_round += 1
        save_with_reason(
            allocation,
            acting_user,
            "Retry requested",
            ["status", "attempts", "next_attempt_at", "plan_action", "plan_round"],
        )
        allocation_enqueue(allocation.pk)
    return allocation


def allocation_reverse(*, allocation: SeatAllocation, acting_user, reason: str) -> SeatAllocation:
    """Undo a bound allocation at the provider within the reversal window (rule 10)."""
    reason = (reason or "").strip()
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can reverse a binding.", code="not_supervisor")
    if not reason:
        raise ValidationError("Say why the binding is reversed.", code="reason_required")
    allocation = SeatAllocation.objects.select_related("subscription", "tenant").get(pk=allocation.pk)
    if allocation.status != Status.BOUND:
        raise ValidationError(
            f"Only a bound allocation can be reversed; this one is {allocation.get_status_display().lower()}.",
            code="invalid_transition",
        )
    window = timedelta(days=settings.BINDING_REVERSAL_DAYS)
    if allocation.bound_at is None or timezone.now() - allocation.bound_at > window:
        raise ValidationError(
            f"Bindings can be reversed within {settings.BINDING_REVERSAL_DAYS} days; this one is older. "
            "Ask the provider's support to change the subscription.",
            code="reversal_window",
        )
    subscription = allocation.subscription
    later = SeatAllocation.objects.filter(
        subscription=subscription, status=Status.BOUND, bound_at__gt=allocation.bound_at
    )
    if later.exists():
        raise ValidationError(
            "A later binding changed this subscription since; reverse that one first "
            f"(allocation {', '.join(str(pk) for pk in later.values_list('pk', flat=True))}).",
            code="reversal_order",
        )
    if allocation.plan_action == PlanAction.ORDER:
        changes = [("reverse-status", {"status": "suspended"})]
    else:
        changes = [
            ("reverse-quantity", {"quantity": allocation.previous_quantity}),
            ("reverse-term", {"commitmentEndDate": allocation.previous_term_end.isoformat()}),
        ]
    gateway = gateway_get()
    with subscription_lock(subscription_slot_key(allocation)):
        for step, body in changes:
            try:
                gateway.subscription_patch(
                    tenant_id=allocation.tenant.tenant_id,
                    subscription_id=subscription.provider_subscription_id,
                    request_id=request_id_for(allocation.idempotency_key, f"{step}:{allocation.plan_round}"),
                    changes=body,
                )
            except ProviderError as exc:
                raise ValidationError(
                    f"The provider did not take the reversal, nothing changed here: {exc.message}",
                    code="provider_error",
                ) from exc
        with transaction.atomic():
            allocation = _locked(allocation)
            if allocation.status != Status.BOUND:
                raise ValidationError("This binding changed meanwhile; reload and try again.", code="changed")
            subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
            if allocation.plan_action == PlanAction.ORDER:
                subscription.status = Subscription.Status.SUSPENDED
            else:
                subscription.quantity = allocation.previous_quantity
                subscription.term_end = allocation.previous_term_end
                subscription.status = allocation.previous_status or subscription.status
            _save_subscription(subscription, acting_user, f"Binding {allocation.pk} reversed: {reason}")
            allocation.transition_to(Status.REVERSED)
            allocation.reversed_at = timezone.now()
            allocation.reversal_reason = reason
            save_with_reason(
                allocation, acting_user, f"Reversed: {reason}", ["status", "reversed_at", "reversal_reason"]
            )
            _release_seats(allocation, acting_user, f"{allocation.quantity} seat(s) released: binding reversed")
    return allocation


# --- one binding at a time per subscription -------------------------------------------------------


def subscription_slot_key(allocation: SeatAllocation) -> str:
    line = allocation.order_line
    return f"subscription:{line.order.agreement_id}:{line.product_id}:{allocation.tenant_id}"


def subscription_unlock(key: str) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
    except Exception:
        # A worker keeps its connection between tasks (CONN_MAX_AGE): closing it is the one sure
        # way not to carry the lock into the next task.
        connection.close()
        raise


@contextmanager
def subscription_lock(key: str) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock so one subscription changes one binding at a time.

    The lock lives on the connection, outside any transaction, so the provider call happens under it
    without a transaction open; a worker that dies drops its connection and with it the lock.
    On SQLite the worker runs one task at a time, which serialises the same way.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
    try:
        yield
    finally:
        subscription_unlock(key)
