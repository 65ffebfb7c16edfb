"""A reconciliation run: read each tenant's subscriptions at the provider, compare, record what differs.

Tenants are taken in id order, a chunk at a time, so memory stays flat in their number and a run
that stops (a worker killed, the provider down) is resumed after the last chunk it recorded. The
provider is read outside any transaction, by a few threads at once; drifts are written per chunk.
"""

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from licensing.models import OrderLine
from redemption.gateway import ProviderNotFound, ProviderThrottled, ProviderTransient, gateway_get
from redemption.models import Drift, ReconciliationRun, SeatAllocation, Subscription
from redemption.reconciliation import compare
from redemption.reconciliation.compare import Finding
from redemption.statements import bulk_batch_rows
from tenants.models import Tenant

logger = logging.getLogger(__name__)
Run = ReconciliationRun

CHUNK = 200
# Reads of one tenant: attempts, and the longest pause between them (Retry-After is honoured up to it).
READ_ATTEMPTS = 6
READ_WAIT_CAP_SECONDS = 60.0
# A running run whose worker has shown no sign of life for this long is taken over by the next run.
STALE_AFTER = timedelta(minutes=15)
NOT_FOUND = object()


class RunFailed(Exception):
    """The run could not complete; it is recorded as failed and the next one resumes it."""


def reconciliation_start(*, tenant_ids: list[str] | None = None, trigger: str, acting_user=None) -> Run:
    """Create a run waiting to be carried out, or return the full run already under way.

    A full run after one that stopped midway carries on after the last tenant that one finished.
    A person who starts one must be a supervisor; the nightly schedule and the command start them as no one.
    """
    if acting_user is not None and not (acting_user.is_active and acting_user.has_perm("redemption.supervisor")):
        raise ValidationError("Only a supervisor can start a reconciliation.", code="not_supervisor")
    tenant_ids = sorted({str(uuid.UUID(str(value))) for value in tenant_ids or []})
    run = Run(
        trigger=trigger,
        scope=Run.Scope.TENANTS if tenant_ids else Run.Scope.ALL,
        tenant_ids=tenant_ids,
        started_by=acting_user,
    )
    if run.scope == Run.Scope.TENANTS:
        run.save()
        return run
    try:
        with transaction.atomic():
            last = Run.objects.select_for_update().filter(scope=Run.Scope.ALL).first()
            if last is not None and last.status in (Run.Status.PENDING, Run.Status.RUNNING):
                return last
            if last is not None and last.status == Run.Status.FAILED:
                run.cursor, run.tenants_done, run.new_count = last.cursor, last.tenants_done, last.new_count
            run.save()
            if last is not None and last.status == Run.Status.FAILED:
                # What the stopped run found counts as found by this one (it is not looked at again).
                Drift.objects.filter(status=Drift.Status.OPEN, last_run=last).update(last_run=run)
    except IntegrityError:
        return Run.objects.get(scope=Run.Scope.ALL, status__in=[Run.Status.PENDING, Run.Status.RUNNING])
    return run


def reconciliation_run(*, run: Run, workers: int = 1, progress: Callable[[Run], None] | None = None) -> Run:
    """Carry out the run: compare every tenant in scope, then the order lines, then close what went away."""
    claimed = Run.objects.filter(pk=run.pk, status=Run.Status.PENDING).update(
        status=Run.Status.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    stale = Run.objects.filter(
        pk=run.pk, status=Run.Status.RUNNING, heartbeat_at__lt=timezone.now() - STALE_AFTER
    ).update(heartbeat_at=timezone.now())
    run.refresh_from_db()
    if not (claimed or stale):
        return run
    tenants = _tenants_in_scope(run)
    if not run.tenants_total:
        run.tenants_total = tenants.count()
        run.save(update_fields=["tenants_total"])
    gateway = gateway_get()
    # The sandbox answers from the database: one thread, one connection.
    workers = max(1, workers) if settings.PROVIDER_BACKEND == "http" else 1
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # The next chunk is read from the provider while this one is written to the database.
            pending = None
            for chunk in _chunks(tenants, after=run.cursor):
                reading = (chunk, [pool.submit(_provider_list, gateway, tenant) for tenant in chunk])
                if pending:
                    _record_chunk(run, pending[0], [future.result() for future in pending[1]])
                    if progress:
                        progress(run)
                pending = reading
            if pending:
                _record_chunk(run, pending[0], [future.result() for future in pending[1]])
        _record_unbound(run)
        _close_gone(run)
    except Exception as exc:
        Run.objects.filter(pk=run.pk).update(
            status=Run.Status.FAILED, finished_at=timezone.now(), error=f"{exc.__class__.__name__}: {exc}"[:2000]
        )
        run.refresh_from_db()
        logger.warning("reconciliation %s stopped: %s", run.pk, exc)
        raise RunFailed(str(exc)) from exc
    run.open_count = open_drifts(run).count()
    run.status = Run.Status.DONE
    run.finished_at = timezone.now()
    run.save(update_fields=["open_count", "status", "finished_at"])
    return run


def open_drifts(run: Run):
    """Return the drifts open now, narrowed to the run's tenants when it checked only some."""
    drifts = Drift.objects.filter(status=Drift.Status.OPEN)
    if run.scope == Run.Scope.TENANTS:
        drifts = drifts.filter(tenant__tenant_id__in=run.tenant_ids)
    return drifts


# --- which tenants, and what the provider says of each ---------------------------------------------


def _tenants_in_scope(run: Run):
    """Tenants that hold or held a subscription or an allocation here (or the ones the run names)."""
    holds = Exists(Subscription.objects.filter(tenant=OuterRef("pk"))) | Exists(
        SeatAllocation.objects.filter(tenant=OuterRef("pk"))
    )
    tenants = Tenant.objects.filter(holds)
    if run.scope == Run.Scope.TENANTS:
        tenants = Tenant.objects.filter(tenant_id__in=run.tenant_ids)
    return tenants.order_by("pk")


def _chunks(tenants, *, after: int) -> Iterator[list[Tenant]]:
    while True:
        chunk = list(tenants.filter(pk__gt=after)[:CHUNK])
        if not chunk:
            return
        yield chunk
        after = chunk[-1].pk


def _provider_list(gateway, tenant: Tenant):
    """Return the provider's subscriptions of the tenant, or NOT_FOUND; retry what may pass."""
    delay = 1.0
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return gateway.subscription_list(tenant_id=tenant.tenant_id)
        except ProviderNotFound:
            return NOT_FOUND
        except ProviderThrottled as exc:
            if attempt == READ_ATTEMPTS:
                raise
            time.sleep(min(READ_WAIT_CAP_SECONDS, exc.retry_after))
        except ProviderTransient:
            if attempt == READ_ATTEMPTS:
                raise
            time.sleep(min(READ_WAIT_CAP_SECONDS, delay * random.uniform(0.5, 1.5)))
            delay *= 2
    raise AssertionError("unreachable")


# --- recording -------------------------------------------------------------------------------------


# The drifts found by reading a tenant's subscriptions at the provider.
READ_KINDS = [
    Drift.Kind.QUANTITY,
    Drift.Kind.TERM_END,
    Drift.Kind.STATUS,
    Drift.Kind.MISSING_AT_PROVIDER,
    Drift.Kind.UNKNOWN_AT_PROVIDER,
]


def _record_chunk(run: Run, chunk: list[Tenant], lists: list) -> None:
    """Compare each tenant of the chunk and record its drifts; move the run's cursor past the chunk."""
    ids = [tenant.pk for tenant in chunk]
    subscriptions: dict[int, list[Subscription]] = {pk: [] for pk in ids}
    ended: dict[int, list[Subscription]] = {pk: [] for pk in ids}
    for subscription in Subscription.objects.filter(tenant_id__in=ids).select_related("product").order_by("pk"):
        deprovisioned = subscription.status == Subscription.Status.DEPROVISIONED
        (ended if deprovisioned else subscriptions)[subscription.tenant_id].append(subscription)
    bindings = _bindings_by_subscription([s.pk for subs in subscriptions.values() for s in subs])
    findings: list[Finding] = []
    unread: list[int] = []
    for tenant, listed in zip(chunk, lists, strict=True):
        ours = subscriptions[tenant.pk]
        if listed is NOT_FOUND:
            findings.append(compare.tenant_unknown(tenant.pk))
            # Its subscriptions could not be read: what was found of them before is neither found nor gone.
            unread.append(tenant.pk)
        else:
            findings += compare.provider_findings(tenant.pk, ours, listed, ended[tenant.pk])
        for subscription in ours:
            if subscription.status == Subscription.Status.SUSPENDED:
                continue  # a reversed new-seats binding: nothing is meant to be there
            accounted = compare.seats_accounted_for(bindings.get(subscription.pk, []))
            found = compare.seats_finding(tenant.pk, subscription, accounted)
            if found:
                findings.append(found)
    with transaction.atomic():
        _upsert(run, findings)
        if unread:
            # The drifts read from the provider's side stay as they were; those of our own records were checked.
            Drift.objects.filter(status=Drift.Status.OPEN, tenant_id__in=unread, kind__in=READ_KINDS).update(
                last_run=run
            )
        run.cursor = chunk[-1].pk
        run.tenants_done += len(chunk)
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["cursor", "tenants_done", "heartbeat_at", "new_count"])


def _bindings_by_subscription(subscription_ids: list[int]) -> dict[int, list[SeatAllocation]]:
    grouped: dict[int, list[SeatAllocation]] = {}
    for allocation in (
        SeatAllocation.objects.filter(subscription_id__in=subscription_ids, status__in=SeatAllocation.AT_PROVIDER)
        .select_related("order_line")
        .order_by("bound_at", "pk")
    ):
        grouped.setdefault(allocation.subscription_id, []).append(allocation)
    return grouped


def _upsert(run: Run, findings: list[Finding]) -> None:
    """Keep one open drift per finding: refresh the one that is open, open a new one otherwise."""
    now = timezone.now()
    existing = {d.key: d for d in Drift.objects.filter(status=Drift.Status.OPEN, key__in=[f.key for f in findings])}
    explained = _explained(finding for finding in findings if finding.key not in existing)
    created = []
    for finding in findings:
        drift = existing.get(finding.key)
        if drift is not None:
            drift.ours, drift.provider = finding.ours, finding.provider
            drift.last_run, drift.last_seen_at = run, now
            drift.save(update_fields=["ours", "provider", "last_run", "last_seen_at"])
            continue
        if explained.get(finding.key) == (finding.ours, finding.provider):
            continue  # explained by a person, and still just as it was: the explanation holds
        created.append(
            Drift(
                key=finding.key,
                kind=finding.kind,
                tenant_id=finding.tenant_id,
                subscription_id=finding.subscription_id,
                order_line_id=finding.order_line_id,
                provider_subscription_id=finding.provider_subscription_id,
                offer_id=finding.offer_id,
                ours=finding.ours,
                provider=finding.provider,
                first_run=run,
                last_run=run,
                first_seen_at=now,
                last_seen_at=now,
            )
        )
    Drift.objects.bulk_create(created, batch_size=bulk_batch_rows(Drift))
    run.new_count += len(created)


def _explained(findings) -> dict[str, tuple]:
    """Return, by key, the values of the findings' last settled drifts where that settlement was an explanation."""
    keys = [finding.key for finding in findings]
    if not keys:
        return {}
    last: dict[str, Drift] = {}
    settled = Drift.objects.filter(key__in=keys).exclude(status=Drift.Status.OPEN).order_by("key", "closed_at", "pk")
    for drift in settled.only("key", "status", "ours", "provider"):
        last[drift.key] = drift
    return {key: (drift.ours, drift.provider) for key, drift in last.items() if drift.status == Drift.Status.EXPLAINED}


def _record_unbound(run: Run) -> None:
    """Record order lines whose seats are still not all bound RECONCILE_UNBOUND_DAYS after their order date."""
    cutoff = timezone.localdate() - timedelta(days=settings.RECONCILE_UNBOUND_DAYS)
    bound = (
        SeatAllocation.objects.filter(order_line=OuterRef("pk"), status__in=SeatAllocation.AT_PROVIDER)
        .values("order_line")
        .annotate(total=Sum("quantity"))
        .values("total")
    )
    waiting = [*SeatAllocation.IN_FLIGHT, SeatAllocation.Status.AWAITING_APPROVAL, SeatAllocation.Status.FAILED]
    not_yet_bound = SeatAllocation.objects.filter(order_line=OuterRef("pk"), status__in=waiting)
    # Lines with seats never requested are found by the partial index; the rest have allocations under way.
    lines = (
        OrderLine.objects.filter(Q(seats_allocated__lt=F("quantity")) | Exists(not_yet_bound))
        .filter(order__ordered_on__lte=cutoff)
        .annotate(bound=Coalesce(Subquery(bound, output_field=IntegerField()), Value(0)))
        .select_related("order__agreement", "product")
        .order_by("pk")
    )
    proposed = _ProposedTenants()
    findings = []
    for line in lines.iterator(chunk_size=2000):
        tenant = proposed.for_line(line)
        if run.scope == Run.Scope.TENANTS and (tenant is None or str(tenant.tenant_id) not in run.tenant_ids):
            continue
        found = compare.unbound_finding(line, line.bound, tenant.pk if tenant else None)
        if found:
            findings.append(found)
        if len(findings) >= CHUNK:
            with transaction.atomic():
                _upsert(run, findings)
                run.save(update_fields=["new_count"])
            findings = []
    with transaction.atomic():
        _upsert(run, findings)
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["new_count", "heartbeat_at"])


class _ProposedTenants:
    """The tenant a line's seats would go to: the agreement's (rule 3), else the reseller's suggested domain."""

    def __init__(self) -> None:
        self.cache: dict[tuple, Tenant | None] = {}

    def for_line(self, line: OrderLine) -> Tenant | None:
        from redemption.services import agreement_tenant

        order = line.order
        key = (order.agreement_id, line.product_id, order.suggested_tenant_domain)
        if key not in self.cache:
            tenant = agreement_tenant(agreement=order.agreement, product=line.product)
            if tenant is None and order.suggested_tenant_domain:
                tenant = Tenant.objects.filter(
                    default_domain=order.suggested_tenant_domain, customer_id=order.agreement.customer_id
                ).first()
            self.cache[key] = tenant
        return self.cache[key]


def _close_gone(run: Run) -> None:
    """Close the open drifts of the run's scope that it did not find again: they went away by themselves."""
    # A run started after this one (a supervisor's run of some tenants, meanwhile) saw it since: not gone.
    gone = Drift.objects.filter(status=Drift.Status.OPEN).exclude(last_run=run).exclude(last_run__gt=run.pk)
    if run.scope == Run.Scope.TENANTS:
        gone = gone.filter(tenant__tenant_id__in=run.tenant_ids)
    now = timezone.now()
    closed = gone.update(status=Drift.Status.CLOSED, closed_at=now, resolution_reason="No longer found")
    Run.objects.filter(pk=run.pk).update(closed_count=closed)
    run.closed_count = closed
