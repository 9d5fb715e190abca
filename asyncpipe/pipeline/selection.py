"""Which describe step wins: pure functions over the steps recorded so far.

The step with the lowest validation selection loss wins (ties go to the later step); without validation
rows, the lowest on the step's own batch. The selection loss is the log loss with an unscored row counted
as a coin flip (ln 2), so a description that makes the model abstain on hard rows gains nothing. A step
that lost its race (``--race``) was not scored on every validation row, so it is no candidate, and
patience does not count it as an improvement.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncpipe.records import StepRecord


def selection_loss(step: StepRecord, *, has_validation: bool) -> float | None:
    """What steps are chosen by (and patience counts); None for a step that cannot be chosen."""
    if has_validation and step.validation_partial:
        return None
    summary = step.validation if has_validation else step.train
    if summary is None:
        return None
    # an older steps.jsonl has no selection loss
    return summary.log_loss if summary.selection_log_loss is None else summary.selection_log_loss


def select(steps: Sequence[StepRecord], *, has_validation: bool) -> tuple[StepRecord, str]:
    """The best step so far and why (``steps`` must not be empty)."""
    best, best_loss = None, None
    for step in steps:
        loss = selection_loss(step, has_validation=has_validation)
        if loss is None:
            continue
        if best_loss is None or loss <= best_loss:
            best, best_loss = step, loss
    if best is None:
        return steps[-1], "no step had scored rows; the last step is kept"
    where = (
        "held-out validation rows" if has_validation else "its own batch (no validation rows were set aside)"
    )
    return best, (
        f"lowest log loss on {where}, an unscored row counted as a coin flip (ln 2): {best_loss:.4f} "
        "(ties go to the later step)"
    )
