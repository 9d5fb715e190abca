"""The properties in the reports: the "What exactly differs" section of a comparison (ranked table,
forest plot, example rows) and the page of ``asyncpipe properties`` (files × properties heatmap).

Reads ``properties.parquet`` and ``property_scores.parquet`` (and, for example rows, the texts in
``predictions.parquet``); a missing or unreadable file leaves the section out or says so. Every text
that came from the run passes through :func:`~asyncpipe.report.format.esc`, :func:`clipped` or
:func:`~asyncpipe.report.figures.plot_text` where it enters HTML or a figure.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from asyncpipe.metrics.prevalence import SIGNIFICANT_Q
from asyncpipe.records import RecordError, RunRecord, read_run
from asyncpipe.report.figures import plot_text
from asyncpipe.report.format import clipped, esc, is_number, num, p_value, pct

SIGNIFICANT_COLOR = "#d1495b"
OTHER_COLOR = "#8a8f98"
EXAMPLES_PER_FILE = 2


def _read(path: Path) -> tuple[pl.DataFrame | None, str | None]:
    if not path.exists():
        return None, None
    try:
        return pl.read_parquet(path), None
    except Exception as exc:  # polars raises several unrelated types for a torn or foreign file
        return None, f"{path.name} could not be read: {type(exc).__name__}"


def _q(value) -> str:
    if not is_number(value):
        return "–"
    return "q < 0.0001" if value < 1e-4 else f"q = {value:.2g}" if value < 0.01 else f"q = {value:.3f}"


def _signed(value) -> str:
    return f"{value:+.1%}" if is_number(value) else "–"


def forest_figure(table: pl.DataFrame) -> go.Figure:
    """Each property's paired difference (A − B) with its 95% interval, top = rank 1; red where q < 0.05."""
    rows = table.filter(pl.col("difference").is_not_null()).sort("rank")
    fig = go.Figure()
    labels = [plot_text(f"{r['rank']}. {r['text']}", 70) for r in rows.iter_rows(named=True)]
    for significant, color, name in (
        (True, SIGNIFICANT_COLOR, f"q < {SIGNIFICANT_Q:g}"),
        (False, OTHER_COLOR, f"q ≥ {SIGNIFICANT_Q:g}"),
    ):
        keep = [
            i
            for i, r in enumerate(rows.iter_rows(named=True))
            if (r["q_value"] is not None and r["q_value"] < SIGNIFICANT_Q) == significant
        ]
        if not keep:
            continue
        part = [rows.row(i, named=True) for i in keep]
        fig.add_trace(
            go.Scatter(
                x=[r["difference"] for r in part],
                y=[labels[i] for i in keep],
                mode="markers",
                name=name,
                marker={"color": color, "size": 10},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["difference"] for r in part],
                    "arrayminus": [r["difference"] - r["ci_low"] for r in part],
                    "color": color,
                },
                customdata=[[r["prevalence_a"], r["prevalence_b"], r["q_value"]] for r in part],
                hovertemplate=(
                    "%{y}<br>A − B %{x:+.1%}<br>A %{customdata[0]:.1%} · B %{customdata[1]:.1%}"
                    "<br>q %{customdata[2]:.3g}<extra></extra>"
                ),
            )
        )
    fig.add_vline(x=0, line={"color": "#444", "width": 1})
    fig.update_layout(
        title={"text": "Difference in prevalence, A − B (paired, 95% Newcombe interval)", "x": 0.01},
        template="plotly_white",
        height=max(260, 60 + 42 * rows.height),
        margin={"l": 20, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.15},
    )
    fig.update_xaxes(range=[-1.02, 1.02], tickformat="+.0%", title_text="← more in B · more in A →")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def _examples(scores: pl.DataFrame, texts: pl.DataFrame | None, prop: str, label: str) -> list[str]:
    if texts is None:
        return []
    having = (
        scores.filter((pl.col("property") == prop) & (pl.col("label") == label) & (pl.col("p_yes") >= 0.5))
        .sort("row")
        .head(EXAMPLES_PER_FILE)
        .join(texts, on=["label", "row"], how="left")
    )
    return [t for t in having["text"].to_list() if t is not None]


def properties_section(out_dir: Path) -> str:
    """The comparison report's section, or "" when the run has no properties."""
    table, problem = _read(out_dir / "properties.parquet")
    if table is None:
        return (
            f'<section id="properties"><h2>What exactly differs</h2><p class="note problem">{esc(problem)}</p></section>'
            if problem
            else ""
        )
    scores, _ = _read(out_dir / "property_scores.parquet")
    predictions, _ = _read(out_dir / "predictions.parquet")
    texts = predictions.select("label", "row", "text") if predictions is not None else None
    from asyncpipe.report.page import figure_html  # the page module imports this one

    table = table.sort("rank")
    every_row = scores is not None and bool(set(scores["split"].drop_nulls()) - {"validation", "test"})
    where = "every row of both files" if every_row else "every row of the held-out pairs (rows it never saw)"
    parts = [
        '<section id="properties"><h2>What exactly differs</h2>',
        '<p class="sub">Yes/no properties the describer listed from the chosen description, each checked '
        f"alone on {where}. Prevalence: share of rows with p(yes) ≥ 0.5 "
        "(mean p(yes) in brackets). The difference A − B is paired, with Newcombe's hybrid score 95% interval; "
        "p: exact McNemar test on the discordant pairs; q: Benjamini–Hochberg over this run's properties. "
        "Ranked by the size of the difference.</p>",
        '<table class="numbers"><thead><tr><th>#</th><th>property</th><th>claimed</th><th>measured</th>'
        "<th>A</th><th>B</th><th>A − B (95% CI)</th><th>p</th><th>q</th><th>pairs</th><th>unscored</th>"
        "</tr></thead><tbody>",
    ]
    for r in table.iter_rows(named=True):
        flag = (
            ' <span class="badge" title="the describer claimed the other dataset">contradicts the claim</span>'
            if r["contradicts"]
            else ""
        )
        interval = (
            f"{_signed(r['difference'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
            if is_number(r["difference"])
            else "–"
        )
        parts.append(
            f'<tr><td>{r["rank"]}</td><td class="desc">{esc(r["text"])}</td><td>{esc(r["claimed"] or "–")}</td>'
            f"<td>{esc(r['measured'] or '–')}{flag}</td>"
            f"<td>{pct(r['prevalence_a'])} ({num(r['mean_p_yes_a'], 2)})</td>"
            f"<td>{pct(r['prevalence_b'])} ({num(r['mean_p_yes_b'], 2)})</td><td>{interval}</td>"
            f"<td>{p_value(r['p_value'])}</td><td>{_q(r['q_value'])}</td><td>{r['n_pairs']}</td><td>{r['n_unscored']}</td></tr>"
        )
    parts.append("</tbody></table>")
    if table.filter(pl.col("difference").is_not_null()).height:
        parts.append(figure_html(forest_figure(table), "fig-properties"))
    if scores is not None:
        parts.append("<h3>Rows that have each property <small>(two from each file)</small></h3>")
        for r in table.iter_rows(named=True):
            parts.append(f'<details class="step"><summary>{r["rank"]}. {esc(r["text"])}</summary>')
            for label in ("A", "B"):
                examples = _examples(scores, texts, r["property"], label)
                shown = "".join(f"<li>{clipped(t)}</li>" for t in examples) or "<li><i>none</i></li>"
                parts.append(f'<p><span class="tag tag-{label}">{label}</span></p><ul>{shown}</ul>')
            parts.append("</details>")
    parts.append("</section>")
    return "".join(parts)


def heatmap_figure(table: pl.DataFrame) -> go.Figure:
    """Files (rows, in the run's order) × properties: prevalence, with the interval and, for a file
    compared with a base, the difference and whether q < 0.05 in each cell."""
    files = list(dict.fromkeys(table["file"].to_list()))
    props = list(dict.fromkeys(table["property"].to_list()))
    cells = {(r["file"], r["property"]): r for r in table.iter_rows(named=True)}
    z, text, hover = [], [], []
    for f in files:
        z_row, text_row, hover_row = [], [], []
        for p in props:
            r = cells.get((f, p), {})
            z_row.append(r.get("prevalence"))
            mark = ""
            if is_number(r.get("difference")):
                star = " *" if is_number(r.get("q_value")) and r["q_value"] < SIGNIFICANT_Q else ""
                mark = f"<br>{_signed(r['difference'])}{star}"
            bounds = f" [{pct(r.get('prevalence_low'), 0)}–{pct(r.get('prevalence_high'), 0)}]"
            text_row.append(f"{pct(r.get('prevalence'), 0)}{bounds if r.get('n') else ''}{mark}")
            hover_row.append(
                f"{plot_text(f, 60)} · {plot_text(r.get('text') or p, 60)}<br>{pct(r.get('prevalence'))} "
                f"[{pct(r.get('prevalence_low'))}, {pct(r.get('prevalence_high'))}] of {r.get('n')} rows"
                + (f"<br>vs {plot_text(r.get('base') or '', 60)}: {_signed(r.get('difference'))}, {_q(r.get('q_value'))}"
                   if is_number(r.get("difference")) else "")
            )  # fmt: skip
        z.append(z_row)
        text.append(text_row)
        hover.append(hover_row)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[plot_text(p, 30) for p in props],
            y=[plot_text(f, 50) for f in files],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=text,
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorbar={"title": "prevalence", "tickformat": ".0%"},
        )
    )
    fig.update_layout(
        title={"text": "Prevalence per file (* : differs from its base, BH q < 0.05)", "x": 0.01},
        template="plotly_white",
        height=max(300, 120 + 44 * len(files)),
        margin={"l": 20, "r": 20, "t": 60, "b": 60},
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def properties_page(out_dir: Path, run: RunRecord | None) -> str:
    from asyncpipe.report.page import document, figure_html

    table, problem = _read(out_dir / "properties.parquet")
    items = ((run.properties if run else None) or {}).get("items")
    props = [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []
    status = run.status if run else "running"
    parts = [
        "<h1>asyncpipe properties</h1>",
        f'<p><span class="badge status-{esc(status)}">{esc(status)}</span> {len(props)} properties · '
        f"{len(run.files) if run else 0} files · model {esc(run.models.get('check') if run else None)}</p>",
        '<p class="sub">Each property was checked alone on every row of every file (one yes/no answer each, '
        "p(yes) ≥ 0.5 counts as yes). Prevalence with its Wilson 95% interval; against a base, the paired "
        "difference with Newcombe's hybrid score interval, the exact McNemar p and Benjamini–Hochberg q over "
        "every test of this run.</p>",
        "<h2>Properties</h2><table><thead><tr><th>name</th><th>question</th></tr></thead><tbody>",
        *(f"<tr><td>{esc(p.get('id'))}</td><td>{esc(p.get('text'))}</td></tr>" for p in props),
        "</tbody></table>",
    ]
    if run is not None and run.message:
        parts.append(f'<p class="note problem">{esc(run.message)}</p>')
    if problem:
        parts.append(f'<p class="note problem">{esc(problem)}</p>')
    if table is not None and table.height:
        parts.append(figure_html(heatmap_figure(table), "fig-heatmap"))
        parts.append(
            '<h2>Per file</h2><table class="numbers"><thead><tr><th>file</th><th>property</th><th>prevalence [95% CI]</th>'
            "<th>mean p(yes)</th><th>rows</th><th>unscored</th><th>base</th><th>difference [95% CI]</th><th>p</th><th>q</th>"
            "</tr></thead><tbody>"
        )
        for r in table.iter_rows(named=True):
            diff = (
                f"{_signed(r['difference'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
                if is_number(r["difference"])
                else "–"
            )
            parts.append(
                f"<tr><td>{esc(r['file'])}</td><td>{esc(r['property'])}</td>"
                f"<td>{pct(r['prevalence'])} [{pct(r['prevalence_low'])}, {pct(r['prevalence_high'])}]</td>"
                f"<td>{num(r['mean_p_yes'], 2)}</td><td>{r['n']}</td><td>{r['n_unscored']}</td>"
                f"<td>{esc(r['base'] or '–')}</td><td>{diff}</td><td>{p_value(r['p_value'])}</td><td>{_q(r['q_value'])}</td></tr>"
            )
        parts.append("</tbody></table>")
    elif status == "complete":
        parts.append('<p class="note">No results.</p>')
    parts.append("<footer>Rendered from properties.parquet and run.json by asyncpipe.</footer>")
    return document("asyncpipe properties", "".join(parts))


def render_properties_page(out_dir: Path) -> Path:
    """Write ``index.html`` (and ``plotly.min.js``) of an ``asyncpipe properties`` output directory."""
    from plotly.offline import get_plotlyjs

    from asyncpipe.atomic import write_bytes_atomic, write_if_changed

    try:
        run = read_run(out_dir)
    except RecordError:
        run = None
    write_if_changed(out_dir / "plotly.min.js", get_plotlyjs().encode("utf-8"))
    index = out_dir / "index.html"
    write_bytes_atomic(index, properties_page(out_dir, run).encode("utf-8"))
    return index
