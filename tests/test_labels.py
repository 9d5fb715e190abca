"""From returned top logprobs to p(A)."""

from __future__ import annotations

import math

import pytest

from asyncpipe.llm.labels import (
    label_mass_from_logits,
    p_a_from_logits,
    p_a_from_top_logprobs,
    read_top_logprobs,
)
from asyncpipe.pipeline.fanout import too_little_mass


def test_both_spellings_of_a_label_are_summed():
    pairs = [
        ("A", math.log(0.5)),
        (" A", math.log(0.2)),
        ("B", math.log(0.1)),
        (" B", math.log(0.1)),
        ("x", math.log(0.1)),
    ]
    p, error = p_a_from_top_logprobs(pairs)
    assert error is None and p == pytest.approx(0.7 / 0.9)


def test_neither_label_is_unscored_with_a_reason():
    p, error = p_a_from_top_logprobs([("Sure", -0.1), ("I", -3.0)])
    assert p is None and "neither 'A' nor 'B'" in error and "'Sure'" in error


def test_a_missing_label_gets_the_bound_of_the_smallest_returned_mass():
    pairs = [("A", math.log(0.9)), ("Yes", math.log(0.05)), ("No", math.log(0.01))]
    p, _ = p_a_from_top_logprobs(pairs)
    assert p == pytest.approx(0.9 / 0.91)
    assert p < 1.0


def test_lowercase_and_other_tokens_do_not_count():
    p, _ = p_a_from_top_logprobs([("a", -0.1), ("B", -1.0), ("AB", -2.0), ("A", -3.0)])
    assert p == pytest.approx(math.exp(-3.0) / (math.exp(-3.0) + math.exp(-1.0)))


def test_exact_logits():
    assert p_a_from_logits([0.0], [0.0]) == pytest.approx(0.5)
    assert p_a_from_logits([1000.0, 1000.0], [1000.0]) == pytest.approx(2 / 3)


def test_the_label_mass_is_what_both_labels_hold_together():
    # 90 % on "**", 5 % each on A and B: p(A) = 0.5 but the labels hold only a tenth of the answer
    reading = read_top_logprobs([("**", math.log(0.9)), ("A", math.log(0.05)), ("B", math.log(0.05))])
    assert reading.p_a == pytest.approx(0.5)
    assert reading.label_mass == pytest.approx(0.1)
    assert too_little_mass(reading.label_mass, 0.5).startswith("label mass 0.100 below min_label_mass 0.5")
    assert too_little_mass(0.6, 0.5) is None and too_little_mass(None, 0.5) is None


def test_a_list_holding_only_one_label_never_gives_certainty():
    # Only 'A' came back: B's mass is at most the smallest returned, which is A's own.
    reading = read_top_logprobs([("A", math.log(0.97))])
    assert reading.p_a == pytest.approx(0.5) and reading.label_mass == pytest.approx(0.97)
    reading = read_top_logprobs([("B", -1e-9)])
    assert 0.0 < reading.p_a < 1.0


def test_a_masked_logprob_is_not_a_mass_and_is_bounded():
    # DeepSeek sends -9999 for a masked token: B is then as good as absent, bounded by the smallest real
    reading = read_top_logprobs([("A", math.log(0.98)), ("x", math.log(0.01)), ("B", -9999.0)])
    assert reading.p_a == pytest.approx(0.98 / 0.99)
    assert 0.0 < reading.p_a < 1.0
    # even a label at probability 1 with nothing else returned stays below certainty
    reading = read_top_logprobs([("A", 0.0), ("B", -9999.0)])
    assert reading.p_a == pytest.approx(0.5)
    reading = read_top_logprobs([("A", 0.0), ("x", -99.0)])
    assert 0.0 < reading.p_a < 1.0 and 1.0 - reading.p_a > 0.0


def test_label_mass_from_logits():
    # logits 0 for A, 0 for B, and the normaliser of four equal logits: each holds a quarter
    assert label_mass_from_logits([0.0, 0.0], math.log(4.0)) == pytest.approx(0.5)
