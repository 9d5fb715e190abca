"""What a comparison ends with: the step it kept and the bias offset fitted for it (:class:`Selection`),
and what the command line and ``pairs`` are told (:class:`Outcome`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asyncpipe.llm.stats import RunStats
from asyncpipe.pipeline.property_stage import PropertyResult
from asyncpipe.records import Finals, StepRecord


@dataclass(frozen=True)
class Outcome:
    out_dir: Path
    status: str
    selected: StepRecord | None
    final: Finals | None
    index_html: Path | None
    #: both roles added up, and the estimated cost of this run (None when a price is unknown)
    stats: RunStats | None = None
    cost: float | None = None
    #: each role's counts, for its share of prompt tokens served from the provider's cache
    by_role: dict[str, RunStats] | None = None
    #: where and why the describe loop ended (run.json's ``loop``)
    loop: dict | None = None
    #: the properties stage (None when the run did not get that far)
    properties: PropertyResult | None = None
    #: said before any request was sent (a test split too small to be significant), repeated at the end
    warnings: tuple[str, ...] = ()
    #: why final-pass rows went unscored, most frequent first: (reason, rows)
    unscored_reasons: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Selection:
    """The step the run keeps, once every step is done, and the bias offset fitted for it."""

    step: StepRecord
    reason: str
    bias_offset: float | None = None
    final: Finals | None = None
    #: what run.json says about the properties stage
    properties: dict | None = None
