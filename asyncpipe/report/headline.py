"""The Result section: the held-out figures of a run, split by split, pair accuracy first.

Every card and table row names the split its figures come from; the test split (used for nothing else)
comes first, and validation figures say that they chose the step. Values from the run are escaped here.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from asyncpipe.metrics import unscored_reasons
from asyncpipe.report.format import esc, interval, num, p_value, pct
from asyncpipe.report.read import Artifacts, final_summaries
from asyncpipe.report.sections import description_block

_CORRECTION_ORDER = ("raw", "corrected", "final")
_CORRECTION_TITLE = {"raw": "raw", "corrected": "bias-corrected", "final": "final"}
_SPLIT_ORDER = ("test", "validation", "rest", "train", "all")


_TEST_NAME = {"binomial": "one-sided binomial", "mann-whitney": "one-sided Mann–Whitney on the ranking"}


def _p_with_test(summary: dict[str, Any]) -> str:
    test = _TEST_NAME.get(summary.get("p_value_test") or "")
    return f"{p_value(summary.get('p_value'))} ({test})" if test else p_value(summary.get("p_value"))


def _empty_card(title: str, why: str) -> str:
    return (
        f'<div class="card empty"><div class="card-title">{esc(title)}</div><div class="big">–</div>'
        f'<div class="sub">{esc(why)}</div></div>'
    )


def _pair_card(title: str, summary: dict[str, Any] | None) -> str:
    """Pair accuracy: the share of pairs whose A row gets the higher p(A) (ties ½)."""
    if summary is None or not summary.get("n_pairs"):
        return _empty_card(title, "no pair with both rows scored")
    counts = (
        f"{num(summary.get('pair_wins'))} won · {num(summary.get('pair_losses'))} lost · "
        f"{num(summary.get('pair_ties'))} tied"
    )
    return (
        f'<div class="card pair"><div class="card-title">{esc(title)}</div>'
        f'<div class="big">{pct(summary.get("pair_accuracy"))}</div>'
        f'<div class="sub">95% CI {interval(summary.get("pair_ci_low"), summary.get("pair_ci_high"))}'
        f" · sign test {p_value(summary.get('pair_p_value'))} (one-sided, ties left out)</div>"
        f'<div class="sub">{num(summary.get("n_pairs"))} pairs: {counts}</div></div>'
    )


def _summary_card(title: str, summary: dict[str, Any] | None) -> str:
    if summary is None or not summary.get("n"):
        return _empty_card(title, "no rows")
    unscored = f", {num(summary.get('n_unscored'))} unscored" if summary.get("n_unscored") else ""
    return (
        f'<div class="card"><div class="card-title">{esc(title)}</div>'
        f'<div class="big">{pct(summary.get("accuracy"))}</div>'
        f'<div class="sub">95% CI {interval(summary.get("accuracy_low"), summary.get("accuracy_high"))}'
        f" · {_p_with_test(summary)}</div>"
        f'<div class="sub">coverage {pct(summary.get("coverage"))} · balanced {pct(summary.get("balanced_accuracy"))}'
        f" · n = {num(summary.get('n'))}{unscored}</div></div>"
    )


def _summary_row(split: str, correction: str, s: dict[str, Any]) -> str:
    cells = [
        esc(split), esc(_CORRECTION_TITLE.get(correction, correction)),
        num(s.get("n_pairs")), pct(s.get("pair_accuracy")), interval(s.get("pair_ci_low"), s.get("pair_ci_high")),
        p_value(s.get("pair_p_value")),
        num(s.get("n")), pct(s.get("coverage")),
        pct(s.get("accuracy")), interval(s.get("accuracy_low"), s.get("accuracy_high")),
        pct(s.get("balanced_accuracy")), _p_with_test(s), num(s.get("auc")), pct(s.get("mean_confidence")),
        num(s.get("log_loss")), num(s.get("brier")), num(s.get("ece_p_a")),
    ]  # fmt: skip
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_SUMMARY_HEAD = (
    "<tr><th>split</th><th>scores</th><th>pairs</th><th>pair acc.</th><th>95% CI</th><th>sign-test p</th>"
    "<th>rows</th><th>coverage</th><th>accuracy</th><th>95% CI</th><th>balanced</th><th>p vs chance</th>"
    "<th>AUC</th><th>mean conf.</th><th>log loss</th><th>Brier</th>"
    "<th title='expected calibration error of p(A) over 10 equal-width bins (not the top-label ECE)'>"
    "ECE of p(A)</th></tr>"
)


def _held_out_cards(split: str, corrections: list[str], finals: dict, name: str | None = None) -> str:
    """The pair-accuracy card (the same for raw and corrected scores: the correction keeps every
    pair's order), then one accuracy card per correction; every title names the split."""
    summaries = [finals.get((split, c)) for c in corrections]
    pairs = next((s for s in summaries if s and s.get("n_pairs")), summaries[0] if summaries else None)
    name = name or f"{split} split"
    cards = [_pair_card(f"{name}: pair accuracy", pairs)]
    cards += [
        _summary_card(f"{name}: accuracy, {_CORRECTION_TITLE[c]}", s)
        for c, s in zip(corrections, summaries, strict=True)
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _has_rows(finals: dict, split: str, corrections: list[str]) -> bool:
    return any((finals.get((split, c)) or {}).get("n") for c in corrections)


def _unscored_note(art: Artifacts) -> str:
    """Why rows of the final pass went unscored (left out of every rate), the most frequent reasons."""
    predictions = art.predictions
    if predictions is None or not {"p_a", "error"} <= set(predictions.columns):
        return ""
    reasons = unscored_reasons(predictions)
    if not reasons:
        return ""
    unscored = predictions["p_a"].null_count()
    items = "".join(f"<li>{num(rows)} row(s): {esc(reason)}</li>" for reason, rows in reasons)
    return (
        f'<div class="note"><b>{num(unscored)} of {num(predictions.height)} rows unscored</b> and left out of '
        f"every rate above; the most frequent reasons:<ul>{items}</ul></div>"
    )


def headline_block(art: Artifacts, steps: pl.DataFrame) -> str:
    finals = final_summaries(art)
    out = ['<section id="headline"><h2>Result</h2>']
    out.append(description_block(art))
    if not finals:
        out.append('<p class="note">Final classification not done yet: no held-out result.</p>')
        latest = steps.filter(pl.col("split") == "validation").sort("step").tail(1)
        if latest.height:
            s = latest.row(0, named=True)
            out.append(
                f"<p>Latest describe step {s['step']}, validation split: pair accuracy {pct(s.get('pair_accuracy'))} "
                f"{interval(s.get('pair_ci_low'), s.get('pair_ci_high'))} over {num(s.get('n_pairs'))} pairs; accuracy "
                f"{pct(s['accuracy'])} {interval(s['accuracy_low'], s['accuracy_high'])}, {p_value(s['p_value'])} "
                f"(raw scores, n = {num(s['n'])}, coverage {pct(s.get('coverage'))}).</p>"
            )
        out.append("</section>")
        return "".join(out)
    corrections = [c for c in _CORRECTION_ORDER if any(k[1] == c for k in finals)]
    has_test = _has_rows(finals, "test", corrections)
    has_validation = _has_rows(finals, "validation", corrections)
    fitted_on = (art.classify or {}).get("bias_offset_fitted_on") or (
        "validation" if has_validation else "train"
    )
    if has_test:
        out.append(
            "<h3>Test split <small>— rows used for nothing but these figures: never shown to the describer, "
            "not used to choose the description or to fit the bias offset. Publish the pair accuracy.</small></h3>"
        )
        out.append(_held_out_cards("test", corrections, finals))
    if has_validation:
        chose = "chose the step" + (" and fitted the bias offset" if fitted_on == "validation" else "")
        note = f"never shown to the describer, but these rows {chose}, so its figures lean optimistic"
        if not has_test:
            note += "; there is no test split, so no figure here is untouched (set --test-fraction for one)"
        out.append(f"<h3>Validation split <small>— {esc(note)}</small></h3>")
        out.append(_held_out_cards("validation", corrections, finals))
    if not has_test and not has_validation:
        rest = next(
            (finals[("rest", c)] for c in reversed(corrections) if finals.get(("rest", c), {}).get("n")), None
        )
        hint = (
            f" The “rest” split (rows never shown to the describer) scores {pct(rest.get('accuracy'))}"
            f" {interval(rest.get('accuracy_low'), rest.get('accuracy_high'))}, pair accuracy"
            f" {pct(rest.get('pair_accuracy'))}."
            if rest
            else ""
        )
        out.append(
            '<p class="note">There is neither a test nor a validation split, so there is no held-out figure: '
            f"the overall figures below include rows the describer was shown and are optimistic.{hint}</p>"
        )
    elif not has_validation:
        out.append(
            '<p class="sub">No validation rows were set aside: the step was chosen, and the bias offset fitted, '
            "on the describer's own batches.</p>"
        )
    out.append("<h3>All rows <small>— including rows the describer was shown</small></h3>")
    out.append(_held_out_cards("all", corrections, finals, name="all rows"))
    rows = [
        _summary_row(split, c, finals[(split, c)])
        for split in (*_SPLIT_ORDER, *sorted({k[0] for k in finals} - set(_SPLIT_ORDER)))
        for c in corrections
        if (split, c) in finals
    ]
    out.append(f'<table class="numbers">{_SUMMARY_HEAD}{"".join(rows)}</table>')
    out.append(_unscored_note(art))
    out.append(
        '<p class="sub">Pair accuracy: among pairs (row i of A, row i of B) with both rows scored, the share in '
        "which the A row gets the higher p(A), a tie counting one half; Wilson 95% interval; exact one-sided "
        "sign test, ties left out. It needs no threshold, so neither the model's lean towards one label nor the "
        "bias offset moves it. p vs chance is one-sided: the binomial test of accuracy against 50% where A and B "
        "rows are equally many, else the Mann–Whitney test of the ranking (AUC) — read it with balanced "
        "accuracy. Coverage is the share of rows scored; rates use scored rows only.</p>"
    )
    if art.run is not None and art.run.bias_offset is not None:
        out.append(
            f'<p class="sub">Bias-corrected scores shift p(A) by the offset {num(art.run.bias_offset)}, '
            f"fitted on the {esc(fitted_on)} split.</p>"
        )
    out.append("</section>")
    return "".join(out)
