from django.conf import settings
from django.contrib import admin
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from config.admin_tools import BackOfficeListAdmin, ReadOnlyAdminMixin
from desk import services, views
from desk.models import LockedAccount, SignInEvent


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
        unlock = self.admin_site.admin_view(lambda request, pk: views.unlock_view(self, request, pk))
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
