"""From returned tokens to p(A).

A label's mass is the sum of exp(logprob) over every returned token that equals the label once
whitespace is stripped: tokenisers split "A" and " A" into different tokens (o200k_base: 32 and 355),
and a model may put its mass on either. p(A) is the softmax over the two labels, i.e. the ratio of
masses. When neither label comes back the row is unscored, never 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

LABELS = ("A", "B")


def label_masses(top_logprobs: Iterable[tuple[str, float]]) -> tuple[float, float]:
    """Sum the probability mass of tokens that read as 'A' and as 'B' (whitespace stripped)."""
    mass_a = 0.0
    mass_b = 0.0
    for token, logprob in top_logprobs:
        if logprob is None:
            continue
        label = token.strip()
        if label == "A":
            mass_a += math.exp(logprob)
        elif label == "B":
            mass_b += math.exp(logprob)
    return mass_a, mass_b


def p_a_from_top_logprobs(top_logprobs: Iterable[tuple[str, float]]) -> tuple[float | None, str | None]:
    """Return ``(p_a, None)`` or ``(None, reason)`` when neither label is among the tokens.

    When only one label made the top-k list, the other's mass is not 0: it is at most the smallest mass
    returned (it would have been listed otherwise). That bound is used for the missing label, so p(A)
    never claims more certainty than the answer supports (1.0 exactly would be a lie).
    """
    pairs = [(t, lp) for t, lp in top_logprobs if lp is not None]
    mass_a, mass_b = label_masses(pairs)
    if mass_a + mass_b <= 0.0:
        seen = ", ".join(repr(t) for t, _ in pairs[:5]) or "none"
        return None, f"neither 'A' nor 'B' among the {len(pairs)} returned tokens (top: {seen})"
    if (mass_a == 0.0 or mass_b == 0.0) and len(pairs) > 1:
        bound = math.exp(min(lp for _, lp in pairs))
        mass_a, mass_b = mass_a or bound, mass_b or bound
    return mass_a / (mass_a + mass_b), None


def p_a_from_logits(logits_a: list[float], logits_b: list[float]) -> float:
    """Exact p(A) from the logits of every token that reads as each label (log-sum-exp, stable)."""
    top = max(max(logits_a), max(logits_b))
    mass_a = sum(math.exp(x - top) for x in logits_a)
    mass_b = sum(math.exp(x - top) for x in logits_b)
    return mass_a / (mass_a + mass_b)
