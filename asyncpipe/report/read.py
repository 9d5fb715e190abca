"""Read a run directory's saved files into typed records and polars frames.

The report is rendered after every describe step, so any file may be missing: a run that was just
started has only ``run.json``; an interrupted one has no ``predictions.parquet``. Nothing here raises
for a missing or unreadable artifact: the loader records a one-line problem and the page shows it, so a
half-written file never stops the report (``steps.jsonl`` may end in a torn line while it is appended).

Files read (written by the pipeline):

- ``run.json`` and ``steps.jsonl``: read through :mod:`asyncpipe.records`, which defines them.
- ``metrics.parquet``: one row per (phase, step, split, correction) with the summary columns; a step
  that lost its race has split ``validation_partial`` (its race rows only) instead of ``validation``.
- ``predictions.parquet``: one row per input row, with ``p_a``, ``p_a_corrected`` and ``predicted``.
- ``classify.yaml``: the description the final classifier used (shown, not needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from asyncpipe.metrics import SUMMARY_INT_KEYS, SUMMARY_KEYS, SUMMARY_TEXT_KEYS
from asyncpipe.records import LabelInfo, RecordError, RunRecord, StepRecord, Summary, read_run, read_steps

_INT_KEYS = frozenset(SUMMARY_INT_KEYS)
_TEXT_KEYS = frozenset(SUMMARY_TEXT_KEYS)

#: columns of the per-step frame the figures draw from (one row per step and split)
STEP_COLUMNS = ("step", "epoch", "split", *SUMMARY_KEYS)


@dataclass(frozen=True)
class Artifacts:
    """Everything found in a run directory; ``problems`` lists files that could not be read."""

    out_dir: Path
    run: RunRecord | None
    steps: tuple[StepRecord, ...]
    metrics: pl.DataFrame | None
    predictions: pl.DataFrame | None
    classify: dict[str, Any] | None
    problems: tuple[str, ...] = field(default=())

    def label(self, key: str) -> LabelInfo:
        """The name behind 'A' or 'B'; the bare letter when run.json does not say."""
        return self.run.label(key) if self.run is not None else LabelInfo(key, "", None)


def load_artifacts(out_dir: Path) -> Artifacts:
    """Read whatever artifacts exist in ``out_dir``."""
    problems: list[str] = []
    try:
        run = read_run(out_dir)
    except RecordError as exc:
        run, problems = None, [str(exc)]
    steps, step_problems = read_steps(out_dir / "steps.jsonl")
    problems += step_problems
    metrics = _read_parquet(out_dir / "metrics.parquet", problems)
    predictions = _read_parquet(out_dir / "predictions.parquet", problems)
    classify = _read_yaml(out_dir / "classify.yaml", problems)
    return Artifacts(
        out_dir=out_dir,
        run=run,
        steps=steps,
        metrics=metrics,
        predictions=predictions,
        classify=classify,
        problems=tuple(problems),
    )


def step_metrics(art: Artifacts) -> pl.DataFrame:
    """One row per (step, split) for the describe steps, raw scores: the series the figures plot.

    Taken from ``metrics.parquet`` when it has step rows, else rebuilt from ``steps.jsonl`` (the two
    hold the same numbers; steps.jsonl may be a step ahead while metrics.parquet is rewritten).
    Columns: ``STEP_COLUMNS``; sorted by split, then step.
    """
    frame: pl.DataFrame | None = None
    if art.metrics is not None and {"phase", "step", "split"} <= set(art.metrics.columns):
        rows = art.metrics.filter(pl.col("phase") == "step")
        if "correction" in rows.columns:
            rows = rows.filter(pl.col("correction").fill_null("raw") == "raw")
        if rows.height:
            frame = _conform(rows)
    from_steps = _conform(pl.DataFrame(_step_rows(art.steps), schema=_schema(), orient="row"))
    if frame is None:
        frame = from_steps
    else:
        # steps.jsonl can know a step metrics.parquet does not have yet: add those
        missing = from_steps.join(frame.select("step", "split"), on=["step", "split"], how="anti")
        frame = pl.concat([frame, missing])
    return frame.sort("split", "step")


def final_summaries(art: Artifacts) -> dict[tuple[str, str], dict[str, Any]]:
    """Final summaries keyed by ``(split, correction)``.

    From the ``phase == "final"`` rows of metrics.parquet; when there are none, from ``run.json``'s
    ``final`` (an early run.json that does not say which correction its summaries are: ``"final"``).
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if art.metrics is not None and "phase" in art.metrics.columns:
        rows = _conform(art.metrics.filter(pl.col("phase") == "final"), keep_correction=True)
        for row in rows.iter_rows(named=True):
            out[(str(row["split"]), str(row.get("correction") or "raw"))] = _clean_summary(row)
    if not out and art.run is not None and art.run.final:
        for correction, per_split in art.run.final.items():
            for split, summary in per_split.items():
                out[(split, correction)] = summary.to_dict()
    return out


PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "label": pl.Utf8(),
    "row": pl.Int64(),
    "split": pl.Utf8(),
    "text": pl.Utf8(),
    "p_a": pl.Float64(),
    "p_a_corrected": pl.Float64(),
    "predicted": pl.Utf8(),
    "error": pl.Utf8(),
}


def predictions_frame(art: Artifacts) -> pl.DataFrame | None:
    """predictions.parquet with every documented column (absent ones as nulls), plus ``p``.

    ``p`` is the p(A) the final decision rests on: ``p_a_corrected``, or ``p_a`` where no corrected
    value exists (a run without a bias offset). Null for unscored rows.
    """
    if art.predictions is None or "label" not in art.predictions.columns:
        return None
    frame = art.predictions.select(
        (pl.col(name) if name in art.predictions.columns else pl.lit(None))
        .cast(dtype, strict=False)
        .alias(name)
        for name, dtype in PREDICTION_SCHEMA.items()
    )
    return frame.with_columns(p=pl.coalesce("p_a_corrected", "p_a"))


def last_step(art: Artifacts) -> int | None:
    """The highest describe step any artifact knows of."""
    candidates = [s.step for s in art.steps]
    if art.metrics is not None and {"phase", "step"} <= set(art.metrics.columns):
        top = art.metrics.filter(pl.col("phase") == "step")["step"].max()
        if isinstance(top, int):
            candidates.append(top)
    return max(candidates) if candidates else None


# --- readers -------------------------------------------------------------------------------------


def _read_parquet(path: Path, problems: list[str]) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several unrelated types for a torn or foreign file
        problems.append(f"{path.name} could not be read: {type(exc).__name__}: {exc}")
        return None


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return None
    return raw if isinstance(raw, dict) else None


# --- shaping -------------------------------------------------------------------------------------


def _schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"step": pl.Int64(), "epoch": pl.Int64(), "split": pl.Utf8()}
    for key in SUMMARY_KEYS:
        schema[key] = pl.Int64() if key in _INT_KEYS else pl.Utf8() if key in _TEXT_KEYS else pl.Float64()
    return schema


def _conform(frame: pl.DataFrame, *, keep_correction: bool = False) -> pl.DataFrame:
    """Select ``STEP_COLUMNS`` with their documented types, adding absent columns as nulls."""
    schema = _schema()
    if keep_correction:
        schema["correction"] = pl.Utf8()
    exprs = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype, strict=False).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(exprs)


def _step_rows(steps: tuple[StepRecord, ...]) -> list[tuple[Any, ...]]:
    rows = []
    for record in steps:
        held_out = "validation_partial" if record.validation_partial else "validation"
        for split, summary in (("train", record.train), (held_out, record.validation)):
            if summary is not None:
                rows.append((record.step, record.epoch, split, *(getattr(summary, k) for k in SUMMARY_KEYS)))
    return rows


def _clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary with every key present, ints as int, floats as finite float or None."""
    return Summary.from_dict(summary).to_dict()  # type: ignore[union-attr]
