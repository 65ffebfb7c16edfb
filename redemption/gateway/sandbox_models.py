"""Database state of the provisioning gateway: what the pretend provider holds, and the provider-call budget."""

from django.db import models


class SandboxTenant(models.Model):
    """A tenant as the sandbox provider knows it."""

    tenant_id = models.UUIDField(primary_key=True)
    domain = models.CharField(max_length=64)
    company_name = models.CharField(max_length=255)

    class Meta:
        app_label = "redemption"
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain


class SandboxSubscription(models.Model):
    """A subscription as the sandbox provider holds it."""

    id = models.CharField(primary_key=True, max_length=64)
    tenant = models.ForeignKey(SandboxTenant, on_delete=models.CASCADE, related_name="subscriptions")
    offer_id = models.CharField(max_length=32)
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, default="active")
    commitment_end = models.DateField()
    friendly_name = models.CharField(max_length=255, blank=True)
    partner_id = models.CharField(max_length=32, blank=True)

    class Meta:
        app_label = "redemption"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.offer_id} x{self.quantity}"

    def as_item(self) -> dict:
        return {
            "id": self.id,
            "offerId": self.offer_id,
            "quantity": self.quantity,
            "status": self.status,
            "commitmentEndDate": self.commitment_end.isoformat(),
            "friendlyName": self.friendly_name,
        }


class SandboxRequest(models.Model):
    """A write the sandbox already answered: the same MS-RequestId gets the same answer."""

    request_id = models.UUIDField(primary_key=True)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "redemption"

    def __str__(self) -> str:
        return str(self.request_id)


class CallBudget(models.Model):
    """The installation's provider-call schedule when no Redis holds it (redemption.gateway.budget)."""

    name = models.CharField(primary_key=True, max_length=32)
    # Seconds since the epoch on the database's clock: the next free slot, and no call before paused_until.
    tat = models.FloatField(default=0)
    paused_until = models.FloatField(default=0)
    # After a 429 at the configured rate: the rate gone at from cut_at on (calls/s; 0: none), won back over time.
    cut_rate = models.FloatField(default=0)
    cut_at = models.FloatField(default=0)

    class Meta:
        app_label = "redemption"

    def __str__(self) -> str:
        return self.name
