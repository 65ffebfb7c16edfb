"""Requests to bind seats, approvals, rejections, retries, reversals, tenant identity and previews.

With redemption.binding (what a worker does with a queued allocation), the only way allocations change.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.history import reason_text, save_with_history
from config.queueing import enqueue_on_commit
from licensing.models import Agreement, Order, OrderLine, Product
from redemption.gateway import ProviderError, ProviderFinal, ProviderNotFound, gateway_get
from redemption.gateway.base import TenantIdentity
from redemption.models import Drift, PlanAction, SeatAllocation, Subscription
from tenants.models import VERIFIED_FIELDS, Customer, Tenant
from tenants.validators import normalize_domain, validate_default_domain

logger = logging.getLogger(__name__)
Status = SeatAllocation.Status


def _is_supervisor(user) -> bool:
    return bool(user and user.is_active and user.has_perm("redemption.supervisor"))


def _may_request(user) -> bool:
    return bool(user and user.is_active and user.has_perm("redemption.add_seatallocation"))


# --- the subscription a binding lands on, and what it will look like --------------------------------


def subscription_for(*, agreement: Agreement, product: Product, tenant: Tenant) -> Subscription | None:
    """Return the live subscription of this agreement's product on this tenant, if any."""
    return (
        Subscription.objects.filter(agreement=agreement, product=product, tenant=tenant)
        .exclude(status=Subscription.Status.DEPROVISIONED)
        .first()
    )


def released_by_reversal(subscription: Subscription) -> bool:
    """Whether the subscription is suspended because the binding that ordered it was reversed (rule 10).

    Its seats then went back to their order line: the provider still counts them, nobody holds them.
    """
    return (
        subscription.status == Subscription.Status.SUSPENDED
        and SeatAllocation.objects.filter(
            subscription=subscription, plan_action=PlanAction.ORDER, status=Status.REVERSED
        ).exists()
        and not SeatAllocation.objects.filter(subscription=subscription, status__in=SeatAllocation.AT_PROVIDER).exists()
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
    # Bindings that hold their seats: a failed one too, since a retry would bind them (it is given up by rejecting it).
    pending = (
        SeatAllocation.objects.filter(
            order_line__order__agreement=agreement,
            status__in=[Status.AWAITING_APPROVAL, Status.QUEUED, Status.BINDING, Status.BOUND, Status.FAILED],
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


def drift_refusal(subscription: Subscription, what: str) -> str:
    """Return why `what` may not change the subscription now (an open drift says the provider holds it
    differently: a change sent now would overwrite that unseen), or ""."""
    drifts = list(
        Drift.objects.filter(subscription=subscription, status=Drift.Status.OPEN, kind__in=Drift.PUSHABLE).order_by(
            "pk"
        )
    )
    if not drifts:
        return ""
    differences = "; ".join(
        f"{d.get_kind_display().lower()}: ours {d.ours}, the provider's {d.provider}" for d in drifts
    )
    return (
        f"The provider holds the subscription of {subscription.product} on {subscription.tenant.default_domain} "
        f"differently from us ({differences}): {what} would overwrite that change. Settle the drift first "
        "(Reconciliation > Drifts: take the provider's value, or push ours), then try again."
    )


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
    refusal = drift_refusal(subscription, "these seats")
    if refusal:
        raise ValidationError(refusal, code="subscription_drifted")
    old_qty, old_end, old_status = subscription.quantity, subscription.term_end, subscription.status
    if old_status == Subscription.Status.SUSPENDED and order_line.kind != OrderLine.Kind.RENEWAL:
        if not released_by_reversal(subscription):
            raise ValidationError(
                f"The subscription of {product} on {tenant.default_domain} is suspended at the provider: seats "
                "added to it could not be used. Settle it first (reconciliation), then bind these seats.",
                code="subscription_suspended",
            )
        # Its seats went back when the binding that ordered it was reversed: nobody holds them. These
        # seats take their place, and the subscription becomes active again, as a new order would be.
        return Preview(
            PlanAction.PATCH, quantity, order_line.ends_on, "active", old_qty, old_end, old_status, subscription
        )
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
    # Seats added after the term end blend it into the future (days_left is 0): the subscription is in its
    # term again, so no longer expired or disabled (rule 8), and its reminders follow the new end (rule 9).
    ended = old_status in (Subscription.Status.EXPIRED, Subscription.Status.DISABLED) and new_end >= today
    status = Subscription.Status.ACTIVE if ended else old_status
    return Preview(PlanAction.PATCH, old_qty + quantity, new_end, status, old_qty, old_end, old_status, subscription)


def allocation_outcome(*, allocation: SeatAllocation) -> tuple[Preview | None, str]:
    """Return what letting a waiting or failed binding go results in, as of today, or why it cannot be bound.

    Rule 7 for the second person: whoever approves or retries sees the quantity and end date too.
    """
    if allocation.status not in (Status.AWAITING_APPROVAL, Status.FAILED):
        return None, ""
    try:
        preview = allocation_preview(
            order_line=allocation.order_line, tenant=allocation.tenant, quantity=allocation.quantity
        )
    except ValidationError as exc:
        return None, " ".join(exc.messages)
    return preview, ""


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
    except ProviderFinal as exc:
        raise ValidationError(exc.message, code="provider_refused") from exc
    except ProviderError as exc:
        raise ValidationError(exc.message, code="provider_unavailable") from exc


def provider_unavailable(exc: ValidationError) -> bool:
    """Whether a refusal says the provider could not be reached (after its own wait): ask it nothing more now."""
    errors = exc.error_list if hasattr(exc, "error_list") else [e for es in exc.error_dict.values() for e in es]
    return any(error.code == "provider_unavailable" for error in errors)


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
    if not (acting_user and acting_user.is_active and acting_user.has_perm("tenants.change_tenant")):
        raise ValidationError("Only someone who may change tenants can verify a tenant's identity.", code="perm")
    identity = tenant_identity_resolve(tenant=tenant)
    mismatch = _identity_mismatch(tenant, identity)
    if mismatch:
        raise ValidationError(mismatch, code="identity_mismatch")
    with transaction.atomic():
        locked = _tenant_as_checked(tenant)
        _identity_confirm(locked, identity, acting_user, "Identity verified with the provider")
    return locked


def _tenant_as_checked(tenant: Tenant) -> Tenant:
    """Lock the tenant's row; refuse if its identity changed since the provider was asked about it."""
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if (locked.customer_id, locked.tenant_id, locked.default_domain) != (
        tenant.customer_id,
        tenant.tenant_id,
        tenant.default_domain,
    ):
        raise ValidationError(
            f"The record of tenant {tenant.default_domain} changed while this was being checked; nothing was "
            "saved. Reload the page and check the tenant again.",
            code="tenant_changed",
        )
    return locked


def _identity_confirm(tenant: Tenant, identity: TenantIdentity, acting_user, why: str) -> None:
    """Record the identity the provider reported as confirmed by `acting_user` (rule 4), with its history row."""
    tenant.verified_at = timezone.now()
    tenant.verified_by = acting_user
    tenant.verified_tenant_id = identity.tenant_id
    tenant.verified_domain = identity.domain
    tenant.verified_display_name = identity.company_name
    save_with_history(
        tenant,
        acting_user=acting_user,
        reason=f"{why}: {identity.domain} ({identity.company_name})",
        fields=list(VERIFIED_FIELDS),
    )


def tenant_lookup(*, domain: str) -> TenantIdentity:
    """Ask the provider which tenant has this default domain; refuse with a message a person can act on."""
    domain = normalize_domain(domain)
    validate_default_domain(domain)
    try:
        return gateway_get().tenant_for_domain(domain=domain)
    except ProviderNotFound as exc:
        raise ValidationError(
            f"The provider knows no tenant with the default domain {domain}: check the domain with the customer. "
            "Nothing was recorded.",
            code="tenant_unknown",
        ) from exc
    except ProviderFinal as exc:
        raise ValidationError(exc.message, code="provider_refused") from exc
    except ProviderError as exc:
        raise ValidationError(exc.message, code="provider_unavailable") from exc


def tenant_record(*, customer: Customer, domain: str, confirm_domain: str, acting_user) -> Tenant:
    """Record a customer's tenant by its default domain, as the provider reports it, confirmed by typing it."""
    if not (acting_user and acting_user.is_active and acting_user.has_perm("tenants.add_tenant")):
        raise ValidationError("Only someone who may add tenants can record one.", code="perm")
    identity = tenant_lookup(domain=domain)
    if normalize_domain(confirm_domain or "") != identity.domain:
        raise ValidationError(
            f"Type the tenant's default domain ({identity.domain}) to confirm it is the customer's tenant.",
            code="confirm_domain_mismatch",
        )
    tenant = Tenant(
        tenant_id=identity.tenant_id,
        default_domain=identity.domain,
        display_name=identity.company_name,
        customer=customer,
    )
    tenant.full_clean()
    with transaction.atomic():
        save_with_history(
            tenant, acting_user=acting_user, reason=f"Recorded for {customer.name} as the provider reports it"
        )
        _identity_confirm(tenant, identity, acting_user, "Identity confirmed when recorded")
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
    request_key: uuid.UUID | None = None,
) -> SeatAllocation:
    """Ask for `quantity` seats of the line to be bound to the tenant; queue it or hold it for approval.

    `request_key` names the form that asks: sent again (a double click, a page sent twice), it returns
    the binding it asked for the first time, marked `repeated`, and asks for nothing more.
    """
    if request_key is not None and (earlier := _requested_with(request_key, order_line)) is not None:
        return earlier
    agreement = order_line.order.agreement
    reason = reason_text(reason)
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
    _refuse_part_of_a_renewal(order_line, quantity)
    existing = agreement_tenant(agreement=agreement, product=order_line.product)
    override = existing is not None and existing.pk != tenant.pk
    if override and not reason:
        raise _affinity_reason_required(agreement, existing, tenant)
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
    # Refuses seats that could not be used (a subscription suspended at the provider) before anything is asked.
    allocation_preview(order_line=order_line, tenant=tenant, quantity=quantity)
    first_binding = not _tenant_has_bindings(tenant)
    identity = None
    if person_chooses or first_binding:
        # Identity before seats (rule 4); asked before any lock, nothing is written on refusal.
        identity = tenant_identity_resolve(tenant=tenant)
        mismatch = _identity_mismatch(tenant, identity)
        if mismatch:
            raise ValidationError(mismatch, code="identity_mismatch")

    with transaction.atomic():
        # Rule 1: the check and the hold happen under the line's row lock (its order and agreement
        # are locked with it, so that what was checked above cannot move before it is fixed).
        line = OrderLine.objects.select_for_update().select_related("order__agreement").get(pk=order_line.pk)
        # The same form sent twice at once: the second waited for the line's lock, and finds the first's binding.
        if request_key is not None and (earlier := _requested_with(request_key, order_line)) is not None:
            return earlier
        if quantity > line.seats_left:
            raise ValidationError(_seats_left_message(line, quantity), code="seats_exhausted")
        _refuse_part_of_a_renewal(line, quantity)
        # The tenant is the one checked above, and stays so: its identity is fixed from now on.
        locked_tenant = _tenant_as_checked(tenant)
        if (
            line.order.agreement_id != agreement.pk
            or line.order.agreement.customer_id != locked_tenant.customer_id
            or (line.product_id, line.kind) != (order_line.product_id, order_line.kind)
        ):
            raise ValidationError(
                f"{line} changed while this binding was being checked; nothing was saved. Reload and try again.",
                code="line_changed",
            )
        # Four eyes (rule 5) is decided under the agreement's lock: a binding of another of its lines
        # requested meanwhile (two people at the same moment) counts, and so do the line's own seats
        # already requested, so that a binding split into small ones is approved like a large one.
        approval_reasons = _approval_reasons(
            line, locked_tenant, quantity, first_binding=first_binding, override_reason=reason
        )
        now = timezone.now()
        line.seats_allocated += quantity
        line.seats_requested_at = line.seats_requested_at or now
        save_with_history(
            line,
            acting_user=acting_user,
            reason=f"{quantity} seat(s) requested for {tenant.default_domain}",
            fields=["seats_allocated", "seats_requested_at"],
        )
        if identity is not None:
            _identity_confirm(locked_tenant, identity, acting_user, f"Identity confirmed for binding seats of {line}")
        _mark_seats_requested([locked_tenant, line.order, line.order.agreement, line.product], now, acting_user, line)
        allocation = SeatAllocation(
            order_line=line,
            tenant=locked_tenant,
            quantity=quantity,
            request_key=request_key,
            requested_by=acting_user,
            reason=reason,
            approval_reasons=approval_reasons,
            status=Status.AWAITING_APPROVAL if approval_reasons else Status.QUEUED,
        )
        why = (
            f"Requested; waiting for a supervisor: {'; '.join(approval_reasons)}"
            if approval_reasons
            else "Requested and queued for binding"
        )
        # The requester's own words (an affinity override's reason) belong to the why (rule 12).
        save_with_history(allocation, acting_user=acting_user, reason=f"{why}. {reason}" if reason else why)
        if allocation.status == Status.QUEUED:
            allocation_enqueue(allocation.pk)
    order_line.seats_allocated = line.seats_allocated
    return allocation


def _requested_with(request_key: uuid.UUID, order_line: OrderLine) -> SeatAllocation | None:
    """Return the binding the form named `request_key` already asked for, marked `repeated`, or None."""
    earlier = SeatAllocation.objects.select_related("tenant").filter(request_key=request_key).first()
    if earlier is None:
        return None
    if earlier.order_line_id != order_line.pk:
        raise ValidationError(
            "This form already asked for seats of another order line: nothing more was asked. Reload the page.",
            code="request_key_reused",
        )
    earlier.repeated = True
    return earlier


def _refuse_part_of_a_renewal(line: OrderLine, quantity: int) -> None:
    """A renewal line is bound whole, once: each binding of it sets the quantity and starts a further term (rule 7)."""
    if line.kind == OrderLine.Kind.RENEWAL and quantity != line.quantity:
        raise ValidationError(
            f"{line} is a renewal: it sets the subscription to its {line.quantity} seat(s) for one further term, "
            f"so it is bound whole, not {quantity} seat(s) of it.",
            code="renewal_whole",
        )


@dataclass(frozen=True)
class SeatsAsked:
    """One line's seats asked for on a screen that binds several lines at once."""

    order_line: OrderLine
    tenant: Tenant
    quantity: int
    confirm_domain: str | None = None
    reason: str = ""


def application_order(lines: list) -> list:
    """Return lines (or asks) in the order their bindings apply: added seats before renewals, else as given.

    A renewal sets the quantity for the next term, so seats added in the same confirmation go onto the
    current term first; the result is then the same whatever order the sheet listed the lines in.
    """

    def is_renewal(item) -> bool:
        line = getattr(item, "order_line", item)
        return line.kind == OrderLine.Kind.RENEWAL

    return sorted(lines, key=is_renewal)


def allocations_request(
    *, asks: list[SeatsAsked], acting_user, request_key: uuid.UUID | None = None
) -> list[SeatAllocation]:
    """Request several lines' seats with one confirmation: all are queued (or held for approval), or none,
    and then every line refused is named with its reason.

    `request_key` names the form that asks: sent again, each line's binding it asked for the first time
    comes back marked `repeated` (allocation_request), even if it was rejected or reversed since.
    """
    requested, refusals = [], []
    with transaction.atomic():
        for ask in application_order(asks):
            try:
                # A savepoint each: every line refused is told at once, then nothing is kept.
                with transaction.atomic():
                    requested.append(
                        allocation_request(
                            order_line=ask.order_line,
                            tenant=ask.tenant,
                            quantity=ask.quantity,
                            confirm_domain=ask.confirm_domain,
                            acting_user=acting_user,
                            reason=ask.reason,
                            request_key=line_request_key(request_key, ask.order_line.pk) if request_key else None,
                        )
                    )
            except ValidationError as exc:
                refusals += [f"{ask.order_line}: {message}" for message in exc.messages]
                if provider_unavailable(exc):
                    # Each further line would wait for it as long again.
                    break
        if refusals:
            raise ValidationError(list(dict.fromkeys(refusals)))
    return requested


def line_request_key(request_key: uuid.UUID, line_id: int) -> uuid.UUID:
    """Return the key of one line's binding asked for by a form of several lines: the same every time."""
    return uuid.uuid5(request_key, f"order-line:{line_id}")


def requested_with_form(*, request_key: uuid.UUID, line_ids: list[int]) -> list[SeatAllocation]:
    """Return the bindings a form of several lines already asked for (marked `repeated`), if any."""
    keys = [line_request_key(request_key, line_id) for line_id in line_ids]
    earlier = list(SeatAllocation.objects.filter(request_key__in=keys).order_by("pk"))
    for allocation in earlier:
        allocation.repeated = True
    return earlier


def _mark_seats_requested(rows: list[Tenant | Order | Agreement | Product], now, acting_user, line: OrderLine) -> None:
    """Record the first time seats are requested against each row: from then on what they hang on is fixed."""
    for row in rows:
        if row.seats_requested_at is None:
            row.seats_requested_at = now
            save_with_history(
                row,
                acting_user=acting_user,
                reason=f"Seats requested ({line}): identity fixed from now on",
                fields=["seats_requested_at"],
            )


def _approval_reasons(line: OrderLine, tenant: Tenant, quantity: int, *, first_binding: bool, override_reason: str):
    """Return why this binding needs a supervisor (rule 5), read under the line's and its agreement's lock.

    `first_binding` is what the identity check saw before the lock (true stays true). An affinity
    override that appeared since (another line of the agreement bound elsewhere meanwhile) needs its
    written reason like any other: without one, nothing is saved.
    """
    threshold = settings.BINDING_APPROVAL_THRESHOLD
    reasons = []
    if quantity > threshold:
        reasons.append(f"More than {threshold} seats")
    elif line.seats_allocated + quantity > threshold:
        reasons.append(
            f"More than {threshold} seats of {line} ({line.seats_allocated} requested before, {quantity} now)"
        )
    if first_binding or not _tenant_has_bindings(tenant):
        reasons.append(f"First binding to {tenant.default_domain}")
    existing = agreement_tenant(agreement=line.order.agreement, product=line.product)
    if existing is not None and existing.pk != tenant.pk:
        if not override_reason:
            raise _affinity_reason_required(line.order.agreement, existing, tenant)
        reasons.append(f"Affinity override: the agreement's seats are on {existing.default_domain}")
    return reasons


def _affinity_reason_required(agreement: Agreement, existing: Tenant, tenant: Tenant) -> ValidationError:
    return ValidationError(
        f"Agreement {agreement.number} already has seats on {existing.default_domain}. Sending these to "
        f"{tenant.default_domain} needs a written reason and a supervisor's approval.",
        code="affinity_reason_required",
    )


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
    """Return the allocation read again under its row lock (its line and order are read, not locked)."""
    return (
        SeatAllocation.objects.select_for_update(of=("self",)).select_related("order_line__order").get(pk=allocation.pk)
    )


def allocation_decision_permitted(*, allocation: SeatAllocation, decision: str, user) -> bool:
    """Whether the user holds the permission a decision on this binding needs; its state is the decision's to check.

    Approving, rejecting and reversing are a supervisor's (rules 5 and 10), and so is retrying a failed
    reversal; retrying a failed binding is for whoever may request bindings.
    """
    if decision == "retry" and allocation.status != Status.REVERSAL_FAILED:
        return _may_request(user)
    return decision in ("approve", "reject", "retry", "reverse") and _is_supervisor(user)


def allocation_approve(*, allocation: SeatAllocation, acting_user, reason: str = "") -> SeatAllocation:
    """Approve a binding waiting for a supervisor (rule 5) and queue it; a reason given goes in its history."""
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
        why = f"Approved: {reason_text(reason)}" if reason_text(reason) else "Approved and queued for binding"
        save_with_history(allocation, acting_user=acting_user, reason=why, fields=["status", "approved_by"])
        allocation_enqueue(allocation.pk)
    return allocation


def seats_release(*, allocation: SeatAllocation, acting_user, why: str) -> None:
    """Give the allocation's seats back to its order line (it was rejected or reversed), under the line's lock."""
    line = OrderLine.objects.select_for_update().get(pk=allocation.order_line_id)
    line.seats_allocated -= allocation.quantity
    save_with_history(line, acting_user=acting_user, reason=why, fields=["seats_allocated"])


def allocation_reject(*, allocation: SeatAllocation, acting_user, reason: str) -> SeatAllocation:
    """Reject a binding waiting for approval, or give up a failed one; its seats go back to the line."""
    reason = reason_text(reason)
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can reject a binding.", code="not_supervisor")
    if not reason:
        raise ValidationError("Say why the binding is rejected.", code="reason_required")
    if allocation.status == Status.FAILED and allocation.first_sent_at is not None:
        # Asked before any lock: its seats may not go back while the provider holds what it sent.
        _refuse_if_applied(allocation)
    with transaction.atomic():
        allocation = _locked(allocation)
        if allocation.status not in (Status.AWAITING_APPROVAL, Status.FAILED):
            raise ValidationError(
                f"A {allocation.get_status_display().lower()} binding cannot be rejected.", code="invalid_transition"
            )
        allocation.transition_to(Status.REJECTED)
        allocation.rejection_reason = reason
        save_with_history(
            allocation, acting_user=acting_user, reason=f"Rejected: {reason}", fields=["status", "rejection_reason"]
        )
        seats_release(
            allocation=allocation,
            acting_user=acting_user,
            why=f"{allocation.quantity} seat(s) released: binding rejected",
        )
    return allocation


def _refuse_if_applied(allocation: SeatAllocation) -> None:
    """Refuse to give up a failed binding that reached the provider when the provider shows it went through.

    A final error can come after the provider applied the call (its answer refused or lost): the seats
    are then in use, and handing them back to the line would let them be bound a second time.
    """
    gateway, tenant = gateway_get(), allocation.tenant
    retry = "Retry the binding instead: it looks the provider up and records what it finds."
    try:
        key = str(allocation.idempotency_key)
        for item in gateway.subscription_list(tenant_id=tenant.tenant_id):
            if key in (item.friendly_name or ""):
                raise ValidationError(
                    f"This binding's order went through at the provider as subscription {item.id} "
                    f"({item.quantity} seats on {tenant.default_domain}): its seats are in use. {retry}",
                    code="applied_at_provider",
                )
        if allocation.plan_action == PlanAction.PATCH and allocation.subscription_id:
            try:
                held = gateway.subscription_get(
                    tenant_id=tenant.tenant_id, subscription_id=allocation.subscription.provider_subscription_id
                )
            except ProviderNotFound:
                return  # no such subscription at the provider: the change cannot have gone through
            # A change is sent a step at a time (quantity, term end, status): one step applied is enough
            # for the seats to be in use, though a later step was refused.
            applied = [
                label
                for label, planned, before, found in (
                    ("the quantity", allocation.target_quantity, allocation.previous_quantity, held.quantity),
                    ("the term end", allocation.target_term_end, allocation.previous_term_end, held.commitment_end),
                    ("the status", allocation.target_status, allocation.previous_status, held.status),
                )
                if planned not in (None, "") and planned != before and found == planned
            ]
            if applied:
                raise ValidationError(
                    f"The provider's subscription {held.id} shows {' and '.join(applied)} this binding planned "
                    f"({held.quantity} seats, ending {held.commitment_end:%Y-%m-%d}): its seats are in use. {retry}",
                    code="applied_at_provider",
                )
    except ProviderError as exc:
        raise ValidationError(
            f"Could not check with the provider whether this binding went through, so nothing was changed: "
            f"{exc.message}",
            code="provider_unavailable",
        ) from exc


def allocation_retry(*, allocation: SeatAllocation, acting_user) -> SeatAllocation:
    """Queue a failed binding or reversal again, from a fresh count of attempts.

    Only a step the provider refused outright is sent under a new MS-RequestId; a step whose outcome
    is unknown keeps its ID, and the worker looks up what it may have done before sending it again.
    """
    with transaction.atomic():
        allocation = _locked(allocation)
        if allocation.status == Status.REVERSAL_FAILED:
            if not _is_supervisor(acting_user):
                raise ValidationError("Only a supervisor can retry a reversal.", code="not_supervisor")
            target, why = Status.REVERSING, "Reversal retry requested"
        elif allocation.status == Status.FAILED:
            if not _may_request(acting_user):
                raise ValidationError(
                    "Only someone who may request bindings can retry one.", code="not_allowed_to_request"
                )
            target, why = Status.QUEUED, "Retry requested"
        else:
            raise ValidationError(
                f"Only a failed binding or reversal can be retried; this one is "
                f"{allocation.get_status_display().lower()}.",
                code="invalid_transition",
            )
        allocation.transition_to(target)
        allocation.attempts = 0
        allocation.next_attempt_at = None
        fields = ["status", "attempts", "next_attempt_at"]
        if allocation.last_error_final:
            # The provider refused outright, so nothing was applied: the next call is a new request.
            allocation.plan_round += 1
            allocation.last_error_final = False
            fields += ["plan_round", "last_error_final"]
            if target == Status.QUEUED:
                allocation.plan_action = ""
                fields.append("plan_action")
        save_with_history(allocation, acting_user=acting_user, reason=why, fields=fields)
        allocation_enqueue(allocation.pk)
    return allocation


def _reversal_refusal(allocation: SeatAllocation) -> ValidationError | None:
    """Return why the allocation cannot be reversed now (rule 10 and the subscription's order), or None."""
    if allocation.status != Status.BOUND:
        return ValidationError(
            f"Only a bound allocation can be reversed; this one is {allocation.get_status_display().lower()}.",
            code="invalid_transition",
        )
    window = timedelta(days=settings.BINDING_REVERSAL_DAYS)
    if allocation.bound_at is None or timezone.now() - allocation.bound_at > window:
        return ValidationError(
            f"Bindings can be reversed within {settings.BINDING_REVERSAL_DAYS} days; this one is older. "
            "Ask the provider's support to change the subscription.",
            code="reversal_window",
        )
    refusal = drift_refusal(allocation.subscription, "reversing this binding") if allocation.subscription else ""
    if refusal:
        return ValidationError(refusal, code="subscription_drifted")
    later = reversal_blockers(allocation)
    if later:
        return ValidationError(
            "A later binding of this subscription is bound or on its way; it must be reversed or finish "
            f"first (binding {', '.join(str(pk) for pk in later)}).",
            code="reversal_order",
        )
    return None


def reversal_outcome(*, allocation: SeatAllocation) -> tuple[str, str]:
    """Return what reversing the allocation does to its subscription, in words, or why it cannot be reversed now.

    Rule 10 for the supervisor: the concrete effect is shown before the reason is typed.
    """
    refusal = _reversal_refusal(allocation)
    if refusal is not None:
        return "", " ".join(refusal.messages)
    if allocation.plan_action == PlanAction.ORDER:
        return (
            f"The subscription it created is suspended at the provider: its {allocation.target_quantity} seat(s) "
            "stop working, and the line's seats are free to bind again.",
            "",
        )
    return (
        f"{allocation.target_quantity} -> {allocation.previous_quantity} seat(s), end "
        f"{allocation.target_term_end:%Y-%m-%d} -> {allocation.previous_term_end:%Y-%m-%d}, as before this binding.",
        "",
    )


def allocation_reverse(*, allocation: SeatAllocation, acting_user, reason: str) -> SeatAllocation:
    """Queue the undoing of a bound allocation at the provider, within the reversal window (rule 10).

    A worker carries it out (redemption.binding), in order with the subscription's other changes;
    this request makes no provider call.
    """
    reason = reason_text(reason)
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can reverse a binding.", code="not_supervisor")
    if not reason:
        raise ValidationError("Say why the binding is reversed.", code="reason_required")
    with transaction.atomic():
        allocation = _locked(allocation)
        refusal = _reversal_refusal(allocation)
        if refusal is not None:
            raise refusal
        allocation.transition_to(Status.REVERSING)
        allocation.reversal_reason = reason
        allocation.reversal_requested_by = acting_user
        allocation.reversal_requested_at = timezone.now()
        allocation.attempts = 0
        allocation.next_attempt_at = None
        allocation.last_error = ""
        allocation.last_error_final = False
        save_with_history(
            allocation,
            acting_user=acting_user,
            reason=f"Reversal requested: {reason}",
            fields=[
                "status",
                "reversal_reason",
                "reversal_requested_by",
                "reversal_requested_at",
                "attempts",
                "next_attempt_at",
                "last_error",
                "last_error_final",
            ],
        )
        allocation_enqueue(allocation.pk)
    return allocation


def reversal_blockers(allocation: SeatAllocation, *, queued_count: bool = True) -> list[int]:
    """Return the later allocations of the same subscription that a reversal must not undo.

    `queued_count`: a later binding not applied yet counts too (when the reversal is asked for; the
    worker, applying changes in order, lets it follow the reversal).
    """
    line = allocation.order_line
    same_subscription = SeatAllocation.objects.filter(
        order_line__order__agreement_id=line.order.agreement_id,
        order_line__product_id=line.product_id,
        tenant_id=allocation.tenant_id,
    )
    # Bindings of one subscription are applied in the order they were requested, and one that failed and
    # was retried after this one was bound is applied after it too: either undoes it if set back.
    pending = SeatAllocation.IN_FLIGHT if queued_count else frozenset()
    later = Q(pk__gt=allocation.pk, status__in=pending | SeatAllocation.AT_PROVIDER)
    if allocation.bound_at is not None:
        later |= Q(bound_at__gt=allocation.bound_at, status__in=SeatAllocation.AT_PROVIDER)
    return list(same_subscription.filter(later).exclude(pk=allocation.pk).values_list("pk", flat=True)[:20])
