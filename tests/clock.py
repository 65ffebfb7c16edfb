"""The test clock: the whole suite can run with the clock moved ahead, worker subprocesses included.

`TEST_CLOCK_SHIFT_DAYS=400 make test` (or `pytest --clock-shift-days=400`) starts every test under
time-machine that many days from now, so a test that forgot to pin a date it depends on fails today
instead of on some later morning. Tests that pin their own moment keep it: time-machine nests.

Run as a module, it starts a command (e.g. a Celery worker) on the moved clock:
`python -m tests.clock EPOCH_SECONDS MODULE ARGS...`.
"""

import os
import runpy
import sys
import time

import time_machine

SHIFT_ENV = "TEST_CLOCK_SHIFT_DAYS"
_shift_days = 0


def shift_days_set(days: int) -> None:
    """Record the shift the session runs with (read by the command-line helpers below)."""
    global _shift_days
    _shift_days = days
    # Subprocesses started without this module (manage.py checks) see the same setting.
    os.environ[SHIFT_ENV] = str(days)


def shift_days() -> int:
    return _shift_days


def python_module_command(module: str, *args: str) -> list[str]:
    """Return the argv that runs `python -m module args` on the same clock as this process."""
    if not _shift_days:
        return [sys.executable, "-m", module, *args]
    # time.time() here is already moved: the child starts where this process's clock is now.
    return [sys.executable, "-m", "tests.clock", repr(time.time()), module, *args]


def main() -> None:
    moment, module, *args = sys.argv[1:]
    time_machine.travel(float(moment), tick=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
