"""What the binding benchmarks share: a scratch database, queued allocations, real Celery workers."""

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
from django.core.management.base import CommandError
from django.db import connection

from config.celery import app as celery_app
from licensing.models import Agreement, Order, OrderLine, Product, Program
from redemption.models import SeatAllocation
from redemption.testing.provider_server import ProviderServer
from tenants.models import Customer, Partner, Tenant

TOKEN = "bench-token"  # noqa: S105 - a throwaway token between two local processes


def database_recreate() -> None:
    """Drop and create the configured (scratch) database, empty."""
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


def database_analyze() -> None:
    """Refresh the planner's statistics, as autovacuum does in production after a bulk load.

    Right after tens of thousands of rows are inserted the statistics still describe empty tables,
    and PostgreSQL plans a binding's reads through the agreement's every line instead of its tenant.
    """
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def allocations_queue(server: ProviderServer, count: int, *, prefix: str, lines_per_order: int = 0) -> list[int]:
    """One customer, `count` tenants known to the provider, one new line each with a queued allocation.

    The lines make one order, or orders of `lines_per_order` lines each.
    """
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
    per_order = lines_per_order or count
    orders = Order.objects.bulk_create(
        Order(license_number=f"{prefix.upper()}{n:05d}", agreement=agreement, ordered_on=date(2026, 11, 1))
        for n in range((count + per_order - 1) // per_order)
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
            order=orders[n // per_order],
            line_number=n % per_order + 1,
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


def worker_start(server: ProviderServer, concurrency: int, *, name: str = "", **env: str) -> subprocess.Popen:
    """Start a Celery worker as production runs it, against the benchmark's provider."""
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
        **env,
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
            *([f"--hostname={name}@%h"] if name else []),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def workers_stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def workers_ready(count: int = 1) -> None:
    """Wait until `count` workers answer a ping."""
    for _ in range(60):
        if len(celery_app.control.ping(timeout=1.0)) >= count:
            return
    raise CommandError("The Celery workers did not start.")


def bound_wait(ids: list[int], timeout: float) -> None:
    """Wait until none of the allocations is queued or binding any more, or the timeout passes."""
    deadline = time.monotonic() + timeout
    # The ids are consecutive (one bulk insert): a range keeps the polling query cheap.
    pending = SeatAllocation.objects.filter(pk__gte=min(ids), pk__lte=max(ids), status__in=["queued", "binding"])
    while time.monotonic() < deadline and pending.exists():
        time.sleep(0.2)


def load_text(load: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in load)


def worker_pids(workers) -> list[int]:
    """Return the pids of the workers and of their pool processes."""
    pids = [worker.pid for worker in workers]
    for pid in list(pids):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)  # noqa: S603, S607
        pids.extend(int(child) for child in out.stdout.split())
    return pids


def backend_pids() -> list[int]:
    """Return the pids of the other PostgreSQL sessions on this database (the workers', on this machine)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def cpu_seconds(pids: list[int]) -> float:
    """Return the CPU time (user and system) the processes have used, as /proc tells it."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
