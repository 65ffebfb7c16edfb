"""What was bought: Open agreements, products, orders and their lines."""

import os

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper
from simple_history.models import HistoricalRecords

from config.guards import GuardedRow, local_day
from tenants.models import Customer, Partner, Tenant
from tenants.validators import normalize_domain, validate_default_domain


def seats_requested_field(what: str) -> models.DateTimeField:
    return models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text=f"When seats of {what} were first requested; from then on what they were bought under is fixed.",
    )


class Program(models.TextChoices):
    OL = "ol", "Open License"
    OV = "ov", "Open Value"
    OVS = "ovs", "Open Value Subscription"


# Open License agreements run two years, Open Value and Open Value Subscription three.
PROGRAM_TERM_YEARS = {Program.OL: 2, Program.OV: 3, Program.OVS: 3}


class Agreement(GuardedRow, models.Model):
    fixed_fields = ("customer", "program", "number")
    service_fields = ("seats_requested_at",)
    # An agreement number belongs to exactly one customer, for good: its orders and tenants follow from it.
    identity_fields = ("customer",)

    program = models.CharField(max_length=3, choices=Program.choices)
    number = models.CharField(
        "agreement number", max_length=32, help_text="OL: the Authorization Number; OV/OVS: the agreement number."
    )
    authorization_number = models.CharField(max_length=32, blank=True)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.PROTECT,
        related_name="agreements",
        help_text="An agreement number belongs to exactly one customer, for good: set when the agreement is added.",
    )
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="agreements", help_text="Partner of record."
    )
    starts_on = models.DateField()
    ends_on = models.DateField()
    dates_from_orders = models.BooleanField(
        default=False,
        # Also in the table: the benchmarks write agreements with plain SQL.
        db_default=False,
        editable=False,
        help_text="The dates were derived from order dates: only order sheets named this agreement so far.",
    )
    osm_email = models.EmailField(
        "Online Services Manager email", blank=True, help_text="The customer admin who receives activation mail."
    )
    seats_requested_at = seats_requested_field("this agreement")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["program", "number"]
        indexes = [
            models.Index(fields=["number"], name="agreement_number_idx"),
            models.Index(fields=["authorization_number"], name="agreement_auth_number_idx"),
            models.Index(fields=["ends_on"], name="agreement_ends_on_idx"),
        ]
        constraints = [
            # In any case: "v1000001" is V1000001. Its index is also how imports find an agreement by number.
            models.UniqueConstraint(
                Upper("number"),
                F("program"),
                name="agreement_number_unique_in_program",
                violation_error_message="This agreement number already exists in this program.",
            ),
            models.CheckConstraint(
                condition=Q(starts_on__lt=F("ends_on")),
                name="agreement_starts_before_it_ends",
                violation_error_message="An agreement must start before it ends.",
            ),
            models.CheckConstraint(
                condition=~Q(number=""),
                name="agreement_number_not_blank",
                violation_error_message="An agreement needs its number.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_program_display()} {self.number}"

    def clean(self) -> None:
        super().clean()
        if self._state.adding and self.number:
            # Agreement numbers are letters and digits in capitals; "v1000001" typed is V1000001.
            self.number = self.number.strip().upper()
        if (
            self.number
            and Agreement.objects.filter(program=self.program, number__iexact=self.number).exclude(pk=self.pk).exists()
        ):
            raise ValidationError({"number": "This agreement number already exists in this program."})

    def fixed_message(self, since) -> str:
        return (
            f"Seats have been requested under this agreement since {local_day(since)}: its customer, program "
            "and number are fixed."
        )

    def identity_message(self, stored) -> str:
        owner = Customer.objects.filter(pk=stored["customer_id"]).first()
        return (
            f"Agreement {self.number} belongs to {owner}, for good: an agreement number belongs to exactly one "
            "customer, and its orders and tenants follow from it. Added to the wrong customer by mistake? Delete it "
            "while no order names it, and add it again."
        )

    @staticmethod
    def term_end_for(program: str, starts_on):
        """Return the end date of an agreement of `program` that starts on `starts_on`."""
        return starts_on + relativedelta(years=PROGRAM_TERM_YEARS[Program(program)])


class Product(GuardedRow, models.Model):
    # The part number is the offer the provider is sent for this product's seats; the term sets the end
    # date a renewal or added seats are bound to (rule 7), as previewed when they were requested.
    fixed_fields = ("part_number", "term_months")
    service_fields = ("seats_requested_at",)

    part_number = models.CharField(
        max_length=32, unique=True, error_messages={"unique": "A product with this part number already exists."}
    )
    description = models.CharField(max_length=255)
    term_months = models.PositiveSmallIntegerField(default=12)
    seats_requested_at = seats_requested_field("this product")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["part_number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(term_months__gt=0),
                name="product_term_positive",
                violation_error_message="A product's term must be at least one month.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.part_number} {self.description}"

    def fixed_message(self, since) -> str:
        return (
            f"Seats of this product have been requested since {local_day(since)}: its part number, the offer "
            "sent to the provider, and its term, which sets the end date they are bound to, are fixed."
        )


class Order(GuardedRow, models.Model):
    fixed_fields = ("agreement", "license_number")
    service_fields = ("seats_requested_at",)

    license_number = models.CharField(
        max_length=32,
        unique=True,
        help_text="For Open License: the License Number.",
        error_messages={"unique": "An order with this license number already exists."},
    )
    agreement = models.ForeignKey(Agreement, on_delete=models.PROTECT, related_name="orders")
    ordered_on = models.DateField()
    po_number = models.CharField("PO number", max_length=64, blank=True)
    suggested_tenant_domain = models.CharField(
        max_length=64, blank=True, help_text="Tenant domain the reseller supplied; confirmed when binding."
    )
    seats_requested_at = seats_requested_field("this order")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-ordered_on", "license_number"]
        indexes = [
            models.Index(fields=["-ordered_on", "license_number"], name="order_recent_idx"),
            # The work queue lists lines oldest order first.
            models.Index(fields=["ordered_on", "id"], name="order_age_idx"),
            models.Index(fields=["po_number"], name="order_po_number_idx"),
        ]

    def __str__(self) -> str:
        return self.license_number

    def clean(self) -> None:
        super().clean()
        if not self.suggested_tenant_domain:
            return
        # As the order sheet import holds it: a reseller's suggestion names a tenant of the order's own customer.
        self.suggested_tenant_domain = domain = normalize_domain(self.suggested_tenant_domain)
        try:
            validate_default_domain(domain)
        except ValidationError as exc:
            raise ValidationError({"suggested_tenant_domain": exc.messages}) from None
        if self.agreement_id is None:
            return
        owner = Tenant.objects.filter(default_domain=domain).select_related("customer").first()
        customer_id = Agreement.objects.filter(pk=self.agreement_id).values_list("customer_id", flat=True).first()
        if owner is not None and owner.customer_id != customer_id:
            raise ValidationError(
                {
                    "suggested_tenant_domain": f"Tenant {domain} belongs to customer {owner.customer}, not to this "
                    "order's customer: seats only go to a tenant of the agreement's own customer."
                }
            )

    def fixed_message(self, since) -> str:
        return (
            f"Seats of this order have been requested since {local_day(since)}: its agreement and license "
            "number are fixed."
        )


class OrderLine(GuardedRow, models.Model):
    # The coverage dates too: a binding's end date is the line's (rule 7), shown before it is confirmed.
    fixed_fields = ("order", "product", "kind", "line_number", "starts_on", "ends_on")
    service_fields = ("seats_allocated", "seats_requested_at")
    watched_fields = ("quantity",)

    class Kind(models.TextChoices):
        NEW = "new", "New"
        ADDITIONAL = "additional", "Additional"
        RENEWAL = "renewal", "Renewal"

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="lines")
    line_number = models.PositiveIntegerField()
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    quantity = models.PositiveIntegerField(help_text="Seats bought.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    starts_on = models.DateField("coverage start")
    ends_on = models.DateField("coverage end")
    # Seats held by this line's allocations (all but rejected and reversed ones), kept by the
    # redemption services under a row lock; the database refuses more than the line bought.
    seats_allocated = models.PositiveIntegerField(default=0, editable=False)
    seats_requested_at = seats_requested_field("this line")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["order", "line_number"]
        indexes = [
            models.Index(fields=["created_at", "id"], name="orderline_age_idx"),
            models.Index(fields=["kind", "created_at"], name="orderline_kind_age_idx"),
            models.Index(
                fields=["created_at"], condition=Q(seats_allocated__lt=F("quantity")), name="orderline_unbound_idx"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "line_number"],
                name="orderline_number_unique_in_order",
                violation_error_message="This order already has a line with this number.",
            ),
            models.CheckConstraint(
                condition=Q(quantity__gt=0),
                name="orderline_quantity_positive",
                violation_error_message="An order line must have at least one seat.",
            ),
            models.CheckConstraint(
                condition=Q(starts_on__lt=F("ends_on")),
                name="orderline_starts_before_it_ends",
                violation_error_message="Coverage must start before it ends.",
            ),
            models.CheckConstraint(
                condition=Q(seats_allocated__lte=F("quantity")),
                name="orderline_seats_allocated_within_quantity",
                violation_error_message="An order line's seats cannot be allocated more than once.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order.license_number} line {self.line_number}"

    @property
    def seats_left(self) -> int:
        return self.quantity - self.seats_allocated

    def fixed_message(self, since) -> str:
        return (
            f"Seats of this line have been requested since {local_day(since)}: its order, product, kind, "
            "line number and coverage dates are fixed."
        )

    def extra_guard_errors(self, stored) -> dict[str, str]:
        if not isinstance(self.quantity, int):
            return {}
        held, bought, since = stored["seats_allocated"], stored["quantity"], stored["seats_requested_at"]
        if self.quantity < held:
            return {
                "quantity": f"{held} seat(s) of this line are requested or bound: its quantity cannot go below {held}."
            }
        if since and self.quantity > bought:
            # More seats than the order bought could then be bound (rule 1 counts against this number).
            return {
                "quantity": f"Seats of this line have been requested since {local_day(since)}: its quantity can "
                f"go down to the {held} seat(s) held, not up from the {bought} the order bought."
            }
        return {}


class ImportFilesStorage(FileSystemStorage):
    """Uploaded sheets waiting for a worker, in settings.IMPORT_FILES_DIR (read when used)."""

    @property
    def base_location(self) -> str:
        return str(settings.IMPORT_FILES_DIR)

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)


import_files_storage = ImportFilesStorage()


class ImportJob(models.Model):
    """One import of a sheet: who brought which file when, what it changed, and its progress."""

    class Kind(models.TextChoices):
        ORDER_SHEET = "order_sheet", "Order sheet"
        AGREEMENTS = "agreements", "Agreements"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        READY = "ready", "Checked: waiting for confirmation"
        REJECTED = "rejected", "Rejected: nothing was written"
        DONE = "done", "Imported"
        FAILED = "failed", "Failed: nothing was written"

    ACTIVE = frozenset({Status.PENDING, Status.RUNNING})

    kind = models.CharField(max_length=16, choices=Kind.choices)
    file_name = models.CharField(max_length=255)
    file = models.FileField(storage=import_files_storage, upload_to="%Y/%m/", blank=True, editable=False)
    dry_run = models.BooleanField(
        default=False, help_text="Checking only: the import waits for a confirmation before it writes."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="import_jobs"
    )
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="import_jobs_confirmed",
        help_text="Who confirmed the checked import: its rows are written in their name.",
    )
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    new_count = models.PositiveIntegerField("new rows", default=0)
    updated_count = models.PositiveIntegerField("updated rows", default=0)
    unchanged_count = models.PositiveIntegerField("unchanged rows", default=0)
    error_count = models.PositiveIntegerField("rejected cells", default=0)
    errors = models.JSONField(default=list, blank=True, help_text="The first rejected cells: row, column, reason.")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When it was last handed to a worker.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["-created_at"], name="importjob_recent_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} import #{self.pk} ({self.file_name})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def error_lines(self) -> list[str]:
        """Return the listed errors as a person reads them; one without a row is about the whole file."""
        from licensing.cells import RowError

        return [str(RowError(e.get("row"), e["column"], e["message"])) for e in self.errors]
