"""The desk's own pages on the admin: binding screens on orders, lines and allocations; staff sign-in."""

from django.conf import settings
from django.contrib import admin
from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from rangefilter.filters import DateRangeFilter

from config.admin_tools import BackOfficeListAdmin, ReadOnlyAdminMixin
from desk import batch_pages, binding_pages, services, sign_in
from desk.models import LockedAccount, SignInEvent
from licensing.admin import OrderAdmin, OrderLineAdmin
from licensing.models import Order, OrderLine
from redemption.admin import SeatAllocationAdmin, TenantWithSubscriptionsAdmin
from redemption.models import SeatAllocation, Subscription
from redemption.selectors import sent_back
from tenants.models import Tenant


@admin.register(LockedAccount)
class LockedAccountAdmin(ReadOnlyAdminMixin, BackOfficeListAdmin):
    """Accounts and addresses with failed sign-ins; those at the limit are locked until unlocked or the time is up."""

    list_display = ["username", "ip_address", "failures_since_start", "state", "attempt_time", "unlock"]
    search_fields = ["username", "=ip_address"]
    ordering = ["-attempt_time"]
    fields = ["username", "ip_address", "user_agent", "failures_since_start", "attempt_time", "get_data", "post_data"]

    @admin.display(description="state")
    def state(self, obj: LockedAccount) -> str:
        if obj.failures_since_start < settings.LOGIN_FAILURE_LIMIT:
            return f"{obj.failures_since_start} of {settings.LOGIN_FAILURE_LIMIT} failures"
        until = timezone.localtime(obj.attempt_time + settings.AXES_COOLOFF_TIME)
        return f"Locked until {until:%Y-%m-%d %H:%M}" if until > timezone.localtime() else "Lock has run out"

    @admin.display(description="")
    def unlock(self, obj: LockedAccount):
        return format_html(
            '<a class="button" href="{}">Unlock</a>', reverse("admin:desk_lockedaccount_unlock", args=[obj.pk])
        )

    def has_view_permission(self, request, obj=None) -> bool:
        return services.can_unlock(request.user) or super().has_view_permission(request, obj)

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def get_urls(self):
        unlock = self.admin_site.admin_view(lambda request, pk: sign_in.unlock_view(self, request, pk))
        return [path("<int:pk>/unlock/", unlock, name="desk_lockedaccount_unlock"), *super().get_urls()]


@admin.register(SignInEvent)
class SignInEventAdmin(ReadOnlyAdminMixin, BackOfficeListAdmin):
    """The audit trail of sign-in: lockouts, unlocks (who and why), authenticators set up."""

    list_display = ["at", "kind", "username", "ip_address", "by", "reason"]
    list_filter = ["kind"]
    list_select_related = ["by"]
    search_fields = ["username", "=ip_address"]
    ordering = ["-at", "-id"]

    def has_view_permission(self, request, obj=None) -> bool:
        return services.can_unlock(request.user) or super().has_view_permission(request, obj)

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)


# --- The binding screens, on the admin classes of the records they work on ------------------------


def _bind_url(line: OrderLine) -> str:
    if line.kind == OrderLine.Kind.NEW:
        return reverse("admin:licensing_orderline_bind", args=[line.pk])
    return reverse("admin:licensing_order_bind", args=[line.order_id])


for model in (Order, OrderLine, Tenant, SeatAllocation):
    admin.site.unregister(model)


class BindsSeatsMixin:
    """An admin whose actions open the binding screens: those are for whoever may request bindings."""

    def has_request_permission(self, request) -> bool:
        return request.user.has_perm("redemption.add_seatallocation")


@admin.register(Tenant)
class DeskTenantAdmin(TenantWithSubscriptionsAdmin):
    def add_view(self, request, form_url="", extra_context=None):
        # A tenant is only recorded as the provider reports it: "Add tenant" leads to the record page.
        return binding_pages.tenant_add_view(self, request)

    def get_urls(self):
        record = self.admin_site.admin_view(
            lambda request, customer_id: binding_pages.tenant_record_view(self, request, customer_id)
        )
        return [
            path("record-for-customer/<int:customer_id>/", record, name="redemption_tenant_record"),
            *super().get_urls(),
        ]


@admin.register(Order)
class OrderWithBindingAdmin(BindsSeatsMixin, OrderAdmin):
    change_form_template = "admin/redemption/order_change_form.html"
    actions = [*(OrderAdmin.actions or []), "bind_selected_orders"]

    @admin.action(description="Bind the pending seats of the selected orders", permissions=["request"])
    def bind_selected_orders(self, request, queryset):
        lines = OrderLine.objects.filter(order__in=queryset[:500], seats_allocated__lt=F("quantity"))
        return batch_pages.bulk_bind_redirect(self, request, lines)

    def get_urls(self):
        bind = self.admin_site.admin_view(
            lambda request, order_id: binding_pages.bind_pending_view(self, request, order_id=order_id)
        )
        bind_agreement = self.admin_site.admin_view(
            lambda request, agreement_id: binding_pages.bind_pending_view(self, request, agreement_id=agreement_id)
        )
        return [
            path("<int:order_id>/bind/", bind, name="licensing_order_bind"),
            path("agreement/<int:agreement_id>/bind/", bind_agreement, name="licensing_agreement_bind"),
            *super().get_urls(),
        ]


class GroupByOrderFilter(admin.SimpleListFilter):
    """Group the work queue by order: a heading row opens each order's lines (they are listed together)."""

    title = "grouping"
    parameter_name = "group"

    def lookups(self, request, model_admin):
        return [("order", "By order")]

    def queryset(self, request, queryset):
        return queryset


def order_heads(lines) -> list[dict | None]:
    """Per listed line, the heading of its order where a new order starts (None elsewhere)."""
    counts: dict[int, int] = {}
    for line in lines:
        counts[line.order_id] = counts.get(line.order_id, 0) + 1
    heads, previous = [], None
    for line in lines:
        order = line.order
        heads.append(
            None
            if line.order_id == previous
            else {
                "order": order.license_number,
                "url": reverse("admin:licensing_order_change", args=[order.pk]),
                "customer": order.agreement.customer,
                "ordered_on": order.ordered_on,
                "lines": counts[line.order_id],
            }
        )
        previous = line.order_id
    return heads


def _domain_html(domain: str):
    """A tenant domain that wraps, in a narrow column, only after a dot: never mid-name."""
    return format_html_join(mark_safe(".<wbr>"), "{}", ((part,) for part in domain.split(".")))


@admin.register(OrderLine)
class WorkQueueAdmin(BindsSeatsMixin, OrderLineAdmin):
    """The work queue: order lines with unbound seats, filterable by partner, program, kind and age."""

    list_title = "Work queue"
    change_form_template = "admin/redemption/orderline_change_form.html"
    list_display = [
        "__str__",
        "customer",
        "partner",
        "ordered_on",
        "age",
        "kind",
        "product_part",
        "seats",
        "proposed_tenant",
        "bind",
    ]
    list_filter = [
        *OrderLineAdmin.list_filter,
        "order__agreement__partner",
        ("order__ordered_on", DateRangeFilter),
        GroupByOrderFilter,
    ]
    actions = [*(OrderLineAdmin.actions or []), "bind_selected_lines"]
    # Oldest order first; the lines of an order stay together (walks the order-date index).
    ordering = ["order__ordered_on", "order_id", "line_number"]

    def get_queryset(self, request):
        # The tenant the seats would go to: the agreement's (rule 3), else the reseller's suggested domain.
        live = Subscription.objects.filter(agreement=OuterRef("order__agreement")).exclude(
            status=Subscription.Status.DEPROVISIONED
        )
        same_product = live.filter(product=OuterRef("product")).values("tenant__default_domain")[:1]
        any_product = live.order_by("-created_at", "-id").values("tenant__default_domain")[:1]
        # The line's last binding whose seats came back (rejected, reversed): the queue says why.
        released = sent_back().filter(order_line=OuterRef("pk")).values("pk")[:1]
        return (
            super()
            .get_queryset(request)
            .annotate(
                proposed_domain=Coalesce(Subquery(same_product), Subquery(any_product)),
                released_id=Subquery(released),
            )
        )

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        lines = list(changelist.result_list)
        ids = [line.released_id for line in lines if line.released_id]
        released = SeatAllocation.objects.select_related("reversal_requested_by").in_bulk(ids) if ids else {}
        for line in lines:
            line.released = released.get(line.released_id)
        changelist.result_list = lines
        changelist.order_heads = []
        if request.GET.get(GroupByOrderFilter.parameter_name) == "order":
            # The page's lines, each order's together where the order first comes in the chosen sort.
            lines = list(changelist.result_list)
            first = {}
            for index, line in enumerate(lines):
                first.setdefault(line.order_id, index)
            lines.sort(key=lambda line: first[line.order_id])
            changelist.result_list = lines
            changelist.order_heads = order_heads(lines)
        return changelist

    @admin.display(description="ordered", ordering="order__ordered_on")
    def ordered_on(self, obj: OrderLine):
        return obj.order.ordered_on

    @admin.display(description="age")
    def age(self, obj: OrderLine) -> str:
        return f"{(timezone.localdate() - obj.order.ordered_on).days} d"

    @admin.display(description="product", ordering="product__part_number")
    def product_part(self, obj: OrderLine) -> str:
        return obj.product.part_number

    @admin.display(description="seats left")
    def seats(self, obj: OrderLine) -> str:
        released = getattr(obj, "released", None)
        if released is None or obj.seats_left <= 0:
            return f"{obj.seats_left} of {obj.quantity}"
        # Seats a supervisor sent back are not ordinary work: the reason is in front of whoever binds them.
        return format_html(
            '{} of {}<div class="released-note">{} seat(s) {}</div>',
            obj.seats_left,
            obj.quantity,
            released.quantity,
            released.released_note,
        )

    @admin.display(description="tenant")
    def proposed_tenant(self, obj: OrderLine) -> str:
        if obj.proposed_domain:
            return _domain_html(obj.proposed_domain)
        if obj.order.suggested_tenant_domain:
            return format_html("{} (suggested)", _domain_html(obj.order.suggested_tenant_domain))
        return "—"

    @admin.display(description="")
    def bind(self, obj: OrderLine):
        if obj.seats_left <= 0:
            return "-"
        return format_html('<a class="button" href="{}">Bind</a>', _bind_url(obj))

    @admin.action(description="Bind the selected lines (any orders, one screen)", permissions=["request"])
    def bind_selected_lines(self, request, queryset):
        return batch_pages.bulk_bind_redirect(self, request, queryset.filter(seats_allocated__lt=F("quantity")))

    def get_urls(self):
        bind = self.admin_site.admin_view(lambda request, line_id: binding_pages.bind_line_view(self, request, line_id))
        return [path("<int:line_id>/bind/", bind, name="licensing_orderline_bind"), *super().get_urls()]


@admin.register(SeatAllocation)
class DeskSeatAllocationAdmin(SeatAllocationAdmin):
    def get_urls(self):
        status = self.admin_site.admin_view(lambda request, pk: binding_pages.allocation_status_view(self, request, pk))
        decide = self.admin_site.admin_view(
            lambda request, pk, decision: binding_pages.allocation_decide_view(self, request, pk, decision)
        )
        return [
            path("<int:pk>/status/", status, name="redemption_seatallocation_status"),
            path("<int:pk>/decide/<str:decision>/", decide, name="redemption_seatallocation_decide"),
            *super().get_urls(),
        ]
