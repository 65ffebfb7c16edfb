"""Benchmark: binding at a distributor's scale, with and without the provider limiting its rate."""

import math
import os
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Max, Min

from redemption.models import SeatAllocation
from redemption.tasks import allocation_bind_task
from redemption.testing.bench import (
    allocations_queue,
    backend_pids,
    bound_wait,
    cpu_seconds,
    database_analyze,
    database_recreate,
    load_text,
    worker_pids,
    worker_start,
    workers_ready,
    workers_stop,
)
from redemption.testing.provider_server import ProviderServer, busiest_second

# Whose CPU the report shows per binding: the worker processes, their PostgreSQL sessions, this process
# (the provider server's threads and the polling).
CPU_OF = ["workers", "postgres", "bench"]
# The provider's own limit allows one call of jitter: a call that goes out up to one interval late
# (a busy machine) is not refused for being close to the next one.
SERVER_BURST = 2


@dataclass
class Run:
    """One scenario: who works, against what limit, and what came of it."""

    label: str
    workers: list[int]  # processes per worker instance (one instance per host)
    count: int
    limit: float  # the limit that applies: latency-bound or rate-bound, calls per second
    rate_bound: bool = False
    client_rate: float = 0.0  # PROVIDER_RATE_LIMIT
    server_rate: float = 0.0
    bound: int = 0
    unfinished: int = 0
    failed: int = 0
    elapsed: float = 0.0
    calls: int = 0
    sustained: float = 0.0
    busiest: int = 0
    throttled: int = 0
    duplicates: int = 0
    lost: int = 0
    cpu: dict = None  # CPU seconds spent, by whom

    @property
    def cpu_per_binding(self) -> str:
        return "/".join(f"{self.cpu[who] / max(1, self.count) * 1000:.1f}" for who in CPU_OF) if self.cpu else "-"

    @property
    def rate(self) -> float:
        return self.bound / self.elapsed if self.elapsed else 0.0


class Command(BaseCommand):
    help = "Bind with real Celery workers: 1 to 8 processes, two hosts, then under a provider rate limit."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--latency-ms", type=int, default=50)
        parser.add_argument("--rate-limit", type=float, default=40.0, help="the provider's limit, calls/s")
        parser.add_argument("--processes", default="1,2,4,8", help="worker processes to measure, one instance")
        parser.add_argument("--seconds", type=float, default=25.0, help="about how long each run lasts at its limit")
        parser.add_argument("--timeout", type=int, default=600)

    def handle(
        self, *args, latency_ms: int, rate_limit: float, processes: str, seconds: float, timeout: int, **options
    ):
        if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
            raise CommandError("The benchmark needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")
        latency = latency_ms / 1000
        runs = [Run(f"{n} process{'es' if n > 1 else ''}", [n], 0, n / latency) for n in map(int, processes.split(","))]
        runs.append(Run("2 hosts x 4 processes", [4, 4], 0, 8 / latency))
        limited = {"limit": rate_limit, "rate_bound": True, "server_rate": rate_limit}
        budgeted = Run(f"2x4, limit {rate_limit:g}/s, PROVIDER_RATE_LIMIT={rate_limit:g}", [4, 4], 0, **limited)
        budgeted.client_rate = rate_limit
        unset = Run(f"2x4, limit {rate_limit:g}/s, PROVIDER_RATE_LIMIT unset", [4, 4], 0, **limited)
        # The provider lowers its rate without notice: the budget learns it from the 429s.
        lowered = 0.75 * rate_limit
        learned = Run(
            f"2x4, limit {lowered:g}/s, PROVIDER_RATE_LIMIT={rate_limit:g}",
            [4, 4],
            0,
            limit=lowered,
            rate_bound=True,
            server_rate=lowered,
            client_rate=rate_limit,
        )
        runs += [budgeted, unset, learned]
        for run in runs:
            run.count = max(100, math.ceil(run.limit * seconds))
        # Without the budget the workers spend most of their time in 429 pauses: a smaller batch.
        unset.count //= 4
        # Long enough for the cut to be won back and tried again.
        learned.count *= 2

        database_recreate()
        call_command("migrate", verbosity=0)
        server = ProviderServer(token="bench-token", latency=latency).start()  # noqa: S106 - see bench.TOKEN
        load_before = os.getloadavg()
        done = []
        try:
            for n, run in enumerate(runs):
                self.stdout.write(f"  {run.label}: {run.count} allocations ...")
                self._run(server, run, prefix=f"r{n}", timeout=timeout)
                done.append(run)
        finally:
            server.stop()
            if len(done) < len(runs):
                # Show what was measured before the failure.
                self._report(done, latency_ms, load_before, os.getloadavg(), check=False)
        self._report(runs, latency_ms, load_before, os.getloadavg())

    def _run(self, server: ProviderServer, run: Run, *, prefix: str, timeout: float) -> None:
        """Queue the batch first (a renewal season's), then start the workers; time from first bound to last."""
        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        ids = allocations_queue(server, run.count, prefix=prefix, lines_per_order=10)
        database_analyze()
        for allocation_id in ids:
            allocation_bind_task.delay(allocation_id)
        server.rate_limit_set(run.server_rate, burst=SERVER_BURST)
        with server.lock:
            server.state.calls.clear()
        env = {"PROVIDER_RATE_LIMIT": str(run.client_rate), "PROVIDER_RATE_BURST": "1"}
        workers = [
            worker_start(server, concurrency, name=f"{prefix}-host{n}", **env)
            for n, concurrency in enumerate(run.workers)
        ]
        own = os.times()
        try:
            workers_ready(len(workers))
            bound_wait(ids, timeout)
            # Read before the workers stop: their processes and database sessions end with them.
            run.cpu = {"workers": cpu_seconds(worker_pids(workers)), "postgres": cpu_seconds(backend_pids())}
        finally:
            workers_stop(workers)
        run.cpu["bench"] = sum(os.times()[:2]) - sum(own[:2])
        self._measure(server, run, ids)

    def _measure(self, server: ProviderServer, run: Run, ids: list[int]) -> None:
        measured = SeatAllocation.objects.filter(pk__in=ids)
        statuses = dict.fromkeys(SeatAllocation.Status.values, 0)
        for status in measured.values_list("status", flat=True):
            statuses[status] += 1
        run.bound = statuses["bound"]
        run.failed = statuses["failed"]
        run.unfinished = statuses["queued"] + statuses["binding"]
        span = measured.filter(status="bound").aggregate(first=Min("bound_at"), last=Max("bound_at"))
        if span["first"]:
            run.elapsed = (span["last"] - span["first"]).total_seconds()
            run.bound -= 1  # the rate between the first binding and the last
        with server.lock:
            calls = [dict(call) for call in server.state.calls]
            subscriptions = [dict(item) for item in server.state.subscriptions.values()]
        run.calls = len(calls)
        run.throttled = sum(call["status"] == 429 for call in calls)
        run.busiest = busiest_second(calls)
        run.sustained = sustained(calls)
        keys = {str(key): pk for pk, key in measured.values_list("pk", "idempotency_key")}
        held: dict[str, int] = {}
        for item in subscriptions:
            key = item.get("friendlyName", "").rsplit("[", 1)[-1].rstrip("]")
            if key in keys:
                held[key] = held.get(key, 0) + 1
        run.duplicates = sum(n - 1 for n in held.values())
        bound_keys = {str(key) for key in measured.filter(status="bound").values_list("idempotency_key", flat=True)}
        # Lost: not bound here, or bound here with nothing at the provider (and the reverse).
        run.lost = len(keys) - len(bound_keys) + len(bound_keys - set(held)) + len(set(held) - bound_keys)

    def _report(self, runs: list[Run], latency_ms: int, load_before, load_after, *, check: bool = True) -> None:
        out = [
            f"bench-scale: provider latency {latency_ms} ms, real Celery workers on Redis, PostgreSQL, "
            f"{os.cpu_count()} CPUs; machine load (1/5/15 min) {load_text(load_before)} before, "
            f"{load_text(load_after)} after",
            f"{'run':<45} {'allocs':>6} {'alloc/s':>8} {'limit':>6} {'ratio':>6} {'sustained':>9} {'ratio':>6} "
            f"{'busiest 1s':>10} {'429s':>5} {'dup':>4} {'lost':>4}  CPU ms/binding (workers/PostgreSQL/bench)",
        ]
        missed = []
        for run in runs:
            out.append(
                f"{run.label:<45} {run.count:>6} {run.rate:>8.1f} {run.limit:>6.0f} {run.rate / run.limit:>6.0%} "
                f"{run.sustained:>9.1f} {run.sustained / run.limit:>6.0%} {run.busiest:>10} "
                f"{run.throttled:>5} {run.duplicates:>4} {run.lost:>4}  {run.cpu_per_binding}"
            )
            if run.duplicates or run.lost or run.unfinished or run.failed:
                missed.append(f"{run.label}: duplicates, lost, failed or unfinished allocations")
        if not check:
            self.stdout.write("\n".join(out))
            return
        by_label = {run.label: run for run in runs}
        four = by_label.get("4 processes")
        if four and four.rate / four.limit < 0.9:
            missed.append(f"4 processes: {four.rate / four.limit:.0%} of the latency-bound limit (target >= 90%)")
        budgeted = next(run for run in runs if run.client_rate and run.client_rate == run.server_rate)
        if budgeted.sustained / budgeted.limit < 0.95:
            missed.append(f"{budgeted.label}: sustained {budgeted.sustained / budgeted.limit:.0%} (target >= 95%)")
        if budgeted.busiest > budgeted.limit + 2:
            missed.append(f"{budgeted.label}: {budgeted.busiest} calls in one second (target <= limit + 2)")
        if budgeted.throttled >= 0.01 * budgeted.calls:
            missed.append(
                f"{budgeted.label}: {budgeted.throttled} of {budgeted.calls} calls answered 429 (target < 1%)"
            )
        out.append(
            "sustained: provider calls answered per second over the middle 80% of the run; busiest 1s: calls sent "
            "in the busiest second; limit: processes / latency, or the provider's rate"
        )
        self.stdout.write("\n".join(out))
        if missed:
            raise CommandError("Target missed: " + "; ".join(missed))


def sustained(calls: list[dict]) -> float:
    """Return the calls answered (not 429) per second over the middle 80% of the run."""
    answered = sorted(call["at"] for call in calls if call["status"] and call["status"] != 429)
    if len(answered) < 10:
        return 0.0
    first, last = answered[0], answered[-1]
    start, end = first + 0.1 * (last - first), last - 0.1 * (last - first)
    inside = sum(start <= at <= end for at in answered)
    return inside / (end - start) if end > start else 0.0
