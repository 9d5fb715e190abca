"""The command line with every model a researcher has: gpt-5.1's reasoning effort, sampled classification
(reused by ``asyncpipe classify`` and shown in the report), placeholder logprobs, unknown flags, a column
per side, and ``classify --no-question``. Against the fake server, which holds gpt-5.1 to OpenAI's rules."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from tests.conftest import fake_compare, fruit_files, fruit_rows, run_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread, is_sample

ESTIMATES_8 = {(k + 0.5) / 9 for k in range(9)}


def quick(server, a, b, out, model: str, *extra) -> list:
    return [
        "compare", a, b, "--base-url", server.base_url, "--model", model, "--output", out,
        "--batch-size", "4", "--max-steps", "1", "--quiet", *extra,
    ]  # fmt: skip


def test_gpt_5_1_classifies_with_effort_none_and_describes_at_the_chosen_effort(tmp_path):
    a, b = fruit_files(tmp_path, 12)
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        result = run_cli(*quick(server, a, b, tmp_path / "own", "gpt-5.1"))
        assert result.returncode == 0, result.stderr
        (own,) = fake.describe_requests()
        fake.requests.clear()
        result = run_cli(*quick(server, a, b, tmp_path / "low", "gpt-5.1", "--reasoning-effort", "low"))
        assert result.returncode == 0, result.stderr
        (low,) = fake.describe_requests()
        refused = run_cli(*quick(server, a, b, tmp_path / "x", "gpt-5.1", "--reasoning-effort", "minimal"))
    classify = fake.classify_requests()
    assert classify and all(
        body["reasoning_effort"] == "none" and body["logprobs"] and body["max_completion_tokens"] == 1
        for body in classify
    )
    assert "reasoning_effort" not in own and own["temperature"] == 0.7
    assert low["reasoning_effort"] == "low" and "temperature" not in low
    assert low["max_completion_tokens"] > 16_000
    assert refused.returncode == 2 and "accepts --reasoning-effort none, low, medium, high" in refused.stderr
    run = json.loads((tmp_path / "low" / "run.json").read_text())
    assert run["config"]["reasoning_effort"] == "low"


def test_sampled_classification_end_to_end(tmp_path):
    a, b = fruit_files(tmp_path, 12)
    fake = FakeOpenAI(no_logprobs_models={"mute"})
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*quick(server, a, b, out, "mute", "--classify-mode", "sample:8"))
        assert result.returncode == 0, result.stderr
        assert all(is_sample(body) and body["n"] == 8 for body in fake.classify_requests())
        p_a = pl.read_parquet(out / "predictions.parquet")["p_a"].to_list()
        assert p_a and all(min(abs(p - e) for e in ESTIMATES_8) < 1e-12 for p in p_a), p_a
        run = json.loads((out / "run.json").read_text())
        assert run["config"]["classify_mode"] == "sample:8"
        document = yaml.safe_load((out / "classify.yaml").read_text())
        assert document["classify_mode"] == "sample:8"
        page = (out / "index.html").read_text()
        assert "sampled 8× per row: coarse" in page and "(k + ½) / (m + 1)" in page

        # asyncpipe classify asks the same way the classifier was chosen
        fake.requests.clear()
        reused = run_cli(
            "classify", out / "classify.yaml", a, b, "--base-url", server.base_url,
            "--output", tmp_path / "again", "--quiet",
        )  # fmt: skip
        assert reused.returncode == 0, reused.stderr
        assert fake.requests and all(is_sample(body) and body["n"] == 8 for body in fake.requests)
        assert json.loads((tmp_path / "again" / "run.json").read_text())["classify_mode"] == "sample:8"
        again = pl.read_parquet(tmp_path / "again" / "predictions.parquet")["p_a"].to_list()
        assert all(min(abs(p - e) for e in ESTIMATES_8) < 1e-12 for p in again)

        estimate = run_cli(
            *quick(server, a, b, tmp_path / "dry", "mute", "--classify-mode", "sample:8"), "--dry-run"
        )
    assert estimate.returncode == 0, estimate.stderr
    assert "one request per row with n=8, 8× the output tokens" in estimate.stdout


def test_a_model_known_to_return_no_logprobs_samples_automatically(tmp_path):
    """claude-* is listed with logprobs: false and n: false: sample:8 with a note, 8 requests per row."""
    a, b = fruit_files(tmp_path, 8)
    fake = FakeOpenAI(no_logprobs_models={"claude-test"})
    with ServerThread(fake) as server:
        result = run_cli(*quick(server, a, b, tmp_path / "out", "claude-test")[:-1])
    assert result.returncode == 0, result.stderr
    assert "returns no logprobs" in result.stderr and "--classify-mode sample:8" in result.stderr
    sent = fake.classify_requests()
    assert sent and all(is_sample(body) and "n" not in body for body in sent)
    assert len(sent) % 8 == 0
    p_a = pl.read_parquet(tmp_path / "out" / "predictions.parquet")["p_a"].to_list()
    assert all(min(abs(p - e) for e in ESTIMATES_8) < 1e-12 for p in p_a)


def test_placeholder_logprobs_stop_the_run_with_advice(tmp_path):
    a, b = fruit_files(tmp_path, 40)
    fake = FakeOpenAI(fake_logprobs="zero")
    with ServerThread(fake) as server:
        result = run_cli(*quick(server, a, b, tmp_path / "out", "deepseek-chat", "--concurrency", "4"))
    assert result.returncode == 1
    assert "cannot be real" in result.stderr and "--classify-mode sample:8" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(fake.classify_requests()) <= 4 + 4


def test_mistyped_and_abbreviated_flags_fail_plainly(tmp_path, server):
    a, b = fruit_files(tmp_path, 4)
    typo = run_cli(*fake_compare(server, a, b, tmp_path / "o"), "--batchsize", "4")
    assert typo.returncode == 2
    assert "--batchsize" in typo.stderr and "did you mean --batch-size?" in typo.stderr
    assert "see 'asyncpipe compare --help'" in typo.stderr
    # a prefix of a longer flag is not that flag: --classify-mod is not --classify-model (nor -mode)
    prefix = run_cli(*fake_compare(server, a, b, tmp_path / "o"), "--classify-mod", "sample:8")
    assert prefix.returncode == 2 and "unrecognized arguments: --classify-mod" in prefix.stderr
    assert not (tmp_path / "o").exists()
    # the seed's spellings stay as explicit aliases
    seed = run_cli(
        "compare", a, b, "--base-url", server.base_url, "--model", "fake-model", "--outout", tmp_path / "s",
        "--batch_size", "2", "--extra_prompt", "Look at fruit.", "--max-steps", "1", "--quiet",
    )  # fmt: skip
    assert seed.returncode == 0, seed.stderr
    config = json.loads((tmp_path / "s" / "run.json").read_text())["config"]
    assert config["batch_size"] == 2 and config["extra_prompt"] == "Look at fruit."
    help_text = run_cli("classify", "--help").stdout
    assert "--describe-model" not in help_text and "--reasoning-effort" not in help_text


def test_a_column_per_side(tmp_path, server, fake):
    a = write_jsonl(tmp_path / "a.jsonl", fruit_rows("apple", 8))
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [{"prompt": r["question"], "response": r["answer"]} for r in fruit_rows("banana", 8)],
    )
    missing = run_cli(*fake_compare(server, a, b, tmp_path / "x"), "--column", "answer")
    assert missing.returncode == 2 and "--column-b" in missing.stderr
    result = run_cli(
        *fake_compare(server, a, b, tmp_path / "out"), "--column", "answer", "--column-b", "response",
        "--context-column-b", "prompt", "--max-steps", "1", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [body["messages"][-1]["content"] for body in fake.classify_requests()]
    assert any("banana" in r and "Question 3?" in r for r in rows)  # B's prompt shown as its context
    # and the saved classifier applied to the same two files: B's own column names again
    classifier = tmp_path / "out" / "classify.yaml"
    common = ["classify", classifier, a, b, "--base-url", server.base_url, "--quiet"]
    unnamed = run_cli(*common, "--output", tmp_path / "c0")
    assert unnamed.returncode == 2 and "answer" in unnamed.stderr
    one_file = run_cli("classify", classifier, a, "--column-b", "response", "--output", tmp_path / "c1")
    assert one_file.returncode == 2 and "give two files" in one_file.stderr
    renamed = run_cli(*common, "--output", tmp_path / "c2", "--column-b", "response", "--no-question")
    assert renamed.returncode == 0, renamed.stderr
    predictions = pl.read_parquet(tmp_path / "c2" / "predictions.parquet")
    assert predictions.height == 16 and predictions["p_a"].null_count() == 0
    assert predictions.filter(pl.col("label") == "B")["text"].str.contains("banana").all()


def test_classify_no_question_on_a_file_without_it(tmp_path, server):
    a, b = fruit_files(tmp_path, 12)
    out = tmp_path / "out"
    assert run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--quiet").returncode == 0
    answers_only = write_jsonl(
        tmp_path / "new.jsonl", [{"answer": r["answer"]} for r in fruit_rows("apple", 5)]
    )
    refused = run_cli("classify", out / "classify.yaml", answers_only, "--base-url", server.base_url,
                      "--output", tmp_path / "c1", "--quiet")  # fmt: skip
    assert refused.returncode == 2 and "question" in refused.stderr
    result = run_cli("classify", out / "classify.yaml", answers_only, "--base-url", server.base_url,
                     "--output", tmp_path / "c2", "--no-question")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "warning: rows are shown as answer, not as the classifier was chosen on (question, answer)"
        in result.stderr
    )
    assert pl.read_parquet(tmp_path / "c2" / "predictions.parquet")["p_a"].null_count() == 0


@pytest.mark.parametrize("changed", [("--batch-size", "8", "batch_size: 4 then, 8 now")])
def test_a_different_earlier_run_says_what_differs(tmp_path, server, changed):
    a, b = fruit_files(tmp_path, 8)
    out = tmp_path / "out"
    first = run_cli(*fake_compare(server, a, b, out), "--batch-size", "4", "--max-steps", "1", "--quiet")
    assert first.returncode == 0, first.stderr
    flag, value, said = changed
    second = run_cli(*fake_compare(server, a, b, out), flag, value, "--max-steps", "1", "--quiet")
    assert second.returncode == 2 and said in second.stderr
