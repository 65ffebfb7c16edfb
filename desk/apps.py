from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class BackOfficeAdminConfig(AdminConfig):
    """Django's admin, as the back office's own site: the desk."""

    default_site = "desk.site.BackOfficeAdminSite"


class DeskConfig(AppConfig):
    """The screens staff work in, and their sign-in: lockouts, the second factor, idle sessions."""

    name = "desk"
    verbose_name = "Staff sign-in"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.contrib.auth.signals import user_logged_in

        from desk.services import lockout_record, sign_in_failures_clear

        # django-axes announces a lockout only through this signal; it is recorded, nothing more.
        user_locked_out.connect(lockout_record, dispatch_uid="desk.lockout_record")
        user_logged_in.connect(sign_in_failures_clear, dispatch_uid="desk.sign_in_failures_clear")
