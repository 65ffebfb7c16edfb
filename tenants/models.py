"""Who: partners (resellers), their customers and the customers' Office 365 tenants."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from simple_history.models import HistoricalRecords

from config.guards import GuardedRow, local_day
from tenants.names import name_key
from tenants.validators import DEFAULT_DOMAIN_REGEX, validate_default_domain


class Partner(models.Model):
    name = models.CharField(max_length=255)
    mpn_id = models.CharField(
        "MPN ID", max_length=32, unique=True, error_messages={"unique": "A partner with this MPN ID already exists."}
    )
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(Lower("name"), name="partner_name_lower_idx")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(mpn_id=""),
                name="partner_mpn_id_not_blank",
                violation_error_message="A partner needs its MPN ID.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (MPN {self.mpn_id})"


class Customer(models.Model):
    name = models.CharField(max_length=255, help_text="Compared without regard to case and surrounding spaces.")
    # The name as compared (tenants.names.name_key), kept by save(); what makes two names the same customer.
    # Longer than the name: case folding can turn one character into three ("ΐ").
    name_key = models.CharField(max_length=765, editable=False)
    email = models.EmailField(help_text="Contact email; mandatory on Open orders.")
    country = models.CharField(max_length=100, blank=True)
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="customers", help_text="Partner of record."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name_key"],
                name="customer_name_unique_ci",
                # "unique" on a one-field constraint: validation files the error under name_key, and
                # validate_constraints() then under the name a form shows.
                violation_error_code="unique",
                violation_error_message="A customer with this name already exists (names ignore case).",
            ),
            models.CheckConstraint(
                condition=~models.Q(name=""),
                name="customer_name_not_blank",
                violation_error_message="A customer needs a name.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.name = (self.name or "").strip()
        self.name_key = name_key(self.name)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "name" in update_fields and "name_key" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "name_key"]
        super().save(*args, **kwargs)

    def validate_constraints(self, exclude=None) -> None:
        # A form validates only the fields it shows: the name stands for its key, and a duplicate is an
        # error on the name, not a database error at save.
        self.name_key = name_key(self.name)
        exclude = set(exclude or ())
        if "name" not in exclude:
            exclude.discard("name_key")
        try:
            super().validate_constraints(exclude=exclude)
        except ValidationError as error:
            errors = error.error_dict
            if "name_key" in errors:
                errors.setdefault("name", []).extend(errors.pop("name_key"))
            raise ValidationError(errors) from None


VERIFIED_FIELDS = ("verified_at", "verified_by", "verified_tenant_id", "verified_domain", "verified_display_name")


class Tenant(GuardedRow, models.Model):
    # Who the tenant is: fixed once seats were requested for it (config.guards).
    fixed_fields = ("customer", "tenant_id", "default_domain")
    service_fields = ("seats_requested_at", *VERIFIED_FIELDS)

    tenant_id = models.UUIDField(
        "tenant ID", unique=True, error_messages={"unique": "A tenant with this tenant ID is already recorded."}
    )
    default_domain = models.CharField(
        max_length=64,
        unique=True,
        error_messages={"unique": "A tenant with this default domain is already recorded."},
        validators=[validate_default_domain],
        help_text="name.onmicrosoft.com; never changes.",
    )
    display_name = models.CharField(max_length=255, blank=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="tenants")
    verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    verified_tenant_id = models.UUIDField("provider-reported tenant ID", null=True, blank=True, editable=False)
    verified_domain = models.CharField("provider-reported domain", max_length=64, blank=True, editable=False)
    verified_display_name = models.CharField(
        "provider-reported company name", max_length=255, blank=True, editable=False
    )
    seats_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When seats were first requested for this tenant; from then on its identity is fixed.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["default_domain"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(default_domain__regex=DEFAULT_DOMAIN_REGEX),
                name="tenant_default_domain_format",
                violation_error_message=(
                    "A default domain is name.onmicrosoft.com, with 1 to 27 lowercase letters and digits."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.default_domain

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    def fixed_message(self, since) -> str:
        return (
            f"Seats have been requested for this tenant since {local_day(since)}: its customer, tenant ID and "
            "default domain are fixed."
        )

    def fields_written_with(self, stored, writing) -> list[str]:
        # A new identity is not the one the provider confirmed: it must be confirmed again.
        if self._changed(stored, [name for name in self.fixed_fields if name in writing]):
            self.verified_at = self.verified_by = self.verified_tenant_id = None
            self.verified_domain = self.verified_display_name = ""
            return list(VERIFIED_FIELDS)
        return []
