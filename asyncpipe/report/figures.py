"""Plotly figures: pure functions from frames to ``go.Figure``.

Text that Plotly draws (titles, axis labels, legend entries, hover labels) is parsed by Plotly.js as a
small subset of HTML, so every piece of it that comes from the run (file names) passes through
:func:`plot_text` first: Plotly then shows ``<`` as a character instead of reading a tag. Escaping for
the ``<script>`` block the figure JSON sits in is the page's job (:mod:`asyncpipe.report.page`).
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from asyncpipe.metrics import reliability_bins
from asyncpipe.report.tables import histogram_counts

SPLIT_COLORS = {"train": "#4c72b0", "validation": "#dd8452"}
LABEL_COLORS = {"A": "#2a9d8f", "B": "#c44e52"}
_BAND_FILL = {"train": "rgba(76,114,176,0.15)", "validation": "rgba(221,132,82,0.18)"}
_GRAY = "#888888"
_NAME_CHARS = 40


def plot_text(text: str, limit: int | None = _NAME_CHARS) -> str:
    """Run-provided text made safe and short for a Plotly label."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False)


def _base_layout(fig: go.Figure, title: str, height: int = 470) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 120},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0.0},
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
    )
    return fig


def _step_axis(fig: go.Figure, steps: pl.DataFrame, **where: int) -> None:
    top = steps["step"].max() if steps.height else 1
    fig.update_xaxes(title_text="describe step", tick0=1, dtick=1 if (top or 1) <= 20 else None, **where)


def _mark_selected(fig: go.Figure, selected_step: int | None, label: bool = True, **where: int) -> None:
    if selected_step is not None:
        note = {"annotation_text": "selected step", "annotation_position": "top right"} if label else {}
        fig.add_vline(x=selected_step, line={"color": "#2ca02c", "width": 2, "dash": "dot"}, **note, **where)


def _gaps(upper: pl.Series, lower: pl.Series) -> list[float]:
    return [u - lo if u is not None and lo is not None else 0.0 for u, lo in zip(upper, lower, strict=True)]


def accuracy_figure(steps: pl.DataFrame, selected_step: int | None = None) -> go.Figure:
    """Accuracy (with its Wilson 95% band) and balanced accuracy per step, train and validation.

    ``steps`` has one row per (step, split), as :func:`asyncpipe.report.read.step_metrics` returns.
    """
    fig = go.Figure()
    for split in ("train", "validation"):
        rows = steps.filter(pl.col("split") == split).sort("step")
        if rows.height == 0:
            continue
        color = SPLIT_COLORS[split]
        band = rows.filter(pl.col("accuracy_low").is_not_null() & pl.col("accuracy_high").is_not_null())
        if band.height > 1:
            xs = band["step"].to_list()
            fig.add_trace(
                go.Scatter(
                    x=xs + xs[::-1],
                    y=band["accuracy_high"].to_list() + band["accuracy_low"].to_list()[::-1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_BAND_FILL[split],
                    line={"width": 0},
                    hoverinfo="skip",
                    name=f"{split} 95% interval",
                    legendgroup=split,
                    showlegend=False,
                )
            )
        single = band.height == 1  # a band needs two steps: show one step's interval as an error bar
        fig.add_trace(
            _step_line(
                rows,
                "accuracy",
                split,
                f"{split} accuracy",
                {"color": color, "width": 2.5},
                customdata=list(
                    zip(
                        rows["accuracy_low"].to_list(),
                        rows["accuracy_high"].to_list(),
                        rows["n"].to_list(),
                        strict=True,
                    )
                ),
                hovertemplate=(
                    f"{split}<br>step %{{x}}<br>accuracy %{{y:.1%}}"
                    "<br>95% CI %{customdata[0]:.1%}–%{customdata[1]:.1%}<br>n %{customdata[2]}<extra></extra>"
                ),
                error_y=(
                    {
                        "type": "data",
                        "symmetric": False,
                        "array": _gaps(rows["accuracy_high"], rows["accuracy"]),
                        "arrayminus": _gaps(rows["accuracy"], rows["accuracy_low"]),
                        "color": color,
                    }
                    if single
                    else None
                ),
            )
        )
        fig.add_trace(
            _step_line(
                rows,
                "balanced_accuracy",
                split,
                f"{split} balanced accuracy",
                {"color": color, "width": 1.5, "dash": "dot"},
                marker={"symbol": "diamond-open"},
                hovertemplate=f"{split}<br>step %{{x}}<br>balanced accuracy %{{y:.1%}}<extra></extra>",
            )
        )
    fig.add_hline(
        y=0.5,
        line={"color": _GRAY, "dash": "dash", "width": 1.5},
        annotation_text="chance (50%)",
        annotation_position="bottom right",
    )
    _mark_selected(fig, selected_step)
    _base_layout(fig, "Accuracy per describe step (band: 95% interval)")
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05], tickformat=".0%")
    _step_axis(fig, steps)
    return fig


def confidence_figure(steps: pl.DataFrame, selected_step: int | None = None) -> go.Figure:
    """Mean confidence against accuracy (top), log loss and Brier score (bottom), per step."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=(
            "Mean confidence (solid) vs accuracy (dotted)",
            "Log loss (solid) and Brier score (dashed)",
        ),
    )
    for split in ("train", "validation"):
        rows = steps.filter(pl.col("split") == split).sort("step")
        if rows.height == 0:
            continue
        color = SPLIT_COLORS[split]
        x = rows["step"].to_list()
        series = (
            (1, "mean_confidence", "mean confidence", "solid", True, ".1%"),
            (1, "accuracy", "accuracy", "dot", False, ".1%"),
            (2, "log_loss", "log loss", "solid", False, ".3f"),
            (2, "brier", "Brier", "dash", False, ".3f"),
        )
        for row, column, label, dash, legend, fmt in series:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=rows[column].to_list(),
                    mode="lines+markers",
                    name=split if legend else f"{split} {label}",
                    legendgroup=split,
                    showlegend=legend,
                    line={"color": color, "dash": dash, "width": 2 if dash == "solid" else 1.5},
                    hovertemplate=f"{split}<br>step %{{x}}<br>{label} %{{y:{fmt}}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    fig.add_hline(
        y=0.6931, line={"color": _GRAY, "dash": "dash", "width": 1}, row=2, col=1,
        annotation_text="log loss of a coin flip", annotation_position="top right",
    )  # fmt: skip
    _mark_selected(fig, selected_step, label=False, row=1, col=1)
    _mark_selected(fig, selected_step, label=False, row=2, col=1)
    title = "Confidence and calibration per describe step"
    if selected_step is not None:
        title += " (green dotted line: selected step)"
    _base_layout(fig, title, height=640)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    _step_axis(fig, steps, row=2, col=1)
    fig.update_xaxes(tick0=1, dtick=1 if (steps["step"].max() or 1) <= 20 else None, row=1, col=1)
    return fig


def confusion_figure(summary: dict, name_a: str, name_b: str, title: str) -> go.Figure:
    """2×2 heatmap: rows are the true file, columns the prediction; A is the positive class."""
    tp, fn, fp, tn = (int(summary.get(k) or 0) for k in ("tp", "fn", "fp", "tn"))
    z = [[tp, fn], [fp, tn]]
    texts = []
    for row in z:
        total = sum(row)
        texts.append([f"{v}<br>({v / total:.0%} of row)" if total else str(v) for v in row])
    a, b = f"A: {plot_text(name_a)}", f"B: {plot_text(name_b)}"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"predicted {a}", f"predicted {b}"],
            y=[f"true {a}", f"true {b}"],
            text=texts,
            texttemplate="%{text}",
            textfont={"size": 16},
            colorscale="Blues",
            showscale=False,
            hovertemplate="%{y}<br>%{x}<br>%{z} rows<extra></extra>",
        )
    )
    _base_layout(fig, title, height=380)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(margin={"l": 160, "b": 60})
    return fig


def histogram_figure(predictions: pl.DataFrame, name_a: str, name_b: str, bins: int = 20) -> go.Figure:
    """Overlaid histograms of p(A) for rows from A and rows from B (raw scores hidden until clicked)."""
    fig = go.Figure()
    width = 1.0 / bins
    for column, suffix, visible in (("p", "", True), ("p_a", " — raw", "legendonly")):
        for label, name in (("A", name_a), ("B", name_b)):
            counts = histogram_counts(predictions, label, column, bins)
            fig.add_trace(
                go.Bar(
                    x=[left + width / 2 for left in counts["left"]],
                    y=counts["count"].to_list(),
                    width=width,
                    customdata=[[left, left + width] for left in counts["left"]],
                    name=f"rows from {label} ({plot_text(name)}){suffix}",
                    marker={"color": LABEL_COLORS[label], "line": {"width": 0}},
                    opacity=0.55 if visible is True else 0.35,
                    visible=visible,
                    hovertemplate=(
                        f"from {label}{suffix}<br>p(A) %{{customdata[0]:.2f}}–%{{customdata[1]:.2f}}"
                        "<br>%{y} rows<extra></extra>"
                    ),
                )
            )
    fig.add_vline(x=0.5, line={"color": _GRAY, "dash": "dash", "width": 1})
    _base_layout(fig, "p(A) by true file (bias-corrected)")
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="p(A)", range=[0, 1])
    fig.update_yaxes(title_text="rows")
    return fig


def reliability_figure(predictions: pl.DataFrame, bins: int = 10) -> go.Figure:
    """Mean p(A) against the fraction of rows truly from A, per bin, with the diagonal."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
            line={"color": _GRAY, "dash": "dash", "width": 1}, hoverinfo="skip",
        )
    )  # fmt: skip
    for column, name, color, visible in (
        ("p", "bias-corrected", "#4c72b0", True),
        ("p_a", "raw", "#937860", "legendonly"),
    ):
        # rows without a true label (a classify run over one file) say nothing about calibration
        table = reliability_bins(predictions.filter(pl.col("label").is_in(["A", "B"])), bins, p_column=column)
        fig.add_trace(
            go.Scatter(
                x=table["mean_p_a"].to_list(),
                y=table["frac_a"].to_list(),
                mode="lines+markers",
                name=name,
                visible=visible,
                line={"color": color},
                marker={"size": 9},
                customdata=table["n"].to_list(),
                hovertemplate=(
                    f"{name}<br>mean p(A) %{{x:.2f}}<br>fraction from A %{{y:.2f}}"
                    "<br>%{customdata} rows<extra></extra>"
                ),
            )
        )
    _base_layout(fig, "Reliability of p(A)")
    fig.update_xaxes(title_text="mean p(A) in bin", range=[0, 1])
    fig.update_yaxes(title_text="fraction truly from A", range=[0, 1.02])
    return fig


def _step_line(rows: pl.DataFrame, column: str, split: str, name: str, line: dict, **more: Any) -> go.Scatter:
    """One series over the describe steps, in its split's legend group."""
    return go.Scatter(
        x=rows["step"].to_list(),
        y=rows[column].to_list(),
        mode="lines+markers",
        name=name,
        legendgroup=split,
        line=line,
        **more,
    )
