"""Patience and racing through the real command line, against scripted descriptions of known quality.

The data: 120 aligned rows per file, a quarter of the pairs held out for validation (30 pairs, so a race
runs on 20 of them and can save the other 10), batches of 8 pairs (10 steps). The fake's describer
writes step n's description with ``STRENGTHS[n - 1]`` and its classifier is as good as that strength."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import fake_compare, fruit_rows, run_cli, start_cli, write_jsonl
from tests.fake_openai import STRENGTH, FakeOpenAI, ServerThread, graded_scorer, scripted_describer

# step 3 is the best by far; steps 2 and 4-6 are clearly worse than the best before them
STRENGTHS = [1.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0]
VALIDATION_ROWS = 60  # 30 pairs, from each file
RACE_ROWS = 40  # 20 pairs
BATCH_ROWS = 16  # 8 pairs


def wait_for(condition, process) -> None:
    """Poll while the run goes on (no guessed sleep, no clock); fail if the run ends first."""
    while not condition():
        assert process.poll() is None, "the run ended before the moment to interrupt it"
        time.sleep(0.02)


def inputs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_jsonl(tmp_path / "a.jsonl", fruit_rows("apple", 120)),
        write_jsonl(tmp_path / "b.jsonl", fruit_rows("banana", 120)),
    )


def scripted(strengths: list[float] = STRENGTHS, **kwargs) -> FakeOpenAI:
    return FakeOpenAI(scorer=graded_scorer(), describer=scripted_describer(strengths, words=20), **kwargs)


def command(server: ServerThread, a: Path, b: Path, out: Path, *extra: str) -> list:
    return [
        *fake_compare(server, a, b, out), "--batch-size", "8", "--validation-fraction", "0.25", "--quiet", *extra,
    ]  # fmt: skip


def strength_of(body: dict) -> float:
    return float(STRENGTH.search(body["messages"][0]["content"]).group(1))


def classify_by_step(fake: FakeOpenAI) -> dict[float, int]:
    counts: dict[float, int] = {}
    for body in fake.classify_requests():
        counts[strength_of(body)] = counts.get(strength_of(body), 0) + 1
    return counts


def test_patience_ends_the_loop_and_says_why(tmp_path):
    a, b = inputs(tmp_path)
    fake = scripted()
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        cmd = command(server, a, b, out, "--patience", "3", "--race", "off")
        result = run_cli(*[c for c in cmd if c != "--quiet"])
    assert result.returncode == 0, result.stderr
    # best at step 3, then three steps without improvement: steps 7-10 are never bought
    assert len(fake.describe_requests()) == 6
    assert (
        "describe loop ends after step 6 of 10: no improvement in 3 steps (the best is step 3"
        in result.stderr
    )
    assert "Describe loop: 6 of 10 steps (no improvement in 3 steps)" in result.stderr
    run = json.loads((out / "run.json").read_text())
    loop = run["loop"]
    assert (loop["reason"], loop["after_step"], loop["steps_planned"], loop["early"]) == (
        "no improvement in 3 steps", 6, 10, True,
    )  # fmt: skip
    assert loop["steps_raced"] == 0 and run["selected_step"] == 3
    assert len((out / "steps.jsonl").read_text().splitlines()) == 6
    assert "no improvement in 3 steps" in (out / "index.html").read_text()
    # racing off: every description was scored on every validation row
    for strength, count in classify_by_step(fake).items():
        if strength != 2.5:  # the selected one also classifies every row in the final pass
            assert count % (BATCH_ROWS + VALIDATION_ROWS) == 0


def test_a_losing_description_is_scored_on_the_race_rows_only(tmp_path):
    a, b = inputs(tmp_path)
    fake = scripted()
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*command(server, a, b, out, "--patience", "3"))
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert steps[0]["race"] is None  # nothing to race against
    assert steps[1]["race"]["against"] == 1 and steps[1]["race"]["go_on"] is False
    assert steps[2]["race"]["against"] == 1 and steps[2]["race"]["go_on"] is True
    assert all(s["race"]["against"] == 3 and not s["race"]["go_on"] for s in steps[3:])
    assert steps[1]["race"]["lower_bound"] > 0 and steps[2]["race"]["mean_difference"] < 0
    # what was bought: the batch and 40 race rows for a loser; the batch and all 60 for the others
    by_strength = classify_by_step(fake)
    assert by_strength[1.0] == BATCH_ROWS + VALIDATION_ROWS
    assert by_strength[0.0] == 4 * (BATCH_ROWS + RACE_ROWS)
    # the selected step: its batch and every validation row, then the final pass over the other rows
    assert by_strength[2.5] == 240
    # losers keep their partial figures, marked as such; the selected step has every validation row
    metrics = pl.read_parquet(out / "metrics.parquet").filter(pl.col("phase") == "step")
    partial = metrics.filter(pl.col("split") == "validation_partial")
    assert sorted(partial["step"]) == [2, 4, 5, 6] and set(partial["n"]) == {RACE_ROWS}
    full = metrics.filter(pl.col("split") == "validation")
    assert sorted(full["step"]) == [1, 3] and set(full["n"]) == {VALIDATION_ROWS}
    run = json.loads((out / "run.json").read_text())
    assert run["selected_step"] == 3 and steps[2]["metrics"]["validation"]["n"] == VALIDATION_ROWS
    assert run["loop"]["steps_lost_race"] == [2, 4, 5, 6] and run["loop"]["race_pairs"] == 20
    # the describer is told that a loser's held-out figures cover the first rows only
    third = fake.describe_requests()[2]["messages"][-1]["content"]
    assert "on the first held-out rows only" in third
    assert "lost its race" in (out / "index.html").read_text()


def test_with_both_off_nothing_changes_where_neither_would_act(tmp_path):
    """Improving descriptions never lose a race and never run out of patience: the defaults then buy the
    same requests and write the same classifier, predictions and metrics as --patience 0 --race off, and
    steps.jsonl differs only by the race records."""
    a, b = inputs(tmp_path)
    runs, port = {}, 0
    for name, flags in (("off", ("--patience", "0", "--race", "off")), ("defaults", ())):
        fake = scripted([1.0, 1.5, 2.0, 2.5])
        with ServerThread(fake, port=port) as server:  # one base URL: classify.yaml names it
            port = server.port
            out = tmp_path / name
            result = run_cli(*command(server, a, b, out, "--max-steps", "4", *flags))
        assert result.returncode == 0, result.stderr
        runs[name] = (fake, out)
    (off, off_out), (on, on_out) = runs["off"], runs["defaults"]
    assert sorted(json.dumps(b, sort_keys=True) for b in off.requests) == sorted(
        json.dumps(b, sort_keys=True) for b in on.requests
    )
    for name in ("classify.yaml", "predictions.parquet", "metrics.parquet"):
        assert (off_out / name).read_bytes() == (on_out / name).read_bytes(), name
    off_steps = [json.loads(line) for line in (off_out / "steps.jsonl").read_text().splitlines()]
    on_steps = [json.loads(line) for line in (on_out / "steps.jsonl").read_text().splitlines()]
    assert all("race" not in s and "validation_p_a" not in s for s in off_steps)
    assert [s["race"]["go_on"] for s in on_steps[1:]] == [True, True, True]
    assert [
        {k: v for k, v in s.items() if k not in ("race", "validation_p_a")} for s in on_steps
    ] == off_steps
    assert json.loads((on_out / "run.json").read_text())["loop"]["reason"] == "--max-steps 4 reached"


def test_kill_9_mid_race_then_resume_buys_nothing_twice(tmp_path):
    a, b = inputs(tmp_path)
    reference = scripted()
    with ServerThread(reference) as server:
        port = server.port
        assert run_cli(*command(server, a, b, tmp_path / "ref", "--patience", "3")).returncode == 0
    total_classify = len(reference.classify_requests())

    fake = scripted(latency=0.02)
    out = tmp_path / "out"
    with ServerThread(fake, port=port) as server:
        process = start_cli(*command(server, a, b, out, "--patience", "3", "--concurrency", "4"))
        # in step 5: steps 1-4 bought 16 + 60, 16 + 40, 16 + 60, 16 + 40 rows
        wait_for(lambda: len(fake.classify_requests()) >= 264 + 10, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    first_run = fake.classify_requests()
    assert len(fake.describe_requests()) == 5
    with sqlite3.connect(out / "cache.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM responses WHERE kind = 'score'").fetchone()[0]

    again = scripted()
    with ServerThread(again, port=port) as server:
        result = run_cli(*command(server, a, b, out, "--patience", "3"))
    assert result.returncode == 0, result.stderr
    # the race and the patience count go on where they were: only step 6's description is new
    assert len(again.describe_requests()) == 1
    assert len(again.classify_requests()) == total_classify - stored
    seen = {json.dumps(body, sort_keys=True) for body in first_run}
    assert sum(json.dumps(body, sort_keys=True) in seen for body in again.classify_requests()) <= 4
    for name in ("classify.yaml", "predictions.parquet", "metrics.parquet", "steps.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--patience", "-1"], "--patience: expected a number ≥ 0"),
        (["--race", "maybe"], "--race: invalid choice"),
    ],
)
def test_bad_flags_are_one_line(files, tmp_path, flags, message):
    a, b = files
    result = run_cli("compare", a, b, "--model", "fake-model", "--output", tmp_path / "out", *flags)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_setting_in_a_config_file_is_one_line(files, tmp_path):
    a, b = files
    config = tmp_path / "c.yaml"
    config.write_text("race: 3\n")
    result = run_cli(
        "compare",
        a,
        b,
        "--model",
        "fake-model",
        "--output",
        tmp_path / "out",
        "--config",
        config,
        "--dry-run",
    )
    assert result.returncode == 2 and "race must be true or false, got 3" in result.stderr


def test_the_providers_cached_share_is_reported_per_role(files, tmp_path):
    """The fake caches like OpenAI: a prefix seen before, from 1,024 tokens on. A long description makes
    the classify prompts' shared part cross that line; the describe prompts' system message does not."""
    a, b = files
    fake = FakeOpenAI(scorer=graded_scorer(), describer=scripted_describer([2.0], words=600))
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*fake_compare(server, a, b, out), "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "run.json").read_text())["stats"]
    classify, describe = stats["by_role"]["classify"], stats["by_role"]["describe"]
    assert classify["cached_tokens"] > 0 and describe["cached_tokens"] == 0
    assert classify["cached_share"] == classify["cached_tokens"] / classify["prompt_tokens"]
    assert 0.5 < classify["cached_share"] < 1 and describe["cached_share"] == 0
    assert stats["cached_share"] == stats["cached_tokens"] / stats["prompt_tokens"]
    shown = f"describe 0.0%, classify {100 * classify['cached_share']:.1f}%"
    assert f"Prompt tokens served from the provider's cache: {shown}" in result.stderr
    assert (
        f"classify {100 * classify['cached_share']:.1f}% of prompt tokens" in (out / "index.html").read_text()
    )


def test_dry_run_is_the_bound_and_says_what_stopping_may_save(tmp_path):
    from asyncpipe.cli import build_config, build_parser
    from asyncpipe.pipeline.estimate import estimate_run

    a, b = inputs(tmp_path)
    fake = scripted()
    with ServerThread(fake) as server:
        argv = [str(x) for x in command(server, a, b, tmp_path / "out", "--patience", "3")]
        cfg = build_config(build_parser().parse_args([*argv, "--dry-run"]), lambda _message: None)
        planned = estimate_run(cfg)
        text = planned.render()
        assert "--patience 3: the loop ends after 3 steps in a row without a lower validation loss; " in text
        assert "at the earliest after step 4 of 10: 4 describe and" in text
        assert "scored on 20 of 30 held-out pairs: 20 classify requests fewer" in text
        assert planned.race_saves == VALIDATION_ROWS - RACE_ROWS
        # the bound holds for a real run with the defaults...
        assert run_cli(*argv).returncode == 0
        assert len(fake.classify_requests()) < planned.classify.requests
        assert len(fake.describe_requests()) < planned.describe.requests
        # ...and the earliest stop is exactly what four steps scored in full would send
        fake.requests.clear()
        early = [
            *command(server, a, b, tmp_path / "four", "--max-steps", "4", "--patience", "0", "--race", "off")
        ]
        assert run_cli(*early).returncode == 0
    assert planned.earliest is not None and planned.earliest.steps == 4
    assert len(fake.classify_requests()) == planned.earliest.classify.requests
    assert len(fake.describe_requests()) == planned.earliest.describe.requests == 4


def test_dry_run_without_patience_or_racing_says_so(files, tmp_path):
    a, b = files
    result = run_cli(
        "compare", a, b, "--model", "gpt-4.1-mini", "--output", tmp_path / "out", "--dry-run",
        "--patience", "0", "--race", "off", "--batch-size", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--patience 0: every step runs" in result.stdout
    assert "--race off: every description is scored on every held-out row" in result.stdout
