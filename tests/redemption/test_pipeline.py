"""A pool process's binding threads (redemption.pipeline), in this process: what they survive."""

import threading

from kombu.exceptions import OperationalError

from redemption import binding, pipeline
from redemption.binding import BindingDeferred


class Gateway:
    def order_create(self) -> str:
        return "sent"


def run_within(seconds: float, allocation_id: int, later) -> bool:
    """Hand a binding to the threads; True once its task would have returned."""
    task = threading.Thread(target=pipeline.run, args=(allocation_id,), kwargs={"later": later}, daemon=True)
    task.start()
    task.join(seconds)
    return not task.is_alive()


def test_binding_threads_outlive_bindings_they_could_not_enqueue_again(monkeypatch):
    def deferred_after_its_call(*, allocation_id: int) -> None:
        pipeline.gated(Gateway()).order_create()
        raise BindingDeferred(1.0, "Provider answered 503")

    def broker_gone(allocation_id: int, deferred: Exception) -> None:
        raise OperationalError("Connection closed by server")

    monkeypatch.setattr(binding, "allocation_bind", deferred_after_its_call)
    for allocation_id in range(pipeline.THREADS + 1):
        assert run_within(5, allocation_id, broker_gone)
    # Every thread is still there to take the next binding.
    done = []
    monkeypatch.setattr(binding, "allocation_bind", lambda *, allocation_id: done.append(allocation_id))
    assert run_within(5, 99, broker_gone)
    assert done == [99]
