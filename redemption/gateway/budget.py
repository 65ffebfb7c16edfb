# ruff: noqa: S608  - the table name comes from model metadata and is quoted; every value is a parameter.
"""The installation's budget of provider calls: one rate for every worker on every host, one pause after a 429.

Every provider call first reserves the next free slot of one schedule (GCRA: the schedule's "theoretical
arrival time" moves 1/PROVIDER_RATE_LIMIT on per call; PROVIDER_RATE_BURST calls may go at once after a
quiet spell) and sleeps until its slot comes. Callers queue in the order they asked and none polls, so
the calls go out evenly at the full rate. A 429's Retry-After moves every slot past the pause.

The provider does not publish its rate and changes it without notice. A lone 429 (a call that went out
a little late and bunched with the next) only pauses; 429s that come again soon after a pause, while the
calls keep to PROVIDER_RATE_LIMIT, say the provider's rate is lower now. The schedule then goes at
RATE_CUT of the rate it was going at (once per pause: the answers to calls already on their way do not
cut it again), and wins back RATE_RECOVERY of the configured rate each second, up to the configured rate.

With Redis as the broker the schedule is one hash in Redis, reserved by a Lua script: atomic, one round
trip, on Redis's clock for every host. Otherwise it is one row in the database, on the database's clock,
reserved under the row's lock (one statement on PostgreSQL, one write transaction on SQLite): the
embedded default of SQLite and the filesystem broker keeps working.
"""

import logging
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from redemption.gateway.base import ProviderThrottled, ProviderTransient

logger = logging.getLogger(__name__)

# A caller waits this long at most for a slot; further away, it goes and does something else (a worker
# defers the binding, a person is told to try again). Sleeping ties up a worker process, nothing more.
WAIT_MAX_SECONDS = 2.0
# A wait longer than this first gives the database connection back: a fleet paused by a 429 holds
# none. Shorter waits keep it, as between tasks (reconnecting costs more than it saves).
RELEASE_CONNECTION_AFTER_SECONDS = 1.0
# A provider asking for a longer pause than this is paused for this long, then asked again.
PAUSE_CAP_SECONDS = 600.0
# A slot taken longer ago than this (its call waited for the process's previous one) is used only once
# the shared pause is checked: a 429 met by another worker meanwhile holds this call back too.
PREPAID_FRESH_SECONDS = 0.005
# With no rate, every caller held by a pause would go at the instant it ends, and all but one meet a
# 429 again: they go spread over this many seconds after it (with a rate, their slots are spaced).
PAUSE_SPREAD_SECONDS = 0.5
# A 429 less than this long after the last pause ended (not a lone one) cuts the rate...
RATE_CUT_WITHIN_SECONDS = 10.0
# ...to this share of the rate the schedule was going at...
RATE_CUT = 0.8
# ...and wins back this share of PROVIDER_RATE_LIMIT each second (40/s: from 24 to 30 in 30 s)...
RATE_RECOVERY = 0.005
# ...never going slower than this share of it.
RATE_FLOOR = 0.05
REDIS_KEY = "redemption:provider-budget"
ROW_NAME = "provider"

# Reserve: KEYS[1] the schedule; ARGV interval (s per call, 0: no rate), burst, max_wait (s), recovery
# (calls/s won back per second after a cut). Return {1 if reserved else 0, seconds until the slot}.
# Times and rates are strings: Lua would round them.
RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local recovery = tonumber(ARGV[4])
local held = redis.call('HMGET', KEYS[1], 'tat', 'paused_until', 'cut_rate', 'cut_at')
local tat, paused = tonumber(held[1]) or 0, tonumber(held[2]) or 0
local cut, cut_at = tonumber(held[3]) or 0, tonumber(held[4]) or 0
if interval > 0 and cut > 0 then
  local rate = cut + recovery * (now - cut_at)
  if rate * interval < 1 then
    interval = 1 / rate
  end
end
local slot = math.max(now, paused)
if interval > 0 then
  slot = math.max(slot, tat - (burst - 1) * interval)
end
if slot - now > max_wait then
  return {0, string.format('%.6f', slot - now)}
end
if interval > 0 then
  redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', math.max(tat, slot) + interval))
end
return {1, string.format('%.6f', slot - now)}
"""
# Pause: ARGV seconds, then the configured rate (0: none), recovery, cut, floor and the seconds within
# which a 429 after the last pause cuts the rate (see RATE_CUT). No slot before now + seconds (a longer
# pause already set stays); the first 429 of a pause that comes soon after the last one cuts the rate.
PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'paused_until', 'cut_rate', 'cut_at')
local paused, cut, cut_at = tonumber(held[1]) or 0, tonumber(held[2]) or 0, tonumber(held[3]) or 0
local rate, recovery = tonumber(ARGV[2]), tonumber(ARGV[3])
if rate > 0 and now >= paused and now - paused < tonumber(ARGV[6]) and now - cut_at >= 1 then
  if cut > 0 then
    rate = math.min(rate, cut + recovery * (now - cut_at))
  end
  local lowered = math.max(tonumber(ARGV[5]), rate * tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'cut_rate', string.format('%.6f', lowered), 'cut_at', string.format('%.6f', now))
end
local until_ = math.max(paused, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'paused_until', string.format('%.6f', until_))
return string.format('%.6f', until_ - now)
"""
PAUSED_FOR_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0
return string.format('%.6f', math.max(0, paused - now))
"""
# The cut in force: {cut_rate (0: none), seconds since it was made}, on Redis's clock.
CUT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'cut_rate', 'cut_at')
return {string.format('%.6f', tonumber(held[1]) or 0), string.format('%.6f', now - (tonumber(held[2]) or 0))}
"""


@dataclass(frozen=True)
class RateCut:
    """What a 429 does to the rate: the configured rate (0: none, nothing to cut), recovery and floor, calls/s."""

    rate: float = 0.0
    recovery: float = 0.0
    floor: float = 0.0

    def lowered(self, *, now: float, paused_until: float, cut_rate: float, cut_at: float) -> float | None:
        """Return the rate to go at from now on, or None to keep it: no rate, a lone 429, or a cut already made.

        The same rule as the Redis script and the database statements, for the schedule kept in a process.
        """
        if not self.rate or not 0 <= now - paused_until < RATE_CUT_WITHIN_SECONDS or now - cut_at < 1:
            return None
        going = min(self.rate, cut_rate + self.recovery * (now - cut_at)) if cut_rate > 0 else self.rate
        return max(self.floor, going * RATE_CUT)


class RedisSchedule:
    """The schedule as a Redis hash (tat, paused_until, cut_rate, cut_at), changed only by Lua scripts."""

    def __init__(self, url: str) -> None:
        import redis

        # Short timeouts: a budget that cannot be reached is a transient provider error, not a hang.
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.errors = (redis.RedisError,)
        self._reserve = self.client.register_script(RESERVE_LUA)
        self._pause = self.client.register_script(PAUSE_LUA)
        self._paused_for = self.client.register_script(PAUSED_FOR_LUA)
        self._cut = self.client.register_script(CUT_LUA)

    def reserve(self, *, interval: float, burst: int, max_wait: float, recovery: float = 0.0) -> tuple[bool, float]:
        reserved, wait = self._reserve(keys=[REDIS_KEY], args=[interval, burst, max_wait, recovery])
        return bool(reserved), float(wait)

    def pause(self, *, seconds: float, cut: RateCut | None = None) -> float:
        cut = cut or RateCut()
        args = [seconds, cut.rate, cut.recovery, RATE_CUT, cut.floor, RATE_CUT_WITHIN_SECONDS]
        return float(self._pause(keys=[REDIS_KEY], args=args))

    def paused_for(self) -> float:
        return float(self._paused_for(keys=[REDIS_KEY]))

    def cut_held(self) -> tuple[float, float]:
        cut_rate, age = self._cut(keys=[REDIS_KEY])
        return float(cut_rate), float(age)

    def reset(self) -> None:
        self.client.delete(REDIS_KEY)


class DatabaseSchedule:
    """The schedule as one row of CallBudget, changed by one statement at a time on the database's clock."""

    def __init__(self) -> None:
        from django.db.utils import DatabaseError

        self.errors = (DatabaseError,)

    @staticmethod
    def _table() -> str:
        from redemption.gateway.sandbox_models import CallBudget

        return connection.ops.quote_name(CallBudget._meta.db_table)

    @contextmanager
    def _cursor(self, *, write: bool = True):
        """Yield a cursor that commits on its own, outside whatever transaction the caller is in."""
        if connection.vendor == "postgresql" and connection.in_atomic_block:
            # A row lock taken inside the caller's transaction would hold every other caller until
            # it commits (a web request binding a whole order): use a connection of its own.
            private = connections.create_connection(DEFAULT_DB_ALIAS)
            try:
                with private.cursor() as cursor:
                    yield cursor
            finally:
                private.close()
            return
        if connection.vendor == "postgresql" or not write:
            with connection.cursor() as cursor:
                yield cursor
            return
        # SQLite takes its write lock when the transaction starts (IMMEDIATE): one caller at a time.
        with transaction.atomic(), connection.cursor() as cursor:
            yield cursor

    def _now_sql(self) -> str:
        if connection.vendor == "postgresql":
            return "extract(epoch FROM clock_timestamp())::float8"
        return "((julianday('now') - 2440587.5) * 86400.0)"

    def _ensure_row(self) -> None:
        with self._cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {self._table()} (name, tat, paused_until, cut_rate, cut_at) VALUES (%s, 0, 0, 0, 0) "
                "ON CONFLICT (name) DO NOTHING",
                [ROW_NAME],
            )

    def reserve(self, *, interval: float, burst: int, max_wait: float, recovery: float = 0.0) -> tuple[bool, float]:
        if not interval:
            # Without a rate there is nothing to write: only a pause holds calls back.
            wait = self.paused_for()
            return wait <= max_wait, wait
        for _ in range(2):
            found = self._reserve_once(interval=interval, burst=burst, max_wait=max_wait, recovery=recovery)
            if found is not None:
                return found
            self._ensure_row()
        raise RuntimeError("The provider call budget's row could not be created.")

    def _reserve_once(
        self, *, interval: float, burst: int, max_wait: float, recovery: float
    ) -> tuple[bool, float] | None:
        table, now = self._table(), self._now_sql()
        with self._cursor() as cursor:
            if connection.vendor == "postgresql":
                # Read under the row's lock and move the schedule on, in one statement. The step between
                # slots is the configured interval, or longer while a 429's cut has not been won back.
                cursor.execute(
                    f"WITH held AS (SELECT tat, paused_until, cut_rate, cut_at, {now} AS now FROM {table} "
                    "WHERE name = %s FOR UPDATE), "
                    "rated AS (SELECT *, CASE WHEN cut_rate > 0 AND (cut_rate + %s * (now - cut_at)) * %s < 1 "
                    "THEN 1 / (cut_rate + %s * (now - cut_at)) ELSE %s END AS step FROM held), "
                    "slot AS (SELECT tat, now, step, GREATEST(now, tat - %s * step, paused_until) - now AS wait "
                    "FROM rated), "
                    f"moved AS (UPDATE {table} b SET tat = GREATEST(slot.tat, slot.now + slot.wait) + slot.step "
                    "FROM slot WHERE b.name = %s AND slot.wait <= %s) "
                    "SELECT wait FROM slot",
                    [ROW_NAME, recovery, interval, recovery, interval, burst - 1, ROW_NAME, max_wait],
                )
                row = cursor.fetchone()
                if row is None:
                    return None
                return row[0] <= max_wait, max(0.0, row[0])
            cursor.execute(
                f"SELECT tat, paused_until, cut_rate, cut_at, {now} FROM {table} WHERE name = %s", [ROW_NAME]
            )
            row = cursor.fetchone()
            if row is None:
                return None
            tat, paused, cut_rate, cut_at, at = row
            if cut_rate > 0:
                interval = max(interval, 1 / (cut_rate + recovery * (at - cut_at)))
            wait = max(at, tat - (burst - 1) * interval, paused) - at
            if wait > max_wait:
                return False, wait
            cursor.execute(f"UPDATE {table} SET tat = %s WHERE name = %s", [max(tat, at + wait) + interval, ROW_NAME])
            return True, wait

    def pause(self, *, seconds: float, cut: RateCut | None = None) -> float:
        cut = cut or RateCut()
        table, now = self._table(), self._now_sql()
        greatest, least = ("GREATEST", "LEAST") if connection.vendor == "postgresql" else ("MAX", "MIN")
        # RateCut.lowered, in SQL: the first 429 of a pause soon after the last one, a second or more after
        # the last cut, cuts the rate the schedule was going at. SET reads the row as it was before.
        cuts = f"%s > 0 AND {now} >= paused_until AND {now} - paused_until < %s AND {now} - cut_at >= 1"
        going = f"CASE WHEN cut_rate > 0 THEN {least}(%s, cut_rate + %s * ({now} - cut_at)) ELSE %s END"
        for _ in range(2):
            with self._cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET paused_until = {greatest}(paused_until, {now} + %s), "
                    f"cut_rate = CASE WHEN {cuts} THEN {greatest}(%s, %s * {going}) ELSE cut_rate END, "
                    f"cut_at = CASE WHEN {cuts} THEN {now} ELSE cut_at END "
                    f"WHERE name = %s RETURNING paused_until - {now}",
                    [
                        seconds,
                        *(cut.rate, RATE_CUT_WITHIN_SECONDS, cut.floor, RATE_CUT, cut.rate, cut.recovery, cut.rate),
                        *(cut.rate, RATE_CUT_WITHIN_SECONDS),
                        ROW_NAME,
                    ],
                )
                row = cursor.fetchone()
            if row is not None:
                return max(0.0, row[0])
            self._ensure_row()
        raise RuntimeError("The provider call budget's row could not be created.")

    def paused_for(self) -> float:
        with self._cursor(write=False) as cursor:
            cursor.execute(f"SELECT paused_until - {self._now_sql()} FROM {self._table()} WHERE name = %s", [ROW_NAME])
            row = cursor.fetchone()
        return max(0.0, row[0]) if row else 0.0

    def cut_held(self) -> tuple[float, float]:
        with self._cursor(write=False) as cursor:
            cursor.execute(
                f"SELECT cut_rate, {self._now_sql()} - cut_at FROM {self._table()} WHERE name = %s", [ROW_NAME]
            )
            row = cursor.fetchone()
        return (row[0], row[1]) if row else (0.0, 0.0)

    def reset(self) -> None:
        with self._cursor() as cursor:
            cursor.execute(f"DELETE FROM {self._table()} WHERE name = %s", [ROW_NAME])


class LocalSchedule:
    """The schedule in this process only: for a gateway used on its own (tests, scripts), not shared."""

    errors = ()

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tat = 0.0
        self.paused_until = 0.0
        self.cut_rate = 0.0
        self.cut_at = 0.0

    def reserve(self, *, interval: float, burst: int, max_wait: float, recovery: float = 0.0) -> tuple[bool, float]:
        with self.lock:
            now = time.monotonic()
            if interval > 0 and self.cut_rate > 0:
                interval = max(interval, 1 / (self.cut_rate + recovery * (now - self.cut_at)))
            slot = max(now, self.paused_until, self.tat - (burst - 1) * interval if interval > 0 else now)
            if slot - now > max_wait:
                return False, slot - now
            if interval > 0:
                self.tat = max(self.tat, slot) + interval
            return True, slot - now

    def pause(self, *, seconds: float, cut: RateCut | None = None) -> float:
        with self.lock:
            now = time.monotonic()
            lowered = (cut or RateCut()).lowered(
                now=now, paused_until=self.paused_until, cut_rate=self.cut_rate, cut_at=self.cut_at
            )
            if lowered is not None:
                self.cut_rate, self.cut_at = lowered, now
            self.paused_until = max(self.paused_until, now + seconds)
            return self.paused_until - now

    def paused_for(self) -> float:
        with self.lock:
            return max(0.0, self.paused_until - time.monotonic())

    def cut_held(self) -> tuple[float, float]:
        with self.lock:
            return self.cut_rate, time.monotonic() - self.cut_at

    def reset(self) -> None:
        with self.lock:
            self.tat = self.paused_until = self.cut_rate = self.cut_at = 0.0


def connection_release() -> None:
    """Give this thread's database connection back for a long wait, and have the worker's idle threads do so."""
    from redemption.pipeline import idle_connections_release

    connection.close()
    idle_connections_release()


class BudgetHeldBack(ProviderThrottled):
    """The next free slot is further away than the caller may wait: nothing was reserved or sent."""


class CallBudget:
    """Slots for provider calls at `rate` per second (0: no limit) with `burst`, and the shared pause."""

    def __init__(self, *, rate: float, burst: int, schedule: RedisSchedule | DatabaseSchedule | LocalSchedule) -> None:
        self.rate = rate
        self.burst = burst
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.cut = RateCut(
            rate=max(0.0, rate), recovery=RATE_RECOVERY * max(0.0, rate), floor=RATE_FLOOR * max(0.0, rate)
        )
        self.schedule = schedule
        self._local = threading.local()

    def _reserve(self, max_wait: float) -> float:
        """Reserve a slot within max_wait seconds and return the wait; raise BudgetHeldBack if none is."""
        try:
            reserved, wait = self.schedule.reserve(
                interval=self.interval, burst=self.burst, max_wait=max_wait, recovery=self.cut.recovery
            )
        except self.schedule.errors as exc:
            raise ProviderTransient(f"The provider call budget cannot be reached ({exc.__class__.__name__}).") from exc
        if not reserved:
            raise BudgetHeldBack(f"Provider calls are held back for {wait:.1f}s (the installation's budget).", wait)
        return wait

    def take(self, *, max_wait: float = WAIT_MAX_SECONDS) -> None:
        """Take a slot for the call about to be made and sleep until it; ProviderThrottled if it is further away."""
        if getattr(self._local, "prepaid", 0):
            self._local.prepaid = 0
            now = time.monotonic()
            # A slot used late bunches with the next caller's: later than one interval, it is let go.
            if self.interval and now <= self._local.prepaid_until:
                return
            if not self.interval and (now - self._local.prepaid_at <= PREPAID_FRESH_SECONDS or self.paused_for() <= 0):
                return
        self._sleep_until_slot(self._reserve(max_wait), max_wait, holding_nothing=False)

    def _sleep_until_slot(self, wait: float, max_wait: float, *, holding_nothing: bool) -> None:
        """Sleep until the reserved slot, then go, unless a 429 met meanwhile paused every caller.

        A slot is reserved up to max_wait ahead; a pause that begins while its caller sleeps moves the
        caller to a fresh slot after it (or BudgetHeldBack when that is further than max_wait). A caller
        `holding_nothing` (no lock on its connection) gives the connection back for a long sleep.
        """
        if wait > 0 and not self.interval:
            wait += random.uniform(0, PAUSE_SPREAD_SECONDS)
        while wait > 0:
            if holding_nothing and wait > RELEASE_CONNECTION_AFTER_SECONDS and not connection.in_atomic_block:
                connection_release()
            time.sleep(wait)
            try:
                paused = self.schedule.paused_for()
            except self.schedule.errors:
                return
            if paused <= 0:
                return
            wait = self._reserve(max_wait)
            if not self.interval:
                wait += random.uniform(0, PAUSE_SPREAD_SECONDS)

    def prepay(self, *, max_wait: float = WAIT_MAX_SECONDS) -> None:
        """Take the slot of this thread's next call now, before any lock or transaction, and keep it for that call.

        The wait happens here, holding nothing: no transaction, no lock, and for a long wait not even a
        database connection. Raise BudgetHeldBack when the slot is further than max_wait.
        """
        self._sleep_until_slot(self._reserve(max_wait), max_wait, holding_nothing=True)
        self._local.prepaid = 1
        self._local.prepaid_at = time.monotonic()
        self._local.prepaid_until = self._local.prepaid_at + self.interval

    def prepaid_drop(self) -> None:
        """Forget a prepaid slot that was not used (its time has passed: it cannot be given back)."""
        self._local.prepaid = 0

    def pause(self, *, seconds: float) -> None:
        """Hold every caller's provider calls for `seconds` (a 429's Retry-After), on every host.

        With a rate, the provider has just refused a call made within it: the rate is cut (RATE_CUT).
        """
        seconds = min(PAUSE_CAP_SECONDS, max(0.0, seconds))
        try:
            self.schedule.pause(seconds=seconds, cut=self.cut)
        except self.schedule.errors as exc:
            logger.warning("provider throttling pause of %.0fs not shared: %s", seconds, exc)

    def paused_for(self) -> float:
        """Return how many seconds provider calls are still paused for (0 when they are not)."""
        try:
            return self.schedule.paused_for()
        except self.schedule.errors:
            return 0.0

    def rate_now(self) -> float:
        """Return the calls per second the schedule goes at now (0: no limit).

        PROVIDER_RATE_LIMIT, or less while the cut made by the provider's 429s is being won back.
        """
        if not self.rate:
            return 0.0
        try:
            cut_rate, age = self.schedule.cut_held()
        except self.schedule.errors:
            return self.rate
        if cut_rate <= 0:
            return self.rate
        return min(self.rate, cut_rate + self.cut.recovery * max(0.0, age))

    def reset(self) -> None:
        """Forget every reservation and pause (tests and benchmarks start from a quiet provider)."""
        self.schedule.reset()


@lru_cache(maxsize=4)
def _budget(rate: float, burst: int, broker_url: str) -> CallBudget:
    if broker_url.startswith(("redis://", "rediss://")):
        return CallBudget(rate=rate, burst=burst, schedule=RedisSchedule(broker_url))
    return CallBudget(rate=rate, burst=burst, schedule=DatabaseSchedule())


def budget_local() -> CallBudget:
    """Return a budget of this process alone, with no rate: it still honours the 429s it sees."""
    return CallBudget(rate=0.0, burst=1, schedule=LocalSchedule())


def budget_get() -> CallBudget:
    """Return the installation's budget: Redis when the broker is Redis, else the database."""
    return _budget(settings.PROVIDER_RATE_LIMIT, settings.PROVIDER_RATE_BURST, settings.CELERY_BROKER_URL)
