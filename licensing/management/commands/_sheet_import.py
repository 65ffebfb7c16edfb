"""What the two import commands share: arguments, the run, the report."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from licensing.services import file_import


class SheetImportCommand(BaseCommand):
    kind = ""
    requires_migrations_checks = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="CSV or XLSX file")
        parser.add_argument("--dry-run", action="store_true", help="Check and report; write nothing.")
        parser.add_argument("--user", help="Username recorded in the audit trail as the importer.")

    def handle(self, *args, path: str, dry_run: bool, user: str | None, **options) -> None:
        acting_user = None
        if user:
            try:
                acting_user = get_user_model().objects.get(username=user)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {user!r}.") from None
        report = file_import(kind=self.kind, path=path, acting_user=acting_user, dry_run=dry_run)
        if not report.ok:
            for error in report.errors:
                self.stderr.write(str(error))
            if report.errors_not_listed:
                self.stderr.write(f"… and {report.errors_not_listed} more")
            raise CommandError(
                f"{report.error_count} error(s) in {path}; nothing was written. {report.summary()} checked."
            )
        prefix = "Dry run, nothing written: " if dry_run else ""
        job = f" (import #{report.job_id})" if report.job_id else ""
        self.stdout.write(self.style.SUCCESS(f"{prefix}{report.summary()}{job}."))
