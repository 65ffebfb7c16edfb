"""The renewals desk: what is about to lapse or has lapsed, each subscription's reminders, the schedule."""

from datetime import timedelta

from django import forms
from django.contrib import admin
from django.db.models import F, OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from config.admin_tools import BackOfficeListAdmin, BackOfficeModelAdmin, ReadOnlyAdminMixin
from config.history import REASON_LENGTH, save_with_history
from licensing.admin_import import SafeExportMixin
from licensing.models import OrderLine
from redemption.models import (
    AnniversaryReminder,
    RenewalReminder,
    RenewalSchedule,
    RenewalSubscription,
    Subscription,
)
from redemption.resources import SubscriptionResource

RENEWAL_HORIZON_DAYS = 90


def renewals_queryset(queryset: QuerySet, today) -> QuerySet:
    """Narrow `queryset` to the renewals desk: active ending within 90 days (or already ended), expired, disabled."""
    return queryset.filter(
        Q(status=Subscription.Status.ACTIVE, term_end__lte=today + timedelta(days=RENEWAL_HORIZON_DAYS))
        | Q(status__in=[Subscription.Status.EXPIRED, Subscription.Status.DISABLED])
    )


class RenewalWindowFilter(admin.SimpleListFilter):
    title = "renewal"
    parameter_name = "window"

    def lookups(self, request, model_admin):
        return [
            ("within30", "Ending within 30 days"),
            ("within60", "Ending within 60 days"),
            ("within90", "Ending within 90 days"),
            ("expired", "Expired (users keep access)"),
            ("disabled", "Disabled (admins only)"),
        ]

    def queryset(self, request, queryset):
        value = self.value() or ""
        if value.startswith("within") and value[6:] in {"30", "60", "90"}:
            today = timezone.localdate()
            return queryset.filter(
                status=Subscription.Status.ACTIVE,
                term_end__gte=today,
                term_end__lte=today + timedelta(days=int(value[6:])),
            )
        if value in {Subscription.Status.EXPIRED, Subscription.Status.DISABLED}:
            return queryset.filter(status=value)
        return queryset


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class RenewalReminderInline(ReadOnlyInline):
    model = RenewalReminder
    fk_name = "subscription"
    fields = ["term_end", "offset_days", "status", "run_on", "attempts", "sent_at", "last_error"]
    readonly_fields = fields
    ordering = ["-term_end", "-offset_days"]
    verbose_name_plural = "reminder history"


@admin.register(RenewalSubscription)
class RenewalAdmin(ReadOnlyAdminMixin, SafeExportMixin, BackOfficeListAdmin):
    """Subscriptions to renew; an export of this view contains exactly its filtered queryset."""

    export_resource_classes = [SubscriptionResource]

    list_display = [
        "customer",
        "tenant_domain",
        "product_part",
        "quantity",
        "term_end",
        "days_left",
        "status",
        "agreement",
        "partner",
        "last_reminder",
        "renewal_in_hand",
    ]
    list_select_related = ["tenant__customer", "product", "agreement__partner"]
    list_filter = [RenewalWindowFilter, "agreement__program", "agreement__partner"]
    search_fields = [
        "=provider_subscription_id",
        "tenant__default_domain",
        "=tenant__tenant_id",
        "=agreement__number",
        "tenant__customer__name",
        "=agreement__partner__mpn_id",
        "=product__part_number",
    ]
    fields = [
        "customer",
        "reminders_to",
        "tenant",
        "product",
        "agreement",
        "quantity",
        "term_end",
        "status",
        "provider_subscription_id",
    ]
    readonly_fields = fields
    inlines = [RenewalReminderInline]
    ordering = ["term_end", "id"]
    list_per_page = 100

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The renewal order line already imported for the subscription, with seats still to bind.
        waiting = OrderLine.objects.filter(
            order__agreement=OuterRef("agreement"),
            product=OuterRef("product"),
            kind=OrderLine.Kind.RENEWAL,
            seats_allocated__lt=F("quantity"),
        ).order_by("created_at", "pk")
        # The latest reminder sent for the current term (the smallest offset goes out last).
        reminded = RenewalReminder.objects.filter(
            subscription=OuterRef("pk"), term_end=OuterRef("term_end"), status=RenewalReminder.Status.SENT
        ).order_by("offset_days")
        queryset = (
            super()
            .get_queryset(request)
            .annotate(
                renewal_order_id=Subquery(waiting.values("order_id")[:1]),
                renewal_license=Subquery(waiting.values("order__license_number")[:1]),
                reminded_offset=Subquery(reminded.values("offset_days")[:1]),
                reminded_at=Subquery(reminded.values("sent_at")[:1]),
            )
        )
        return renewals_queryset(queryset, timezone.localdate())

    @admin.display(description="renewal order")
    def renewal_in_hand(self, obj: Subscription):
        if not obj.renewal_order_id:
            return "—"
        url = reverse("admin:licensing_order_bind", args=[obj.renewal_order_id])
        return format_html('<a href="{}">{}: bind</a>', url, obj.renewal_license)

    @admin.display(ordering="tenant__customer__name")
    def customer(self, obj: Subscription):
        return obj.tenant.customer

    @admin.display(description="reminders go to")
    def reminders_to(self, obj: Subscription) -> str:
        # As renewals.py sends them: to the agreement's customer, its partner of record copied.
        agreement = obj.agreement
        copied = f"; copy to {agreement.partner.email} ({agreement.partner})" if agreement.partner.email else ""
        return f"{agreement.customer.email} ({agreement.customer}){copied}"

    @admin.display(description="last reminder")
    def last_reminder(self, obj: Subscription) -> str:
        if obj.reminded_offset is None:
            return "none yet this term"
        before = f"{obj.reminded_offset} days before"
        return f"{before}, sent {timezone.localtime(obj.reminded_at):%Y-%m-%d}" if obj.reminded_at else before

    @admin.display(description="tenant", ordering="tenant__default_domain")
    def tenant_domain(self, obj: Subscription) -> str:
        return obj.tenant.default_domain

    @admin.display(description="product", ordering="product__part_number")
    def product_part(self, obj: Subscription) -> str:
        return obj.product.part_number

    @admin.display(description="partner of record", ordering="agreement__partner__name")
    def partner(self, obj: Subscription):
        return obj.agreement.partner

    @admin.display(description="days left", ordering="term_end")
    def days_left(self, obj: Subscription) -> int:
        return (obj.term_end - timezone.localdate()).days


class RenewalScheduleForm(forms.ModelForm):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        max_length=REASON_LENGTH,
        help_text="Why the schedule changes: kept in its history with your name.",
    )

    class Meta:
        model = RenewalSchedule
        fields = ["offsets", "send_hour"]


@admin.register(RenewalSchedule)
class RenewalScheduleAdmin(BackOfficeModelAdmin):
    form = RenewalScheduleForm
    fields = ["offsets", "send_hour", "reason", "last_run_on", "updated_at"]
    asks_why = False  # its form asks for the reason itself
    readonly_fields = ["last_run_on", "updated_at"]

    def save_model(self, request, obj, form, change) -> None:
        # Rule 12: who (the history's user) and why.
        save_with_history(obj, acting_user=request.user, reason=f"Schedule changed: {form.cleaned_data['reason']}")

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # One schedule: the list is its edit page.
        schedule = RenewalSchedule.load()
        return HttpResponseRedirect(reverse("admin:redemption_renewalschedule_change", args=[schedule.pk]))

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReminderAdmin(ReadOnlyAdminMixin, BackOfficeListAdmin):
    list_filter = ["status", "offset_days", "run_on"]
    list_per_page = 100


@admin.register(RenewalReminder)
class RenewalReminderAdmin(ReminderAdmin):
    list_display = [
        "subscription",
        "customer",
        "term_end",
        "offset_days",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    ]
    list_select_related = ["subscription__tenant", "subscription__product", "customer"]
    search_fields = ["=subscription__tenant__default_domain", "customer__name", "=subscription__agreement__number"]
    ordering = ["-claimed_at", "-id"]


@admin.register(AnniversaryReminder)
class AnniversaryReminderAdmin(ReminderAdmin):
    list_display = [
        "agreement",
        "anniversary",
        "deadline",
        "offset_days",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    ]
    list_select_related = ["agreement"]
    search_fields = ["=agreement__number"]
    ordering = ["-claimed_at", "-id"]
