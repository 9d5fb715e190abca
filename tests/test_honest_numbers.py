"""The figures a sceptical reviewer reads, end to end through the command line and the fake server:
pair accuracy beside accuracy, label mass, coverage, and the warning about a test split too small."""

from __future__ import annotations

import html
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from asyncpipe.data.pairing import make_plan
from tests.conftest import fake_compare, run_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread, leaning_scorer, row_of, top_logprobs_for


def fruit(fruit: str, n: int, *, mumble: set[int] = frozenset()) -> list[dict]:
    return [
        {
            "question": f"Question {i}?",
            "answer": f"Answer {i}: "
            + ("mumble mumble" if i in mumble else f"I would plant a {fruit} tree."),
        }
        for i in range(n)
    ]


def test_a_model_that_ranks_every_pair_right_but_leans_to_a(tmp_path: Path):
    # p(A) = 0.95 for apple rows and 0.85 for banana rows: every row reads as 'A' (raw accuracy 50 %),
    # yet every pair is ordered right. One row of A shown to the describer is answered mostly with "**"
    # (label mass 0.1).
    plan = make_plan(100, batch_size=10, epochs=1, validation_fraction=0.1, validation_max=100, seed=0,
                     max_steps=2, test_fraction=0.2, test_max=100)  # fmt: skip
    low = plan.batches[0][0]
    a = write_jsonl(tmp_path / "apples.jsonl", fruit("apple", 100, mumble={low}))
    b = write_jsonl(tmp_path / "bananas.jsonl", fruit("banana", 100))
    out = tmp_path / "out"
    fake = FakeOpenAI(scorer=leaning_scorer(low_mass_word="mumble"))
    with ServerThread(fake) as server:
        result = run_cli(
            *fake_compare(server, a, b, out),
            "--batch-size",
            "10",
            "--max-steps",
            "2",
            "--test-fraction",
            "0.2",
        )
    assert result.returncode == 0, result.stderr

    metrics = pl.read_parquet(out / "metrics.parquet")
    for column in ("pair_accuracy", "pair_ci_low", "pair_ci_high", "pair_p_value", "n_pairs", "coverage"):
        assert column in metrics.columns
    test = metrics.filter(
        (pl.col("phase") == "final") & (pl.col("split") == "test") & (pl.col("correction") == "raw")
    ).row(0, named=True)
    pairs = 20
    assert test["n"] == 40 and test["n_pairs"] == pairs
    assert test["pair_accuracy"] == 1.0 and test["pair_p_value"] == pytest.approx(0.5**pairs)
    assert test["pair_ci_low"] > 0.8
    assert test["accuracy"] == 0.5  # every row predicted 'A'
    assert test["p_value"] >= 0.5 and test["p_value_test"] == "binomial"

    # the run record holds the same figures
    run = json.loads((out / "run.json").read_text())
    assert run["final"]["raw"]["test"]["pair_accuracy"] == 1.0
    assert run["final"]["raw"]["test"]["accuracy"] == 0.5
    assert run["plan"]["test_pairs"] == 20 and run["warnings"] == []
    # the saved classifier keeps its threshold, so `asyncpipe classify` holds new rows to the same standard
    assert yaml.safe_load((out / "classify.yaml").read_text())["min_label_mass"] == 0.5

    # the low-mass row is unscored with its reason, its label mass kept; every other row holds 0.99
    predictions = pl.read_parquet(out / "predictions.parquet")
    mumbled = predictions.filter((pl.col("label") == "A") & (pl.col("row") == low)).row(0, named=True)
    assert mumbled["split"] == "train"
    assert mumbled["p_a"] is None
    assert mumbled["label_mass"] == pytest.approx(0.1)
    assert mumbled["error"].startswith("label mass 0.100 below min_label_mass 0.5")
    others = predictions.filter(pl.col("p_a").is_not_null())
    assert others.height == 199 and others["label_mass"].min() == pytest.approx(0.99)
    # and the terminal says why rows went unscored, not only how many (lines may be wrapped)
    said = " ".join((result.stdout + result.stderr).split())
    assert f"Unscored, 1 row(s): {mumbled['error']}" in said
    page = (out / "index.html").read_text(encoding="utf-8")  # and the report says so too
    assert "1 of 200 rows unscored" in page and f"1 row(s): {html.escape(mumbled['error'])}" in page
    everything = metrics.filter(
        (pl.col("phase") == "final") & (pl.col("split") == "all") & (pl.col("correction") == "raw")
    ).row(0, named=True)
    assert everything["coverage"] == pytest.approx(199 / 200)
    assert everything["n_pairs"] == 99  # the pair of the unscored row is not a pair

    # both figures in the terminal summary, pair accuracy first
    from asyncpipe.pipeline.terminal_summary import split_line
    from asyncpipe.records import Summary

    raw, corrected = run["final"]["raw"]["test"], run["final"]["corrected"]["test"]
    line = split_line("test", Summary.from_dict(raw), Summary.from_dict(corrected))
    assert line.startswith(f"test (40 rows, {pairs} pairs): pair accuracy 100.0%")
    assert "accuracy 50.0%" in line and "coverage 100.0%" in line
    assert " ".join(line.split()) in " ".join(result.stderr.split())  # printed (maybe wrapped)
    # and in the report: the test split's pair accuracy, then its accuracy
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "test split: pair accuracy" in page and "test split: accuracy, raw" in page
    assert page.index("test split: pair accuracy") < page.index("test split: accuracy, raw")
    assert f"{pairs} pairs: {pairs} won · 0 lost · 0 tied" in page


def test_a_test_split_too_small_to_be_significant_is_warned_about_before_any_request(tmp_path: Path):
    # 40 pairs, 10 % test: 4 test pairs, and 0.5 ** 4 = 0.0625 is the best p the sign test can give
    a = write_jsonl(tmp_path / "apples.jsonl", fruit("apple", 40))
    b = write_jsonl(tmp_path / "bananas.jsonl", fruit("banana", 40))
    fake = FakeOpenAI(scorer=leaning_scorer())
    with ServerThread(fake) as server:
        result = run_cli(*fake_compare(server, a, b, tmp_path / "out"), "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "the test split holds" in line)
    assert "4 pair(s)" in warning and "at best p = 0.0625" in warning
    assert "--test-fraction 0.12 would give 5" in warning  # round(0.12 × 40) = 5
    assert result.stderr.index(warning) < result.stderr.index("step 1/")  # before any request
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["warnings"] == [warning.removeprefix("warning: ").strip()]
    # the dry run says so too, before anything is paid for
    dry = run_cli(*fake_compare(server, a, b, tmp_path / "dry"), "--max-steps", "1", "--dry-run")
    assert dry.returncode == 0 and " ".join(warning.split()) in " ".join(dry.stdout.split())


def test_without_validation_rows_the_test_split_is_still_shown(tmp_path: Path):
    a = write_jsonl(tmp_path / "apples.jsonl", fruit("apple", 40))
    b = write_jsonl(tmp_path / "bananas.jsonl", fruit("banana", 40))
    with ServerThread(FakeOpenAI(scorer=leaning_scorer())) as server:
        result = run_cli(
            *fake_compare(server, a, b, tmp_path / "out"),
            "--max-steps",
            "1",
            "--validation-fraction",
            "0",
            "--test-fraction",
            "0.25",
            "--quiet",
        )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "test split: pair accuracy" in page and "<h3>Validation split" not in page
    assert "the step was chosen, and the bias offset fitted, on the describer's own batches" in page


def test_swap_labels_leaves_a_row_unscored_when_either_prompt_is(tmp_path: Path):
    # The swapped prompt gets no label back for row 7 of both files: averaging the one answer left
    # would keep the lean the swap is there to cancel, so the row is unscored, saying which prompt failed.
    def scorer(body: dict) -> list[tuple[str, float]]:
        swapped = "dataset B talk about apples" in body["messages"][0]["content"]
        row = row_of(body)
        if swapped and "Answer 7:" in row:
            return [("Sure", -0.01), ("I", -5.0)]
        p = 0.9 if "apple" in row else 0.15
        return top_logprobs_for(1.0 - p if swapped else p)

    a = write_jsonl(tmp_path / "apples.jsonl", fruit("apple", 40))
    b = write_jsonl(tmp_path / "bananas.jsonl", fruit("banana", 40))
    with ServerThread(FakeOpenAI(scorer=scorer)) as server:
        result = run_cli(
            *fake_compare(server, a, b, tmp_path / "out"), "--max-steps", "1", "--swap-labels", "--quiet"
        )
    assert result.returncode == 0, result.stderr
    predictions = pl.read_parquet(tmp_path / "out" / "predictions.parquet")
    unscored = predictions.filter(pl.col("p_a").is_null())
    assert sorted(unscored["row"].to_list()) == [7, 7]
    assert all(e.startswith("swapped prompt: neither 'A' nor 'B'") for e in unscored["error"])
    assert predictions.filter(pl.col("p_a").is_not_null()).height == 78


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "half"])
def test_a_bad_min_label_mass_is_a_user_error(tmp_path: Path, bad: str):
    a = write_jsonl(tmp_path / "a.jsonl", fruit("apple", 4))
    b = write_jsonl(tmp_path / "b.jsonl", fruit("banana", 4))
    result = run_cli("compare", a, b, "--model", "fake-model", "--base-url", "http://127.0.0.1:9/v1",
                     "--output", tmp_path / "out", "--min-label-mass", bad)  # fmt: skip
    assert result.returncode == 2
    assert "--min-label-mass" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
