"""Benchmark of the order-sheet import on PostgreSQL: `make bench-import`.

Generates a realistic 100,000-row order sheet (about 2,000 customers, 3,000 agreements, 25,000
orders), imports it with the management command into an empty database, then imports it again,
and compares both with PostgreSQL's COPY of the same file into a plain staging table. Dry runs of
the same sheet at a fifth of its size and at full size show whether peak memory is flat in the file
size. Runs with DEBUG off, as in production (DEBUG keeps the text of recent queries), on its own
database (DATABASE_URL's name + "_bench_import"), created and dropped here.
"""

from __future__ import annotations

import csv
import json
import os
import random
import secrets
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
OUT_DIR = BASE_DIR / "bench-out"
HEADER = [
    "License Number", "Line", "Order Date", "Program", "Agreement Number", "Authorization Number", "Reseller",
    "Reseller MPN ID", "Customer", "Customer Email", "Part Number", "Product", "Quantity", "Order Type",
    "Start Date", "End Date", "Tenant Domain", "PO Number", "Reseller Email",
]  # fmt: skip
PRODUCTS = [(f"{prefix}-{n:05d}", f"O365 {plan} ShrdSvr SNGL SubsVL OLP NL Annual Qlfd")
            for prefix, plan in (("Q5Y", "E3"), ("AAA", "E1"), ("J29", "BusPrem"), ("KX7", "E5"))
            for n in range(10)]  # fmt: skip
PROGRAMS = [("Open License", "OL"), ("Open Value", "OV"), ("Open Value Subscription", "OVS")]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write an order sheet of `rows` lines: 4 lines per order, 2,000 customers, 3,000 agreements."""
    rng = random.Random(seed)
    customers = 2000
    agreements = 3000
    partners = [(f"Reseller {p} Ltd", f"{4400000 + p}", f"orders{p}@reseller{p}.example") for p in range(120)]
    customer_partner = [rng.randrange(len(partners)) for _ in range(customers)]
    agreement_rows = []
    for a in range(agreements):
        customer = a % customers
        label, code = PROGRAMS[a % 3]
        number = f"{87000000 + a}" if code == "OL" else f"V{5000000 + a}"
        auth = f"{number}AB" if code == "OL" else ""
        agreement_rows.append((customer, label, number, auth))
    base = date(2025, 1, 1)
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        orders = rows // 4
        for o in range(orders):
            customer, program, number, auth = agreement_rows[o % agreements]
            partner = partners[customer_partner[customer]]
            ordered = base + timedelta(days=rng.randrange(600))
            ordered_text = ordered.isoformat() if o % 5 else f"{ordered.month}/{ordered.day}/{ordered.year}"
            domain = f"customer{customer}.onmicrosoft.com" if o % 3 == 0 else ""
            for line in range(1, 5):
                part, description = PRODUCTS[(o + line) % len(PRODUCTS)]
                kind = ("New", "Additional", "Renewal")[(o + line) % 3]
                writer.writerow([
                    f"{60000000 + o}", line, ordered_text, program, number, auth, partner[0], partner[1],
                    f"Customer {customer} Inc", f"it@customer{customer}.example", part, description,
                    rng.randint(1, 250), kind, ordered.isoformat(), (ordered + timedelta(days=365)).isoformat(),
                    domain, f"PO-{o}", partner[2],
                ])  # fmt: skip


def child(path: str, dry_run: bool) -> None:
    """Run the import command in this process and print its time, peak memory and query count."""
    import resource

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from licensing import bulk

    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    # COPY goes to psycopg's cursor directly, past Django's wrapper: count it here.
    plain_copy = bulk._copy

    def counted_copy(*args, **kwargs):
        nonlocal queries
        queries += 1
        return plain_copy(*args, **kwargs)

    bulk._copy = counted_copy
    # What the process holds before reading the file: Python, Django, the apps.
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with connection.execute_wrapper(count):
        started = time.perf_counter()
        call_command("import_order_sheet", path, *(["--dry-run"] if dry_run else []))
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "base_mb": base_mb, "queries": queries}))


def run_child(env: dict, path: Path, dry_run: bool = False) -> dict:
    args = [sys.executable, __file__, "--child", str(path)] + (["--dry-run"] if dry_run else [])
    done = subprocess.run(args, env=env, cwd=BASE_DIR, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode:
        sys.exit(f"import failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    sys.stdout.write(done.stdout.splitlines()[-2] + "\n")
    return json.loads(done.stdout.splitlines()[-1])


def copy_seconds(dsn: str, path: Path) -> float:
    import psycopg

    columns = ", ".join(f'"c{i}" text' for i in range(len(HEADER)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS bench_staging; CREATE TABLE bench_staging ({columns})")
        started = time.perf_counter()
        statement = "COPY bench_staging FROM STDIN WITH (FORMAT csv, HEADER true)"
        with conn.cursor() as cur, cur.copy(statement) as copy, open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_staging")
    return seconds


def main() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench-import needs PostgreSQL: set DATABASE_URL=postgres://user@host:5432/anydb")
    import psycopg

    parts = urlsplit(url)
    # Named after the configured database, so that benchmarks of several checkouts never collide.
    bench_db = f"{parts.path.strip('/') or 'o365'}_bench_import"
    admin_dsn = urlunsplit(parts._replace(path="/postgres"))
    bench_url = urlunsplit(parts._replace(path=f"/{bench_db}"))
    rows = int(os.environ.get("BENCH_ROWS", "100000"))
    OUT_DIR.mkdir(exist_ok=True)
    sheet = OUT_DIR / f"order-sheet-{rows}.csv"
    small = OUT_DIR / f"order-sheet-{rows // 5}.csv"
    generate(sheet, rows)
    generate(small, rows // 5)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {bench_db}")
        conn.execute(f"CREATE DATABASE {bench_db}")
    env = {
        **os.environ,
        "DATABASE_URL": bench_url,
        "CELERY_BROKER_URL": "filesystem://",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "localhost",
    }
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, cwd=BASE_DIR, check=True)
        print(f"Order sheet: {rows} rows, {sheet.stat().st_size / 1_048_576:.1f} MB ({sheet})")
        small_dry = run_child(env, small, dry_run=True)
        big_dry = run_child(env, sheet, dry_run=True)
        first = run_child(env, sheet)
        again = run_child(env, sheet)
        copy = copy_seconds(bench_url, sheet)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {bench_db}")
    print()
    print(f"{'run':<28}{'seconds':>9}{'rows/s':>10}{'peak MB':>9}{'queries':>9}{'x COPY':>8}")
    for label, figures, n in (
        ("first import (empty db)", first, rows),
        ("re-import (unchanged)", again, rows),
        (f"dry run, {rows // 5} rows", small_dry, rows // 5),
        (f"dry run, {rows} rows", big_dry, rows),
    ):
        ratio = figures["seconds"] / copy if n == rows else float("nan")
        print(
            f"{label:<28}{figures['seconds']:>9.2f}{n / figures['seconds']:>10.0f}"
            f"{figures['peak_mb']:>9.0f}{figures['queries']:>9}{ratio:>8.1f}"
        )
    print(f"{'COPY into staging table':<28}{copy:>9.2f}{rows / copy:>10.0f}")
    print()
    growth = big_dry["peak_mb"] / small_dry["peak_mb"]
    small_own = small_dry["peak_mb"] - small_dry["base_mb"]
    big_own = big_dry["peak_mb"] - big_dry["base_mb"]
    print(
        f"Peak memory, dry run: {rows // 5} rows {small_dry['peak_mb']:.0f} MB, {rows} rows "
        f"{big_dry['peak_mb']:.0f} MB, ratio {growth:.2f} for 5x the rows "
        f"(before reading the file the process holds {small_dry['base_mb']:.0f} MB; "
        f"the import itself {small_own:.0f} MB and {big_own:.0f} MB)"
    )
    batch = os.environ.get("IMPORT_BATCH_SIZE", "2000")
    print(
        f"Queries per 1,000 rows: first import {1000 * first['queries'] / rows:.1f}, "
        f"re-import {1000 * again['queries'] / rows:.1f} (batches of {batch} rows)"
    )
    print()
    targets = {
        "first import >= 4,000 rows/s": rows / first["seconds"] >= 4000,
        "re-import >= 4,000 rows/s": rows / again["seconds"] >= 4000,
        "peak memory < 400 MB": max(first["peak_mb"], again["peak_mb"]) < 400,
        "memory flat in file size (5x rows, < 1.1x memory)": growth < 1.1,
    }
    for name, met in targets.items():
        print(f"{'met ' if met else 'MISSED'} {name}")


if __name__ == "__main__":
    sys.path.insert(0, str(BASE_DIR))
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--child") + 1], "--dry-run" in sys.argv)
    else:
        main()
