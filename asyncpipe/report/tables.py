"""Row selections and bins the page shows: pure functions over the predictions frame.

Every function takes the frame from :func:`asyncpipe.report.read.predictions_frame` (columns ``label``,
``row``, ``split``, ``text``, ``p_a``, ``p_a_corrected``, ``predicted``, ``error`` and ``p``, the p(A)
the decision rests on) and returns a new frame; ties are broken by label and row so a page rendered
twice from the same files is byte-identical.
"""

from __future__ import annotations

import polars as pl


def confidently_wrong(predictions: pl.DataFrame, k: int = 10) -> pl.DataFrame:
    """The ``k`` scored rows whose prediction is wrong, most confident first.

    Adds ``confidence``: the probability the classifier gave the label it (wrongly) chose.
    """
    wrong = predictions.filter(
        pl.col("predicted").is_not_null()
        & pl.col("p").is_not_null()
        & (pl.col("predicted") != pl.col("label"))
    )
    return (
        wrong.with_columns(
            confidence=pl.when(pl.col("predicted") == "A").then(pl.col("p")).otherwise(1.0 - pl.col("p"))
        )
        .sort(["confidence", "label", "row"], descending=[True, False, False])
        .head(k)
    )


def most_typical(predictions: pl.DataFrame, label: str, k: int = 5) -> pl.DataFrame:
    """The ``k`` rows of file ``label`` with the highest probability of their own label.

    Adds ``confidence``: p(A) for rows of A, 1 − p(A) for rows of B.
    """
    own = pl.col("p") if label == "A" else 1.0 - pl.col("p")
    return (
        predictions.filter((pl.col("label") == label) & pl.col("p").is_not_null())
        .with_columns(confidence=own)
        .sort(["confidence", "row"], descending=[True, False])
        .head(k)
    )


def histogram_counts(
    predictions: pl.DataFrame, label: str, column: str = "p", bins: int = 20
) -> pl.DataFrame:
    """Rows of file ``label`` per equal-width bin of ``column`` over [0, 1]: ``bin``, ``left``, ``count``.

    Counted here rather than by Plotly so that the page carries ``bins`` numbers, not one per row.
    Every bin is present, empty ones with count 0; unscored rows are left out.
    """
    counts = (
        predictions.filter((pl.col("label") == label) & pl.col(column).is_not_null())
        .select(bin=(pl.col(column) * bins).floor().clip(0, bins - 1).cast(pl.Int64))
        .group_by("bin")
        .agg(count=pl.len().cast(pl.Int64))
    )
    every = pl.DataFrame({"bin": list(range(bins))}, schema={"bin": pl.Int64})
    return (
        every.join(counts, on="bin", how="left")
        .with_columns(count=pl.col("count").fill_null(0), left=pl.col("bin") / bins)
        .sort("bin")
    )
