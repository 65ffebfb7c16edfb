from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from licensing.admin import AgeFilter, EndingSoonFilter
from licensing.admin_import import SafeExportMixin
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


@admin.register(Subscription)
class SubscriptionAdmin(SafeExportMixin, SimpleHistoryAdmin):
    export_resource_classes = [SubscriptionResource]
    list_display = ["__str__", "agreement", "customer", "quantity", "term_end", "status", "provider_subscription_id"]
    list_select_related = ["tenant__customer", "product", "agreement"]
    list_filter = ["status", SubscriptionEndingFilter, "agreement__program"]
    search_fields = [
        "=provider_subscription_id",
        "tenant__default_domain",
        "=tenant__tenant_id",
        "=agreement__number",
        "tenant__customer__name",
        "=product__part_number",
    ]
    autocomplete_fields = ["tenant", "product", "agreement"]
    readonly_fields = ["status", "provider_subscription_id", "quantity", "term_end"]
    ordering = ["term_end", "id"]
    show_full_result_count = False

    @admin.display(ordering="tenant__customer__name")
    def customer(self, obj: Subscription):
        return obj.tenant.customer

    def has_add_permission(self, request) -> bool:
        # Subscriptions come into being only when a binding succeeds.
        return False


@admin.register(SeatAllocation)
class SeatAllocationAdmin(SimpleHistoryAdmin):
    list_display = [
        "id",
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
    autocomplete_fields = ["order_line", "tenant"]
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
        "created_at",
        "updated_at",
    ]
    ordering = ["-created_at"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        # Allocations are requested through the binding flow, which checks the tenant and the seats.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
