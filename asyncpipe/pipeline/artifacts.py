"""Assemble the output records: step metrics rows, the predictions frame, the classifier file.

Column contracts (tests and the report read these):

- ``metrics.parquet``: ``phase`` ("step" | "final"), ``step``, ``epoch`` (null for final), ``split``
  ("train" | "validation" | "test" | "rest" | "all"), ``correction`` ("raw" | "corrected"), then the
  counts and statistics of :func:`asyncpipe.metrics.summarize` (``n``, ``tp`` … ``n_pairs``,
  ``pair_accuracy``, ``pair_ci_low``, ``pair_ci_high``, ``pair_p_value``, ``coverage``, ``accuracy``
  with its Wilson interval, the one-sided ``p_value`` and ``p_value_test``, ``auc``, ``auc_p_value``,
  log loss, ``selection_log_loss``, Brier, ``ece_p_a``).
- ``predictions.parquet``: ``label``, ``row``, ``split``, ``text``, ``p_a`` (raw), ``p_a_corrected``,
  ``predicted`` (from the corrected probability), ``predicted_raw``, ``label_mass`` (the probability
  'A' and 'B' held together; null when unknown), ``error`` (why a row is unscored).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from asyncpipe import __version__
from asyncpipe.data.pairing import Plan
from asyncpipe.metrics import (
    SUMMARY_FLOAT_KEYS,
    SUMMARY_INT_KEYS,
    SUMMARY_TEXT_KEYS,
    apply_bias_offset,
    summarize,
)
from asyncpipe.pipeline.fanout import Scores
from asyncpipe.records import Finals, Summary

METRICS_SCHEMA: dict[str, Any] = {
    "phase": pl.Utf8,
    "step": pl.Int64,
    "epoch": pl.Int64,
    "split": pl.Utf8,
    "correction": pl.Utf8,
    **{k: pl.Int64 for k in SUMMARY_INT_KEYS},
    **{k: pl.Float64 for k in SUMMARY_FLOAT_KEYS},
    **{k: pl.Utf8 for k in SUMMARY_TEXT_KEYS},
}
CLASSIFIER_FORMAT = 1


def summary_of(labels: list[str], rows: list[int], p_a: list[float | None]) -> Summary:
    """The metrics summary of rows with these true labels, pair indices (for pair accuracy) and p(A)
    (None: unscored)."""
    frame = pl.DataFrame(
        {"label": labels, "row": rows, "p_a": p_a},
        schema={"label": pl.Utf8, "row": pl.Int64, "p_a": pl.Float64},
    )
    return Summary.from_dict(summarize(frame))  # type: ignore[return-value]


def metrics_row(
    phase: str, step: int, epoch: int | None, split: str, correction: str, summary: Summary
) -> dict:
    return {
        "phase": phase,
        "step": step,
        "epoch": epoch,
        "split": split,
        "correction": correction,
        **summary.to_dict(),
    }


def metrics_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METRICS_SCHEMA)


RAW_PREDICTIONS_SCHEMA = {
    "label": pl.Utf8,
    "row": pl.Int64,
    "split": pl.Utf8,
    "text": pl.Utf8,
    "p_a": pl.Float64,
    "label_mass": pl.Float64,
    "error": pl.Utf8,
}


def splits_of(plan: Plan, rows: list[int]) -> list[str]:
    """Each row's split: ``validation`` and ``test`` (held out), ``train`` (shown to the describer at
    some step) or ``rest`` (never used: past the shorter file, or in a batch no step reached)."""
    validation, test, shown = set(plan.validation), set(plan.test), plan.shown
    return [
        "validation"
        if i < plan.n_pairs and i in validation
        else "test"
        if i < plan.n_pairs and i in test
        else "train"
        if i in shown
        else "rest"
        for i in rows
    ]


def raw_predictions(
    labels: list[str | None], rows: list[int], splits: list[str], texts: list[str], scores: Scores
) -> pl.DataFrame:
    """One row per classified row, before any correction (``p_a`` null where unscored)."""
    data = {
        "label": labels,
        "row": rows,
        "split": splits,
        "text": texts,
        "p_a": scores.values(),
        "label_mass": scores.masses(),
        "error": [scores.errors.get(k) for k in range(len(texts))],
    }
    return pl.DataFrame(data, schema=RAW_PREDICTIONS_SCHEMA)


#: predictions.parquet: the raw predictions with the bias-corrected p(A) and both predicted labels
PREDICTIONS_SCHEMA = {
    **{k: v for k, v in RAW_PREDICTIONS_SCHEMA.items() if k not in ("label_mass", "error")},
    "p_a_corrected": pl.Float64,
    "predicted": pl.Utf8,
    "predicted_raw": pl.Utf8,
    "label_mass": pl.Float64,
    "error": pl.Utf8,
}


def predictions_with_correction(frame: pl.DataFrame, offset: float) -> pl.DataFrame:
    """Add ``p_a_corrected`` and the predicted labels; ``p_a`` stays the raw probability."""

    def decide(column: str) -> pl.Expr:
        return (
            pl.when(pl.col(column).is_null())
            .then(None)
            .when(pl.col(column) >= 0.5)
            .then(pl.lit("A"))
            .otherwise(pl.lit("B"))
        )

    return (
        frame.with_columns(apply_bias_offset(pl.col("p_a"), offset).alias("p_a_corrected"))
        .with_columns(decide("p_a_corrected").alias("predicted"), decide("p_a").alias("predicted_raw"))
        .select(list(PREDICTIONS_SCHEMA))
    )


def summarize_splits(predictions: pl.DataFrame) -> Finals:
    """{correction: {split: summary}} over every split present and over all rows."""
    out: Finals = {}
    for correction, column in (("raw", "p_a"), ("corrected", "p_a_corrected")):
        per_split: dict[str, Summary] = {}
        for split in ("train", "validation", "test", "rest"):
            part = predictions.filter(pl.col("split") == split)
            if part.height:
                per_split[split] = Summary.from_dict(summarize(part, p_column=column))  # type: ignore[assignment]
        per_split["all"] = Summary.from_dict(summarize(predictions, p_column=column))  # type: ignore[assignment]
        out[correction] = per_split
    return out


def classifier_document(
    *,
    model: str,
    base_url: str | None,
    messages: list[dict],
    swapped_messages: list[dict] | None,
    description: str,
    layout: dict,
    labels: dict,
    selected: dict,
    bias_offset: float,
    bias_fitted_on: str,
    min_label_mass: float,
    classify_mode: str = "logprobs",
) -> dict:
    """What classify.yaml holds: enough to classify new rows with no other file."""
    return {
        "asyncpipe_classifier": CLASSIFIER_FORMAT,
        "asyncpipe_version": __version__,
        "model": model,
        "base_url": base_url,
        # "logprobs", or "sample:N": how p(A) was obtained; asyncpipe classify asks the same way
        "classify_mode": classify_mode,
        "placeholder": "{row}",
        "messages": messages,
        "swapped_messages": swapped_messages,
        "description": description,
        "row_layout": layout,
        "labels": labels,
        "selected": selected,
        "bias_offset": bias_offset,
        "bias_offset_fitted_on": bias_fitted_on,
        "min_label_mass": min_label_mass,
    }
