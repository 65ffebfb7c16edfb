"""Reconciliation runs, the drifts they find, and the corrections pushed to the provider."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from licensing.models import OrderLine
from redemption.gateway.base import PROVIDER_ID_MAX_LENGTH
from tenants.models import Tenant


class ReconciliationRun(models.Model):
    """One pass over the tenants: when, who or what started it, how far it got and what it found."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Stopped: the next run resumes it"

    class Trigger(models.TextChoices):
        NIGHTLY = "nightly", "Nightly schedule"
        COMMAND = "command", "Command line"
        DESK = "desk", "Started from the desk"

    class Scope(models.TextChoices):
        ALL = "all", "Every tenant"
        TENANTS = "tenants", "Chosen tenants"

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    trigger = models.CharField(max_length=8, choices=Trigger.choices)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.ALL)
    tenant_ids = models.JSONField(default=list, blank=True, help_text="The chosen tenants' IDs.")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the worker running it.")
    finished_at = models.DateTimeField(null=True, blank=True)
    tenants_total = models.PositiveIntegerField(default=0)
    tenants_done = models.PositiveIntegerField(default=0)
    # Tenants are taken in id order: a run that stops is resumed after the last one it finished.
    cursor = models.BigIntegerField(default=0)
    new_count = models.PositiveIntegerField("new drifts", default=0)
    open_count = models.PositiveIntegerField("drifts open after the run", default=0)
    closed_count = models.PositiveIntegerField("drifts gone by themselves", default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope"],
                condition=Q(scope="all", status__in=["pending", "running"]),
                name="reconciliationrun_one_full_run_at_a_time",
                violation_error_message="A reconciliation of every tenant is already under way.",
            ),
        ]

    def __str__(self) -> str:
        # Its status is shown beside it where it can change (a page that refreshes), never frozen into its name.
        return f"Reconciliation #{self.pk}"

    @property
    def findings(self) -> str:
        return f"{self.open_count} drift(s) open ({self.new_count} new, {self.closed_count} resolved by themselves)"

    @property
    def summary(self) -> str:
        return f"{self.tenants_done} tenant(s) checked, {self.findings}"


class Drift(models.Model):
    """A difference between what was ordered, what we bound and what the provider holds, while it lasts."""

    class Kind(models.TextChoices):
        MISSING_AT_PROVIDER = "missing_at_provider", "Missing at the provider"
        UNKNOWN_AT_PROVIDER = "unknown_at_provider", "At the provider only"
        QUANTITY = "quantity", "Quantity differs"
        TERM_END = "term_end", "Term end differs"
        STATUS = "status", "Status differs"
        TENANT_UNKNOWN = "tenant_unknown", "Tenant unknown to the provider"
        SEATS_VS_ORDERS = "seats_vs_orders", "Seats differ from the bindings"
        UNBOUND_SEATS = "unbound_seats", "Seats left unbound"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Gone by itself"
        ACCEPTED = "accepted", "Provider's value accepted"
        PUSHED = "pushed", "Ours pushed to the provider"
        EXPLAINED = "explained", "Explained"

    # Kinds a person may settle by taking the provider's value, or by sending ours to the provider.
    ACCEPTABLE = frozenset({Kind.MISSING_AT_PROVIDER, Kind.QUANTITY, Kind.TERM_END, Kind.STATUS})
    PUSHABLE = frozenset({Kind.QUANTITY, Kind.TERM_END, Kind.STATUS})

    key = models.CharField(max_length=200, help_text="What the drift is about: one open drift per key.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="drifts")
    subscription = models.ForeignKey(
        "redemption.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="drifts"
    )
    order_line = models.ForeignKey(OrderLine, null=True, blank=True, on_delete=models.PROTECT, related_name="drifts")
    provider_subscription_id = models.CharField(
        "provider subscription ID", max_length=PROVIDER_ID_MAX_LENGTH, null=True, blank=True
    )
    offer_id = models.CharField("offer", max_length=32, blank=True)
    ours = models.JSONField(null=True, blank=True, help_text="Our value, or none where we hold nothing.")
    provider = models.JSONField(null=True, blank=True, help_text="The other side's value.")
    first_run = models.ForeignKey(ReconciliationRun, on_delete=models.PROTECT, related_name="drifts_found")
    last_run = models.ForeignKey(ReconciliationRun, on_delete=models.PROTECT, related_name="drifts_seen")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        indexes = [
            models.Index(fields=["status", "kind"], name="drift_status_kind_idx"),
            models.Index(fields=["tenant", "status"], name="drift_tenant_idx"),
            models.Index(fields=["-first_seen_at"], name="drift_recent_idx"),
            # A run looks up how a key was last settled: an explanation holds while nothing changes.
            models.Index(fields=["key", "closed_at"], name="drift_key_settled_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=Q(status="open"),
                name="drift_one_open_per_key",
                violation_error_message="This drift is already open.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.subject}"

    @property
    def subject(self) -> str:
        if self.order_line_id:
            return str(self.order_line)
        where = self.tenant.default_domain if self.tenant_id else "no tenant"
        return f"{self.offer_id or 'tenant'} on {where}"


class ProviderCorrection(models.Model):
    """Our value of a drifted subscription, sent to the provider by a worker once a supervisor approves it."""

    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        QUEUED = "queued", "Queued"
        DONE = "done", "Sent to the provider"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"

    drift = models.ForeignKey(Drift, on_delete=models.PROTECT, related_name="corrections")
    subscription = models.ForeignKey("redemption.Subscription", on_delete=models.PROTECT, related_name="corrections")
    changes = models.JSONField(help_text="The absolute values sent (quantity, commitmentEndDate or status).")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.AWAITING_APPROVAL)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    # Bumped when a refused correction is approved again: the provider sees a new request.
    round = models.PositiveSmallIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(approved_by__isnull=True) | ~Q(approved_by=models.F("requested_by")),
                name="providercorrection_not_self_approved",
                violation_error_message="Nobody approves their own correction.",
            ),
        ]

    def __str__(self) -> str:
        return f"Correction #{self.pk} of {self.subscription}"

    # The provider's field names, as staff read them.
    CHANGE_LABELS = {"quantity": "quantity", "commitmentEndDate": "term end", "status": "status"}

    @property
    def changes_text(self) -> str:
        """What is sent, in words: "quantity 10, term end 2027-06-30"."""
        changes = self.changes if isinstance(self.changes, dict) else {}
        return ", ".join(f"{self.CHANGE_LABELS.get(name, name)} {value}" for name, value in changes.items())
