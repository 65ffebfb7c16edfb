"""Binding many lines at once: one screen grouped by customer and order, then a page that follows them.

Renewal and additional lines carry their agreement's tenant; the new seats of each order ask once for
their tenant and the typed default domain. One confirmation queues them all (or none); the batch
page updates itself from a small JSON endpoint until every binding has finished.
"""

import uuid
from dataclasses import dataclass, field

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache

from desk.binding_pages import (
    FORM_CHANGED,
    FORM_INCOMPLETE,
    _proposals,
    follow_batch,
    form_key,
    repeated_message,
    what_was_shown,
)
from desk.models import BindingBatch
from licensing.models import Order, OrderLine
from redemption import services
from redemption.models import SeatAllocation
from tenants.models import Customer, Tenant
from tenants.validators import normalize_domain

Status = SeatAllocation.Status
MAX_LINES = 300
# How the batch page counts its bindings: bound, failed, waiting for a supervisor, still on their way.
BUCKETS = {
    Status.BOUND: "bound",
    Status.FAILED: "failed",
    Status.AWAITING_APPROVAL: "waiting",
    Status.QUEUED: "queued",
    Status.BINDING: "queued",
}


def bulk_bind_redirect(model_admin, request: HttpRequest, lines) -> HttpResponse | None:
    """Open the one-screen binding of these lines (an admin action's answer)."""
    ids = list(lines.order_by("pk").values_list("pk", flat=True)[: MAX_LINES + 1])
    if not ids:
        model_admin.message_user(request, "Every seat of the selected lines is already allocated.", messages.WARNING)
        return None
    if len(ids) > MAX_LINES:
        model_admin.message_user(request, f"The first {MAX_LINES} lines are open; bind the rest next.", messages.INFO)
    return HttpResponseRedirect(
        reverse("admin:desk_bulk_bind") + "?" + urlencode({"lines": ",".join(map(str, ids[:MAX_LINES]))})
    )


@dataclass
class OrderGroup:
    order: Order
    rows: list[dict]
    tenants: list[Tenant] = field(default_factory=list)
    chosen: Tenant | None = None
    typed: str = ""
    reason: str = ""
    # A tenant was posted that is not one of the customer's: refused, never replaced by a default.
    foreign_choice: bool = False
    # Why the screen's confirmation could not take this order (shown beside it).
    error: str = ""

    def record_query(self, back: str) -> str:
        """The query of the page recording a tenant: back here after it, with the reseller's domain typed in."""
        query = {"next": back}
        suggested = self.order.suggested_tenant_domain
        if suggested and not any(t.default_domain == suggested for t in self.tenants):
            query["domain"] = suggested
        return urlencode(query)

    @property
    def asks_tenant(self) -> bool:
        return any(row["preview"] is None for row in self.rows)


@dataclass
class CustomerGroup:
    customer: Customer
    orders: list[OrderGroup]


def _line_ids(request: HttpRequest) -> list[int]:
    raw = request.POST.get("lines") or request.GET.get("lines") or ""
    try:
        return sorted({int(part) for part in raw.split(",") if part.strip()})[:MAX_LINES]
    except ValueError:
        return []


def _plan(line_ids: list[int], data) -> list[CustomerGroup]:
    """Group the pending lines by customer and order, each line with its tenant and result if it has one."""
    lines = [
        line
        for line in OrderLine.objects.filter(pk__in=line_ids)
        .select_related("order__agreement__customer", "order__agreement__partner", "product")
        .order_by("order__ordered_on", "order_id", "line_number")
        if line.seats_left > 0
    ]
    rows = _proposals(lines)
    orders: dict[int, OrderGroup] = {}
    for row in rows:
        order = row["line"].order
        orders.setdefault(order.pk, OrderGroup(order, [])).rows.append(row)
    customers: dict[int, CustomerGroup] = {}
    tenants_of: dict[int, list[Tenant]] = {}
    for group in orders.values():
        customer = group.order.agreement.customer
        if group.asks_tenant:
            tenants = tenants_of.setdefault(customer.pk, list(customer.tenants.order_by("default_domain")))
            group.tenants = tenants
            wanted = data.get(f"tenant_{group.order.pk}") or ""
            group.chosen = next((t for t in tenants if str(t.pk) == wanted), None)
            group.foreign_choice = bool(wanted) and group.chosen is None
            if group.chosen is None:
                # The agreement's tenant, else the one the reseller suggested.
                proposed = next((row["tenant"] for row in group.rows if row["tenant"]), None)
                suggested = group.order.suggested_tenant_domain
                group.chosen = proposed or next((t for t in tenants if t.default_domain == suggested), None)
            group.typed = data.get(f"confirm_{group.order.pk}", "")
            group.reason = data.get(f"reason_{group.order.pk}", "")
        customers.setdefault(customer.pk, CustomerGroup(customer, [])).orders.append(group)
    return sorted(customers.values(), key=lambda c: c.customer.name.lower())


def _asks(plan: list[CustomerGroup]) -> list[services.SeatsAsked]:
    """Return the seats the screen asks for; every order still missing its tenant is named (and marked)."""
    asks, missing = [], []
    for customer in plan:
        for group in customer.orders:
            for row in group.rows:
                if row["preview"] is not None:
                    asks.append(services.SeatsAsked(row["line"], row["tenant"], row["quantity"]))
                    continue
                if group.foreign_choice:
                    group.error = (
                        f"Order {group.order}: the tenant chosen is not one of {customer.customer}'s tenants; "
                        "nothing was requested. Choose one of the tenants listed."
                    )
                elif group.chosen is None:
                    group.error = f"Order {group.order}: choose the tenant for its new seats."
                if group.error:
                    if group.error not in missing:
                        missing.append(group.error)
                    continue
                asks.append(
                    services.SeatsAsked(
                        row["line"],
                        group.chosen,
                        row["quantity"],
                        confirm_domain=normalize_domain(group.typed),
                        reason=group.reason,
                    )
                )
    if missing:
        raise ValidationError(missing)
    return asks


def bulk_bind_view(admin_site, request: HttpRequest) -> HttpResponse:
    """Bind the chosen lines of any orders with one confirmation."""
    if not request.user.has_perm("redemption.add_seatallocation"):
        raise PermissionDenied
    line_ids = _line_ids(request)
    plan = _plan(line_ids, request.POST if request.method == "POST" else request.GET)
    back = reverse("admin:desk_bulk_bind") + "?" + urlencode({"lines": ",".join(map(str, line_ids))})
    for group in (group for customer in plan for group in customer.orders):
        group.record_url = (
            reverse("admin:redemption_tenant_record", args=[group.order.agreement.customer_id])
            + "?"
            + group.record_query(back)
        )
    errors: list[str] = []
    rows = [row for customer in plan for group in customer.orders for row in group.rows]
    request_key = form_key(request.POST.get("request_key", "")) if request.method == "POST" else uuid.uuid4()
    if request.method == "POST" and not plan and request_key is not None:
        # Sent again once its seats were all asked for (a double click): back to the page following them.
        earlier = services.requested_with_form(request_key=request_key, line_ids=line_ids)
        if earlier:
            messages.warning(request, repeated_message(earlier))
            return HttpResponseRedirect(follow_batch(request, earlier))
    if request.method == "POST" and plan:
        if request_key is None or request.POST.get("shown") != what_was_shown(rows):
            errors.append(FORM_INCOMPLETE if request_key is None else FORM_CHANGED)
            request_key = request_key or uuid.uuid4()
        else:
            try:
                allocations = services.allocations_request(
                    asks=_asks(plan), acting_user=request.user, request_key=request_key
                )
            except ValidationError as exc:
                errors.extend(exc.messages)
            else:
                if repeated := repeated_message(allocations):
                    messages.warning(request, repeated)
                else:
                    messages.success(request, f"{len(allocations)} binding(s) requested: this page follows them.")
                return HttpResponseRedirect(follow_batch(request, allocations))
    context = {
        **admin_site.each_context(request),
        "title": "Bind the selected lines",
        "plan": plan,
        "lines": ",".join(map(str, line_ids)),
        "line_count": sum(len(group.rows) for customer in plan for group in customer.orders),
        "errors": errors,
        "request_key": request_key,
        "shown": what_was_shown(rows),
    }
    return TemplateResponse(request, "admin/desk/bulk_bind.html", context)


def _batch(request: HttpRequest, pk: int) -> BindingBatch:
    if not request.user.has_perm("redemption.view_seatallocation"):
        raise PermissionDenied
    return get_object_or_404(BindingBatch, pk=pk)


def batch_rows(batch: BindingBatch) -> list[dict]:
    """Each binding of the batch as the page shows it."""
    rows = []
    for allocation in batch.allocations.select_related("order_line__order__agreement__customer", "tenant").order_by(
        "pk"
    ):
        note = ""
        if allocation.status == Status.AWAITING_APPROVAL:
            note = "; ".join(allocation.approval_reasons)
        elif allocation.status in (Status.FAILED, Status.QUEUED, Status.BINDING):
            note = allocation.last_error
        rows.append(
            {
                "id": allocation.pk,
                "line": str(allocation.order_line),
                "customer": str(allocation.order_line.order.agreement.customer),
                "tenant": allocation.tenant.default_domain,
                "seats": allocation.quantity,
                "status": allocation.status,
                "label": allocation.get_status_display(),
                "note": note,
                "url": reverse("admin:redemption_seatallocation_status", args=[allocation.pk]),
                "retry_url": reverse("admin:redemption_seatallocation_decide", args=[allocation.pk, "retry"]),
            }
        )
    return rows


def batch_summary(rows: list[dict]) -> dict:
    counts = {"bound": 0, "failed": 0, "waiting": 0, "queued": 0, "other": 0}
    for row in rows:
        counts[BUCKETS.get(row["status"], "other")] += 1
    # Bindings waiting for a supervisor are not finished: the page goes on following them (more slowly).
    return {
        "total": len(rows),
        "counts": counts,
        "finished": counts["queued"] == 0 and counts["waiting"] == 0,
        "waiting_only": counts["queued"] == 0 and counts["waiting"] > 0,
    }


def progress_bars(summary: dict, width: int = 1000) -> list[dict]:
    """The progress bar's segments as drawn before the page's script takes over (x and width of each)."""
    bars, x = [], 0.0
    for bucket in ("bound", "failed", "waiting", "queued"):
        share = width * summary["counts"][bucket] / summary["total"] if summary["total"] else 0
        bars.append({"bucket": bucket, "x": round(x, 1), "width": round(share, 1)})
        x += share
    return bars


def batch_view(admin_site, request: HttpRequest, pk: int) -> HttpResponse:
    """The batch's bindings with a progress bar; the page follows them by itself."""
    batch = _batch(request, pk)
    rows = batch_rows(batch)
    context = {
        **admin_site.each_context(request),
        "title": f"Bindings requested together (batch {batch.pk})",
        "batch": batch,
        "rows": rows,
        "summary": (summary := batch_summary(rows)),
        "bars": progress_bars(summary),
        "status_url": reverse("admin:desk_batch_status", args=[batch.pk]),
    }
    return TemplateResponse(request, "admin/desk/batch.html", context)


@never_cache
def batch_status_view(request: HttpRequest, pk: int) -> JsonResponse:
    """The batch's progress, for its page to poll."""
    rows = batch_rows(_batch(request, pk))
    return JsonResponse({**batch_summary(rows), "rows": rows})
