# ruff: noqa: S608  - identifiers come from model metadata and are quoted; every value is a parameter.
"""The head of a subscription's queue of changes, with everything a binding reads, in one prepared statement.

Every binding starts with this read. Through the ORM, building and compiling the query (six joins and
a subquery) costs more CPU than anything else a binding does besides the provider call, and
PostgreSQL plans it again each time. Here the SQL is made once from the models' metadata (a new field
is read without changes) and, on PostgreSQL, runs as a prepared statement of the worker's connection.
"""

from datetime import datetime
from functools import lru_cache

import psycopg
from django.db import connection
from django.db.models import Model

from licensing.models import Agreement, Order, OrderLine, Product
from redemption.models import SeatAllocation, Subscription
from redemption.statements import Slot, slot_lock_statement
from tenants.models import Partner, Tenant

Status = SeatAllocation.Status
# The rows read, in order, with their aliases: each becomes a model instance linked to the others.
READ = [
    ("a", SeatAllocation),
    ("l", OrderLine),
    ("o", Order),
    ("g", Agreement),
    ("p", Partner),
    ("pr", Product),
    ("t", Tenant),
]


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


# The subscription is named by its agreement, product and tenant, or by one of its allocations.
BY_SLOT = "o.agreement_id = %s AND l.product_id = %s AND a.tenant_id = %s"
BY_ALLOCATION = "(o.agreement_id, l.product_id, a.tenant_id) = (SELECT o2.agreement_id, l2.product_id, a2.tenant_id {})"


@lru_cache(maxsize=4)
def _sql(vendor: str, by_allocation: bool = False) -> tuple[str, tuple[tuple[str, list[str]], ...]]:
    """Return the statement and, per alias, the attribute names of its columns (in order)."""
    columns, attnames = [], []
    for alias, model in READ:
        fields = model._meta.concrete_fields
        columns += [f"{alias}.{_qn(f.column)}" for f in fields]
        attnames.append((alias, [f.attname for f in fields]))
    table = {model: _qn(model._meta.db_table) for _, model in READ}
    subscriptions = _qn(Subscription._meta.db_table)
    sql = (
        f"SELECT {', '.join(columns)}, "
        f"(SELECT s.id FROM {subscriptions} s WHERE s.agreement_id = o.agreement_id AND s.product_id = l.product_id "
        f"AND s.tenant_id = a.tenant_id AND s.status <> %s LIMIT 1) "
        f"FROM {table[SeatAllocation]} a "
        f"JOIN {table[OrderLine]} l ON l.id = a.order_line_id "
        f"JOIN {table[Order]} o ON o.id = l.order_id "
        f"JOIN {table[Agreement]} g ON g.id = o.agreement_id "
        f"JOIN {table[Partner]} p ON p.id = g.partner_id "
        f"JOIN {table[Product]} pr ON pr.id = l.product_id "
        f"JOIN {table[Tenant]} t ON t.id = a.tenant_id "
        f"WHERE {_slot_condition(table) if by_allocation else BY_SLOT} AND a.status IN (%s, %s, %s) "
        "AND a.id <= %s ORDER BY a.id LIMIT 1"
    )
    return sql, tuple((alias, names) for alias, names in attnames)


def _slot_condition(table: dict) -> str:
    return BY_ALLOCATION.format(
        f"FROM {table[SeatAllocation]} a2 JOIN {table[OrderLine]} l2 ON l2.id = a2.order_line_id "
        f"JOIN {table[Order]} o2 ON o2.id = l2.order_id WHERE a2.id = %s"
    )


def queue_head(*, agreement_id: int, product_id: int, tenant_id: int, up_to: int) -> SeatAllocation | None:
    """Return the oldest allocation of the subscription waiting to be applied, up to `up_to`, or None.

    Its order line (with order, agreement, partner, product) and tenant come with it, and
    `live_subscription_id` names the subscription it changes (None: there is none yet).
    """
    sql, attnames = _sql(connection.vendor)
    params = [
        Subscription.Status.DEPROVISIONED,
        agreement_id,
        product_id,
        tenant_id,
        Status.QUEUED,
        Status.BINDING,
        Status.REVERSING,
        up_to,
    ]
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        # Server-side binding, prepared once per connection: PostgreSQL does not plan it again.
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            row = cursor.execute(sql, params, prepare=True).fetchone()
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    return _head(row, attnames)


def slot_lock_with_head(*, allocation_id: int, due_before: datetime) -> tuple[Slot | None, SeatAllocation | None]:
    """Lock the allocation's subscription if the allocation is due (statements.slot_lock_statement) and read its
    queue's head (queue_head) under that lock, in one round trip (PostgreSQL's pipeline mode).

    Both statements go in one READ COMMITTED transaction, so the read's snapshot is taken once the lock
    is granted: it sees what the previous holder committed. Nothing locked: (None, None). Should
    anything fail, the connection is dropped, which releases whatever was locked.
    """
    sql, attnames = _sql(connection.vendor, by_allocation=True)
    params = [Subscription.Status.DEPROVISIONED, allocation_id, Status.QUEUED, Status.BINDING, Status.REVERSING]
    connection.ensure_connection()
    conn = connection.connection
    # Inside a caller's transaction (tests) its own isolation applies; otherwise this transaction's.
    own = not connection.in_atomic_block
    try:
        with connection.wrap_database_errors, conn.pipeline():
            if own:
                psycopg.Cursor(conn).execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            lock = psycopg.Cursor(conn)
            lock.execute(*slot_lock_statement(allocation_id=allocation_id, due_before=due_before))
            head = psycopg.Cursor(conn)
            head.execute(sql, [*params, allocation_id], prepare=True)
            if own:
                psycopg.Cursor(conn).execute("COMMIT")
        slot, row = lock.fetchone(), head.fetchone()
    except Exception:
        connection.close()
        raise
    if slot is None:
        return None, None
    return Slot(*slot[:4]), _head(row, attnames)


def _head(row, attnames) -> SeatAllocation | None:
    if row is None:
        return None
    instances: dict[str, Model] = {}
    start = 0
    for (alias, model), (_, names) in zip(READ, attnames, strict=True):
        values = _converted(model, names, row[start : start + len(names)])
        instances[alias] = model.from_db(connection.alias, names, values)
        start += len(names)
    allocation, line, order = instances["a"], instances["l"], instances["o"]
    order.agreement = instances["g"]
    order.agreement.partner = instances["p"]
    line.order = order
    line.product = instances["pr"]
    allocation.order_line = line
    allocation.tenant = instances["t"]
    allocation.live_subscription_id = row[start]
    return allocation


def _converted(model: type[Model], names: list[str], values) -> list:
    """Apply the converters the ORM would (SQLite returns dates, UUIDs and booleans as text or numbers)."""
    values = list(values)
    for index, field, converters in _converters(model, connection.vendor):
        for converter in converters:
            values[index] = converter(values[index], field.cached_col, connection)
    return values


@lru_cache(maxsize=32)
def _converters(model: type[Model], vendor: str) -> list:
    """Return (position, field, converters) for the columns of `model` that need converting."""
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        converters = connection.ops.get_db_converters(field.cached_col) + field.get_db_converters(connection)
        if converters:
            found.append((index, field, converters))
    return found
