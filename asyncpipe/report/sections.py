"""The page's text blocks, each a function from loaded artifacts to an HTML fragment.

Every value that came from the run passes through :func:`~asyncpipe.report.format.esc` (or
:func:`~asyncpipe.report.format.clipped` for row text) here, at the point it enters HTML.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from asyncpipe.report.format import clipped, cost, duration, esc, interval, num, pct, prob
from asyncpipe.report.read import Artifacts, last_step
from asyncpipe.report.tables import confidently_wrong, most_typical


def selected_step(art: Artifacts) -> int | None:
    if art.run is not None and art.run.selected_step is not None:
        return art.run.selected_step
    chosen = (art.classify or {}).get("selected")
    if isinstance(chosen, dict):
        chosen = chosen.get("step")
    return chosen if isinstance(chosen, int) and not isinstance(chosen, bool) else None


def progress_note(art: Artifacts) -> str | None:
    """One sentence on what is missing, or None for a finished run with its predictions."""
    run, step = art.run, last_step(art)
    done = art.predictions is not None
    if run is None:
        return "No run.json here yet: the run has not started, or this is not an asyncpipe output directory."
    at = f" at step {step}" if step else " before the first describe step finished"
    status = run.status
    if status == "complete":
        if done:
            return None
        return "Run marked complete, but predictions.parquet is missing: final classification results unavailable."
    if status == "running":
        head = f"Run in progress{at}"
    elif status == "interrupted":
        head = f"Run interrupted{at}"
    elif status == "failed":
        head = f"Run failed{at}"
    else:
        head = f"Run status “{status}”{at}"
    return head + (" — final classification done." if done else " — final classification not done.")


def header_block(art: Artifacts) -> str:
    parts = ['<header><h1>asyncpipe report</h1><p class="labels">']
    for key in ("A", "B"):
        info = art.label(key)
        path = f" <span class=path>({esc(info.path)})</span>" if info.path else ""
        parts.append(
            f'<span class="tag tag-{key}">{key}</span> = <strong>{esc(info.name)}</strong>{path}<br>'
        )
    parts.append("</p>")
    status = art.run.status if art.run is not None else "no run.json"
    parts.append(
        f'<p class="status">Status: <span class="badge status-{esc(status)}">{esc(status)}</span></p>'
    )
    if art.run is not None:
        parts.append(f'<p class="sub runline">{_run_line(art)}</p>')
    note = progress_note(art)
    if note:
        parts.append(f'<p class="note progress">{esc(note)}</p>')
    if art.run is not None and art.run.message:
        parts.append(f'<p class="note">Message: {esc(art.run.message)}</p>')
    for problem in art.problems:
        parts.append(f'<p class="note problem">{esc(problem)}</p>')
    parts.append("</header>")
    return "".join(parts)


def _run_line(art: Artifacts) -> str:
    """The run in one line for the header; the Run section has the full table."""
    assert art.run is not None
    run, stats = art.run, art.run.stats
    describe, classify = run.models.get("describe"), run.models.get("classify")
    models = (
        esc(describe) if describe == classify else f"{esc(describe)} (describe), {esc(classify)} (classify)"
    )
    tokens = sum(
        v for v in (stats.get("prompt_tokens"), stats.get("completion_tokens")) if isinstance(v, int)
    )
    return " · ".join(
        [
            models or "models –",
            f"{num(art.label('A').rows)} + {num(art.label('B').rows)} rows",
            f"{num(stats.get('requests'))} requests sent, {num(stats.get('cache_hits'))} answers from the cache",
            f"{num(tokens)} tokens",
            f"cost {cost(stats.get('estimated_cost_usd'))}",
            f"wall time {duration(run.wall_seconds)}",
        ]
        + (
            [f"p(A) sampled {esc(mode.split(':', 1)[1])}× per row: coarse"]
            if isinstance(mode := run.config.get("classify_mode"), str) and mode.startswith("sample:")
            else []
        )
    )


def classify_mode_text(mode: Any, off_label: Any = None) -> str:
    """How the classifier's probabilities were obtained, in words (run.json's ``classify_mode``)."""
    if isinstance(mode, str) and mode.startswith("sample:"):
        n = mode.split(":", 1)[1]
        values = f"{int(n) + 1} possible values" if n.isdigit() else "few possible values"
        extra = f"; {num(off_label)} sampled answers were neither label" if off_label else ""
        return esc(
            f"sampling: the label asked {n} times per row at temperature 1, p(A) = (k + ½) / (m + 1) for k 'A' "
            f"among m label answers. Sampled probabilities are coarse ({values}), so "
            f"log loss, calibration and the ROC curve are coarse too{extra}"
        )
    return "label logprobs (one token)"


def summary_block(art: Artifacts) -> str:
    run = art.run
    if run is None:
        return ""
    stats = run.stats
    rows: list[tuple[str, str]] = [
        ("describe model", esc(run.models.get("describe", "–"))),
        ("classify model", esc(run.models.get("classify", "–"))),
        ("rows", " · ".join(f"{k}: {num(art.label(k).rows)}" for k in ("A", "B"))),
        ("requests", f"{num(stats.get('requests'))} sent ({num(stats.get('retries'))} retries, "
                     f"{num(stats.get('rate_limited'))} rate-limited); {num(stats.get('cache_hits'))} answers from the cache"),
        ("p(A) from", classify_mode_text(run.config.get("classify_mode"), stats.get("off_label_samples"))),
        ("tokens", f"{num(stats.get('prompt_tokens'))} prompt ({num(stats.get('cached_tokens'))} cached) · "
                   f"{num(stats.get('completion_tokens'))} completion"),
        ("provider prompt cache", " · ".join(
            f"{role} {pct(_dict_get(stats, 'by_role', role, 'cached_share'))}" for role in ("describe", "classify")
        ) + " of prompt tokens (OpenAI caches a prompt prefix of 1,024 tokens or more)"),
        ("estimated cost", cost(stats.get("estimated_cost_usd"))),
        ("unscored rows", num(stats.get("unscored"))),
        ("wall time", duration(run.wall_seconds)),
        ("started / finished", f"{esc(run.started_at or '–')} / {esc(run.finished_at or '–')}"),
        ("selected step", esc(selected_step(art) if selected_step(art) is not None else "–")
         + (f" — {esc(run.selection_reason)}" if run.selection_reason else "")),
        ("bias offset", num(run.bias_offset)),
        ("asyncpipe version", esc(run.version or "–")),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section id="summary"><h2>Run</h2><table class="kv">{body}</table></section>'


def _dict_get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def description_block(art: Artifacts) -> str:
    """The description the final classifier used, else the selected step's, else the latest one."""
    chosen = selected_step(art)
    by_step = {s.step: s for s in art.steps}
    text = (art.classify or {}).get("description")
    if isinstance(text, str) and text.strip():
        title = "How A differs from B — the description used for the final classification"
    elif chosen in by_step:
        text, title = (
            by_step[chosen].description,
            f"How A differs from B — step {chosen}'s description (selected)",
        )
    elif art.steps:
        text = art.steps[-1].description
        title = f"Latest description (step {art.steps[-1].step}, not yet selected)"
    else:
        return ""
    return f'<div class="final-description"><h3>{esc(title)}</h3><div class="desc">{esc(text)}</div></div>'


def steps_block(art: Artifacts, steps: pl.DataFrame) -> str:
    chosen = selected_step(art)
    records = {s.step: s for s in art.steps}
    numbers: dict[tuple[int, str], dict[str, Any]] = {
        (row["step"], row["split"]): row for row in steps.iter_rows(named=True)
    }
    all_steps = sorted(set(records) | {k[0] for k in numbers})
    if not all_steps:
        return '<section id="steps"><h2>Describe steps</h2><p class="note">No describe step finished yet.</p></section>'
    open_step = chosen if chosen in records else all_steps[-1]
    head = (
        "<tr><th>step</th><th>epoch</th><th>pairs shown</th><th>train acc.</th><th>train coverage</th>"
        "<th>validation acc.</th><th>95% CI</th><th>val. coverage</th><th>val. pair acc.</th><th>val. balanced</th>"
        "<th>val. mean conf.</th><th>val. log loss</th><th></th></tr>"
    )
    rows, details = [], []
    for step in all_steps:
        record = records.get(step)
        train, val = numbers.get((step, "train"), {}), numbers.get((step, "validation"), {})
        partial = numbers.get((step, "validation_partial"))
        if partial is not None and not val:  # lost its race: figures over the race rows only
            val = partial
        epoch = record.epoch if record else train.get("epoch")
        mark = '<span class="badge selected">★ selected</span>' if step == chosen else ""
        cls = ' class="selected"' if step == chosen else ""
        cells = [
            f'<a href="#step-{step}">{step}</a>', num(epoch), num(len(record.pairs)) if record else "–",
            pct(train.get("accuracy")), pct(train.get("coverage")),
            pct(val.get("accuracy")) + (f" <small>(first {num(val.get('n'))} rows only: lost its race)</small>"
                                        if partial is not None and val is partial else ""),
            interval(val.get("accuracy_low"), val.get("accuracy_high")), pct(val.get("coverage")),
            pct(val.get("pair_accuracy")), pct(val.get("balanced_accuracy")),
            pct(val.get("mean_confidence")), num(val.get("log_loss")), mark,
        ]  # fmt: skip
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        if record is None:
            continue
        summary = (
            f"Step {step} (epoch {num(record.epoch)}) — train {pct(train.get('accuracy'))}, "
            f"validation {pct(val.get('accuracy'))}"
        )
        race = record.race
        if race is not None:
            summary += (
                f" — race against step {race.against} on {num(race.rows)} held-out rows: log loss "
                f"{race.mean_difference:+.4f} per row (95% lower bound {race.lower_bound:+.4f}), "
                + ("scored on every held-out row" if race.go_on else "lost its race, not scored further")
            )
        opened = " open" if step == open_step else ""
        dcls = "step selected" if step == chosen else "step"
        details.append(
            f'<details id="step-{step}" class="{dcls}"{opened}><summary>{esc(summary)} {mark}</summary>'
            f'<div class="desc">{esc(record.description)}</div>'
            f'<p class="sub">pairs shown: {esc(", ".join(map(str, record.pairs)) or "none")}</p></details>'
        )
    reason = ""
    if chosen is not None and art.run is not None and art.run.selection_reason:
        reason = f'<p class="sub">Step {chosen} was selected: {esc(art.run.selection_reason)}</p>'
    loop = art.run.loop if art.run is not None else {}
    if loop.get("reason"):
        lost = loop.get("steps_lost_race") or []
        raced = (
            f" {len(lost)} of {num(loop.get('steps_raced'))} raced descriptions lost their race on "
            f"{num(loop.get('race_pairs'))} of {num(loop.get('validation_pairs'))} held-out pairs and were "
            "not scored further (their validation figures cover those rows only)."
            if loop.get("steps_raced")
            else ""
        )
        reason += (
            f'<p class="sub">The describe loop ended after step {num(loop.get("after_step"))} of '
            f"{num(loop.get('steps_planned'))}: {esc(loop['reason'])}.{esc(raced)}</p>"
        )
    return (
        f'<section id="steps"><h2>Describe steps</h2>{reason}<table class="numbers">{head}{"".join(rows)}</table>'
        f"<h3>Descriptions</h3>{''.join(details)}</section>"
    )


def _row_table(frame: pl.DataFrame, art: Artifacts, *, wrong: bool) -> str:
    if frame.height == 0:
        return '<p class="sub">none</p>'
    head = "<tr><th>from</th><th>row</th><th>split</th>"
    head += "<th>predicted</th><th>confidence in the wrong label</th>" if wrong else "<th>p(own label)</th>"
    head += "<th>raw p(A)</th><th>text</th></tr>"
    body = []
    for r in frame.iter_rows(named=True):
        cells = [
            f'<span class="tag tag-{esc(r["label"])}">{esc(r["label"])}</span> {esc(art.label(r["label"]).name)}'
        ]
        cells += [num(r["row"]), esc(r["split"])]
        if wrong:
            cells.append(f'<span class="tag tag-{esc(r["predicted"])}">{esc(r["predicted"])}</span>')
        cells += [prob(r["confidence"]), prob(r["p_a"])]
        body.append(
            "<tr>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + f'<td class="rowtext">{clipped(r["text"])}</td></tr>'
        )
    return f'<table class="rows">{head}{"".join(body)}</table>'


def rows_block(art: Artifacts, predictions: pl.DataFrame | None) -> str:
    if predictions is None:
        return ""
    out = ['<section id="rows"><h2>Rows</h2>']
    out.append("<h3>Most confidently wrong (top 10)</h3>")
    out.append(_row_table(confidently_wrong(predictions, 10), art, wrong=True))
    for key in ("A", "B"):
        out.append(f"<h3>Most typical rows of {key} = {esc(art.label(key).name)} (top 5)</h3>")
        out.append(_row_table(most_typical(predictions, key, 5), art, wrong=False))
    errors = predictions.filter(pl.col("p").is_null())
    if errors.height:
        reasons = (
            errors.group_by(pl.col("error").fill_null("unknown"))
            .agg(pl.len().alias("rows"))
            .sort(["rows", "error"], descending=[True, False])
            .head(5)
        )
        items = "".join(
            f"<li>{num(r['rows'])} × {esc(r['error'])}</li>" for r in reasons.iter_rows(named=True)
        )
        out.append(f"<h3>Unscored rows: {num(errors.height)}</h3><ul>{items}</ul>")
    out.append("</section>")
    return "".join(out)
