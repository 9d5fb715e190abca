"""The significance helpers and the paired figures against hand computations and published tables."""

from __future__ import annotations

import math
import random

import polars as pl
import pytest

from asyncpipe.metrics import (
    PairCounts,
    benjamini_hochberg,
    binomial_p_greater,
    exact_mcnemar_p,
    holm_adjust,
    pair_counts,
    pair_summary,
    pairs_needed,
    rank_auc_p_greater,
    sign_test_p_greater,
    smallest_sign_test_p,
    summarize,
    wilson_interval,
)

Z = 1.959963984540054  # the two-sided 95 % normal quantile


def rows(pairs: list[tuple[float | None, float | None]]) -> pl.DataFrame:
    """A predictions frame from (p(A) of A row i, p(A) of B row i) pairs."""
    n = len(pairs)
    return pl.DataFrame(
        {
            "label": ["A"] * n + ["B"] * n,
            "row": list(range(n)) * 2,
            "p_a": [a for a, _ in pairs] + [b for _, b in pairs],
        },
        schema={"label": pl.Utf8, "row": pl.Int64, "p_a": pl.Float64},
    )


# -- Wilson ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17:857-872,
    # Table I, method 3 (score interval without continuity correction).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombes_table(k, n, low, high):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(low, abs=5e-5) and got[1] == pytest.approx(high, abs=5e-5)


def test_wilson_interval_with_a_half_count_is_the_score_formula_by_hand():
    # 7.5 of 10 (a tie counted one half): phat = 0.75
    phat, n, z2 = 0.75, 10, Z * Z
    centre = (phat + z2 / (2 * n)) / (1 + z2 / n)
    half = Z / (1 + z2 / n) * math.sqrt(phat * (1 - phat) / n + z2 / (4 * n * n))
    low, high = wilson_interval(7.5, 10)
    assert low == pytest.approx(centre - half, rel=1e-9) and high == pytest.approx(centre + half, rel=1e-9)
    assert (round(low, 4), round(high, 4)) == (0.4422, 0.9191)
    # and the two paths agree where both apply
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-5)


def test_wilson_interval_edges_and_bad_input():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    for bad in ((0, 0), (11, 10), (-1, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


# -- one-sided tests -------------------------------------------------------------------------------
def test_one_sided_binomial_by_hand():
    # P(X >= 10 | n = 10, 1/2) = 1/1024; P(X >= 8 | 10) = (45 + 10 + 1) / 1024
    assert binomial_p_greater(10, 10) == pytest.approx(1 / 1024)
    assert binomial_p_greater(8, 10) == pytest.approx(56 / 1024)
    # half the two-sided 0.056887933640979 of 60/100
    assert binomial_p_greater(60, 100) == pytest.approx(0.056887933640979 / 2, rel=1e-9)


def test_worse_than_chance_never_gets_a_small_p():
    assert binomial_p_greater(30, 100) > 0.99
    assert binomial_p_greater(50, 100) >= 0.5
    assert sign_test_p_greater(2, 8) > 0.9
    auc, p = rank_auc_p_greater([0.1, 0.2, 0.3], [0.7, 0.8])
    assert auc == 0.0 and p > 0.5


def test_sign_test_by_hand_ties_left_out():
    # 7 wins, 2 losses: P(X >= 7 | n = 9) = (36 + 9 + 1) / 512
    assert sign_test_p_greater(7, 2) == pytest.approx(46 / 512)
    assert sign_test_p_greater(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p_greater(0, 0) == 1.0  # only ties: no evidence


def test_smallest_reachable_p_and_pairs_needed():
    assert smallest_sign_test_p(4) == 0.0625 and smallest_sign_test_p(5) == 0.03125
    assert pairs_needed(0.05) == 5
    assert pairs_needed(0.01) == 7  # 0.5**7 = 0.0078


def test_exact_mcnemar_by_hand():
    # 8 vs 2 discordant pairs: twice P(X >= 8 | 10)
    assert exact_mcnemar_p(8, 2) == pytest.approx(2 * 56 / 1024)
    assert exact_mcnemar_p(0, 0) == 1.0


def test_rank_auc_and_exact_mann_whitney_by_hand():
    # positives 0.9, 0.8, 0.4 against negatives 0.7, 0.3: 5 of the 6 cross pairs are ordered right
    auc, p = rank_auc_p_greater([0.9, 0.8, 0.4], [0.7, 0.3])
    assert auc == pytest.approx(5 / 6)
    # Of the C(5, 2) = 10 equally likely orders, U >= 5 in two (U = 6 and U = 5).
    assert p == pytest.approx(2 / 10)


def test_rank_auc_counts_a_tie_one_half():
    auc, _ = rank_auc_p_greater([0.5, 0.9], [0.5, 0.1])
    assert auc == pytest.approx((0.5 + 1 + 1 + 1) / 4)


# -- multiple testing ------------------------------------------------------------------------------
def test_holm_matches_the_worked_example():
    # The worked example of the Wikipedia article "Holm–Bonferroni method" (also in GeeksforGeeks'
    # "Holm-Bonferroni Method"): p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects H1 and H4 only.
    # By hand: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06.
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [a < 0.05 for a in adjusted] == [True, False, False, True]


# Neuhaus et al. (1992), the 15 p-values Benjamini & Hochberg (1995, JRSS B 57:289-300, section 4) use
# to compare procedures: at 0.05, procedures controlling the family-wise error rate reject the three
# smallest; the false discovery rate procedure rejects four.
NEUHAUS = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262,
           0.5719, 0.6528, 0.7590, 1.0000]  # fmt: skip


def test_holm_and_bh_on_the_benjamini_hochberg_example():
    holm = holm_adjust(NEUHAUS)
    assert sum(a < 0.05 for a in holm) == 3
    assert holm[:4] == pytest.approx([0.0015, 0.0056, 0.0247, 0.114])
    assert all(1.0 >= a >= p for a, p in zip(holm, NEUHAUS, strict=True))
    q = benjamini_hochberg(NEUHAUS)
    assert sum(v < 0.05 for v in q) == 4
    assert q[3] == pytest.approx(0.0095 * 15 / 4)


def test_holm_keeps_input_order_and_handles_ties_and_empty():
    assert holm_adjust([]) == []
    assert holm_adjust([0.5, 0.01, 0.5]) == pytest.approx([1.0, 0.03, 1.0])
    assert holm_adjust([0.02, 0.02]) == pytest.approx([0.04, 0.04])


# -- pair accuracy ---------------------------------------------------------------------------------
def test_pair_accuracy_interval_and_sign_test_by_hand():
    # 7 pairs won, 2 lost, 1 tied, and 2 pairs with an unscored row (not pairs for the figure)
    pairs = [(0.9, 0.2)] * 4 + [(0.6, 0.55), (0.99, 0.98), (0.3, 0.1)]  # 7 won
    pairs += [(0.2, 0.4), (0.5, 0.7)]  # 2 lost
    pairs += [(0.4, 0.4)]  # 1 tie
    pairs += [(None, 0.3), (0.8, None)]
    counts = pair_counts(rows(pairs))
    assert counts == PairCounts(wins=7, losses=2, ties=1)
    s = pair_summary(counts)
    assert s["n_pairs"] == 10
    assert s["pair_accuracy"] == pytest.approx(7.5 / 10)
    assert (round(s["pair_ci_low"], 4), round(s["pair_ci_high"], 4)) == (0.4422, 0.9191)
    assert s["pair_p_value"] == pytest.approx(46 / 512)


def test_pair_accuracy_ignores_the_lean_that_ruins_accuracy():
    # Every row leans hard to 'A', but each A row is a little above its B partner.
    pairs = [(0.97 + 0.0001 * i, 0.96 + 0.0001 * i) for i in range(20)]
    s = summarize(rows(pairs))
    assert s["accuracy"] == 0.5  # every row predicted 'A'
    assert s["pair_accuracy"] == 1.0 and s["n_pairs"] == 20
    assert s["pair_p_value"] == pytest.approx(0.5**20)


def test_rows_without_a_partner_are_not_pairs():
    frame = pl.DataFrame(
        {"label": ["A", "A", "A", "B"], "row": [0, 1, 2, 0], "p_a": [0.9, 0.8, 0.7, 0.1]},
        schema={"label": pl.Utf8, "row": pl.Int64, "p_a": pl.Float64},
    )
    assert pair_counts(frame) == PairCounts(1, 0, 0)
    empty = pair_summary(PairCounts(0, 0, 0))
    assert empty["n_pairs"] == 0 and empty["pair_accuracy"] is None and empty["pair_p_value"] is None


# -- the summary's p-value -------------------------------------------------------------------------
def test_below_chance_on_a_balanced_split_gets_p_at_least_half():
    # 30 % accuracy on 50 + 50 rows: the two-sided test used to call this p = 1.5e-8
    labels = ["A"] * 50 + ["B"] * 50
    p = [0.9] * 15 + [0.1] * 35 + [0.9] * 35 + [0.1] * 15
    s = summarize(pl.DataFrame({"label": labels, "p_a": p}))
    assert s["accuracy"] == pytest.approx(0.3)
    assert s["p_value_test"] == "binomial"
    assert s["p_value"] >= 0.5


def test_a_coin_flip_on_an_800_200_split_is_not_significant():
    rng = random.Random(13)
    labels = ["A"] * 800 + ["B"] * 200
    p = [rng.random() for _ in labels]
    s = summarize(pl.DataFrame({"label": labels, "p_a": p}))
    assert s["p_value_test"] == "mann-whitney"
    assert s["p_value"] == s["auc_p_value"]
    assert s["p_value"] > 0.05
    assert 0.4 < s["balanced_accuracy"] < 0.6


def test_a_good_ranking_on_an_unbalanced_split_is_significant():
    rng = random.Random(5)
    labels = ["A"] * 80 + ["B"] * 20
    p = [min(1.0, rng.random() * 0.5 + (0.45 if label == "A" else 0.0)) for label in labels]
    s = summarize(pl.DataFrame({"label": labels, "p_a": p}))
    assert s["auc"] > 0.8 and s["p_value"] < 1e-4
