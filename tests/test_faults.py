"""The fault matrix: each kind of failure injected by the fake server, one at a time and mixed.

For every kind the run either finishes with every row of both files in predictions.parquet (scored, or
unscored with its reason) or, for a permanent refusal, stops at once with one clear line; and
the server's request count shows that retries stayed bounded.
"""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from tests.conftest import fake_compare, fruit_files, fruit_rows, run_cli, write_jsonl
from tests.fake_openai import FAULTS, FakeOpenAI, ServerThread, is_classify

ROWS = 20
MAX_ATTEMPTS = 4
CLASSIFY_ONLY = {"null_logprobs", "no_labels", "empty_choices", "refused"}


def every_fifth(kind: str):
    def fault(number: int, body: dict) -> str | None:
        if kind in CLASSIFY_ONLY and not is_classify(body):
            return None
        return kind if number % 5 == 0 else None

    return fault


def mixed(seed: int = 7):
    rng = random.Random(seed)
    kinds = [kind for kind in FAULTS if kind != "quota"]  # quota stops a run: it has its own test

    def fault(number: int, body: dict) -> str | None:
        if rng.random() >= 0.2:
            return None
        kind = rng.choice(kinds)
        if kind in CLASSIFY_ONLY and not is_classify(body):
            return None
        return kind

    return fault


def run(tmp_path, fault, *extra: str):
    a, b = fruit_files(tmp_path, ROWS)
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("retry_base_delay: 0.01\nretry_max_delay: 0.05\n")
    fake = FakeOpenAI(fault=fault, timeout_sleep=3.0)
    with ServerThread(fake) as server:
        result = run_cli(
            *fake_compare(server, a, b, tmp_path / "out"),
            "--batch-size",
            "8",
            "--max-steps",
            "2",
            "--timeout",
            "0.5",
            "--max-attempts",
            str(MAX_ATTEMPTS),
            "--config",
            cfg,
            "--quiet",
            *extra,
        )
    return result, fake


def logical_requests(out) -> int:
    """Describe steps + classify rows per step + the final pass (rows already scored there are cached)."""
    run_info = json.loads((out / "run.json").read_text())
    plan = run_info["plan"]
    per_step = 2 * 8 + 2 * plan["validation_pairs"]
    return plan["steps_done"] * (1 + per_step) + 2 * ROWS


@pytest.mark.parametrize(
    "kind",
    [
        "rate_limit",
        "rate_limit_retry_after",
        "500",
        "502",
        "503",
        "timeout",
        "reset",
        "truncated",
        "null_logprobs",
        "no_labels",
        "empty_choices",
    ],
)
def test_each_fault_kind(tmp_path, kind):
    result, fake = run(tmp_path, every_fifth(kind))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height == 2 * ROWS
    for row in predictions.iter_rows(named=True):
        assert (row["p_a"] is None) == (row["error"] is not None), row
    if kind == "no_labels":
        # a deterministic answer without either label is final: unscored, with the reason, not retried
        assert predictions["error"].drop_nulls().str.contains("neither 'A' nor 'B'").all()
        assert predictions["p_a"].null_count() > 0
    else:
        # a passing fault on every fifth request is always cured by a retry
        assert predictions["p_a"].null_count() == 0, predictions.filter(pl.col("error").is_not_null())[
            "error"
        ].to_list()
    assert len(fake.requests) <= logical_requests(out) * MAX_ATTEMPTS
    assert json.loads((out / "run.json").read_text())["stats"]["retries"] >= (0 if kind == "no_labels" else 1)
    if kind == "timeout":  # counted, and taken as a congestion signal by the limiter
        run_info = json.loads((out / "run.json").read_text())
        assert run_info["stats"]["timeouts"] >= 1
        assert run_info["limiter"]["timeouts"] >= 1 and run_info["limiter"]["decreases"] >= 1


def test_mixed_faults_at_twenty_percent(tmp_path):
    result, fake = run(tmp_path, mixed())
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height == 2 * ROWS
    for row in predictions.iter_rows(named=True):
        assert (row["p_a"] is None) == (row["error"] is not None)
    assert len(fake.requests) <= logical_requests(out) * MAX_ATTEMPTS


def test_quota_stops_at_once_and_keeps_work(tmp_path):
    def fault(number: int, body: dict) -> str | None:
        return "quota" if number >= 12 else None

    result, fake = run(tmp_path, fault)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "quota exhausted" in lines[0] and "Traceback" not in result.stderr
    run_info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_info["status"] == "failed" and "quota exhausted" in run_info["message"]
    # nothing was retried: the quota error is permanent. Only requests already under way when the
    # first refusal came back were sent after it, each once.
    assert run_info["stats"]["retries"] == 0
    bodies = [json.dumps(body, sort_keys=True) for body in fake.requests]
    assert len(bodies) == len(set(bodies)), "a request was sent again after a quota refusal"
    assert (tmp_path / "out" / "index.html").is_file()


def test_an_exhausted_quota_sends_exactly_one_request(tmp_path):
    result, fake = run(tmp_path, lambda number, body: "quota")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "quota exhausted" in lines[0]
    assert fake.count == 1
    run_info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_info["status"] == "failed"
    assert run_info["stats"]["requests"] == 1 and run_info["stats"]["retries"] == 0


def test_server_that_never_answers_stops_with_one_line(tmp_path):
    result, fake = run(tmp_path, lambda n, b: "500")
    assert result.returncode == 1
    assert "describe request failed after 4 attempts" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(fake.requests) == MAX_ATTEMPTS


def test_wrong_key_is_fatal_not_retried(tmp_path):
    class Unauthorised(FakeOpenAI):
        async def chat(self, request):
            self.count += 1
            return self.error(
                401, "Incorrect API key provided: sk-test-***.", "invalid_request_error", "invalid_api_key"
            )

    a = write_jsonl(tmp_path / "a.jsonl", fruit_rows("apple", 5))
    fake = Unauthorised()
    with ServerThread(fake) as server:
        result = run_cli(
            "compare",
            a,
            a,
            "--base-url",
            server.base_url,
            "--model",
            "m",
            "--output",
            tmp_path / "out",
            "--quiet",
        )
    assert result.returncode == 1
    assert "not authorised" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert fake.count == 1


def test_endpoint_without_logprobs_stops_early(tmp_path):
    """OpenRouter-style: every answer comes with ``logprobs: null``. Stop, do not pay for every row."""

    def fault(number: int, body: dict) -> str | None:
        return "null_logprobs" if is_classify(body) else None

    result, fake = run(tmp_path, fault, "--concurrency", "8")
    assert result.returncode == 1
    assert "does not return logprobs" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # the 8 answers that tell, the at most 8 (--concurrency) in flight when the 8th arrives, and at most 8
    # more that had taken a freed slot before the stop reached them: a bound by the ceiling, not by timing
    # (without the early stop the run would send every row of both steps, several times over)
    assert len(fake.classify_requests()) <= 8 + 8 + 8
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "failed"


def test_a_refused_row_is_unscored_and_the_run_goes_on(tmp_path):
    """A content-policy refusal (400 invalid_prompt) is that row's problem, not the run's."""

    def fault(number: int, body: dict) -> str | None:
        return "refused" if is_classify(body) and "Answer 7:" in body["messages"][-1]["content"] else None

    result, fake = run(tmp_path, fault)
    assert result.returncode == 0, result.stderr
    predictions = pl.read_parquet(tmp_path / "out" / "predictions.parquet")
    refused = predictions.filter(pl.col("row") == 7)
    assert refused["p_a"].null_count() == 2
    assert all("refused by the API (HTTP 400 invalid_prompt)" in e for e in refused["error"])
    assert predictions["p_a"].null_count() == 2
    # a refusal is not retried (the same prompt gets the same answer) and not cached (asked again next run)
    refused_bodies = [b for b in fake.classify_requests() if "Answer 7:" in b["messages"][-1]["content"]]
    assert len({json.dumps(b, sort_keys=True) for b in refused_bodies}) == len(refused_bodies)


def test_every_row_refused_stops_the_run(tmp_path):
    result, fake = run(tmp_path, lambda n, body: "refused" if is_classify(body) else None)
    assert result.returncode == 1
    assert "in a row were refused" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len(fake.classify_requests()) <= 8 + 16


def test_a_refused_describe_request_stops_with_advice(tmp_path):
    result, fake = run(tmp_path, lambda n, body: None if is_classify(body) else "refused")
    assert result.returncode == 1
    assert "describe request was refused" in result.stderr and "--batch-size" in result.stderr
    assert len(fake.describe_requests()) == 1


def test_classify_takes_its_retry_settings_from_config(tmp_path):
    """`asyncpipe classify` honours --config like compare does (tries and waits between them)."""
    out = tmp_path / "compare"
    a, b = fruit_files(tmp_path, 5)
    cfg = tmp_path / "retries.yaml"
    cfg.write_text("max_attempts: 2\nretry_base_delay: 0.01\nretry_max_delay: 0.02\n")
    with ServerThread(FakeOpenAI()) as server:
        port = server.port
        assert run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--quiet").returncode == 0
    failing = FakeOpenAI(fault=lambda n, body: "500")
    with ServerThread(failing, port=port) as server:
        result = run_cli("classify", out / "classify.yaml", a, "--output", tmp_path / "reuse",
                         "--base-url", server.base_url, "--config", cfg, "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(failing.requests) == 5 * 2  # every row tried exactly max_attempts times
    errors = pl.read_parquet(tmp_path / "reuse" / "predictions.parquet")["error"].to_list()
    assert all(e.startswith("gave up after 2 attempts") for e in errors)


def test_a_describe_request_has_its_own_longer_timeout(tmp_path):
    """A describe answer is up to --describe-max-tokens long, and a busy self-hosted server writes it
    slowly: it is bounded by --describe-timeout, not by the classify requests' --timeout."""
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI(describe_latency=1.5)  # every describe answer takes 1.5 s, classify answers none
    common = ["--batch-size", "8", "--max-steps", "1", "--timeout", "0.5", "--max-attempts", "2", "--quiet"]
    with ServerThread(fake) as server:
        patient = run_cli(
            *fake_compare(server, a, b, tmp_path / "patient"), *common, "--describe-timeout", "10"
        )
        assert patient.returncode == 0, patient.stderr
        run_info = json.loads((tmp_path / "patient" / "run.json").read_text())
        assert run_info["stats"]["timeouts"] == 0 and run_info["stats"]["retries"] == 0
        hasty = run_cli(*fake_compare(server, a, b, tmp_path / "hasty"), *common, "--describe-timeout", "0.5")
    assert hasty.returncode == 1
    assert (
        "describe request failed after 2 attempts: no answer within 0.5s (--describe-timeout)" in hasty.stderr
    )
