"""Benchmark: bind N allocations through the HTTP client and real Celery workers against a slow provider."""

import os
import secrets
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from config.celery import app as celery_app
from licensing.models import Agreement, Order, OrderLine, Product, Program
from redemption.models import SeatAllocation
from redemption.tasks import allocation_bind_task
from redemption.testing.provider_server import ProviderServer
from tenants.models import Customer, Partner, Tenant

TOKEN = "bench-token"  # noqa: S105 - a throwaway token between two local processes


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
        self._fresh_database()
        call_command("migrate", verbosity=0)
        server = ProviderServer(token=TOKEN, latency=latency_ms / 1000).start()
        warmup = self._allocations(server, 2 * concurrency, prefix="warm")
        ids = self._allocations(server, count, prefix="bench")
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
        load_before = os.getloadavg()
        worker = self._worker(server, concurrency)
        try:
            self._wait_ready()
            # Every pool process imports, connects to the database and to the provider before timing.
            for allocation_id in warmup:
                allocation_bind_task.delay(allocation_id)
            self._wait_done(warmup, 60)
            if SeatAllocation.objects.filter(pk__in=warmup).exclude(status="bound").exists():
                raise CommandError("The warm-up allocations did not bind: is the worker healthy?")
            started = timezone.now()
            for allocation_id in ids:
                allocation_bind_task.delay(allocation_id)
            self._wait_done(ids, timeout)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
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
            f"  bound {statuses['bound']}, failed {statuses['failed']}, unfinished {unfinished}\n"
            f"  provider writes applied {server.state.applied_writes - len(warmup)} (+{len(warmup)} warm-up), "
            f"subscriptions {len(server.state.subscriptions) - len(warmup)}\n"
            f"  machine load (1/5/15 min) {_load(load_before)} before, {_load(load_after)} after, "
            f"on {os.cpu_count()} CPUs"
        )
        if unfinished or rate / limit < 0.7:
            raise CommandError("Target missed: below 70% of the latency-bound limit or allocations left unfinished.")

    def _fresh_database(self) -> None:
        name = connection.settings_dict["NAME"]
        connection.close()
        s = connection.settings_dict
        with psycopg.connect(
            host=s["HOST"] or "127.0.0.1",
            port=s["PORT"] or 5432,
            user=s["USER"],
            password=s["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')

    def _allocations(self, server: ProviderServer, count: int, prefix: str) -> list[int]:
        """One customer, `count` tenants, one new line per tenant, each with a queued allocation."""
        user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
        partner, _ = Partner.objects.get_or_create(mpn_id="4400000", defaults={"name": "Bench Reseller"})
        customer = Customer.objects.create(name=f"{prefix} customer", email="it@bench.example", partner=partner)
        agreement = Agreement.objects.create(
            program=Program.OV,
            number=f"V{prefix.upper()}",
            customer=customer,
            partner=partner,
            starts_on=date(2026, 1, 1),
            ends_on=date(2029, 1, 1),
        )
        product, _ = Product.objects.get_or_create(
            part_number="Q5Y-00003", defaults={"description": "O365 E3", "term_months": 12}
        )
        order = Order.objects.create(
            license_number=f"{prefix.upper()}0001", agreement=agreement, ordered_on=date(2026, 11, 1)
        )
        tenants = Tenant.objects.bulk_create(
            Tenant(
                tenant_id=uuid.uuid4(),
                default_domain=f"{prefix}{n}.onmicrosoft.com",
                display_name=f"{prefix} {n}",
                customer=customer,
            )
            for n in range(count)
        )
        for tenant in tenants:
            server.add_tenant(tenant.tenant_id, tenant.default_domain, tenant.display_name)
        lines = OrderLine.objects.bulk_create(
            OrderLine(
                order=order,
                line_number=n + 1,
                product=product,
                quantity=5,
                kind=OrderLine.Kind.NEW,
                starts_on=date(2026, 11, 1),
                ends_on=date(2026, 11, 1) + timedelta(days=365),
                seats_allocated=5,
            )
            for n in range(count)
        )
        allocations = SeatAllocation.objects.bulk_create(
            SeatAllocation(order_line=line, tenant=tenant, quantity=5, requested_by=user, status="queued")
            for line, tenant in zip(lines, tenants, strict=True)
        )
        return [a.pk for a in allocations]

    def _worker(self, server: ProviderServer, concurrency: int) -> subprocess.Popen:
        env = {
            **os.environ,
            "PROVIDER_BACKEND": "http",
            "PROVIDER_URL": server.url,
            "PROVIDER_TOKEN": TOKEN,
            # The worker as it runs in production: persistent connections, DEBUG off (no query log).
            "CONN_MAX_AGE": "600",
            "DEBUG": "off",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "localhost",
            "LOG_LEVEL": "WARNING",
        }
        return subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
        )

    def _wait_ready(self) -> None:
        for _ in range(60):
            if celery_app.control.ping(timeout=1.0):
                return
        raise CommandError("The Celery worker did not start.")

    def _wait_done(self, ids: list[int], timeout: int) -> None:
        deadline = time.monotonic() + timeout
        # The ids are consecutive (one bulk insert): a range keeps the polling query cheap.
        pending = SeatAllocation.objects.filter(pk__gte=min(ids), pk__lte=max(ids), status__in=["queued", "binding"])
        while time.monotonic() < deadline and pending.exists():
            time.sleep(0.2)


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in load)
