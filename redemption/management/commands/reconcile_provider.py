import json

from django.core.management.base import BaseCommand, CommandError

from redemption.models import Drift, ReconciliationRun
from redemption.reconciliation import runs


def drift_row(drift: Drift) -> dict:
    """One drift as the JSON output lists it."""
    return {
        "kind": drift.kind,
        "tenant_id": str(drift.tenant.tenant_id) if drift.tenant_id else None,
        "subscription_id": drift.provider_subscription_id or None,
        "offer_id": drift.offer_id or None,
        "ours": drift.ours,
        "provider": drift.provider,
    }


class Command(BaseCommand):
    help = "Compare what the provider holds with our subscriptions and bindings, and record what differs (drift)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", action="append", default=[], metavar="TENANT_ID", help="Only this tenant.")
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument("--workers", type=int, default=4, help="Tenants read from the provider at once.")

    def handle(self, *args, tenant: list[str], format: str, workers: int, **options) -> None:
        try:
            run = runs.reconciliation_start(tenant_ids=tenant, trigger=ReconciliationRun.Trigger.COMMAND)
        except ValueError as exc:
            raise CommandError(f"--tenant takes a tenant ID (a GUID): {exc}") from exc
        try:
            run = runs.reconciliation_run(run=run, workers=workers)
        except runs.RunFailed as exc:
            raise CommandError(
                f"The run could not complete ({exc}); {run.tenants_done} tenant(s) checked so far. "
                "The next run carries on from there."
            ) from exc
        if run.status != ReconciliationRun.Status.DONE:
            raise CommandError(f"Reconciliation #{run.pk} is already under way in another process.")
        drifts = runs.open_drifts(run).select_related("tenant", "order_line__order").order_by("kind", "pk")
        if format == "json":
            self.stdout.write(json.dumps([drift_row(d) for d in drifts.iterator()], indent=2))
            return
        for drift in drifts.iterator():
            self.stdout.write(
                f"{drift.kind:<20} {drift.subject}: ours {_text(drift.ours)}, provider {_text(drift.provider)}"
            )
        self.stdout.write(run.summary)


def _text(value) -> str:
    return "—" if value is None else str(value)
