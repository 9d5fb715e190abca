"""``asyncpipe classify``: apply a saved ``classify.yaml`` to new rows.

With one file it writes p(A) per row; with two it treats the first as A and the second as B and also
writes metrics. The saved bias offset is applied (``p_a_corrected``); ``p_a`` stays raw. When the
classifier keeps properties (the compare run's properties stage), each is checked on every row too:
``properties.parquet`` holds their prevalence per file (and, with two files, the paired difference of
the first against the second), ``property_scores.parquet`` the answers.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from asyncpipe import __version__
from asyncpipe.config import BatchOptions, ClassifyConfig, read_yaml
from asyncpipe.data.render import RowLayout
from asyncpipe.errors import UserError
from asyncpipe.llm.base import ClassifyMode
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.interrupt import Stopper
from asyncpipe.llm.pool import build_pool
from asyncpipe.llm.registry import is_local
from asyncpipe.llm.stats import RunStats
from asyncpipe.metrics.prevalence import prevalence_table
from asyncpipe.pipeline import artifacts
from asyncpipe.pipeline.batch_pass import batch_final_pass, check_requests, final_requests
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.pipeline.inputs import load_side, side_names
from asyncpipe.pipeline.outputs import RunDirectory, run_fingerprint
from asyncpipe.pipeline.progress import Reporter, percent
from asyncpipe.pipeline.property_checks import RowRef, check_properties
from asyncpipe.pipeline.terminal_summary import split_line
from asyncpipe.records import LabelInfo, RunRecord


def load_classifier(path: Path) -> dict[str, Any]:
    """Read and check a classify.yaml (safe loader only)."""
    document = read_yaml(path, "classifier")
    fmt = document.get("asyncpipe_classifier")
    if fmt is None:
        raise UserError(
            f"{path}: not an asyncpipe classifier (no 'asyncpipe_classifier' key); use the classify.yaml a compare run wrote"
        )
    if fmt != artifacts.CLASSIFIER_FORMAT:
        raise UserError(
            f"{path}: classifier format {fmt!r} is not supported by asyncpipe {__version__} (expects {artifacts.CLASSIFIER_FORMAT})"
        )
    messages = document.get("messages")
    valid = (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
            for m in messages
        )
        and document.get("placeholder", "{row}") in messages[-1]["content"]
        and isinstance(document.get("row_layout"), dict)
        and isinstance(document.get("model"), str)
    )
    if not valid:
        raise UserError(
            f"{path}: damaged classifier: needs messages with a {{row}} placeholder, a model and a row_layout"
        )
    return document


SAMPLED_BATCH = "--batch-api sends logprobs requests only; a classifier that samples (--classify-mode sample:N) classifies online"


def shown_differently(
    layout: RowLayout, no_question: bool, columns: tuple[str, ...] | None, log
) -> RowLayout:
    """The classifier's layout, changed by ``--no-question`` or ``--columns`` for files that lack one of
    its columns, with a warning: the rows are then not what the classifier was chosen on."""
    if columns is not None:
        if not columns:
            raise UserError("--columns: name at least one column")
        text = layout.text_column if layout.text_column in columns else None
        changed = RowLayout(columns, columns, layout.max_chars, text)
    elif no_question:
        text = layout.text_column or layout.columns[-1]
        changed = RowLayout((text,), (text,), layout.max_chars, text)
    else:
        return layout
    if changed.columns != layout.columns:
        log(
            f"warning: rows are shown as {', '.join(changed.columns)}, not as the classifier was chosen on "
            f"({', '.join(layout.columns)}); its accuracy and bias correction may not carry over"
        )
    return changed


async def classify_saved(cfg: ClassifyConfig, reporter: Reporter, stopper: Stopper | None = None) -> Path:
    document = load_classifier(cfg.classifier)
    checks = saved_checks(document, cfg.classifier)
    try:
        layout = RowLayout.from_dict(document["row_layout"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{cfg.classifier}: damaged row_layout") from None
    layout = shown_differently(layout, cfg.no_question, cfg.columns, reporter.log)
    saved_mode = str(document.get("classify_mode") or "logprobs")
    try:
        mode = ClassifyMode.parse(cfg.classify_mode or saved_mode)
    except ValueError as exc:
        raise UserError(f"{cfg.classifier}: classify_mode: {exc}") from None
    if cfg.batch is not None and mode.sampled:
        raise UserError(SAMPLED_BATCH)
    files = list(cfg.files)
    names = side_names(*files) if len(files) == 2 else (files[0].stem,)
    if cfg.text_column_b is not None and len(files) < 2:
        raise UserError("--column-b names the second file's text column: give two files")
    renames = [None, cfg.text_column_b]
    sides = [
        load_side(label, name, path, layout, text_column=own)
        for label, name, path, own in zip("AB", names, files, renames, strict=False)
    ]
    if cfg.max_rows:
        sides = [replace(s, texts=s.texts[: cfg.max_rows]) for s in sides]
    model = cfg.model or document["model"]
    saved_url = document.get("base_url")
    if cfg.pool.base_url is None and saved_url and not is_local(model):
        # a classifier file travels between people: never send the user's key to an address it names
        raise UserError(
            f"{cfg.classifier} was made against {saved_url}; pass --base-url {saved_url} to classify there "
            "(asyncpipe does not send your key to an address read from a file)"
        )
    if cfg.batch is not None and is_local(model):
        raise UserError(
            "--batch-api needs an API model; the embedded model runs in this process, not in batches"
        )
    pool = build_pool(cfg.pool, classify_mode=mode, stopper=stopper)
    pool.provider(model, "classify")
    # what decides the results; a mode or layout other than the classifier's counts only when used
    decides: dict[str, Any] = {"classifier": document, "model": model}
    if mode != ClassifyMode.parse(saved_mode):
        decides["classify_mode"] = str(mode)
    if layout.to_dict() != document["row_layout"]:
        decides["row_layout"] = layout.to_dict()
    fingerprint = run_fingerprint(decides, files)
    out = RunDirectory.open(cfg.output, fingerprint, command="classify", force=cfg.force, resume=False)
    pool.open_cache(cfg.cache_path or cfg.output / "cache.sqlite")
    client = pool.client(model, reporter.stats)
    reporter.limiter = client.limiter
    started = time.time()
    texts = [t for side in sides for t in side.texts]
    batch_stats = RunStats()
    if cfg.batch is not None:
        try:
            await _batch_pass(
                cfg.batch, client, document, checks, texts, out, fingerprint, reporter, batch_stats
            )
        except BaseException:
            await pool.aclose()
            raise
    reporter.phase("classifying", len(texts))
    # the classifier's own threshold, so that new rows are held to the same standard
    min_label_mass = float(document.get("min_label_mass", cfg.min_label_mass))
    try:
        scores = await classify_rows(
            client,
            document["messages"],
            texts,
            workers=client.limiter.maximum,
            swapped_messages=document.get("swapped_messages"),
            on_done=reporter.advance,
            min_label_mass=min_label_mass,
        )
        property_scores = None
        if checks:
            rows = [RowRef(side.name, i, "new", t) for side in sides for i, t in enumerate(side.texts)]
            reporter.phase("checking properties", len(checks) * len(rows))
            property_scores = await check_properties(
                client, checks, rows, min_label_mass=min_label_mass, on_done=reporter.advance
            )
    finally:
        reporter.end_phase()
        await pool.aclose()
    labels = [side.label for side in sides for _ in side.texts]
    frame = artifacts.raw_predictions(
        labels if len(sides) == 2 else [None] * len(texts),
        [i for side in sides for i in range(len(side.texts))],
        ["new"] * len(texts),
        texts,
        scores,
    )
    predictions = artifacts.predictions_with_correction(frame, float(document.get("bias_offset") or 0.0))
    final, rows = None, None
    if len(sides) == 2:
        per_split = artifacts.summarize_splits(predictions.with_columns(pl.lit("rest").alias("split")))
        final = {corr: {"all": per["all"]} for corr, per in per_split.items()}
        rows = [
            artifacts.metrics_row("final", 0, None, "all", corr, per["all"]) for corr, per in final.items()
        ]
        # pair accuracy first, the figure to publish, as compare's summary prints it
        reporter.log(split_line("all", final["raw"]["all"], final["corrected"]["all"]))
    labels = document.get("labels")
    record = RunRecord.as_of_now(
        "classify",
        "complete",
        started,
        fingerprint=fingerprint,
        labels={k: LabelInfo.from_dict(v, k) for k, v in labels.items()} if isinstance(labels, dict) else {},
        models={"classify": model},
        classify_mode=str(mode),
        stats=reporter.stats.to_dict(),
        limiter=client.limiter.state().to_dict(),
        batch_stats=batch_stats.to_dict() if cfg.batch is not None else None,
        final=final,
        classifier=str(cfg.classifier),
        inputs=tuple(str(f) for f in files),
    )
    table = None
    if property_scores is not None:
        table = _prevalence(document, sides, property_scores, reporter)
    out.save_results(predictions, metric_rows=rows, record=record, properties=(table, property_scores))
    return cfg.output / "predictions.parquet"


async def _batch_pass(
    batch: BatchOptions,
    client: LLMClient,
    document: dict[str, Any],
    checks: list[tuple[str, list[dict]]],
    texts: list[str],
    out: RunDirectory,
    fingerprint: str,
    reporter: Reporter,
    batch_stats: RunStats,
) -> None:
    """``--batch-api``: every row as batch jobs first, and every saved property check on every row;
    their answers fill the cache."""

    def on_progress(summary: dict) -> None:
        out.save_run(
            RunRecord(kind="classify", status="running", fingerprint=fingerprint, batches=dict(summary))
        )

    kinds = [final_requests(client, document["messages"], document.get("swapped_messages"), texts)]
    if checks:
        kinds.append(check_requests(client, checks, texts))  # type: ignore[arg-type]
    await batch_final_pass(client, batch, out.path, kinds, reporter, batch_stats, on_progress)


def _prevalence(
    document: dict, sides: list, property_scores: pl.DataFrame, reporter: Reporter
) -> pl.DataFrame:
    """The saved properties' prevalence per file (and the first file against the second), logged."""
    texts_of = {item["id"]: item["text"] for item in document["properties"]["items"]}
    files = [(sides[0].name, sides[1].name if len(sides) == 2 else None)]
    files += [(side.name, None) for side in sides[1:]]
    table = prevalence_table(property_scores, list(texts_of.items()), files)
    for row in table.iter_rows(named=True):
        versus = (
            f"; vs {row['base']}: {row['difference']:+.0%} (q = {row['q_value']:.2g})"
            if row["difference"] is not None
            else ""
        )
        reporter.log(f"{row['file']}: {row['text']} {percent(row['prevalence'])} of {row['n']} rows{versus}")
    return table


def saved_checks(document: dict, path: Path) -> list[tuple[str, list[dict]]]:
    """The property checks a classify.yaml keeps (none for one written before properties existed)."""
    saved = document.get("properties")
    if saved is None:
        return []
    items = saved.get("items") if isinstance(saved, dict) else None
    valid = isinstance(items, list) and all(
        isinstance(i, dict)
        and isinstance(i.get("id"), str)
        and isinstance(i.get("text"), str)
        and isinstance(i.get("messages"), list)
        and i["messages"]
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in i["messages"])
        and "{row}" in i["messages"][-1]["content"]
        for i in items
    )
    if not valid:
        raise UserError(
            f"{path}: damaged properties: each needs an id, a text and messages with a {{row}} placeholder"
        )
    return [(i["id"], i["messages"]) for i in items]
