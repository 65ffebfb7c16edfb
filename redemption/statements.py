# ruff: noqa: S608  - identifiers come from model metadata and are quoted; every value is a parameter.
"""Row changes and their history rows written in one SQL statement (PostgreSQL), or one transaction.

The worker records each step of a binding with its audit rows (django-simple-history's tables) in
the same transaction. Through the ORM that is BEGIN, one INSERT or UPDATE per row and per history
row, and COMMIT: a round trip each, and round trips are most of a binding's cost besides the
provider. PostgreSQL runs data-modifying CTEs as one atomic statement, so one round trip does it all.
The column lists come from the models, so a new field is written here without changes.
"""

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from django.db import connection, transaction
from django.db.models import Model

from config.history import REASON_LENGTH

# PostgreSQL binds at most 65,535 parameters per statement (DB_SERVER_SIDE_BINDING sends them apart).
MAX_BOUND_PARAMETERS = 65_535


def bulk_batch_rows(model: type[Model]) -> int:
    """Rows per multi-row INSERT of the model: as many as fit one statement's parameters, however many rows."""
    return MAX_BOUND_PARAMETERS // len(model._meta.concrete_fields)


@dataclass(frozen=True)
class Ref:
    """A column of a row written earlier in the same statement (e.g. a new subscription's id)."""

    alias: str
    column: str = "id"


@dataclass(frozen=True)
class Guard:
    """Write a row only while another row (e.g. the allocation being bound) is in one of these statuses."""

    model: type[Model]
    pk: int
    statuses: list[str]

    def sql(self) -> tuple[str, list]:
        return _guard_sql(self.model, len(self.statuses)), [self.pk, *self.statuses]

    @property
    def shape(self) -> tuple[type[Model], int]:
        """What the guard's SQL text depends on (its row and statuses are parameters)."""
        return self.model, len(self.statuses)

    def holds(self) -> bool:
        return self.model.objects.filter(pk=self.pk, status__in=self.statuses).exists()


@dataclass
class Change:
    """An INSERT (pk None) or an UPDATE of one row, with the history row that records it."""

    alias: str
    model: type[Model]
    values: dict[str, Any]
    reason: str
    pk: int | None = None
    # UPDATE only when the row's status is one of these (a conditional claim).
    statuses: list[str] = field(default_factory=list)
    guard: Guard | None = None


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _guard_sql(model: type[Model], statuses: int) -> str:
    return (
        f"EXISTS (SELECT 1 FROM {_qn(model._meta.db_table)} WHERE {_qn(model._meta.pk.column)} = %s "
        f"AND {_qn('status')} IN ({', '.join(['%s'] * statuses)}))"
    )


@lru_cache(maxsize=256)
def _placeholder(model: type[Model], name: str) -> tuple[str, str]:
    """Return the quoted column of a field and its typed placeholder (the SQL is the same every time)."""
    model_field = model._meta.get_field(name)
    # Typed, because INSERT ... SELECT would read a bare NULL or string literal as text.
    return _qn(model_field.column), f"CAST(%s AS {model_field.db_type(connection)})"


def _value_sql(model: type[Model], name: str, value: Any) -> str:
    if isinstance(value, Ref):
        return f"(SELECT {_qn(value.column)} FROM {_qn(value.alias)})"
    return _placeholder(model, name)[1]


@lru_cache(maxsize=64)
def _has_updated_at(model: type[Model]) -> bool:
    return any(f.name == "updated_at" for f in model._meta.concrete_fields)


@lru_cache(maxsize=256)
def _row_template(
    model: type[Model],
    names: tuple[str, ...],
    refs: tuple[Ref | None, ...],
    statuses: int,
    guard: tuple[type[Model], int] | None,
) -> str:
    """Return the INSERT (names empty: every column) or UPDATE of a change's shape; its values are parameters.

    The text depends only on which columns are written, which of them read a row written earlier,
    and how many statuses are allowed: built once per shape, not once per binding.
    """
    table = _qn(model._meta.db_table)
    guard_sql = _guard_sql(*guard) if guard else ""
    if not names:
        columns, placeholders = [], []
        for model_field, ref in zip(_insert_fields(model), refs, strict=True):
            columns.append(_qn(model_field.column))
            placeholders.append(_value_sql(model, model_field.name, ref))
        where = f" WHERE {guard_sql}" if guard else ""
        return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(placeholders)}{where} RETURNING *"
    assignments = [
        f"{_placeholder(model, name)[0]} = {_value_sql(model, name, ref)}"
        for name, ref in zip(names, refs, strict=True)
    ]
    conditions = [f"{_qn(model._meta.pk.column)} = %s"]
    if statuses:
        conditions.append(f"{_qn('status')} IN ({', '.join(['%s'] * statuses)})")
    if guard:
        conditions.append(guard_sql)
    return f"UPDATE {table} SET {', '.join(assignments)} WHERE {' AND '.join(conditions)} RETURNING *"


@lru_cache(maxsize=64)
def _insert_fields(model: type[Model]) -> tuple:
    return tuple(f for f in model._meta.concrete_fields if not f.primary_key)


def _row_sql(change: Change, now: datetime) -> tuple[str, list]:
    model = change.model
    params: list = []
    if change.pk is None:
        instance = model(**{k: v for k, v in change.values.items() if not isinstance(v, Ref)})
        refs = []
        for model_field in _insert_fields(model):
            value = change.values.get(model_field.name)
            if isinstance(value, Ref):
                refs.append(value)
                continue
            refs.append(None)
            params.append(model_field.get_db_prep_save(model_field.pre_save(instance, True), connection))
        names: tuple[str, ...] = ()
    else:
        values = dict(change.values)
        if _has_updated_at(model):
            values["updated_at"] = now
        names = tuple(values)
        refs = [value if isinstance(value, Ref) else None for value in values.values()]
        for name, value in values.items():
            if not isinstance(value, Ref):
                params.append(model._meta.get_field(name).get_db_prep_save(value, connection))
        params.append(change.pk)
        params.extend(change.statuses)
    if change.guard:
        params.extend(change.guard.sql()[1])
    guard = change.guard.shape if change.guard else None
    return _row_template(model, names, tuple(refs), len(change.statuses), guard), params


@lru_cache(maxsize=64)
def _history_template(model: type[Model], alias: str) -> tuple[str, int]:
    """Return the history INSERT reading the row written as `alias`, and the change reason's length."""
    historical = model.history.model
    columns = [_qn(f.column) for f in historical._meta.concrete_fields if not f.name.startswith("history_")]
    names = ["history_date", "history_change_reason", "history_type", "history_user"]
    history_fields = [historical._meta.get_field(name) for name in names]
    history_columns = [_qn(f.column) for f in history_fields]
    placeholders = [f"CAST(%s AS {f.db_type(connection)})" for f in history_fields]
    sql = (
        f"INSERT INTO {_qn(historical._meta.db_table)} ({', '.join(columns + history_columns)}) "
        f"SELECT {', '.join(columns + placeholders)} FROM {_qn(alias)} RETURNING {_qn('history_id')}"
    )
    return sql, history_fields[1].max_length or REASON_LENGTH


def _history_sql(change: Change, now: datetime, user_id: int | None) -> tuple[str, list]:
    sql, reason_length = _history_template(change.model, change.alias)
    return sql, [now, change.reason[:reason_length], "+" if change.pk is None else "~", user_id]


def write_with_history(
    changes: list[Change], *, now: datetime, user_id: int | None = None, then_release: "Lease | None" = None
) -> dict[str, int | None]:
    """Write the rows and one history row each, atomically; return each alias's id (None: not written).

    With `then_release`, the slot's lock goes once the write is committed, in the same round trip.
    """
    if connection.vendor != "postgresql":
        return _write_orm(changes, now=now, user_id=user_id)
    ctes, params = [], []
    for change in changes:
        sql, args = _row_sql(change, now)
        ctes.append(f"{_qn(change.alias)} AS ({sql})")
        params.extend(args)
        sql, args = _history_sql(change, now, user_id)
        ctes.append(f"{_qn(change.alias + '_history')} AS ({sql})")
        params.extend(args)
    # Every data-modifying CTE runs once, referenced or not; the SELECT reports what each wrote.
    select = ", ".join(f"(SELECT {_qn('id')} FROM {_qn(change.alias)})" for change in changes)
    sql = f"WITH {', '.join(ctes)} SELECT {select}"
    if then_release is not None and not connection.in_atomic_block:
        row = _write_then_release(sql, params, then_release)
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    return {change.alias: value for change, value in zip(changes, row, strict=True)}


def _write_then_release(sql: str, params: list, lease: "Lease") -> tuple:
    """Run the write, commit it, then release the lease's lock: one round trip (psycopg's pipeline mode).

    The write is a transaction of its own, committed (on disk) before the server runs the release:
    whoever takes the slot next reads it. Should anything fail, the connection is dropped, which
    releases the lock for sure (nothing half-written stays: the transaction goes with it).
    """
    connection.ensure_connection()
    conn = connection.connection
    try:
        with connection.wrap_database_errors, conn.pipeline():
            psycopg.Cursor(conn).execute("BEGIN")
            write = psycopg.Cursor(conn)
            write.execute(sql, params)
            psycopg.Cursor(conn).execute("COMMIT")
            psycopg.Cursor(conn).execute(UNLOCK_SQL, [lease.key])
        row = write.fetchone()
    except Exception:
        connection.close()
        raise
    finally:
        # Released either way: by the statement, or with the session.
        lease.released = True
    return row


def _write_orm(changes: list[Change], *, now: datetime, user_id: int | None) -> dict[str, int | None]:
    """The same writes through the ORM in one transaction (SQLite: one writer at a time anyway)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    written: dict[str, int | None] = {}
    with transaction.atomic():
        for change in changes:
            values = {
                name: written[value.alias] if isinstance(value, Ref) else value for name, value in change.values.items()
            }
            if any(isinstance(value, Ref) and written[value.alias] is None for value in change.values.values()) or (
                change.guard and not change.guard.holds()
            ):
                written[change.alias] = None
                continue
            model = change.model
            if change.pk is None:
                row = model(**values)
                row.save_without_historical_record()
            else:
                rows = model.objects.filter(pk=change.pk)
                if change.statuses:
                    rows = rows.filter(status__in=change.statuses)
                if any(f.name == "updated_at" for f in model._meta.concrete_fields):
                    values["updated_at"] = now
                if not rows.update(**values):
                    written[change.alias] = None
                    continue
                row = model.objects.get(pk=change.pk)
            model.history.bulk_history_create(
                [row],
                update=change.pk is not None,
                default_user=user,
                default_change_reason=change.reason[:100],
                default_date=now,
            )
            written[change.alias] = row.pk
    return written


# The one definition of a subscription's lock key: every binding, reversal and correction of the same
# agreement, product and tenant takes it (the caller unlocks with the key the lock statement returns).
SLOT_KEY_SQL = "'subscription:' || {agreement} || ':' || {product} || ':' || {tenant}"


@lru_cache(maxsize=1)
def _lock_subscription_sql() -> str:
    from redemption.models import Subscription

    key = SLOT_KEY_SQL.format(agreement="s.agreement_id", product="s.product_id", tenant="s.tenant_id")
    return (
        f"SELECT {key}, pg_advisory_lock(hashtextextended({key}, 0))::text "
        f"FROM {_qn(Subscription._meta.db_table)} s WHERE s.id = %s"
    )


def subscription_lock(*, subscription_id: int) -> str | None:
    """Take the lock of a subscription's slot (as a binding of it would); return its key, or None on SQLite."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(_lock_subscription_sql(), [subscription_id])
        return cursor.fetchone()[0]


def _allocation_slot() -> tuple[str, str]:
    """Return an allocation's subscription lock key as SQL, and the FROM clause (allocation `a`) it needs."""
    from licensing.models import Order, OrderLine
    from redemption.models import SeatAllocation

    a, line, order = (_qn(m._meta.db_table) for m in (SeatAllocation, OrderLine, Order))
    key = SLOT_KEY_SQL.format(agreement="o.agreement_id", product="l.product_id", tenant="a.tenant_id")
    return key, f"FROM {a} a JOIN {line} l ON l.id = a.order_line_id JOIN {order} o ON o.id = l.order_id"


@lru_cache(maxsize=1)
def _orphans_sql() -> str:
    key, tables = _allocation_slot()
    # The lock is tried in the outer list, on the rows the inner query chose: never on a row filtered out.
    return (
        f"WITH started AS MATERIALIZED (SELECT a.id, {key} AS key {tables} "
        "WHERE a.status = %s OR (a.status = %s AND a.next_attempt_at IS NULL) ORDER BY a.id LIMIT %s) "
        "SELECT id, key, pg_try_advisory_lock(hashtextextended(key, 0)) FROM started"
    )


def orphans(*, limit: int = 5000) -> list[int]:
    """Return the allocations a worker started (claimed, or a reversal begun) whose subscription nobody has
    locked: whoever worked on them stopped (PostgreSQL released its session's locks).

    A reversal waiting for its first attempt looks the same and is returned too: enqueueing it again is
    harmless. Each lock this takes to look is released before returning.
    """
    from redemption.models import SeatAllocation

    status = SeatAllocation.Status
    with connection.cursor() as cursor:
        cursor.execute(_orphans_sql(), [status.BINDING, status.REVERSING, limit])
        rows = cursor.fetchall()
        held = [key for _, key, free in rows if free]
        if held:
            cursor.execute("SELECT pg_advisory_unlock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k", [held])
    return [pk for pk, _, free in rows if free]


@lru_cache(maxsize=1)
def _lock_slot_sql() -> str:
    key, tables = _allocation_slot()
    return (
        f"SELECT o.agreement_id, l.product_id, a.tenant_id, {key}, "
        f"pg_advisory_lock(hashtextextended({key}, 0))::text {tables} "
        "WHERE a.id = %s AND (a.status = %s OR (a.status IN (%s, %s) "
        "AND (a.next_attempt_at IS NULL OR a.next_attempt_at <= %s)))"
    )


@dataclass(frozen=True)
class Slot:
    """The subscription an allocation changes (agreement, product, tenant) and the lock key taken for it."""

    agreement_id: int
    product_id: int
    tenant_id: int
    key: str


def slot_lock_statement(*, allocation_id: int, due_before: datetime) -> tuple[str, list]:
    """Return the statement that finds an allocation a worker should carry out now and locks its
    subscription's slot: binding ones (a worker died), and queued or reversing ones that are due.

    It returns no row when there is nothing to do (nothing locked). The lock is a session advisory
    lock: release it with slot_unlock (or a final write's `then_release`).
    """
    from redemption.models import SeatAllocation

    status = SeatAllocation.Status
    return _lock_slot_sql(), [allocation_id, status.BINDING, status.QUEUED, status.REVERSING, due_before]


UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"


@dataclass
class Lease:
    """A slot's lock as its holder sees it: released at most once, by a final write or by slot_unlock."""

    key: str
    released: bool = False


def slot_unlock(key: str) -> None:
    """Release a slot's advisory lock; on any error drop the connection, which releases it for sure."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(UNLOCK_SQL, [key])
    except Exception:
        # A worker keeps its connection between tasks (CONN_MAX_AGE): closing it is the one sure
        # way not to carry the lock into the next task.
        connection.close()
        raise
