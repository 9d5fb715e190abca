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
    """p(A) per row (NaN = unscored) and the reason for each unscored row."""

    p_a: array
    errors: dict[int, str] = field(default_factory=dict)

    def value(self, i: int) -> float | None:
        v = self.p_a[i]
        return None if math.isnan(v) else v

    def values(self) -> list[float | None]:
        return [None if math.isnan(v) else v for v in self.p_a]


def _combine(p: float | None, p_swapped: float | None) -> float | None:
    """Average a row's p(A) with 1 - p(A) from the prompt whose roles were swapped."""
    if p is None or p_swapped is None:
        return p if p_swapped is None else 1.0 - p_swapped
    return (p + (1.0 - p_swapped)) / 2.0


async def classify_rows(
    client: LLMClient,
    messages: list[Message],
    texts: Sequence[str],
    *,
    workers: int,
    swapped_messages: list[Message] | None = None,
    on_done: Callable[[int], None] | None = None,
    labels: LabelSet = AB,
) -> Scores:
    """p(first label) per row (p(A), or p(yes) with ``labels=YES_NO``), each row alone in ``messages``."""
    n = len(texts)
    scores = Scores(array("d", [math.nan]) * n)
    indices = iter(range(n))
    streak = 0
    # the same requests and cache keys as score_labels(with_row(messages, text)), the shared part encoded once
    scorer = client.row_scorer(messages, ROW_PLACEHOLDER, labels)
    swapped = client.row_scorer(swapped_messages, ROW_PLACEHOLDER) if swapped_messages is not None else None

    async def score(i: int) -> None:
        nonlocal streak
        row = fence_safe(texts[i])
        result = await scorer.score(row)
        p, error = result.p_a, result.error
        if swapped is not None:
            other = await swapped.score(row)
            p = _combine(p, other.p_a)
            error = None if p is not None else f"{error}; swapped prompt: {other.error}"
        if p is None:
            scores.errors[i] = error or "unscored"
            client.stats.unscored += 1
            streak = streak + 1 if error and error.startswith("gave up") else 0
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
