"""Scoring a new description at a describe step, with ``--race``: the batch and the race rows first
(a quarter of the validation pairs, :func:`~asyncpipe.metrics.stopping.race_pairs`), the other
validation rows only if the description could still beat the best step so far. A loser keeps its
figures on the race rows (``validation_partial``) and cannot be selected; nothing more is bought for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from asyncpipe.config import RunConfig
from asyncpipe.metrics.stopping import race_verdict, row_log_losses
from asyncpipe.pipeline import artifacts
from asyncpipe.pipeline.fanout import Scores
from asyncpipe.pipeline.selection import select, selection_loss
from asyncpipe.records import Race, StepRecord, Summary

#: classify(rows, phase): the new description's scores for these (label, row index) pairs
Classify = Callable[[list[tuple[str, int]], str], Awaitable[Scores]]


@dataclass(frozen=True)
class StepScores:
    """p(A) for the batch's rows and the validation rows (None where not scored), their summaries, the
    race (None: none was run) and, for a loser, what its step's log line says about the race."""

    train_p: list[float | None]
    val_p: list[float | None]
    train: Summary
    validation: Summary | None
    race: Race | None = None
    note: str = ""


def race_opponent(
    cfg: RunConfig, steps: Sequence[StepRecord], validation: Sequence[int], race_pairs: Sequence[int]
) -> StepRecord | None:
    """The step a new description races against: the best so far, if its validation p(A) per row
    is known; None when there is no race (racing off, no earlier step, or the race rows are all
    the validation rows, so a race would save nothing)."""
    if not cfg.race or not steps or len(race_pairs) >= len(validation):
        return None
    best, _ = select(steps, has_validation=bool(validation))
    if selection_loss(best, has_validation=bool(validation)) is None or best.validation_p_a is None:
        return None
    return best


async def score_step(
    classify: Classify,
    train_rows: list[tuple[str, int]],
    val_rows: list[tuple[str, int]],
    opponent: StepRecord | None,
    race_pairs: Sequence[int],
    phase: str,
) -> StepScores:
    """Score the description on the batch and the validation rows, racing ``opponent`` if there is one."""
    if opponent is None:
        p = (await classify(train_rows + val_rows, phase)).values()
        train_p, val_p = p[: len(train_rows)], p[len(train_rows) :]
        validation = _summary(val_rows, val_p) if val_rows else None
        return StepScores(train_p, val_p, _summary(train_rows, train_p), validation)
    chosen = set(race_pairs)
    first = [k for k, (_, i) in enumerate(val_rows) if i in chosen]
    rest = [k for k, (_, i) in enumerate(val_rows) if i not in chosen]
    p = (
        await classify(
            train_rows + [val_rows[k] for k in first], f"{phase} (race: {len(first)} held-out rows)"
        )
    ).values()
    train_p = p[: len(train_rows)]
    val_p: list[float | None] = [None] * len(val_rows)
    for k, value in zip(first, p[len(train_rows) :], strict=True):
        val_p[k] = value
    labels = [val_rows[k][0] for k in first]
    assert opponent.validation_p_a is not None
    verdict = race_verdict(
        row_log_losses(labels, [val_p[k] for k in first]),
        row_log_losses(labels, [opponent.validation_p_a[k] for k in first]),
    )
    race = Race(opponent.step, verdict.rows, verdict.mean_difference, verdict.lower_bound, verdict.go_on)
    train = _summary(train_rows, train_p)
    if not verdict.go_on:
        note = (
            f"{race.rows} held-out rows; {verdict.describe()} (step {race.against}), so its other "
            f"{len(val_rows) - race.rows} held-out rows are not bought"
        )
        partial = artifacts.summary_of(labels, [val_rows[k][1] for k in first], [val_p[k] for k in first])
        return StepScores(train_p, val_p, train, partial, race, note)
    more = (await classify([val_rows[k] for k in rest], f"{phase} the other held-out rows")).values()
    for k, value in zip(rest, more, strict=True):
        val_p[k] = value
    return StepScores(train_p, val_p, train, _summary(val_rows, val_p), race)


def _summary(rows: list[tuple[str, int]], p: list[float | None]) -> Summary:
    return artifacts.summary_of([label for label, _ in rows], [i for _, i in rows], p)
