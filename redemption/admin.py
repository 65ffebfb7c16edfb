from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import F
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from rangefilter.filters import DateRangeFilter

from config.admin_tools import BackOfficeModelAdmin, ReadOnlyAdminMixin
from licensing.admin import AgeFilter, EndingSoonFilter, OrderAdmin, OrderLineAdmin
from licensing.admin_import import SafeExportMixin
from licensing.models import Order, OrderLine
from redemption import services, views
from redemption.models import SeatAllocation, Subscription
from redemption.resources import SubscriptionResource
from tenants.admin import TenantAdmin
from tenants.models import Tenant


class SubscriptionEndingFilter(EndingSoonFilter):
    field = "term_end"


class AllocationAgeFilter(AgeFilter):
    field = "created_at"


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    fields = ["product", "agreement", "quantity", "term_end", "status", "provider_subscription_id"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product", "agreement", "tenant")


# Subscriptions are shown on their tenant; the tenant admin lives in the lower app, so it is extended here.
admin.site.unregister(Tenant)


@admin.register(Tenant)
class TenantWithSubscriptionsAdmin(TenantAdmin):
    inlines = [*TenantAdmin.inlines, SubscriptionInline]
    actions = [*(TenantAdmin.actions or []), "verify_identity"]

    @admin.action(description="Verify identity with the provider")
    def verify_identity(self, request, queryset):
        views.tenant_verify_many(self, request, queryset.select_related("customer")[:50])

    def get_urls(self):
        return [
            path(
                "record-for-customer/<int:customer_id>/",
                self.admin_site.admin_view(
                    lambda request, customer_id: views.tenant_record_view(self, request, customer_id)
                ),
                name="redemption_tenant_record",
            ),
            *super().get_urls(),
        ]


# --- Binding seats from orders and order lines (the admin classes live in licensing; extended here) ---


def _bind_url(line: OrderLine) -> str:
    if line.kind == OrderLine.Kind.NEW:
        return reverse("admin:licensing_orderline_bind", args=[line.pk])
    return reverse("admin:licensing_order_bind", args=[line.order_id])


admin.site.unregister(Order)
admin.site.unregister(OrderLine)


@admin.register(Order)
class OrderWithBindingAdmin(OrderAdmin):
    change_form_template = "admin/redemption/order_change_form.html"

    def get_urls(self):
        bind = self.admin_site.admin_view(
            lambda request, order_id: views.bind_pending_view(self, request, order_id=order_id)
        )
        bind_agreement = self.admin_site.admin_view(
            lambda request, agreement_id: views.bind_pending_view(self, request, agreement_id=agreement_id)
        )
        return [
            path("<int:order_id>/bind/", bind, name="licensing_order_bind"),
            path("agreement/<int:agreement_id>/bind/", bind_agreement, name="licensing_agreement_bind"),
            *super().get_urls(),
        ]


@admin.register(OrderLine)
class OrderLineWithBindingAdmin(OrderLineAdmin):
    """The work queue: order lines with unbound seats, filterable by partner, program, kind and age."""

    change_form_template = "admin/redemption/orderline_change_form.html"
    list_display = [*OrderLineAdmin.list_display, "bind"]
    list_filter = [*OrderLineAdmin.list_filter, "order__agreement__partner"]
    actions = [*(OrderLineAdmin.actions or []), "bind_orders"]

    @admin.display(description="")
    def bind(self, obj: OrderLine):
        if obj.seats_left <= 0:
            return "-"
        return format_html('<a class="button" href="{}">Bind {} seat(s)</a>', _bind_url(obj), obj.seats_left)

    @admin.action(description="Bind seats of the selected lines' orders")
    def bind_orders(self, request, queryset):
        orders = sorted(set(queryset.filter(seats_allocated__lt=F("quantity")).values_list("order_id", flat=True)))
        if not orders:
            self.message_user(request, "Every seat of the selected lines is already allocated.", messages.WARNING)
            return None
        if len(orders) > 1:
            self.message_user(request, "Bind one order at a time: the first selected order is open.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:licensing_order_bind", args=[orders[0]]))

    def get_urls(self):
        bind = self.admin_site.admin_view(lambda request, line_id: views.bind_line_view(self, request, line_id))
        return [path("<int:line_id>/bind/", bind, name="licensing_orderline_bind"), *super().get_urls()]


# --- end of binding from orders ---


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdminMixin, SafeExportMixin, BackOfficeModelAdmin):
    """Subscriptions come into being and change only through bindings, reversals and their lifecycle."""

    export_resource_classes = [SubscriptionResource]
    list_display = ["__str__", "agreement", "customer", "quantity", "term_end", "status", "provider_subscription_id"]
    list_select_related = ["tenant__customer", "product", "agreement"]
    list_filter = ["status", SubscriptionEndingFilter, ("term_end", DateRangeFilter), "agreement__program"]
    search_fields = [
        "=provider_subscription_id",
        "tenant__default_domain",
        "=tenant__tenant_id",
        "=agreement__number",
        "tenant__customer__name",
        "=product__part_number",
    ]
    ordering = ["term_end", "id"]

    @admin.display(ordering="tenant__customer__name")
    def customer(self, obj: Subscription):
        return obj.tenant.customer


@admin.register(SeatAllocation)
class SeatAllocationAdmin(ReadOnlyAdminMixin, BackOfficeModelAdmin):
    """Approvals (filter: awaiting approval), failed bindings with their error, and every binding's story.

    Read-only: allocations change only through the binding flow (its pages and the actions here).
    """

    list_display = [
        "status_link",
        "order_line",
        "tenant",
        "quantity",
        "status",
        "requested_by",
        "approved_by",
        "attempts",
        "last_error",
        "created_at",
    ]
    list_select_related = ["order_line__order", "tenant", "requested_by", "approved_by"]
    list_filter = ["status", "order_line__kind", "order_line__order__agreement__program", AllocationAgeFilter]
    search_fields = [
        "=order_line__order__license_number",
        "=order_line__order__agreement__number",
        "=order_line__order__agreement__authorization_number",
        "tenant__default_domain",
        "=tenant__tenant_id",
        "=idempotency_key",
        "=order_line__order__agreement__partner__mpn_id",
    ]
    readonly_fields = [
        "order_line",
        "tenant",
        "quantity",
        "status",
        "idempotency_key",
        "subscription",
        "requested_by",
        "approved_by",
        "reason",
        "approval_reasons",
        "attempts",
        "last_error",
        "plan_action",
        "target_quantity",
        "target_term_end",
        "previous_quantity",
        "previous_term_end",
        "next_attempt_at",
        "bound_at",
        "rejection_reason",
        "reversal_requested_by",
        "reversal_requested_at",
        "reversed_at",
        "reversal_reason",
        "created_at",
        "updated_at",
    ]
    ordering = ["-created_at"]

    actions = ["approve_selected", "retry_selected"]
    change_form_template = "admin/redemption/seatallocation_change_form.html"

    @admin.display(description="binding", ordering="id")
    def status_link(self, obj: SeatAllocation):
        return format_html('<a href="{}">{}</a>', views.status_url(obj), obj.pk)

    @admin.action(description="Approve the selected bindings", permissions=["supervisor"])
    def approve_selected(self, request, queryset):
        self._each(
            request, queryset, "approved", lambda a: services.allocation_approve(allocation=a, acting_user=request.user)
        )

    @admin.action(description="Retry the selected failed bindings", permissions=["request"])
    def retry_selected(self, request, queryset):
        self._each(
            request,
            queryset,
            "queued again",
            lambda a: services.allocation_retry(allocation=a, acting_user=request.user),
        )

    def _each(self, request, queryset, done: str, call) -> None:
        count = 0
        for allocation in queryset[:500]:
            try:
                call(allocation)
                count += 1
            except ValidationError as exc:
                self.message_user(request, f"Binding {allocation.pk}: {' '.join(exc.messages)}", messages.ERROR)
        if count:
            self.message_user(request, f"{count} binding(s) {done}.")

    def has_supervisor_permission(self, request) -> bool:
        return request.user.has_perm("redemption.supervisor")

    def has_request_permission(self, request) -> bool:
        return request.user.has_perm("redemption.add_seatallocation")

    def get_urls(self):
        status = self.admin_site.admin_view(lambda request, pk: views.allocation_status_view(self, request, pk))
        decide = self.admin_site.admin_view(
            lambda request, pk, decision: views.allocation_decide_view(self, request, pk, decision)
        )
        return [
            path("<int:pk>/status/", status, name="redemption_seatallocation_status"),
            path("<int:pk>/decide/<str:decision>/", decide, name="redemption_seatallocation_decide"),
            *super().get_urls(),
        ]


import redemption.admin_renewals  # noqa: E402, F401  (registers the renewals desk)
