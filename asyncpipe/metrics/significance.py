"""Small, pure significance tests and intervals, each answering one question a reader asks.

Every test here is one-sided where the question is ("does this classifier tell A from B *better* than
chance?"): a classifier that does worse than chance gets p >= 0.5, never a small p. Where scipy has the
test or the interval it does the work (``binomtest``, its Wilson ``proportion_ci``, ``mannwhitneyu``,
``false_discovery_control``); only Holm's step-down adjustment, which scipy lacks, is written out.

Reused by the properties stage (paired prevalence differences), so the names say exactly what each
function computes and nothing here reads a frame: plain counts and sequences in, floats out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

#: the confidence level of every interval we report
CONFIDENCE = 0.95


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Wilson score interval for a proportion ``successes / n``.

    Chosen over the textbook normal interval because it stays inside [0, 1] and keeps its coverage at
    small n and near 0 or 1, where a strong classifier lands. Whole counts go to scipy
    (``binomtest(k, n).proportion_ci(method="wilson")``: the interval of the *two-sided* test; the
    one-sided test's interval would be one-sided). A count with a half in it (pair accuracy counts a tie
    as one half) goes through the same score formula directly, since ``binomtest`` takes whole counts.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    if float(successes).is_integer():
        ci = stats.binomtest(int(successes), n).proportion_ci(confidence_level=confidence, method="wilson")
        low, high = float(ci.low), float(ci.high)
    else:
        z = float(stats.norm.ppf(0.5 + confidence / 2.0))
        phat, z2 = successes / n, z * z
        denom = 1.0 + z2 / n
        centre = (phat + z2 / (2 * n)) / denom
        half = z / denom * math.sqrt(phat * (1.0 - phat) / n + z2 / (4 * n * n))
        low, high = centre - half, centre + half
    # At 0 or n successes the bound is exactly 0 or 1; rounding would otherwise give 0.9999999999999999.
    low = 0.0 if successes == 0 else max(0.0, low)
    high = 1.0 if successes == n else min(1.0, high)
    return low, high


def binomial_p_greater(successes: int, n: int, chance: float = 0.5) -> float:
    """Exact one-sided binomial p-value: P(X >= successes) for X ~ Binomial(n, chance).

    "Is the success rate above ``chance``?" A count at or below n·chance gets p >= 0.5.
    """
    if n <= 0:
        raise ValueError("binomial_p_greater needs n > 0")
    return float(stats.binomtest(int(successes), n, chance, alternative="greater").pvalue)


def sign_test_p_greater(wins: int, losses: int) -> float:
    """Exact one-sided sign test that wins outnumber losses (ties are left out before calling).

    With no untied pair there is no evidence either way: p = 1.0.
    """
    if wins < 0 or losses < 0:
        raise ValueError("wins and losses must be counts")
    if wins + losses == 0:
        return 1.0
    return binomial_p_greater(wins, wins + losses, 0.5)


def smallest_sign_test_p(n_pairs: int) -> float:
    """The smallest p-value the one-sided sign test can give on ``n_pairs`` pairs: every pair won,
    0.5 ** n_pairs. Below five pairs even a perfect classifier cannot reach p < 0.05."""
    return 0.5**n_pairs if n_pairs > 0 else 1.0


def pairs_needed(alpha: float = 0.05) -> int:
    """The fewest pairs on which a perfect classifier reaches p < ``alpha`` in the one-sided sign test."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    n = 1
    while smallest_sign_test_p(n) >= alpha:
        n += 1
    return n


def exact_mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar test on the discordant pairs of a paired yes/no outcome:
    ``binomtest(b, b + c, 0.5)``. 1.0 when no pair is discordant."""
    if only_first < 0 or only_second < 0:
        raise ValueError("discordant counts must be counts")
    n = only_first + only_second
    if n == 0:
        return 1.0
    return float(stats.binomtest(only_first, n, 0.5).pvalue)


def rank_auc_p_greater(
    scores_positive: Sequence[float], scores_negative: Sequence[float]
) -> tuple[float, float]:
    """AUC of a ranking and the one-sided Mann–Whitney p-value that it ranks positives above negatives.

    AUC = U / (n1·n2), where U is the Mann–Whitney statistic of the positives (a tie counts one half).
    This tests the ranking itself, which is the right question on an unbalanced split, where accuracy
    against 0.5 or against the majority rate is not. scipy picks the exact distribution for small
    samples without ties and the normal approximation (tie-corrected, continuity-corrected) otherwise.
    """
    n1, n2 = len(scores_positive), len(scores_negative)
    if n1 == 0 or n2 == 0:
        raise ValueError("rank_auc_p_greater needs rows of both classes")
    result = stats.mannwhitneyu(scores_positive, scores_negative, alternative="greater")
    auc = float(result.statistic) / (n1 * n2)
    p = float(result.pvalue)
    return auc, (1.0 if math.isnan(p) else p)  # every score tied: no evidence


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (controls the family-wise error rate).

    Sort ascending; the i-th smallest (0-based) becomes ``max over j <= i of min(1, (m - j) · p_(j))``.
    Reject a hypothesis at level alpha when its adjusted p is below alpha (Holm 1979, Scand. J. Statist.
    6:65-70). The tests check it against published worked examples (see tests/test_significance.py).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg q-values (false discovery rate), in the input order, from scipy."""
    if not p_values:
        return []
    return [float(q) for q in stats.false_discovery_control(list(p_values), method="bh")]
