"""Against a real OpenAI-compatible server nobody here wrote: llama-cpp-python's own server, serving the
shipped SmolLM2 GGUF on 127.0.0.1. Proves the HTTP path, logprobs included, against a real implementation:
every row is scored, and p(A) read from the server's top logprobs agrees with the embedded model's exact
p(A) for the same prompt as far as a top-20 list can (see the comment in the test)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import anyio
import polars as pl
import pytest
import yaml

from asyncpipe.prompts.build import with_row
from tests.conftest import fruit_files, run_cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    from asyncpipe.llm.local import shipped_model_path

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(shipped_model_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "1",  # see THREADS in test_local_model.py
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    # wait for it as long as it is starting (no clock: a slow machine only makes this longer)
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            assert process.poll() is None, "llama.cpp server exited"
            time.sleep(0.25)
    yield url
    process.terminate()
    process.wait(20)


def test_compare_against_llama_cpp_server(llama_server, tmp_path):
    from asyncpipe.llm.local import resolve_model
    from tests.test_local_model import REUSE_TOLERANCE, THREADS

    a, b = fruit_files(tmp_path, 6)
    out = tmp_path / "out"
    # no --model: asyncpipe asks the server which model it serves
    result = run_cli(
        "compare",
        a,
        b,
        "--base-url",
        llama_server,
        "--output",
        out,
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--describe-max-tokens",
        "32",
        "--validation-fraction",
        "0.2",
        # SmolLM2 puts about 1 % of its answer on the labels: this test is about the wire, not the figures
        "--min-label-mass",
        "0",
        "--quiet",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height == 12
    # every row scored: both labels are among the top 20 logprobs of this model's answer
    assert predictions["p_a"].null_count() == 0, predictions["error"].to_list()

    # the same prompts, scored exactly from the full-vocabulary logits in-process
    messages = yaml.safe_load((out / "classify.yaml").read_text())["messages"]
    local = resolve_model("local", n_threads=THREADS)

    async def exact(rows: list[str]) -> list[float]:
        try:
            return [(await local.score_labels(with_row(messages, row))).p_a for row in rows]
        finally:
            await local.aclose()

    expected = anyio.run(exact, predictions["text"].to_list())
    got_all = predictions["p_a"].to_list()
    assert len({round(p, 6) for p in got_all}) > 1, "every row got the same p(A): logprobs were not read"
    for got, want in zip(got_all, expected, strict=True):
        # From a top-20 list p(A) is exact when both labels are in it; when one is missing (this small
        # model often puts "The" or "<" first), the missing label gets the smallest listed mass, a bound
        # that claims no more certainty than the answer supports. So: never further from 0.5 than the
        # exact value (up to rounding), and on the same side of it.
        assert abs(got - 0.5) <= abs(want - 0.5) + REUSE_TOLERANCE, (got, want)
        assert (got > 0.5) == (want > 0.5) or abs(want - 0.5) < REUSE_TOLERANCE, (got, want)
