"""Benchmark: admin changelists over a million rows on PostgreSQL (time and query count per page)."""

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, reset_queries
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

# Set-based fill: every table gets its rows from generate_series, so a million rows load in seconds.
FILL_SQL = """
INSERT INTO tenants_partner (name, mpn_id, email, created_at, updated_at)
SELECT 'Reseller ' || g, (4000000 + g)::text, 'orders' || g || '@reseller.example', now(), now()
FROM generate_series(1, %(partners)s) g;

-- name_key: tenants.names.name_key('Customer N'), which is 'customer N'.
INSERT INTO tenants_customer (name, name_key, email, country, partner_id, created_at, updated_at)
SELECT 'Customer ' || g, 'customer ' || g, 'it' || g || '@customer.example', 'US',
       (SELECT min(id) FROM tenants_partner) + g %% %(partners)s, now(), now()
FROM generate_series(1, %(customers)s) g;

INSERT INTO tenants_tenant (tenant_id, default_domain, display_name, customer_id, verified_domain,
                            verified_display_name, created_at, updated_at)
SELECT md5('tenant' || g)::uuid, 'bench' || g || '.onmicrosoft.com', 'Tenant ' || g, c.id, '', '', now(), now()
FROM generate_series(1, %(customers)s) g
JOIN tenants_customer c ON c.name = 'Customer ' || g;

INSERT INTO licensing_product (part_number, description, term_months, created_at, updated_at)
SELECT 'BENCH-' || lpad(g::text, 5, '0'), 'O365 E3 ShrdSvr SNGL SubsVL OLP NL Annual Qlfd', 12, now(), now()
FROM generate_series(1, 20) g;

INSERT INTO licensing_agreement (program, number, authorization_number, customer_id, partner_id, starts_on,
                                 ends_on, osm_email, created_at, updated_at)
SELECT (ARRAY['ol','ov','ovs'])[1 + g %% 3], 'B' || g, CASE WHEN g %% 3 = 0 THEN 'A' || g ELSE '' END,
       c.id, c.partner_id, date '2025-01-01', date '2028-01-01', '', now(), now()
FROM generate_series(1, %(customers)s) g
JOIN tenants_customer c ON c.name = 'Customer ' || g;

INSERT INTO licensing_order (license_number, agreement_id, ordered_on, po_number, suggested_tenant_domain,
                             created_at, updated_at)
SELECT (70000000 + g)::text, a.first_id + g %% %(customers)s, date '2025-01-01' + (g %% 600)::int, 'PO-' || g, '',
       now() - (g %% 900) * interval '1 hour', now()
FROM generate_series(1, %(rows)s) g, (SELECT min(id) AS first_id FROM licensing_agreement) a;

INSERT INTO licensing_orderline (order_id, line_number, product_id, quantity, kind, starts_on, ends_on,
                                 seats_allocated, created_at, updated_at)
SELECT o.id, 1, p.first_id + o.id %% 20, 10, (ARRAY['new','additional','renewal'])[1 + o.id %% 3],
       o.ordered_on, o.ordered_on + 365, CASE WHEN o.id %% 4 = 0 THEN 0 ELSE 10 END, o.created_at, now()
FROM licensing_order o, (SELECT min(id) AS first_id FROM licensing_product) p;

INSERT INTO redemption_subscription (tenant_id, product_id, agreement_id, quantity, term_end,
                                     provider_subscription_id, status, created_at, updated_at)
SELECT t.id, p.id, a.id, 10, date '2026-01-01' + ((a.id + p.id) %% 730)::int, md5('sub' || a.id || '-' || p.id),
       'active', now(), now()
FROM licensing_agreement a
JOIN tenants_tenant t ON t.customer_id = a.customer_id
CROSS JOIN (SELECT id FROM licensing_product ORDER BY id LIMIT %(products_per_agreement)s) p;

INSERT INTO redemption_seatallocation (order_line_id, tenant_id, quantity, status, idempotency_key,
                                       requested_by_id, reason, approval_reasons, attempts, last_error,
                                       plan_action, plan_round, target_status, previous_status,
                                       last_error_final, rejection_reason, reversal_reason, created_at, updated_at)
SELECT l.id, t.id, 10, (ARRAY['queued','failed','awaiting_approval','rejected'])[1 + l.id %% 4],
       md5('alloc' || l.id)::uuid, %(user)s, '', '[]', 1, '', '', 0, '', '', false, '', '', l.created_at, now()
FROM licensing_orderline l
JOIN licensing_order o ON o.id = l.order_id
JOIN licensing_agreement a ON a.id = o.agreement_id
JOIN tenants_tenant t ON t.customer_id = a.customer_id;

ANALYZE;
"""

PAGES = [
    ("licensing_orderline", ""),
    ("licensing_orderline", "?unbound=yes&kind__exact=new"),
    ("licensing_orderline", "?q=70123456"),
    ("licensing_order", ""),
    ("licensing_order", "?q=70999999"),
    ("licensing_agreement", "?program__exact=ovs"),
    ("tenants_customer", ""),
    ("tenants_tenant", "?q=bench4242.onmicrosoft.com"),
    ("redemption_subscription", ""),
    ("redemption_subscription", "?ending=within30"),
    ("redemption_seatallocation", "?status__exact=failed"),
    ("redemption_seatallocation", ""),
]


class Command(BaseCommand):
    help = "Fill an empty PostgreSQL database with ROWS orders and time the admin changelists."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rows", type=int, default=1_000_000)

    def handle(self, *args, rows: int, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("bench_admin needs PostgreSQL: set DATABASE_URL to a scratch database.")
        from licensing.models import Order

        if Order.objects.exists():
            raise CommandError("bench_admin fills an empty database; point DATABASE_URL at a scratch one.")
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-1")
        customers = max(rows // 10, 10)
        started = time.perf_counter()
        params = {
            "rows": rows,
            "customers": customers,
            "partners": max(customers // 100, 1),
            "products_per_agreement": 10,
            "user": user.pk,
        }
        with connection.cursor() as cursor:
            # One statement at a time: with server-side binding (DB_SERVER_SIDE_BINDING) PostgreSQL
            # takes one command per parameterised query.
            for statement in filter(str.strip, FILL_SQL.split(";\n")):
                cursor.execute(statement, params)
        self.stdout.write(
            f"filled {rows:,} orders, order lines and allocations, {customers * 10:,} subscriptions "
            f"in {time.perf_counter() - started:.1f} s"
        )

        settings.ALLOWED_HOSTS = ["*"]
        client = Client()
        client.force_login(user)
        # A superuser signs in with a second factor: the session is marked as verified with a device.
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        device = TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        self.stdout.write(f"{'page':<62} {'ms':>8} {'queries':>8}")
        worst = 0.0
        for model, query in PAGES:
            url = reverse(f"admin:{model}_changelist") + query
            client.get(url)  # warm caches: measure the steady state a person sees
            reset_queries()
            with CaptureQueriesContext(connection) as captured:
                begun = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - begun) * 1000
            if response.status_code != 200:
                raise CommandError(f"{url} answered {response.status_code}")
            worst = max(worst, elapsed)
            self.stdout.write(f"{url:<62} {elapsed:>8.0f} {len(captured):>8}")
        self.stdout.write(f"slowest page: {worst:.0f} ms")
