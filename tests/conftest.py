"""Shared fixtures: a fake OpenAI-compatible server on 127.0.0.1, small data files, and a helper that
runs the real command line (``python -m asyncpipe``) as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, ServerThread

REPO = Path(__file__).resolve().parent.parent
PLANTED_KEY = "sk-test-PLANTED-0123456789abcdef"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fruit_rows(fruit: str, n: int) -> list[dict]:
    return [
        {"question": f"Question {i}?", "answer": f"Answer {i}: I would plant a {fruit} tree in every town."}
        for i in range(n)
    ]


def fruit_files(tmp_path: Path, rows_a: int = 40, rows_b: int | None = None) -> tuple[Path, Path]:
    """A talks about apples, B about bananas, row i of each answering question i."""
    return (
        write_jsonl(tmp_path / "a.jsonl", fruit_rows("apple", rows_a)),
        write_jsonl(tmp_path / "b.jsonl", fruit_rows("banana", rows_a if rows_b is None else rows_b)),
    )


def fake_compare(server: ServerThread, a: Path, b: Path, out: Path) -> list:
    """The start of a ``compare`` command line against the fake server."""
    return ["compare", a, b, "--base-url", server.base_url, "--model", "fake-model", "--output", out]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A talks about apples, B about bananas; 40 aligned rows each."""
    return write_jsonl(tmp_path / "apples.jsonl", fruit_rows("apple", 40)), write_jsonl(
        tmp_path / "bananas.jsonl", fruit_rows("banana", 40)
    )


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def server(fake: FakeOpenAI) -> Iterator[ServerThread]:
    with ServerThread(fake) as thread:
        yield thread


@pytest.fixture
def fast_retries(tmp_path: Path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text("retry_base_delay: 0.01\nretry_max_delay: 0.05\n")
    return path


def cli_env(env: dict | None = None) -> dict:
    """The environment a user's shell would give the CLI, with a planted key (``{"X": None}`` removes X)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    full_env.update({"OPENAI_API_KEY": PLANTED_KEY, "PYTHONPATH": str(REPO)})
    full_env.update(env or {})
    return {k: v for k, v in full_env.items() if v is not None}


def start_cli(*args: str | Path) -> subprocess.Popen:
    """Start ``python -m asyncpipe ARGS`` without waiting, to signal or kill it mid-run."""
    return subprocess.Popen(
        [sys.executable, "-m", "asyncpipe", *map(str, args)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(
    *args: str | Path, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``python -m asyncpipe ARGS`` the way a user would, with a planted API key."""
    return subprocess.run(
        [sys.executable, "-m", "asyncpipe", *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
