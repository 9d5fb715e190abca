"""``asyncpipe properties PROPS.yaml FILE [FILE ...]``: the user's own yes/no properties, tested on files.

No describe step. ``PROPS.yaml`` lists questions (or ``{name, question}`` records); it is read and
checked before anything else, so a malformed file stops the command before any request. Files are
selected as ``asyncpipe pairs`` selects them (folders, globs, files; ``--by-question`` groups them by
question folder). Every property is checked on every row of every file (``--max-rows N``: the first N),
one property per request, each row alone (:mod:`asyncpipe.pipeline.property_checks`).

Per file and property: the prevalence with its Wilson interval. With ``--against BASE`` (matched in each
group as ``pairs`` does), or when a group holds exactly two files (the second in name order is then the
base), each other file is compared with the base pair by pair: the paired difference with Newcombe's
interval, the exact McNemar p, and Benjamini–Hochberg q over every test of the run.

Outputs in ``--output``: ``properties.parquet`` (one row per file and property:
:data:`~asyncpipe.metrics.prevalence.PREVALENCE_COLUMNS`), ``property_scores.parquet`` (one row per
file, property and row), ``run.json`` (``kind: properties``) and ``index.html`` (a files × properties
heatmap and the same table). A re-run pays nothing (the response cache); ``--dry-run`` counts the
requests and prices them, and sends and writes nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from asyncpipe.config import PropertiesConfig, Templates
from asyncpipe.data.files import Member, find_files, matches, named, question_of
from asyncpipe.data.load import choose_text_column, read_table
from asyncpipe.data.render import make_layout, render_rows
from asyncpipe.errors import BatchFilesWritten, FatalAPIError, UserError
from asyncpipe.llm.interrupt import Stopper
from asyncpipe.llm.pool import build_pool
from asyncpipe.llm.stats import RunStats
from asyncpipe.metrics.prevalence import SIGNIFICANT_Q, prevalence_table
from asyncpipe.model_facts import model_facts
from asyncpipe.pipeline.batch_pass import batch_final_pass, check_requests
from asyncpipe.pipeline.outputs import RunDirectory, run_fingerprint
from asyncpipe.pipeline.progress import Reporter
from asyncpipe.pipeline.property_checks import RowRef, check_properties
from asyncpipe.prompts.properties import Property, load_properties_file, property_check_messages
from asyncpipe.records import CheckedFile, RunRecord, RunStatus


@dataclass(frozen=True)
class FileJob:
    """One file to check: its display name (unique in the run), path, question and base (a name)."""

    name: str
    path: Path
    question: str | None
    base: str | None


def plan_files(paths: list[str], *, output: Path, against: str | None, by_question: bool) -> list[FileJob]:
    """The files, named and grouped as ``asyncpipe pairs`` would, each with the base it is compared to."""
    members = find_files(paths, output=output)
    if against is not None and os.path.isfile(against):
        if os.path.abspath(against) not in {os.path.abspath(m.path) for m in members}:
            members.append(Member(Path(against), question_of(against, os.path.dirname(against) or ".")))
        against_key = Path(against).stem if by_question else against
    else:
        against_key = against
    groups: dict[str | None, list[Member]] = {}
    for m in members:
        groups.setdefault(m.question if by_question else None, []).append(m)
    jobs: list[FileJob] = []
    found_base = False
    for question in sorted(groups, key=lambda q: q or ""):
        group = named(groups[question])
        base = None
        if against_key is not None:
            bases = [m for m in group if matches(m, against_key)]
            if len(bases) > 1:
                raise UserError(f"--against {against}: matches {len(bases)} files; give a path")
            base = bases[0] if bases else None
            found_base = found_base or base is not None
        elif len(group) == 2:
            base = group[1]
        prefix = f"{question}/" if question is not None else ""
        for m in group:
            jobs.append(
                FileJob(
                    prefix + m.name,
                    m.path,
                    question,
                    None if base is None or m is base else prefix + base.name,
                )
            )
    if against is not None and not found_base:
        raise UserError(f"--against {against}: matches none of the {len(members)} files found")
    return jobs


def load_texts(jobs: list[FileJob], cfg: PropertiesConfig) -> tuple[dict[str, list[str]], dict]:
    """Every file rendered as a model sees its rows (one layout for all), and that layout."""
    frames = [read_table(job.path) for job in jobs]
    if cfg.max_rows:
        frames = [f.head(cfg.max_rows) for f in frames]
    first = frames[0]
    column = choose_text_column(first, first, cfg.text_column, (str(jobs[0].path),) * 2)
    for job, frame in zip(jobs, frames, strict=True):
        choose_text_column(first, frame, column, (str(jobs[0].path), str(job.path)))
    columns = list(cfg.columns) if cfg.columns else None
    with_question = cfg.with_question and all("question" in f.columns for f in frames)
    settings_chars = cfg.max_row_chars
    layout = None
    for frame in frames:
        layout = make_layout(
            first,
            frame,
            text_column=column,
            columns=columns,
            with_question=with_question,
            max_chars=settings_chars,
        )
    assert layout is not None
    texts = {
        job.name: render_rows(frame, layout, str(job.path))[0]
        for job, frame in zip(jobs, frames, strict=True)
    }
    return texts, layout.to_dict()


def dry_run_text(
    props: list[Property],
    texts: dict[str, list[str]],
    model: str,
    templates: Templates,
    *,
    batch: bool = False,
) -> str:
    """What the command would send and cost (an upper bound: identical rows are asked once); with
    ``batch``, at the Batch API's price."""
    from asyncpipe.pipeline.token_count import messages_tokens, token_counter

    facts = model_facts(model)
    counter = token_counter(facts)
    rows = [t for file_texts in texts.values() for t in file_texts]
    row_tokens = sum(counter.count(t) for t in rows)
    prefix = sum(messages_tokens(property_check_messages(templates, p.text), counter.count) for p in props)
    requests = len(props) * len(rows)
    tokens_in = prefix * len(rows) + len(props) * row_tokens
    price = facts.batch_price if batch else facts.price
    cost = None if price is None else (tokens_in * price.input + requests * price.output) / 1e6
    lines = [
        "dry run: nothing was sent and nothing was written",
        f"plan: {len(props)} properties × {len(rows):,} rows in {len(texts)} files",
        f"  property checks  {requests:>10,}  ({model})" + (", as Batch API jobs" if batch else ""),
        f"  tokens  {tokens_in:>12,} in  {requests:>10,} out  ({counter.method})",
        f"estimated cost: {'unknown: no price for ' + model + ' in config/models.yaml' if cost is None else f'${cost:,.4f}'}"
        + (" (the Batch API's price)" if batch and cost is not None else ""),
    ]
    if counter.note:
        lines.append(f"  note: {counter.note}")
    return "\n".join(lines)


async def run_properties(cfg: PropertiesConfig, reporter: Reporter, stopper: Stopper | None = None) -> Path:
    """The whole command; returns the path of index.html."""
    from asyncpipe.report.properties_page import render_properties_page

    props = load_properties_file(cfg.props)  # first: a malformed file costs nothing
    jobs = plan_files(list(cfg.paths), output=cfg.output, against=cfg.against, by_question=cfg.by_question)
    texts, layout = load_texts(jobs, cfg)
    if cfg.dry_run:
        print(dry_run_text(props, texts, cfg.model, cfg.templates, batch=cfg.batch is not None))
        return cfg.output / "index.html"
    pool = build_pool(cfg.pool, stopper=stopper)
    pool.provider(cfg.model, "classify")
    checks = {p.id: property_check_messages(cfg.templates, p.text) for p in props}
    fingerprint = run_fingerprint(
        {"properties": checks, "min_label_mass": cfg.min_label_mass, "model": cfg.model, "base_url": cfg.pool.base_url,
         "layout": layout, "max_rows": cfg.max_rows, "files": [(j.name, j.base) for j in jobs]},
        [j.path for j in jobs],
    )  # fmt: skip
    out = RunDirectory.open(cfg.output, fingerprint, command="properties", force=cfg.force, resume=False)
    started = time.time()
    batch_stats, batches = RunStats(), {}  # --batch-api: what the batches answered, and their progress

    def record(status: RunStatus, message: str | None = None) -> RunRecord:
        return RunRecord.as_of_now(
            "properties",
            status,
            started,
            message=message,
            fingerprint=fingerprint,
            models={"check": cfg.model},
            config={
                "base_url": cfg.pool.base_url,
                "against": cfg.against,
                "by_question": cfg.by_question,
                "max_rows": cfg.max_rows,
                "min_label_mass": cfg.min_label_mass,
            },
            properties={"items": [p.to_dict() for p in props]},
            files=tuple(
                CheckedFile(j.name, str(j.path), j.question, j.base, len(texts[j.name])) for j in jobs
            ),
            stats=reporter.stats.to_dict(),
            batches=dict(batches),
            batch_stats=batch_stats.to_dict() if cfg.batch is not None else None,
        )

    out.save_run(record("running"))
    pool.open_cache(cfg.cache_path or cfg.output / "cache.sqlite")
    client = pool.client(cfg.model, reporter.stats)
    rows = [RowRef(j.name, i, "all", t) for j in jobs for i, t in enumerate(texts[j.name])]
    reporter.log(f"properties: checking {len(props)} properties on {len(rows)} rows of {len(jobs)} files")
    status: RunStatus = "interrupted"
    message: str | None = "interrupted; run the same command again to continue"
    try:
        if cfg.batch is not None:

            def on_progress(summary: dict) -> None:
                batches.update(summary)
                out.save_run(record("running"))

            requests = check_requests(client, list(checks.items()), [r.text for r in rows])
            await batch_final_pass(
                client, cfg.batch, out.path, [requests], reporter, batch_stats, on_progress
            )
        reporter.phase("checking properties", len(props) * len(rows))
        scores = await check_properties(
            client, list(checks.items()), rows, min_label_mass=cfg.min_label_mass, on_done=reporter.advance
        )
        status, message = "complete", None
    except (FatalAPIError, UserError, BatchFilesWritten) as exc:  # --batch-api export stops on purpose
        status = "exported" if isinstance(exc, BatchFilesWritten) else "failed"
        message = str(exc)
        raise
    finally:
        reporter.end_phase()
        await pool.aclose()
        if status != "complete":
            out.save_run(record(status, message))
    table = prevalence_table(scores, [(p.id, p.text) for p in props], [(j.name, j.base) for j in jobs])
    out.save_properties(table, scores)
    out.save_run(record("complete"))
    for line in summary_lines(table):
        reporter.log(line)
    return render_properties_page(cfg.output)


def summary_lines(table: pl.DataFrame) -> list[str]:
    """The significant differences against a base, for the terminal."""
    tested = table.filter(pl.col("p_value").is_not_null())
    if not tested.height:
        return []
    hits = tested.filter(pl.col("q_value") < SIGNIFICANT_Q).sort("q_value")
    lines = [
        f"{hits.height} of {tested.height} file-vs-base differences are significant (BH q < {SIGNIFICANT_Q:g}):"
    ]
    for r in hits.iter_rows(named=True):
        lines.append(
            f"  {r['file']} vs {r['base']}: {r['text']}  {r['prevalence']:.0%} vs {r['prevalence_base']:.0%}"
            f" ({r['difference']:+.0%}, 95% CI {r['ci_low']:+.0%} to {r['ci_high']:+.0%}, q = {r['q_value']:.2g})"
        )
    return lines
