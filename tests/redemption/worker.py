"""A real Celery worker in a subprocess, bound to the pytest database and the Redis broker."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from django.db import connection

from tests.clock import python_module_command

BASE_DIR = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """Return a URL for the database the tests use (the test database, not the configured one)."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    def __init__(
        self,
        *,
        broker_url: str,
        provider_url: str | None = None,
        token: str = "",
        concurrency: int = 2,
        name: str = "",
        **env: str,
    ):
        # Without a provider URL the worker keeps the sandbox provider (imports need none).
        provider = {}
        if provider_url:
            provider = {
                "PROVIDER_BACKEND": "http",
                "PROVIDER_URL": provider_url,
                "PROVIDER_TOKEN": token,
                "PROVIDER_TIMEOUT": "10",
            }
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": broker_url,
            **provider,
            "CELERY_WORKER_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": "WARNING",
            # As in production: each pool process keeps its connection (and must not keep a lock).
            "CONN_MAX_AGE": "60",
            **env,
        }
        self.concurrency = concurrency
        # A node name of its own, as a worker on another host has (celery -n NAME@%h).
        self.name = name
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self.process = subprocess.Popen(
            python_module_command(
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                f"--concurrency={self.concurrency}",
                *([f"--hostname={self.name}@%h"] if self.name else []),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ),
            cwd=BASE_DIR,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def children(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def kill_children(self) -> None:
        """Kill the pool processes (as the OOM killer would); the main process stays and redelivers."""
        for pid in self.children():
            os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """Kill the worker outright, main process and pool (a host that lost its power)."""
        children = self.children()
        self.process.kill()
        self.process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for(predicate, timeout: float = 60, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
