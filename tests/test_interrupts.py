"""Interrupted runs: Ctrl-C stops gracefully; kill -9 then the same command finishes the job without
sending again any request whose answer had been stored, and gives the same outputs."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import polars as pl
import yaml

from tests.conftest import fruit_rows, run_cli, start_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread, is_classify, is_property_list


def wait_until(condition, process) -> None:
    """Poll for a condition while the run goes on, rather than sleeping for a guessed time; no clock is
    read, so a slow machine only makes the wait longer. Fails if the run ends first."""
    while not condition():
        assert process.poll() is None, "the run ended before the moment to interrupt it"
        time.sleep(0.02)


def inputs(tmp_path: Path):
    return (
        write_jsonl(tmp_path / "a.jsonl", fruit_rows("apple", 40)),
        write_jsonl(tmp_path / "b.jsonl", fruit_rows("banana", 40)),
    )


def command(a, b, base_url, out):
    return [
        "compare",
        a,
        b,
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--output",
        out,
        "--batch-size",
        "8",
        "--max-steps",
        "2",
        "--concurrency",
        "4",
        "--quiet",
    ]


def test_ctrl_c_stops_gracefully(tmp_path):
    a, b = inputs(tmp_path)
    fake = FakeOpenAI(latency=0.05)
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        process = start_cli(*command(a, b, server.base_url, out))
        wait_until(lambda: fake.count >= 10, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    first, last = stderr.strip().splitlines()
    assert first.startswith("asyncpipe: Ctrl-C: sending nothing more; waiting up to 10 s for the ")
    assert last == "asyncpipe: interrupted; finished work is saved — run the same command again to continue"
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert (out / "index.html").is_file()
    assert not (out / "classify.yaml").exists()


def test_ctrl_c_in_the_final_pass_keeps_the_answers_in_flight(tmp_path):
    """One Ctrl-C during the final pass: no new request is sent, the answers in flight arrive (well within
    the wait) and are stored, so the next run asks for none of them again."""
    a, b = inputs(tmp_path)
    step_classify = 2 * (2 * 8 + 2 * 4)
    fake = FakeOpenAI(latency=0.3)
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        port = server.port
        process = start_cli(*command(a, b, server.base_url, out))
        wait_until(lambda: len(fake.classify_requests()) >= step_classify + 10, process)
        process.send_signal(signal.SIGINT)
        at_signal = len(fake.requests)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "waiting up to 10 s" in stderr
    # nothing new after the Ctrl-C: at most the requests already on their way (concurrency 4)
    assert len(fake.requests) <= at_signal + 4
    first_run = [json.dumps(body, sort_keys=True) for body in fake.classify_requests()]
    with sqlite3.connect(out / "cache.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM responses WHERE kind = 'score'").fetchone()[0]
    assert stored == len(first_run), "every answer that came within the wait is stored"
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"

    again = FakeOpenAI()
    with ServerThread(again, port=port) as server:
        result = run_cli(*command(a, b, server.base_url, out))
    assert result.returncode == 0, result.stderr
    repeated = [
        body for body in again.classify_requests() if json.dumps(body, sort_keys=True) in set(first_run)
    ]
    assert repeated == [], "a request whose answer was in flight at the Ctrl-C was sent again"


def test_kill_9_in_the_final_pass_then_resume(tmp_path):
    a, b = inputs(tmp_path)
    # reference: the same command, uninterrupted, in its own directory
    reference = FakeOpenAI()
    with ServerThread(reference) as server:
        port = server.port  # one endpoint throughout: the same command again means the same base URL
        assert run_cli(*command(a, b, server.base_url, tmp_path / "ref")).returncode == 0
    total_classify = len(reference.classify_requests())
    step_classify = 2 * (2 * 8 + 2 * 4)

    fake = FakeOpenAI(latency=0.03)
    out = tmp_path / "out"
    with ServerThread(fake, port=port) as server:
        process = start_cli(*command(a, b, server.base_url, out))
        wait_until(lambda: len(fake.classify_requests()) >= step_classify + 20, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    first_run = fake.classify_requests()

    # whatever was left behind is whole, never half a file
    for name in ("run.json", "steps.jsonl", "metrics.parquet", "classify.yaml", "predictions.parquet"):
        path = out / name
        if path.exists():
            {"json": json.loads, "jsonl": lambda t: [json.loads(x) for x in t.splitlines()]}.get(
                path.suffix[1:], lambda _t: None
            )(path.read_text() if path.suffix != ".parquet" else "")
            if path.suffix == ".parquet":
                pl.read_parquet(path)
            if path.suffix == ".yaml":
                yaml.safe_load(path.read_text())
    with sqlite3.connect(out / "cache.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM responses WHERE kind = 'score'").fetchone()[0]
    assert stored >= step_classify

    again = FakeOpenAI()
    with ServerThread(again, port=port) as server:
        result = run_cli(*command(a, b, server.base_url, out))
    assert result.returncode == 0, result.stderr
    assert again.describe_requests() == [], "finished describe steps were asked again"
    # exactly the answers that were not stored are asked for; nothing stored is sent twice
    assert len(again.classify_requests()) == total_classify - stored
    seen = {json.dumps(body, sort_keys=True) for body in first_run}
    repeated = [body for body in again.classify_requests() if json.dumps(body, sort_keys=True) in seen]
    assert len(repeated) <= 4, "only requests in flight at the kill may be asked again"
    # besides the answers not stored: the properties stage (after the final pass) lists its properties
    assert all(is_classify(body) or is_property_list(body) for body in again.requests)

    for name in ("classify.yaml", "predictions.parquet", "metrics.parquet", "steps.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def describe_by_step(body: dict, _number: int) -> str:
    """A description numbered by the step asking for it (its prompt lists the earlier ones), so that a
    resumed run, on a fresh server, gets the same text for the same step."""
    step = body["messages"][-1]["content"].count("<description step=") + 1
    return f"Description {step}: rows of dataset A talk about apples; rows of dataset B talk about bananas."


def test_kill_9_in_a_describe_step_then_resume(tmp_path):
    """Killed while step 2's description is on its way: the same command asks for that description once
    more and for nothing it had stored, and ends with the outputs of an uninterrupted run."""
    a, b = inputs(tmp_path)
    reference = FakeOpenAI(describer=describe_by_step)
    with ServerThread(reference) as server:
        port = server.port
        assert run_cli(*command(a, b, server.base_url, tmp_path / "ref")).returncode == 0
    assert len(reference.describe_requests()) == 2

    fake = FakeOpenAI(describer=describe_by_step, describe_latency=1.0)
    out = tmp_path / "out"
    with ServerThread(fake, port=port) as server:
        process = start_cli(*command(a, b, server.base_url, out))
        wait_until(lambda: len(fake.describe_requests()) == 2, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    in_flight = fake.describe_requests()[1]
    assert in_flight == reference.describe_requests()[1]
    first_run = {json.dumps(body, sort_keys=True) for body in fake.classify_requests()}
    with sqlite3.connect(out / "cache.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM responses WHERE kind = 'score'").fetchone()[0]
    assert stored == len(first_run) > 0  # step 1 was classified whole before step 2's describe began

    again = FakeOpenAI(describer=describe_by_step)
    with ServerThread(again, port=port) as server:
        result = run_cli(*command(a, b, server.base_url, out))
    assert result.returncode == 0, result.stderr
    assert again.describe_requests() == [in_flight], "step 1's description was bought again"
    assert len(again.classify_requests()) == len(reference.classify_requests()) - stored
    assert not [body for body in again.classify_requests() if json.dumps(body, sort_keys=True) in first_run]
    for name in ("classify.yaml", "predictions.parquet", "metrics.parquet", "steps.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_rerun_after_a_row_gave_up_buys_no_step_again(tmp_path):
    """A row that failed all its tries is asked again by the next run, and nothing else is: the finished
    steps are restored as recorded, so their describe prompts (which carry the metrics) do not change."""
    a, b = inputs(tmp_path)
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("retry_base_delay: 0.01\nretry_max_delay: 0.02\n")
    flaky = FakeOpenAI(
        fault=lambda n, body: (
            "500" if is_classify(body) and "Answer 3:" in body["messages"][-1]["content"] else None
        )
    )
    with ServerThread(flaky) as server:
        port = server.port
        first = run_cli(
            *command(a, b, server.base_url, tmp_path / "out"), "--config", cfg, "--max-attempts", "2"
        )
    assert first.returncode == 0, first.stderr
    assert pl.read_parquet(tmp_path / "out" / "predictions.parquet")["p_a"].null_count() == 2

    healed = FakeOpenAI()
    with ServerThread(healed, port=port) as server:
        second = run_cli(
            *command(a, b, server.base_url, tmp_path / "out"), "--config", cfg, "--max-attempts", "2"
        )
    assert second.returncode == 0, second.stderr
    assert healed.describe_requests() == []
    assert [
        body for body in healed.classify_requests() if "Answer 3:" not in body["messages"][-1]["content"]
    ] == []
    assert len(healed.classify_requests()) == 2  # row 3 of A and of B, in the final pass
    assert pl.read_parquet(tmp_path / "out" / "predictions.parquet")["p_a"].null_count() == 0
    # run.json counts this invocation, and keeps the running total of both
    stats = json.loads((tmp_path / "out" / "run.json").read_text())["stats"]
    assert stats["requests"] == 2
    assert stats["all_invocations"]["requests"] == len(flaky.requests) + 2
    assert stats["all_invocations"]["invocations"] == 2
