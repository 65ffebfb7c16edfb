"""Benchmark of reconciliation with the provider on PostgreSQL: `make bench-reconcile`.

Fills a scratch database (DATABASE_URL's name + "_bench_reconcile", created and dropped here) with
10,000 tenants holding 30,000 bound subscriptions, serves the same subscriptions from the local
provider server in its own process answering after 20 ms (1% of them changed behind our back),
then runs `reconcile_provider` in a child process for each worker count and prints tenants per
second, the share of the latency-bound limit (workers / latency) and the run's peak memory. A
smaller run shows whether memory is flat in the number of tenants. Runs with DEBUG off.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
OUT_DIR = BASE_DIR / "bench-out"
TOKEN = "bench-token"  # noqa: S105 - a throwaway token between two local processes
TENANTS = int(os.environ.get("BENCH_TENANTS", "10000"))
PER_TENANT = 3
LATENCY_MS = int(os.environ.get("BENCH_LATENCY_MS", "20"))
WORKERS = [int(n) for n in os.environ.get("BENCH_WORKERS", "4,8").split(",")]


def _django(database_url: str) -> None:
    os.environ.update(DATABASE_URL=database_url, DEBUG="off", SECRET_KEY="bench-" + "x" * 60, ALLOWED_HOSTS="localhost")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def fill(database_url: str, state_path: Path) -> None:
    """Create the tenants, their bound subscriptions, and the provider's copy of them (1% drifted)."""
    _django(database_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from licensing.models import Agreement, Order, OrderLine, Product, Program
    from redemption.models import SeatAllocation, Subscription
    from tenants.models import Customer, Partner, Tenant
    from tenants.names import name_key

    call_command("migrate", verbosity=0)
    rng = random.Random(11)
    user = get_user_model().objects.create(username="bench", is_staff=True)
    partner = Partner.objects.create(name="Bench Reseller", mpn_id="4400000")
    products = Product.objects.bulk_create(
        Product(part_number=f"Q5Y-{n:05d}", description=f"O365 plan {n}", term_months=12) for n in range(PER_TENANT)
    )
    customers = Customer.objects.bulk_create(
        Customer(
            name=f"Customer {n}", name_key=name_key(f"Customer {n}"), email=f"it{n}@bench.example", partner=partner
        )
        for n in range(TENANTS)
    )
    tenants = Tenant.objects.bulk_create(
        Tenant(tenant_id=uuid.uuid4(), default_domain=f"bench{n}.onmicrosoft.com", display_name=f"Bench {n}",
               customer=customer, seats_requested_at="2026-01-01T00:00:00Z")
        for n, customer in enumerate(customers)
    )  # fmt: skip
    agreements = Agreement.objects.bulk_create(
        Agreement(program=Program.OV, number=f"V{n}", customer=c, partner=partner, starts_on=date(2026, 1, 1),
                  ends_on=date(2029, 1, 1))
        for n, c in enumerate(customers)
    )  # fmt: skip
    orders = Order.objects.bulk_create(
        Order(license_number=f"{60000000 + n}", agreement=a, ordered_on=date(2026, 1, 1))
        for n, a in enumerate(agreements)
    )
    lines, subscriptions = [], []
    for order, tenant in zip(orders, tenants, strict=True):
        for number, product in enumerate(products, start=1):
            quantity = rng.randint(5, 300)
            line = OrderLine(
                order=order,
                line_number=number,
                product=product,
                quantity=quantity,
                kind="new",
                starts_on=date(2026, 1, 1),
                ends_on=date(2027, 1, 1),
                seats_allocated=quantity,
            )
            lines.append(line)
            subscriptions.append(
                Subscription(
                    tenant=tenant,
                    product=product,
                    agreement=order.agreement,
                    quantity=quantity,
                    term_end=date(2027, 1, 1),
                    provider_subscription_id=str(uuid.uuid4()),
                )
            )
    OrderLine.objects.bulk_create(lines, batch_size=5000)
    Subscription.objects.bulk_create(subscriptions, batch_size=5000)
    SeatAllocation.objects.bulk_create(
        (SeatAllocation(order_line=line, tenant=sub.tenant, quantity=line.quantity, requested_by=user,
                        status="bound", subscription=sub, bound_at="2026-01-02T00:00:00Z")
         for line, sub in zip(lines, subscriptions, strict=True)),
        batch_size=5000,
    )  # fmt: skip
    state = {"tenants": [], "subscriptions": []}
    for tenant in tenants:
        state["tenants"].append([str(tenant.tenant_id), tenant.default_domain, tenant.display_name])
    drifted = 0
    for sub in subscriptions:
        quantity = sub.quantity
        if rng.random() < 0.01:
            quantity, drifted = quantity + 1, drifted + 1
        state["subscriptions"].append([str(sub.tenant.tenant_id), sub.product.part_number, quantity,
                                       sub.term_end.isoformat(), sub.provider_subscription_id])  # fmt: skip
    state_path.write_text(json.dumps(state))
    print(f"filled {len(tenants):,} tenants, {len(subscriptions):,} subscriptions; {drifted} changed at the provider")


def serve(state_path: str, port: str) -> None:
    """Run the local provider server with the state written by fill()."""
    sys.path.insert(0, str(BASE_DIR))
    from redemption.testing.provider_server import ProviderServer

    state = json.loads(Path(state_path).read_text())
    server = ProviderServer(token=TOKEN, latency=LATENCY_MS / 1000, port=int(port))
    for tenant_id, domain, name in state["tenants"]:
        server.add_tenant(tenant_id, domain, name)
    for tenant_id, offer, quantity, end, sub_id in state["subscriptions"]:
        end_date = date.fromisoformat(end)
        server.add_subscription(tenant_id, offer_id=offer, quantity=quantity, end=end_date, sub_id=sub_id)
    print("ready", flush=True)
    server.httpd.serve_forever()


def child(database_url: str, workers: str) -> None:
    """Run the reconciliation command in this process; print its time and peak memory."""
    import resource

    _django(database_url)
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    started = time.perf_counter()
    call_command("reconcile_provider", "--workers", workers, stdout=out)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = out.getvalue().strip().splitlines()[-1]
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "summary": summary}))


def _scratch(database_url: str, suffix: str) -> tuple[str, str]:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") + suffix
    return urlunsplit(parts._replace(path="/" + name)), urlunsplit(parts._replace(path="/postgres"))


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(["psql", admin_url, "-qc", sql], check=True)  # noqa: S603, S607 - fixed arguments


def _run(database_url: str, env: dict, workers: int) -> dict:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, __file__, "child", database_url, str(workers)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    base_url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/o365"
    database_url, admin_url = _scratch(base_url, "_bench_reconcile")
    OUT_DIR.mkdir(exist_ok=True)
    print(f"reconcile_provider, provider answering after {LATENCY_MS} ms (load before {os.getloadavg()[0]:.2f}):")
    print(f"{'tenants':>8} {'run':<24} {'workers':>7} {'seconds':>8} {'tenants/s':>10} {'limit':>7} {'share':>6} "
          f"{'peak MB':>8}")  # fmt: skip
    # A fifth of the tenants first: peak memory at both sizes shows whether it is flat in their number.
    for tenants in (TENANTS // 5, TENANTS):
        _one_size(database_url, admin_url, tenants)
    print(f"load after: {os.getloadavg()[0]:.2f}")


def _one_size(database_url: str, admin_url: str, tenants: int) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    state = OUT_DIR / "reconcile-provider.json"
    _psql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _psql(admin_url, f'CREATE DATABASE "{name}"')
    server = None
    env = {**os.environ, "BENCH_TENANTS": str(tenants)}
    try:
        subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, __file__, "fill", database_url, str(state)], check=True, env=env, stdout=subprocess.DEVNULL
        )
        port = str(19000 + os.getpid() % 1000)
        server = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, __file__, "serve", str(state), port], stdout=subprocess.PIPE, text=True
        )
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the provider server did not start")
        env.update(PROVIDER_BACKEND="http", PROVIDER_URL=f"http://127.0.0.1:{port}", PROVIDER_TOKEN=TOKEN,
                   PROVIDER_TIMEOUT="10")  # fmt: skip
        for index, workers in enumerate(WORKERS):
            figures = _run(database_url, env, workers)
            _print(tenants, "first: finds the drift" if index == 0 else "again: nothing new", workers, figures)
        print(f"{'':>8} {figures['summary']}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        _psql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _print(tenants: int, label: str, workers: int, figures: dict) -> None:
    rate = tenants / figures["seconds"]
    limit = workers / (LATENCY_MS / 1000)
    print(f"{tenants:>8,} {label:<24} {workers:>7} {figures['seconds']:>8.1f} {rate:>10.1f} {limit:>7.0f} "
          f"{rate / limit:>6.0%} {figures['peak_mb']:>8.0f}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "fill":
        fill(sys.argv[2], Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
