"""Benchmark: bind N allocations through the HTTP client and real Celery workers against a slow provider."""

import os

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from redemption.models import SeatAllocation
from redemption.tasks import allocation_bind_task
from redemption.testing.bench import (
    TOKEN,
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
from redemption.testing.provider_server import ProviderServer


class Command(BaseCommand):
    help = "Bind allocations through a local provider answering after --latency-ms with a real Celery worker."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=2000)
        parser.add_argument("--latency-ms", type=int, default=50)
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--timeout", type=int, default=600)

    def handle(self, *args, count: int, latency_ms: int, concurrency: int, timeout: int, **options) -> None:
        if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
            raise CommandError("The benchmark needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")
        database_recreate()
        call_command("migrate", verbosity=0)
        server = ProviderServer(token=TOKEN, latency=latency_ms / 1000).start()
        warmup = allocations_queue(server, 2 * concurrency, prefix="warm")
        ids = allocations_queue(server, count, prefix="bench")
        database_analyze()
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        load_before = os.getloadavg()
        worker = worker_start(server, concurrency)
        try:
            workers_ready()
            # Every pool process imports, connects to the database and to the provider before timing.
            for allocation_id in warmup:
                allocation_bind_task.delay(allocation_id)
            bound_wait(warmup, 60)
            if SeatAllocation.objects.filter(pk__in=warmup).exclude(status="bound").exists():
                raise CommandError("The warm-up allocations did not bind: is the worker healthy?")
            # CPU from here on: the worker and its pool processes, and their PostgreSQL sessions.
            pids = {"worker": worker_pids([worker]), "postgres": backend_pids()}
            cpu_before = {who: cpu_seconds(them) for who, them in pids.items()}
            started = timezone.now()
            for allocation_id in ids:
                allocation_bind_task.delay(allocation_id)
            bound_wait(ids, timeout)
            cpu = {who: (cpu_seconds(them) - cpu_before[who]) / count * 1000 for who, them in pids.items()}
        finally:
            workers_stop([worker])
            server.stop()
        load_after = os.getloadavg()
        measured = SeatAllocation.objects.filter(pk__in=ids)
        statuses = dict.fromkeys(SeatAllocation.Status.values, 0)
        for status in measured.values_list("status", flat=True):
            statuses[status] += 1
        finished = statuses["bound"]
        # From the first enqueue to the last allocation bound, as the database recorded it.
        last_bound = measured.filter(status="bound").aggregate(last=Max("bound_at"))["last"] or timezone.now()
        elapsed = (last_bound - started).total_seconds()
        unfinished = statuses["queued"] + statuses["binding"]
        rate = finished / elapsed
        limit = concurrency / (latency_ms / 1000)
        self.stdout.write(
            f"bench-binding: {count} allocations, {concurrency} worker processes, provider latency {latency_ms} ms\n"
            f"  elapsed            {elapsed:8.2f} s\n"
            f"  throughput         {rate:8.1f} allocations/s\n"
            f"  latency-bound limit{limit:8.1f} allocations/s\n"
            f"  ratio              {rate / limit:8.1%}  (target >= 70%)\n"
            f"  CPU per binding    {cpu['worker']:8.1f} ms in the worker, {cpu['postgres']:.1f} ms in PostgreSQL\n"
            f"  bound {statuses['bound']}, failed {statuses['failed']}, unfinished {unfinished}\n"
            f"  provider writes applied {server.state.applied_writes - len(warmup)} (+{len(warmup)} warm-up), "
            f"subscriptions {len(server.state.subscriptions) - len(warmup)}\n"
            f"  provider calls in flight at most {server.state.most_in_flight} (one per worker process at most)\n"
            f"  machine load (1/5/15 min) {load_text(load_before)} before, {load_text(load_after)} after, "
            f"on {os.cpu_count()} CPUs"
        )
        if unfinished or rate / limit < 0.7:
            raise CommandError("Target missed: below 70% of the latency-bound limit or allocations left unfinished.")
