"""How well the classifier tells A from B: one summary dict of counts, rates and calibration scores.

This is a small, tested module on purpose: the handful of statistics we need (Wilson interval, exact
binomial test against the majority-class rate, rank AUC, log loss, Brier score, expected calibration
error) is a few dozen lines of polars and the standard library, which is cheaper to own than a scipy
or scikit-learn dependency.

Input frames carry ``label`` (Utf8, "A" or "B": the file the row truly came from; A is the positive
class) and a probability column, ``p_a`` by default (Float64, the model's p(A); null means the row was
not scored). A row is predicted "A" when ``p_a >= 0.5``. NaN is read as null, because a NaN p(A) is a row
the model did not score, not a guess. Unscored rows are counted and then left out of every rate, so a
model that fails to answer is never credited with a 0.5 guess.

Everything is computed with polars expressions over the whole column, so a million rows take a few
tens of milliseconds; the only Python loops are the binomial tails, which stop once their terms vanish.
"""

from __future__ import annotations

import math

import polars as pl

# Probabilities are clipped here before any log, so a confident wrong answer costs ~34.5 nats, not inf.
EPS = 1e-15
# Two-sided 95% normal quantile, to more digits than 1.96 so intervals match published tables.
Z_95 = 1.959963984540054


def scored_rows(preds: pl.DataFrame, p_column: str = "p_a") -> pl.DataFrame:
    """Check the input contract and keep the scored rows as ``is_a`` (Boolean) and ``p`` (Float64).

    Fails loudly on a missing column, a label other than "A"/"B", or a probability outside [0, 1]:
    those are bugs upstream, and a metric computed over them would look plausible and be wrong.
    """
    missing = [c for c in ("label", p_column) if c not in preds.columns]
    if missing:
        raise ValueError(f"predictions frame lacks column(s) {missing}; it has {preds.columns}")
    rows = preds.select(
        label=pl.col("label").cast(pl.Utf8),
        p=pl.col(p_column).cast(pl.Float64).fill_nan(None),
    )
    bad = rows.select(
        bad_label=(pl.col("label").is_null() | ~pl.col("label").is_in(["A", "B"])).sum(),
        bad_p=((pl.col("p") < 0.0) | (pl.col("p") > 1.0)).sum(),
    ).row(0, named=True)
    if bad["bad_label"]:
        raise ValueError(f"{bad['bad_label']} row(s) have a label other than 'A' or 'B'")
    if bad["bad_p"]:
        raise ValueError(f"{bad['bad_p']} row(s) have {p_column} outside [0, 1]")
    return rows.filter(pl.col("p").is_not_null()).select(is_a=pl.col("label") == "A", p=pl.col("p"))


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion.

    Chosen over the textbook normal interval because it stays inside [0, 1] and keeps its coverage at
    small n and at accuracies near 0 or 1, which is exactly where a strong classifier lands.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    phat = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (phat + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(phat * (1.0 - phat) / n + z2 / (4 * n * n))
    # At 0 or n successes the bound is exactly 0 or 1; rounding would otherwise give 0.9999999999999999.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def binomial_test_p_value(successes: int, n: int, p0: float = 0.5) -> float:
    """Exact two-sided binomial test of ``successes`` out of ``n`` against success probability ``p0``.

    The p-value is the total probability, under Binomial(n, p0), of every outcome no more likely than
    the observed one (an outcome counts as "no more likely" up to a relative 1e-7, as in scipy's
    ``binomtest``, so exact ties are not lost to rounding). A p-value below the smallest float (about
    1e-308) comes back as 0.0; the result is never NaN.

    For p0 = 0.5 (the default) the distribution is symmetric, so this is twice the smaller tail, capped
    at 1; that case keeps its own short path. The tail is summed in log space: the first term comes
    from ``math.lgamma`` and each further term from the ratio of neighbours, relative to the first, so
    nothing underflows even for n in the millions. Terms fall off like a Gaussian below the mean, so the
    loop stops after a few times sqrt(n) steps instead of walking all n. Any other p0 goes through
    :func:`_binomial_test_general`, which works the same way from both ends of the distribution.
    """
    if n <= 0:
        raise ValueError("binomial_test_p_value needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    if not 0.0 <= p0 <= 1.0:  # also rejects NaN
        raise ValueError(f"p0 must lie in [0, 1], got {p0}")
    if p0 != 0.5:
        return _binomial_test_general(successes, n, p0)
    m = min(successes, n - successes)  # P(X >= k) == P(X <= n - k) by symmetry
    log_first = math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1) - n * math.log(2.0)
    total = 1.0  # the tail P(X <= m) in units of the first term, P(X = m)
    term = 1.0
    for i in range(m, 0, -1):
        term *= i / (n - i + 1)  # P(X = i - 1) / P(X = i)
        total += term
        if term < 1e-17 * total:
            break
    return min(1.0, 2.0 * math.exp(log_first + math.log(total)))


# An outcome whose probability is at most (1 + this) times the observed one's counts as "as extreme".
_TIE_TOLERANCE = 1e-7


def _binomial_test_general(k: int, n: int, p0: float) -> float:
    """Two-sided exact binomial p-value for any p0 in [0, 1]; see :func:`binomial_test_p_value`.

    The pmf rises to its mode and falls after it, so the outcomes no more likely than ``k`` are
    exactly ``0..low`` and ``high..n`` for two boundaries found by bisection (O(log n) lgamma calls).
    Each tail is then summed walking outward from its boundary, where its largest term is, until the
    terms (which shrink at least geometrically) no longer change the sum.
    """
    if p0 in (0.0, 1.0):  # a point mass at 0 or n: the observed count is either certain or impossible
        return 1.0 if k == round(p0 * n) else 0.0
    log_p, log_q = math.log(p0), math.log1p(-p0)
    log_n_fact = math.lgamma(n + 1)

    def log_pmf(j: int) -> float:
        return log_n_fact - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q

    mode = min(n, max(0, math.floor((n + 1) * p0)))
    # (n + 1) * p0 can round across an integer; then the neighbour is the (tied) mode, so step to it.
    while mode < n and log_pmf(mode + 1) > log_pmf(mode):
        mode += 1
    while mode > 0 and log_pmf(mode - 1) > log_pmf(mode):
        mode -= 1
    log_limit = log_pmf(k) + math.log1p(_TIE_TOLERANCE)
    if log_pmf(mode) <= log_limit:
        return 1.0  # k is (tied with) the most likely outcome, so every outcome is as extreme

    # low: the largest j < mode with pmf(j) <= limit (-1 if none); the pmf is non-decreasing up to the mode.
    lo, hi = -1, mode  # invariant: pmf(lo) <= limit (or lo == -1), pmf(hi) > limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if log_pmf(mid) <= log_limit:
            lo = mid
        else:
            hi = mid
    low = lo
    # high: the smallest j > mode with pmf(j) <= limit (n + 1 if none); the pmf is non-increasing after it.
    lo, hi = mode, n + 1  # invariant: pmf(lo) > limit, pmf(hi) <= limit (or hi == n + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if log_pmf(mid) <= log_limit:
            hi = mid
        else:
            lo = mid
    high = hi

    down = (1.0 - p0) / p0  # P(X = i - 1) / P(X = i) is i / (n - i + 1) * down
    up = p0 / (1.0 - p0)  # P(X = i + 1) / P(X = i) is (n - i) / (i + 1) * up
    total = 0.0
    if low >= 0:
        tail, term = 1.0, 1.0  # P(X <= low) in units of P(X = low)
        for i in range(low, 0, -1):
            term *= i / (n - i + 1) * down
            tail += term
            if term < 1e-17 * tail:
                break
        total += math.exp(log_pmf(low) + math.log(tail))
    if high <= n:
        tail, term = 1.0, 1.0  # P(X >= high) in units of P(X = high)
        for i in range(high, n):
            term *= (n - i) / (i + 1) * up
            tail += term
            if term < 1e-17 * tail:
                break
        total += math.exp(log_pmf(high) + math.log(tail))
    return min(1.0, total)


def reliability_bins(preds: pl.DataFrame, bins: int = 10, *, p_column: str = "p_a") -> pl.DataFrame:
    """Equal-width bins of p(A) with the share of true A rows in each, for a reliability diagram.

    Columns: ``bin_low``, ``bin_high``, ``n``, ``mean_p_a``, ``frac_a``; only non-empty bins, in order.
    A calibrated model has ``mean_p_a`` close to ``frac_a`` in every bin. p(A) = 1.0 falls in the last bin.
    """
    if bins < 1:
        raise ValueError("reliability_bins needs bins >= 1")
    return _bin_table(scored_rows(preds, p_column), bins)


def _bin_table(scored: pl.DataFrame, bins: int) -> pl.DataFrame:
    index = (pl.col("p") * bins).floor().cast(pl.Int64).clip(0, bins - 1)
    return (
        scored.group_by(index.alias("bin"))
        .agg(
            n=pl.len().cast(pl.Int64),
            mean_p_a=pl.col("p").mean(),
            frac_a=pl.col("is_a").cast(pl.Float64).mean(),
        )
        .sort("bin")
        .select(
            bin_low=pl.col("bin") / bins,
            bin_high=(pl.col("bin") + 1) / bins,
            n="n",
            mean_p_a="mean_p_a",
            frac_a="frac_a",
        )
    )


#: the keys :func:`summarize` returns, counts first; also the summary columns of metrics.parquet
SUMMARY_INT_KEYS = ("n", "n_scored", "n_unscored", "tp", "fp", "tn", "fn")
SUMMARY_FLOAT_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "accuracy_low",
    "accuracy_high",
    "p_value",
    "mean_confidence",
    "log_loss",
    "brier",
    "ece",
    "auc",
)
SUMMARY_KEYS = SUMMARY_INT_KEYS + SUMMARY_FLOAT_KEYS


def summarize(preds: pl.DataFrame, *, p_column: str = "p_a") -> dict[str, float | int | None]:
    """Every headline number for one run, as plain Python values (never NaN; None when undefined).

    Keys: n, n_scored, n_unscored, tp, fp, tn, fn, accuracy, balanced_accuracy, accuracy_low,
    accuracy_high, p_value, mean_confidence, log_loss, brier, ece, auc. Rates use scored rows only.
    Balanced accuracy and AUC need both classes among scored rows; otherwise they are None, because
    either would silently measure only one file.

    ``p_value`` is the exact two-sided binomial test of the number of correct rows against chance,
    where chance is the accuracy of always answering the majority class among scored rows:
    p0 = max(share of A, share of B). On a balanced split that is exactly 0.5; on an unbalanced one
    (e.g. the "all" split of two files of different length) a classifier that only ever says the
    larger class scores p0 and is not significant. Like balanced accuracy and AUC, it is None when
    only one class was scored, since the majority baseline is then already perfect.
    """
    scored = scored_rows(preds, p_column)
    n = preds.height
    n_scored = scored.height
    summary: dict[str, float | int | None] = {
        **dict.fromkeys(SUMMARY_INT_KEYS, 0),
        **dict.fromkeys(SUMMARY_FLOAT_KEYS),
        "n": n,
        "n_scored": n_scored,
        "n_unscored": n - n_scored,
    }
    if n_scored == 0:
        return summary

    p = pl.col("p")
    is_a = pl.col("is_a")
    pred_a = p >= 0.5
    y = is_a.cast(pl.Float64)
    clipped = p.clip(EPS, 1.0 - EPS)
    row = scored.select(
        tp=(is_a & pred_a).sum(),
        fp=(~is_a & pred_a).sum(),
        tn=(~is_a & ~pred_a).sum(),
        fn=(is_a & ~pred_a).sum(),
        mean_confidence=pl.max_horizontal(p, 1.0 - p).mean(),
        log_loss=-(y * clipped.log() + (1.0 - y) * (-clipped).log1p()).mean(),
        brier=((p - y) ** 2).mean(),
        # Mann-Whitney: average ranks make a tie between an A row and a B row count one half.
        rank_sum_a=p.rank("average").filter(is_a).sum(),
    ).row(0, named=True)

    tp, fp, tn, fn = (int(row[k]) for k in ("tp", "fp", "tn", "fn"))
    correct = tp + tn
    low, high = wilson_interval(correct, n_scored)
    n_a, n_b = tp + fn, tn + fp
    bins = _bin_table(scored, 10)
    summary.update(
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=correct / n_scored,
        accuracy_low=low,
        accuracy_high=high,
        mean_confidence=float(row["mean_confidence"]),
        log_loss=float(row["log_loss"]),
        brier=float(row["brier"]),
        ece=float(((bins["mean_p_a"] - bins["frac_a"]).abs() * bins["n"]).sum() / n_scored),
    )
    if n_a and n_b:
        # Chance is the majority-class baseline; a balanced split keeps the exact p0 = 0.5 path.
        chance = 0.5 if n_a == n_b else max(n_a, n_b) / n_scored
        summary["p_value"] = binomial_test_p_value(correct, n_scored, chance)
        summary["balanced_accuracy"] = (tp / n_a + tn / n_b) / 2.0
        u_statistic = float(row["rank_sum_a"]) - n_a * (n_a + 1) / 2.0
        summary["auc"] = u_statistic / (n_a * n_b)
    return summary
