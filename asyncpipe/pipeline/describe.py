"""What the describer is shown at each step: the batch, the earlier descriptions with how they did, and
the rows the last classifier got most confidently wrong, fitted into the describer's context window."""

from __future__ import annotations

from collections.abc import Sequence

from asyncpipe.config import RunConfig
from asyncpipe.data.render import CUT_MARKER, cut_text
from asyncpipe.llm.base import Message
from asyncpipe.pipeline.inputs import Loaded
from asyncpipe.pipeline.selection import select
from asyncpipe.prompts.build import HistoryEntry, WrongRow, describe_messages
from asyncpipe.records import Miss, StepRecord

# A conservative characters-per-token figure for fitting text into a context window (dense text and
# other languages run below the usual four).
CHARS_PER_TOKEN_LOW = 3.0


def history(cfg: RunConfig, steps: Sequence[StepRecord], *, has_validation: bool) -> list[HistoryEntry]:
    """The last ``history_size`` steps, and the best one if it is older."""
    if not steps:
        return []
    best, _ = select(steps, has_validation=has_validation)
    keep = list(steps[-cfg.history_size :]) if cfg.history_size > 0 else []
    if best not in keep:
        keep = [best, *keep]
    return [
        HistoryEntry(
            s.step, s.description, s.train, s.validation, best=s is best, partial=s.validation_partial
        )  # type: ignore[arg-type]
        for s in keep
    ]


def describe_prompt(
    cfg: RunConfig,
    loaded: Loaded,
    steps: Sequence[StepRecord],
    pairs: tuple[int, ...],
    *,
    context_tokens: int | None,
    per_row_chars: int | None = None,
) -> list[Message]:
    """The describe request; when the describer's context is known and the prompt would not fit,
    every example is cut to the same share of the room left (cut visibly), rather than the prompt
    losing its middle."""
    examples_a = [loaded.side_a.texts[i] for i in pairs]
    examples_b = [loaded.side_b.texts[i] for i in pairs]
    wrong = [
        WrongRow(w.label, w.p_a, loaded.side(w.label).texts[w.row], w.row)
        for w in (steps[-1].wrong if steps else ())
    ]
    if per_row_chars is not None:
        examples_a = [cut_text(t, per_row_chars)[0] for t in examples_a]
        examples_b = [cut_text(t, per_row_chars)[0] for t in examples_b]
        wrong = [WrongRow(w.label, w.p_a, cut_text(w.text, per_row_chars)[0]) for w in wrong]
    messages = describe_messages(
        cfg.templates,
        examples_a=examples_a,
        examples_b=examples_b,
        extra_prompt=cfg.extra_prompt,
        history=history(cfg, steps, has_validation=bool(loaded.plan.validation)),
        wrong=wrong,
    )
    if per_row_chars is not None or not context_tokens:
        return messages
    room = int((context_tokens - cfg.describe_max_tokens) * CHARS_PER_TOKEN_LOW)
    total = sum(len(m["content"]) for m in messages)
    if total <= room:
        return messages
    rows = examples_a + examples_b + [w.text for w in wrong]
    fixed = total - sum(len(t) for t in rows)
    marker = len(CUT_MARKER) + 8  # the cut marker itself takes room
    share = max(80, (room - fixed) // max(1, len(rows)) - marker)
    return describe_prompt(cfg, loaded, steps, pairs, context_tokens=context_tokens, per_row_chars=share)


def wrong_rows(rows: list[tuple[str, int]], p: list[float | None], *, limit: int) -> list[Miss]:
    """The most confidently wrong training rows, alternating A and B (never validation rows)."""
    wrong: dict[str, list[Miss]] = {"A": [], "B": []}
    for (label, i), value in zip(rows, p, strict=True):
        if value is None or (value >= 0.5) == (label == "A"):
            continue
        wrong[label].append(Miss(label, i, value))
    for label in wrong:
        wrong[label].sort(key=lambda w: abs(w.p_a - 0.5), reverse=True)
    merged = [w for pair in zip(wrong["A"], wrong["B"], strict=False) for w in pair]
    longer = wrong["A"] if len(wrong["A"]) > len(wrong["B"]) else wrong["B"]
    merged += longer[len(merged) // 2 :]
    return merged[:limit]
