"""Binding and reversing seats in the worker: claim, plan, call the provider outside any transaction, record.

The request side (who may ask for what, approvals, the reversal request) is in redemption.services;
this is what a Celery task runs for one allocation, and the sweep that recovers lost or abandoned ones.

Nothing here may make the provider hold more seats than were bound: every write carries an
MS-RequestId derived from the allocation's key and the step (`_step_id`, the only place it is made),
and a write whose outcome is unknown is looked up before it is sent again (a new-seats order by the
key it carries in its friendlyName, a change by reading the subscription).

Every provider call spends a slot of the installation's call budget (redemption.gateway.budget). The
slot of a binding's first call is waited for before its subscription's lock is taken, so no worker
waits for the provider's rate under a lock or in a transaction; a 429 pauses every worker.
"""

import logging
import random
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.history import save_with_history
from licensing.models import OrderLine
from redemption.gateway import (
    BudgetHeldBack,
    ProviderFinal,
    ProviderThrottled,
    ProviderTransient,
    budget_get,
    gateway_get,
    request_id_for,
)
from redemption.gateway.base import OrderRequest, ProviderSubscription
from redemption.gateway.budget import connection_release
from redemption.models import PlanAction, SeatAllocation, Subscription
from redemption.queue_head import queue_head, slot_lock_with_head
from redemption.services import (
    allocation_enqueue,
    allocation_preview,
    drift_refusal,
    reversal_blockers,
    seats_release,
)
from redemption.statements import Change, Guard, Lease, Ref, orphans, slot_unlock, write_with_history
from redemption.throttle import queue_drain_seconds

logger = logging.getLogger(__name__)
Status = SeatAllocation.Status

# Backoff of transient provider errors: doubling from BACKOFF_BASE, capped well below the broker's
# visibility timeout so a countdown is never delivered twice.
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 120.0
RETRY_AFTER_CAP_SECONDS = 600.0
# A binding that finds another one of the same subscription waiting on the provider tries again this soon.
DEFER_SECONDS = 3.0
# Bindings deferred by the same pause come back spread over this many seconds, not all at once.
THROTTLE_SPREAD_SECONDS = 1.0
# The queue's head not read yet (None means read, and empty).
UNREAD = object()


class BindingDeferred(Exception):
    """The binding did not finish yet: run it again in `countdown` seconds (state already saved)."""

    def __init__(self, countdown: float, reason: str) -> None:
        super().__init__(reason)
        self.countdown = countdown
        self.reason = reason


def allocation_bind(*, allocation_id: int) -> SeatAllocation:
    """Carry out a queued binding or a requested reversal and record the result; raise BindingDeferred to go again.

    Changes to one subscription are applied one at a time in the order they were requested (a
    renewal sets an absolute quantity, so order matters): whoever holds the subscription's lock
    applies the older ones first.
    """
    budget = budget_get()
    # The first provider call's slot is waited for here, before the subscription's lock and any
    # transaction; a slot further away than a short sleep (a 429's pause) frees the worker instead.
    try:
        budget.prepay()
    except BudgetHeldBack as exc:
        if not connection.in_atomic_block:
            # Calls are held back for a while: an idle worker need not keep a database connection.
            connection_release()
        raise BindingDeferred(exc.retry_after + random.uniform(0, THROTTLE_SPREAD_SECONDS), exc.message) from None
    except ProviderTransient as exc:
        raise BindingDeferred(DEFER_SECONDS, exc.message) from None
    try:
        return _bind_due(allocation_id)
    finally:
        budget.prepaid_drop()


def _bind_due(allocation_id: int) -> SeatAllocation:
    """Carry out the allocation if it is due (after the older ones of its subscription)."""
    # Binding ones (a worker died), and queued or reversing ones that are due; an early duplicate
    # (the sweep, a redelivery) of a scheduled attempt leaves it to that attempt.
    due_before = timezone.now() + timedelta(seconds=1)
    if connection.vendor == "postgresql":
        # Found, locked and the queue's head read under the lock, in one round trip.
        slot, head = slot_lock_with_head(allocation_id=allocation_id, due_before=due_before)
        if slot is None:
            return SeatAllocation.objects.get(pk=allocation_id)
        lease = Lease(slot.key)
        try:
            return _work_in_order(
                allocation_id, slot.agreement_id, slot.product_id, slot.tenant_id, head=head, lease=lease
            )
        finally:
            if not lease.released:
                slot_unlock(slot.key)
    # SQLite: the worker runs one task at a time, which serialises a subscription's changes the same way.
    due = Q(status=Status.BINDING) | Q(status__in=[Status.QUEUED, Status.REVERSING]) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=due_before)
    )
    found = (
        SeatAllocation.objects.filter(due, pk=allocation_id)
        .values_list("order_line__order__agreement_id", "order_line__product_id", "tenant_id")
        .first()
    )
    if found is None:
        return SeatAllocation.objects.get(pk=allocation_id)
    return _work_in_order(allocation_id, *found)


def _work_in_order(
    allocation_id: int,
    agreement_id: int,
    product_id: int,
    tenant_id: int,
    *,
    head: SeatAllocation | object | None = UNREAD,
    lease: Lease | None = None,
) -> SeatAllocation:
    """Apply the allocation after the older ones of its subscription; the caller holds the subscription's lock.

    `head` is the queue's head when the caller read it with the lock; `lease` lets the allocation's
    own result release the lock in the same round trip.
    """
    # Under the lock nobody else works on this subscription: a `binding` allocation here was left
    # by a worker that died, and is safe to resume with its stored plan and request IDs.
    while True:
        if head is UNREAD:
            head = queue_head(
                agreement_id=agreement_id, product_id=product_id, tenant_id=tenant_id, up_to=allocation_id
            )
        if head is None:
            return SeatAllocation.objects.get(pk=allocation_id)
        now = timezone.now()
        if head.status != Status.BINDING and head.next_attempt_at and head.next_attempt_at > now:
            if head.pk == allocation_id:
                return head
            wait = (head.next_attempt_at - now).total_seconds() + 1
            raise BindingDeferred(wait, f"Waiting for allocation {head.pk} of the same subscription")
        own = head.pk == allocation_id
        try:
            done = _reverse_one(head) if head.status == Status.REVERSING else _bind_one(head, lease if own else None)
        except BindingDeferred as deferred:
            if own:
                raise
            raise BindingDeferred(
                deferred.countdown + 1, f"Waiting for allocation {head.pk} of the same subscription"
            ) from None
        if own:
            return done or SeatAllocation.objects.get(pk=allocation_id)
        head = UNREAD


def _bind_one(allocation: SeatAllocation, lease: Lease | None = None) -> SeatAllocation | None:
    """Claim, plan and apply one allocation (read under the lock); the caller holds its subscription's lock.

    With `lease`, recording the allocation bound also releases the lock.
    """
    # An earlier attempt (before a crash, a lost answer, a retry) may have reached the provider.
    sent_before = allocation.first_sent_at is not None
    try:
        if not _claim(allocation):
            return None
    except ValidationError as exc:
        # The plan itself is refused (seats onto a subscription suspended at the provider): nothing was sent.
        return _fail(allocation, " ".join(exc.messages), final=True)
    try:
        return _apply(allocation, look_up=sent_before, lease=lease)
    except ProviderFinal as exc:
        return _fail(allocation, exc.message, final=True)
    except ProviderThrottled as exc:
        if not sent_before and allocation.plan_action == PlanAction.ORDER:
            # Its one call was refused, not applied: the next attempt need not look the order up first.
            allocation.first_sent_at = None
        return _retry_later(allocation, exc)
    except ProviderTransient as exc:
        return _retry_later(allocation, exc)


def _retry_later(allocation: SeatAllocation, exc: ProviderTransient) -> SeatAllocation:
    """Fail the allocation once it has used its attempts (throttling uses none); else defer it: BindingDeferred."""
    if isinstance(exc, ProviderThrottled):
        # Throttling asks us to wait, not to give up: it does not use one of the binding's attempts.
        allocation.attempts -= 1
        countdown = min(RETRY_AFTER_CAP_SECONDS, exc.retry_after) + random.uniform(0, THROTTLE_SPREAD_SECONDS)
    elif allocation.attempts >= settings.BINDING_MAX_ATTEMPTS:
        return _fail(allocation, f"Gave up after {allocation.attempts} attempts: {exc.message}", final=False)
    else:
        countdown = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (allocation.attempts - 1))
        countdown *= random.uniform(0.5, 1.5)
    deferred = BindingDeferred(countdown, exc.message)
    _defer(allocation, deferred)
    raise deferred from exc


def _claim(allocation: SeatAllocation) -> bool:
    """Mark the allocation binding with its stored plan, in one write with its history row; False if taken."""
    resumed = allocation.status == Status.BINDING
    if not resumed:
        allocation.transition_to(Status.BINDING)
    allocation.attempts += 1
    allocation.next_attempt_at = None
    allocation.first_sent_at = allocation.first_sent_at or timezone.now()
    planned = _plan(allocation)
    fields = ["status", "attempts", "next_attempt_at", "first_sent_at", *PLAN_FIELDS]
    written = write_with_history(
        [
            Change(
                "allocation",
                SeatAllocation,
                {name: getattr(allocation, name) for name in fields},
                f"{'Resumed' if resumed else 'Binding'}: attempt {allocation.attempts}{planned}",
                pk=allocation.pk,
                # A conditional claim: a status changed meanwhile means someone else has it.
                statuses=[Status.QUEUED, Status.BINDING],
            )
        ],
        now=timezone.now(),
    )
    return written["allocation"] is not None


PLAN_FIELDS = [
    "plan_action",
    "plan_round",
    "planned_on",
    "target_quantity",
    "target_term_end",
    "target_status",
    "previous_quantity",
    "previous_term_end",
    "previous_status",
    "subscription_id",
]


def _plan(allocation: SeatAllocation) -> str:
    """Set the absolute target values, saved with the claim before the first provider call (rule 6)."""
    line = allocation.order_line
    # The slot query found the live subscription's id (under the lock); fetch the row only if there is one.
    live_id = allocation.live_subscription_id
    subscription = Subscription.objects.get(pk=live_id) if live_id else None
    today = timezone.localdate()
    if allocation.plan_action:
        if allocation.plan_action == PlanAction.ORDER and subscription is None:
            return ""
        if (
            allocation.plan_action == PlanAction.PATCH
            and allocation.planned_on == today
            and subscription is not None
            and subscription.pk == allocation.subscription_id
            and subscription.quantity == allocation.previous_quantity
            and subscription.term_end == allocation.previous_term_end
        ):
            return ""
    preview = allocation_preview(
        order_line=line,
        tenant=allocation.tenant,
        quantity=allocation.quantity,
        today=today,
        base=subscription,
        lookup=False,
    )
    if allocation.plan_action and (
        allocation.plan_action,
        allocation.target_quantity,
        allocation.target_term_end,
        allocation.target_status,
    ) != (preview.action, preview.quantity, preview.term_end, preview.status):
        # Another binding changed the subscription meanwhile, or a day passed (rule 7 blends from the
        # day the binding is applied): a different body needs new request IDs. The same body keeps them.
        allocation.plan_round += 1
    allocation.plan_action = preview.action
    allocation.planned_on = today
    allocation.target_quantity = preview.quantity
    allocation.target_term_end = preview.term_end
    allocation.target_status = preview.status
    allocation.previous_quantity = preview.previous_quantity
    allocation.previous_term_end = preview.previous_term_end
    allocation.previous_status = preview.previous_status
    allocation.subscription = preview.subscription
    return f"; targets: {preview.description}"


def _step_id(allocation: SeatAllocation, step: str):
    """Return the MS-RequestId of one provider write: the same on every retry of the same plan (rule 6)."""
    return request_id_for(allocation.idempotency_key, f"{step}:{allocation.plan_round}")


def order_friendly_name(allocation: SeatAllocation) -> str:
    """Return the friendlyName of the allocation's new-seats order: it always ends with the allocation's key."""
    line = allocation.order_line
    tag = f" [{allocation.idempotency_key}]"
    return f"{line.product.description} ({line.order.agreement.number})"[: 255 - len(tag)] + tag


def _order_placed_before(gateway, allocation: SeatAllocation) -> ProviderSubscription | None:
    """Return the subscription an earlier order of this allocation created at the provider, if any."""
    key = str(allocation.idempotency_key)
    for item in gateway.subscription_list(tenant_id=allocation.tenant.tenant_id):
        if key in (item.friendly_name or ""):
            return item
    return None


def _apply(allocation: SeatAllocation, *, look_up: bool, lease: Lease | None = None) -> SeatAllocation:
    """Make the provider calls of the stored plan, then record the subscription and the binding."""
    gateway = gateway_get()
    line = allocation.order_line
    agreement = line.order.agreement
    tenant = allocation.tenant
    still_binding = Guard(SeatAllocation, allocation.pk, [Status.BINDING])
    if allocation.plan_action == PlanAction.ORDER:
        provided = _order_placed_before(gateway, allocation) if look_up else None
        found = provided is not None
        if provided is None:
            provided = gateway.order_create(
                tenant_id=tenant.tenant_id,
                request_id=_step_id(allocation, "order"),
                order=OrderRequest(
                    reference_customer_id=str(tenant.tenant_id),
                    offer_id=line.product.part_number,
                    quantity=allocation.target_quantity,
                    commitment_end=allocation.target_term_end,
                    friendly_name=order_friendly_name(allocation),
                    partner_id=agreement.partner.mpn_id,
                ),
            )
        subscription = Subscription(
            tenant=tenant,
            product=line.product,
            agreement=agreement,
            quantity=allocation.target_quantity,
            term_end=allocation.target_term_end,
            provider_subscription_id=provided.id,
        )
        written = Change(
            "subscription",
            Subscription,
            {
                "tenant_id": tenant.pk,
                "product_id": line.product_id,
                "agreement_id": agreement.pk,
                "quantity": subscription.quantity,
                "term_end": subscription.term_end,
                "provider_subscription_id": subscription.provider_subscription_id,
            },
            f"Created by binding {allocation.pk}"
            + (" (its earlier order had gone through: found at the provider)" if found else ""),
            guard=still_binding,
        )
        return _bound(allocation, subscription, written, lease)
    # The row _plan read under this lock, or (a resumed plan) the one the plan names.
    subscription = allocation.subscription
    if look_up:
        # Planned as an order once, its answer lost, and another binding created the subscription since?
        orphan = _order_placed_before(gateway, allocation)
        if orphan is not None and orphan.id != subscription.provider_subscription_id:
            raise ProviderFinal(
                f"An earlier order of this binding went through at the provider as subscription {orphan.id} "
                f"({orphan.quantity} seats), and the seats would now also be added to subscription "
                f"{subscription.provider_subscription_id}: nothing more was sent. Have the provider cancel "
                "the extra subscription, then reject this binding."
            )
    steps = []
    if allocation.target_quantity != allocation.previous_quantity or line.kind == OrderLine.Kind.RENEWAL:
        steps.append(("quantity", {"quantity": allocation.target_quantity}))
    if allocation.target_term_end != allocation.previous_term_end:
        steps.append(("term", {"commitmentEndDate": allocation.target_term_end.isoformat()}))
    if allocation.target_status != allocation.previous_status:
        steps.append(("status", {"status": allocation.target_status}))
    _patch_steps(gateway, allocation, subscription, steps, look_up=look_up)
    subscription.quantity = allocation.target_quantity
    subscription.term_end = allocation.target_term_end
    subscription.status = allocation.target_status or subscription.status
    kind = "Renewed" if line.kind == OrderLine.Kind.RENEWAL else "Seats added"
    written = Change(
        "subscription",
        Subscription,
        {"quantity": subscription.quantity, "term_end": subscription.term_end, "status": subscription.status},
        f"{kind} by binding {allocation.pk}",
        pk=subscription.pk,
        guard=still_binding,
    )
    return _bound(allocation, subscription, written, lease)


def _patch_steps(gateway, allocation, subscription: Subscription, steps: list, *, look_up: bool) -> None:
    """Send each PATCH of the plan; when an earlier attempt may have sent some, skip those the provider shows done."""
    if look_up and steps:
        current = gateway.subscription_get(
            tenant_id=allocation.tenant.tenant_id, subscription_id=subscription.provider_subscription_id
        )
        steps = [(step, changes) for step, changes in steps if not _already(current, changes)]
    applied = []
    for step, changes in steps:
        try:
            gateway.subscription_patch(
                tenant_id=allocation.tenant.tenant_id,
                subscription_id=subscription.provider_subscription_id,
                request_id=_step_id(allocation, step),
                changes=changes,
            )
        except ProviderFinal as exc:
            if not applied:
                raise
            # Staff must know the seats are partly in use: giving them back would bind them twice.
            done = ", ".join(f"{name} {value}" for changes in applied for name, value in changes.items())
            raise ProviderFinal(
                f"{exc.message} The provider had already applied part of this binding ({done}): its seats are "
                "in use, so the binding cannot be given up; retry it once the refusal is dealt with.",
                exc.status_code,
            ) from exc
        applied.append(changes)


def _already(current: ProviderSubscription, changes: dict) -> bool:
    """Whether the provider already holds every absolute value of this PATCH."""
    held = {
        "quantity": current.quantity,
        "commitmentEndDate": current.commitment_end.isoformat() if current.commitment_end else None,
        "status": current.status,
    }
    return all(held.get(name) == value for name, value in changes.items())


def _bound(
    allocation: SeatAllocation, subscription: Subscription, subscription_change: Change, lease: Lease | None = None
) -> SeatAllocation:
    """Record the subscription and the bound allocation, each with its history row, in one write (then the
    lease's lock goes, in the same round trip)."""
    allocation.transition_to(Status.BOUND)
    allocation.bound_at = timezone.now()
    allocation.last_error = ""
    written = write_with_history(
        [
            subscription_change,
            Change(
                "allocation",
                SeatAllocation,
                {
                    "status": allocation.status,
                    "subscription_id": Ref("subscription"),
                    "bound_at": allocation.bound_at,
                    "last_error": "",
                },
                f"Bound: {subscription}",
                pk=allocation.pk,
                statuses=[Status.BINDING],
            ),
        ],
        now=allocation.bound_at,
        then_release=lease,
    )
    if written["allocation"] is None:
        # Only the holder of the subscription's lock moves a binding allocation: this is a bug, not a race.
        raise RuntimeError(f"Allocation {allocation.pk} stopped binding while its result was being recorded.")
    subscription.pk = written["subscription"]
    allocation.subscription = subscription
    return allocation


def _fail(allocation: SeatAllocation, message: str, *, final: bool) -> SeatAllocation:
    with transaction.atomic():
        allocation.transition_to(Status.REVERSAL_FAILED if allocation.status == Status.REVERSING else Status.FAILED)
        allocation.last_error = message
        allocation.last_error_final = final
        save_with_history(
            allocation,
            acting_user=None,
            reason=f"{allocation.get_status_display()}: {message}",
            fields=["status", "last_error", "last_error_final"],
        )
    logger.warning("allocation %s: %s: %s", allocation.pk, allocation.status, message)
    return allocation


def _defer(allocation: SeatAllocation, deferred: BindingDeferred) -> None:
    with transaction.atomic():
        if allocation.status == Status.BINDING:
            allocation.transition_to(Status.QUEUED)
        allocation.last_error = deferred.reason
        allocation.next_attempt_at = timezone.now() + timedelta(seconds=deferred.countdown)
        save_with_history(
            allocation,
            acting_user=None,
            reason=f"Will retry in {deferred.countdown:.0f}s: {deferred.reason}",
            fields=["status", "attempts", "first_sent_at", "last_error", "next_attempt_at"],
        )


# --- reversal (rule 10) ----------------------------------------------------------------------------


# The provider's status of a subscription in each of ours. Expired and disabled are the lifecycle after the
# term end (rule 8), which the provider follows from the term end set back: an expired subscription is in
# use there ("active"; "suspended" would be a drift), and a disabled one may show either.
PROVIDER_STATUS = {
    Subscription.Status.ACTIVE: "active",
    Subscription.Status.EXPIRED: "active",
    Subscription.Status.SUSPENDED: "suspended",
}


def _reverse_one(allocation: SeatAllocation) -> SeatAllocation:
    """Set the subscription back to what it was before the binding; the caller holds its subscription's lock.

    A new-seats binding is undone by suspending its subscription; added seats and renewals by setting
    the quantity and term end back. The values are absolute, and the provider is read first so that
    a step an earlier attempt already applied is not sent again.
    """
    allocation.attempts += 1
    allocation.next_attempt_at = None
    save_with_history(
        allocation,
        acting_user=None,
        reason=f"Reversing: attempt {allocation.attempts}",
        fields=["attempts", "next_attempt_at"],
    )
    blockers = reversal_blockers(allocation, queued_count=False)
    if blockers:
        return _fail(
            allocation,
            "A later binding changed this subscription since; reverse it first "
            f"(allocation {', '.join(str(pk) for pk in blockers)}).",
            final=True,
        )
    subscription = Subscription.objects.get(pk=allocation.subscription_id)
    # A drift found since the reversal was asked for: setting the old values back would overwrite it unseen.
    refusal = drift_refusal(subscription, "reversing this binding")
    if refusal:
        return _fail(allocation, refusal, final=True)
    if allocation.plan_action == PlanAction.ORDER:
        steps = [("reverse-status", {"status": "suspended"})]
    else:
        steps = [
            ("reverse-quantity", {"quantity": allocation.previous_quantity}),
            ("reverse-term", {"commitmentEndDate": allocation.previous_term_end.isoformat()}),
        ]
        was = PROVIDER_STATUS.get(allocation.previous_status)
        if allocation.previous_status != allocation.target_status and was:
            # The binding reactivated the subscription (a renewal, or seats replacing reversed ones).
            steps.append(("reverse-status", {"status": was}))
    try:
        _patch_steps(gateway_get(), allocation, subscription, steps, look_up=True)
    except ProviderFinal as exc:
        return _fail(allocation, exc.message, final=True)
    except ProviderTransient as exc:
        return _retry_later(allocation, exc)
    return _reversed(allocation, subscription)


def _reversed(allocation: SeatAllocation, subscription: Subscription) -> SeatAllocation:
    """Record the subscription as it was, the allocation reversed and its seats given back, in one transaction."""
    why = f"Binding {allocation.pk} reversed: {allocation.reversal_reason}"
    with transaction.atomic():
        subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
        if allocation.plan_action == PlanAction.ORDER:
            subscription.status = Subscription.Status.SUSPENDED
        else:
            subscription.quantity = allocation.previous_quantity
            subscription.term_end = allocation.previous_term_end
            subscription.status = allocation.previous_status or subscription.status
        save_with_history(subscription, acting_user=None, reason=why, fields=["quantity", "term_end", "status"])
        allocation.transition_to(Status.REVERSED)
        allocation.reversed_at = timezone.now()
        allocation.last_error = ""
        save_with_history(
            allocation,
            acting_user=None,
            reason=f"Reversed: {allocation.reversal_reason}",
            fields=["status", "reversed_at", "last_error"],
        )
        seats_release(
            allocation=allocation,
            acting_user=None,
            why=f"{allocation.quantity} seat(s) released: binding {allocation.pk} reversed",
        )
    return allocation


# --- recovery --------------------------------------------------------------------------------------


def allocation_orphans() -> list[int]:
    """Return the bindings and reversals a worker started and nobody carries on (PostgreSQL; none on SQLite).

    A worker holds its subscription's lock from before the claim until the result is recorded, so one
    started with no lock held was left by a worker that stopped, whenever that was.
    """
    return orphans() if connection.vendor == "postgresql" else []


def allocation_sweep(*, now=None) -> list[int]:
    """Return the allocations to enqueue again: queued or reversing ones whose message was lost, binding
    ones left behind by a worker that died."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.BINDING_STALE_SECONDS)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now - timedelta(seconds=DEFER_SECONDS))
    waiting = SeatAllocation.objects.filter(status__in=[Status.QUEUED, Status.REVERSING])
    # Under the rate limit a long queue takes its time: an allocation is lost only once the work
    # queued with it should have been done, else every sweep would send the whole backlog again.
    queued = waiting.filter(updated_at__lt=stale - timedelta(seconds=queue_drain_seconds(waiting=waiting)))
    queued = queued.filter(due)
    binding = SeatAllocation.objects.filter(status=Status.BINDING, updated_at__lt=stale)
    ids = list(queued.values_list("pk", flat=True)[:5000]) + list(binding.values_list("pk", flat=True)[:5000])
    for allocation_id in ids:
        allocation_enqueue(allocation_id)
    return ids
