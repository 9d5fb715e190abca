"""The summary page of ``asyncpipe pairs``: one accuracy matrix per question and a table of every pair.

``render_pairs_summary(out_dir)`` reads ``pairs.json`` (:mod:`asyncpipe.records`, written by ``pairs``) and
writes ``index.html`` beside it. The matrix is an HTML table with coloured cells rather than a Plotly
heatmap, because every cell links to its pair's own report and Plotly heatmap cells cannot hold links;
so the page needs no JavaScript at all, and a Content-Security-Policy forbids every outside source.
Everything that came from the run — file names, paths, descriptions, error messages — is escaped: a
model's description may contain ``<script>``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from asyncpipe.atomic import write_bytes_atomic
from asyncpipe.errors import UserError
from asyncpipe.records import PairRecord, PairsRecord, RecordError, Summary, read_pairs
from asyncpipe.report.format import clipped, esc, interval, is_number, num, p_value, pct

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 60px; }
h1 { font-size: 1.6em; margin: 0 0 8px; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
.sub { color: var(--muted); font-size: 0.92em; margin: 2px 0; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; }
.note.problem { background: #ffebe9; border-color: #ff8182; }
.badge { display: inline-block; border-radius: 10px; padding: 0 10px; background: var(--bg-soft); border: 1px solid var(--line); }
.status-complete { background: #dafbe1; } .status-running, .status-pending { background: #fff8c5; }
.status-failed, .status-interrupted { background: #ffebe9; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.93em; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); }
table.matrix td { text-align: center; vertical-align: middle; min-width: 7.5em; padding: 0; }
table.matrix th.col { max-width: 10em; overflow-wrap: anywhere; font-size: 0.9em; vertical-align: bottom; }
table.matrix th.row { max-width: 16em; overflow-wrap: anywhere; }
table.matrix td a, table.matrix td span.cell { display: block; padding: 6px 8px; color: inherit; text-decoration: none; }
table.matrix td a:hover { outline: 2px solid #0969da; }
.acc { font-size: 1.15em; font-weight: 700; } .ci, .split { font-size: 0.8em; }
td.diag { background: #f6f8fa; color: var(--muted); }
td.empty { background: #fff; }
div.scroll { overflow-x: auto; }
table.pairs td.num { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.pairs td.name { min-width: 9em; max-width: 16em; overflow-wrap: anywhere; }
table.pairs td.state { white-space: nowrap; }
table.pairs td.desc { min-width: 18em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
details.more summary { color: var(--muted); cursor: pointer; font-style: italic; }
.path { color: var(--muted); font-size: 0.85em; word-break: break-all; }
.reason { color: #a40e26; }
.legend td { width: 3.2em; text-align: center; font-size: 0.8em; padding: 2px; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""

_GREEN = (42, 157, 143)
_RED = (196, 78, 82)


def render_pairs_summary(out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` from ``out_dir/pairs.json``; returns its path."""
    out_dir = Path(out_dir)
    try:
        data = read_pairs(out_dir)
    except RecordError as exc:
        raise UserError(f"{out_dir}: {exc}") from None
    if data is None:
        raise UserError(f"{out_dir}: not an asyncpipe pairs folder (no pairs.json)")
    index = out_dir / "index.html"
    write_bytes_atomic(index, pairs_page(data).encode("utf-8"))
    return index


def cell_colours(accuracy: float | None) -> tuple[str, str]:
    """(background, text) for a held-out pair accuracy: white at chance, green towards 1, red towards 0."""
    if accuracy is None:
        return "#f6f8fa", "#59636e"
    strength = min(1.0, abs(accuracy - 0.5) / 0.5)
    target = _GREEN if accuracy >= 0.5 else _RED
    rgb = tuple(round(255 + (t - 255) * strength) for t in target)
    return "#{:02x}{:02x}{:02x}".format(*rgb), "#ffffff" if strength > 0.6 else "#1f2328"


def _raw(pair: PairRecord) -> Summary | None:
    held = (pair.held_out or {}).get("raw")
    return held.scores if held else None


def _corrected(pair: PairRecord) -> Summary | None:
    held = (pair.held_out or {}).get("corrected")
    return held.scores if held else None


def _href(pair: PairRecord) -> str | None:
    return esc(quote(pair.report)) if pair.report else None


def _split(pair: PairRecord) -> str:
    """Which split a pair's figures come from ("test", or "validation" when it kept no test rows)."""
    held = (pair.held_out or {}).get("raw")
    return (held.split if held else "") or "held-out"


def _significance(pair: PairRecord) -> str:
    if not is_number(pair.pair_p_value_holm):
        return ""
    mark = "significant" if pair.significant else "not significant"
    return f"Holm-adjusted {p_value(pair.pair_p_value_holm)}, {mark}"


def _tooltip(pair: PairRecord) -> str:
    raw = _raw(pair)
    head = f"A = {pair.a.name} vs B = {pair.b.name}"
    if pair.status == "failed":
        return f"{head}: failed: {pair.reason or ''}"
    if not raw:
        return f"{head}: {pair.status}" + (" (no held-out rows)" if pair.status == "complete" else "")
    return (
        f"{head}, {_split(pair)} split: pair accuracy {pct(raw.pair_accuracy)} "
        f"{interval(raw.pair_ci_low, raw.pair_ci_high)} over {raw.n_pairs} pairs, "
        f"sign test {p_value(raw.pair_p_value)} ({_significance(pair)}); accuracy "
        f"{pct(raw.accuracy)} {interval(raw.accuracy_low, raw.accuracy_high)}, "
        f"coverage {pct(raw.coverage)}, AUC {num(raw.auc, 2)}, n = {raw.n}"
    )


def _cell(pair: PairRecord | None, *, diagonal: bool = False) -> str:
    if diagonal:
        return '<td class="diag">—</td>'
    if pair is None:
        return '<td class="empty"></td>'
    raw = _raw(pair)
    status = pair.status
    if status == "failed":
        background, colour, inner = "#ffebe9", "#a40e26", '<span class="acc">failed</span>'
    elif raw is not None and raw.pair_accuracy is not None:
        background, colour = cell_colours(raw.pair_accuracy)
        star = (
            '<span class="sig" title="significant after Holm\'s correction">*</span>'
            if pair.significant
            else ""
        )
        inner = (
            f'<span class="acc">{pct(raw.pair_accuracy, 0)}{star}</span><br>'
            f'<span class="ci">{interval(raw.pair_ci_low, raw.pair_ci_high)}</span><br>'
            f'<span class="split">{esc(_split(pair))} split · {num(raw.n_pairs)} pairs</span>'
        )
    else:
        background, colour = cell_colours(None)
        inner = f'<span class="ci">{esc("no held-out rows" if status == "complete" else status)}</span>'
    href = _href(pair)
    body = f'<a href="{href}">{inner}</a>' if href else f'<span class="cell">{inner}</span>'
    return f'<td style="background:{background};color:{colour}" title="{esc(_tooltip(pair))}">{body}</td>'


def matrix_table(pairs: list[PairRecord], *, against: bool) -> str:
    """Rows are A, columns B. For all pairs the matrix is symmetric (a pair shows in both triangles);
    with a base, rows are the other files and the column is the base."""
    if against:
        rows = sorted({p.a.name for p in pairs})
        cols = sorted({p.b.name for p in pairs})
        lookup = {(p.a.name, p.b.name): p for p in pairs}
    else:
        rows = cols = sorted({p.a.name for p in pairs} | {p.b.name for p in pairs})
        lookup = {}
        for p in pairs:
            lookup[(p.a.name, p.b.name)] = lookup[(p.b.name, p.a.name)] = p
    head = "".join(f'<th class="col" scope="col">{esc(c)}</th>' for c in cols)
    corner = "A ↓ &nbsp; B →" if against else ""
    lines = [
        f'<div class="scroll"><table class="matrix"><thead><tr><th>{corner}</th>{head}</tr></thead><tbody>'
    ]
    for r in rows:
        cells = "".join(_cell(lookup.get((r, c)), diagonal=not against and r == c) for c in cols)
        lines.append(f'<tr><th class="row" scope="row">{esc(r)}</th>{cells}</tr>')
    lines.append("</tbody></table></div>")
    return "".join(lines)


def legend() -> str:
    steps = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    cells = "".join(
        '<td style="background:{};color:{}">{}</td>'.format(*cell_colours(v), pct(v, 0)) for v in steps
    )
    return f'<table class="legend"><tr>{cells}</tr></table>'


def _with_interval(
    summary: Summary | None, key: str = "accuracy", low: str = "accuracy_low", high: str = "accuracy_high"
) -> str:
    if summary is None or getattr(summary, key) is None:
        return "–"
    return f"{pct(getattr(summary, key))} {interval(getattr(summary, low), getattr(summary, high))}"


def _adjusted(pair: PairRecord) -> str:
    if not is_number(pair.pair_p_value_holm):
        return "–"
    return f"{p_value(pair.pair_p_value_holm)}{' <b>*</b>' if pair.significant else ''}"


def pairs_table(pairs: list[PairRecord]) -> str:
    head = (
        "<tr><th>A</th><th>B</th><th>status</th><th>split</th><th>pairs</th><th>pair accuracy (95% CI)</th>"
        "<th>sign-test p</th><th>Holm-adjusted p</th><th>rows</th><th>coverage</th><th>accuracy (95% CI)</th>"
        "<th>p vs chance</th><th>AUC</th><th>bias-corrected accuracy</th><th>selected description</th></tr>"
    )
    lines = [f'<div class="scroll"><table class="pairs"><thead>{head}</thead><tbody>']
    for p in pairs:
        raw, corrected = _raw(p), _corrected(p)
        earlier = '<div class="sub">from an earlier run</div>' if p.skipped else ""
        href = _href(p)
        link = f'<div><a href="{href}">report</a></div>' if href else ""
        if p.status == "failed":
            detail = f'<span class="reason">{esc(p.reason)}</span>'
        elif p.description:
            step = p.selected_step
            detail = (f'<span class="sub">step {esc(step)}:</span> ' if step else "") + clipped(
                p.description, 300
            )
        else:
            detail = ""
        lines.append(
            "<tr>"
            f'<td class="name">{esc(p.a.name)}<div class="path">{esc(p.a.path)}</div></td>'
            f'<td class="name">{esc(p.b.name)}<div class="path">{esc(p.b.path)}</div></td>'
            f'<td class="state"><span class="badge status-{esc(p.status)}">{esc(p.status)}</span>{earlier}{link}</td>'
            f'<td class="state">{esc(_split(p) if raw else "–")}</td>'
            f'<td class="num">{num(raw.n_pairs if raw else None)}</td>'
            f'<td class="num">{_with_interval(raw, "pair_accuracy", "pair_ci_low", "pair_ci_high")}</td>'
            f'<td class="num">{p_value(raw.pair_p_value if raw else None)}</td>'
            f'<td class="num">{_adjusted(p)}</td>'
            f'<td class="num">{num(raw.n if raw else None)}</td>'
            f'<td class="num">{pct(raw.coverage if raw else None)}</td>'
            f'<td class="num">{_with_interval(raw)}</td>'
            f'<td class="num">{p_value(raw.p_value if raw else None)}</td>'
            f'<td class="num">{num(raw.auc if raw else None, 3)}</td>'
            f'<td class="num">{_with_interval(corrected)}</td>'
            f'<td class="desc">{detail}</td>'
            "</tr>"
        )
    lines.append("</tbody></table></div>")
    return "".join(lines)


def _header(data: PairsRecord) -> str:
    pairs = data.pairs
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.status] = counts.get(p.status, 0) + 1
    status = data.status
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    models = data.models
    model_text = (
        models.get("classify")
        if models.get("classify") == models.get("describe")
        else (f"{models.get('describe')} describes, {models.get('classify')} classifies")
    )
    against = data.against
    mode = (
        f"every file against the base <b>{esc(against)}</b> (A = the other file, B = the base)"
        if against
        else ("every pair of files (A = the first name in alphabetical order)")
    )
    parts = [
        "<h1>asyncpipe pairs</h1>",
        f'<p><span class="badge status-{esc(status)}">{esc(status)}</span> {len(pairs)} pairs: {esc(tally)} · '
        f"model: {esc(model_text)} · updated {esc(data.updated_at)}</p>",
        f'<p class="sub">Compared: {mode}'
        + (", within each question." if data.by_question else ".")
        + "</p>",
        '<p class="sub">Each cell is the <b>pair accuracy</b> of the pair\'s selected description on held-out rows: '
        "among pairs (row i of A, row i of B) with both rows scored, the share in which the A row gets the higher "
        "p(A), a tie counting one half, with its Wilson 95% interval. It needs no threshold, so the model's lean "
        "towards one label does not move it. Each cell names its split: the <b>test</b> split (rows never shown to "
        "the describer nor used to choose or calibrate it) or, for a pair that kept no test rows, the "
        "<b>validation</b> split, which chose the step and leans optimistic. 50% is chance; the further from it, "
        "the better the description separates the two files. Click a cell for that pair's report.</p>",
        _correction_note(data),
        legend(),
    ]
    if status == "running":
        parts.append(
            '<p class="note">Still running: this page is rewritten as each pair finishes; reload it.</p>'
        )
    for warning in data.warnings:
        parts.append(f'<p class="note">{esc(warning)}</p>')
    failed = counts.get("failed", 0)
    if failed:
        parts.append(f'<p class="note problem">{failed} pair(s) failed; their reasons are in the table.</p>')
    return "".join(parts)


def _correction_note(data: PairsRecord) -> str:
    """Which multiple-testing correction was applied, over how many tests."""
    correction = data.multiple_testing or {}
    tests = correction.get("tests")
    if not isinstance(tests, int) or tests == 0:
        return '<p class="sub">No pair has a held-out sign test yet, so nothing is marked significant.</p>'
    alpha = correction.get("alpha", 0.05)
    return (
        f'<p class="sub"><b>Multiple testing:</b> p-values are Holm-adjusted over the {tests} one-sided pair '
        f"sign test(s) of this run (one per pair with held-out pairs), controlling the chance of any false "
        f"finding at {alpha:g}. A * marks significance by the <b>adjusted</b> p &lt; {alpha:g} only: "
        f"{correction.get('significant', 0)} of {tests}. An unadjusted p below {alpha:g} among many pairs is "
        "expected by chance alone.</p>"
    )


def pairs_page(data: PairsRecord) -> str:
    pairs = data.pairs
    groups: dict[str | None, list[PairRecord]] = {}
    for p in pairs:
        groups.setdefault(p.question, []).append(p)
    body = [_header(data)]
    for question in sorted(groups, key=lambda q: q or ""):
        members = groups[question]
        title = f"Question: {question}" if question is not None else "All files"
        body.append(f"<section><h2>{esc(title)}</h2>")
        body.append(matrix_table(members, against=bool(data.against)))
        body.append(pairs_table(members))
        body.append("</section>")
    body.append(
        "<footer>Rendered from pairs.json by asyncpipe. Each pair's folder holds its own report, "
        "classify.yaml and predictions.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>asyncpipe pairs ({len(pairs)})</title><style>{_CSS}</style></head>\n"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
