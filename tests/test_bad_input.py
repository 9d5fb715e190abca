"""Bad input ends with exit code 2 and one clear line on stderr: no traceback, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
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
    if case == "nan_text":
        # json.loads reads NaN as a float: a text column of numbers with a NaN among them
        bad.write_text('{"answer": 1.5}\n{"answer": NaN}\n{"answer": 2.5}\n')
        return [bad, ok], "no text"
    if case == "nan_text_parquet":
        path = tmp_path / "bad.parquet"
        pl.DataFrame({"answer": [1.5, float("nan"), 2.5]}).write_parquet(path)
        return [path, ok], "no text"
    if case == "csv_unquoted_empty_field":
        path = tmp_path / "bad.csv"
        path.write_text('question,answer\nq0,"fine"\nq1,\nq2,also fine\n')
        return [path, ok], "no text"
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
    "nan_text",
    "nan_text_parquet",
    "csv_unquoted_empty_field",
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


def test_reasoning_model_cannot_classify_with_logprobs(tmp_path):
    """Asked for logprobs explicitly, a model known to return none is refused before anything is sent
    (without --classify-mode it samples instead: tests/test_cli_models.py)."""
    result = run_cli(
        "compare",
        good(tmp_path),
        good(tmp_path, "g2.jsonl"),
        "--model",
        "o3-mini",
        "--classify-mode",
        "logprobs",
        "--output",
        tmp_path / "out",
    )
    assert result.returncode == 2
    assert "does not return logprobs" in result.stderr and "--classify-mode sample:8" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "setting,key",
    [
        ('batch_size: "x"', "batch_size"),
        ("seed: null", "seed"),
        ("prompts: [1, 2]", "prompts"),
        ('history_size: "3"', "history_size"),
        ("timeout: -1", "timeout"),
        ("epochs: true", "epochs"),
        ("validation_fraction: 1.0", "validation_fraction"),
        ("max_steps: 0", "max_steps"),
        ("prompts: {classify_user: 3}", "classify_user"),
        ("prompts: {clasify_user: hi}", "clasify_user"),
    ],
)
def test_config_values_are_checked(tmp_path, setting, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(setting + "\n")
    out = tmp_path / "out"
    result = run_cli(
        "compare", good(tmp_path), good(tmp_path, "g2.jsonl"), "--config", cfg, "--base-url", NOWHERE,
        "--model", "m", "--output", out,
    )  # fmt: skip
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert key in lines[0] and str(cfg) in lines[0], lines[0]
    assert not out.exists()


def test_config_accepts_well_typed_values(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("timeout: 2.5\nvalidation_fraction: 0\nmax_steps: 3\nseed: -1\nprompts: null\n")
    result = run_cli(
        "compare", good(tmp_path), good(tmp_path, "g2.jsonl"), "--config", cfg, "--base-url", NOWHERE,
        "--model", "m", "--output", tmp_path / "out", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def saved_classifier(tmp_path: Path, columns: list[str], text_column: str | None = "answer") -> Path:
    """A classify.yaml as a compare run writes it, with the given row layout."""
    layout = {"columns": columns, "labels": columns, "max_row_chars": 6000}
    if text_column:
        layout["text_column"] = text_column
    document = {
        "asyncpipe_classifier": 1,
        "model": "m",
        "placeholder": "{row}",
        "messages": [
            {"role": "system", "content": "d"},
            {"role": "user", "content": "<example>{row}</example>"},
        ],
        "row_layout": layout,
    }
    path = tmp_path / "classify.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_classify_file_without_a_layout_column(tmp_path):
    classifier = saved_classifier(tmp_path, ["question", "answer"])
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"answer": "a", "score": 1}])
    out = tmp_path / "out"
    result = run_cli("classify", classifier, bare, "--output", out, "--base-url", NOWHERE)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{bare}: no column 'question'" in lines[0] and "answer, score" in lines[0], lines[0]
    assert not out.exists()


def test_null_context_renders_empty_but_null_text_is_an_error(tmp_path):
    rows = fruit_rows("apple", 10)
    rows[3]["question"] = None
    holes = write_jsonl(tmp_path / "holes.jsonl", rows)
    base = ["--base-url", NOWHERE, "--model", "m", "--output", tmp_path / "out", "--dry-run"]
    result = run_cli("compare", holes, good(tmp_path), *base)
    assert result.returncode == 0, result.stderr
    result = run_cli("compare", holes, good(tmp_path), "--columns", "answer,question", *base)
    assert result.returncode == 0, result.stderr
    # an empty answer is data (a model may say nothing); a missing one is not
    rows[4]["answer"] = ""
    write_jsonl(holes, rows)
    assert run_cli("compare", holes, good(tmp_path), *base).returncode == 0
    rows[5]["answer"] = None
    write_jsonl(holes, rows)
    result = run_cli("compare", holes, good(tmp_path), *base)
    assert result.returncode == 2 and "no text in column 'answer'" in result.stderr, result.stderr


def test_null_context_in_a_classified_file(tmp_path):
    classifier = saved_classifier(tmp_path, ["question", "answer"])
    rows = [{"question": None, "answer": "a"}, {"question": "q", "answer": None}]
    path = write_jsonl(tmp_path / "new.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli("classify", classifier, path, "--output", out, "--base-url", NOWHERE)
    # the null question is fine; the null answer (row 1) is what stops it
    assert result.returncode == 2 and "no text in column 'answer' (rows 1," in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_utf8_byte_order_mark_is_accepted(tmp_path, suffix):
    rows = fruit_rows("apple", 10)
    body = "".join(json.dumps(r) + "\n" for r in rows) if suffix == ".jsonl" else json.dumps(rows)
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    result = run_cli(
        "compare", path, good(tmp_path), "--base-url", NOWHERE, "--model", "m", "--output", tmp_path / "out",
        "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
