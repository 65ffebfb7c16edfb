"""A worker process keeps its provider call in flight: the next binding's database work overlaps the call.

A binding is database work (its subscription's lock and queue's head, the claim), a provider call
of some 50 ms, then more database work (the result, the lock's release). One after the other, a
process's provider waits for all of that between two calls. On PostgreSQL with no installation rate
(see overlapping) each binding therefore runs in a thread of the pool process, with its own database
connection, and its task returns as soon as the binding's first provider call starts: the process
takes its next binding and does that one's database work while the call is in flight, and records
the previous one's result during the next call. A gate lets one provider call through at a time per
process: a process has at most one call in flight, as without the threads. The subscription's advisory
lock, taken on the thread's connection, still keeps each subscription's changes one at a time and in
order, whichever thread or host runs them.

The task's message is acknowledged once the call has started. A pool process killed during the call
leaves its binding claimed with no lock held (PostgreSQL releases a dead session's locks): the process
that replaces it finds such bindings at once and enqueues them again (binding.allocation_orphans), and
the one that takes it up looks up what reached the provider before sending anything (rule 6). A process
that stops lets its bindings in flight finish first.
"""

import collections
import logging
import os
import threading
import time
from collections.abc import Callable

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

# One binding calling, one waiting at the gate with its database work done, one recording the result
# of the call before (a binding whose turn comes while a recording is slower than a call waits for it).
THREADS = 3
IDLE_SECONDS = 1.0

_gate = threading.Lock()
_here = threading.local()
_threads: "_Threads | None" = None
_threads_pid: int | None = None


class Handoff:
    """What a task waits for from its binding's thread: the first provider call starting, or the end."""

    def __init__(self) -> None:
        self.started = False
        self.error: BaseException | None = None
        self._event = threading.Event()

    def calling(self) -> None:
        if not self._event.is_set():
            self.started = True
            self._event.set()

    def finish(self, error: BaseException | None = None) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def wait(self) -> None:
        self._event.wait()
        if self.error is not None:
            raise self.error


class GatedGateway:
    """A gateway whose calls pass the process's gate one at a time; the first one hands the task back."""

    def __init__(self, gateway, handoff: Handoff) -> None:
        self._gateway = gateway
        self._handoff = handoff

    def __getattr__(self, name: str):
        attribute = getattr(self._gateway, name)
        if not callable(attribute):
            return attribute

        def gated(*args, **kwargs):
            try:
                with _gate:
                    self._handoff.calling()
                    return attribute(*args, **kwargs)
            finally:
                # Let the thread waiting at the gate send its call now, before this one records its result.
                time.sleep(0)

        return gated


def gated(gateway):
    """Return the gateway as this thread must use it: through the process's gate in a binding thread.

    Other work keeps its own way of calling (the reconciliation reads four tenants at once by design).
    """
    handoff = getattr(_here, "handoff", None)
    return gateway if handoff is None else GatedGateway(gateway, handoff)


def overlapping() -> bool:
    """Whether a worker runs bindings in threads: on PostgreSQL, with no installation rate (PROVIDER_RATE_LIMIT).

    With a rate, calls go at the budget's pace, each in the slot reserved for it before its lock was
    taken (redemption.gateway.budget); a call kept waiting behind the process's previous one would
    miss its slot and spend another. Workers that the rate holds back gain nothing from overlapping.
    """
    return connection.vendor == "postgresql" and not settings.PROVIDER_RATE_LIMIT


class _Threads:
    """A pool process's binding threads, started with its first binding.

    A thread idle for IDLE_SECONDS gives its database connection back, as a process does between
    tasks, and so do the idle ones when a binding is about to wait for the provider's budget
    (release_idle): a fleet held back by a 429's pause keeps no connection open.
    """

    def __init__(self) -> None:
        self.ready = threading.Condition()
        self.jobs: collections.deque = collections.deque()
        self.releases = 0
        self.stopping = False
        self.threads = [
            threading.Thread(target=self._loop, name=f"binding-{n}", daemon=True) for n in range(1, THREADS + 1)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, function: Callable, *args) -> None:
        with self.ready:
            self.jobs.append((function, args))
            self.ready.notify()

    def release_idle(self) -> None:
        with self.ready:
            self.releases += 1
            self.ready.notify_all()

    def _loop(self) -> None:
        seen = 0
        while True:
            with self.ready:
                while not self.jobs and not self.stopping and seen == self.releases:
                    if not self.ready.wait(timeout=IDLE_SECONDS):
                        break
                job = self.jobs.popleft() if self.jobs else None
                seen = self.releases
                stopping = self.stopping
            if job is None:
                # Idle for a while, asked to give the connection back, or stopping with nothing left.
                connection.close()
                if stopping:
                    return
                continue
            function, args = job
            try:
                function(*args)
            except BaseException:
                # A binding thread outlives whatever one binding raises: the process relies on it.
                logger.exception("A binding thread's work failed")

    def shutdown(self) -> None:
        """Let the bindings queued and in flight finish, then stop the threads."""
        with self.ready:
            self.stopping = True
            self.ready.notify_all()
        for thread in self.threads:
            thread.join()


def _pool() -> _Threads:
    global _threads, _threads_pid
    if _threads is None or _threads_pid != os.getpid():
        # Threads do not survive a fork: each pool process starts its own.
        _threads = _Threads()
        _threads_pid = os.getpid()
    return _threads


def run(allocation_id: int, *, later: Callable[[int, Exception], None]) -> None:
    """Bind the allocation in a binding thread; return once its first provider call starts, or it ends.

    What it raises before the call is raised here (the task handles it as usual); a binding deferred
    after the call started, when its task has returned, is enqueued again by `later(allocation_id, deferred)`.
    """
    handoff = Handoff()
    _pool().submit(_thread, allocation_id, handoff, later)
    handoff.wait()


def _thread(allocation_id: int, handoff: Handoff, later) -> None:
    """Bind the allocation; whatever happens, its task hears of it or, once it has returned, the log does."""
    from config.celery import health_check_without_round_trip
    from redemption.binding import BindingDeferred, allocation_bind

    _here.handoff = handoff
    try:
        # This thread's connection, kept between bindings like a task's (config.celery).
        close_old_connections()
        health_check_without_round_trip(connection)
        allocation_bind(allocation_id=allocation_id)
    except BindingDeferred as deferred:
        if handoff.started:
            _later(later, allocation_id, deferred)
        handoff.finish(deferred)
    except BaseException as exc:
        if handoff.started:
            # Its task has returned: the binding stays claimed and the sweep takes it up again.
            logger.exception("Binding of allocation %s stopped after its provider call started", allocation_id)
        handoff.finish(exc)
    else:
        handoff.finish()
    finally:
        _here.handoff = None
        handoff.finish()  # never leave the task waiting
        close_old_connections()


def _later(later, allocation_id: int, deferred: Exception) -> None:
    """Enqueue the binding again; with the broker out of reach, its saved retry time is the sweep's to keep."""
    try:
        later(allocation_id, deferred)
    except Exception:
        logger.exception("Allocation %s could not be enqueued again; the sweep will send it", allocation_id)


def _orphans_enqueue() -> None:
    from redemption.binding import allocation_orphans
    from redemption.services import allocation_enqueue

    try:
        for allocation_id in allocation_orphans():
            allocation_enqueue(allocation_id)
    except Exception:
        logger.exception("Looking for bindings a stopped worker process left failed; the sweep will find them")
    finally:
        connection.close()


def idle_connections_release() -> None:
    """Have this process's idle binding threads give their database connections back (a long wait begins)."""
    if _threads is not None and _threads_pid == os.getpid():
        _threads.release_idle()


@worker_process_init.connect
def _process_started(**kwargs) -> None:
    """A new pool process (at start, or replacing one that died) enqueues again what a dead one left in flight."""
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # In a thread of its own: its connection is new, never the one the process inherited.
        threading.Thread(target=_orphans_enqueue, name="binding-orphans", daemon=True).start()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _process_stopping(**kwargs) -> None:
    """A process stopping lets its bindings in flight finish and record their results.

    A prefork pool's process hears worker_process_shutdown; a worker whose tasks run in its own process
    (`--pool=solo`, threads) only worker_shutdown.
    """
    if _threads is not None and _threads_pid == os.getpid():
        _threads.shutdown()
