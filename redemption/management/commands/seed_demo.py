from django.conf import settings
from django.core.management.base import BaseCommand

from redemption.demo import demo_data_load, sandbox_only_tenants


class Command(BaseCommand):
    help = "Load the demo desk (partners, customers, tenants, agreements, orders, subscriptions); idempotent."

    def handle(self, *args, **options) -> None:
        result = demo_data_load(with_logins=settings.DEBUG)
        created = ", ".join(f"{count} {label}" for label, count in result.created.items() if count)
        self.stdout.write(f"Demo data: {'created ' + created if created else 'already loaded, nothing changed'}.")
        if not settings.DEBUG:
            self.stdout.write("DEBUG is off: no demo logins were created.")
            return
        self.stdout.write(self.style.SUCCESS("Log in at http://127.0.0.1:8000/admin/ with:"))
        for username, password, role in result.logins:
            self.stdout.write(f"  {username:<11} / {password}   ({role})")
        if settings.DEMO_SKIP_2FA:
            self.stdout.write("No authenticator app is needed for them here (DEMO_SKIP_2FA).")
        else:
            self.stdout.write("admin and supervisor set up an authenticator app at their first sign-in.")
        for customer, domain, _ in sandbox_only_tenants():
            self.stdout.write(
                f"The sandbox provider knows {domain} of {customer}: record it by that domain to bind its seats."
            )
