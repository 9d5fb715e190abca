"""How well the classifier tells A from B: one summary dict of counts, rates and calibration scores.

Input frames carry ``label`` (Utf8, "A" or "B": the file the row truly came from; A is the positive
class) and a probability column, ``p_a`` by default (Float64, the model's p(A); null means the row was
not scored), and, for the paired figures, ``row`` (the pair index). A row is predicted "A" when
``p_a >= 0.5``. NaN is read as null, because a NaN p(A) is a row the model did not score, not a guess.
Unscored rows are counted, reported as coverage, and left out of every rate, so a model that fails to
answer is never credited with a 0.5 guess; the selection loss counts them as a coin flip instead.

Every p-value answers "better than chance?", one-sided (:mod:`asyncpipe.metrics.significance`).
"""

from __future__ import annotations

import math

import polars as pl

from asyncpipe.metrics.paired import PAIR_FLOAT_KEYS, PAIR_INT_KEYS, pair_counts, pair_summary
from asyncpipe.metrics.significance import binomial_p_greater, rank_auc_p_greater, wilson_interval

# Probabilities are clipped here before any log, so a confident wrong answer costs ~34.5 nats, not inf.
EPS = 1e-15


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
SUMMARY_INT_KEYS = ("n", "n_scored", "n_unscored", "tp", "fp", "tn", "fn", *PAIR_INT_KEYS)
SUMMARY_FLOAT_KEYS = (
    *PAIR_FLOAT_KEYS,
    "coverage",
    "accuracy",
    "balanced_accuracy",
    "accuracy_low",
    "accuracy_high",
    "p_value",
    "auc",
    "auc_p_value",
    "mean_confidence",
    "log_loss",
    "selection_log_loss",
    "brier",
    "ece_p_a",
)
#: text keys: which test gave ``p_value`` ("binomial" on a balanced split, "mann-whitney" otherwise)
SUMMARY_TEXT_KEYS = ("p_value_test",)
SUMMARY_KEYS = SUMMARY_INT_KEYS + SUMMARY_FLOAT_KEYS + SUMMARY_TEXT_KEYS
#: ln 2: the log loss of a coin flip, charged for an unscored row when choosing a step
COIN_FLIP_LOSS = math.log(2.0)


def summarize(preds: pl.DataFrame, *, p_column: str = "p_a") -> dict[str, float | int | str | None]:
    """Every headline number for one set of rows, as plain Python values (never NaN; None if undefined).

    - ``coverage`` = n_scored / n: shown beside every accuracy, since rates use scored rows only.
    - ``p_value`` is one-sided: is the classifier better than chance? On a balanced split (as many
      scored A rows as B rows) it is the exact binomial test of the correct count against 0.5
      (``p_value_test`` = "binomial"). On an unbalanced split accuracy is the wrong statistic (always
      answering the larger file scores its share), so the ranking is tested instead: AUC by a
      one-sided Mann–Whitney U test (``p_value_test`` = "mann-whitney"); read it with
      ``balanced_accuracy``. A classifier worse than chance gets p >= 0.5.
    - ``auc`` and ``auc_p_value``: the ranking and its one-sided Mann–Whitney p on any split.
    - ``pair_accuracy`` … ``n_pairs``: see :mod:`asyncpipe.metrics.paired` (needs a ``row`` column;
      None otherwise).
    - ``log_loss`` is over scored rows; ``selection_log_loss`` charges each unscored row ln 2 (a coin
      flip) and averages over all rows, so abstaining never lowers the loss a step is chosen by.
    - ``ece_p_a``: the expected calibration error *of p(A)* (10 equal-width bins of p(A), |mean p(A) −
      share of A| weighted by bin size), not the usual top-label ECE.

    Balanced accuracy, AUC and ``p_value`` need both classes among scored rows, else they are None.
    """
    scored = scored_rows(preds, p_column)
    n = preds.height
    n_scored = scored.height
    summary: dict[str, float | int | str | None] = {
        **dict.fromkeys(SUMMARY_INT_KEYS, 0),
        **dict.fromkeys(SUMMARY_FLOAT_KEYS),
        **dict.fromkeys(SUMMARY_TEXT_KEYS),
        "n": n,
        "n_scored": n_scored,
        "n_unscored": n - n_scored,
        "coverage": n_scored / n if n else None,
    }
    if "row" in preds.columns:
        summary.update(pair_summary(pair_counts(preds, p_column=p_column)))
    if n_scored == 0:
        if n:
            summary["selection_log_loss"] = COIN_FLIP_LOSS
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
        log_loss_sum=-(y * clipped.log() + (1.0 - y) * (-clipped).log1p()).sum(),
        brier=((p - y) ** 2).mean(),
    ).row(0, named=True)

    tp, fp, tn, fn = (int(row[k]) for k in ("tp", "fp", "tn", "fn"))
    correct = tp + tn
    low, high = wilson_interval(correct, n_scored)
    n_a, n_b = tp + fn, tn + fp
    bins = _bin_table(scored, 10)
    log_loss_sum = float(row["log_loss_sum"])
    summary.update(
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=correct / n_scored,
        accuracy_low=low,
        accuracy_high=high,
        mean_confidence=float(row["mean_confidence"]),
        log_loss=log_loss_sum / n_scored,
        selection_log_loss=(log_loss_sum + (n - n_scored) * COIN_FLIP_LOSS) / n,
        brier=float(row["brier"]),
        ece_p_a=float(((bins["mean_p_a"] - bins["frac_a"]).abs() * bins["n"]).sum() / n_scored),
    )
    if n_a and n_b:
        summary["balanced_accuracy"] = (tp / n_a + tn / n_b) / 2.0
        auc, auc_p = rank_auc_p_greater(
            scored.filter(is_a)["p"].to_numpy(), scored.filter(~is_a)["p"].to_numpy()
        )
        summary["auc"], summary["auc_p_value"] = auc, auc_p
        if n_a == n_b:
            summary["p_value"] = binomial_p_greater(correct, n_scored, 0.5)
            summary["p_value_test"] = "binomial"
        else:
            summary["p_value"] = auc_p
            summary["p_value_test"] = "mann-whitney"
    return summary


def unscored_reasons(predictions: pl.DataFrame, most: int = 3) -> tuple[tuple[str, int], ...]:
    """Why rows are unscored (``p_a`` null, ``error`` saying why), the most frequent reasons first, with
    their row counts."""
    errors = predictions.filter(pl.col("p_a").is_null() & pl.col("error").is_not_null())
    if errors.is_empty():
        return ()
    counts = errors.group_by("error").len().sort(["len", "error"], descending=[True, False]).head(most)
    return tuple((reason, n) for reason, n in counts.iter_rows())
