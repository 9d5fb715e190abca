"""``--batch-api`` for the property checks: in ``compare`` (with the final pass, in one wait), in
``classify`` (the saved properties) and in the ``properties`` command, against the fake server's Batch
endpoints, through the real command line. The answers are read as 'yes'/'no', not as 'A'/'B': the same
outputs as an online run, and no property check sent online."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from tests.conftest import fake_compare, run_cli
from tests.fake_batch import run_batch_file
from tests.fake_openai import FakeOpenAI, ServerThread
from tests.test_batch_api import killed_while_held, ledger
from tests.test_properties_e2e import PLANTED, PROPS, REPLY, _check_planted, planted_files

POLL = ("--poll-interval", "0.01")
YES_NO_KEY = "yes/no/fold-case"


def compare_argv(server: ServerThread, a: Path, b: Path, out: Path) -> list:
    return [*fake_compare(server, a, b, out), "--batch-size", "8", "--max-steps", "1",
            "--validation-fraction", "0.3", "--test-fraction", "0.3", "--properties", "5", "--quiet"]  # fmt: skip


def parts(out: Path) -> list[dict]:
    return json.loads((out / "batches" / "batches.json").read_text())["parts"]


def same_frames(one: Path, other: Path, *names: str) -> None:
    for name in names:
        assert pl.read_parquet(one / name).equals(pl.read_parquet(other / name)), name


def test_compare_sends_the_property_checks_with_the_final_pass_and_reads_them_as_yes_no(tmp_path):
    a, b = planted_files(tmp_path)
    fake = FakeOpenAI(property_reply=REPLY)
    with ServerThread(fake) as server:
        online = run_cli(*compare_argv(server, a, b, tmp_path / "online"))
        assert online.returncode == 0, online.stderr
        online_checks = {json.dumps(body, sort_keys=True) for body in fake.property_check_requests()}
        fake.requests.clear()
        batch = run_cli(*compare_argv(server, a, b, tmp_path / "batch"), "--batch-api", *POLL)
    assert batch.returncode == 0, batch.stderr
    # no property check went online, and each batch line of a check is exactly an online check's body
    assert fake.property_check_requests() == []
    lines = {json.dumps(body, sort_keys=True) for _, body in fake.batch.lines}
    assert online_checks <= lines
    # one wait: the classification and the checks in one submission, in files of their own
    labels = [p["labels"] for p in parts(tmp_path / "batch")]
    assert sorted(set(labels)) == ["A/B", YES_NO_KEY] and fake.batch.created == 2
    # read as yes/no: the same properties, prevalences and tests as online
    same_frames(tmp_path / "online", tmp_path / "batch", "properties.parquet", "property_scores.parquet")
    same_frames(tmp_path / "online", tmp_path / "batch", "predictions.parquet")
    table = pl.read_parquet(tmp_path / "batch" / "properties.parquet")
    _check_planted(table, {w: PLANTED[w] for w in PLANTED})
    assert pl.read_parquet(tmp_path / "batch" / "property_scores.parquet")["p_yes"].null_count() == 0


def test_compare_dry_run_prices_the_property_checks_at_the_batch_price(server, tmp_path):
    a, b = planted_files(tmp_path)
    argv = compare_argv(server, a, b, tmp_path / "out")
    online = run_cli(*argv, "--model", "gpt-4.1-mini", "--dry-run")
    batch = run_cli(*argv, "--model", "gpt-4.1-mini", "--dry-run", "--batch-api")
    assert online.returncode == 0 and batch.returncode == 0, batch.stderr

    def checks_cost(text: str) -> float:
        line = next(line for line in text.splitlines() if line.strip().startswith("property checks  $"))
        return float(line.split("$")[1].split()[0].replace(",", ""))

    assert "each is checked on 120 rows, as Batch API jobs" in batch.stdout
    assert abs(checks_cost(batch.stdout) - checks_cost(online.stdout) / 2) < 1e-4


def test_export_writes_the_checks_beside_the_final_pass_and_import_reads_both(tmp_path):
    a, b = planted_files(tmp_path)
    fake = FakeOpenAI(property_reply=REPLY)
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        exported = run_cli(*compare_argv(server, a, b, out), "--batch-api", "export")
        assert exported.returncode == 0, exported.stderr
        files = sorted((out / "batches").glob("requests-*.jsonl"))
        assert [p["labels"] for p in parts(out)] == ["A/B", YES_NO_KEY] and len(files) == 2
        results = []
        for file in files:  # as vllm run-batch would, one file at a time
            results.append(file.with_suffix(".out.jsonl"))
            run_batch_file(fake, str(file), str(results[-1]))
        imported = run_cli(
            *compare_argv(server, a, b, out), "--batch-api", "import=" + ",".join(map(str, results))
        )
        assert imported.returncode == 0, imported.stderr
    assert fake.property_check_requests() == [] and fake.batch.created == 0
    scores = pl.read_parquet(out / "property_scores.parquet")
    assert scores["p_yes"].null_count() == 0
    _check_planted(pl.read_parquet(out / "properties.parquet"), {w: PLANTED[w] for w in PLANTED})


def test_classify_checks_the_saved_properties_through_the_batch_api(tmp_path):
    a, b = planted_files(tmp_path)
    fake = FakeOpenAI(property_reply=REPLY)
    with ServerThread(fake) as server:
        assert run_cli(*compare_argv(server, a, b, tmp_path / "run")).returncode == 0
        common = [
            "classify",
            tmp_path / "run" / "classify.yaml",
            a,
            b,
            "--base-url",
            server.base_url,
            "--quiet",
        ]
        online = run_cli(*common, "--output", tmp_path / "online")
        assert online.returncode == 0, online.stderr
        fake.requests.clear()
        batch = run_cli(*common, "--output", tmp_path / "batch", "--batch-api", *POLL)
    assert batch.returncode == 0, batch.stderr
    assert fake.property_check_requests() == [] and fake.classify_requests() == []
    assert sorted({p["labels"] for p in parts(tmp_path / "batch")}) == ["A/B", YES_NO_KEY]
    same_frames(tmp_path / "online", tmp_path / "batch", "predictions.parquet", "properties.parquet")
    same_frames(tmp_path / "online", tmp_path / "batch", "property_scores.parquet")


def test_the_properties_command_checks_through_the_batch_api(tmp_path):
    a, b = planted_files(tmp_path)
    props = tmp_path / "props.yaml"
    props.write_text(PROPS)
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        common = ["properties", props, a, b, "--against", "base", "--base-url", server.base_url,
                  "--model", "fake-model", "--quiet"]  # fmt: skip
        online = run_cli(*common, "--output", tmp_path / "online")
        assert online.returncode == 0, online.stderr
        fake.requests.clear()
        sent = fake.count
        dry = run_cli(*common, "--output", tmp_path / "batch", "--batch-api", "--dry-run")
        assert (
            dry.returncode == 0
            and "property checks         600  (fake-model), as Batch API jobs" in dry.stdout
        )
        assert fake.count == sent
        batch = run_cli(*common, "--output", tmp_path / "batch", "--batch-api", *POLL)
    assert batch.returncode == 0, batch.stderr
    assert fake.property_check_requests() == [] and fake.batch.created == 1
    assert [p["labels"] for p in parts(tmp_path / "batch")] == [YES_NO_KEY]
    same_frames(tmp_path / "online", tmp_path / "batch", "properties.parquet", "property_scores.parquet")
    run = json.loads((tmp_path / "batch" / "run.json").read_text())
    assert run["status"] == "complete" and run["batch_stats"]["requests"] == len(fake.batch.lines)
    assert run["batches"]["completed"] == len(fake.batch.lines)


def test_batches_shows_an_open_batch_as_the_provider_reports_it_now(tmp_path):
    """The ledger holds what the run last saw; ``asyncpipe batches`` asks the endpoint (the one given,
    never one read from the directory) about the batches still open."""

    def in_progress(run) -> bool:
        return any(p["batch_status"] == "in_progress" for p in ledger(run.out))

    with killed_while_held(tmp_path, in_progress) as run:
        fake, server, out = run.fake, run.server, run.out
        fake.batch.hold.clear()
        polls = fake.batch.polls
        elsewhere = run_cli("batches", out)  # no --base-url: the run's endpoint is not asked
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert fake.batch.polls == polls and "in_progress " in elsewhere.stdout
        assert f"pass --base-url {server.base_url} to ask it now" in elsewhere.stdout
        now = [run_cli("batches", out, "--base-url", server.base_url) for _ in range(2)]
    assert all(r.returncode == 0 for r in now), now[-1].stderr
    assert "finalizing*" in now[0].stdout and "completed*" in now[1].stdout
    row = next(line for line in now[1].stdout.splitlines() if "batch_fake1" in line).split()
    assert row[-3:] == ["40", "0", "40"]  # completed, failed, total: the provider's counts
    assert "* as the provider reports it now" in now[1].stdout
    assert ledger(out)[0]["batch_status"] == "in_progress"  # listing writes nothing
