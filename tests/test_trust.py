"""Results researchers can trust: bias correction, swapped labels, held-out selection, cut rows."""

from __future__ import annotations

import json
import math
import re

import polars as pl
import pytest
import yaml

from tests.conftest import fake_compare, fruit_files, run_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread, row_of, top_logprobs_for


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def run(fake, tmp_path, *extra, rows=40):
    a, b = fruit_files(tmp_path, rows)
    with ServerThread(fake) as server:
        result = run_cli(
            *fake_compare(server, a, b, tmp_path / "out"),
            "--batch-size",
            "8",
            "--max-steps",
            "2",
            "--quiet",
            *extra,
        )
    assert result.returncode == 0, result.stderr
    return tmp_path / "out"


def test_a_constant_lean_is_corrected_back_to_balance(tmp_path):
    # true logit +2 for apple rows, -2 for banana rows, plus a constant +1 lean towards 'A'
    def scorer(body):
        return top_logprobs_for(sigmoid((2 if "apple" in row_of(body) else -2) + 1))

    out = run(FakeOpenAI(scorer=scorer), tmp_path)
    document = yaml.safe_load((out / "classify.yaml").read_text())
    assert document["bias_offset"] == pytest.approx(1.0, abs=1e-6)
    assert document["bias_offset_fitted_on"] == "validation"
    predictions = pl.read_parquet(out / "predictions.parquet")
    a = predictions.filter(pl.col("label") == "A")
    b = predictions.filter(pl.col("label") == "B")
    assert a["p_a"].to_list() == pytest.approx([sigmoid(3)] * 40)  # raw stays raw
    assert a["p_a_corrected"].to_list() == pytest.approx([sigmoid(2)] * 40)
    assert b["p_a_corrected"].to_list() == pytest.approx([sigmoid(-2)] * 40)
    metrics = pl.read_parquet(out / "metrics.parquet").filter(pl.col("phase") == "final")
    assert set(metrics["correction"]) == {"raw", "corrected"}
    assert set(metrics["split"]) == {"train", "validation", "test", "rest", "all"}


def test_swap_labels_classifies_twice_and_averages(tmp_path):
    def scorer(body):
        system = body["messages"][0]["content"]
        swapped = "dataset B talk about apples" in system
        apple = "apple" in row_of(body)
        if not swapped:
            return top_logprobs_for(0.9 if apple else 0.15)
        return top_logprobs_for(0.2 if apple else 0.8)  # roles swapped: 'A' now means bananas

    fake = FakeOpenAI(scorer=scorer)
    out = run(fake, tmp_path, "--swap-labels")
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.filter(pl.col("label") == "A")["p_a"].to_list() == pytest.approx(
        [(0.9 + 0.8) / 2] * 40
    )
    assert predictions.filter(pl.col("label") == "B")["p_a"].to_list() == pytest.approx(
        [(0.15 + 0.2) / 2] * 40
    )
    systems = [b["messages"][0]["content"] for b in fake.classify_requests()]
    swapped = sum("dataset B talk about apples" in s for s in systems)
    assert swapped == len(systems) - swapped > 0
    document = yaml.safe_load((out / "classify.yaml").read_text())
    assert "dataset B talk about apples" in document["swapped_messages"][0]["content"]


def test_selection_uses_held_out_log_loss_not_the_last_step(tmp_path):
    # step 2's description is worse on every row: the saved classifier must come from step 1
    def scorer(body):
        good = "Description 1:" in body["messages"][0]["content"]
        apple = "apple" in row_of(body)
        return top_logprobs_for((0.9 if apple else 0.1) if good else (0.6 if apple else 0.4))

    out = run(FakeOpenAI(scorer=scorer), tmp_path)
    document = yaml.safe_load((out / "classify.yaml").read_text())
    assert document["selected"]["step"] == 1
    assert "held-out" in document["selected"]["reason"]
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["selected_step"] == 1
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps[0]["metrics"]["validation"]["log_loss"] < steps[1]["metrics"]["validation"]["log_loss"]


def test_long_rows_are_cut_in_describe_and_classify_alike(tmp_path):
    long = "apple " * 5000
    a = write_jsonl(tmp_path / "a.jsonl", [{"answer": long}] + [{"answer": f"apple {i}"} for i in range(11)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"answer": f"banana {i}"} for i in range(12)])
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        result = run_cli(
            *fake_compare(server, a, b, tmp_path / "out"),
            "--batch-size",
            "12",
            "--max-row-tokens",
            "100",
            "--validation-fraction",
            "0",
        )
    assert result.returncode == 0, result.stderr
    assert "1 row(s) longer than 400 characters were cut" in result.stderr
    marker = re.compile(r"\[… \d+ characters cut …\]")
    assert marker.search(fake.describe_requests()[0]["messages"][-1]["content"])
    assert any(marker.search(row_of(body)) for body in fake.classify_requests())
    assert max(len(row_of(body)) for body in fake.classify_requests()) < 450
    assert json.loads((tmp_path / "out" / "run.json").read_text())["plan"]["rows_cut"] == 1


def test_describe_prompt_fits_a_small_context_by_cutting_every_example(tmp_path):
    import anyio

    from asyncpipe.cli import build_config, build_parser
    from asyncpipe.llm.pool import build_pool
    from asyncpipe.llm.stats import RunStats
    from asyncpipe.pipeline.compare import compare
    from asyncpipe.pipeline.progress import Reporter

    a = write_jsonl(tmp_path / "a.jsonl", [{"answer": "apple " * 300 + str(i)} for i in range(12)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"answer": "banana " * 300 + str(i)} for i in range(12)])
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        args = build_parser().parse_args(
            [
                "compare",
                str(a),
                str(b),
                "--base-url",
                server.base_url,
                "--model",
                "fake-model",
                "--output",
                str(tmp_path / "out"),
                "--batch-size",
                "6",
                "--max-steps",
                "1",
                "--describe-max-tokens",
                "200",
            ]
        )
        cfg = build_config(args, lambda _m: None)

        async def run_with_small_context():
            pool = build_pool(cfg.pool, api_key="unused")
            pool.provider("fake-model", "classify").context_tokens = 1500  # a small local model's window
            try:
                await compare(cfg, Reporter(RunStats(), quiet=True), pool=pool)
            finally:
                await pool.aclose()

        anyio.run(run_with_small_context)
    describe = fake.describe_requests()[0]["messages"]
    total = sum(len(m["content"]) for m in describe)
    assert total <= (1500 - 200) * 3
    user = describe[-1]["content"]
    # every example was cut, and each kept its own start: A's and B's blocks are both whole
    assert user.count("characters cut") == 12
    assert len(re.findall(r'<example index="\d">\napple', user)) == 6
    assert len(re.findall(r'<example index="\d">\nbanana', user)) == 6
    assert "</dataset_A>" in user and "</dataset_B>" in user


def test_test_rows_are_used_for_nothing_but_the_final_figure(tmp_path):
    """Test pairs never reach the describer nor any step's classification: the selected classifier sees
    them once, in the final pass. Validation rows are classified at every step but never described."""
    fake = FakeOpenAI()
    out = run(fake, tmp_path)
    predictions = pl.read_parquet(out / "predictions.parquet")
    test = predictions.filter(pl.col("split") == "test")
    validation = predictions.filter(pl.col("split") == "validation")
    assert test.height == 8 and validation.height == 8  # 10% of 40 pairs each, from both files
    assert not set(test["row"]) & set(validation["row"])
    describe_text = "\n".join(m["content"] for body in fake.describe_requests() for m in body["messages"])
    rows_sent = [row_of(body) for body in fake.classify_requests()]
    for text in test["text"]:
        assert text not in describe_text
        assert rows_sent.count(text) == 1, "a test row is classified once, by the selected classifier"
    for text in validation["text"]:
        assert text not in describe_text
        assert rows_sent.count(text) >= 2
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["final"]["corrected"]["test"]["n"] == 8
