"""A self-hosted server that answers one request at a time (llama.cpp's global lock): the limiter must
find the queue in the latency and keep it short, so that requests never wait out the timeout.

The assertions are on the server's request counts, never on time."""

from __future__ import annotations

import json

import polars as pl

from tests.conftest import fake_compare, fruit_files, run_cli
from tests.fake_openai import FakeOpenAI, ServerThread

ROWS = 24


def test_a_compare_run_against_a_queueing_server_resends_almost_nothing(tmp_path):
    a, b = fruit_files(tmp_path, ROWS)
    fake = FakeOpenAI(serial=0.25)
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(
            *fake_compare(server, a, b, out),
            "--batch-size",
            "16",
            "--max-steps",
            "1",
            "--timeout",
            "5",
            "--quiet",
        )
    assert result.returncode == 0, result.stderr
    distinct = {json.dumps(body, sort_keys=True) for body in fake.requests}
    resent = fake.count - len(distinct)
    assert resent <= 0.05 * len(distinct), f"{resent} of {fake.count} requests were sent again"
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height == 2 * ROWS
    assert predictions["p_a"].null_count() == 0
    run = json.loads((out / "run.json").read_text())
    assert run["stats"]["timeouts"] == 0
    limiter = run["limiter"]
    # the queue was seen: the limit came down from where it started, and the latency was measured
    assert limiter["decreases"] >= 1 and limiter["limit"] < 16
    assert limiter["base_latency_s"] >= 0.25
