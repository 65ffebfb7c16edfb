"""Drift in the desk: the list with both values side by side, settling one, runs and their progress."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from config.admin_tools import BackOfficeListAdmin, ReadOnlyAdminMixin, address_id
from config.history import reason_text
from config.queueing import enqueue_on_commit
from licensing.admin import AgeFilter
from redemption.models import Drift, ProviderCorrection, ReconciliationRun
from redemption.reconciliation import runs
from redemption.reconciliation import services as settle


class DriftAgeFilter(AgeFilter):
    title = "first seen"
    field = "first_seen_at"


def _value(value) -> str:
    return "—" if value is None else str(value)


@admin.register(Drift)
class DriftAdmin(ReadOnlyAdminMixin, BackOfficeListAdmin):
    """What differs between what was ordered, what we bound and what the provider holds; settled by a person."""

    list_display = ["drift_link", "kind", "where", "ours_value", "provider_value", "status", "first_seen_at", "links"]
    # The first column links to the page where the drift is settled.
    list_display_links = None
    list_select_related = ["tenant__customer__partner", "subscription", "order_line__order"]
    list_filter = ["status", "kind", DriftAgeFilter, "tenant__customer__partner", "tenant__customer"]
    search_fields = ["=provider_subscription_id", "tenant__default_domain", "=tenant__tenant_id", "=offer_id"]
    ordering = ["-first_seen_at", "-id"]

    @admin.display(description="drift", ordering="id")
    def drift_link(self, obj: Drift):
        return format_html('<a href="{}">#{}</a>', reverse("admin:redemption_drift_settle", args=[obj.pk]), obj.pk)

    @admin.display(description="where")
    def where(self, obj: Drift) -> str:
        return obj.subject

    @admin.display(description="ours")
    def ours_value(self, obj: Drift) -> str:
        return _value(obj.ours)

    @admin.display(description="provider / bindings")
    def provider_value(self, obj: Drift) -> str:
        return _value(obj.provider)

    @admin.display(description="")
    def links(self, obj: Drift):
        parts = []
        if obj.subscription_id:
            parts.append(("subscription", reverse("admin:redemption_subscription_change", args=[obj.subscription_id])))
        if obj.tenant_id:
            parts.append(("tenant", reverse("admin:tenants_tenant_change", args=[obj.tenant_id])))
        if obj.order_line_id:
            parts.append(("order story", reverse("admin:order_story", args=[obj.order_line.order_id])))
        return format_html(" · ".join(['<a href="{}">{}</a>'] * len(parts)), *[v for p in parts for v in (p[1], p[0])])

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A drift's page is where it is settled.
        return HttpResponseRedirect(reverse("admin:redemption_drift_settle", args=[address_id(object_id, "drift")]))

    def get_urls(self):
        view = self.admin_site.admin_view(lambda request, pk: drift_settle_view(self, request, pk))
        return [path("<int:pk>/settle/", view, name="redemption_drift_settle"), *super().get_urls()]


SETTLE = {
    "accept": settle.drift_accept,
    "push": settle.drift_push,
    "explain": settle.drift_explain,
}


def drift_settle_view(model_admin, request: HttpRequest, pk: int) -> HttpResponse:
    """One drift with both values, and the ways to settle it: take the provider's, push ours, explain."""
    drift = get_object_or_404(
        Drift.objects.select_related("tenant__customer", "subscription__product", "order_line__order", "resolved_by"),
        pk=pk,
    )
    if not model_admin.has_view_permission(request, drift):
        raise PermissionDenied
    # Explaining needs the least: whoever may not explain a drift may not settle it at all.
    can_settle = settle.drift_settle_permitted(user=request.user, how="explain")
    errors: list[str] = []
    if request.method == "POST":
        how = request.POST.get("how", "")
        if how not in SETTLE or not settle.drift_settle_permitted(user=request.user, how=how):
            raise PermissionDenied
        try:
            SETTLE[how](drift=drift, acting_user=request.user, reason=request.POST.get("reason", ""))
        except ValidationError as exc:
            errors.extend(exc.messages)
        else:
            done = {
                "accept": "the provider's value is now ours",
                "push": "a correction waits for a supervisor's approval",
                "explain": "explained",
            }[how]
            model_admin.message_user(request, f"Drift #{drift.pk}: {done}.")
            return HttpResponseRedirect(reverse("admin:redemption_drift_settle", args=[drift.pk]))
    # A correction waiting or on its way settles the drift alone: no second way is offered meanwhile.
    on_its_way = drift.corrections.exclude(
        status__in=[ProviderCorrection.Status.REJECTED, ProviderCorrection.Status.DONE]
    ).first()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Drift #{drift.pk}: {drift.get_kind_display()}",
        "on_its_way": on_its_way,
        "opts": model_admin.model._meta,
        "drift": drift,
        "errors": errors,
        "can_settle": can_settle,
        "can_accept": settle.drift_settle_permitted(user=request.user, how="accept")
        and drift.status == Drift.Status.OPEN
        and drift.kind in Drift.ACCEPTABLE,
        "can_push": can_settle and drift.status == Drift.Status.OPEN and drift.kind in Drift.PUSHABLE,
        "open": drift.status == Drift.Status.OPEN,
        "corrections": drift.corrections.select_related("requested_by", "approved_by"),
    }
    return TemplateResponse(request, "admin/redemption/drift_settle.html", context)


@admin.register(ProviderCorrection)
class ProviderCorrectionAdmin(ReadOnlyAdminMixin, BackOfficeListAdmin):
    """Our values of drifted subscriptions on their way to the provider, approved by a second supervisor."""

    list_display = [
        "__str__",
        "changes_sent",
        "status",
        "requested_by",
        "approved_by",
        "reason",
        "last_error",
        "created_at",
    ]
    list_select_related = ["subscription__product", "subscription__tenant", "requested_by", "approved_by"]
    list_filter = ["status"]
    ordering = ["-created_at", "-id"]
    actions = ["approve_selected", "reject_selected"]

    @admin.display(description="sent")
    def changes_sent(self, correction: ProviderCorrection) -> str:
        return correction.changes_text

    @admin.action(description="Approve the selected corrections", permissions=["supervisor"])
    def approve_selected(self, request, queryset):
        """Show what goes to the provider and ask once more: a correction sent cannot be called back."""
        selected = list(queryset.select_related("subscription__product", "subscription__tenant", "requested_by")[:200])
        if "apply" not in request.POST:
            return TemplateResponse(
                request,
                "admin/redemption/correction_approve.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"Send {len(selected)} correction(s) to the provider?",
                    "opts": self.model._meta,
                    "corrections": selected,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        done = 0
        for correction in selected:
            try:
                settle.correction_approve(correction=correction, acting_user=request.user)
                done += 1
            except ValidationError as exc:
                self.message_user(request, f"Correction {correction.pk}: {' '.join(exc.messages)}", messages.ERROR)
        if done:
            self.message_user(request, f"{done} correction(s) approved and queued.")
        return None

    @admin.action(description="Reject the selected corrections (one reason for all)", permissions=["supervisor"])
    def reject_selected(self, request, queryset):
        """Confirm with one reason, then reject each: its drift can then be explained or accepted instead."""
        selected = list(queryset.select_related("subscription__product", "subscription__tenant")[:200])
        reason = reason_text(request.POST.get("reason", ""))
        if "apply" in request.POST and reason:
            done = 0
            for correction in selected:
                try:
                    settle.correction_reject(correction=correction, acting_user=request.user, reason=reason)
                    done += 1
                except ValidationError as exc:
                    self.message_user(request, f"Correction {correction.pk}: {' '.join(exc.messages)}", messages.ERROR)
            if done:
                self.message_user(request, f"{done} correction(s) rejected: nothing of them is sent.")
            return None
        return TemplateResponse(
            request,
            "admin/redemption/correction_reject.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Reject {len(selected)} correction(s)?",
                "opts": self.model._meta,
                "corrections": selected,
                "missing_reason": "apply" in request.POST,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def has_supervisor_permission(self, request) -> bool:
        return request.user.has_perm("redemption.supervisor")


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdminMixin, BackOfficeListAdmin):
    """Each reconciliation: who or what started it, its progress, what it found."""

    list_display = [
        "__str__",
        "status",
        "trigger",
        "scope",
        "progress",
        "new_count",
        "open_count",
        "closed_count",
        "started_at",
    ]
    list_select_related = ["started_by"]
    list_filter = ["status", "trigger"]
    ordering = ["-created_at", "-id"]
    change_form_template = "admin/redemption/reconciliationrun_change_form.html"
    change_list_template = "admin/redemption/reconciliationrun_change_list.html"

    @admin.display(description="progress")
    def progress(self, run: ReconciliationRun) -> str:
        return f"{run.tenants_done} of {run.tenants_total} tenants"

    def get_exclude(self, request, obj=None):
        # Where a stopped run resumes is the worker's business; the chosen tenants only where some were chosen.
        hidden = ["cursor"]
        if obj is not None and obj.scope == ReconciliationRun.Scope.ALL:
            hidden.append("tenant_ids")
        return hidden

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = get_object_or_404(ReconciliationRun, pk=address_id(object_id, "reconciliation run"))
        running = run.status in (ReconciliationRun.Status.PENDING, ReconciliationRun.Status.RUNNING)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "refresh": running})

    def get_urls(self):
        start = self.admin_site.admin_view(self.start_view)
        return [path("start/", start, name="redemption_reconciliationrun_start"), *super().get_urls()]

    def start_view(self, request: HttpRequest) -> HttpResponse:
        """Start a reconciliation of every tenant now (supervisors); a worker carries it out."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("redemption.supervisor"):
            raise PermissionDenied
        from redemption.reconciliation.tasks import reconciliation_run_task

        run = runs.reconciliation_start(trigger=ReconciliationRun.Trigger.DESK, acting_user=request.user)
        if run.status == ReconciliationRun.Status.PENDING and run.started_by_id == request.user.pk:
            enqueue_on_commit(reconciliation_run_task, run.pk)
            self.message_user(request, f"{run} queued: a worker checks every tenant now.")
        else:
            self.message_user(request, f"{run} is already under way.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:redemption_reconciliationrun_change", args=[run.pk]))
