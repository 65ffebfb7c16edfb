"""Where seats went: subscriptions on tenants and the allocations that bind seats to them."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from licensing.models import Agreement, OrderLine, Product
from tenants.models import Tenant


class Subscription(models.Model):
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
        max_length=64,
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


class SeatAllocation(models.Model):
    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        QUEUED = "queued", "Queued"
        BINDING = "binding", "Binding"
        BOUND = "bound", "Bound"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        REVERSED = "reversed", "Reversed"

    # Where each status may go next; anything else is refused.
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.AWAITING_APPROVAL: frozenset({Status.QUEUED, Status.REJECTED}),
        Status.QUEUED: frozenset({Status.BINDING, Status.FAILED, Status.REJECTED}),
        Status.BINDING: frozenset({Status.BOUND, Status.FAILED, Status.QUEUED}),
        Status.FAILED: frozenset({Status.QUEUED, Status.REJECTED}),
        Status.BOUND: frozenset({Status.REVERSED}),
        Status.REJECTED: frozenset(),
        Status.REVERSED: frozenset(),
    }
    # Statuses whose seats no longer count against the order line.
    RELEASED = frozenset({Status.REJECTED, Status.REVERSED})
    IN_FLIGHT = frozenset({Status.QUEUED, Status.BINDING})

    order_line = models.ForeignKey(OrderLine, on_delete=models.PROTECT, related_name="allocations")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="allocations")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, editable=False)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
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
    bound_at = models.DateTimeField(null=True, blank=True, editable=False)
    rejection_reason = models.TextField(blank=True, editable=False)
    reversed_at = models.DateTimeField(null=True, blank=True, editable=False)
    reversal_reason = models.TextField(blank=True, editable=False)
    # --- end of binding plan ---

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
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


# The provisioning sandbox keeps its state in the database so web and worker processes agree.
from redemption.gateway.sandbox_models import SandboxRequest, SandboxSubscription, SandboxTenant  # noqa: E402

__all__ = ["SandboxRequest", "SandboxSubscription", "SandboxTenant", "SeatAllocation", "Subscription"]
