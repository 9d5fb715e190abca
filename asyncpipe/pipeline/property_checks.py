"""Check yes/no properties on rows: one property per request, each row alone in a fresh context, a
one-token 'yes'/'no' answer read through its logprobs (p(yes), see :mod:`asyncpipe.llm.labels`).

Every request goes through the same client as classification (limiter, retries, cache, identical
requests merged), so a re-run pays nothing; a row whose answer carries no 'yes'/'no' mass is left
unscored with the reason, never counted as 0.5. Properties are checked one after the other, each over
all its rows with the classifier's fan-out.

``property_scores`` frame (written by ``compare`` and ``asyncpipe properties``): ``property`` (the
property's id), ``label`` ("A"/"B" in a comparison, the file's name for ``asyncpipe properties``),
``row`` (index in its file), ``split``, ``p_yes`` (null = unscored) and ``error``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from asyncpipe.config import Templates
from asyncpipe.llm.base import Message
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.labels import YES_NO
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.prompts.properties import Property, property_check_messages

PROPERTY_SCORES_SCHEMA: dict[str, pl.DataType] = {
    "property": pl.Utf8,
    "label": pl.Utf8,
    "row": pl.Int64,
    "split": pl.Utf8,
    "p_yes": pl.Float64,
    "error": pl.Utf8,
}


@dataclass(frozen=True)
class RowRef:
    """One row to check: which file (``label``), its index there, its split and its rendered text."""

    label: str
    row: int
    split: str
    text: str


def check_prompts(templates: Templates, properties: Sequence[Property]) -> list[tuple[str, list[Message]]]:
    """Each property's id and check request (``{row}`` still in it)."""
    return [(p.id, property_check_messages(templates, p.text)) for p in properties]


async def check_properties(
    client: LLMClient,
    checks: Sequence[tuple[str, list[Message]]],
    rows: Sequence[RowRef],
    *,
    min_label_mass: float,
    on_done: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """p(yes) of every property (its id and check request) on every row, as a ``property_scores`` frame.

    A row whose 'yes' and 'no' together hold less than ``min_label_mass`` of the answer is unscored with
    that reason, exactly as for 'A'/'B' (the model mostly meant something else)."""
    texts = [r.text for r in rows]
    frames = []
    for prop_id, messages in checks:
        scores = await classify_rows(
            client,
            messages,
            texts,
            workers=client.limiter.maximum,
            on_done=on_done,
            labels=YES_NO,
            min_label_mass=min_label_mass,
        )
        frames.append(
            pl.DataFrame(
                {
                    "property": [prop_id] * len(rows),
                    "label": [r.label for r in rows],
                    "row": [r.row for r in rows],
                    "split": [r.split for r in rows],
                    "p_yes": scores.values(),
                    "error": [scores.errors.get(i) for i in range(len(rows))],
                },
                schema=PROPERTY_SCORES_SCHEMA,
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=PROPERTY_SCORES_SCHEMA)
