from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from rangefilter.filters import DateRangeFilter

from config.admin_tools import BackOfficeListAdmin, BackOfficeModelAdmin, GuardedInline, address_id
from licensing.admin_import import SheetImportExportMixin
from licensing.models import Agreement, ImportJob, Order, OrderLine, Product
from licensing.resources import AgreementSheetResource, OrderResource, OrderSheetResource
from licensing.services import import_job_confirm, import_job_may_confirm, import_job_progress


class UnboundSeatsFilter(admin.SimpleListFilter):
    title = "seats"
    parameter_name = "unbound"

    def lookups(self, request, model_admin):
        return [("yes", "Not all bound"), ("no", "All allocated")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(seats_allocated__lt=F("quantity"))
        if self.value() == "no":
            return queryset.filter(seats_allocated__gte=F("quantity"))
        return queryset


class AgeFilter(admin.SimpleListFilter):
    """Rows by how long ago `field` was: today, the past 7 or 30 days, or longer ago."""

    title = "age"
    parameter_name = "age"
    field = "created_at"
    ranges = {"1d": ("Today", 1), "7d": ("Past 7 days", 7), "30d": ("Past 30 days", 30)}

    def since(self, days: int):
        """The moment `days` ago, as `field` holds it."""
        return timezone.now() - timedelta(days=days)

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.ranges.items()] + [("older30d", "Older than 30 days")]

    def queryset(self, request, queryset):
        if self.value() in self.ranges:
            return queryset.filter(**{f"{self.field}__gte": self.since(self.ranges[self.value()][1])})
        if self.value() == "older30d":
            return queryset.filter(**{f"{self.field}__lt": self.since(30)})
        return queryset


class OrderAgeFilter(AgeFilter):
    """An order line's age is its order's, in days, as the work queue's Age column and the landing page count it."""

    field = "order__ordered_on"
    ranges = {"1d": ("Today", 0), "7d": ("Past 7 days", 7), "30d": ("Past 30 days", 30)}

    def since(self, days: int):
        return timezone.localdate() - timedelta(days=days)


class EndingSoonFilter(admin.SimpleListFilter):
    """Filter on a date field by how soon it ends."""

    title = "ends"
    parameter_name = "ending"
    field = "ends_on"

    def lookups(self, request, model_admin):
        return [
            ("within30", "Within 30 days"),
            ("within60", "Within 60 days"),
            ("within90", "Within 90 days"),
            ("past", "Already ended"),
        ]

    def queryset(self, request, queryset):
        today = timezone.localdate()
        value = self.value() or ""
        if value in {"within30", "within60", "within90"}:
            return queryset.filter(
                **{f"{self.field}__gte": today, f"{self.field}__lte": today + timedelta(days=int(value[6:]))}
            )
        if value == "past":
            return queryset.filter(**{f"{self.field}__lt": today})
        return queryset


class OrderLineInline(GuardedInline):
    model = OrderLine
    fields = ["line_number", "product", "kind", "quantity", "seats_allocated", "starts_on", "ends_on"]
    readonly_fields = ["seats_allocated"]
    autocomplete_fields = ["product"]
    extra = 0
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product", "order")


@admin.register(Agreement)
class AgreementAdmin(SheetImportExportMixin, BackOfficeModelAdmin):
    import_resource_classes = [AgreementSheetResource]
    export_resource_classes = [AgreementSheetResource]
    list_display = ["number", "program", "authorization_number", "customer", "partner", "starts_on", "ends_on"]
    list_select_related = ["customer", "partner"]
    list_filter = ["program", EndingSoonFilter]
    search_fields = ["=number", "=authorization_number", "customer__name", "=partner__mpn_id", "partner__name"]
    autocomplete_fields = ["customer", "partner"]
    readonly_fields = ["seats_requested_at"]
    ordering = ["program", "number"]

    def save_model(self, request, obj, form, change):
        if {"starts_on", "ends_on"} & set(form.changed_data):
            # Dates a person set are the agreement's own: order dates no longer move them.
            obj.dates_from_orders = False
        super().save_model(request, obj, form, change)


@admin.register(Product)
class ProductAdmin(BackOfficeModelAdmin):
    list_display = ["part_number", "description", "term_months"]
    search_fields = ["part_number", "description"]
    ordering = ["part_number"]


@admin.register(Order)
class OrderAdmin(SheetImportExportMixin, BackOfficeModelAdmin):
    import_resource_classes = [OrderSheetResource]
    export_resource_classes = [OrderResource, OrderSheetResource]
    list_display = ["license_number", "ordered_on", "agreement", "customer", "partner", "po_number"]
    list_select_related = ["agreement__customer", "agreement__partner"]
    list_filter = ["agreement__program", ("ordered_on", DateRangeFilter)]
    search_fields = [
        "=license_number",
        "=agreement__number",
        "=agreement__authorization_number",
        "=po_number",
        "agreement__customer__name",
        "=agreement__partner__mpn_id",
        "=suggested_tenant_domain",
    ]
    autocomplete_fields = ["agreement"]
    readonly_fields = ["seats_requested_at"]
    inlines = [OrderLineInline]
    ordering = ["-ordered_on", "license_number"]

    @admin.display(ordering="agreement__customer__name")
    def customer(self, obj: Order):
        return obj.agreement.customer

    @admin.display(ordering="agreement__partner__name")
    def partner(self, obj: Order):
        return obj.agreement.partner


@admin.register(OrderLine)
class OrderLineAdmin(SheetImportExportMixin, BackOfficeModelAdmin):
    import_resource_classes = [OrderSheetResource]
    export_resource_classes = [OrderSheetResource]
    import_done_query = "unbound=yes"
    list_display = [
        "__str__",
        "kind",
        "product",
        "quantity",
        "seats_allocated",
        "program",
        "customer",
        "partner",
        "created_at",
    ]
    list_select_related = ["order__agreement__customer", "order__agreement__partner", "product"]
    list_filter = ["kind", "order__agreement__program", UnboundSeatsFilter, OrderAgeFilter]
    search_fields = [
        "=order__license_number",
        "=order__agreement__number",
        "=order__agreement__authorization_number",
        "order__agreement__customer__name",
        "=order__agreement__partner__mpn_id",
        "=product__part_number",
    ]
    autocomplete_fields = ["order", "product"]
    readonly_fields = ["seats_allocated", "seats_requested_at"]
    ordering = ["created_at", "id"]

    @admin.display(ordering="order__agreement__program")
    def program(self, obj: OrderLine) -> str:
        return obj.order.agreement.get_program_display()

    @admin.display(ordering="order__agreement__customer__name")
    def customer(self, obj: OrderLine):
        return obj.order.agreement.customer

    @admin.display(ordering="order__agreement__partner__name")
    def partner(self, obj: OrderLine):
        return obj.order.agreement.partner


@admin.register(ImportJob)
class ImportJobAdmin(BackOfficeListAdmin):
    list_display = [
        "__str__",
        "status",
        "progress",
        "new_count",
        "updated_count",
        "unchanged_count",
        "error_count",
        "created_by",
        "confirmed_by",
        "created_at",
        "finished_at",
    ]
    list_select_related = ["created_by", "confirmed_by"]
    list_filter = ["kind", "status"]
    search_fields = ["file_name", "=id"]
    ordering = ["-created_at"]
    change_form_template = "admin/licensing/importjob/change_form.html"

    @admin.display(description="progress")
    def progress(self, job: ImportJob) -> str:
        return import_job_progress(job=job).text(job.rows_total)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + ["progress"]

    def has_view_permission(self, request, obj=None) -> bool:
        # Whoever may import order sheets or agreements may follow the imports.
        user = request.user
        return super().has_view_permission(request, obj) or any(
            user.has_perm(f"licensing.add_{model}") for model in ("order", "orderline", "agreement")
        )

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request) -> bool:
        # Jobs come from uploads on the order, order line and agreement pages.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = get_object_or_404(ImportJob, pk=address_id(object_id, "import job"))
        error_lines = job.error_lines()
        progress = import_job_progress(job=job)
        extra_context = {
            **(extra_context or {}),
            "job": job,
            "progress": progress,
            "progress_text": progress.text(job.rows_total),
            "refresh": job.is_active,
            "can_confirm": job.status == ImportJob.Status.READY and import_job_may_confirm(user=request.user, job=job),
            "error_lines": error_lines,
            "errors_not_listed": max(job.error_count - len(error_lines), 0),
            "import_url": reverse(
                "admin:licensing_order_import"
                if job.kind == ImportJob.Kind.ORDER_SHEET
                else "admin:licensing_agreement_import"
            ),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<int:job_id>/confirm/",
                self.admin_site.admin_view(self.confirm_view),
                name="licensing_importjob_confirm",
            ),
            *super().get_urls(),
        ]

    def confirm_view(self, request: HttpRequest, job_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return _confirm(request, job_id)


def _confirm(request: HttpRequest, job_id: int):
    job = get_object_or_404(ImportJob, pk=job_id)
    if not import_job_may_confirm(user=request.user, job=job):
        raise PermissionDenied
    try:
        import_job_confirm(job_id=job.pk, acting_user=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Import #{job.pk} confirmed: a worker is writing it now.")
    return HttpResponseRedirect(reverse("admin:licensing_importjob_change", args=[job.pk]))
