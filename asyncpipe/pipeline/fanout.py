"""Classify many rows concurrently with bounded memory.

A fixed set of workers pulls row indices from one shared iterator: there is no task, coroutine or
message list per row up front, so memory does not grow with the number of rows. How many requests are
really in flight is decided by the client's adaptive limiter; the worker count is only its ceiling.
Results land in preallocated arrays by row index, so the order in which answers return does not matter.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from asyncpipe.errors import AsyncpipeError, FatalAPIError
from asyncpipe.llm.base import Message
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.labels import AB, LabelSet
from asyncpipe.prompts.build import ROW_PLACEHOLDER, fence_safe

# When this many rows in a row have all failed after their retries, the endpoint is not going to
# answer: stop with one clear message instead of spending on every remaining row.
FAILURE_STREAK = 25


@dataclass
class Scores:
    """p(A) per row (NaN = unscored), the label mass per row (NaN = unknown) and the reason for each
    unscored row."""

    p_a: array
    errors: dict[int, str] = field(default_factory=dict)
    label_mass: array | None = None

    def value(self, i: int) -> float | None:
        v = self.p_a[i]
        return None if math.isnan(v) else v

    def values(self) -> list[float | None]:
        return [None if math.isnan(v) else v for v in self.p_a]

    def masses(self) -> list[float | None]:
        if self.label_mass is None:
            return [None] * len(self.p_a)
        return [None if math.isnan(v) else v for v in self.label_mass]


def _combine(p: float | None, p_swapped: float | None) -> float | None:
    """Average a row's p(A) with 1 - p(A) from the prompt whose roles were swapped. When either prompt
    left the row unscored, so is the row: the one answer left still carries the lean the swap cancels."""
    if p is None or p_swapped is None:
        return None
    return (p + (1.0 - p_swapped)) / 2.0


def _weaker(mass: float | None, other: float | None) -> float | None:
    """The smaller of two label masses (None when either is unknown)."""
    return None if mass is None or other is None else min(mass, other)


def too_little_mass(mass: float | None, threshold: float, labels: LabelSet = AB) -> str | None:
    """The reason a row is unscored for its label mass, or None when it holds enough (or is unknown)."""
    if mass is None or mass >= threshold:
        return None
    return (
        f"label mass {mass:.3f} below min_label_mass {threshold:g}: the model put most of its answer "
        f"on tokens other than '{labels.first}' and '{labels.second}'"
    )


async def classify_rows(
    client: LLMClient,
    messages: list[Message],
    texts: Sequence[str],
    *,
    workers: int,
    swapped_messages: list[Message] | None = None,
    on_done: Callable[[int], None] | None = None,
    labels: LabelSet = AB,
    min_label_mass: float = 0.0,
) -> Scores:
    """p(first label) per row (p(A), or p(yes) with ``labels=YES_NO``), each row alone in ``messages``;
    a row whose labels hold less than ``min_label_mass`` of the answer is unscored with that reason
    (its label mass is still recorded)."""
    n = len(texts)
    scores = Scores(array("d", [math.nan]) * n, label_mass=array("d", [math.nan]) * n)
    indices = iter(range(n))
    streak = 0
    # the same requests and cache keys as score_labels(with_row(messages, text)), the shared part encoded once
    scorer = client.row_scorer(messages, ROW_PLACEHOLDER, labels)
    swapped = client.row_scorer(swapped_messages, ROW_PLACEHOLDER) if swapped_messages is not None else None

    async def score(i: int) -> None:
        nonlocal streak
        row = fence_safe(texts[i])
        result = await scorer.score(row)
        p, error, mass = result.p_a, result.error, result.label_mass
        if p is not None and (reason := too_little_mass(mass, min_label_mass, labels)):
            p, error = None, reason
        if swapped is not None:
            other = await swapped.score(row)
            other_p, other_error = other.p_a, other.error
            if other_p is not None and (reason := too_little_mass(other.label_mass, min_label_mass)):
                other_p, other_error = None, reason
            mass = _weaker(mass, other.label_mass)
            combined = _combine(p, other_p)
            if combined is None:
                error = "; ".join(
                    f"{which} prompt: {why}"
                    for which, why, value in (("first", error, p), ("swapped", other_error, other_p))
                    if value is None
                )
            p = combined
        if mass is not None:
            scores.label_mass[i] = mass
        if p is None:
            scores.errors[i] = error or "unscored"
            client.stats.unscored += 1
            streak = streak + 1 if error and "gave up after" in error else 0
            if streak >= FAILURE_STREAK:
                raise FatalAPIError(f"{streak} rows in a row failed after all retries; last error: {error}")
        else:
            scores.p_a[i] = p
            streak = 0
        if on_done is not None:
            on_done(1)

    async def worker() -> None:
        for i in indices:  # one shared iterator: each index is taken by exactly one worker
            await score(i)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(max(1, min(workers, n))):
                group.start_soon(worker)
    except BaseExceptionGroup as group:
        # one worker's fatal error cancels the rest; the caller wants that error, not the group
        raise _first_error(group) from None
    return scores


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error a caller can act on: the first of ours, else the only one, else the group."""
    leaves = list(_leaves(group))
    ours = [exc for exc in leaves if isinstance(exc, AsyncpipeError)]
    if ours:
        return ours[0]
    return leaves[0] if len(leaves) == 1 else group


def _leaves(group: BaseExceptionGroup):
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
