"""The end of ``asyncpipe compare``: classify every row of both files with the selected description
(through the Batch API first with ``--batch-api``), fit the bias offset on the held-out rows, list and
check the properties, and save the classifier, the predictions and the final metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from asyncpipe.metrics import fit_bias_offset, unscored_reasons
from asyncpipe.pipeline import artifacts, run_info
from asyncpipe.pipeline.batch_pass import (
    batch_final_pass,
    check_requests,
    final_requests,
    open_batches_note,
)
from asyncpipe.pipeline.outcome import Outcome, Selection
from asyncpipe.pipeline.property_checks import RowRef, check_prompts
from asyncpipe.pipeline.property_stage import (
    PropertyResult,
    list_properties,
    rows_to_check,
    run_property_stage,
)
from asyncpipe.prompts.properties import Property
from asyncpipe.records import StepRecord

if TYPE_CHECKING:
    from asyncpipe.pipeline.compare import Run


async def _batch_pass(
    run: Run, selected: StepRecord, rows: list[tuple[str, int]], split_of
) -> tuple[list[Property], str] | None:
    """``--batch-api``: the final pass's requests, and the property checks' (their properties listed
    first, online), as batch jobs sent together; their answers fill the cache. Returns the listing (the
    properties and the describer's reply), or None with the stage off."""
    assert run.cfg.batch is not None
    messages, swapped = run.classifier_prompts(selected.description)
    texts = [run.loaded.side(label).texts[i] for label, i in rows]
    kinds = [final_requests(run.classifier, messages, swapped, texts)]
    listed = None
    if run.cfg.properties > 0:
        shown_a, shown_b = _shown(run, selected)
        listed = await list_properties(
            run.cfg, run.describer, selected.description, shown_a, shown_b, run.reporter
        )
        found = listed[0]
        checked = [r.text for r in _rows_to_check(run, split_of)]
        if found and checked:
            kinds.append(check_requests(run.classifier, check_prompts(run.cfg.templates, found), checked))

    def on_progress(summary: dict) -> None:
        run.batches = dict(summary)
        run.out.save_run(run.record("running"))

    await batch_final_pass(
        run.classifier, run.cfg.batch, run.out.path, kinds, run.reporter, run.batch_stats, on_progress
    )
    return listed


async def finish(run: Run) -> Outcome:
    """Classify every row of both files with the selected description; save the classifier."""
    cfg, loaded = run.cfg, run.loaded
    selected, reason = run.best()
    run.reporter.log(f"selected step {selected.step}: {reason}")
    all_rows = [("A", i) for i in range(len(loaded.side_a.texts))] + [
        ("B", i) for i in range(len(loaded.side_b.texts))
    ]
    splits = artifacts.splits_of(
        loaded.plan, list(range(max(len(loaded.side_a.texts), len(loaded.side_b.texts))))
    )
    listed = None
    if cfg.batch is not None:
        listed = await _batch_pass(run, selected, all_rows, splits.__getitem__)
    elif note := open_batches_note(run.out.path):
        run.reporter.log(note)
    scores = await run.classify(selected.description, all_rows, "final classification of every row")
    frame = artifacts.raw_predictions(
        [label for label, _ in all_rows],
        [i for _, i in all_rows],
        [splits[i] for _, i in all_rows],
        [loaded.side(label).texts[i] for label, i in all_rows],
        scores,
    )
    fit_on = "validation" if loaded.plan.validation else "train"
    offset = fit_bias_offset(frame.filter(pl.col("split") == fit_on))
    predictions = artifacts.predictions_with_correction(frame, offset)
    found = await _find_properties(run, selected, splits.__getitem__, listed)
    final = artifacts.summarize_splits(predictions)
    for correction, per_split in final.items():
        for split, summary in per_split.items():
            run.metric_rows.append(
                artifacts.metrics_row("final", selected.step, None, split, correction, summary)
            )
    messages, swapped = run.classifier_prompts(selected.description)
    document = artifacts.classifier_document(
        model=cfg.classify_model,
        base_url=cfg.base_url,
        messages=messages,
        swapped_messages=swapped,
        description=selected.description,
        layout=loaded.layout.to_dict(),
        labels={key: info.to_dict() for key, info in loaded.labels().items()},
        selected={
            "step": selected.step,
            "epoch": selected.epoch,
            "reason": reason,
            "metrics": selected.to_dict()["metrics"],
        },
        bias_offset=offset,
        bias_fitted_on=fit_on,
        min_label_mass=cfg.min_label_mass,
        classify_mode=cfg.classify_mode,
    )
    if (entry := found.classifier_entry(cfg)) is not None:
        document["properties"] = entry
    run.out.save_results(predictions, classifier=document, properties=(found.table, found.scores))
    run.selection = Selection(selected, reason, offset, final, found.run_record())
    run.save("complete")
    total, cost = run_info.totals(cfg, run.describe_stats, run.stats, run.batch_stats)
    roles = {"describe": run.describe_stats, "classify": run.stats}
    if run.batch_stats.requests:
        roles["classify (batch)"] = run.batch_stats
    index = run.out.path / "index.html"
    return Outcome(
        run.out.path,
        "complete",
        selected,
        final,
        index,
        total,
        cost,
        roles,
        run.loop_record(),
        found,
        tuple(run.warnings),
        unscored_reasons(predictions),
    )


def _shown(run: Run, selected: StepRecord) -> tuple[list[str], list[str]]:
    """The rows the selected description's describer saw: its batch from A and from B."""
    loaded = run.loaded
    return [loaded.side_a.texts[i] for i in selected.pairs], [loaded.side_b.texts[i] for i in selected.pairs]


def _rows_to_check(run: Run, split_of) -> list[RowRef]:
    """The rows the properties are checked on: the held-out pairs (validation and test), or every row
    with ``--properties-on all``."""
    loaded = run.loaded
    held = [i for i in range(loaded.n_pairs) if split_of(i) in ("validation", "test")]
    return rows_to_check(run.cfg, loaded.side_a.texts, loaded.side_b.texts, held, split_of)


async def _find_properties(
    run: Run, selected: StepRecord, split_of, listed: tuple[list[Property], str] | None
) -> PropertyResult:
    """The properties stage: listed from the chosen description and its batch, checked on
    :func:`_rows_to_check` (with ``--batch-api`` every answer is in the cache by now)."""
    shown_a, shown_b = _shown(run, selected)
    return await run_property_stage(
        run.cfg,
        describer=run.describer,
        checker=run.classifier,
        description=selected.description,
        shown_a=shown_a,
        shown_b=shown_b,
        rows=_rows_to_check(run, split_of),
        reporter=run.reporter,
        listed=listed,
    )
