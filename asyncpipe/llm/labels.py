"""From returned tokens to the probability of the first of two labels.

Two label sets exist: ``A``/``B`` (which dataset a row comes from) and ``yes``/``no`` (whether a row has
a property). A label's mass is the sum of exp(logprob) over every returned token that equals the label
once surrounding whitespace is stripped — and, for yes/no, once case is ignored: tokenisers split "A"
and " A" (o200k_base: 32 and 355), "yes", " Yes" and "YES" into different tokens, and a model may put
its mass on any of them. A/B stays case-sensitive: a lone "a" is more often the English article than
the label. p(first) is the softmax over the two labels, i.e. the ratio of masses. When neither label
comes back the row is unscored, never 0.5. The *label mass* is what both labels hold together, so that
a row where the model mostly answered something else ("**", "I") can be left unscored by the pipeline
instead of being renormalised into a confident-looking probability.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

LABELS = ("A", "B")
#: a returned logprob below this is a sentinel (DeepSeek sends −9999 for masked tokens), not a mass
MASKED_LOGPROB = -100.0
#: the least mass a missing label is given, so that p is never exactly 0 or 1 in floating point
MIN_MISSING_MASS = 1e-12


@dataclass(frozen=True)
class LabelReading:
    """The first label's probability and the label mass of one answer, or (None, None, reason)."""

    p_a: float | None
    label_mass: float | None
    error: str | None = None


@dataclass(frozen=True)
class LabelSet:
    """The two one-token answers a scoring request accepts; the probability reported is the first's."""

    first: str
    second: str
    fold_case: bool = False

    def read(self, token: str) -> int | None:
        """0 for the first label, 1 for the second, None for any other token."""
        text = token.strip()
        if self.fold_case:
            text = text.lower()
        if text == self.first:
            return 0
        if text == self.second:
            return 1
        return None

    def spellings(self, label: str) -> tuple[str, ...]:
        """The single-token spellings worth looking up in a vocabulary (embedded model)."""
        forms = [label]
        if self.fold_case:
            forms += [label.capitalize(), label.upper()]
        forms = list(dict.fromkeys(forms))
        return tuple(forms + [" " + f for f in forms])

    @property
    def key(self) -> str:
        return f"{self.first}/{self.second}" + ("/fold-case" if self.fold_case else "")


#: which dataset: p(A)
AB = LabelSet("A", "B")
#: whether a row has a property: p(yes)
YES_NO = LabelSet("yes", "no", fold_case=True)


def label_set(key: str) -> LabelSet:
    """The label set whose :attr:`LabelSet.key` is ``key`` (as a batch ledger records it)."""
    for labels in (AB, YES_NO):
        if labels.key == key:
            return labels
    raise ValueError(f"unknown label set {key!r}")


def label_masses(top_logprobs: Iterable[tuple[str, float]], labels: LabelSet = AB) -> tuple[float, float]:
    """Sum the probability mass of the tokens that read as each label."""
    masses = [0.0, 0.0]
    for token, logprob in top_logprobs:
        if logprob is None:
            continue
        which = labels.read(token)
        if which is not None:
            masses[which] += math.exp(logprob)
    return masses[0], masses[1]


def read_top_logprobs(top_logprobs: Iterable[tuple[str, float]], labels: LabelSet = AB) -> LabelReading:
    """The first label's probability and the label mass from a top-logprobs list.

    When only one label made the list, the other's mass is not 0: it is at most the smallest mass
    returned (it would have been listed otherwise). That bound is used for the missing label, so p never
    claims more certainty than the answer supports. A sentinel logprob (below :data:`MASKED_LOGPROB`,
    e.g. −9999) says nothing about the token's mass and counts as not returned; a list holding only the
    one label bounds the other by that label's own mass (p = 0.5). The label mass is the observed mass of
    both labels, without the bound.
    """
    pairs = [
        (t, lp) for t, lp in top_logprobs if lp is not None and math.isfinite(lp) and lp >= MASKED_LOGPROB
    ]
    mass_first, mass_second = label_masses(pairs, labels)
    observed = mass_first + mass_second
    if observed <= 0.0:
        seen = ", ".join(repr(t) for t, _ in pairs[:5]) or "none"
        return LabelReading(
            None,
            None,
            f"neither '{labels.first}' nor '{labels.second}' among the {len(pairs)} returned tokens (top: {seen})",
        )
    if mass_first == 0.0 or mass_second == 0.0:
        bound = max(MIN_MISSING_MASS, math.exp(min(lp for _, lp in pairs)))
        mass_first, mass_second = mass_first or bound, mass_second or bound
    return LabelReading(mass_first / (mass_first + mass_second), min(1.0, observed))


def p_first_from_top_logprobs(
    top_logprobs: Iterable[tuple[str, float]], labels: LabelSet = AB
) -> tuple[float | None, str | None]:
    """Return ``(p, None)`` with p the first label's probability, or ``(None, reason)``; see
    :func:`read_top_logprobs`."""
    reading = read_top_logprobs(top_logprobs, labels)
    return reading.p_a, reading.error


def p_a_from_top_logprobs(top_logprobs: Iterable[tuple[str, float]]) -> tuple[float | None, str | None]:
    """p(A) over {'A', 'B'}: :func:`p_first_from_top_logprobs` with the A/B labels."""
    return p_first_from_top_logprobs(top_logprobs, AB)


def p_a_from_logits(logits_a: list[float], logits_b: list[float]) -> float:
    """Exact p(first label) from the logits of every token that reads as each label (log-sum-exp, stable)."""
    top = max(max(logits_a), max(logits_b))
    mass_a = sum(math.exp(x - top) for x in logits_a)
    mass_b = sum(math.exp(x - top) for x in logits_b)
    return mass_a / (mass_a + mass_b)


def label_mass_from_logits(label_logits: list[float], log_normaliser: float) -> float:
    """The probability both labels hold together: sum of exp(logit − logsumexp(all logits))."""
    return min(1.0, sum(math.exp(x - log_normaliser) for x in label_logits))


def p_a_from_samples(answers: Iterable[str]) -> tuple[float | None, int, int]:
    """p(A) from sampled answers: ``(p_a, label answers, other answers)``.

    With k answers 'A' among m answers that are a label, p(A) = (k + ½) / (m + 1) (add-half smoothing,
    the Jeffreys prior's posterior mean): never exactly 0 or 1, and symmetric in A and B. With N samples
    all labels it takes only the N + 1 values (k + ½) / (N + 1), k = 0…N: sampled probabilities are coarse.
    An answer that is neither label ("Sure", "dataset A") is an unscored sample; none at all leaves the row
    unscored (``p_a`` None)."""
    k = m = other = 0
    for answer in answers:
        label = sampled_label(answer)
        if label is None:
            other += 1
        else:
            m += 1
            k += label == "A"
    return ((k + 0.5) / (m + 1) if m else None), m, other


def sampled_label(answer: str | None) -> str | None:
    """'A' or 'B' when a sampled answer is exactly a label (surrounding spaces, quotes, asterisks and a
    final full stop allowed), else None."""
    if not isinstance(answer, str):
        return None
    text = answer.strip().strip("*'\"`").rstrip(".").strip()
    return text if text in LABELS else None


def implausible_logprobs(chosen: tuple[str, float | None] | None, top: list[tuple[str, float]]) -> str | None:
    """Why a logprobs answer cannot be real, or None. Some providers accept the parameter and fill it
    with placeholders (DeepSeek: 0 or −9999): several tokens all at logprob 0 claim a total probability
    above 1; every alternative at −9999 or below carries no information at all."""
    values = [lp for _, lp in top if lp is not None]
    if len(values) >= 2 and all(v == 0 for v in values):
        return f"all {len(values)} returned logprobs are 0"
    chosen_token = chosen[0] if chosen else None
    alternatives = [lp for t, lp in top if lp is not None and t != chosen_token]
    if alternatives and all(v <= -9999 for v in alternatives):
        return f"every alternative token has logprob {max(alternatives):g}"
    return None
