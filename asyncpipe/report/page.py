"""HTML assembly: the document shell, figure embedding, and the three pages.

Figures travel as JSON in ``<script type="application/json">`` blocks that one small script at the end
of the page hands to ``Plotly.newPlot``; the JSON is never executed. Plotly's own ``to_json`` escapes
``<``, ``>`` and ``/`` in recent versions, but not in every version the project allows, so
:func:`script_safe_json` escapes ``<``, ``>``, ``&`` and the JavaScript line separators itself: no
string in a figure (a file name in a title, a row in a hover label) can close the script block.

Pages load Plotly from ``plotly.min.js`` next to them, and a Content-Security-Policy forbids every
other source: opening a report never touches the network. (``file:`` is listed beside ``'self'`` because
browsers disagree on whether ``'self'`` matches a page opened from disk.)
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

from asyncpipe.report import figures, headline, sections
from asyncpipe.report.format import esc
from asyncpipe.report.properties_page import properties_section
from asyncpipe.report.read import Artifacts, final_summaries, predictions_frame, step_metrics

PLOTLY_JS = "plotly.min.js"

_CSP = (
    "default-src 'none'; script-src 'self' file: 'unsafe-inline'; style-src 'self' file: 'unsafe-inline'; "
    "img-src 'self' file: data: blob:; font-src 'self' file: data:"
)

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-soft: #f6f8fa; --a: #2a9d8f; --b: #c44e52; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 60px; }
h1 { font-size: 1.6em; margin: 0 0 8px; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
h3 { margin: 22px 0 8px; } h3 small { font-weight: normal; color: var(--muted); }
nav a { margin-right: 14px; }
.labels { font-size: 1.1em; } .path { color: var(--muted); font-size: 0.9em; word-break: break-all; }
.tag { display: inline-block; min-width: 1.6em; text-align: center; border-radius: 4px; color: #fff; font-weight: 600; padding: 0 4px; }
.tag-A { background: var(--a); } .tag-B { background: var(--b); }
.badge { display: inline-block; border-radius: 10px; padding: 0 10px; background: var(--bg-soft); border: 1px solid var(--line); }
.status-complete { background: #dafbe1; } .status-running { background: #fff8c5; }
.status-interrupted, .status-failed { background: #ffebe9; }
.badge.selected { background: #dafbe1; border-color: #4ac26b; font-weight: 600; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; }
.note.problem { background: #ffebe9; border-color: #ff8182; }
.sub { color: var(--muted); font-size: 0.92em; margin: 2px 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.93em; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); }
table.numbers td { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.numbers { display: block; max-width: 100%; overflow-x: auto; }  /* wide tables scroll, not the page */
table.kv th { width: 180px; }
tr.selected td { background: #eefbf1; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 250px; }
.card.empty { color: var(--muted); }
.card-title { font-weight: 600; } .big { font-size: 2.1em; font-weight: 700; line-height: 1.2; }
.desc, .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.desc { background: var(--bg-soft); border-left: 4px solid var(--line); padding: 8px 12px; margin: 6px 0; }
.final-description .desc { border-left-color: #4ac26b; }
details.step { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; margin: 6px 0; }
details.step.selected { border: 2px solid #4ac26b; }
details.step summary { cursor: pointer; font-weight: 600; }
details.more summary { color: var(--muted); cursor: pointer; font-style: italic; }
table.rows td { white-space: nowrap; } table.rows td.rowtext { white-space: normal; max-width: 640px; font-size: 0.95em; }
.figure { width: 100%; min-height: 200px; border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
.noplotly { display: none; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""

# Plotly is absent when plotly.min.js was not copied along with the page: say so instead of failing.
_BOOT = """
(function () {
  var figs = document.querySelectorAll("[data-figure]");
  if (typeof Plotly === "undefined") {
    document.querySelectorAll(".noplotly").forEach(function (el) { el.style.display = "block"; });
    return;
  }
  figs.forEach(function (el) {
    var spec = JSON.parse(document.getElementById(el.getAttribute("data-figure")).textContent);
    Plotly.newPlot(el, spec.data, spec.layout, {responsive: true, displaylogo: false});
  });
})();
"""


def script_safe_json(fig: go.Figure) -> str:
    """The figure as JSON that can sit inside a <script> element whatever its strings hold."""
    text = pio.to_json(fig, validate=False, pretty=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)  # these only occur inside JSON strings, where \\uXXXX is valid
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def figure_html(fig: go.Figure, figure_id: str) -> str:
    return (
        f'<div class="figure" id="{figure_id}" data-figure="{figure_id}-json"></div>'
        f'<script type="application/json" id="{figure_id}-json">{script_safe_json(fig)}</script>'
    )


def document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style>"
        f'<script src="{PLOTLY_JS}"></script></head>\n<body><main>'
        f'<p class="note problem noplotly">{PLOTLY_JS} did not load: keep it in the same folder as this page '
        "to see the figures (the tables below do not need it).</p>"
        f"{body}</main><script>{_BOOT}</script></body></html>\n"
    )


def _title(art: Artifacts) -> str:
    return f"asyncpipe: A = {art.label('A').name} vs B = {art.label('B').name}"


def _nav() -> str:
    return (
        '<nav><a href="index.html">overview</a><a href="accuracy.html">accuracy over steps</a>'
        '<a href="confidence.html">confidence over steps</a></nav>'
    )


def _footer(art: Artifacts) -> str:
    return f"<footer>Rendered from the files in {esc(art.out_dir.name)}/ by asyncpipe.</footer>"


def index_page(art: Artifacts) -> str:
    steps = step_metrics(art)
    chosen = sections.selected_step(art)
    predictions = predictions_frame(art)
    name_a, name_b = art.label("A").name, art.label("B").name
    body = [
        sections.header_block(art),
        _nav(),
        headline.headline_block(art, steps),
        sections.summary_block(art),
    ]

    body.append('<section id="over-steps"><h2>Over the describe steps</h2>')
    if steps.height:
        body.append(figure_html(figures.accuracy_figure(steps, chosen), "fig-accuracy"))
        body.append(figure_html(figures.confidence_figure(steps, chosen), "fig-confidence"))
    else:
        body.append('<p class="note">No step metrics yet.</p>')
    body.append("</section>")

    body.append('<section id="final"><h2>Final classification</h2>')
    confusion = _confusion_source(art)
    if confusion is not None:
        summary, caption = confusion
        body.append(figure_html(figures.confusion_figure(summary, name_a, name_b, caption), "fig-confusion"))
        body.append(
            f'<p class="sub">A is the positive class: tp = {summary.get("tp")}, fn = {summary.get("fn")}, '
            f"fp = {summary.get('fp')}, tn = {summary.get('tn')}"
            f" ({summary.get('n_unscored') or 0} unscored rows not counted).</p>"
        )
    if predictions is not None:
        body.append('<div class="grid">')
        body.append(figure_html(figures.histogram_figure(predictions, name_a, name_b), "fig-histogram"))
        body.append(figure_html(figures.reliability_figure(predictions), "fig-reliability"))
        body.append("</div>")
        body.append(
            '<p class="sub">Raw (uncorrected) scores are hidden in both figures: click their legend entries to '
            "show them. A calibrated classifier follows the diagonal.</p>"
        )
    if confusion is None and predictions is None:
        body.append('<p class="note">Not done yet.</p>')
    body.append("</section>")

    body.append(properties_section(art.out_dir))
    body.append(sections.steps_block(art, steps))
    body.append(sections.rows_block(art, predictions))
    body.append(_footer(art))
    return document(_title(art), "".join(body))


def single_figure_page(art: Artifacts, which: str) -> str:
    """accuracy.html or confidence.html: the header, one figure over the steps, a link back."""
    steps = step_metrics(art)
    chosen = sections.selected_step(art)
    build = figures.accuracy_figure if which == "accuracy" else figures.confidence_figure
    body = [sections.header_block(art), _nav()]
    if steps.height:
        body.append(figure_html(build(steps, chosen), f"fig-{which}"))
    else:
        body.append('<p class="note">No step metrics yet.</p>')
    body.append(_footer(art))
    return document(f"{which} — {_title(art)}", "".join(body))


def _confusion_source(art: Artifacts) -> tuple[dict, str] | None:
    """The final "all" summary, bias-corrected when there is one."""
    finals = final_summaries(art)
    for correction, words in (("corrected", "bias-corrected"), ("raw", "raw"), ("final", "final")):
        summary = finals.get(("all", correction))
        if summary is not None and summary.get("n"):
            return summary, f"Confusion matrix, all rows ({words} scores)"
    return None
