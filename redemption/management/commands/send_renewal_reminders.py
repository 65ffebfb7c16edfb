from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from redemption.renewals import renewal_reminders_send


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--date must be a day as YYYY-MM-DD, not {value!r}.") from None


class Command(BaseCommand):
    help = (
        "Send the renewal reminders due today (rule 9), one mail per customer with the partner copied, "
        "and retry failed ones; the same service beat runs daily, run here in this process."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would be sent; send and record nothing.")
        parser.add_argument("--date", type=_parse_date, help="Run as of this day (YYYY-MM-DD) instead of today.")

    def handle(self, *args, **options) -> None:
        today = options["date"] or timezone.localdate()
        result = renewal_reminders_send(today=today, dry_run=options["dry_run"])
        if options["dry_run"]:
            self.stdout.write(f"Dry run as of {today}: {len(result.planned)} mail(s) would be sent.")
            for plan in result.planned:
                cc = f" cc {', '.join(plan.cc)}" if plan.cc else ""
                self.stdout.write(f"- to {', '.join(plan.to)}{cc}: {plan.subject}")
                for line in plan.lines:
                    self.stdout.write(f"    {line}")
            return
        summary = (
            f"Renewal reminders as of {today}: {result.mails_sent} mail(s) sent "
            f"covering {result.reminders_sent} reminder(s)"
        )
        if result.mails_failed:
            self.stdout.write(
                self.style.WARNING(
                    f"{summary}; {result.mails_failed} mail(s) failed ({result.reminders_failed} reminder(s)), "
                    "recorded and retried on the next run."
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"{summary}."))
