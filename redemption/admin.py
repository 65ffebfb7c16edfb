from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from rangefilter.filters import DateRangeFilter

from config.admin_tools import BackOfficeModelAdmin, ReadOnlyAdminMixin, address_id
from config.history import reason_text
from licensing.admin import AgeFilter, EndingSoonFilter
from licensing.admin_import import SafeExportMixin
from redemption import services
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

    @admin.action(description="Verify identity with the provider", permissions=["change"])
    def verify_identity(self, request, queryset):
        verified = 0
        tenants = list(queryset.select_related("customer")[:50])
        for done, tenant in enumerate(tenants):
            try:
                services.tenant_verify(tenant=tenant, acting_user=request.user)
                verified += 1
            except ValidationError as exc:
                self.message_user(request, f"{tenant}: {' '.join(exc.messages)}", messages.ERROR)
                if services.provider_unavailable(exc):
                    # Each tenant would wait as long again: the others are left for later, and said so.
                    if rest := len(tenants) - done - 1:
                        self.message_user(request, f"{rest} other tenant(s) not verified: try again later.")
                    break
        if verified:
            self.message_user(request, f"{verified} tenant(s) verified with the provider.")


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
        "customer",
        "tenant",
        "quantity",
        "status",
        "note",
        "requested_by",
        "approved_by",
        "created_at",
    ]
    list_select_related = ["order_line__order__agreement__customer", "tenant", "requested_by", "approved_by"]
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

    actions = ["approve_selected", "reject_selected", "retry_selected"]

    @admin.display(description="why")
    def note(self, obj: SeatAllocation) -> str:
        """Why it waits for a supervisor, or what the provider said when it failed."""
        if obj.status == SeatAllocation.Status.AWAITING_APPROVAL:
            # With the requester's own words where they gave any: what a supervisor decides on.
            why = "; ".join(obj.approval_reasons)
            return f"{why}. {obj.requested_by}: {obj.reason}" if obj.reason else why
        if obj.status in SeatAllocation.FAILURES or obj.status in SeatAllocation.IN_FLIGHT:
            return obj.last_error
        return obj.rejection_reason or obj.reversal_reason

    @admin.action(description="Reject the selected bindings (one reason for all)", permissions=["supervisor"])
    def reject_selected(self, request, queryset):
        return self._decide_many(
            request,
            queryset,
            "reject_selected",
            "Reject",
            "rejected",
            lambda a, reason: services.allocation_reject(allocation=a, acting_user=request.user, reason=reason),
            reason_required=True,
        )

    @admin.action(description="Approve the selected bindings (one reason for all)", permissions=["supervisor"])
    def approve_selected(self, request, queryset):
        return self._decide_many(
            request,
            queryset,
            "approve_selected",
            "Approve",
            "approved",
            lambda a, reason: services.allocation_approve(allocation=a, acting_user=request.user, reason=reason),
            reason_required=False,
        )

    def _decide_many(self, request, queryset, action, label, done, call, *, reason_required):
        """Confirm a decision on the selected bindings with one reason, then make it for each."""
        selected = list(
            queryset.select_related("order_line__order__agreement__customer", "order_line__product", "tenant")[:500]
        )
        reason = reason_text(request.POST.get("reason", ""))
        if "apply" in request.POST and (reason or not reason_required):
            # The same confirmation sent twice (a double click): what this supervisor decided a moment
            # ago counts as decided, not as a refusal.
            decided = None
            if action == "approve_selected":
                decided = lambda allocation: allocation.approved_by_id == request.user.pk  # noqa: E731
            self._each(request, selected, done, lambda allocation: call(allocation, reason), decided=decided)
            return None
        if action == "approve_selected":
            for allocation in selected:
                allocation.outcome, allocation.refusal = services.allocation_outcome(allocation=allocation)
        return TemplateResponse(
            request,
            "admin/redemption/allocation_decide_many.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{label} {len(selected)} binding(s)?",
                "opts": self.model._meta,
                "allocations": selected,
                "action": action,
                "label": label,
                "reason_required": reason_required,
                "missing_reason": "apply" in request.POST,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def list_title_for(self, request) -> str:
        if request.GET.get("status__exact") == SeatAllocation.Status.AWAITING_APPROVAL:
            return "Approvals"
        return "Bindings"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A binding's own page says what happened to it in words; the raw record stays in its history.
        allocation_id = address_id(object_id, "binding")
        return HttpResponseRedirect(reverse("admin:redemption_seatallocation_status", args=[allocation_id]))

    @admin.display(description="customer", ordering="order_line__order__agreement__customer__name")
    def customer(self, obj: SeatAllocation):
        return obj.order_line.order.agreement.customer

    @admin.display(description="binding", ordering="id")
    def status_link(self, obj: SeatAllocation):
        url = reverse("admin:redemption_seatallocation_status", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.pk)

    @admin.action(description="Retry the selected failed bindings", permissions=["request"])
    def retry_selected(self, request, queryset):
        self._each(
            request,
            queryset,
            "queued again",
            lambda a: services.allocation_retry(allocation=a, acting_user=request.user),
        )

    def _each(self, request, queryset, done: str, call, decided=None) -> None:
        count = 0
        for allocation in list(queryset)[:500]:
            try:
                call(allocation)
                count += 1
            except ValidationError as exc:
                allocation.refresh_from_db()
                if decided is not None and decided(allocation):
                    count += 1
                    continue
                self.message_user(request, f"Binding {allocation.pk}: {' '.join(exc.messages)}", messages.ERROR)
        if count:
            self.message_user(request, f"{count} binding(s) {done}.")

    def has_supervisor_permission(self, request) -> bool:
        return request.user.has_perm("redemption.supervisor")

    def has_request_permission(self, request) -> bool:
        return request.user.has_perm("redemption.add_seatallocation")


import redemption.admin_reconciliation  # noqa: E402  (registers drift, corrections and runs)
import redemption.admin_renewals  # noqa: E402, F401  (registers the renewals desk)
