"""How often each property holds, and whether A and B differ in it: pure functions, no I/O.

A row *has* a property when the checker's p(yes) ≥ 0.5. Every statistic here works on *pairs* —
row i of A and row i of B answer the same prompt — because pairing removes the prompt-to-prompt
variation that an unpaired test would have to overcome:

- **Prevalence** in A and in B: the share of the pairs' A rows (B rows) that have the property, and
  the mean p(yes) beside it (a softer figure that does not depend on the 0.5 cut).
- **Difference** prevalence_A − prevalence_B = (b − c) / n, where b counts pairs in which only the A
  row has the property and c those in which only the B row has it.
- **95 % interval for that paired difference**: Newcombe's hybrid score ("square-and-add") interval
  for paired proportions, method 10 of Newcombe RG (1998), *Improved confidence intervals for the
  difference between binomial proportions based on paired data*, Statistics in Medicine 17:2635–2650,
  with the continuity-corrected correlation estimate the paper recommends (as in Fagerland, Lydersen
  & Laake 2014, Statistics in Medicine 33:2850–2875, and their book *Statistical Analysis of
  Contingency Tables*, ch. 8). It combines the Wilson intervals of both prevalences, stays inside
  [−1, 1], and keeps its coverage near 0 and 1 and at small n, where the Wald interval fails.
  Checked against the book's worked example (Cavo et al. 2012: 59, 6, 16, 80 → −0.0621, 95 % CI
  −0.1186 to −0.0046) in ``tests/test_properties_stats.py``.
- **Exact McNemar test**: under "no difference" each discordant pair is equally likely to lean
  either way, so b ~ Binomial(b + c, ½); the two-sided p-value is ``binomtest(b, b + c)``.
- **Benjamini–Hochberg q-values** over every test of a run: a run tests several properties, and q
  controls the expected share of false findings among those called significant.

The Wilson interval, the McNemar test and BH come from :mod:`asyncpipe.metrics.significance` (scipy
underneath), imported where used: scipy takes seconds to import on a busy machine, and a command that
never reaches this stage should not pay for it.

Frames in (``property_scores``): ``property`` (Utf8 id), ``label`` ("A"/"B" or a file name), ``row``
(Int64, the row's index in its file), ``p_yes`` (Float64, null = unscored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

#: the q-value below which a difference is called significant in the report and the terminal
SIGNIFICANT_Q = 0.05


@dataclass(frozen=True)
class PairedCounts:
    """The paired 2×2 table: both rows have the property, only A's, only B's, neither."""

    both: int
    a_only: int
    b_only: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.a_only + self.b_only + self.neither

    @classmethod
    def of(cls, yes_a: Sequence[bool], yes_b: Sequence[bool]) -> PairedCounts:
        both = a_only = b_only = 0
        for a, b in zip(yes_a, yes_b, strict=True):
            both += a and b
            a_only += a and not b
            b_only += b and not a
        return cls(both, a_only, b_only, len(yes_a) - both - a_only - b_only)


def newcombe_paired_interval(counts: PairedCounts, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10, 1998) for prevalence_A − prevalence_B on pairs.

    With p1 = (both + a_only)/n, p2 = (both + b_only)/n, their Wilson intervals (l1, u1), (l2, u2) and
    ψ the continuity-corrected correlation of the two margins:
    L = d − √((p1 − l1)² + (u2 − p2)² − 2ψ(p1 − l1)(u2 − p2)),
    U = d + √((p2 − l2)² + (u1 − p1)² − 2ψ(p2 − l2)(u1 − p1)).
    """
    from asyncpipe.metrics.significance import wilson_interval

    n = counts.n
    if n <= 0:
        raise ValueError("newcombe_paired_interval needs at least one pair")
    yes_a, yes_b = counts.both + counts.a_only, counts.both + counts.b_only
    p1, p2 = yes_a / n, yes_b / n
    l1, u1 = wilson_interval(yes_a, n, confidence)
    l2, u2 = wilson_interval(yes_b, n, confidence)
    margins = yes_a * (n - yes_a) * yes_b * (n - yes_b)
    psi = 0.0
    if margins > 0:
        cross = counts.both * counts.neither - counts.a_only * counts.b_only
        if cross > n / 2:
            psi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            psi = cross / math.sqrt(margins)
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)))
    high = d + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, low), min(1.0, high)


def bh_q_values(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg q-values over the p-values given; a missing p-value stays missing and does
    not count as a test."""
    from asyncpipe.metrics.significance import benjamini_hochberg

    present = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    q = benjamini_hochberg([float(p_values[i]) for i in present])  # type: ignore[arg-type]
    for i, value in zip(present, q, strict=True):
        out[i] = value
    return out


def paired_difference(yes_a: Sequence[bool], yes_b: Sequence[bool]) -> dict:
    """Difference, Newcombe interval and exact McNemar p for one property on aligned pairs."""
    from asyncpipe.metrics.significance import exact_mcnemar_p

    counts = PairedCounts.of(yes_a, yes_b)
    if counts.n == 0:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None, "n_pairs": 0}
    low, high = newcombe_paired_interval(counts)
    return {
        "difference": (counts.a_only - counts.b_only) / counts.n,
        "ci_low": low,
        "ci_high": high,
        "p_value": exact_mcnemar_p(counts.a_only, counts.b_only),
        "n_pairs": counts.n,
    }


def _pairs(scores: pl.DataFrame, prop: str, first: str, second: str) -> pl.DataFrame:
    """Rows ``p_first``, ``p_second`` of the pairs where both rows of ``prop`` were scored."""
    mine = scores.filter(pl.col("property") == prop)
    left = mine.filter(pl.col("label") == first).select("row", p_first=pl.col("p_yes"))
    right = mine.filter(pl.col("label") == second).select("row", p_second=pl.col("p_yes"))
    return left.join(right, on="row", how="inner").drop_nulls().sort("row")


#: a paired difference of two files' prevalence: Newcombe's interval, exact McNemar p, BH q
PAIRED_COLUMNS: dict[str, pl.DataType] = {
    "difference": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "p_value": pl.Float64,
    "q_value": pl.Float64,
    "n_pairs": pl.Int64,
}

PROPERTY_COLUMNS: dict[str, pl.DataType] = {
    "rank": pl.Int64,
    "property": pl.Utf8,
    "text": pl.Utf8,
    "claimed": pl.Utf8,
    "measured": pl.Utf8,
    "contradicts": pl.Boolean,
    "prevalence_a": pl.Float64,
    "prevalence_b": pl.Float64,
    "mean_p_yes_a": pl.Float64,
    "mean_p_yes_b": pl.Float64,
    **PAIRED_COLUMNS,
    "n_unscored": pl.Int64,
}


def property_table(scores: pl.DataFrame, properties: Sequence[tuple[str, str, str | None]]) -> pl.DataFrame:
    """One row per property (``(id, text, claimed)``), ranked by |difference| (then p-value).

    ``scores`` holds the checked rows with ``label`` "A" or "B". ``measured`` is the dataset where the
    property is more common ("A", "B", or null for no difference); ``contradicts`` is true when the
    describer claimed the other one.
    """
    rows = []
    for prop, text, claimed in properties:
        pairs = _pairs(scores, prop, "A", "B")
        yes_a = [p >= 0.5 for p in pairs["p_first"]]
        yes_b = [p >= 0.5 for p in pairs["p_second"]]
        stats = paired_difference(yes_a, yes_b)
        n = stats["n_pairs"]
        diff = stats["difference"]
        measured = None if not diff else ("A" if diff > 0 else "B")
        mine = scores.filter(pl.col("property") == prop)
        rows.append(
            {
                "property": prop,
                "text": text,
                "claimed": claimed,
                "measured": measured,
                "contradicts": None if claimed is None or measured is None else claimed != measured,
                "prevalence_a": sum(yes_a) / n if n else None,
                "prevalence_b": sum(yes_b) / n if n else None,
                "mean_p_yes_a": pairs["p_first"].mean() if n else None,
                "mean_p_yes_b": pairs["p_second"].mean() if n else None,
                **stats,
                "n_unscored": int(mine["p_yes"].null_count()),
            }
        )
    for row, q in zip(rows, bh_q_values([r["p_value"] for r in rows]), strict=True):
        row["q_value"] = q
    rows.sort(key=lambda r: (-abs(r["difference"] or 0.0), 1.0 if r["p_value"] is None else r["p_value"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return pl.DataFrame(rows, schema=PROPERTY_COLUMNS)


PREVALENCE_COLUMNS: dict[str, pl.DataType] = {
    "file": pl.Utf8,
    "property": pl.Utf8,
    "text": pl.Utf8,
    "base": pl.Utf8,
    "n": pl.Int64,
    "n_yes": pl.Int64,
    "prevalence": pl.Float64,
    "prevalence_low": pl.Float64,
    "prevalence_high": pl.Float64,
    "mean_p_yes": pl.Float64,
    "n_unscored": pl.Int64,
    "prevalence_base": pl.Float64,
    **PAIRED_COLUMNS,
}


def prevalence_table(
    scores: pl.DataFrame,
    properties: Sequence[tuple[str, str]],
    files: Sequence[tuple[str, str | None]],
) -> pl.DataFrame:
    """One row per (file, property): prevalence with its Wilson interval, and, for a file with a base
    (``files`` lists ``(file, base or None)``; ``label`` in ``scores`` is the file), the paired
    difference file − base with Newcombe's interval and the exact McNemar p. q-values are
    Benjamini–Hochberg over every file-vs-base test in the table."""
    from asyncpipe.metrics.significance import wilson_interval

    rows = []
    for file, base in files:
        for prop, text in properties:
            mine = scores.filter((pl.col("property") == prop) & (pl.col("label") == file))
            scored = mine["p_yes"].drop_nulls()
            n = scored.len()
            n_yes = int((scored >= 0.5).sum()) if n else 0
            low, high = wilson_interval(n_yes, n) if n else (None, None)
            row = {
                "file": file,
                "property": prop,
                "text": text,
                "base": base,
                "n": n,
                "n_yes": n_yes,
                "prevalence": n_yes / n if n else None,
                "prevalence_low": low,
                "prevalence_high": high,
                "mean_p_yes": scored.mean() if n else None,
                "n_unscored": int(mine["p_yes"].null_count()),
            }
            if base is not None:
                pairs = _pairs(scores, prop, file, base)
                yes_base = [p >= 0.5 for p in pairs["p_second"]]
                row.update(paired_difference([p >= 0.5 for p in pairs["p_first"]], yes_base))
                row["prevalence_base"] = sum(yes_base) / len(yes_base) if yes_base else None
            rows.append(row)
    for row, q in zip(rows, bh_q_values([r.get("p_value") for r in rows]), strict=True):
        row["q_value"] = q
    return pl.DataFrame(rows, schema=PREVALENCE_COLUMNS)
