"""Pair rows by index, set aside validation and test pairs, cut the rest into ordered batches. Never
shuffles the order of rows: users sort their files so that row i of A is comparable to row i of B.

Validation pairs are never shown to the describer; each step is scored on them, and they choose the
step and fit the bias offset, so their final accuracy is slightly optimistic. Test pairs are used for
nothing but the final, reported accuracy: the selected classifier sees them once, in the final pass."""

from __future__ import annotations

import random
from dataclasses import dataclass

from asyncpipe.errors import UserError


@dataclass(frozen=True)
class Plan:
    """Which pair indices go where. A pair index i means row i of A together with row i of B."""

    n_pairs: int
    validation: tuple[int, ...]
    test: tuple[int, ...]
    batches: tuple[tuple[int, ...], ...]
    #: (epoch, batch index) for each describe step, in order; 1-based epochs
    steps: tuple[tuple[int, int], ...]

    @property
    def shown(self) -> frozenset[int]:
        """Pairs the describer sees at some step."""
        return frozenset(i for _, b in self.steps for i in self.batches[b])


def make_plan(
    n_pairs: int,
    *,
    batch_size: int,
    epochs: int,
    validation_fraction: float,
    validation_max: int,
    seed: int,
    max_steps: int | None = None,
    test_fraction: float = 0.0,
    test_max: int = 0,
) -> Plan:
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    if not 0.0 <= validation_fraction < 1.0:
        raise UserError("--validation-fraction must be in [0, 1)")
    if not 0.0 <= test_fraction < 1.0:
        raise UserError("--test-fraction must be in [0, 1)")
    n_val = min(validation_max, round(validation_fraction * n_pairs))
    # the describer needs at least one pair to look at
    n_val = max(0, min(n_val, n_pairs - 1))
    # A seeded sample spread over the whole file (not the tail, which may be sorted differently).
    validation = tuple(sorted(random.Random(seed).sample(range(n_pairs), n_val)))
    # Test pairs from what is left, with a stream of their own: validation stays what it was.
    left = [i for i in range(n_pairs) if i not in set(validation)]
    n_test = test_pair_count(n_pairs, n_val, test_fraction, test_max)
    test = tuple(sorted(random.Random(seed + 1).sample(left, n_test)))
    held = set(validation) | set(test)
    train = [i for i in range(n_pairs) if i not in held]
    batches = tuple(tuple(train[i : i + batch_size]) for i in range(0, len(train), batch_size))
    steps = tuple((epoch, b) for epoch in range(1, epochs + 1) for b in range(len(batches)))
    if max_steps is not None:
        if max_steps < 1:
            raise UserError("--max-steps must be at least 1")
        steps = steps[:max_steps]
    return Plan(n_pairs, validation, test, batches, steps)


def test_pair_count(n_pairs: int, n_validation: int, test_fraction: float, test_max: int) -> int:
    """How many test pairs :func:`make_plan` sets aside: the fraction of all pairs, at most
    ``test_max``, and always leaving the describer one pair."""
    return max(0, min(test_max, round(test_fraction * n_pairs), n_pairs - n_validation - 1))


def smallest_test_fraction(n_pairs: int, n_validation: int, test_max: int, needed: int) -> float | None:
    """The smallest ``--test-fraction``, in hundredths, that gives at least ``needed`` test pairs; None
    when none does (too few pairs, or ``test_max`` below ``needed``)."""
    for hundredths in range(1, 100):
        if test_pair_count(n_pairs, n_validation, hundredths / 100, test_max) >= needed:
            return hundredths / 100
    return None
