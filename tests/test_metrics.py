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
    binomial_test_p_value,
    correct_probability,
    fit_bias_offset,
    reliability_bins,
    summarize,
    wilson_interval,
)

SUMMARY_KEYS = {
    "n",
    "n_scored",
    "n_unscored",
    "tp",
    "fp",
    "tn",
    "fn",
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
}


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
    s = summarize(frame(["A", "B", "A", "B"], [0.8, 0.3, 0.4, None]))
    for key in ("n", "n_scored", "n_unscored", "tp", "fp", "tn", "fn"):
        assert type(s[key]) is int, key
    for key in SUMMARY_KEYS - {"n", "n_scored", "n_unscored", "tp", "fp", "tn", "fn"}:
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


def test_binomial_p_value_matches_reference_values():
    assert binomial_test_p_value(60, 100) == pytest.approx(0.056887933640979, rel=1e-9)
    assert binomial_test_p_value(40, 100) == pytest.approx(0.056887933640979, rel=1e-9)
    assert binomial_test_p_value(50, 100) == 1.0
    assert binomial_test_p_value(0, 1) == 1.0
    assert binomial_test_p_value(10, 10) == pytest.approx(2 / 1024)


def test_binomial_p_value_equals_exact_rational_sum():
    for n in (1, 2, 7, 30):
        for k in range(n + 1):
            lower = sum(Fraction(math.comb(n, i), 2**n) for i in range(k + 1))
            upper = sum(Fraction(math.comb(n, i), 2**n) for i in range(k, n + 1))
            expected = min(Fraction(1), 2 * min(lower, upper))
            assert binomial_test_p_value(k, n) == pytest.approx(float(expected), rel=1e-12), (k, n)


def test_binomial_p_value_for_millions_of_trials():
    assert binomial_test_p_value(1_000_000, 2_000_000) == 1.0
    # Normal approximation: z = 1000 / sqrt(2e6 / 4) = 1.4142, two-sided p = 0.1573.
    assert binomial_test_p_value(1_001_000, 2_000_000) == pytest.approx(0.1573, abs=1e-3)
    assert binomial_test_p_value(1_100_000, 2_000_000) == 0.0  # below the smallest float


def pre_fix_p_value(successes: int, n: int) -> float:
    """The p = 0.5 test exactly as it was before chance became the majority-class rate (a frozen copy)."""
    m = min(successes, n - successes)
    log_first = math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1) - n * math.log(2.0)
    total = 1.0
    term = 1.0
    for i in range(m, 0, -1):
        term *= i / (n - i + 1)
        total += term
        if term < 1e-17 * total:
            break
    return min(1.0, 2.0 * math.exp(log_first + math.log(total)))


def exact_p_value(k: int, n: int, p0: float) -> Fraction:
    """Brute force in exact rationals: the mass of every outcome at most (1 + 1e-7) times as likely as k."""
    p = Fraction(p0)  # the exact binary value of the float the function receives
    pmf = [math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)]
    limit = pmf[k] * (1 + Fraction(1, 10**7))
    return min(Fraction(1), sum(x for x in pmf if x <= limit))


def test_majority_class_predictor_is_not_significant_on_unbalanced_split():
    # Always "A" on 30 A / 12 B rows: 71% accuracy, but that is just the majority share.
    s = summarize(frame(["A"] * 30 + ["B"] * 12, [0.9] * 42))
    assert s["accuracy"] == pytest.approx(30 / 42)
    assert s["balanced_accuracy"] == 0.5
    assert s["auc"] == 0.5
    assert s["p_value"] > 0.05
    assert s["p_value"] == 1.0  # 30 correct is the most likely outcome under p0 = 30/42
    # Always "B" on the same rows is 29% accurate, far below the baseline: significant, two-sided.
    worse = summarize(frame(["A"] * 30 + ["B"] * 12, [0.1] * 42))
    assert worse["p_value"] == pytest.approx(float(exact_p_value(12, 42, 30 / 42)), rel=1e-10)
    assert worse["p_value"] < 1e-6


def test_chance_uses_the_class_shares_of_scored_rows_only():
    # 20 unscored B rows would make the split look balanced (30 A / 32 B) if they counted.
    scored = frame(["A"] * 30 + ["B"] * 12, [0.9] * 42)
    with_unscored = pl.concat([scored, frame(["B"] * 20, [None] * 20)])
    assert summarize(with_unscored)["p_value"] == summarize(scored)["p_value"] == 1.0


def test_unbalanced_split_p_value_is_the_exact_test_against_majority_share():
    # 30 A / 12 B; 28 A and 10 B right, so 38 of 42 against p0 = 30/42.
    labels = ["A"] * 30 + ["B"] * 12
    p_a = [0.8] * 28 + [0.3] * 2 + [0.2] * 10 + [0.6] * 2
    s = summarize(frame(labels, p_a))
    assert s["accuracy"] == pytest.approx(38 / 42)
    expected = float(exact_p_value(38, 42, 30 / 42))
    assert s["p_value"] == pytest.approx(expected, rel=1e-10)
    assert s["p_value"] == binomial_test_p_value(38, 42, 30 / 42)
    assert 1e-4 < s["p_value"] < 0.05
    # B as the majority gives the same number: p0 is the larger share, whichever class holds it.
    flipped = summarize(frame(["B" if x == "A" else "A" for x in labels], [1.0 - p for p in p_a]))
    assert flipped["p_value"] == s["p_value"]


def test_balanced_inputs_give_exactly_the_pre_fix_p_value():
    rng = random.Random(7)
    for half in (1, 2, 5, 50, 500):
        labels = ["A"] * half + ["B"] * half
        for _ in range(5):
            p_a = [rng.random() for _ in labels]
            s = summarize(frame(labels, p_a))
            assert s["p_value"] == pre_fix_p_value(s["tp"] + s["tn"], 2 * half)
    for n in (1, 2, 7, 30, 1001, 2_000_000):
        for k in {0, 1, n // 3, n // 2, n - 1, n}:
            assert binomial_test_p_value(k, n, 0.5) == binomial_test_p_value(k, n) == pre_fix_p_value(k, n)


def test_general_p0_matches_brute_force_exact_sum():
    for n in (1, 2, 3, 4, 5, 9, 10, 17, 30, 40):
        for p0 in (0.5, 0.6, 0.71, 0.9, 0.3):
            for k in range(n + 1):
                expected = float(exact_p_value(k, n, p0))
                assert binomial_test_p_value(k, n, p0) == pytest.approx(expected, rel=1e-10), (k, n, p0)


def test_general_p0_path_agrees_with_the_p_half_path():
    # The general code, fed p0 = 0.5, reproduces the symmetric shortcut.
    from asyncpipe.metrics.scores import _binomial_test_general

    for n in (1, 2, 7, 30, 101, 10_000):
        for k in sorted({0, 1, n // 3, n // 2, (n + 1) // 2, n - 1, n}):
            assert _binomial_test_general(k, n, 0.5) == pytest.approx(pre_fix_p_value(k, n), rel=1e-9), (k, n)


def test_general_p0_is_mirror_symmetric_and_never_nan():
    rng = random.Random(11)
    for _ in range(300):
        n = rng.choice((1, 3, 20, 137, 5000, 123_457))
        k = rng.randint(0, n)
        # p0 >= 0.5 so that 1 - p0 is exact in floating point and the mirror is the same distribution.
        p0 = rng.choice((0.5 + rng.random() / 2, 0.5, 0.999, 1.0 - 2.0**-40))
        value = binomial_test_p_value(k, n, p0)
        assert 0.0 <= value <= 1.0, (k, n, p0)
        mirrored = binomial_test_p_value(n - k, n, 1.0 - p0)
        assert 0.0 <= mirrored <= 1.0, (k, n, p0)
        assert mirrored == pytest.approx(value, rel=1e-6, abs=1e-300), (k, n, p0)


def test_general_p0_edges_and_bad_input():
    assert binomial_test_p_value(10, 10, 1.0) == 1.0
    assert binomial_test_p_value(9, 10, 1.0) == 0.0
    assert binomial_test_p_value(0, 10, 0.0) == 1.0
    assert binomial_test_p_value(1, 10, 0.0) == 0.0
    assert binomial_test_p_value(0, 5, 0.9) == pytest.approx(float(exact_p_value(0, 5, 0.9)), rel=1e-12)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p0"):
            binomial_test_p_value(1, 2, bad)


def test_general_p0_for_millions_of_trials():
    """Exact where it matters at n = 2,000,000 (how long it takes is measured by ``make bench``)."""
    n, p0 = 2_000_000, 0.7
    sd = math.sqrt(n * p0 * (1 - p0))  # 648.07
    at_mean = binomial_test_p_value(1_400_000, n, p0)
    above = binomial_test_p_value(1_401_000, n, p0)
    below = binomial_test_p_value(1_399_000, n, p0)
    far = binomial_test_p_value(1_500_000, n, p0)
    near = binomial_test_p_value(1_400_001, n, p0)
    assert at_mean == 1.0
    # Normal approximation: z = 1000 / 648.07 = 1.543, two-sided p = 0.1228.
    normal = math.erfc(1000 / sd / math.sqrt(2))
    assert above == pytest.approx(normal, abs=2e-3)
    assert below == pytest.approx(normal, abs=2e-3)
    assert far == 0.0  # below the smallest float
    assert 0.99 < near <= 1.0


def test_summarize_a_million_unbalanced_rows():
    """Every row counted and the p-value against the majority rate (the time: ``make bench``)."""
    rng = random.Random(3)
    labels = ["A"] * 700_000 + ["B"] * 300_000
    p_a = [rng.random() * 0.6 + (0.4 if label == "A" else 0.0) for label in labels]
    s = summarize(frame(labels, p_a))
    assert s["n_scored"] == 1_000_000
    assert s["tp"] + s["fn"] == 700_000 and s["tn"] + s["fp"] == 300_000
    assert s["p_value"] == binomial_test_p_value(s["tp"] + s["tn"], 1_000_000, 0.7)


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
    for key in SUMMARY_KEYS - {"n", "n_unscored"}:
        assert s[key] == pytest.approx(base[key]), key


def test_all_unscored_gives_none_rates_not_nan():
    s = summarize(frame(["A", "B", "B"], [None, None, None]))
    assert set(s) == SUMMARY_KEYS
    assert (s["n"], s["n_scored"], s["n_unscored"]) == (3, 0, 3)
    assert (s["tp"], s["fp"], s["tn"], s["fn"]) == (0, 0, 0, 0)
    for key in SUMMARY_KEYS - {"n", "n_scored", "n_unscored", "tp", "fp", "tn", "fn"}:
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
    assert summarize(preds)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_is_positive_when_miscalibrated():
    # Always 0.9 sure of A, right half the time: the gap is 0.4 in the only bin.
    preds = frame(["A", "B"] * 10, [0.9] * 20)
    assert summarize(preds)["ece"] == pytest.approx(0.4)
    # Weighted by bin size: 4 rows off by 0.4 plus 8 calibrated rows.
    mixed = pl.concat([frame(["A", "B"] * 2, [0.9] * 4), frame(["A", "B"] * 4, [0.5] * 8)])
    assert summarize(mixed)["ece"] == pytest.approx(0.4 * 4 / 12)


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
