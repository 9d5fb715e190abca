"""The records of a run (asyncpipe.records): each artifact written and read back through its one
definition, the shapes older files hold, and files that are no record refused with one line."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import polars as pl
import pytest

from asyncpipe.metrics import SUMMARY_KEYS, summarize
from asyncpipe.records import (
    CheckedFile,
    FileRef,
    HeldOut,
    LabelInfo,
    Miss,
    PairRecord,
    PairsRecord,
    Race,
    RecordError,
    RunRecord,
    StepRecord,
    Summary,
    held_out_scores,
    read_pairs,
    read_run,
    read_steps,
    write_pairs,
    write_run,
    write_steps,
)


def a_summary(correct: int = 3) -> Summary:
    labels = ["A", "A", "B", "B"]
    p_a = [0.9, 0.8 if correct > 2 else 0.2, 0.1, 0.6]  # 3 or 2 of 4 right
    frame = pl.DataFrame({"label": labels, "p_a": p_a})
    return Summary.from_dict(summarize(frame))  # type: ignore[return-value]


def test_the_summary_has_exactly_the_statistics_summarize_returns():
    assert tuple(f.name for f in fields(Summary)) == SUMMARY_KEYS
    frame = pl.DataFrame({"label": ["A", "B", "B"], "p_a": [0.9, 0.2, None]})
    computed = summarize(frame)
    assert Summary.from_dict(computed).to_dict() == computed  # no value changed on the way through


def test_steps_jsonl_round_trip(tmp_path: Path):
    steps = [
        StepRecord(1, 1, "A is longer", (0, 1, 2), a_summary(), a_summary(2), (Miss("B", 4, 0.81),)),
        StepRecord(2, 1, "A says 'dataset A'", (3, 4), a_summary(2), None),
    ]
    write_steps(tmp_path / "steps.jsonl", steps)
    read, problems = read_steps(tmp_path / "steps.jsonl")
    assert list(read) == steps and problems == ()
    line = json.loads((tmp_path / "steps.jsonl").read_text().splitlines()[0])
    assert line["metrics"]["train"]["accuracy"] == 0.75 and line["wrong"] == [
        {"label": "B", "row": 4, "p_a": 0.81}
    ]


def test_with_racing_on_steps_record_their_race_and_validation_p_a_even_when_empty(tmp_path: Path):
    lost = Race(against=1, rows=40, mean_difference=0.12, lower_bound=0.03, go_on=False)
    steps = [
        StepRecord(1, 1, "first", (0,), a_summary(), a_summary(), validation_p_a=(0.9, None), raced=True),
        StepRecord(
            2, 1, "worse", (1,), a_summary(2), a_summary(2), race=lost, validation_p_a=(0.4, 0.6), raced=True
        ),
    ]
    write_steps(tmp_path / "steps.jsonl", steps)
    read, _ = read_steps(tmp_path / "steps.jsonl")
    assert list(read) == steps and read[1].validation_partial and not read[0].validation_partial
    first = json.loads((tmp_path / "steps.jsonl").read_text().splitlines()[0])
    assert first["race"] is None and first["validation_p_a"] == [0.9, None]
    write_steps(tmp_path / "off.jsonl", [StepRecord(1, 1, "off", (0,), a_summary(), None)])
    assert "race" not in (tmp_path / "off.jsonl").read_text()  # racing off writes what it always wrote


def test_a_torn_steps_line_is_skipped_with_a_problem_and_a_repeated_step_keeps_the_later_line(tmp_path: Path):
    path = tmp_path / "steps.jsonl"
    first, again = (
        StepRecord(1, 1, "old", (0,), a_summary(), None),
        StepRecord(1, 1, "new", (0,), a_summary(), None),
    )
    path.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in (first, again)) + '{"step": 2, "desc')
    read, problems = read_steps(path)
    assert [s.description for s in read] == ["new"]
    assert len(problems) == 1 and problems[0].startswith("steps.jsonl line 3 skipped")


def run_record(**changes) -> RunRecord:
    values = dict(
        kind="compare",
        status="complete",
        fingerprint="0123456789abcdef",
        version="0.1.0",
        started_at="2026-11-29T10:00:00+00:00",
        finished_at="2026-11-29T10:01:00+00:00",
        wall_seconds=60.5,
        labels={"A": LabelInfo("apples", "a.jsonl", 40), "B": LabelInfo("bananas", "b.jsonl", 41)},
        models={"describe": "m", "classify": "m"},
        classify_mode="logprobs",
        config={"batch_size": 16},
        plan={"pairs": 40, "steps": 2},
        loop={"reason": "all batches done", "after_step": 2, "early": False},
        warnings=("the test split holds 4 pair(s)",),
        stats={"requests": 12, "all_invocations": {"requests": 20}},
        limiter={"limit": 16},
        packages={"asyncpipe": "0.1.0"},
        selected_step=2,
        selection_reason="lowest log loss",
        bias_offset=-0.25,
        final={"raw": {"test": a_summary(), "all": a_summary(2)}, "corrected": {"all": a_summary()}},
    )
    return RunRecord(**{**values, **changes})


@pytest.mark.parametrize(
    "record",
    [
        run_record(),
        run_record(status="running", finished_at=None, final=None, selected_step=None, bias_offset=None),
        run_record(
            kind="classify", plan=None, classifier="out/classify.yaml", inputs=("new_a.jsonl", "new_b.jsonl")
        ),
        RunRecord(
            "properties",
            "complete",
            fingerprint="f",
            models={"check": "m"},
            config={"against": "base", "min_label_mass": 0.5},
            properties={"items": [{"id": "P1", "text": "Is it short?"}]},
            files=(
                CheckedFile("a", "x/a.jsonl", None, "base", 40),
                CheckedFile("base", "x/base.jsonl", None, None, 40),
            ),
        ),
    ],
    ids=["compare", "compare-running", "classify", "properties"],
)
def test_run_json_round_trip(tmp_path: Path, record: RunRecord):
    write_run(tmp_path, record)
    assert read_run(tmp_path) == record
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["kind"] == record.kind and on_disk["asyncpipe_run"] == 1


def test_a_properties_run_json_from_before_the_records_is_read(tmp_path: Path):
    """The properties command wrote ``command``, ``model`` and the list of properties itself."""
    old = {
        "command": "properties",
        "status": "complete",
        "model": "m",
        "properties": [{"id": "P1", "text": "Is it short?"}],
        "files": [{"name": "a", "path": "a.jsonl", "question": None, "base": None, "rows": 3}],
    }
    (tmp_path / "run.json").write_text(json.dumps(old))
    run = read_run(tmp_path)
    assert run is not None and run.kind == "properties" and run.models == {"check": "m"}
    assert run.properties == {"items": old["properties"]}
    assert run.files == (CheckedFile("a", "a.jsonl", None, None, 3),)


def test_run_json_from_before_the_records_is_read(tmp_path: Path):
    """compare wrote ``command``; classify wrote ``model`` and its final summaries by correction only."""
    old_classify = {
        "status": "complete",
        "command": "classify",
        "fingerprint": "f",
        "model": "m",
        "final": {"raw": a_summary().to_dict(), "corrected": a_summary(2).to_dict()},
    }
    (tmp_path / "run.json").write_text(json.dumps(old_classify))
    run = read_run(tmp_path)
    assert run is not None and run.kind == "classify" and run.fingerprint == "f"
    assert run.final == {"raw": {"all": a_summary()}, "corrected": {"all": a_summary(2)}}
    # the earliest shape: final summaries by split, not saying which correction
    (tmp_path / "run.json").write_text(
        json.dumps({"status": "complete", "final": {"all": a_summary().to_dict()}})
    )
    run = read_run(tmp_path)
    assert run is not None and run.kind == "compare" and run.final == {"final": {"all": a_summary()}}
    assert run.label("A") == LabelInfo("A", "", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "run.json could not be read: not a JSON object"),
        ("{", "run.json could not be read"),
        (
            '{"asyncpipe_run": 9, "status": "complete"}',
            "run.json was written by a newer asyncpipe (run format 9",
        ),
        ('{"kind": "pairs", "status": "complete"}', "run.json records an unknown kind of run ('pairs')"),
    ],
)
def test_a_run_json_that_is_no_run_record_is_refused_with_one_line(tmp_path: Path, text: str, message: str):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(RecordError) as caught:
        read_run(tmp_path)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_no_run_json_is_no_run(tmp_path: Path):
    assert read_run(tmp_path) is None and read_pairs(tmp_path) is None


def test_pairs_json_and_parquet_round_trip(tmp_path: Path):
    final = {"raw": {"test": a_summary(), "all": a_summary(2)}, "corrected": {"test": a_summary(2)}}
    held = held_out_scores(final)
    assert held == {"raw": HeldOut.of("test", a_summary()), "corrected": HeldOut.of("test", a_summary(2))}
    done = PairRecord(
        "q1", "q1/a__vs__b", FileRef("a", "x/a.jsonl"), FileRef("b", "x/b.jsonl"), "complete",
        selected_step=1, description="A is longer", held_out=held, stats={"requests": 3}, seconds=1.5,
        report="q1/a__vs__b/index.html",
    )  # fmt: skip
    done = replace(done, pair_p_value_holm=0.02, significant=True)
    failed = PairRecord(
        None, "a__vs__c", FileRef("a", "a.jsonl"), FileRef("c", "c.jsonl"), "failed", reason="bad"
    )
    record = PairsRecord(
        "complete", "0.1.0", "2026-11-29T10:00:00+00:00", None, True, {"describe": "m", "classify": "m"},
        "cache.sqlite", ("a note",), (done, failed), {"method": "holm", "tests": 1, "significant": 1},
    )  # fmt: skip
    write_pairs(tmp_path, record)
    assert read_pairs(tmp_path) == record
    table = pl.read_parquet(tmp_path / "pairs.parquet")
    row = table.row(0, named=True)
    assert (
        row["held_out_split"] == "test" and row["accuracy_raw"] == 0.75 and row["accuracy_corrected"] == 0.5
    )
    assert row["n_held_out"] == 4 and table.row(1, named=True)["accuracy_raw"] is None
    assert (row["pair_p_value_holm"], row["significant"]) == (0.02, True)
    assert table.row(1, named=True)["significant"] is None


def test_without_test_rows_the_held_out_result_is_the_validation_rows():
    final = {"raw": {"validation": a_summary()}, "corrected": {"validation": a_summary()}}
    assert held_out_scores(final)["raw"].split == "validation"  # type: ignore[index]
    assert held_out_scores({"raw": {"train": a_summary()}}) is None


def test_every_artifact_of_a_compare_run_reads_back_through_its_definition(tmp_path: Path):
    """A real run through the command line: each file it writes has exactly the shape its one
    definition gives (run.json, steps.jsonl: the records; the parquet files: their schemas; classify.yaml:
    the loader ``asyncpipe classify`` uses)."""
    from asyncpipe.metrics.prevalence import PROPERTY_COLUMNS
    from asyncpipe.pipeline.artifacts import METRICS_SCHEMA, PREDICTIONS_SCHEMA
    from asyncpipe.pipeline.classify_command import load_classifier, saved_checks
    from asyncpipe.pipeline.property_checks import PROPERTY_SCORES_SCHEMA
    from tests.conftest import fake_compare, fruit_files, run_cli
    from tests.fake_openai import FakeOpenAI, ServerThread

    a, b = fruit_files(tmp_path, 24)
    out = tmp_path / "out"
    fake = FakeOpenAI(property_reply="- Does the answer mention 'apple'? [A]\n- Is it polite? [B]\n")
    with ServerThread(fake) as server:
        result = run_cli(*fake_compare(server, a, b, out), "--batch-size", "4", "--max-steps", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    run = read_run(out)
    assert run is not None and (run.kind, run.status) == ("compare", "complete")
    assert run.final is not None and run.label("A").name == a.stem
    steps, problems = read_steps(out / "steps.jsonl")
    assert [s.step for s in steps] == [1, 2] and problems == ()
    for name, schema in [
        ("metrics.parquet", METRICS_SCHEMA),
        ("predictions.parquet", PREDICTIONS_SCHEMA),
        ("properties.parquet", PROPERTY_COLUMNS),
        ("property_scores.parquet", PROPERTY_SCORES_SCHEMA),
    ]:
        assert dict(pl.read_parquet(out / name).schema) == schema, name
    document = load_classifier(out / "classify.yaml")
    assert [prop for prop, _messages in saved_checks(document, out / "classify.yaml")] == ["P1", "P2"]
    assert document["labels"]["A"] == run.label("A").to_dict()
