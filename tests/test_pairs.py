"""``asyncpipe pairs`` through the real command line against the fake server, the pair planning on its
own, and one response cache shared by concurrent writers (``make -j``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from asyncpipe.errors import UserError
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.pipeline.pairs_plan import plan_pairs
from tests.conftest import REPO, fruit_rows, run_cli, start_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread

ARTIFACTS = (
    "classify.yaml",
    "predictions.parquet",
    "metrics.parquet",
    "steps.jsonl",
    "run.json",
    "index.html",
)


def models(folder: Path, fruits=("apple", "banana", "cherry"), n: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for fruit in fruits:
        write_jsonl(folder / f"{fruit}.jsonl", fruit_rows(fruit, n))
    return folder


def pairs(server, out: Path, *args, quiet: bool = True):
    return run_cli(
        "pairs",
        *args,
        "--base-url",
        server.base_url,
        "--model",
        "fake-model",
        "--output",
        out,
        "--batch-size",
        "8",
        "--max-steps",
        "1",
        "--validation-fraction",
        "0.25",
        *(["--quiet"] if quiet else []),
    )


def summary(out: Path) -> dict:
    return json.loads((out / "pairs.json").read_text())


def by_dir(out: Path) -> dict[str, dict]:
    return {p["dir"]: p for p in summary(out)["pairs"]}


# -- end to end ------------------------------------------------------------------------------------
def test_every_pair_gets_its_own_folder_and_the_summary_links_them(server, fake, tmp_path):
    out = tmp_path / "out"
    result = pairs(server, out, models(tmp_path / "models"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out / "index.html")

    expected = {"apple__vs__banana", "apple__vs__cherry", "banana__vs__cherry"}
    assert {p.name for p in out.iterdir() if p.is_dir()} == expected
    for name in expected:
        for artifact in ARTIFACTS:
            assert (out / name / artifact).is_file(), (name, artifact)
        assert not (out / name / "cache.sqlite").exists()  # one cache, at the top
        run = json.loads((out / name / "run.json").read_text())
        assert run["status"] == "complete"
        a, b = name.split("__vs__")
        assert (run["labels"]["A"]["name"], run["labels"]["B"]["name"]) == (a, b)
    assert {p.name for p in out.iterdir() if p.is_file()} == {
        "pairs.json",
        "pairs.parquet",
        "index.html",
        "cache.sqlite",
    }

    data = summary(out)
    assert data["status"] == "complete" and data["against"] is None and not data["by_question"]
    found = by_dir(out)
    assert set(found) == expected
    # the fake: p(A) = 0.9 for apple rows, 0.15 for banana rows, 0.5 for cherry rows (read as A)
    apple_banana = found["apple__vs__banana"]
    assert apple_banana["status"] == "complete" and apple_banana["report"] == "apple__vs__banana/index.html"
    assert apple_banana["held_out"]["raw"]["accuracy"] == 1.0
    # held out = the test split, used for nothing else: 10% of 16 pairs rounds to 2, from each file
    assert apple_banana["held_out"]["raw"]["split"] == "test"
    assert apple_banana["held_out"]["raw"]["n"] == 4
    # the 95% Wilson interval of 4 out of 4: [n / (n + z²), 1]
    assert apple_banana["held_out"]["raw"]["accuracy_low"] == pytest.approx(4 / (4 + 1.959964**2), rel=1e-6)
    assert apple_banana["held_out"]["raw"]["accuracy_high"] == 1.0
    # 4 of 4 right: the exact one-sided binomial p is 0.5⁴ (few held-out rows, honestly weak evidence)
    assert apple_banana["held_out"]["raw"]["p_value"] == pytest.approx(0.0625)
    assert apple_banana["held_out"]["raw"]["p_value_test"] == "binomial"
    # the headline: 2 test pairs, both ordered right; the sign test can say no more than p = 0.5² then
    assert apple_banana["held_out"]["raw"]["n_pairs"] == 2
    assert apple_banana["held_out"]["raw"]["pair_accuracy"] == 1.0
    assert apple_banana["held_out"]["raw"]["pair_p_value"] == pytest.approx(0.25)
    assert found["apple__vs__cherry"]["held_out"]["raw"]["accuracy"] == 0.5
    # apple (0.9) above cherry (0.5) in both pairs; banana (0.15) below cherry in both
    assert found["apple__vs__cherry"]["held_out"]["raw"]["pair_accuracy"] == 1.0
    assert found["banana__vs__cherry"]["held_out"]["raw"]["pair_accuracy"] == 0.0
    assert found["banana__vs__cherry"]["held_out"]["raw"]["pair_p_value"] == 1.0
    # Holm over the three sign tests by hand: 0.25·3 = 0.75, max(0.25·2, 0.75) = 0.75, 1.0
    assert data["multiple_testing"] == {
        "method": "holm",
        "p_value": "pair_p_value",
        "tests": 3,
        "alpha": 0.05,
        "significant": 0,
    }
    assert apple_banana["pair_p_value_holm"] == pytest.approx(0.75)
    assert found["apple__vs__cherry"]["pair_p_value_holm"] == pytest.approx(0.75)
    assert found["banana__vs__cherry"]["pair_p_value_holm"] == 1.0
    assert not any(p["significant"] for p in found.values())
    assert "apples" in apple_banana["description"]

    table = pl.read_parquet(out / "pairs.parquet")
    assert table.height == 3 and set(table["status"]) == {"complete"}
    row = table.filter(pl.col("dir") == "apple__vs__banana").row(0, named=True)
    assert row["accuracy_raw"] == 1.0 and row["a_name"] == "apple" and row["b_name"] == "banana"
    assert row["auc_raw"] == 1.0 and row["accuracy_corrected"] is not None
    assert (row["held_out_split"], row["n_pairs"], row["pair_accuracy"]) == ("test", 2, 1.0)
    assert row["pair_p_value"] == pytest.approx(0.25) and row["pair_p_value_holm"] == pytest.approx(0.75)
    assert row["significant"] is False and row["coverage"] == 1.0

    page = (out / "index.html").read_text()
    assert page.count('<table class="matrix">') == 1
    for name in expected:
        assert f'href="{name}/index.html"' in page
    assert "100%" in page and "http" not in page.replace("http-equiv", "")  # offline: no outside source
    assert "test split · 2 pairs" in page  # every cell names its split
    assert "Holm-adjusted over the 3 one-sided pair sign test(s)" in page
    assert "significance by the <b>adjusted</b> p" in page


def test_against_compares_each_file_as_A_with_the_base_as_B(server, fake, tmp_path):
    folder = models(tmp_path / "models", ("apple", "banana", "cherry", "base"))
    for against in ("base", str(folder / "base.jsonl")):
        out = tmp_path / f"out-{len(against)}"
        result = pairs(server, out, folder, "--against", against)
        assert result.returncode == 0, result.stderr
        found = by_dir(out)
        assert set(found) == {"apple__vs__base", "banana__vs__base", "cherry__vs__base"}
        for entry in found.values():
            assert entry["b"]["name"] == "base" and entry["a"]["name"] != "base"
        assert summary(out)["against"] == against
        assert '<table class="matrix">' in (out / "index.html").read_text()


def test_by_question_pairs_only_within_a_question(server, fake, tmp_path):
    root = tmp_path / "results"
    models(root / "q_one" / "org", ("apple", "banana"))
    models(root / "q_two" / "org", ("apple", "banana", "cherry"))
    out = tmp_path / "out"
    result = pairs(server, out, root, "--by-question")
    assert result.returncode == 0, result.stderr
    found = by_dir(out)
    assert set(found) == {
        "q_one/apple__vs__banana",
        "q_two/apple__vs__banana",
        "q_two/apple__vs__cherry",
        "q_two/banana__vs__cherry",
    }
    assert {found[d]["question"] for d in found} == {"q_one", "q_two"}
    assert all((out / d / "run.json").is_file() for d in found)
    page = (out / "index.html").read_text()
    assert page.count('<table class="matrix">') == 2
    assert "Question: q_one" in page and "Question: q_two" in page
    assert 'href="q_two/banana__vs__cherry/index.html"' in page


def test_a_bad_file_fails_its_pairs_and_the_others_complete(server, fake, tmp_path):
    folder = models(tmp_path / "models", ("apple", "banana"))
    (folder / "broken.jsonl").write_text('{"answer": "fine"}\n{"answer": oops}\n')
    out = tmp_path / "out"
    result = pairs(server, out, folder)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"asyncpipe: 2 of 3 pairs failed; the reasons are in {out / 'index.html'}"
    ]
    found = by_dir(out)
    assert found["apple__vs__banana"]["status"] == "complete"
    for name in ("apple__vs__broken", "banana__vs__broken"):
        assert found[name]["status"] == "failed"
        assert "broken.jsonl: line 2 is not valid JSON" in found[name]["reason"]
        assert found[name]["report"] is None
    assert summary(out)["status"] == "failed"
    page = (out / "index.html").read_text()
    assert "line 2 is not valid JSON" in page and "2 pair(s) failed" in page


def test_rerun_sends_nothing_skips_finished_pairs_and_resumes_unfinished(server, fake, tmp_path):
    folder = models(tmp_path / "models")
    out = tmp_path / "out"
    assert pairs(server, out, folder).returncode == 0
    sent = len(fake.requests)
    first = by_dir(out)

    again = pairs(server, out, folder, quiet=False)
    assert again.returncode == 0, again.stderr
    assert len(fake.requests) == sent
    assert "3 pair(s), 3 already finished (skipped)" in again.stderr
    second = by_dir(out)
    assert all(entry["skipped"] for entry in second.values())
    for name, entry in first.items():
        assert second[name]["held_out"] == entry["held_out"]
        assert second[name]["description"] == entry["description"]

    # an unfinished pair (interrupted) is run again, from the cache: still nothing sent
    run_json = out / "banana__vs__cherry" / "run.json"
    run_json.write_text(run_json.read_text().replace('"status": "complete"', '"status": "interrupted"'))
    third = pairs(server, out, folder, quiet=False)
    assert third.returncode == 0, third.stderr
    assert len(fake.requests) == sent
    assert "3 pair(s), 2 already finished (skipped); running 1" in third.stderr
    assert not by_dir(out)["banana__vs__cherry"]["skipped"]
    assert json.loads(run_json.read_text())["status"] == "complete"


def test_pairs_share_one_cache_and_never_pay_twice(tmp_path):
    # one description for every pair, so apple rows are asked the same question in two pairs
    fake = FakeOpenAI(describer=lambda body, n: "Rows of A mention apples.")
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = pairs(server, out, models(tmp_path / "models"), "--parallel-pairs", "1")
    assert result.returncode == 0, result.stderr
    sent = [json.dumps(body, sort_keys=True) for body in fake.requests]
    assert len(sent) == len(set(sent)), "an identical request was sent twice"
    stats = {d: e["stats"] for d, e in by_dir(out).items()}
    assert stats["apple__vs__banana"]["cache_hits"] > 0
    # apple__vs__cherry runs second: its apple rows were answered for apple__vs__banana
    assert stats["apple__vs__cherry"]["cache_hits"] > stats["apple__vs__banana"]["cache_hits"]
    # its describe request and the request listing its properties; every row was answered before
    assert stats["banana__vs__cherry"]["requests"] == 2
    assert sum(s["requests"] for s in stats.values()) == len(fake.requests)


def test_summary_escapes_what_the_run_wrote(tmp_path):
    fake = FakeOpenAI(describer=lambda body, n: "<script>alert(1)</script> A has apples")
    folder = models(tmp_path / "models", ("apple", "banana"))
    write_jsonl(folder / "<img src=x onerror=alert(2)>.jsonl", fruit_rows("cherry", 16))
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = pairs(server, out, folder)
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; A has apples" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    # the folder name is made safe too
    assert (out / "img_src_x_onerror_alert_2__vs__apple" / "index.html").is_file()
    # `asyncpipe report` re-renders the summary of a pairs folder
    (out / "index.html").unlink()
    rendered = run_cli("report", out)
    assert rendered.returncode == 0 and rendered.stdout.strip() == str(out / "index.html")
    assert (out / "index.html").read_text() == page
    assert all(
        set(p.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
        for p in out.iterdir()
        if p.is_dir()
    )


def test_bad_invocations_exit_2_with_one_line(server, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = pairs(server, tmp_path / "out", empty)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"asyncpipe: error: {empty}: holds no data files (.csv, .jsonl, .ndjson, .json, .parquet)"
    ]
    folder = models(tmp_path / "models", ("apple", "banana"))
    single = tmp_path / "single"
    single.mkdir()
    (single / "run.json").write_text("{}")
    result = pairs(server, single, folder)
    assert result.returncode == 2 and "holds a single comparison" in result.stderr
    result = pairs(server, tmp_path / "out", folder, "--against", "nobody")
    assert result.returncode == 2 and "--against nobody: matches none of the 2 files" in result.stderr
    assert not (tmp_path / "out").exists()


# -- planning, without a server --------------------------------------------------------------------
def test_plan_finds_files_by_folder_glob_and_name(tmp_path):
    root = tmp_path / "results"
    models(root / "q1" / "org", ("apple", "banana"), n=2)
    models(root / "q2" / "org", ("apple", "banana"), n=2)
    (root / "q1" / "org" / "notes.txt").write_text("not data")
    (root / "q1" / ".hidden.jsonl").write_text("{}")
    out = root / "report"  # an output folder inside the searched tree is never searched
    models(out / "apple__vs__banana", ("predictions",), n=2)

    plan = plan_pairs([str(root)], output=out, by_question=True)
    assert [(j.question, j.a.name, j.b.name, j.subdir) for j in plan.jobs] == [
        ("q1", "apple", "banana", "q1/apple__vs__banana"),
        ("q2", "apple", "banana", "q2/apple__vs__banana"),
    ]
    assert plan.warnings == ()

    mixed = plan_pairs([str(root)], output=out)
    assert len(mixed.jobs) == 6
    assert {j.a.name for j in mixed.jobs} | {j.b.name for j in mixed.jobs} == {
        "q1/org/apple",
        "q1/org/banana",
        "q2/org/apple",
        "q2/org/banana",
    }
    assert any("row i of one file may not be comparable" in w for w in mixed.warnings)

    globbed = plan_pairs(
        [str(root / "*" / "org" / "*.jsonl")], output=tmp_path / "elsewhere", by_question=True
    )
    assert [j.subdir for j in globbed.jobs] == ["q1/apple__vs__banana", "q2/apple__vs__banana"]

    based = plan_pairs(
        [str(root / "q1" / "org" / "apple.jsonl")],
        output=out,
        against=str(root / "q1" / "org" / "banana.jsonl"),
    )
    assert [(j.a.name, j.b.name) for j in based.jobs] == [("apple", "banana")]

    for paths, message in (
        ([str(tmp_path / "nope")], "no such file or directory"),
        ([str(tmp_path / "*.csv")], "matches no data files"),
        ([str(root / "q1" / "org" / "notes.txt")], "unsupported file type"),
        ([str(root / "q1" / "org" / "apple.jsonl")], "nothing to compare"),
    ):
        with pytest.raises(UserError, match=message):
            plan_pairs(paths, output=out)
    with pytest.raises(UserError, match="--against apple: matches 2 files"):
        plan_pairs([str(root)], output=out, against="apple")


# -- one cache, several processes (make -j) ---------------------------------------------------------
WRITER = """
import sys
from pathlib import Path
from asyncpipe.llm.cache import ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    cache.put(f"{sys.argv[2]}-{i}", "score", {"p_a": i})
cache.close()
"""


def test_two_processes_write_one_cache_at_once(tmp_path):
    path = tmp_path / "shared.sqlite"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "400"], cwd=REPO)
        for name in ("left", "right")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    cache = ResponseCache(path)
    try:
        assert len(cache) == 800
        assert cache.get("left-399") == {"p_a": 399} and cache.get("right-0") == {"p_a": 0}
    finally:
        cache.close()


def test_two_compare_runs_share_one_cache_file(server, fake, tmp_path):
    folder = models(tmp_path / "models")
    cache = tmp_path / "shared.sqlite"

    def start(b: str, out: str) -> subprocess.Popen:
        args = [
            "compare",
            folder / "apple.jsonl",
            folder / f"{b}.jsonl",
            "--base-url",
            server.base_url,
            "--model",
            "fake-model",
            "--output",
            tmp_path / out,
            "--cache",
            cache,
            "--batch-size",
            "8",
            "--max-steps",
            "1",
            "--quiet",
        ]
        return start_cli(*args)

    runs = [start("banana", "one"), start("cherry", "two")]
    for process in runs:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    sent = len(fake.requests)
    # both runs' answers are in the shared file: running both again sends nothing
    again = [start("banana", "one"), start("cherry", "two")]
    for process in again:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert len(fake.requests) == sent


def _pair_entry(a: str, b: str, split: str, p: float | None) -> dict:
    raw = {"split": split, "n_pairs": 20, "pair_accuracy": 0.8, "pair_ci_low": 0.6, "pair_ci_high": 0.9}
    raw |= {"pair_p_value": p, "n": 40, "accuracy": 0.5, "coverage": 1.0}
    return {
        "question": None,
        "dir": f"{a}__vs__{b}",
        "a": {"name": a, "path": f"{a}.jsonl"},
        "b": {"name": b, "path": f"{b}.jsonl"},
        "status": "complete" if p is not None else "failed",
        "reason": None if p is not None else "boom",
        "skipped": False,
        "selected_step": 1,
        "description": "d",
        "report": None,
        "stats": None,
        "seconds": 1.0,
        "held_out": {"raw": raw} if p is not None else None,
    }


def test_the_page_names_each_split_and_marks_significance_by_the_holm_adjusted_p_only():
    from asyncpipe.pipeline.pairs import with_holm
    from asyncpipe.records import PairRecord, PairsRecord
    from asyncpipe.report.pairs_page import pairs_page

    entries = [
        _pair_entry("a", "b", "test", 0.01),
        _pair_entry("a", "c", "validation", 0.03),
        _pair_entry("b", "c", "test", 0.04),
        _pair_entry("a", "d", "test", None),  # failed: no test, not counted
    ]
    # every raw p is below 0.05; Holm over the 3 tests: 0.01·3, max(0.03·2, 0.03), max(0.04, 0.06)
    pairs, correction = with_holm(tuple(PairRecord.from_dict(e) for e in entries))
    assert [p.pair_p_value_holm for p in pairs] == pytest.approx([0.03, 0.06, 0.06, None])
    assert [p.significant for p in pairs] == [True, False, False, None]
    assert correction["tests"] == 3 and correction["significant"] == 1
    page = pairs_page(PairsRecord("complete", pairs=pairs, multiple_testing=correction))
    assert "validation split · 20 pairs" in page and "test split · 20 pairs" in page
    assert page.count('class="sig"') == 2  # one significant pair, shown in both triangles
    assert "Holm-adjusted over the 3 one-sided pair sign test(s)" in page and "1 of 3" in page
    table = pairs[1].flat_row()
    assert (table["held_out_split"], table["significant"]) == ("validation", False)
