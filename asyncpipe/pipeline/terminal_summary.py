"""The short summary printed at the end of a run."""

from __future__ import annotations

from rich.console import Console

from asyncpipe.pipeline.outcome import Outcome
from asyncpipe.pipeline.progress import percent
from asyncpipe.pipeline.property_stage import summary_lines
from asyncpipe.records import Summary


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 1e-300" if value < 1e-300 else f"{value:.2g}"  # below that a double underflows to 0


_TEST_NAME = {"binomial": "binomial", "mann-whitney": "Mann–Whitney"}


def _with_ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{percent(value)} ({percent(low)}–{percent(high)})"


def split_line(split: str, s: Summary, corrected: Summary | None) -> str:
    """One split in one line: pair accuracy first (the figure to publish), then accuracy with its
    coverage. Lines rather than a table: a table this wide is cut with an ellipsis in an 80-column log."""
    test = _TEST_NAME.get(s.p_value_test or "")
    p = f"{_p(s.p_value)} ({test})" if test else _p(s.p_value)
    auc = "n/a" if s.auc is None else f"{s.auc:.3f}"
    return (
        f"{split} ({s.n} rows, {s.n_pairs or 0} pairs): "
        f"pair accuracy {_with_ci(s.pair_accuracy, s.pair_ci_low, s.pair_ci_high)}, "
        f"sign-test p {_p(s.pair_p_value)} · "
        f"accuracy {_with_ci(s.accuracy, s.accuracy_low, s.accuracy_high)}, "
        f"coverage {percent(s.coverage)}, balanced {percent(s.balanced_accuracy)}, "
        f"p vs chance {p}, AUC {auc} · bias-corrected accuracy {percent(corrected.accuracy if corrected else None)}"
    )


def print_summary(outcome: Outcome, console: Console) -> None:
    final = outcome.final or {}
    console.print("[bold]asyncpipe: how well the description separates A from B[/bold]", highlight=False)
    raw, corrected = final.get("raw", {}), final.get("corrected", {})
    for split in ("test", "validation", "train", "rest", "all"):
        if s := raw.get(split):
            console.print(split_line(split, s, corrected.get(split)), markup=False, highlight=False)
    console.print(
        "Pair accuracy: share of pairs (A row i, B row i) where the A row gets the higher p(A), ties ½; "
        "its sign test is one-sided, ties left out. p vs chance is one-sided (binomial where A and B rows "
        "are equally many, else Mann–Whitney on the ranking). Coverage: share of rows scored.",
        markup=False,
        highlight=False,
    )
    for warning in outcome.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    if outcome.selected is not None:
        text = outcome.selected.description
        console.print(f"[bold]Selected description (step {outcome.selected.step}):[/bold]", highlight=False)
        console.print(text if len(text) < 1200 else text[:1200] + " …", markup=False, highlight=False)
    for line in summary_lines(outcome.properties):
        console.print(line, markup=False, highlight=False)
    stats, cost = outcome.stats, outcome.cost
    if stats is not None:
        spent = "unknown (no price in config/models.yaml)" if cost is None else f"${cost:.4f}"
        batch = (outcome.by_role or {}).get("classify (batch)")
        # answers that came through batch jobs (or an offline engine's result files) were not sent here
        sent = (
            f"{stats.requests - batch.requests} online, {batch.requests} answered through batch jobs"
            if batch is not None
            else str(stats.requests)
        )
        console.print(
            f"Requests sent: {sent} ({stats.retries} retries, {stats.rate_limited}×429, {stats.timeouts} timeouts) · answers from the cache: "
            f"{stats.cache_hits} · tokens: {stats.prompt_tokens} in ({stats.cached_tokens} cached by the provider), "
            f"{stats.completion_tokens} out · estimated cost of this run: {spent} · unscored rows: {stats.unscored}",
            markup=False,
            highlight=False,
        )
    for reason, rows in outcome.unscored_reasons:
        console.print(f"Unscored, {rows} row(s): {reason}", markup=False, highlight=False)
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
