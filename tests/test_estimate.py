"""``asyncpipe compare --dry-run``: counts and prices the plan, sends nothing, writes nothing, and its
request count is the one a real run sends."""

from __future__ import annotations

from pathlib import Path

from asyncpipe.cli import build_config, build_parser
from asyncpipe.model_facts import ModelFacts
from asyncpipe.pipeline import token_count
from asyncpipe.pipeline.estimate import estimate_run
from asyncpipe.pipeline.token_count import token_counter
from tests.conftest import fake_compare, run_cli

ARGS = ("--batch-size", "8", "--max-steps", "3", "--quiet")


def test_dry_run_sends_nothing_and_writes_nothing(files, fake, server, tmp_path: Path):
    a, b = files
    out = tmp_path / "out"
    cache = tmp_path / "elsewhere" / "cache.sqlite"
    result = run_cli(
        *fake_compare(server, a, b, out),
        "--cache",
        cache,
        "--dry-run",
        *ARGS,
    )
    assert result.returncode == 0, result.stderr
    assert fake.count == 0
    assert fake.requests == []
    assert not out.exists()
    assert not cache.parent.exists()
    assert "nothing was sent" in result.stdout
    assert "describe             3" in result.stdout
    # 3 steps × (8 + 8 batch rows + 4 + 4 held-out rows) + 80 rows in the final pass, less the 24 that
    # the selected step already answered with the same description
    assert "classify           128" in result.stdout
    assert "unknown: no price for fake-model" in result.stdout


def test_the_estimated_requests_are_what_a_real_run_sends(files, fake, server, fast_retries, tmp_path: Path):
    a, b = files
    argv = [
        "compare",
        str(a),
        str(b),
        "--base-url",
        server.base_url,
        "--model",
        "fake-model",
        "--output",
        str(tmp_path / "out"),
        "--swap-labels",
        *ARGS,
    ]
    cfg = build_config(build_parser().parse_args([*argv, "--dry-run"]), lambda _message: None)
    planned = estimate_run(cfg)
    result = run_cli(*argv, "--config", fast_retries)
    assert result.returncode == 0, result.stderr
    assert planned.describe.requests == len(fake.describe_requests())
    assert planned.classify.requests == len(fake.classify_requests())
    assert planned.classify.requests == 2 * 128  # --swap-labels asks twice per row


def test_prices_come_from_the_model_facts(files, tmp_path: Path):
    a, b = files
    argv = ["compare", str(a), str(b), "--model", "gpt-4o-mini", "--output", str(tmp_path / "out"), *ARGS]
    cfg = build_config(build_parser().parse_args([*argv, "--dry-run"]), lambda _message: None)
    planned = estimate_run(cfg)
    c = planned.classify
    assert c.output_tokens == c.requests  # one token per answer
    expected = (c.input_tokens * 0.15 + c.output_tokens * 0.60) / 1e6
    assert abs(c.cost - expected) < 1e-12
    # the properties stage at its most: one request listing them, K checks per held-out row
    listing, checks = planned.properties_list, planned.properties_check
    assert listing.requests == 1 and checks.requests == 8 * planned.properties_rows
    assert planned.cost == planned.describe.cost + planned.classify.cost + listing.cost + checks.cost
    assert "estimated cost" in planned.render()


def test_without_tiktoken_files_tokens_are_estimated_and_said_so(monkeypatch):
    monkeypatch.setattr(token_count, "_load_encoding", lambda name: (None, "ConnectionError"))
    counter = token_counter(ModelFacts("gpt-4o", tokenizer="o200k_base"))
    assert not counter.exact
    assert counter.count("abcdefgh") == 2
    assert "estimated at 4 characters" in (counter.note or "")
    plain = token_counter(ModelFacts("some-local-model"))
    assert not plain.exact and "names no tokenizer" in (plain.note or "")
