"""Every benchmark runs (``make bench``, ``bench-batch``, ``bench-cost``) at a tiny scale, so a change to
the code they drive cannot break one unseen. Nothing here judges a figure: timings are the benchmarks'
own business, printed beside their baselines, never asserted in tests. ``bench-local`` is left out: it
runs the embedded model for minutes even at its smallest."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SMOKE = {
    "bench_engine": ["--scale", "0.01", "--memory-rows", "2000"],
    "bench_metrics": ["--rounds", "1"],
    "bench_batch": ["--rows", "2000"],
    "bench_cost": ["--pairs", "20"],
}
#: a line each benchmark prints once it has measured everything (its verdict or its last table row)
LAST_WORDS = {
    "bench_engine": "targets NOT met:",
    "bench_metrics": "summarize 1,000,000 rows",
    "bench_batch": "batch peak < 1 GB:",
    "bench_cost": "defaults against today:",
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_the_benchmark_runs_to_its_verdict(name: str):
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *SMOKE[name]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert LAST_WORDS[name] in result.stdout, result.stdout[-2000:]
