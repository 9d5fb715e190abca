"""From returned top logprobs to p(A)."""

from __future__ import annotations

import math

import pytest

from asyncpipe.llm.labels import p_a_from_logits, p_a_from_top_logprobs


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
