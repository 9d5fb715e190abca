"""Undo a model's lean towards one label with a single logit offset.

Language models often prefer the token "A" (or "B") regardless of the row, which shifts every logit by
about the same amount. Subtracting one offset ``b`` from logit(p_a) removes that lean without touching
the order of the rows (so AUC is unchanged) and is hard to overfit: one parameter, fitted on held-out
scored rows. ``b`` minimises the log loss of ``sigmoid(logit(p_a) - b)``; at that optimum the mean
corrected probability equals the share of label A, which is how the fit is checked.

Small and tested on purpose, like :mod:`asyncpipe.metrics.scores`: a 1-D convex fit does not justify a
scipy dependency. Probabilities are clipped to [1e-15, 1 - 1e-15] first so logits stay finite.
"""

from __future__ import annotations

import math

import polars as pl

from asyncpipe.metrics.scores import EPS, scored_rows

# The offset is searched in [-BOUND, BOUND]: e^20 is a lean of 5e8 to one, far past any real bias.
BOUND = 20.0
_MAX_ITERATIONS = 200
_TOLERANCE = 1e-12


def fit_bias_offset(preds: pl.DataFrame, *, p_column: str = "p_a") -> float:
    """The logit offset ``b`` that minimises the log loss of ``sigmoid(logit(p_a) - b)`` on scored rows.

    The loss is convex in ``b`` with gradient ``share_a - mean(sigmoid(z - b))`` and curvature
    ``mean(s * (1 - s))``, so Newton's method converges in a few steps. A bisection bracket guards it
    where the curvature is near zero (every row saturated), when a Newton step would fly off. Returns
    0.0 with no scored rows or only one class: the lean is then not identifiable from the labels.
    """
    scored = scored_rows(preds, p_column)
    if scored.height == 0:
        return 0.0
    share_a = float(scored["is_a"].cast(pl.Float64).mean())
    if share_a in (0.0, 1.0):
        return 0.0
    z = scored.select(_logit(pl.col("p"))).to_series()

    def gradient_and_curvature(b: float) -> tuple[float, float]:
        s = 1.0 / (1.0 + (b - z).exp())  # sigmoid(z - b); |z - b| <= 55, so exp stays finite
        return share_a - float(s.mean()), float((s * (1.0 - s)).mean())

    low, high = -BOUND, BOUND
    if gradient_and_curvature(low)[0] >= 0.0:
        return low
    if gradient_and_curvature(high)[0] <= 0.0:
        return high
    b = 0.0
    for _ in range(_MAX_ITERATIONS):
        grad, curvature = gradient_and_curvature(b)
        if grad == 0.0:
            return b
        # The gradient rises with b, so its sign tells which side of b the optimum lies on.
        if grad > 0.0:
            high = b
        else:
            low = b
        step = grad / curvature if curvature > 0.0 else math.inf
        candidate = b - step
        if not low < candidate < high:
            candidate = (low + high) / 2.0
        if abs(candidate - b) < _TOLERANCE:
            return candidate
        b = candidate
    return b


def apply_bias_offset(p_a: pl.Series | pl.Expr, offset: float) -> pl.Series | pl.Expr:
    """``sigmoid(logit(p_a) - offset)`` for a column or an expression; nulls stay null.

    Takes either kind so the pipeline can correct a frame lazily and a test can correct a Series.
    The result keeps the input's name, so ``select(apply_bias_offset(pl.col("p_a"), b))`` yields ``p_a``.
    """
    if isinstance(p_a, pl.Expr):
        return _corrected(p_a, offset)
    return p_a.to_frame("p").select(_corrected(pl.col("p"), offset)).to_series().alias(p_a.name)


def _logit(p: pl.Expr) -> pl.Expr:
    clipped = p.cast(pl.Float64).clip(EPS, 1.0 - EPS)
    return clipped.log() - (-clipped).log1p()


def _corrected(p: pl.Expr, offset: float) -> pl.Expr:
    # exp of a huge argument is inf and 1 / (1 + inf) is 0, so this cannot produce NaN.
    return (1.0 / (1.0 + (offset - _logit(p)).exp())).name.keep()
