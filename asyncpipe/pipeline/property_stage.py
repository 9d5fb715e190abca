"""The last stage of ``compare``: what exactly differs, property by property, tested on held-out pairs.

After the loop has chosen its step, one describe request (a fresh context) shows the chosen
description and the training rows it was written from, and asks for up to K atomic yes/no properties,
each with the dataset the describer believes it is more common in. Each property is then checked on
every row of the validation and test splits — rows the describer never saw — (``--properties-on all``:
every row of both files), and compared pair by pair (:func:`asyncpipe.metrics.prevalence.property_table`).
A reply with no usable line leaves the stage empty with a note; it never fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from asyncpipe.config import RunConfig
from asyncpipe.llm.base import Sampling
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.labels import YES_NO
from asyncpipe.metrics.prevalence import SIGNIFICANT_Q, property_table
from asyncpipe.pipeline.progress import Reporter
from asyncpipe.pipeline.property_checks import PROPERTY_SCORES_SCHEMA, RowRef, check_prompts, check_properties
from asyncpipe.prompts.properties import (
    Property,
    parse_properties,
    properties_messages,
    property_check_messages,
)


@dataclass(frozen=True)
class PropertyResult:
    """What the stage found. ``status``: "off" (--properties 0), "empty" (no usable property, or no
    held-out rows to check them on; ``note`` says which) or "done"."""

    status: str
    note: str | None = None
    properties: tuple[Property, ...] = ()
    table: pl.DataFrame | None = None  # properties.parquet, ranked
    scores: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=PROPERTY_SCORES_SCHEMA))
    reply: str | None = None

    def significant(self) -> list[dict]:
        """The ranked properties with q < 0.05, as plain rows."""
        if self.table is None:
            return []
        hits = self.table.filter(pl.col("q_value") < SIGNIFICANT_Q)
        return hits.to_dicts()

    def run_record(self) -> dict:
        """What run.json says about the stage."""
        return {
            "status": self.status,
            "note": self.note,
            "count": len(self.properties),
            "significant": [row["property"] for row in self.significant()],
        }

    def classifier_entry(self, cfg: RunConfig) -> dict | None:
        """What classify.yaml keeps, so ``asyncpipe classify`` checks the same properties on new files."""
        if not self.properties:
            return None
        return {
            "labels": YES_NO.key,
            "placeholder": "{row}",
            "items": [
                {**p.to_dict(), "messages": property_check_messages(cfg.templates, p.text)}
                for p in self.properties
            ],
        }


def rows_to_check(
    cfg: RunConfig,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    held_out: Sequence[int],
    split_of: Callable[[int], str],
) -> list[RowRef]:
    """Both rows of every held-out pair, or with ``properties_on: all`` every row of both files."""
    if cfg.properties_on == "all":
        picks = [("A", i) for i in range(len(texts_a))] + [("B", i) for i in range(len(texts_b))]
    else:
        ordered = sorted(held_out)
        picks = [("A", i) for i in ordered] + [("B", i) for i in ordered]
    return [RowRef(label, i, split_of(i), (texts_a if label == "A" else texts_b)[i]) for label, i in picks]


async def list_properties(
    cfg: RunConfig,
    describer: LLMClient,
    description: str,
    shown_a: Sequence[str],
    shown_b: Sequence[str],
    reporter: Reporter,
) -> tuple[list[Property], str]:
    """Ask the describer (one request, fresh context) for up to ``cfg.properties`` yes/no properties;
    the properties it listed and its reply. The request is cached: asking again costs nothing."""
    reporter.log(f"properties: asking the describer for up to {cfg.properties} yes/no properties")
    messages = properties_messages(
        cfg.templates,
        description=description,
        examples_a=list(shown_a),
        examples_b=list(shown_b),
        k=cfg.properties,
    )
    reply = await describer.generate(
        messages, Sampling(cfg.describe_max_tokens, cfg.describe_temperature, cfg.seed)
    )
    return parse_properties(reply.text, cfg.properties), reply.text


async def run_property_stage(
    cfg: RunConfig,
    *,
    describer: LLMClient,
    checker: LLMClient,
    description: str,
    shown_a: Sequence[str],
    shown_b: Sequence[str],
    rows: Sequence[RowRef],
    reporter: Reporter,
    listed: tuple[list[Property], str] | None = None,
) -> PropertyResult:
    """List the properties (one describe request; ``listed``: already listed, with the reply), check
    them on ``rows``, test them pair by pair."""
    if cfg.properties <= 0:
        return PropertyResult("off")
    if listed is None:
        listed = await list_properties(cfg, describer, description, shown_a, shown_b, reporter)
    found, text = listed
    if not found:
        note = "the describer's reply listed no usable property (one yes/no question per line, starting with '- ')"
        reporter.log(f"properties: {note}; the stage is empty")
        return PropertyResult("empty", note, reply=text)
    if not rows:
        note = "no held-out rows to check the properties on (use --properties-on all, or hold out rows)"
        reporter.log(f"properties: {note}")
        return PropertyResult("empty", note, tuple(found), reply=text)
    reporter.log(f"properties: checking {len(found)} properties on {len(rows)} rows, one request each")
    reporter.phase("checking properties", len(found) * len(rows))
    try:
        scores = await check_properties(
            checker,
            check_prompts(cfg.templates, found),
            rows,
            min_label_mass=cfg.min_label_mass,
            on_done=reporter.advance,
        )
    finally:
        reporter.end_phase()
    table = property_table(scores, [(p.id, p.text, p.claimed) for p in found])
    return PropertyResult("done", None, tuple(found), table, scores, text)


def summary_lines(result: PropertyResult | None) -> list[str]:
    """The terminal lines: the significant properties in rank order, or why there are none."""
    if result is None or result.status == "off":
        return []
    if result.status != "done":
        return [f"Properties: none checked ({result.note})."]
    hits = result.significant()
    lines = [
        f"Properties: {len(hits)} of {len(result.properties)} differ significantly between A and B "
        f"(paired McNemar, Benjamini–Hochberg q < {SIGNIFICANT_Q:g}; all in properties.parquet):"
    ]
    for row in hits:
        flag = f"  [describer claimed {row['claimed']}]" if row["contradicts"] else ""
        lines.append(
            f"  {row['rank']}. {row['text']}  A {row['prevalence_a']:.0%} vs B {row['prevalence_b']:.0%}"
            f" (difference {row['difference']:+.0%}, 95% CI {row['ci_low']:+.0%} to {row['ci_high']:+.0%},"
            f" q = {_q(row['q_value'])}){flag}"
        )
    return lines


def _q(value: float) -> str:
    return "< 1e-300" if value < 1e-300 else f"{value:.2g}"
