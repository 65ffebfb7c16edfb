"""The binding screens: one line, every pending line of an order, a binding's status page; thin over the services."""

import copy
import uuid

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from config.admin_tools import row_id
from desk.models import BindingBatch
from licensing.models import Agreement, Order, OrderLine
from redemption import services
from redemption.models import SeatAllocation
from redemption.selectors import sent_back
from tenants.models import Customer


def _errors(exc: ValidationError) -> list[str]:
    return list(exc.messages)


def _context(model_admin: ModelAdmin, request: HttpRequest, title: str, **extra) -> dict:
    return {**model_admin.admin_site.each_context(request), "title": title, "opts": model_admin.model._meta, **extra}


def follow_batch(request: HttpRequest, allocations: list[SeatAllocation]) -> str:
    """Record bindings requested together and return the address of the page that follows them.

    A form sent again asked for nothing new: its page is the one that already follows its bindings.
    """
    earlier = None
    if allocations and all(allocation.repeated for allocation in allocations):
        earlier = BindingBatch.objects.filter(allocations=allocations[0]).order_by("pk").first()
    batch = earlier or BindingBatch.objects.create(created_by=request.user)
    if earlier is None:
        batch.allocations.set(allocations)
    return reverse("admin:desk_batch", args=[batch.pk])


def repeated_message(allocations: list[SeatAllocation]) -> str:
    """What a page says when its form was sent again: nothing more was asked (empty: it asked for something)."""
    if not allocations or not all(allocation.repeated for allocation in allocations):
        return ""
    return (
        f"This form was already sent: its {len(allocations)} binding(s) were asked for once, and nothing more "
        "was asked. To bind seats given back since, open the page again and confirm what it shows."
    )


# A form that asks for seats carries its key (request_key) and what it showed (what_was_shown).
FORM_INCOMPLETE = "This form is incomplete or out of date: nothing was asked. Check the seats and send it again."
FORM_CHANGED = (
    "The seats to bind changed since this page was shown (seats bound, given back or imported meanwhile): "
    "nothing was asked. Check the page as it is now and confirm again."
)


def what_was_shown(rows: list[dict]) -> str:
    """The seats a binding page showed, as its form sends them back: what is confirmed is what was shown.

    Each row is a line and its seats, with the tenant and result where the page proposed them (a tenant
    chosen on the page is sent by the form itself).
    """
    parts = []
    for row in rows:
        part = f"{row['line'].pk}:{row['quantity']}"
        if row.get("preview") is not None:
            preview = row["preview"]
            part += f":{row['tenant'].pk}:{preview.quantity}:{preview.term_end:%Y-%m-%d}"
        parts.append(part)
    return ",".join(parts)


def status_url(allocation: SeatAllocation) -> str:
    return reverse("admin:redemption_seatallocation_status", args=[allocation.pk])


def form_key(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _line_queryset():
    return OrderLine.objects.select_related("order__agreement__customer", "order__agreement__partner", "product")


def bind_line_view(model_admin: ModelAdmin, request: HttpRequest, line_id: int) -> HttpResponse:
    """New seats (or a line whose agreement has no tenant yet): choose the tenant, see its identity, type its domain."""
    if not request.user.has_perm("redemption.add_seatallocation"):
        raise PermissionDenied
    line = get_object_or_404(_line_queryset(), pk=line_id)
    agreement = line.order.agreement
    existing = services.agreement_tenant(agreement=agreement, product=line.product)
    if line.kind != OrderLine.Kind.NEW and existing is not None and "tenant" not in request.GET:
        return HttpResponseRedirect(reverse("admin:licensing_order_bind", args=[line.order_id]))
    tenants = list(agreement.customer.tenants.order_by("default_domain"))
    errors: list[str] = []
    chosen = None
    tenant_param = request.POST.get("tenant") or request.GET.get("tenant")
    if tenant_param:
        chosen = next((t for t in tenants if str(t.pk) == tenant_param), None)
        if chosen is None:
            errors.append("Choose one of this customer's tenants.")
    elif line.order.suggested_tenant_domain:
        suggested = next((t for t in tenants if t.default_domain == line.order.suggested_tenant_domain), None)
        if suggested:
            return HttpResponseRedirect(f"{request.path}?tenant={suggested.pk}")
    unavailable = False
    # The form's own key: sent twice (a double click, the page sent again), it asks for the seats once.
    request_key = form_key(request.POST.get("request_key", "")) if request.method == "POST" else uuid.uuid4()
    if request.method == "POST" and request_key is None:
        errors.append(FORM_INCOMPLETE)
        request_key = uuid.uuid4()
    elif request.method == "POST" and chosen is not None:
        try:
            allocation = services.allocation_request(
                order_line=line,
                tenant=chosen,
                quantity=int(request.POST.get("quantity") or 0),
                confirm_domain=request.POST.get("confirm_domain", ""),
                acting_user=request.user,
                reason=request.POST.get("reason", ""),
                request_key=request_key,
            )
        except ValueError:
            errors.append("The number of seats must be a whole number.")
        except ValidationError as exc:
            errors.extend(_errors(exc))
            unavailable = services.provider_unavailable(exc)
        else:
            if allocation.repeated:
                model_admin.message_user(
                    request,
                    f"This form was already sent: its {allocation.quantity} seat(s) for {allocation.tenant} were "
                    "asked for once, and nothing more was asked.",
                    messages.WARNING,
                )
            elif allocation.status == SeatAllocation.Status.AWAITING_APPROVAL:
                model_admin.message_user(
                    request,
                    f"{allocation.quantity} seat(s) for {chosen} wait for a supervisor: "
                    + "; ".join(allocation.approval_reasons),
                    messages.WARNING,
                )
            else:
                model_admin.message_user(request, f"{allocation.quantity} seat(s) queued for {chosen}.")
            return HttpResponseRedirect(status_url(allocation))
    identity = preview = None
    if chosen is not None and not unavailable:
        try:
            identity = services.tenant_identity_resolve(tenant=chosen)
        except ValidationError as exc:
            errors.extend(_errors(exc))
        try:
            preview = services.allocation_preview(order_line=line, tenant=chosen, quantity=max(1, line.seats_left))
        except ValidationError as exc:
            errors.extend(_errors(exc))
    record = {"next": request.path}
    suggested = line.order.suggested_tenant_domain
    if suggested and not any(t.default_domain == suggested for t in tenants):
        record["domain"] = suggested
    record_url = reverse("admin:redemption_tenant_record", args=[agreement.customer_id]) + "?" + urlencode(record)
    return TemplateResponse(
        request,
        "admin/redemption/bind_line.html",
        _context(
            model_admin,
            request,
            f"Bind seats of {line}",
            line=line,
            agreement=agreement,
            tenants=tenants,
            chosen=chosen,
            identity=identity,
            preview=preview,
            existing=existing,
            needs_reason=existing is not None and chosen is not None and existing.pk != chosen.pk,
            errors=errors,
            record_url=record_url,
            request_key=request_key,
            released=sent_back().filter(order_line=line).select_related("reversal_requested_by").first(),
            form=request.POST if request.method == "POST" else {},
        ),
    )


def _explain(line: OrderLine, preview: services.Preview) -> str:
    """Say in one line why the resulting end date is not the sheet's, where it is not."""
    if preview.subscription is None or preview.term_end == line.ends_on:
        return ""
    if line.kind == OrderLine.Kind.RENEWAL:
        return (
            f"Ends {preview.term_end:%Y-%m-%d}, not the sheet's {line.ends_on:%Y-%m-%d}: the renewal runs "
            f"{line.product.term_months} months from the current term's end ({preview.previous_term_end:%Y-%m-%d}, "
            "or today if that has passed)."
        )
    return (
        f"Ends {preview.term_end:%Y-%m-%d}, not the sheet's {line.ends_on:%Y-%m-%d}: the {line.seats_left} added "
        f"seat(s) and the {preview.previous_quantity} there share one end date that keeps their seat-days (rule 7)."
    )


def _proposals(lines) -> list[dict]:
    """Propose the agreement's tenant for each pending line, chaining previews per subscription."""
    proposals, bases = [], {}
    for line in services.application_order(lines):
        tenant = services.agreement_tenant(agreement=line.order.agreement, product=line.product)
        row = {"line": line, "tenant": tenant, "quantity": line.seats_left, "preview": None, "explanation": ""}
        if line.kind != OrderLine.Kind.NEW and tenant is not None:
            key = (line.order.agreement_id, line.product_id, tenant.pk)
            try:
                preview = services.allocation_preview(
                    order_line=line, tenant=tenant, quantity=line.seats_left, base=bases.get(key)
                )
            except ValidationError as exc:
                # Not bound from here: the row says why.
                row["refusal"] = " ".join(_errors(exc))
                proposals.append(row)
                continue
            if preview.subscription is not None:
                base = copy.copy(preview.subscription)
                base.quantity, base.term_end, base.status = preview.quantity, preview.term_end, preview.status
                bases[key] = base
            row["preview"] = preview
            row["explanation"] = _explain(line, preview)
        proposals.append(row)
    return proposals


def bind_pending_view(
    model_admin: ModelAdmin, request: HttpRequest, *, order_id: int | None = None, agreement_id: int | None = None
) -> HttpResponse:
    """Every pending add/renew line of an order or agreement, with the result per subscription; one confirmation."""
    if not request.user.has_perm("redemption.add_seatallocation"):
        raise PermissionDenied
    if order_id is not None:
        scope = get_object_or_404(Order.objects.select_related("agreement"), pk=order_id)
        lines = _line_queryset().filter(order=scope)
        title = f"Bind the seats of order {scope}"
    else:
        scope = get_object_or_404(Agreement, pk=agreement_id)
        lines = _line_queryset().filter(order__agreement=scope)
        title = f"Bind the pending seats of agreement {scope.number}"
    pending = [line for line in lines.order_by("order__ordered_on", "order_id", "line_number") if line.seats_left > 0]
    proposals = _proposals(pending)
    ready = [p for p in proposals if p["preview"] is not None]
    request_key = form_key(request.POST.get("request_key", "")) if request.method == "POST" else uuid.uuid4()
    if request.method == "POST" and not ready and request_key is not None:
        # Sent again once its seats were all asked for (a double click): back to the page following them.
        earlier = services.requested_with_form(
            request_key=request_key, line_ids=list(lines.values_list("pk", flat=True))
        )
        if earlier:
            model_admin.message_user(request, repeated_message(earlier), messages.WARNING)
            return HttpResponseRedirect(follow_batch(request, earlier))
    if request.method == "POST" and ready:
        if request_key is None or request.POST.get("shown") != what_was_shown(ready):
            model_admin.message_user(request, FORM_INCOMPLETE if request_key is None else FORM_CHANGED, messages.ERROR)
            request_key = request_key or uuid.uuid4()
        else:
            asks = [services.SeatsAsked(r["line"], r["tenant"], r["quantity"]) for r in ready]
            try:
                allocations = services.allocations_request(asks=asks, acting_user=request.user, request_key=request_key)
            except ValidationError as exc:
                model_admin.message_user(request, "Nothing was queued: " + " ".join(_errors(exc)), messages.ERROR)
            else:
                waiting = sum(a.status == SeatAllocation.Status.AWAITING_APPROVAL for a in allocations)
                model_admin.message_user(
                    request,
                    repeated_message(allocations)
                    or f"{len(allocations) - waiting} binding(s) queued"
                    + (f", {waiting} waiting for a supervisor" if waiting else "")
                    + ".",
                )
                # The page that follows them until they are bound, as the batch screen's does.
                return HttpResponseRedirect(follow_batch(request, allocations))
    one_screen = ""
    if len(ready) < len(proposals):
        # New seats ask a person for their tenant: the multi-line screen asks once per order, for all lines.
        lines_query = urlencode({"lines": ",".join(str(line.pk) for line in pending)})
        one_screen = f"{reverse('admin:desk_bulk_bind')}?{lines_query}"
    return TemplateResponse(
        request,
        "admin/redemption/bind_pending.html",
        _context(
            model_admin,
            request,
            title,
            scope=scope,
            proposals=proposals,
            ready=ready,
            request_key=request_key,
            shown=what_was_shown(ready),
            one_screen=one_screen,
        ),
    )


def tenant_record_view(model_admin: ModelAdmin, request: HttpRequest, customer_id: int) -> HttpResponse:
    """Record a customer's tenant by its default domain: the provider says who it is, a person confirms."""
    if not request.user.has_perm("tenants.add_tenant"):
        raise PermissionDenied
    customer = get_object_or_404(Customer, pk=customer_id)
    errors: list[str] = []
    next_url = request.GET.get("next") or request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    domain = (request.POST.get("domain") or request.GET.get("domain") or "").strip()
    unavailable = False
    if request.method == "POST":
        try:
            tenant = services.tenant_record(
                customer=customer,
                domain=domain,
                confirm_domain=request.POST.get("confirm_domain", ""),
                acting_user=request.user,
            )
        except ValidationError as exc:
            errors.extend(_errors(exc))
            unavailable = services.provider_unavailable(exc)
        else:
            model_admin.message_user(request, f"Tenant {tenant} ({tenant.display_name}) recorded for {customer}.")
            if next_url:
                joined = "&" if "?" in next_url else "?"
                return HttpResponseRedirect(f"{next_url}{joined}tenant={tenant.pk}")
            return HttpResponseRedirect(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    identity = None
    if domain and not unavailable:
        try:
            identity = services.tenant_lookup(domain=domain)
        except ValidationError as exc:
            errors.extend(message for message in _errors(exc) if message not in errors)
    return TemplateResponse(
        request,
        "admin/redemption/tenant_record.html",
        _context(
            model_admin,
            request,
            f"Record a tenant of {customer}",
            customer=customer,
            errors=errors,
            domain=domain,
            identity=identity,
            next_url=next_url,
        ),
    )


def tenant_add_view(model_admin: ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Find the customer whose tenant is recorded, then record it on its page: nothing is written here."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    customer_id = row_id(request.GET.get("customer") or request.POST.get("customer"))
    customer = Customer.objects.filter(pk=customer_id).first() if customer_id is not None else None
    if customer is not None:
        domain = (request.GET.get("domain") or request.POST.get("default_domain") or "").strip()
        query = f"?{urlencode({'domain': domain})}" if domain else ""
        return HttpResponseRedirect(reverse("admin:redemption_tenant_record", args=[customer.pk]) + query)
    # A NUL cannot be in a name (PostgreSQL refuses it in text): it is dropped, as the look-up page does.
    q = (request.GET.get("q") or "").replace("\x00", "").strip()
    customers = list(Customer.objects.filter(name__icontains=q).order_by("name")[:20]) if q else []
    return TemplateResponse(
        request,
        "admin/redemption/tenant_add.html",
        _context(model_admin, request, "Record a tenant", q=q, customers=customers),
    )


def allocation_status_view(model_admin: ModelAdmin, request: HttpRequest, allocation_id: int) -> HttpResponse:
    """One binding: its status (refreshing while it runs), the actions it allows, and its history."""
    if not request.user.has_perm("redemption.view_seatallocation"):
        raise PermissionDenied
    allocation = get_object_or_404(
        SeatAllocation.objects.select_related(
            "order_line__order__agreement__customer", "order_line__product", "tenant", "subscription", "requested_by"
        ),
        pk=allocation_id,
    )
    user = request.user
    Status = SeatAllocation.Status
    history = allocation.history.select_related("history_user").order_by("-history_date", "-history_id")[:50]

    def permitted(decision: str) -> bool:
        return services.allocation_decision_permitted(allocation=allocation, decision=decision, user=user)

    can_approve = (
        permitted("approve") and allocation.status == Status.AWAITING_APPROVAL and allocation.requested_by_id != user.pk
    )
    can_reject = permitted("reject") and allocation.status in (Status.AWAITING_APPROVAL, Status.FAILED)
    running = allocation.status in SeatAllocation.IN_FLIGHT
    # Whoever waits for a supervisor's decision sees it arrive; a page with a decision to make is not reloaded
    # under the reason being typed.
    awaiting = allocation.status == Status.AWAITING_APPROVAL and not (can_approve or can_reject)
    # Reverse is offered only where it can go ahead; otherwise the supervisor reads why, before typing a reason.
    can_reverse, reversal_refusal = False, ""
    if permitted("reverse") and allocation.status == Status.BOUND:
        reversal_refusal = services.reversal_outcome(allocation=allocation)[1]
        can_reverse = not reversal_refusal
    return TemplateResponse(
        request,
        "admin/redemption/allocation_status.html",
        _context(
            model_admin,
            request,
            f"Binding {allocation.pk}: {allocation}",
            allocation=allocation,
            running=running,
            awaiting=awaiting,
            refresh_seconds=2 if running else 10 if awaiting else 0,
            can_approve=can_approve,
            can_reject=can_reject,
            can_retry=permitted("retry") and allocation.status in (Status.FAILED, Status.REVERSAL_FAILED),
            can_reverse=can_reverse,
            reversal_refusal=reversal_refusal,
            history=history,
        ),
    )


DONE = {
    "approve": "approved and queued",
    "reject": "rejected, its seats are free to bind again",
    "retry": "queued again",
    "reverse": "reversal queued; a worker undoes it at the provider",
}
DECISIONS = {
    "approve": ("Approve", False),
    "reject": ("Reject", True),
    "retry": ("Retry", False),
    "reverse": ("Reverse", True),
}


def allocation_decide_view(
    model_admin: ModelAdmin, request: HttpRequest, allocation_id: int, decision: str
) -> HttpResponse:
    """Approve, reject (with a reason), retry or reverse (with a reason) one binding, after confirmation.

    Someone without the permission the decision needs is refused (403) before anything is asked or done;
    the service checks it again, with the binding's state, under the row's lock.
    """
    if decision not in DECISIONS:
        raise PermissionDenied
    allocation = get_object_or_404(
        SeatAllocation.objects.select_related(
            "tenant", "order_line__order__agreement__customer", "order_line__product"
        ),
        pk=allocation_id,
    )
    if not services.allocation_decision_permitted(allocation=allocation, decision=decision, user=request.user):
        raise PermissionDenied
    label, needs_reason = DECISIONS[decision]
    errors: list[str] = []
    if request.method == "POST":
        reason = request.POST.get("reason", "")
        try:
            if decision == "approve":
                services.allocation_approve(allocation=allocation, acting_user=request.user)
            elif decision == "reject":
                services.allocation_reject(allocation=allocation, acting_user=request.user, reason=reason)
            elif decision == "retry":
                services.allocation_retry(allocation=allocation, acting_user=request.user)
            else:
                services.allocation_reverse(allocation=allocation, acting_user=request.user, reason=reason)
        except ValidationError as exc:
            errors.extend(_errors(exc))
        else:
            model_admin.message_user(request, f"Binding {allocation.pk} ({allocation}): {DONE[decision]}.")
            return HttpResponseRedirect(status_url(allocation))
    preview, reversal = None, ""
    if decision in ("approve", "retry"):
        preview, refusal = services.allocation_outcome(allocation=allocation)
        errors.extend([refusal] if refusal else [])
    elif decision == "reverse" and not errors:
        reversal, refusal = services.reversal_outcome(allocation=allocation)
        errors.extend([refusal] if refusal else [])
    return TemplateResponse(
        request,
        "admin/redemption/allocation_decide.html",
        _context(
            model_admin,
            request,
            f"{label} binding {allocation.pk}?",
            allocation=allocation,
            decision=decision,
            label=label,
            needs_reason=needs_reason,
            errors=errors,
            preview=preview,
            reversal=reversal,
        ),
    )
