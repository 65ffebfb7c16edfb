"""Benchmark the daily renewal run (lifecycle + reminders) on PostgreSQL: `make bench-renewals`.

For each size (default 100,000 then 1,000,000 subscriptions) it creates a dedicated database, fills it
with set-based SQL (four subscriptions per customer sharing a term end, term ends spread over two
years from 150 days ago, statuses already consistent with them, 1% of customers with a queued
renewal), then runs the daily task for two consecutive days with a mail backend that discards
mail, and prints each day's time, mails and query count. The first day catches up every reminder
due within 90 days; the second is an ordinary day and must finish within 60 s. The database is
dropped at the end.
"""

import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("BENCH_DATABASE", "o365_bench_renewals")
SIZES = [int(size) for size in os.environ.get("BENCH_SIZES", "100000,1000000").split(",")]
ORDINARY_DAY_LIMIT_SECONDS = 60

sys.path.insert(0, str(ROOT))
os.environ["DATABASE_URL"] = f"{SERVER_URL}/{DATABASE}"
os.environ["EMAIL_URL"] = "dummymail://"  # discards mail; locmem would hold it all in memory
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def recreate_database() -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def drop_database() -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


FILL = """
INSERT INTO tenants_partner (name, mpn_id, email, created_at, updated_at)
SELECT 'Reseller ' || g, (4000000 + g)::text, 'orders' || g || '@reseller.example', now(), now()
FROM generate_series(1, %(partners)s) g;

-- name_key: tenants.names.name_key('Customer N'), which is 'customer N'.
INSERT INTO tenants_customer (name, name_key, email, country, partner_id, created_at, updated_at)
SELECT 'Customer ' || g, 'customer ' || g, 'it' || g || '@customer.example', 'US', 1 + g %% %(partners)s,
       now(), now()
FROM generate_series(1, %(customers)s) g;

INSERT INTO tenants_tenant (tenant_id, default_domain, display_name, verified_domain, verified_display_name,
                            customer_id, created_at, updated_at)
SELECT md5('tenant' || g)::uuid, 'tenant' || g || '.onmicrosoft.com', 'Tenant ' || g, '', '', g, now(), now()
FROM generate_series(1, %(customers)s) g;

INSERT INTO licensing_product (part_number, description, term_months, created_at, updated_at)
VALUES ('Q5Y-00003', 'O365 E3 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd', 12, now(), now()),
       ('U4S-00002', 'O365 E1 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd', 12, now(), now()),
       ('J29-00003', 'O365 BusPrem ShrdSvr SNGL SubsVL OLP NL Annual Qlfd', 12, now(), now()),
       ('AAA-11111', 'O365 E5 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd', 12, now(), now());

INSERT INTO licensing_agreement (program, number, authorization_number, starts_on, ends_on, osm_email,
                                 customer_id, partner_id, created_at, updated_at)
SELECT (ARRAY['ol', 'ov', 'ovs'])[1 + g %% 3], 'A' || g, '',
       %(today)s::date - (g %% 1000), %(today)s::date - (g %% 1000) + interval '3 years', '',
       g, 1 + g %% %(partners)s, now(), now()
FROM generate_series(1, %(customers)s) g;

-- Four subscriptions per customer (one per product), sharing a term end; term ends over two years.
INSERT INTO redemption_subscription (quantity, term_end, provider_subscription_id, status, agreement_id,
                                     product_id, tenant_id, created_at, updated_at)
SELECT 10, s.term_end, 'sub-' || s.g,
       CASE WHEN s.term_end >= %(today)s::date THEN 'active'
            WHEN s.term_end >= %(today)s::date - 30 THEN 'expired'
            WHEN s.term_end >= %(today)s::date - 120 THEN 'disabled'
            ELSE 'deprovisioned' END,
       s.c, 1 + (s.g - 1) %% 4, s.c, now(), now()
FROM (SELECT g, (g - 1) / 4 + 1 AS c, %(today)s::date - 150 + (((g - 1) / 4 + 1) %% 730) AS term_end
      FROM generate_series(1, %(subscriptions)s) g) s;

-- 1%% of customers have a renewal queued for their first product: no reminder for that one.
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
                       date_joined)
VALUES ('!', false, 'bench', '', '', '', true, true, now());
INSERT INTO licensing_order (license_number, ordered_on, po_number, suggested_tenant_domain, agreement_id,
                             created_at, updated_at)
SELECT 'L' || c, %(today)s::date, '', '', c, now(), now()
FROM generate_series(100, %(customers)s, 100) c;
INSERT INTO licensing_orderline (line_number, quantity, kind, starts_on, ends_on, seats_allocated, order_id,
                                 product_id, created_at, updated_at)
SELECT 1, 10, 'renewal', s.term_end, s.term_end + 365, 10, o.id, 1, now(), now()
FROM licensing_order o
JOIN redemption_subscription s ON s.agreement_id = o.agreement_id AND s.product_id = 1;
INSERT INTO redemption_seatallocation (quantity, status, idempotency_key, reason, approval_reasons, attempts,
                                       last_error, plan_action, plan_round, target_status, previous_status,
                                       last_error_final, rejection_reason, reversal_reason,
                                       order_line_id, requested_by_id, tenant_id, created_at, updated_at)
SELECT 10, 'queued', md5('alloc' || l.id)::uuid, '', '[]', 0, '', '', 0, '', '', false, '', '', l.id,
       (SELECT id FROM auth_user WHERE username = 'bench'), o.agreement_id, now(), now()
FROM licensing_orderline l JOIN licensing_order o ON o.id = l.order_id;
"""


def fill(size: int, today: date) -> float:
    from django.db import connection

    started = time.perf_counter()
    params = {
        "subscriptions": size,
        "customers": (size + 3) // 4,
        "partners": max(100, size // 1000),
        "today": today,
    }
    with connection.cursor() as cursor:
        for statement in FILL.split(";\n"):
            if statement.strip():
                cursor.execute(statement, params)
    connection.close()
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def run_day(day: date) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from redemption.renewals import renewals_daily_run

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = renewals_daily_run(today=day)
        seconds = time.perf_counter() - started
    return {
        "day": day,
        "seconds": seconds,
        "moved": result.lifecycle.total,
        "mails": result.reminders.mails_sent,
        "reminders": result.reminders.reminders_sent,
        "failed": result.reminders.mails_failed,
        "queries": len(queries),
    }


def main() -> int:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    today = date.today()
    figures: dict[int, list[dict]] = {}
    try:
        for size in SIZES:
            connection.close()
            recreate_database()
            call_command("migrate", verbosity=0)
            seconds = fill(size, today)
            print(f"\n{size:,} subscriptions generated in {seconds:.1f} s ({DATABASE})", flush=True)
            figures[size] = []
            for n, label in enumerate(["day 1 (first run: catches up all reminders due)", "day 2 (ordinary day)"]):
                row = run_day(today + timedelta(days=n))
                figures[size].append(row)
                print(
                    f"  {label:<48} {row['seconds']:7.1f} s  {row['mails']:>7,} mails  "
                    f"{row['reminders']:>7,} reminders  {row['moved']:>6,} lifecycle moves  "
                    f"{row['queries']:>3} queries",
                    flush=True,
                )
            connection.close()
    finally:
        connection.close()
        drop_database()

    print("\nQueries per run by size (they must not grow with the number of subscriptions):")
    for size, rows in figures.items():
        print(
            f"  {size:>9,} subscriptions: day 1 {rows[0]['queries']:>3} queries, day 2 {rows[1]['queries']:>3} queries"
        )
    ok = True
    if len(figures) > 1:
        sizes = sorted(figures)
        small, large = figures[sizes[0]][1]["queries"], figures[sizes[-1]][1]["queries"]
        ratio = sizes[-1] / sizes[0]
        print(f"  ordinary day: {small} -> {large} queries for {ratio:.0f}x the subscriptions")
        ok &= large <= small
    largest = figures[max(figures)][1]
    within = largest["seconds"] <= ORDINARY_DAY_LIMIT_SECONDS
    ok &= within
    print(
        f"Ordinary day at {max(figures):,} subscriptions: {largest['seconds']:.1f} s "
        f"({'within' if within else 'OVER'} the {ORDINARY_DAY_LIMIT_SECONDS} s target)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
