"""Metrics against hand-computed values, brute-force counts and published reference numbers."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from itertools import product

import polars as pl
import pytest

from asyncpipe.metrics import (
    apply_bias_offset,
    binomial_p_greater,
    fit_bias_offset,
    reliability_bins,
    summarize,
    wilson_interval,
)
from asyncpipe.metrics.scores import EPS

INT_KEYS = {
    "n",
    "n_scored",
    "n_unscored",
    "tp",
    "fp",
    "tn",
    "fn",
    "n_pairs",
    "pair_wins",
    "pair_losses",
    "pair_ties",
}
SUMMARY_KEYS = INT_KEYS | {
    "accuracy",
    "balanced_accuracy",
    "accuracy_low",
    "accuracy_high",
    "p_value",
    "p_value_test",
    "auc_p_value",
    "coverage",
    "mean_confidence",
    "log_loss",
    "selection_log_loss",
    "brier",
    "ece_p_a",
    "auc",
    "pair_accuracy",
    "pair_ci_low",
    "pair_ci_high",
    "pair_p_value",
}


def correct_probability(p: float, offset: float) -> float:
    """The correction worked out for one probability with the math module: the reference the polars
    expression is checked against."""
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"probability must lie in [0, 1], got {p}")
    clipped = min(max(p, EPS), 1.0 - EPS)
    x = math.log(clipped) - math.log1p(-clipped) - offset
    # Two branches so exp never overflows for a large offset.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def frame(labels: list[str], p_a: list[float | None]) -> pl.DataFrame:
    return pl.DataFrame({"label": labels, "p_a": p_a}, schema={"label": pl.Utf8, "p_a": pl.Float64})


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_small_confusion_matrix_and_rates_by_hand():
    # A rows: 0.9 (tp), 0.6 (tp), 0.5 (tp: 0.5 counts as A), 0.2 (fn); B rows: 0.7 (fp), 0.1 (tn), 0.4 (tn)
    preds = frame(["A", "A", "A", "A", "B", "B", "B"], [0.9, 0.6, 0.5, 0.2, 0.7, 0.1, 0.4])
    s = summarize(preds)
    assert set(s) == SUMMARY_KEYS
    assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (3, 1, 2, 1)
    assert (s["n"], s["n_scored"], s["n_unscored"]) == (7, 7, 0)
    assert s["accuracy"] == pytest.approx(5 / 7)
    assert s["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert s["mean_confidence"] == pytest.approx((0.9 + 0.6 + 0.5 + 0.8 + 0.7 + 0.9 + 0.6) / 7)
    assert s["brier"] == pytest.approx((0.01 + 0.16 + 0.25 + 0.64 + 0.49 + 0.01 + 0.16) / 7)
    # Probability given to the true label: 0.9, 0.6, 0.5, 0.2 for A rows; 0.3, 0.9, 0.6 for B rows.
    expected_log_loss = -sum(math.log(q) for q in (0.9, 0.6, 0.5, 0.2, 0.3, 0.9, 0.6)) / 7
    assert s["log_loss"] == pytest.approx(expected_log_loss)
    # AUC by hand: of the 12 (A, B) pairs, A is higher in 3 + 2 + 2 + 1 = 8 (0.9, 0.6, 0.5, 0.2 in turn).
    assert s["auc"] == pytest.approx(8 / 12)


def test_summary_values_are_plain_python_types():
    s = summarize(
        frame(["A", "B", "A", "B"], [0.8, 0.3, 0.4, None]).with_columns(row=pl.Series([0, 0, 1, 1]))
    )
    for key in INT_KEYS:
        assert type(s[key]) is int, key
    assert s["p_value_test"] == "mann-whitney"
    for key in SUMMARY_KEYS - INT_KEYS - {"p_value_test"}:
        assert type(s[key]) is float, key
        assert math.isfinite(s[key]), key


def test_chance_classifier_interval_contains_half_and_is_not_significant():
    # 200 balanced rows, exactly 100 correct: 50 of each class on each side of 0.5.
    labels = ["A"] * 100 + ["B"] * 100
    p_a = [0.7] * 50 + [0.3] * 50 + [0.7] * 50 + [0.3] * 50
    s = summarize(frame(labels, p_a))
    assert s["accuracy"] == 0.5
    assert s["accuracy_low"] < 0.5 < s["accuracy_high"]
    assert s["p_value"] > 0.05
    assert s["auc"] == pytest.approx(0.5)


def test_perfect_classifier_is_significant_with_auc_one():
    labels = ["A"] * 100 + ["B"] * 100
    p_a = [0.9] * 100 + [0.1] * 100
    s = summarize(frame(labels, p_a))
    assert s["accuracy"] == 1.0
    assert s["balanced_accuracy"] == 1.0
    assert s["auc"] == 1.0
    assert s["p_value"] < 1e-6
    assert s["accuracy_high"] == 1.0
    assert s["accuracy_low"] > 0.95


def test_wilson_interval_matches_reference_values():
    low, high = wilson_interval(81, 100)
    assert low == pytest.approx(0.7222, abs=1e-4)
    assert high == pytest.approx(0.8749, abs=1e-4)
    # Edge counts stay inside [0, 1] and are not degenerate (the normal interval would give (0, 0)).
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4)
    assert high == 1.0
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_one_sided_binomial_equals_exact_rational_tail():
    for n in (1, 2, 7, 30):
        for k in range(n + 1):
            upper = sum(Fraction(math.comb(n, i), 2**n) for i in range(k, n + 1))
            assert binomial_p_greater(k, n) == pytest.approx(float(upper), rel=1e-12), (k, n)


def test_majority_class_predictor_is_not_significant_on_unbalanced_split():
    # Always "A" on 30 A / 12 B rows: 71% accuracy, but that is just the majority share. The ranking is
    # what is tested on an unbalanced split, and a constant ranks nothing.
    s = summarize(frame(["A"] * 30 + ["B"] * 12, [0.9] * 42))
    assert s["accuracy"] == pytest.approx(30 / 42)
    assert s["balanced_accuracy"] == 0.5
    assert s["auc"] == 0.5
    assert s["p_value_test"] == "mann-whitney"
    assert s["p_value"] >= 0.5
    # Always "B" is 29% accurate, but one-sided: worse than chance is never significant.
    worse = summarize(frame(["A"] * 30 + ["B"] * 12, [0.1] * 42))
    assert worse["p_value"] >= 0.5


def test_unscored_rows_do_not_decide_which_test_is_used():
    # 20 unscored B rows would make the split look balanced (30 A / 32 B) if they counted.
    scored = frame(["A"] * 30 + ["B"] * 12, [0.9] * 42)
    with_unscored = pl.concat([scored, frame(["B"] * 20, [None] * 20)])
    assert summarize(with_unscored)["p_value"] == summarize(scored)["p_value"]
    assert summarize(with_unscored)["p_value_test"] == "mann-whitney"


def test_unbalanced_split_p_value_is_the_one_sided_mann_whitney_test():
    # 30 A / 12 B; A rows ranked 0.8 (28) and 0.3 (2), B rows 0.2 (10) and 0.6 (2).
    labels = ["A"] * 30 + ["B"] * 12
    p_a = [0.8] * 28 + [0.3] * 2 + [0.2] * 10 + [0.6] * 2
    s = summarize(frame(labels, p_a))
    assert s["accuracy"] == pytest.approx(38 / 42)
    # AUC by hand: 0.8 beats all 12 B rows (28 x 12), 0.3 beats the ten 0.2 rows (2 x 10)
    assert s["auc"] == pytest.approx((28 * 12 + 2 * 10) / (30 * 12))
    from scipy.stats import mannwhitneyu

    expected = mannwhitneyu([0.8] * 28 + [0.3] * 2, [0.2] * 10 + [0.6] * 2, alternative="greater").pvalue
    assert s["p_value"] == pytest.approx(expected) and s["p_value"] < 1e-4
    # B as the larger file and the scores mirrored: the same ranking, the same p.
    flipped = summarize(frame(["B" if x == "A" else "A" for x in labels], [1.0 - p for p in p_a]))
    assert flipped["p_value"] == pytest.approx(s["p_value"])


def test_balanced_split_p_value_is_the_one_sided_binomial_test():
    from scipy.stats import binomtest

    rng = random.Random(7)
    for half in (1, 2, 5, 50, 500):
        labels = ["A"] * half + ["B"] * half
        for _ in range(5):
            p_a = [rng.random() for _ in labels]
            s = summarize(frame(labels, p_a))
            correct = s["tp"] + s["tn"]
            expected = binomtest(correct, 2 * half, 0.5, alternative="greater").pvalue
            assert s["p_value_test"] == "binomial"
            assert s["p_value"] == pytest.approx(expected, rel=1e-12)
            if correct <= half:
                assert s["p_value"] >= 0.5


def test_summarize_a_million_unbalanced_rows():
    """Every row counted, and the ranking tested (the time: ``make bench``)."""
    rng = random.Random(3)
    labels = ["A"] * 700_000 + ["B"] * 300_000
    p_a = [rng.random() * 0.6 + (0.4 if label == "A" else 0.0) for label in labels]
    s = summarize(frame(labels, p_a))
    assert s["n_scored"] == 1_000_000
    assert s["tp"] + s["fn"] == 700_000 and s["tn"] + s["fp"] == 300_000
    assert s["p_value_test"] == "mann-whitney"
    assert s["p_value"] == s["auc_p_value"] == 0.0  # far below the smallest float


def test_auc_with_ties_equals_brute_force_pair_count():
    a_scores = [0.1, 0.4, 0.4, 0.5, 0.8, 0.8, 0.9]
    b_scores = [0.0, 0.4, 0.5, 0.5, 0.8, 0.3]
    preds = frame(["A"] * len(a_scores) + ["B"] * len(b_scores), a_scores + b_scores)
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in product(a_scores, b_scores))
    assert summarize(preds)["auc"] == pytest.approx(wins / (len(a_scores) * len(b_scores)), abs=1e-12)


def test_auc_and_balanced_accuracy_need_both_classes():
    s = summarize(frame(["A", "A", "B"], [0.9, 0.2, None]))
    assert s["auc"] is None
    assert s["balanced_accuracy"] is None
    assert s["accuracy"] == 0.5
    # Chance is the majority baseline, which is perfect on one class: nothing to test against.
    assert s["p_value"] is None


def test_unscored_rows_are_counted_but_excluded_from_rates():
    scored_only = frame(["A", "A", "B", "B"], [0.9, 0.3, 0.2, 0.6])
    with_unscored = pl.concat([scored_only, frame(["A", "B", "A"], [None, None, float("nan")])])
    base = summarize(scored_only)
    s = summarize(with_unscored)
    assert (s["n"], s["n_scored"], s["n_unscored"]) == (7, 4, 3)
    for key in SUMMARY_KEYS - {"n", "n_unscored", "coverage", "selection_log_loss"}:
        assert s[key] == pytest.approx(base[key]), key
    assert (base["coverage"], s["coverage"]) == (1.0, pytest.approx(4 / 7))
    # ...but not rewarded when a step is chosen: each unscored row costs a coin flip, ln 2
    assert base["selection_log_loss"] == pytest.approx(base["log_loss"])
    assert s["selection_log_loss"] == pytest.approx((4 * base["log_loss"] + 3 * math.log(2)) / 7)


def test_abstaining_never_lowers_the_selection_loss():
    # A confident right answer costs less than ln 2, an unsure one more; leaving either unscored costs
    # exactly ln 2, so the loss a step is chosen by can only reward answering well.
    answered = summarize(frame(["A", "B"], [0.9, 0.45]))
    abstained = summarize(frame(["A", "B"], [0.9, None]))
    assert abstained["log_loss"] < answered["log_loss"]  # the old criterion rewarded abstaining
    assert abstained["selection_log_loss"] == pytest.approx((-math.log(0.9) + math.log(2)) / 2)


def test_all_unscored_gives_none_rates_not_nan():
    s = summarize(frame(["A", "B", "B"], [None, None, None]))
    assert set(s) == SUMMARY_KEYS
    assert (s["n"], s["n_scored"], s["n_unscored"]) == (3, 0, 3)
    assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (0, 0, 0, 0)
    assert s["coverage"] == 0.0 and s["selection_log_loss"] == pytest.approx(math.log(2))
    for key in SUMMARY_KEYS - INT_KEYS - {"coverage", "selection_log_loss"}:
        assert s[key] is None, key
    empty = summarize(frame([], []))
    assert empty["n"] == 0
    assert empty["accuracy"] is None


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="label"):
        summarize(frame(["A", "C"], [0.5, 0.5]))
    with pytest.raises(ValueError, match="outside"):
        summarize(frame(["A", "B"], [0.5, 1.5]))
    with pytest.raises(ValueError, match="lacks"):
        summarize(pl.DataFrame({"label": ["A"]}))


def test_other_probability_column():
    preds = frame(["A", "B"], [0.9, 0.1]).rename({"p_a": "p_corrected"})
    assert summarize(preds, p_column="p_corrected")["accuracy"] == 1.0


def test_bias_offset_recovers_a_constant_lean():
    # True logits are +2 for A rows and -2 for B rows; the model adds a +1 lean towards A.
    labels = ["A"] * 50 + ["B"] * 50
    p_a = [sigmoid(2.0 + 1.0)] * 50 + [sigmoid(-2.0 + 1.0)] * 50
    preds = frame(labels, p_a)
    offset = fit_bias_offset(preds)
    assert offset == pytest.approx(1.0, abs=1e-6)
    corrected = apply_bias_offset(preds["p_a"], offset)
    assert corrected.mean() == pytest.approx(0.5, abs=1e-12)
    assert corrected[0] == pytest.approx(sigmoid(2.0), abs=1e-6)
    assert corrected[99] == pytest.approx(sigmoid(-2.0), abs=1e-6)


def test_bias_offset_matches_class_share_when_unbalanced():
    labels = ["A"] * 30 + ["B"] * 70 + ["A"]
    p_a = [0.3 + 0.6 * i / 29 for i in range(30)] + [0.05 + 0.8 * i / 69 for i in range(70)] + [None]
    preds = frame(labels, p_a)
    offset = fit_bias_offset(preds)
    corrected = preds.select(apply_bias_offset(pl.col("p_a"), offset))["p_a"]
    assert corrected.mean() == pytest.approx(0.3, abs=1e-9)
    assert corrected.null_count() == 1
    # It is the log-loss minimum: nudging the offset either way costs more.
    corrected_preds = preds.with_columns(p_a=apply_bias_offset(pl.col("p_a"), offset))
    best = summarize(corrected_preds)["log_loss"]
    for nudge in (-1e-3, 1e-3):
        nudged = preds.with_columns(p_a=apply_bias_offset(pl.col("p_a"), offset + nudge))
        assert summarize(nudged)["log_loss"] > best


def test_bias_offset_is_zero_without_both_classes():
    assert fit_bias_offset(frame(["A", "A"], [0.9, 0.7])) == 0.0
    assert fit_bias_offset(frame(["A", "B"], [None, None])) == 0.0


def test_bias_offset_stays_within_bounds_when_saturated():
    # Every row says A with certainty but half are B: the lean is beyond any finite offset.
    offset = fit_bias_offset(frame(["A", "B"], [1.0, 1.0]))
    assert -20.0 <= offset <= 20.0
    assert offset > 10.0


def test_apply_bias_offset_keeps_nulls_and_agrees_with_float_version():
    p = pl.Series("p", [0.2, None, 0.5, 0.99, 0.0, 1.0])
    corrected = apply_bias_offset(p, 0.7)
    assert isinstance(corrected, pl.Series)
    assert corrected.name == "p"
    assert corrected.null_count() == 1
    for before, after in zip(p.to_list(), corrected.to_list(), strict=True):
        if before is not None:
            assert after == pytest.approx(correct_probability(before, 0.7), abs=1e-15)
    assert correct_probability(0.5, 0.7) == pytest.approx(sigmoid(-0.7))
    assert correct_probability(0.3, 0.0) == pytest.approx(0.3)
    assert 0.0 <= correct_probability(1.0, 1000.0) <= 1.0
    assert isinstance(apply_bias_offset(pl.col("p"), 0.7), pl.Expr)


def test_ece_is_zero_when_bins_are_calibrated():
    # Bin [0.2, 0.3): p = 0.25 with 1 of 4 rows A; bin [0.7, 0.8): p = 0.75 with 3 of 4 rows A.
    preds = frame(["A", "B", "B", "B", "A", "A", "A", "B"], [0.25] * 4 + [0.75] * 4)
    assert summarize(preds)["ece_p_a"] == pytest.approx(0.0, abs=1e-12)


def test_ece_is_positive_when_miscalibrated():
    # Always 0.9 sure of A, right half the time: the gap is 0.4 in the only bin.
    preds = frame(["A", "B"] * 10, [0.9] * 20)
    assert summarize(preds)["ece_p_a"] == pytest.approx(0.4)
    # Weighted by bin size: 4 rows off by 0.4 plus 8 calibrated rows.
    mixed = pl.concat([frame(["A", "B"] * 2, [0.9] * 4), frame(["A", "B"] * 4, [0.5] * 8)])
    assert summarize(mixed)["ece_p_a"] == pytest.approx(0.4 * 4 / 12)


def test_reliability_bins_lists_non_empty_bins_in_order():
    preds = frame(["A", "B", "A", "B", "A", "B"], [0.05, 0.15, 0.95, 1.0, None, 0.12])
    table = reliability_bins(preds)
    assert table.columns == ["bin_low", "bin_high", "n", "mean_p_a", "frac_a"]
    assert table["bin_low"].to_list() == pytest.approx([0.0, 0.1, 0.9])
    assert table["bin_high"].to_list() == pytest.approx([0.1, 0.2, 1.0])
    assert table["n"].to_list() == [1, 2, 2]
    assert table["mean_p_a"].to_list() == pytest.approx([0.05, 0.135, 0.975])
    assert table["frac_a"].to_list() == pytest.approx([1.0, 0.0, 0.5])
    halves = reliability_bins(preds, bins=2)
    assert halves["n"].to_list() == [3, 2]
    assert halves["bin_high"].to_list() == [0.5, 1.0]
