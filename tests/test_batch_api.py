"""``--batch-api``: the final classification as Batch API jobs, against the fake server's Batch
endpoints, through the real command line. Polls are kept short with ``--poll-interval``."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from tests.conftest import fake_compare, fruit_files, fruit_rows, run_cli, start_cli
from tests.fake_batch import run_batch_file
from tests.fake_openai import FakeOpenAI, ServerThread, is_classify, row_of

POLL = ("--poll-interval", "0.01")


def wait_until(condition, process, limit: float = 300.0) -> None:
    """Poll for a condition while the run goes on (bounded), rather than sleeping for a guessed time."""
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the run ended first: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@dataclass
class Killed:
    """A ``compare --batch-api`` run killed while its batch was held in progress by the fake."""

    fake: FakeOpenAI
    server: ServerThread
    a: Path
    b: Path
    out: Path
    args: list


def submitted(run: Killed) -> bool:
    return any(p["state"] == "submitted" for p in ledger(run.out))


@contextmanager
def killed_while_held(tmp_path: Path, until: Callable[[Killed], bool] = submitted) -> Iterator[Killed]:
    """Start a ``--batch-api`` run against a fake whose batches stay in progress, wait (bounded) until
    ``until`` holds, ``kill -9`` it, and hand over the run with the server still up (the batch still held)."""
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.hold.set()
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        run = Killed(fake, server, a, b, out, compare_args(server, a, b, out, "--batch-api", *POLL))
        process = start_cli(*run.args)
        wait_until(lambda: until(run), process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=20)
        yield run


def compare_args(server: ServerThread, a: Path, b: Path, out: Path, *extra) -> list:
    return [*fake_compare(server, a, b, out), "--max-steps", "2", "--quiet", *extra]


def ledger(out: Path) -> list[dict]:
    path = out / "batches" / "batches.json"
    return json.loads(path.read_text())["parts"] if path.is_file() else []


def read_outputs(out: Path) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    return (
        yaml.safe_load((out / "classify.yaml").read_text()),
        pl.read_parquet(out / "predictions.parquet"),
        pl.read_parquet(out / "metrics.parquet"),
    )


def test_batch_run_equals_online_run_and_sends_no_online_final_request(tmp_path):
    a, b = fruit_files(tmp_path)
    config = tmp_path / "small-files.yaml"
    config.write_text("batch_max_requests: 15\n")  # 40 final-pass requests: three request files
    fake = FakeOpenAI()  # descriptions are numbered by the requests recorded: cleared between the runs
    fake.batch.poll_errors = 3  # the first polls answer 503: polling goes on
    with ServerThread(fake) as server:
        online = run_cli(*compare_args(server, a, b, tmp_path / "online"))
        assert online.returncode == 0, online.stderr
        online_bodies = [json.dumps(body, sort_keys=True) for body in fake.classify_requests()]
        fake.requests.clear()
        batch = run_cli(
            *compare_args(server, a, b, tmp_path / "batch", "--batch-api", *POLL, "--config", config)
        )
    assert batch.returncode == 0, batch.stderr
    assert "Traceback" not in batch.stderr
    # the same classifier, predictions and metrics as the online run
    online_out, batch_out = read_outputs(tmp_path / "online"), read_outputs(tmp_path / "batch")
    assert online_out[0] == batch_out[0]
    assert online_out[1].equals(batch_out[1])
    assert online_out[2].equals(batch_out[2])
    # split at 15 requests a file: three batches, each line's body exactly an online request's body
    assert fake.batch.created == 3
    assert [p["requests"] for p in ledger(tmp_path / "batch")] == [15, 15, 10]
    lines = [json.dumps(body, sort_keys=True) for _, body in fake.batch.lines]
    assert len(lines) == len(set(lines)) == 40
    assert set(lines) <= set(online_bodies)
    # the final pass sent nothing online: the batch run's online classify requests are the steps' only
    batch_online = [json.dumps(body, sort_keys=True) for body in fake.classify_requests()]
    assert not set(lines) & set(batch_online)
    assert len(batch_online) + len(lines) == len(online_bodies)
    # uploaded with purpose batch; progress and counts in run.json
    assert {f["purpose"] for f in fake.batch.files.values()} >= {"batch", "batch_output"}
    run = json.loads((tmp_path / "batch" / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["batches"]["completed"] == 40 and run["batches"]["open"] == 0
    assert run["stats"]["by_role"]["classify_batch"]["requests"] == 40
    assert all(p["state"] == "done" and p["batch_status"] == "completed" for p in ledger(tmp_path / "batch"))
    # the record has the permissions of any new file (umask), like every other output, not mkstemp's 0600
    records = tmp_path / "batch" / "batches"
    assert (records / "batches.json").stat().st_mode & 0o777 == (
        records / "requests-0001.ids"
    ).stat().st_mode & 0o777


def test_kill_while_polling_then_rerun_polls_the_same_batch(tmp_path):
    with killed_while_held(tmp_path, lambda run: submitted(run) and run.fake.batch.polls >= 3) as run:
        fake, out = run.fake, run.out
        assert fake.batch.created == 1
        fake.batch.hold.clear()  # the batch stayed in_progress until now
        again = run_cli(*run.args)
    assert again.returncode == 0, again.stderr
    assert fake.batch.created == 1  # polled the recorded batch, never submitted a second one
    assert len(fake.batch.lines) == 40
    assert pl.read_parquet(out / "predictions.parquet")["p_a"].null_count() == 0


def test_a_batch_created_but_not_recorded_is_found_by_its_file(tmp_path):
    with killed_while_held(tmp_path) as run:
        fake, out, args = run.fake, run.out, run.args
        # as if the kill had come between creating the batch and recording it
        path = out / "batches" / "batches.json"
        data = json.loads(path.read_text())
        data["parts"][0].update(state="uploaded", batch_id=None)
        path.write_text(json.dumps(data))
        fake.batch.hold.clear()
        again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert fake.batch.created == 1
    assert "was submitted before it could be recorded" in again.stderr or "--quiet" in args


def test_expired_half_done_batch_completes_after_one_resubmission(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.expire_after = 20  # the first batch expires with 20 of its 40 lines done
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
        online = [b for b in fake.requests if is_classify(b)]
    assert result.returncode == 0, result.stderr
    assert fake.batch.created == 2
    parts = ledger(out)
    assert [(p["batch_status"], p["requests"]) for p in parts] == [("expired", 40), ("completed", 20)]
    assert parts[0]["resubmitted_as"] == parts[1]["name"]
    assert len(fake.batch.lines) == 40  # every line answered once: 20 before expiry, 20 after
    assert len(online) == 80  # the steps' requests only: nothing of the final pass went online
    assert pl.read_parquet(out / "predictions.parquet")["p_a"].null_count() == 0


def test_error_lines_go_online_and_refused_lines_are_unscored(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    faulted: dict[str, str] = {}  # row → fault: the first line a server error, the second refused

    def line_fault(_custom_id: str, body: dict) -> str | None:
        if len(faulted) < 2:
            faulted[row_of(body)] = "server_error" if not faulted else "refused"
        return faulted.get(row_of(body))

    fake.batch.line_fault = line_fault
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
        online = fake.classify_requests()
    assert result.returncode == 0, result.stderr
    failed, refused = list(faulted)
    selected = yaml.safe_load((out / "classify.yaml").read_text())["description"]
    # the online requests made with the selected description (its step's, and any of the final pass)
    online_rows = [row_of(body) for body in online if selected in body["messages"][0]["content"]]
    assert fake.batch.created == 1  # no follow-up batch: failed lines go online
    # the server error was retried online by the usual policy, and scored
    assert online_rows.count(failed) == 1  # in the final pass, after its batch line failed
    # the refusal is unscored with its reason, as online, and was not sent again
    assert online_rows.count(refused) == 0
    predictions = pl.read_parquet(out / "predictions.parquet")
    unscored = predictions.filter(pl.col("p_a").is_null())
    assert unscored.height == 1
    assert unscored["error"][0].startswith("refused by the API (HTTP 400 invalid_prompt): Invalid prompt")


def test_failed_validation_stops_with_the_providers_message(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.fail_validation = "The model 'fake-model' is not supported by the Batch API."
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("asyncpipe: error: batch batch_fake1 (requests-0001) failed:")
    assert "is not supported by the Batch API" in message
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed"
    assert not (out / "classify.yaml").exists()


def test_batches_lists_and_cancel_stops_the_run(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.hold.set()
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        process = start_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
        wait_until(lambda: any(p["state"] == "submitted" for p in ledger(out)), process)
        listing = run_cli("batches", out)
        cancel = run_cli("batches", out, "--cancel", "--base-url", server.base_url)
        _, stderr = process.communicate(timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "batch_fake1" in listing.stdout and "submitted" in listing.stdout
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelling 1 batch(es): batch_fake1" in cancel.stdout
    assert process.returncode == 1
    assert "batch batch_fake1 was cancelled" in stderr.strip().splitlines()[-1]
    after = run_cli("batches", out)
    assert "cancelled" in after.stdout


def test_cancel_refuses_another_endpoint_than_the_runs(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.fail_validation = "no"
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        run_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
    result = run_cli("batches", out, "--cancel", "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2
    assert "pass --base-url http://127.0.0.1" in result.stderr


def test_dry_run_prices_the_final_pass_at_half(tmp_path):
    a, b = fruit_files(tmp_path)
    common = ["compare", a, b, "--model", "gpt-4.1-mini", "--dry-run", "--output", tmp_path / "o"]
    online = run_cli(*common)
    batch = run_cli(*common, "--batch-api")
    assert online.returncode == 0 and batch.returncode == 0, batch.stderr

    def costs(text: str) -> dict[str, float]:
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if (
                len(parts) >= 2
                and parts[0] in ("describe", "classify", "batch", "total")
                and parts[1].startswith("$")
            ):
                out[parts[0]] = float(parts[1].strip("$").replace(",", ""))
        return out

    on, off = costs(online.stdout), costs(batch.stdout)
    assert "$0.20 in / $0.80 out per million tokens" in batch.stdout  # gpt-4.1-mini at half price
    assert off["describe"] == on["describe"]
    final_online = on["classify"] - off["classify"]  # what the final pass costs online
    assert final_online > 0
    assert abs(off["batch"] - final_online / 2) < 0.0002
    assert off["total"] < on["total"]


def test_batch_api_is_refused_for_the_embedded_model(tmp_path):
    a, b = fruit_files(tmp_path)
    result = run_cli("compare", a, b, "--model", "local", "--batch-api", "--output", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "asyncpipe: error: --batch-api needs an API model; the embedded model runs in this process, not in batches"
    ]
    assert not (tmp_path / "o").exists()


def test_export_then_import_continues_the_run(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        exported = run_cli(*compare_args(server, a, b, out, "--batch-api", "export"))
        assert exported.returncode == 0, exported.stderr
        files = sorted((out / "batches").glob("requests-*.jsonl"))
        assert len(files) == 1
        assert (
            f"vllm run-batch -i {files[0]} -o {files[0].with_suffix('.out.jsonl')} --model fake-model"
            in exported.stdout
        )
        assert json.loads((out / "run.json").read_text())["status"] == "exported"
        assert not (out / "classify.yaml").exists()
        first = json.loads(files[0].read_text().splitlines()[0])
        assert set(first) == {"custom_id", "method", "url", "body"}
        assert (first["method"], first["url"]) == ("POST", "/v1/chat/completions")
        run_batch_file(fake, str(files[0]), str(files[0].with_suffix(".out.jsonl")))  # as vllm run-batch
        steps_requests = len(fake.classify_requests())
        imported = run_cli(
            *compare_args(server, a, b, out, "--batch-api", f"import={files[0].with_suffix('.out.jsonl')}")
        )
        assert imported.returncode == 0, imported.stderr
        assert len(fake.classify_requests()) == steps_requests  # the final pass came from the file
    assert fake.batch.created == 0
    assert pl.read_parquet(out / "predictions.parquet")["p_a"].null_count() == 0


def test_classify_command_with_batch_api_equals_online(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        assert run_cli(*compare_args(server, a, b, tmp_path / "run")).returncode == 0
        classifier = tmp_path / "run" / "classify.yaml"
        common = ["classify", classifier, a, b, "--base-url", server.base_url, "--quiet"]
        online = run_cli(*common, "--output", tmp_path / "online")
        assert online.returncode == 0, online.stderr
        fake.requests.clear()
        batch = run_cli(*common, "--output", tmp_path / "batch", "--batch-api", *POLL)
    assert batch.returncode == 0, batch.stderr
    assert fake.classify_requests() == []
    assert fake.batch.created == 1
    for name in ("predictions.parquet", "metrics.parquet"):
        assert pl.read_parquet(tmp_path / "online" / name).equals(pl.read_parquet(tmp_path / "batch" / name))


def test_pairs_send_each_pairs_final_pass_as_batches(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for fruit in ("apple", "banana", "cherry"):
        (folder / f"{fruit}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fruit_rows(fruit, 16)))
    fake = FakeOpenAI()
    out = tmp_path / "pairs"
    with ServerThread(fake) as server:
        common = ["pairs", folder, "--base-url", server.base_url, "--model", "fake-model", "--output", out]
        common += ["--batch-size", "8", "--max-steps", "1", "--quiet", "--batch-api"]
        result = run_cli(*common, *POLL)
    assert result.returncode == 0, result.stderr
    pair_dirs = sorted(p.parent.parent for p in out.glob("*/batches/batches.json"))
    assert len(pair_dirs) == 3 and fake.batch.created == 3  # one batch per pair, in the pair's folder
    for pair in pair_dirs:
        assert json.loads((pair / "run.json").read_text())["status"] == "complete"
    listing = run_cli("batches", out)
    assert listing.returncode == 0 and listing.stdout.count("batch_fake") == 3


def test_a_batch_api_without_logprobs_stops_instead_of_going_online(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.line_fault = lambda _custom_id, _body: "no_logprobs"
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
        steps_requests = 80  # two steps of 32 rows and 8 held-out rows each
        assert len(fake.classify_requests()) == steps_requests  # the 40 failed lines were not sent online
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "answers came without logprobs and none with them" in last and "run without --batch-api" in last
    assert ledger(out)[0]["state"] == "failed"


def test_an_endpoint_without_batch_api_stops_with_advice(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    fake.batch.enabled = False  # like a vLLM server: chat completions only
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*compare_args(server, a, b, out, "--batch-api", *POLL))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "/files: HTTP 404" in last and "use --batch-api export and vllm run-batch" in last
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert ledger(out)[0]["state"] == "written"  # recorded, not sent: a later run picks it up


def test_run_json_prices_the_batch_answers_at_the_batch_discount(tmp_path):
    a, b = fruit_files(tmp_path)
    fake = FakeOpenAI()
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        args = ["compare", a, b, "--base-url", server.base_url, "--model", "gpt-4.1-mini", "--output", out]
        result = run_cli(*args, "--max-steps", "2", "--quiet", "--batch-api", *POLL)
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "run.json").read_text())["stats"]

    def cost(role: dict, factor: float) -> float:  # gpt-4.1-mini: $0.40 in, $0.10 cached, $1.60 out
        uncached = role["prompt_tokens"] - role["cached_tokens"]
        return (
            factor * (uncached * 0.40 + role["cached_tokens"] * 0.10 + role["completion_tokens"] * 1.60) / 1e6
        )

    roles = stats["by_role"]
    assert roles["classify_batch"]["requests"] == 40 and roles["classify_batch"]["prompt_tokens"] > 0
    expected = (
        cost(roles["describe"], 1.0) + cost(roles["classify"], 1.0) + cost(roles["classify_batch"], 0.5)
    )
    assert abs(stats["estimated_cost_usd"] - expected) < 1e-12


def test_a_run_without_batch_api_warns_of_batches_left_open(tmp_path):
    with killed_while_held(tmp_path) as run:
        out = run.out
        online = run_cli(*fake_compare(run.server, run.a, run.b, out), "--max-steps", "2")
    assert online.returncode == 0, online.stderr
    assert "note: 1 batch(es) of an earlier --batch-api run are still open (batch_fake1)" in online.stderr
    assert f"asyncpipe batches {out} --cancel" in online.stderr
