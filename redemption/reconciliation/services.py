"""A person settles a drift: take the provider's value, push ours to the provider, or explain it."""

import logging
from datetime import date, datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from config.history import reason_text, save_with_history
from config.queueing import enqueue_on_commit
from redemption.gateway import ProviderError, ProviderTransient, budget_get, gateway_get, request_id_for
from redemption.models import Drift, ProviderCorrection, SeatAllocation, Subscription
from redemption.statements import slot_unlock, subscription_lock

logger = logging.getLogger(__name__)
Kind = Drift.Kind
Status = SeatAllocation.Status
Correction = ProviderCorrection
# A queued correction nobody has tried for this long lost its message (a flushed broker, a worker host
# that died): longer than the longest wait between two attempts (correction_apply_task's backoff).
CORRECTION_STALE = timedelta(minutes=15)


def _is_supervisor(user) -> bool:
    return bool(user and user.is_active and user.has_perm("redemption.supervisor"))


def _can_settle(user) -> bool:
    return bool(user and user.is_active and user.has_perm("redemption.change_drift"))


def _may_settle(user) -> None:
    if not _can_settle(user):
        raise ValidationError("You may look at drift but not settle it.", code="perm")


def drift_settle_permitted(*, user, how: str) -> bool:
    """Whether the user holds the permission settling a drift this way needs (the provider's value: a supervisor)."""
    if how == "accept":
        return _can_settle(user) and _is_supervisor(user)
    return _can_settle(user)


def _open(drift: Drift) -> Drift:
    drift = Drift.objects.select_for_update(of=("self",)).select_related("subscription", "tenant").get(pk=drift.pk)
    if drift.status != Drift.Status.OPEN:
        raise ValidationError(f"This drift is already settled ({drift.get_status_display().lower()}).", code="settled")
    return drift


def _no_correction_on_its_way(drift: Drift) -> None:
    """Refuse a second way of settling a drift while a correction of it is waiting or on its way (read under its lock).

    Taking the provider's value meanwhile would be undone by the correction; explaining it would close it
    while our value still goes to the provider.
    """
    waiting = drift.corrections.exclude(status__in=[Correction.Status.REJECTED, Correction.Status.DONE]).first()
    if waiting is not None:
        raise ValidationError(
            f"A correction of this drift is already on its way ({waiting.get_status_display().lower()}): "
            "wait for it, or have a supervisor reject it first.",
            code="duplicate",
        )


def _no_binding_unfinished(drift: Drift) -> None:
    """Refuse to take the provider's value while a binding of the subscription may have applied part of its change.

    What the provider shows may then be that binding's own step: taken as ours, the binding would plan
    its seats on top of it and send them again. It is settled once the binding is bound, retried or rejected.
    """
    unfinished = (
        SeatAllocation.objects.filter(subscription_id=drift.subscription_id)
        .filter(
            Q(status__in=[Status.BINDING, Status.FAILED, Status.REVERSING, Status.REVERSAL_FAILED])
            | Q(status=Status.QUEUED, attempts__gt=0)
        )
        .order_by("pk")
        .first()
    )
    if unfinished is not None:
        raise ValidationError(
            f"The binding {unfinished.pk} of this subscription is not finished "
            f"({unfinished.get_status_display().lower()}): what the provider shows may be its own change. "
            "Let it finish, or retry or reject it, then look again.",
            code="binding_unfinished",
        )


def _reason(reason: str) -> str:
    reason = reason_text(reason)
    if not reason:
        raise ValidationError("Say why: it stays with the drift and the records it changes.", code="reason_required")
    return reason


def _settle(drift: Drift, status: str, acting_user, reason: str) -> None:
    drift.status = status
    drift.resolved_by = acting_user
    drift.resolution_reason = reason
    drift.closed_at = timezone.now()
    drift.save(update_fields=["status", "resolved_by", "resolution_reason", "closed_at"])


def drift_accept(*, drift: Drift, acting_user, reason: str) -> Drift:
    """Take the provider's value into our subscription, with the reason in its history."""
    _may_settle(acting_user)
    reason = _reason(reason)
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can change a subscription to the provider's value.", code="perm")
    # The subscription's lock, as a binding of it holds from its plan to its result: a binding under way
    # finishes first (and the value taken is written after its result), or waits and plans from this one.
    key = subscription_lock(subscription_id=drift.subscription_id) if drift.subscription_id else None
    try:
        return _accept(drift, acting_user, reason)
    finally:
        if key is not None:
            slot_unlock(key)


def _accept(drift: Drift, acting_user, reason: str) -> Drift:
    with transaction.atomic():
        drift = _open(drift)
        _no_correction_on_its_way(drift)
        _no_binding_unfinished(drift)
        if drift.kind not in Drift.ACCEPTABLE or drift.subscription is None:
            raise ValidationError("There is no provider value to take for this drift: explain it.", code="kind")
        subscription = Subscription.objects.select_for_update().get(pk=drift.subscription_id)
        if drift.kind == Kind.QUANTITY:
            subscription.quantity, fields = int(drift.provider), ["quantity"]
        elif drift.kind == Kind.TERM_END:
            subscription.term_end, fields = date.fromisoformat(drift.provider), ["term_end"]
            lapsed = subscription.status in (Subscription.Status.EXPIRED, Subscription.Status.DISABLED)
            if lapsed and subscription.term_end >= timezone.localdate():
                # Renewed at the provider (in a portal): its term runs again, as after a renewal bound here.
                subscription.status = Subscription.Status.ACTIVE
                fields.append("status")
        elif drift.kind == Kind.STATUS:
            suspended = drift.provider == "suspended"
            subscription.status = Subscription.Status.SUSPENDED if suspended else Subscription.Status.ACTIVE
            fields = ["status"]
        else:  # missing at the provider: it is gone there
            subscription.status, fields = Subscription.Status.DEPROVISIONED, ["status"]
        save_with_history(
            subscription,
            acting_user=acting_user,
            reason=f"Provider's value accepted ({drift.get_kind_display().lower()}): {reason}",
            fields=fields,
        )
        _settle(drift, Drift.Status.ACCEPTED, acting_user, reason)
    return drift


def drift_explain(*, drift: Drift, acting_user, reason: str) -> Drift:
    """Settle a drift with a written explanation; nothing else changes."""
    _may_settle(acting_user)
    reason = _reason(reason)
    with transaction.atomic():
        drift = _open(drift)
        _no_correction_on_its_way(drift)
        _settle(drift, Drift.Status.EXPLAINED, acting_user, reason)
    return drift


def drift_push(*, drift: Drift, acting_user, reason: str) -> Correction:
    """Ask for our value to be sent to the provider: a correction a supervisor approves, then a worker applies."""
    _may_settle(acting_user)
    reason = _reason(reason)
    with transaction.atomic():
        drift = _open(drift)
        if drift.kind not in Drift.PUSHABLE or drift.subscription is None:
            raise ValidationError("Only a quantity, term end or status can be pushed to the provider.", code="kind")
        _no_correction_on_its_way(drift)
        subscription = drift.subscription
        field = {Kind.QUANTITY: "quantity", Kind.TERM_END: "commitmentEndDate", Kind.STATUS: "status"}[drift.kind]
        changes = {field: _pushed_value(subscription)[field]}
        return Correction.objects.create(
            drift=drift, subscription=subscription, changes=changes, requested_by=acting_user, reason=reason
        )


def correction_approve(*, correction: Correction, acting_user) -> Correction:
    """Approve a correction (a second person, a supervisor) and queue it for a worker."""
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can approve a correction.", code="perm")
    with transaction.atomic():
        correction = Correction.objects.select_for_update().get(pk=correction.pk)
        if correction.requested_by_id == acting_user.pk:
            raise ValidationError("You asked for this correction: another supervisor must approve it.", code="own")
        if correction.status not in (Correction.Status.AWAITING_APPROVAL, Correction.Status.FAILED):
            raise ValidationError(f"This correction is {correction.get_status_display().lower()}.", code="status")
        if correction.status == Correction.Status.FAILED:
            correction.round += 1
        correction.status = Correction.Status.QUEUED
        # Whoever lets it go (again, after a failure) answers for it: the drift names them once it is sent.
        correction.approved_by = acting_user
        correction.attempts = 0
        correction.save(update_fields=["status", "approved_by", "attempts", "round", "updated_at"])
        from redemption.tasks import correction_apply_task

        enqueue_on_commit(correction_apply_task, correction.pk)
    return correction


def correction_reject(*, correction: Correction, acting_user, reason: str) -> Correction:
    reason = _reason(reason)
    if not _is_supervisor(acting_user):
        raise ValidationError("Only a supervisor can reject a correction.", code="perm")
    with transaction.atomic():
        correction = Correction.objects.select_for_update().get(pk=correction.pk)
        if correction.status not in (Correction.Status.AWAITING_APPROVAL, Correction.Status.FAILED):
            raise ValidationError(f"This correction is {correction.get_status_display().lower()}.", code="status")
        correction.status = Correction.Status.REJECTED
        correction.last_error = f"Rejected by {acting_user}: {reason}"
        correction.save(update_fields=["status", "last_error", "updated_at"])
    return correction


def correction_apply(*, correction_id: int, last_attempt: bool = False) -> Correction:
    """Send the correction's absolute values to the provider (in order with the subscription's bindings).

    The request ID is derived from the correction's own key, so a retry of the same correction is one
    call for the provider. Raise ProviderTransient to be retried later; on the last attempt, fail instead.
    """
    correction = Correction.objects.select_related("subscription__tenant", "drift").get(pk=correction_id)
    if correction.status != Correction.Status.QUEUED:
        return correction
    budget = budget_get()
    # The call's slot is waited for before the subscription's lock, as a binding does.
    budget.prepay()
    key = subscription_lock(subscription_id=correction.subscription_id)
    try:
        # Under the lock: a second message for the same correction (the sweep's) finds it settled.
        tried = Correction.objects.filter(pk=correction.pk, status=Correction.Status.QUEUED).update(
            attempts=F("attempts") + 1, updated_at=timezone.now()
        )
        if not tried:
            return Correction.objects.get(pk=correction.pk)
        subscription = Subscription.objects.select_related("tenant").get(pk=correction.subscription_id)
        stale = _stale(correction, subscription)
        if stale:
            # A binding, an accepted value or a run since: sending the value asked for would undo it.
            Correction.objects.filter(pk=correction.pk).update(
                status=Correction.Status.FAILED, last_error=stale, updated_at=timezone.now()
            )
            return Correction.objects.get(pk=correction.pk)
        try:
            gateway_get().subscription_patch(
                tenant_id=subscription.tenant.tenant_id,
                subscription_id=subscription.provider_subscription_id,
                request_id=request_id_for(correction.idempotency_key, f"correction:{correction.round}"),
                changes=correction.changes,
            )
        except ProviderTransient as exc:
            if not last_attempt:
                raise
            Correction.objects.filter(pk=correction.pk).update(
                status=Correction.Status.FAILED, last_error=f"Gave up: {exc.message}", updated_at=timezone.now()
            )
            return Correction.objects.get(pk=correction.pk)
        except ProviderError as exc:
            Correction.objects.filter(pk=correction.pk).update(
                status=Correction.Status.FAILED, last_error=exc.message, updated_at=timezone.now()
            )
            return Correction.objects.get(pk=correction.pk)
        with transaction.atomic():
            Correction.objects.filter(pk=correction.pk).update(
                status=Correction.Status.DONE, done_at=timezone.now(), last_error="", updated_at=timezone.now()
            )
            drift = Drift.objects.select_for_update().get(pk=correction.drift_id)
            if drift.status == Drift.Status.OPEN:
                _settle(drift, Drift.Status.PUSHED, correction.approved_by, correction.reason)
    finally:
        budget.prepaid_drop()
        if key is not None:
            slot_unlock(key)
    return Correction.objects.get(pk=correction.pk)


def _pushed_value(subscription: Subscription) -> dict:
    """Return what a correction of each kind sends of our subscription: our value, as the provider takes it."""
    return {
        "quantity": subscription.quantity,
        "commitmentEndDate": subscription.term_end.isoformat(),
        "status": "suspended" if subscription.status == Subscription.Status.SUSPENDED else "active",
    }


def _stale(correction: Correction, subscription: Subscription) -> str:
    """Return why the correction may no longer be sent ('' if it may), read under the subscription's lock."""
    drift = Drift.objects.get(pk=correction.drift_id)
    if drift.status != Drift.Status.OPEN:
        return (
            f"Its drift was settled meanwhile ({drift.get_status_display().lower()}): nothing was sent. "
            "Reject this correction; the next reconciliation run compares again."
        )
    ours = _pushed_value(subscription)
    changed = {name: ours[name] for name, value in correction.changes.items() if ours.get(name) != value}
    if changed:
        held = ", ".join(f"{name} {value}" for name, value in changed.items())
        return (
            f"We hold {held} now, not the value this correction was asked to send (a binding or an accepted "
            "value since): nothing was sent. Reject it; the next reconciliation run compares again."
        )
    return ""


def correction_sweep(*, now: datetime | None = None) -> list[int]:
    """Queue again the approved corrections whose message was lost; return their ids."""
    from redemption.tasks import correction_apply_task

    now = now or timezone.now()
    lost = Correction.objects.filter(status=Correction.Status.QUEUED, updated_at__lt=now - CORRECTION_STALE)
    ids = list(lost.order_by("pk").values_list("pk", flat=True)[:1000])
    for correction_id in ids:
        enqueue_on_commit(correction_apply_task, correction_id)
    return ids
