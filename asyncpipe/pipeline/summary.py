"""The short summary printed at the end of a run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from asyncpipe.pipeline.compare import Outcome
from asyncpipe.pipeline.progress import percent
from asyncpipe.pipeline.property_stage import summary_lines


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 1e-300" if value < 1e-300 else f"{value:.2g}"  # below that a double underflows to 0


def print_summary(outcome: Outcome, console: Console) -> None:
    final = outcome.final or {}
    table = Table(title="asyncpipe: how well the description separates A from B", title_justify="left")
    for column in ("split", "rows", "accuracy (95% CI)", "p vs chance", "corrected acc.", "unscored"):
        table.add_column(column)
    raw, corrected = final.get("raw", {}), final.get("corrected", {})
    for split in ("test", "validation", "train", "rest", "all"):
        s = raw.get(split)
        if not s:
            continue
        c = corrected.get(split, {})
        ci = f"{percent(s['accuracy'])} ({percent(s['accuracy_low'])}–{percent(s['accuracy_high'])})"
        p = _p(s["p_value"])
        table.add_row(split, str(s["n"]), ci, p, percent(c.get("accuracy")), str(s["n_unscored"]))
    console.print(table)
    if outcome.selected is not None:
        text = outcome.selected.description
        console.print(f"[bold]Selected description (step {outcome.selected.step}):[/bold]", highlight=False)
        console.print(text if len(text) < 1200 else text[:1200] + " …", markup=False, highlight=False)
    for line in summary_lines(outcome.properties):
        console.print(line, markup=False, highlight=False)
    stats, cost = outcome.stats, outcome.cost
    if stats is not None:
        spent = "unknown (no price in config/models.yaml)" if cost is None else f"${cost:.4f}"
        console.print(
            f"Requests sent: {stats.requests} ({stats.retries} retries, {stats.rate_limited}×429, {stats.timeouts} timeouts) · answers from the cache: "
            f"{stats.cache_hits} · tokens: {stats.prompt_tokens} in ({stats.cached_tokens} cached by the provider), "
            f"{stats.completion_tokens} out · estimated cost of this run: {spent} · unscored rows: {stats.unscored}",
            markup=False,
            highlight=False,
        )
    if outcome.by_role:
        shares = [
            f"{role} {percent(s.cached_tokens / s.prompt_tokens) if s.prompt_tokens else 'n/a'}"
            for role, s in outcome.by_role.items()
        ]
        console.print(
            f"Prompt tokens served from the provider's cache: {', '.join(shares)} "
            "(OpenAI caches a prompt's first 1,024 tokens or more once it has seen them)",
            markup=False,
            highlight=False,
        )
    loop = outcome.loop or {}
    if loop.get("reason"):
        lost = loop.get("steps_lost_race") or []
        raced = (
            f"; {len(lost)} of {loop['steps_raced']} raced description(s) lost their race"
            if loop.get("steps_raced")
            else ""
        )
        console.print(
            f"Describe loop: {loop['after_step']} of {loop['steps_planned']} steps ({loop['reason']}){raced}",
            markup=False,
            highlight=False,
        )
    console.print(f"Report: {outcome.index_html}", markup=False, highlight=False)
