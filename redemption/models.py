"""Where seats went: subscriptions on tenants and the allocations that bind seats to them."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from simple_history.models import HistoricalRecords

from config.guards import ServiceOnlyRow, local_day
from licensing.models import Agreement, OrderLine, Product
from redemption.gateway.base import PROVIDER_ID_MAX_LENGTH
from tenants.models import Tenant


class Subscription(ServiceOnlyRow, models.Model):
    service_only_message = (
        "Subscriptions change only through bindings, reversals and their lifecycle; they are never deleted here."
    )

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired (users keep access)"
        DISABLED = "disabled", "Disabled (admins only)"
        DEPROVISIONED = "deprovisioned", "Deprovisioned"
        SUSPENDED = "suspended", "Suspended"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="subscriptions")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="subscriptions")
    agreement = models.ForeignKey(Agreement, on_delete=models.PROTECT, related_name="subscriptions")
    quantity = models.PositiveIntegerField(default=0)
    term_end = models.DateField()
    provider_subscription_id = models.CharField(
        "provider subscription ID",
        max_length=PROVIDER_ID_MAX_LENGTH,
        null=True,
        blank=True,
        unique=True,
        editable=False,
        error_messages={"unique": "Another subscription already has this provider subscription ID."},
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["term_end", "id"]
        indexes = [
            models.Index(fields=["term_end", "status"], name="subscription_term_end_idx"),
            models.Index(fields=["status", "term_end"], name="subscription_status_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["agreement", "product", "tenant"],
                condition=~Q(status="deprovisioned"),
                name="subscription_one_per_agreement_product_tenant",
                violation_error_message=("This agreement already has a subscription for this product on this tenant."),
            ),
            models.CheckConstraint(
                condition=~Q(provider_subscription_id=""),
                name="subscription_provider_id_null_or_set",
                violation_error_message="A provider subscription ID is either unknown (empty) or set.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.part_number} x{self.quantity} on {self.tenant.default_domain}"


class InvalidTransition(ValidationError):
    """An allocation was asked to move to a status it cannot reach from where it is."""


class PlanAction(models.TextChoices):
    ORDER = "order", "Order new seats"
    PATCH = "patch", "Change the subscription"


class SeatAllocation(ServiceOnlyRow, models.Model):
    service_only_message = (
        "Seat allocations change only through the binding flow (request, approve, reject, retry, reverse); "
        "they are never edited or deleted here."
    )

    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        QUEUED = "queued", "Queued"
        BINDING = "binding", "Binding"
        BOUND = "bound", "Bound"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        REVERSING = "reversing", "Reversing"
        REVERSAL_FAILED = "reversal_failed", "Reversal failed"
        REVERSED = "reversed", "Reversed"

    # Where each status may go next; anything else is refused (on PostgreSQL by a trigger as well).
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.AWAITING_APPROVAL: frozenset({Status.QUEUED, Status.REJECTED}),
        Status.QUEUED: frozenset({Status.BINDING, Status.FAILED, Status.REJECTED}),
        Status.BINDING: frozenset({Status.BOUND, Status.FAILED, Status.QUEUED}),
        Status.FAILED: frozenset({Status.QUEUED, Status.REJECTED}),
        Status.BOUND: frozenset({Status.REVERSING}),
        Status.REVERSING: frozenset({Status.REVERSED, Status.REVERSAL_FAILED}),
        Status.REVERSAL_FAILED: frozenset({Status.REVERSING}),
        Status.REJECTED: frozenset(),
        Status.REVERSED: frozenset(),
    }
    # Statuses whose seats no longer count against the order line.
    RELEASED = frozenset({Status.REJECTED, Status.REVERSED})
    # Work a worker carries out (or will, after a countdown): bindings and reversals.
    IN_FLIGHT = frozenset({Status.QUEUED, Status.BINDING, Status.REVERSING})
    # The seats are (or may still be) at the provider.
    AT_PROVIDER = frozenset({Status.BOUND, Status.REVERSING, Status.REVERSAL_FAILED})
    # Waiting for a person: a supervisor's decision, or a retry after a failure.
    FAILURES = frozenset({Status.FAILED, Status.REVERSAL_FAILED})

    order_line = models.ForeignKey(OrderLine, on_delete=models.PROTECT, related_name="allocations")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="allocations")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, editable=False)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The form that asked for it: the same form sent twice (a double click, a page sent again) asks once.
    request_key = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="allocations", editable=False
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="seat_allocations_requested"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="seat_allocations_approved",
        editable=False,
    )
    reason = models.TextField(blank=True, help_text="Why, when the request needs one (e.g. an affinity override).")
    approval_reasons = models.JSONField(
        default=list, blank=True, editable=False, help_text="Why a supervisor must approve this binding."
    )
    attempts = models.PositiveIntegerField(default=0, editable=False)
    last_error = models.TextField(blank=True, editable=False)

    # --- Binding plan: the absolute values sent to the provider, stored before the first call (rule 6) ---
    plan_action = models.CharField(max_length=8, choices=PlanAction.choices, blank=True, editable=False)
    # Bumped when a plan is recomputed, so the provider sees a new MS-RequestId for a different body.
    plan_round = models.PositiveSmallIntegerField(default=0, editable=False)
    planned_on = models.DateField(null=True, blank=True, editable=False, help_text="The day the targets were set.")
    target_quantity = models.PositiveIntegerField(null=True, blank=True, editable=False)
    target_term_end = models.DateField(null=True, blank=True, editable=False)
    target_status = models.CharField(max_length=16, blank=True, editable=False)
    # What the subscription was before this binding: the reversal target (rule 10).
    previous_quantity = models.PositiveIntegerField(null=True, blank=True, editable=False)
    previous_term_end = models.DateField(null=True, blank=True, editable=False)
    previous_status = models.CharField(max_length=16, blank=True, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error_final = models.BooleanField(default=False, editable=False)
    # Set with the claim before the first provider write: from then on an order that may have gone
    # through is looked up (by the key in its friendlyName) before it is ever sent again.
    first_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    bound_at = models.DateTimeField(null=True, blank=True, editable=False)
    rejection_reason = models.TextField(blank=True, editable=False)
    reversal_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="seat_allocations_reversed",
        editable=False,
    )
    reversal_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    reversed_at = models.DateTimeField(null=True, blank=True, editable=False)
    reversal_reason = models.TextField(blank=True, editable=False)
    # --- end of binding plan ---

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()
    # Not stored: allocation_request returns a binding already asked for by the same form, marked so.
    repeated = False

    class Meta:
        # Staff call them bindings, on every page.
        verbose_name = "binding"
        verbose_name_plural = "bindings"
        ordering = ["-created_at"]
        permissions = [("supervisor", "Can approve, reject and reverse seat bindings (supervisor)")]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="allocation_status_idx"),
            models.Index(fields=["-created_at"], name="allocation_recent_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gt=0),
                name="allocation_quantity_positive",
                violation_error_message="An allocation binds at least one seat.",
            ),
            models.CheckConstraint(
                condition=~Q(status="bound") | Q(subscription__isnull=False),
                name="allocation_bound_has_subscription",
                violation_error_message="A bound allocation must name the subscription it bound.",
            ),
            models.CheckConstraint(
                condition=Q(approved_by__isnull=True) | ~Q(approved_by=models.F("requested_by")),
                name="allocation_not_self_approved",
                violation_error_message="Nobody approves their own binding request.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} seat(s) of {self.order_line} to {self.tenant}"

    @property
    def released_note(self) -> str:
        """Why a rejected or reversed binding's seats went back to its line, in one line ("" otherwise)."""
        if self.status == self.Status.REJECTED:
            return f"rejected {local_day(self.updated_at)}: {self.rejection_reason}"
        if self.status == self.Status.REVERSED:
            when = local_day(self.reversed_at or self.updated_at)
            return f"reversed by {self.reversal_requested_by} {when}: {self.reversal_reason}"
        return ""

    def can_transition_to(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.Status(self.status)]

    def transition_to(self, status: str) -> None:
        """Move to `status`, refusing moves the workflow does not allow."""
        if not self.can_transition_to(status):
            raise InvalidTransition(
                f"A {self.get_status_display().lower()} allocation cannot become {self.Status(status).label.lower()}.",
                code="invalid_transition",
            )
        self.status = status


# ---------------------------------------------------------------------------------------------------
# Renewals: the reminder schedule staff edit, and one record per reminder that the database holds
# to "at most once" (rules 8 and 9).
# ---------------------------------------------------------------------------------------------------


def validate_reminder_offsets(value: str) -> None:
    """Refuse anything but a comma-separated list of whole days between 1 and 366."""
    try:
        offsets = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValidationError("Offsets are whole numbers of days separated by commas, e.g. 90,60,30,7.") from None
    if not offsets:
        raise ValidationError("Give at least one offset, e.g. 90,60,30,7.")
    if any(not 1 <= offset <= 366 for offset in offsets):
        raise ValidationError("Each offset is between 1 and 366 days before the term end.")


def parse_reminder_offsets(value: str) -> list[int]:
    """Return the offsets as distinct whole days, largest first."""
    return sorted({int(part) for part in value.split(",") if part.strip()}, reverse=True)


class RenewalSchedule(models.Model):
    """When renewal reminders go out; a single row, created from the settings on first use."""

    offsets = models.CharField(
        max_length=100,
        validators=[validate_reminder_offsets],
        help_text="Days before each term end at which a reminder goes out, comma-separated, e.g. 90,60,30,7.",
    )
    send_hour = models.PositiveSmallIntegerField(
        "sending hour",
        help_text="Local hour (0-23, in the server's TIME_ZONE) from which each day's reminders go out.",
    )
    last_run_on = models.DateField(
        null=True, blank=True, editable=False, help_text="The last day whose scheduled run has started."
    )
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = "renewal reminder schedule"
        verbose_name_plural = "renewal reminder schedule"
        constraints = [
            models.CheckConstraint(
                condition=Q(id=1), name="renewalschedule_singleton", violation_error_message="There is one schedule."
            ),
            models.CheckConstraint(
                condition=Q(send_hour__lte=23),
                name="renewalschedule_hour_valid",
                violation_error_message="The sending hour is between 0 and 23.",
            ),
        ]

    def __str__(self) -> str:
        return f"Reminders {self.offsets} days before the term end, from {self.send_hour:02d}:00"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "RenewalSchedule":
        """Return the schedule, creating it from RENEWAL_REMINDER_OFFSETS and RENEWAL_REMINDER_HOUR if missing.

        Whoever happens to open it first is not its author: its history says it came from the settings.
        """
        schedule = cls.objects.filter(pk=1).first()
        if schedule is not None:
            return schedule
        schedule = cls(
            pk=1,
            offsets=",".join(str(offset) for offset in settings.RENEWAL_REMINDER_OFFSETS),
            send_hour=settings.RENEWAL_REMINDER_HOUR,
        )
        schedule._history_user = None
        schedule._change_reason = "Created from the settings RENEWAL_REMINDER_OFFSETS and RENEWAL_REMINDER_HOUR"
        try:
            with transaction.atomic():
                schedule.save(force_insert=True)
        except IntegrityError:
            # Created meanwhile by another process (a worker's daily run, another page).
            return cls.objects.get(pk=1)
        return schedule

    @property
    def offset_days(self) -> list[int]:
        return parse_reminder_offsets(self.offsets)


class ReminderDelivery(models.Model):
    """How one reminder's delivery went: claimed by one run, then sent or failed (and retried)."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (will be retried)"

    offset_days = models.PositiveSmallIntegerField("days before")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.SENDING)
    run_on = models.DateField(help_text="The day of the run that last claimed it.")
    claim_token = models.UUIDField(editable=False, help_text="The run that holds it; nobody else sends it.")
    claimed_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class RenewalReminder(ReminderDelivery):
    """A reminder to the customer (partner copied) that a subscription's term ends in `offset_days`."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="renewal_reminders")
    # The agreement's customer, kept here so that "one mail per customer per day" is one indexed lookup.
    customer = models.ForeignKey("tenants.Customer", on_delete=models.CASCADE, related_name="renewal_reminders")
    term_end = models.DateField()

    class Meta:
        ordering = ["-term_end", "-offset_days"]
        indexes = [
            models.Index(fields=["customer", "run_on"], name="renewalreminder_customer_day"),
            models.Index(fields=["claim_token"], name="renewalreminder_claim_idx"),
            models.Index(fields=["claimed_at"], condition=~Q(status="sent"), name="renewalreminder_unsent_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "term_end", "offset_days"],
                name="renewalreminder_once_per_term_offset",
                violation_error_message="This reminder was already sent for this term.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.offset_days}-day reminder for the term ending {self.term_end}"


class AnniversaryReminder(ReminderDelivery):
    """A staff reminder that an OVS agreement's anniversary order is due by `deadline`."""

    agreement = models.ForeignKey(Agreement, on_delete=models.CASCADE, related_name="anniversary_reminders")
    anniversary = models.DateField()
    deadline = models.DateField(help_text="30 days after the anniversary.")

    class Meta:
        ordering = ["-deadline", "-offset_days"]
        indexes = [models.Index(fields=["claim_token"], name="anniversaryreminder_claim_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["agreement", "anniversary", "offset_days"],
                name="anniversaryreminder_once_per_offset",
                violation_error_message="This anniversary reminder was already sent.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.offset_days}-day reminder of the anniversary order due {self.deadline}"


class RenewalSubscription(Subscription):
    """Subscriptions as the renewals desk sees them: ending soon, expired or disabled."""

    class Meta:
        proxy = True
        verbose_name = "renewal"
        verbose_name_plural = "renewals"


# The provisioning sandbox keeps its state in the database so web and worker processes agree.
from redemption.gateway.sandbox_models import SandboxRequest, SandboxSubscription, SandboxTenant  # noqa: E402
from redemption.reconciliation.models import Drift, ProviderCorrection, ReconciliationRun  # noqa: E402

__all__ = [
    "AnniversaryReminder",
    "Drift",
    "ProviderCorrection",
    "ReconciliationRun",
    "RenewalReminder",
    "RenewalSchedule",
    "RenewalSubscription",
    "SandboxRequest",
    "SandboxSubscription",
    "SandboxTenant",
    "SeatAllocation",
    "Subscription",
]
