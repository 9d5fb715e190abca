"""When the describe loop stops paying: patience, and the race a new description runs first.

Two pure rules, no I/O:

- **Patience.** The loop ends when the selection loss (validation log loss) has not improved for
  ``patience`` steps in a row; ``patience = 0`` never ends it early. Only a strictly lower loss is an
  improvement, and a step without a complete validation loss (unscored, or beaten in the race) never is.
- **The race.** A new description is first scored on a fixed part of the validation pairs
  (:func:`race_pairs`: a quarter, at least 20 pairs, spread evenly over the validation sample). It is
  scored on the other validation rows only when it could still beat the best step so far — *unless the
  one-sided 95 % lower confidence bound of the mean per-row log-loss difference (new − best, paired on
  the same rows) lies above zero* (:func:`race_verdict`). The bound is Student's t (the paired t
  bound, scipy's quantile); per-row differences of log losses are not normal, but their mean over the 40
  or more rows of a race is near enough.

An unscored row costs log 2 in a race, the loss of a coin toss, so a description cannot win a race by
leaving hard rows unanswered, nor lose one because the endpoint failed on a row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: as in :mod:`asyncpipe.metrics.scores`, so a race row's loss is the summary's per-row term
EPS = 1e-15
#: what an unscored row costs in a race
UNSCORED_LOSS = math.log(2.0)
RACE_FRACTION = 0.25
RACE_MIN_PAIRS = 20
#: the confidence of the one-sided bound
RACE_CONFIDENCE = 0.95


def row_log_losses(labels: Sequence[str], p_a: Sequence[float | None]) -> list[float]:
    """Each row's log loss (p(A) clipped as :func:`~asyncpipe.metrics.summarize` clips it); an unscored
    row (None or NaN) costs :data:`UNSCORED_LOSS`."""
    out = []
    for label, p in zip(labels, p_a, strict=True):
        if label not in ("A", "B"):
            raise ValueError(f"a row's label must be 'A' or 'B', got {label!r}")
        if p is None or math.isnan(p):
            out.append(UNSCORED_LOSS)
            continue
        q = min(max(p, EPS), 1.0 - EPS)
        out.append(-math.log(q) if label == "A" else -math.log1p(-q))
    return out


def race_pairs(
    validation: Sequence[int], *, fraction: float = RACE_FRACTION, minimum: int = RACE_MIN_PAIRS
) -> tuple[int, ...]:
    """The validation pairs every new description is scored on first: ``fraction`` of them, at least
    ``minimum`` (all of them when there are no more), evenly spaced over the sorted sample so that the
    race rows come from the whole file. The same pairs at every step, so races are paired by row."""
    n = len(validation)
    k = min(n, max(minimum, round(fraction * n)))
    if k >= n:
        return tuple(validation)
    return tuple(validation[(i * n) // k] for i in range(k))


@dataclass(frozen=True)
class RaceVerdict:
    """The outcome of one race: ``go_on`` is whether to score the rest of the validation rows."""

    go_on: bool
    rows: int
    #: mean of new − best per-row log loss over the race rows (negative: the new one is better)
    mean_difference: float
    #: one-sided lower confidence bound of that mean
    lower_bound: float

    def describe(self) -> str:
        verdict = "could still beat the best" if self.go_on else "worse than the best"
        return (
            f"{verdict} on {self.rows} race rows: log loss {self.mean_difference:+.4f} per row against the best "
            f"(95% lower bound {self.lower_bound:+.4f})"
        )


def race_verdict(
    new: Sequence[float], best: Sequence[float], *, confidence: float = RACE_CONFIDENCE
) -> RaceVerdict:
    """Lose the race (``go_on=False``) only when the one-sided lower confidence bound (paired t) of the
    mean per-row log-loss difference, new − best on the same rows, is above zero. With fewer than two
    rows there is no evidence, and the description goes on."""
    if len(new) != len(best):
        raise ValueError(f"a race pairs rows: {len(new)} new losses against {len(best)} best")
    n = len(new)
    if n < 2:
        mean = (new[0] - best[0]) if n else 0.0
        return RaceVerdict(True, n, mean, -math.inf)
    diffs = [a - b for a, b in zip(new, best, strict=True)]
    mean = math.fsum(diffs) / n
    variance = math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)
    from scipy.stats import t as student_t  # only when a race is run: scipy.stats takes a second to import

    bound = mean - float(student_t.ppf(confidence, n - 1)) * math.sqrt(variance / n)
    return RaceVerdict(not bound > 0.0, n, mean, bound)


def steps_since_improvement(losses: Sequence[float | None]) -> int:
    """How many steps in a row, up to the last one, did not lower the best loss so far (strictly).
    A step whose loss is None (not scored on every validation row) never improves."""
    best: float | None = None
    since = 0
    for loss in losses:
        if loss is not None and (best is None or loss < best):
            best, since = loss, 0
        else:
            since += 1
    return since


def patience_ran_out(losses: Sequence[float | None], patience: int) -> bool:
    """Whether the loop should end after these steps: ``patience`` steps in a row without improvement
    (never, when ``patience`` is 0)."""
    if patience < 0:
        raise ValueError(f"patience must be ≥ 0, got {patience}")
    return patience > 0 and bool(losses) and steps_since_improvement(losses) >= patience
