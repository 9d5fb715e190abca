"""Metrics at scale: the exact one-sided binomial test for millions of trials (scipy) and ``summarize``
over a million rows (with its Mann–Whitney test and pair accuracy).

Run ``python -m bench.bench_metrics`` (part of ``make bench``). Each measure runs ``--rounds`` times and
the fastest is printed beside its baseline: one second, the budget a report of a million-row run may
spend on each (these were timing assertions in the tests; timings belong here, where a slow shared
machine makes a figure worse instead of the test suite red). It reports; it never asserts.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import polars as pl

from asyncpipe.metrics import binomial_p_greater, summarize

BASELINE_SECONDS = 1.0


def best_of(rounds: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def p_values_for_millions() -> None:
    n, p0 = 2_000_000, 0.7
    for k in (1_400_000, 1_401_000, 1_399_000, 1_500_000, 1_400_001):
        binomial_p_greater(k, n, p0)


def million_rows() -> pl.DataFrame:
    rng = random.Random(3)
    labels = ["A"] * 700_000 + ["B"] * 300_000
    p_a = [rng.random() * 0.6 + (0.4 if label == "A" else 0.0) for label in labels]
    rows = list(range(700_000)) + list(range(300_000))  # 300,000 pairs and 400,000 A rows without one
    return pl.DataFrame(
        {"label": labels, "row": rows, "p_a": p_a},
        schema={"label": pl.Utf8, "row": pl.Int64, "p_a": pl.Float64},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per measure; the fastest is printed")
    rounds = max(1, parser.parse_args().rounds)
    preds = million_rows()
    measures = [
        ("5 one-sided binomial tests, n = 2,000,000", best_of(rounds, p_values_for_millions)),
        ("summarize 1,000,000 rows (70% A)", best_of(rounds, lambda: summarize(preds))),
    ]
    print(f"{'measure':44}{'seconds':>10}{'baseline':>10}  verdict")
    for name, seconds in measures:
        verdict = "within" if seconds <= BASELINE_SECONDS else "SLOWER than baseline"
        print(f"{name:44}{seconds:>10.3f}{BASELINE_SECONDS:>10.1f}  {verdict}")


if __name__ == "__main__":
    main()
