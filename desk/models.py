"""What happens to staff sign-in: lockouts, unlocks, second factors set up. The audit trail of access."""

from axes.models import AccessAttempt
from django.conf import settings
from django.db import models
from django.utils import timezone


class SignInEvent(models.Model):
    """One event of a staff account's sign-in, with who caused it and why."""

    class Kind(models.TextChoices):
        LOCKED_OUT = "locked_out", "Locked out after failed sign-ins"
        UNLOCKED = "unlocked", "Unlocked"
        TWO_FACTOR_ENABLED = "2fa_enabled", "Two-factor sign-in set up"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    username = models.CharField(max_length=150, help_text="As typed at sign-in; the account may not exist.")
    ip_address = models.GenericIPAddressField("address", null=True, blank=True)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who did it; empty when the system did.",
    )
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["-at"], name="signinevent_recent_idx"),
            models.Index(fields=["username", "-at"], name="signinevent_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.username or self.ip_address}"


class LockedAccount(AccessAttempt):
    """Failed sign-ins as django-axes counts them, seen as the accounts and addresses they lock."""

    class Meta:
        proxy = True
        verbose_name = "failed sign-ins"
        verbose_name_plural = "locked accounts and failed sign-ins"


class BindingBatch(models.Model):
    """Bindings requested together on one screen: the page that follows them can be reopened from a link."""

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    allocations = models.ManyToManyField("redemption.SeatAllocation", related_name="batches")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "binding batches"

    def __str__(self) -> str:
        return f"Batch #{self.pk} of {self.created_by}"
