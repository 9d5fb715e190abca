"""Bad input ends with exit code 2 and one clear line on stderr: no traceback, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import fruit_rows, run_cli, write_jsonl

NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens there: bad input must be caught before any request


def good(tmp_path: Path, name: str = "good.jsonl") -> Path:
    return write_jsonl(tmp_path / name, fruit_rows("apple", 10))


def make_case(tmp_path: Path, case: str) -> tuple[list, str]:
    """(arguments after 'compare', expected words in the error line)."""
    ok = good(tmp_path)
    bad = tmp_path / "bad.jsonl"
    if case == "missing":
        return [tmp_path / "nope.jsonl", ok], "no such file"
    if case == "directory":
        return [tmp_path, ok], "is a directory"
    if case == "extension":
        (tmp_path / "data.xlsx").write_text("x")
        return [tmp_path / "data.xlsx", ok], "unsupported file type '.xlsx'"
    if case == "empty":
        bad.write_text("")
        return [bad, ok], "empty"
    if case == "header_only":
        path = tmp_path / "h.csv"
        path.write_text("question,answer\n")
        return [path, ok], "no rows"
    if case == "malformed_jsonl":
        bad.write_text('{"answer": "fine"}\n{"answer": "fine"}\n{"answer": broken\n{"answer": "fine"}\n')
        return [bad, ok], "line 3"
    if case == "not_utf8":
        bad.write_bytes(b'{"answer": "caf\xe9"}\n')
        return [bad, ok], "UTF-8"
    if case == "missing_column":
        write_jsonl(bad, [{"prompt": "x", "reply": "y"}])
        return [bad, ok], "prompt, reply"
    if case == "named_column_missing":
        return [ok, good(tmp_path, "g2.jsonl"), "--column", "completion_text"], "no column 'completion_text'"
    if case == "null_text":
        write_jsonl(bad, [{"answer": "a"}, {"answer": None}, {"answer": "c"}])
        return [bad, ok], "no text"
    if case == "json_not_list":
        path = tmp_path / "d.json"
        path.write_text('{"answer": "x"}')
        return [path, ok], "list of objects"
    if case == "bad_config":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("batch_sise: 3\n")
        return [ok, good(tmp_path, "g2.jsonl"), "--config", cfg], "unknown setting"
    if case == "bad_batch_size":
        return [ok, good(tmp_path, "g2.jsonl"), "--batch-size", "0"], "≥ 1"
    if case == "gguf_missing":
        return [ok, good(tmp_path, "g2.jsonl"), "--model", "gguf:/nonexistent/model.gguf"], "model.gguf"
    raise AssertionError(case)


CASES = [
    "missing",
    "directory",
    "extension",
    "empty",
    "header_only",
    "malformed_jsonl",
    "not_utf8",
    "missing_column",
    "named_column_missing",
    "null_text",
    "json_not_list",
    "bad_config",
    "bad_batch_size",
    "gguf_missing",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    args, expected = make_case(tmp_path, case)
    out = tmp_path / "out"
    model = [] if "--model" in args else ["--model", "m"]
    result = run_cli("compare", *args, "--base-url", NOWHERE, *model, "--output", out)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in lines[0], lines[0]
    assert not out.exists(), "bad input must not leave an output directory behind"


def test_unwritable_output(tmp_path):
    if os.geteuid() == 0:
        # root writes through permission bits; a path under a regular file is unwritable for anyone
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "out"
    result = run_cli(
        "compare",
        good(tmp_path),
        good(tmp_path, "g2.jsonl"),
        "--base-url",
        NOWHERE,
        "--model",
        "m",
        "--output",
        out,
    )
    assert result.returncode == 2, result.stderr
    assert "--output" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content,expected",
    [
        ("model: x\nmessages: []\n", "not an asyncpipe classifier"),
        ("asyncpipe_classifier: 99\nmodel: x\n", "not supported"),
        (
            "asyncpipe_classifier: 1\nmodel: x\nmessages: [{role: user, content: no placeholder}]\nrow_layout: {}\n",
            "damaged",
        ),
        ("- just\n- a list\n", "mapping"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ],
)
def test_foreign_classifier_files(tmp_path, content, expected):
    path = tmp_path / "classify.yaml"
    path.write_text(content)
    result = run_cli("classify", path, good(tmp_path), "--output", tmp_path / "out", "--base-url", NOWHERE)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_key_and_an_api_model(tmp_path):
    result = run_cli(
        "compare",
        good(tmp_path),
        good(tmp_path, "g2.jsonl"),
        "--model",
        "gpt-4.1-mini",
        "--output",
        tmp_path / "out",
        env={"OPENAI_API_KEY": ""},
    )
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and "--model local" in result.stderr


def test_reasoning_model_cannot_classify(tmp_path):
    result = run_cli(
        "compare",
        good(tmp_path),
        good(tmp_path, "g2.jsonl"),
        "--model",
        "o3-mini",
        "--output",
        tmp_path / "out",
    )
    assert result.returncode == 2
    assert "logprobs" in result.stderr and "--classify-model" in result.stderr
