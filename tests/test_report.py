"""The HTML report, rendered from artifact fixtures written the way the pipeline writes them.

No model runs here: each test builds a run directory (run.json, steps.jsonl, metrics.parquet,
predictions.parquet, classify.yaml) in tmp_path and renders it. The browser test opens the page in
headless Chromium (Debian package ``chromium``, installed by ``make browser``, which ``make test`` runs)
with the network off; where it is absent the browser tests are skipped, with the reason.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from asyncpipe.errors import UserError
from asyncpipe.report import render_report
from asyncpipe.report.read import SUMMARY_KEYS, load_artifacts, step_metrics

XSS = "<script>alert(1)</script>"
# would mark the page if any injected markup ever ran
XSS_IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
SELECTED_DESCRIPTION = "Dataset A answers in bullet points; dataset B writes long paragraphs."
SPLITS = ("train", "validation", "test", "rest")

# --- fixture builders (the artifact contract) -------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def summarize(labels: list[str], ps: list[float | None]) -> dict[str, Any]:
    """A summary dict with every documented key, from true labels and p(A) (None = unscored)."""
    scored = [(y, p) for y, p in zip(labels, ps, strict=True) if p is not None]
    tp = sum(1 for y, p in scored if y == "A" and p >= 0.5)
    fn = sum(1 for y, p in scored if y == "A" and p < 0.5)
    fp = sum(1 for y, p in scored if y == "B" and p >= 0.5)
    tn = sum(1 for y, p in scored if y == "B" and p < 0.5)
    n = len(scored)
    out: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    out.update(n=len(labels), n_scored=n, n_unscored=len(labels) - n, tp=tp, fp=fp, tn=tn, fn=fn)
    if n:
        correct = tp + tn
        low, high = wilson(correct, n)
        recall_a = tp / (tp + fn) if tp + fn else 0.0
        recall_b = tn / (tn + fp) if tn + fp else 0.0
        eps = 1e-6
        out.update(
            accuracy=correct / n,
            balanced_accuracy=(recall_a + recall_b) / 2,
            accuracy_low=low,
            accuracy_high=high,
            p_value=0.5 ** min(n, 60),
            mean_confidence=sum(max(p, 1 - p) for _, p in scored) / n,
            log_loss=-sum(math.log(max(eps, p if y == "A" else 1 - p)) for y, p in scored) / n,
            brier=sum(((1.0 if y == "A" else 0.0) - p) ** 2 for y, p in scored) / n,
            ece_p_a=0.05,
            auc=None,
        )
    return out


def make_predictions(rows_per_file: int, *, hostile: bool, long_text: bool) -> pl.DataFrame:
    rng = random.Random(0)
    offset = -0.4  # logit shift, the "bias offset"
    records = []
    for label in ("A", "B"):
        for row in range(rows_per_file):
            # as the pipeline splits: train, validation, an untouched test split, and the rest
            split = (
                "train"
                if row < rows_per_file // 2
                else "validation"
                if row < rows_per_file * 3 // 4
                else "test"
                if row < rows_per_file * 17 // 20
                else "rest"
            )
            text = f"{label} row {row}: " + (
                "short bullet list" if label == "A" else "a long flowing paragraph"
            )
            if hostile and row == 0:
                text = f"{XSS} {XSS_IMG} row text"
            if long_text and row == 1:
                text = f"{label} very long row " + "lorem ipsum " * 200 + "THE-END-MARKER"
            base = 0.8 if label == "A" else 0.3
            p_a: float | None = min(0.999, max(0.001, rng.gauss(base, 0.2)))
            error = None
            if hostile and row == 0 and label == "A":
                p_a = 0.9999  # the most typical row of A, so the page shows it
            if row == 2:
                p_a, error = None, "neither 'A' nor 'B' among the 20 returned tokens (top: '<think>')"
            p_corr = None
            if p_a is not None:
                logit = math.log(p_a / (1 - p_a)) + offset
                p_corr = 1 / (1 + math.exp(-logit))
            predicted = None if p_corr is None else ("A" if p_corr >= 0.5 else "B")
            records.append(
                {"label": label, "row": row, "split": split, "text": text, "p_a": p_a,
                 "p_a_corrected": p_corr, "predicted": predicted, "error": error}
            )  # fmt: skip
    schema = {
        "label": pl.Utf8, "row": pl.Int64, "split": pl.Utf8, "text": pl.Utf8, "p_a": pl.Float64,
        "p_a_corrected": pl.Float64, "predicted": pl.Utf8, "error": pl.Utf8,
    }  # fmt: skip
    return pl.DataFrame(records, schema=schema)


def metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema: dict[str, Any] = {
        "phase": pl.Utf8, "step": pl.Int64, "epoch": pl.Int64, "split": pl.Utf8, "correction": pl.Utf8,
    }  # fmt: skip
    for key in SUMMARY_KEYS:
        schema[key] = (
            pl.Int64 if key in ("n", "n_scored", "n_unscored", "tp", "fp", "tn", "fn") else pl.Float64
        )
    return pl.DataFrame(rows, schema=schema)


def write_run(
    out: Path,
    *,
    n_steps: int = 3,
    status: str = "complete",
    final: bool = True,
    hostile: bool = False,
    long_text: bool = True,
    empty_validation: bool = False,
    rows_per_file: int = 40,
) -> Path:
    """Write a run directory following the artifact contract; ``final=False`` stops before predictions."""
    out.mkdir(parents=True, exist_ok=True)
    name_a = "concise<b>" if hostile else "concise"
    selected = 2 if n_steps >= 2 else (1 if n_steps else None)
    rng = random.Random(1)
    steps, metric_rows = [], []
    for step in range(1, n_steps + 1):
        description = SELECTED_DESCRIPTION if step == selected else f"Step {step}: A is shorter than B."
        if hostile and step == selected:
            description = f"{SELECTED_DESCRIPTION} {XSS} {XSS_IMG}"
        summaries = {}
        for split, size in (("train", 32), ("validation", 0 if empty_validation else 10)):
            labels = ["A", "B"] * (size // 2)
            acc = 0.55 + 0.08 * step
            ps = [
                (0.7 if y == "A" else 0.3) if rng.random() < acc else (0.3 if y == "A" else 0.7)
                for y in labels
            ]
            summaries[split] = summarize(labels, ps)
            metric_rows.append(
                {
                    "phase": "step",
                    "step": step,
                    "epoch": 1,
                    "split": split,
                    "correction": "raw",
                    **summaries[split],
                }
            )
        steps.append(
            {"step": step, "epoch": 1, "description": description, "pairs": list(range((step - 1) * 4, step * 4)),
             "metrics": {"train": summaries["train"], "validation": summaries["validation"]}}
        )  # fmt: skip
    final_json = None
    if final:
        predictions = make_predictions(rows_per_file, hostile=hostile, long_text=long_text)
        if empty_validation:
            predictions = predictions.with_columns(
                split=pl.when(pl.col("split") == "validation").then(pl.lit("rest")).otherwise(pl.col("split"))
            )
        predictions.write_parquet(out / "predictions.parquet")
        final_json = {}
        for correction, column in (("raw", "p_a"), ("corrected", "p_a_corrected")):
            for split in (*SPLITS, "all"):
                part = predictions if split == "all" else predictions.filter(pl.col("split") == split)
                summary = summarize(part["label"].to_list(), part[column].to_list())
                metric_rows.append(
                    {
                        "phase": "final",
                        "step": selected,
                        "epoch": None,
                        "split": split,
                        "correction": correction,
                        **summary,
                    }
                )
                final_json.setdefault(correction, {})[split] = summary  # nested, as the pipeline writes it
        (out / "classify.yaml").write_text(
            yaml.safe_dump({"description": steps[selected - 1]["description"], "labels": {"A": name_a, "B": "verbose"},
                            "selected": selected}),
            encoding="utf-8",
        )  # fmt: skip
    run = {
        "status": status,
        "message": f"stopped by user {XSS}" if hostile else None,
        "started_at": "2026-11-28T10:00:00+00:00",
        "finished_at": "2026-11-28T10:04:05+00:00" if status == "complete" else None,
        "wall_seconds": 245.3 if status == "complete" else None,
        "version": "0.1.0",
        "labels": {
            "A": {"name": name_a, "path": "data/Mixtral_concise.jsonl", "rows": rows_per_file},
            "B": {"name": "verbose", "path": "data/Mixtral_verbose.jsonl", "rows": rows_per_file},
        },
        "models": {"describe": "gpt-4o-mini", "classify": "gpt-4o-mini"},
        "config": {"batch_size": 4, "epochs": 1},
        "stats": {"requests": 1234, "cache_hits": 56, "retries": 7, "rate_limited": 2, "prompt_tokens": 987654,
                  "completion_tokens": 4321, "cached_tokens": 500000, "estimated_cost_usd": 0.1234, "unscored": 2},
        "selected_step": selected if final else None,
        "selection_reason": "best validation log loss" if final else None,
        "bias_offset": -0.4 if final else None,
        "final": final_json,
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
    if n_steps:
        (out / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps), encoding="utf-8")
        metrics_frame(metric_rows).write_parquet(out / "metrics.parquet")
    return out


def page_text_outside_plotly(html_text: str) -> str:
    """The page without Plotly's own script blocks: the plotly.min.js tag, figure JSON, the boot script.

    Any other ``<script`` left in the result was not put there by the report.
    """
    text = html_text.replace('<script src="plotly.min.js"></script>', "", 1)
    text = re.sub(r'<script type="application/json" id="fig-[a-z]+-json">[^<]*</script>', "", text)
    boot = re.findall(r"<script>[^<]*?Plotly\.newPlot[^<]*?</script>", text)
    assert len(boot) == 1, "expected exactly one boot script"
    return text.replace(boot[0], "")


# --- rendering ---------------------------------------------------------------------------------------


def test_full_directory_renders(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run")
    index = render_report(out)
    assert index == out / "index.html"
    page = index.read_text(encoding="utf-8")
    for name in ("concise", "verbose", "data/Mixtral_concise.jsonl", "data/Mixtral_verbose.jsonl"):
        assert name in page
    assert SELECTED_DESCRIPTION in page
    assert "★ selected" in page
    final = json.loads((out / "run.json").read_text())["final"]["corrected"]["all"]
    for key in ("tp", "fn", "fp", "tn"):
        assert f"{key} = {final[key]}" in page
    assert "<h3>Validation split <small>" in page
    assert "there is no test split" not in page  # there is one here
    # the headline the README says to publish: the test split's pair accuracy, then its accuracy cards
    # with their n (4 of 40 rows per file)
    start = page.index("<h3>Test split")
    cards = page[start : page.index("<h3>", start + 1)]
    assert cards.count('<div class="card-title">test split: accuracy, ') == 2 and cards.count("n = 8") == 2
    assert cards.index("test split: pair accuracy") < cards.index("test split: accuracy, ")
    assert "bias-corrected" in page
    assert "final classification not done" not in page
    for name in ("index.html", "accuracy.html", "confidence.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert '<script src="plotly.min.js"></script>' in text
        assert not re.search(r"<script[^>]*src=[\"']?(https?:)?//", text), name
        assert "cdn" not in " ".join(re.findall(r"<script[^>]*>", text)).lower()
        assert "https://" not in page_text_outside_plotly(text)
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".js") == ["plotly.min.js"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_figures_present_on_each_page(tmp_path: Path) -> None:
    out = render_report(write_run(tmp_path / "run")).parent
    index = (out / "index.html").read_text(encoding="utf-8")
    for fig in ("fig-accuracy", "fig-confidence", "fig-confusion", "fig-histogram", "fig-reliability"):
        assert f'data-figure="{fig}-json"' in index
    assert 'data-figure="fig-accuracy-json"' in (out / "accuracy.html").read_text(encoding="utf-8")
    assert 'data-figure="fig-confidence-json"' in (out / "confidence.html").read_text(encoding="utf-8")


def test_long_row_text_is_clipped_with_marker(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", long_text=True)
    # make the long row the most typical row of A so it is shown
    frame = pl.read_parquet(out / "predictions.parquet").with_columns(
        p_a_corrected=pl.when((pl.col("label") == "A") & (pl.col("row") == 1))
        .then(0.9999)
        .otherwise(pl.col("p_a_corrected"))
    )
    frame.write_parquet(out / "predictions.parquet")
    page = render_report(out).read_text(encoding="utf-8")
    assert "A very long row" in page
    assert re.search(r"clipped: [\d,]+ more characters", page)


def test_plotly_js_written_once_and_kept(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run")
    render_report(out)
    js = out / "plotly.min.js"
    first = js.stat()
    render_report(out)
    assert js.stat().st_ino == first.st_ino and js.stat().st_mtime_ns == first.st_mtime_ns
    js.write_text("stale", encoding="utf-8")
    render_report(out)
    assert js.stat().st_size > 1_000_000


def test_render_is_deterministic(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run")
    first = render_report(out).read_bytes()
    assert render_report(out).read_bytes() == first


def test_partial_directory_without_predictions(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", status="interrupted", final=False)
    page = render_report(out).read_text(encoding="utf-8")
    assert "Run interrupted at step 3 — final classification not done." in page
    assert "Final classification not done yet" in page
    assert 'data-figure="fig-accuracy-json"' in page
    assert "fig-confusion" not in page
    assert "Latest description (step 3, not yet selected)" in page


def test_running_directory_says_in_progress(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", status="running", final=False, n_steps=1)
    page = render_report(out).read_text(encoding="utf-8")
    assert "Run in progress at step 1 — final classification not done." in page


def test_only_run_json(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", status="running", final=False, n_steps=0)
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
    page = render_report(out).read_text(encoding="utf-8")
    assert "Run in progress before the first describe step finished" in page
    assert "No describe step finished yet." in page
    for name in ("accuracy.html", "confidence.html", "plotly.min.js"):
        assert (out / name).exists()


def test_empty_directory_and_missing_directory(tmp_path: Path) -> None:
    page = render_report(tmp_path).read_text(encoding="utf-8")
    assert "No run.json here yet" in page
    with pytest.raises(UserError):
        render_report(tmp_path / "nope")


def test_torn_steps_line_and_broken_parquet_are_reported_not_raised(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", status="running", final=False)
    with (out / "steps.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"step": 4, "epoch": 1, "descr')  # a line cut short while being appended
    (out / "predictions.parquet").write_bytes(b"PAR1 not really")
    page = render_report(out).read_text(encoding="utf-8")
    assert "steps.jsonl line 4 skipped" in page
    assert "predictions.parquet could not be read" in page


def test_step_metrics_fall_back_to_steps_jsonl(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", final=False)
    from_parquet = step_metrics(load_artifacts(out))
    (out / "metrics.parquet").unlink()
    from_jsonl = step_metrics(load_artifacts(out))
    assert from_jsonl.height == from_parquet.height == 6
    assert from_jsonl["accuracy"].to_list() == pytest.approx(from_parquet["accuracy"].to_list())


def test_empty_validation_is_said_honestly(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", empty_validation=True)
    page = render_report(out).read_text(encoding="utf-8")
    assert "<h3>Validation split" not in page
    # the test cards are not hidden for want of validation rows, and the page says what chose the step
    assert "test split: pair accuracy" in page and "test split: accuracy, raw" in page
    assert "the step was chosen, and the bias offset fitted, on the describer's own batches" in page


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", hostile=True, status="interrupted")
    render_report(out)
    for name in ("index.html", "accuracy.html", "confidence.html"):
        page = (out / name).read_text(encoding="utf-8")
        outside = page_text_outside_plotly(page)
        assert "<script" not in outside.lower()
        assert "alert(1)" not in page.replace("&lt;script&gt;alert(1)&lt;/script&gt;", "")
        assert "<img src=x" not in page
        assert "concise<b>" not in page
        assert "concise&lt;b&gt;" in page
    page = (out / "index.html").read_text(encoding="utf-8")
    assert (
        '<td class="rowtext"><span class="text">&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x' in page
    )
    assert f"{SELECTED_DESCRIPTION} &lt;script&gt;alert(1)&lt;/script&gt;" in page  # description
    assert "stopped by user &lt;script&gt;" in page  # run message


def test_figure_json_cannot_close_its_script_block(tmp_path: Path) -> None:
    import plotly.graph_objects as go

    from asyncpipe.report.page import script_safe_json

    fig = go.Figure(go.Scatter(x=[1], y=[1], text=["</script><script>alert(1)</script>\u2028"]))
    fig.update_layout(title="</SCRIPT>&<!--")
    text = script_safe_json(fig)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["layout"]["title"]["text"] == "</SCRIPT>&<!--"


# --- the page in a real browser --------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to Debian's chromium, installed by ``make browser`` (part of ``make test``); the suite itself
    never installs anything, so where it is absent the browser tests skip and say how to get it."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if not found:
        pytest.skip(
            "chromium is not installed: `make browser` installs Debian's package 'chromium' (as root)"
        )
    return found


def run_chromium(binary: str, tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    args = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000",
        # networking off: nothing resolves and every proxied request goes to a closed port
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        "--enable-logging=stderr", "--v=0", *extra, url,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)


def console_messages(stderr: str) -> list[str]:
    """Lines Chromium logs for the page's console (every console call, errors and uncaught exceptions)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_in_headless_chromium(tmp_path: Path, chromium: str) -> None:
    out = render_report(write_run(tmp_path / "run", hostile=True)).parent
    url = (out / "index.html").as_uri()

    dom = run_chromium(chromium, tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    html_dom = dom.stdout
    # five figures on the overview, each drawn by Plotly
    assert html_dom.count('class="plot-container plotly"') == 5, html_dom[:2000]
    assert "js-plotly-plot" in html_dom
    assert 'data-pwned="1"' not in html_dom  # the injected onerror never ran
    assert '<span class="text">&lt;script&gt;alert(1)&lt;/script&gt;' in html_dom  # the row, shown as text
    assert 'class="note problem noplotly" style="display: block' not in html_dom

    shot = tmp_path / "report.png"
    capture = run_chromium(chromium, tmp_path, url, f"--screenshot={shot}", "--window-size=1280,2400")
    assert capture.returncode == 0, capture.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000

    for name, count in (("accuracy.html", 1), ("confidence.html", 1)):
        single = run_chromium(chromium, tmp_path, (out / name).as_uri(), "--dump-dom")
        assert console_messages(single.stderr) == []
        assert single.stdout.count('class="plot-container plotly"') == count


def test_chromium_shows_note_when_plotly_js_is_missing(tmp_path: Path, chromium: str) -> None:
    out = render_report(write_run(tmp_path / "run")).parent
    (out / "plotly.min.js").unlink()
    dom = run_chromium(chromium, tmp_path, (out / "index.html").as_uri(), "--dump-dom")
    assert "plot-container" not in dom.stdout
    assert 'class="note problem noplotly" style="display: block;"' in dom.stdout


def test_histogram_and_reliability_tables() -> None:
    from asyncpipe.metrics import reliability_bins
    from asyncpipe.report.tables import histogram_counts

    frame = pl.DataFrame(
        {"label": ["A", "A", "A", "B", "B"], "p": [0.0, 0.97, 1.0, 0.02, None], "p_a": [0.1] * 5},
        schema={"label": pl.Utf8, "p": pl.Float64, "p_a": pl.Float64},
    )
    counts = histogram_counts(frame, "A", "p", bins=20)
    assert counts.height == 20 and counts["count"].sum() == 3
    assert counts.filter(pl.col("bin") == 19)["count"].item() == 2  # p = 1.0 falls in the last bin
    assert histogram_counts(frame, "B", "p", bins=20)["count"].sum() == 1  # unscored row left out
    bins = reliability_bins(frame, 10, p_column="p")  # the figure's table
    assert bins["n"].sum() == 4
    assert bins.filter(pl.col("bin_low") == 0.9)["frac_a"].item() == 1.0
    assert bins.filter(pl.col("bin_low") == 0.0)["frac_a"].item() == pytest.approx(0.5)


def test_final_from_run_json_when_metrics_has_no_final_rows(tmp_path: Path) -> None:
    """The pipeline's run.json nests final summaries by correction: {"raw": {split: …}, "corrected": …}."""
    out = write_run(tmp_path / "run")
    metrics = pl.read_parquet(out / "metrics.parquet")
    final_rows = metrics.filter(pl.col("phase") == "final")
    nested: dict[str, dict[str, Any]] = {}
    for row in final_rows.iter_rows(named=True):
        nested.setdefault(row["correction"], {})[row["split"]] = {k: row[k] for k in SUMMARY_KEYS}
    run = json.loads((out / "run.json").read_text())
    run["final"] = nested
    (out / "run.json").write_text(json.dumps(run), encoding="utf-8")
    metrics.filter(pl.col("phase") == "step").write_parquet(out / "metrics.parquet")
    page = render_report(out).read_text(encoding="utf-8")
    assert "validation split: accuracy, bias-corrected" in page and "validation split: accuracy, raw" in page
    assert f"tp = {nested['corrected']['all']['tp']}," in page


def test_odd_run_json_shapes_do_not_crash(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(
        json.dumps(
            {"status": "complete", "labels": {"A": "plain-name", "B": None}, "models": None, "stats": []}
        ),
        encoding="utf-8",
    )
    page = render_report(tmp_path).read_text(encoding="utf-8")
    assert "plain-name" in page
    (tmp_path / "run.json").write_text("[1, 2]", encoding="utf-8")
    assert "run.json could not be read" in render_report(tmp_path).read_text(encoding="utf-8")
