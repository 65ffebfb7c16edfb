"""The renewals benchmark keeps working as the schema grows: a small run, on its own database."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parents[2]


@requires_postgres
def test_renewals_benchmark_runs_at_a_small_size_and_reports_its_figures():
    env = {**os.environ, "BENCH_SIZES": "500,1000", "BENCH_DATABASE": "o365_bench_renewals_test"}
    result = subprocess.run(
        [sys.executable, "bench/renewals.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    # At a few hundred rows some kinds of work are empty, so the query counts need not match the
    # large runs' (the targets are judged by `make bench-renewals`): here it must run and report.
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "1,000 subscriptions generated" in result.stdout
    assert "Queries per run by size" in result.stdout
    assert "Ordinary day at 1,000 subscriptions" in result.stdout
