# ruff: noqa: S608  - identifiers come from model metadata and are quoted; every value is a parameter.
"""Throttled at a distributor's scale: how long the queued bindings take at the rate, and fair lanes.

The rate itself is kept by the provider call budget (redemption.gateway.budget); this is what the
queue looks like behind it: the sweep's patience, the landing page's estimate, the broker lanes.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

from django.db import connection

from licensing.models import OrderLine
from redemption.gateway import budget_get
from redemption.models import SeatAllocation

Status = SeatAllocation.Status
WAITING = [Status.QUEUED, Status.BINDING, Status.REVERSING]


def queue_drain_seconds(*, waiting=None) -> float:
    """Return how long the bindings waiting now take at the rate the calls go at (0 without a limit)."""
    budget = budget_get()
    rate = budget.rate_now()
    if not rate:
        return 0.0
    if waiting is None:
        waiting = SeatAllocation.objects.filter(status__in=WAITING)
    return waiting.count() / rate + budget.paused_for()


# The landing page says "throttling" once the rate holds back more than this much work, or while paused.
THROTTLED_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class Throttling:
    waiting: int  # bindings and reversals not done yet
    minutes: int  # about how long they take at the rate the calls go at, pause included


def throttling_now() -> Throttling | None:
    """Return the work queued behind the provider's limit while calls are throttled, else None."""
    waiting = SeatAllocation.objects.filter(status__in=WAITING).count()
    budget = budget_get()
    paused = budget.paused_for()
    # The configured rate, or the lower one the provider's 429s have taught the budget.
    rate = budget.rate_now()
    seconds = paused + (waiting / rate if rate else 0.0)
    if not paused and seconds < THROTTLED_AFTER_SECONDS:
        return None
    return Throttling(waiting=waiting, minutes=max(1, math.ceil(seconds / 60)))


# --- fairness --------------------------------------------------------------------------------------

# Broker priorities (Redis reads priority 0 first, each in arrival order): a binding with much of its
# tenant's or order's work queued ahead of it goes in a later lane, so a small order is not queued
# behind a huge one. (work ahead below, lane)
LANES = [(10, 0), (100, 3), (1000, 6)]
LAST_LANE = 9


def allocation_lane(*, allocation_id: int) -> int:
    """Return the broker priority of a binding: later lanes for the tail of a big tenant's or order's backlog."""
    statuses = [str(status) for status in WAITING]
    with connection.cursor() as cursor:
        cursor.execute(_lane_sql(), [*statuses, LANES[-1][0], *statuses, LANES[-1][0], allocation_id])
        row = cursor.fetchone()
    if row is None:
        return 0
    work_ahead = max(row)
    return next((lane for below, lane in LANES if work_ahead < below), LAST_LANE)


@lru_cache(maxsize=1)
def _lane_sql() -> str:
    """Count, in one round trip, the work queued ahead of a binding for its tenant and for its order (capped)."""
    qn = connection.ops.quote_name
    allocations, lines = qn(SeatAllocation._meta.db_table), qn(OrderLine._meta.db_table)
    waiting = "status IN (%s, %s, %s)"
    return (
        f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {allocations} w WHERE w.tenant_id = a.tenant_id "
        f"AND w.{waiting} AND w.id < a.id LIMIT %s) t), "
        f"(SELECT count(*) FROM (SELECT 1 FROM {allocations} w JOIN {lines} wl ON wl.id = w.order_line_id "
        f"WHERE wl.order_id = l.order_id AND w.{waiting} AND w.id < a.id LIMIT %s) o) "
        f"FROM {allocations} a JOIN {lines} l ON l.id = a.order_line_id WHERE a.id = %s"
    )
