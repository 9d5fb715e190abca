"""Pair accuracy: the test that uses the design's pairing of rows.

Row i of A and row i of B answer the same prompt. Among pairs where both rows are scored, a pair is
*won* when the A row gets a higher p(A) than its B partner, *lost* when lower, and *tied* when equal.
Pair accuracy counts a tie as one half: ``(wins + ties / 2) / n_pairs``. It needs no threshold, so it
is untouched by the model's lean towards one label and by the bias offset (a monotone correction
keeps every pair's order). Its interval is the two-sided Wilson 95 % interval; its p-value is the
exact one-sided sign test of wins against losses, ties left out.

Input frames carry ``label`` ("A"/"B"), ``row`` (the index in its file: the pair index) and a
probability column (``p_a`` by default; null or NaN = unscored). Rows without a partner of the other
label (the longer file's tail) are simply not pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from asyncpipe.metrics.significance import sign_test_p_greater, wilson_interval

#: the pair keys of a summary, also columns of metrics.parquet
PAIR_INT_KEYS = ("n_pairs", "pair_wins", "pair_losses", "pair_ties")
PAIR_FLOAT_KEYS = ("pair_accuracy", "pair_ci_low", "pair_ci_high", "pair_p_value")


@dataclass(frozen=True)
class PairCounts:
    """How the scored pairs came out: A row above, below, or level with its B partner."""

    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties


def pair_counts(preds: pl.DataFrame, *, p_column: str = "p_a") -> PairCounts:
    """Count won, lost and tied pairs among pairs whose two rows are both scored."""
    missing = [c for c in ("label", "row", p_column) if c not in preds.columns]
    if missing:
        raise ValueError(f"pair_counts needs column(s) {missing}; the frame has {preds.columns}")
    scored = preds.select("label", "row", p=pl.col(p_column).cast(pl.Float64).fill_nan(None)).filter(
        pl.col("p").is_not_null()
    )
    a = scored.filter(pl.col("label") == "A").select("row", p_a_row=pl.col("p"))
    b = scored.filter(pl.col("label") == "B").select("row", p_b_row=pl.col("p"))
    joined = a.join(b, on="row", how="inner")
    counts = joined.select(
        wins=(pl.col("p_a_row") > pl.col("p_b_row")).sum(),
        losses=(pl.col("p_a_row") < pl.col("p_b_row")).sum(),
        ties=(pl.col("p_a_row") == pl.col("p_b_row")).sum(),
    ).row(0, named=True)
    return PairCounts(int(counts["wins"] or 0), int(counts["losses"] or 0), int(counts["ties"] or 0))


def pair_summary(counts: PairCounts) -> dict[str, float | int | None]:
    """Pair accuracy, its Wilson 95 % interval, the one-sided sign-test p-value and the counts.

    With no scored pair every rate is None (never 0.5: there is nothing to report)."""
    out: dict[str, float | int | None] = {
        "n_pairs": counts.n,
        "pair_wins": counts.wins,
        "pair_losses": counts.losses,
        "pair_ties": counts.ties,
        **dict.fromkeys(PAIR_FLOAT_KEYS),
    }
    if counts.n == 0:
        return out
    successes = counts.wins + counts.ties / 2.0
    low, high = wilson_interval(successes, counts.n)
    out.update(
        pair_accuracy=successes / counts.n,
        pair_ci_low=low,
        pair_ci_high=high,
        pair_p_value=sign_test_p_greater(counts.wins, counts.losses),
    )
    return out
