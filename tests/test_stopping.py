"""Patience and the race, as pure functions: hand-computed cases and the edges."""

from __future__ import annotations

import math
import random

import pytest

from asyncpipe.metrics.stopping import (
    UNSCORED_LOSS,
    patience_ran_out,
    race_pairs,
    race_verdict,
    row_log_losses,
    steps_since_improvement,
)


def test_row_log_losses_by_hand_and_unscored_rows_cost_a_coin_toss():
    losses = row_log_losses(["A", "B", "A", "B", "A"], [0.9, 0.2, None, float("nan"), 0.0])
    assert losses[0] == pytest.approx(-math.log(0.9))
    assert losses[1] == pytest.approx(-math.log(0.8))
    assert losses[2] == losses[3] == UNSCORED_LOSS == pytest.approx(math.log(2))
    assert losses[4] == pytest.approx(-math.log(1e-15))  # clipped as summarize clips, never inf
    with pytest.raises(ValueError):
        row_log_losses(["C"], [0.5])


def test_row_log_losses_average_to_the_summary_log_loss():
    import polars as pl

    from asyncpipe.metrics import summarize

    rng = random.Random(3)
    labels = [rng.choice("AB") for _ in range(200)]
    p = [rng.random() for _ in labels]
    frame = pl.DataFrame({"label": labels, "p_a": p})
    assert sum(row_log_losses(labels, p)) / len(p) == pytest.approx(summarize(frame)["log_loss"])


@pytest.mark.parametrize(
    "n,expected",
    [(0, 0), (5, 5), (20, 20), (40, 20), (79, 20), (81, 20), (100, 25), (400, 100)],
)
def test_race_pairs_are_a_quarter_at_least_twenty(n, expected):
    validation = tuple(sorted(random.Random(n).sample(range(10 * n + 1), n)))
    chosen = race_pairs(validation)
    assert len(chosen) == expected
    assert set(chosen) <= set(validation) and list(chosen) == sorted(set(chosen))
    if n > 20:  # spread over the sample, not its head
        assert chosen[0] == validation[0] and chosen[-1] >= validation[n // 2]
    assert race_pairs(validation) == chosen  # fixed: the same pairs at every step


def test_a_clearly_worse_description_loses_and_a_similar_one_goes_on():
    rng = random.Random(1)
    best = [rng.uniform(0.1, 0.6) for _ in range(40)]
    worse = [b + 0.3 + rng.uniform(-0.1, 0.1) for b in best]
    assert not race_verdict(worse, best).go_on
    similar = [b + rng.uniform(-0.2, 0.2) for b in best]
    verdict = race_verdict(similar, best)
    assert verdict.go_on and verdict.lower_bound < 0
    better = [b - 0.2 for b in best]
    assert race_verdict(better, best).go_on


def test_the_bound_by_hand():
    # differences 0.1, 0.3, 0.2, 0.4: mean 0.25, sample sd sqrt(0.05/3), n = 4
    best = [1.0, 1.0, 1.0, 1.0]
    new = [1.1, 1.3, 1.2, 1.4]
    verdict = race_verdict(new, best)
    sd = math.sqrt(((0.15**2) + (0.05**2) * 2 + 0.15**2) / 3)
    assert verdict.mean_difference == pytest.approx(0.25)
    # Student's t, 3 degrees of freedom, one-sided 95%: 2.353363 (any printed t table)
    assert verdict.lower_bound == pytest.approx(0.25 - 2.353363 * sd / 2, abs=1e-6)
    assert verdict.lower_bound > 0 and not verdict.go_on
    assert "worse than the best on 4 race rows" in verdict.describe()


def test_race_edges():
    assert race_verdict([], []).go_on
    assert race_verdict([5.0], [0.1]).go_on  # one row is no evidence
    assert race_verdict([0.5] * 30, [0.5] * 30).go_on  # a tie goes on: it could still win
    assert not race_verdict([0.6] * 30, [0.5] * 30).go_on  # the same margin on every row
    with pytest.raises(ValueError):
        race_verdict([0.1, 0.2], [0.1])


def test_a_race_between_equals_is_rarely_lost():
    """Two equally good descriptions: the race cuts the new one about 5% of the time, as the
    one-sided 95% bound promises (checked over many simulated races of 40 rows)."""
    rng = random.Random(7)
    lost = 0
    trials = 2000
    for _ in range(trials):
        best = [rng.expovariate(2.0) for _ in range(40)]
        new = [rng.expovariate(2.0) for _ in range(40)]
        lost += not race_verdict(new, best).go_on
    assert 0.02 < lost / trials < 0.09


def test_steps_since_improvement():
    assert steps_since_improvement([]) == 0
    assert steps_since_improvement([0.6]) == 0
    assert steps_since_improvement([0.6, 0.5, 0.4]) == 0
    assert steps_since_improvement([0.6, 0.5, 0.55, 0.5, None]) == 3  # a tie is no improvement
    assert steps_since_improvement([None, None]) == 2
    assert steps_since_improvement([None, 0.7, 0.8]) == 1


def test_patience_runs_out_after_n_steps_without_improvement():
    losses = [0.6, 0.4, 0.5, 0.45, 0.41, 0.4, 0.9]
    assert [patience_ran_out(losses[: i + 1], 5) for i in range(len(losses))] == [
        False, False, False, False, False, False, True,
    ]  # fmt: skip
    assert patience_ran_out([0.6, 0.7], 1)
    assert not any(patience_ran_out(losses[: i + 1], 0) for i in range(len(losses)))  # 0: never
    assert not patience_ran_out([], 3)
    with pytest.raises(ValueError):
        patience_ran_out([0.1], -1)
