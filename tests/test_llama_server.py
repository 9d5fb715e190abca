"""Against a real OpenAI-compatible server nobody here wrote: llama-cpp-python's own server, serving the
shipped SmolLM2 GGUF on 127.0.0.1. Proves the HTTP path, logprobs included, against a real implementation."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import polars as pl
import pytest

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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            assert process.poll() is None, "llama.cpp server exited"
            assert time.monotonic() < deadline, "llama.cpp server did not come up"
            time.sleep(0.25)
    yield url
    process.terminate()
    process.wait(20)


def test_compare_against_llama_cpp_server(llama_server, tmp_path):
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
        "--quiet",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height == 12
    scored = predictions.filter(pl.col("p_a").is_not_null())
    # a real model's logprobs: at least most rows scored, probabilities strictly inside (0, 1)
    assert scored.height >= 6, predictions["error"].to_list()
    assert scored["p_a"].min() > 0.0 and scored["p_a"].max() < 1.0
    assert len(set(scored["p_a"].round(6).to_list())) > 1, (
        "every row got the same p(A): logprobs were not read"
    )
