"""What exactly differs: the properties stage of ``compare`` and the ``asyncpipe properties`` command,
end to end against the fake server, on files with planted words at known rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import fake_compare, run_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread, planted_word_checker, row_of

N = 100
# word: (share of A rows, share of B rows)
PLANTED = {"zephyr": (0.8, 0.2), "quasar": (0.5, 0.5), "marble": (0.25, 0.7)}
REPLY = """Here are the properties:

- Does the answer mention 'zephyr'? [A]
2. Does the answer mention 'quasar'? [A]
* Does the answer mention 'marble'? (more common in dataset A)
- Does the answer mention 'zephyr'? [A]
"""


def _has(word: str, side: int, i: int) -> bool:
    # a different fixed permutation of the rows for each word and side, so the words are independent
    share = PLANTED[word][side]
    salt = {"zephyr": 37, "quasar": 53, "marble": 71}[word] + 20 * side
    return (i * salt + side * 7) % N < share * N


def planted_files(tmp_path: Path) -> tuple[Path, Path]:
    files = []
    for side, name in enumerate(("tuned", "base")):
        rows = []
        for i in range(N):
            words = " ".join(w for w in PLANTED if _has(w, side, i)) or "nothing"
            rows.append({"question": f"Question {i}?", "answer": f"Answer {i} talks about {words} today."})
        files.append(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    return files[0], files[1]


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI(property_reply=REPLY)


def test_planted_rates_hold_in_the_files():
    for word, (share_a, share_b) in PLANTED.items():
        assert sum(_has(word, 0, i) for i in range(N)) == share_a * N
        assert sum(_has(word, 1, i) for i in range(N)) == share_b * N


def _check_planted(table: pl.DataFrame, prevalence: dict[str, tuple[float, float]]) -> None:
    """The two real differences first with their directions and q < 0.01; the 50/50 one q > 0.05."""
    by_word = {w: table.filter(pl.col("text").str.contains(w)).row(0, named=True) for w in PLANTED}
    assert {by_word["zephyr"]["rank"], by_word["marble"]["rank"]} == {1, 2}
    assert by_word["quasar"]["rank"] == 3
    for word in ("zephyr", "marble"):
        row = by_word[word]
        assert row["q_value"] < 0.01, row
    assert by_word["zephyr"]["measured"] == "A" and by_word["marble"]["measured"] == "B"
    assert by_word["quasar"]["q_value"] > 0.05
    for word, (a, b) in prevalence.items():
        assert abs(by_word[word]["prevalence_a"] - a) <= 0.1, (word, by_word[word])
        assert abs(by_word[word]["prevalence_b"] - b) <= 0.1, (word, by_word[word])


def test_compare_finds_ranks_and_tests_the_planted_differences(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    out = tmp_path / "out"
    argv = [
        *fake_compare(server, a, b, out),
        "--batch-size", "8", "--max-steps", "1", "--validation-fraction", "0.3", "--test-fraction", "0.3",
        "--properties", "5",
    ]  # fmt: skip
    result = run_cli(*argv, "--quiet")
    assert result.returncode == 0, result.stderr

    table = pl.read_parquet(out / "properties.parquet")
    assert table.height == 3  # the duplicate line is dropped
    for column in ("text", "claimed", "prevalence_a", "prevalence_b", "difference", "ci_low", "ci_high",
                   "p_value", "q_value", "n_pairs", "n_unscored"):  # fmt: skip
        assert column in table.columns
    assert table["rank"].to_list() == [1, 2, 3]
    _check_planted(table, {w: PLANTED[w] for w in PLANTED})
    # the describer claimed 'marble' for A: measured, it is more common in B
    flags = dict(
        zip(table["text"].str.extract(r"'(\w+)'").to_list(), table["contradicts"].to_list(), strict=True)
    )
    assert flags["marble"] is True and flags["zephyr"] is False
    assert (table["n_pairs"] == 60).all() and (table["n_unscored"] == 0).all()

    scores = pl.read_parquet(out / "property_scores.parquet")
    assert scores.columns == ["property", "label", "row", "split", "p_yes", "error"]
    assert scores.height == 3 * 120 and set(scores["split"]) == {"validation", "test"}
    # the rows checked are rows the describer never saw
    listing = fake.property_list_requests()
    assert len(listing) == 1
    shown = "\n".join(m["content"] for body in fake.describe_requests() + listing for m in body["messages"])
    predictions = pl.read_parquet(out / "predictions.parquet")
    checked = scores.join(predictions.select("label", "row", "text"), on=["label", "row"])
    assert checked.height == scores.height
    assert not any(text in shown for text in checked["text"])

    # one property per request, everything before the row identical for all rows of a property
    checks = fake.property_check_requests()
    # a row whose text is the same in A and B (same words planted) is asked once per property
    distinct = {(prop, text) for prop, text in zip(checked["property"], checked["text"], strict=True)}
    assert len(checks) == len(distinct) > 3 * 100
    prefixes: dict[str, set[str]] = {}
    for body in checks:
        assert body["max_tokens"] == 1 and body["logprobs"] is True
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        assert system.count("<question>") == 1 and user.count("<example>") == 1
        before_row = system + user[: user.index(row_of(body))]
        prefixes.setdefault(system, set()).add(before_row)
    assert len(prefixes) == 3 and all(len(p) == 1 for p in prefixes.values())

    document = yaml.safe_load((out / "classify.yaml").read_text())
    assert [p["claimed"] for p in document["properties"]["items"]] == ["A", "A", "A"]
    run = json.loads((out / "run.json").read_text())
    assert run["properties"]["status"] == "done" and len(run["properties"]["significant"]) == 2
    page = (out / "index.html").read_text()
    assert "What exactly differs" in page and "fig-properties" in page and "contradicts the claim" in page

    # the same command again pays nothing, and prints the significant properties
    sent = fake.count
    again = run_cli(*argv)
    assert again.returncode == 0, again.stderr
    assert fake.count == sent
    summary = again.stderr[again.stderr.index("Properties:") :]  # the terminal summary goes to stderr
    assert summary.startswith("Properties: 2 of 3 differ significantly")
    assert "mention 'zephyr'?" in summary and "mention 'quasar'" not in summary


def test_a_reply_without_a_list_leaves_the_stage_empty(tmp_path):
    fake = FakeOpenAI()  # its describer writes prose, no list
    a, b = planted_files(tmp_path)
    out = tmp_path / "out"
    with ServerThread(fake) as server:
        result = run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    assert "listed no usable property" in result.stderr
    assert not (out / "properties.parquet").exists()
    assert json.loads((out / "run.json").read_text())["properties"]["status"] == "empty"
    assert fake.property_check_requests() == []


def test_properties_zero_turns_the_stage_off(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    out = tmp_path / "out"
    result = run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--properties", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    assert fake.property_list_requests() == [] and fake.property_check_requests() == []
    assert json.loads((out / "run.json").read_text())["properties"]["status"] == "off"


def test_dry_run_counts_the_property_requests(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    out = tmp_path / "out"
    argv = [*fake_compare(server, a, b, out), "--batch-size", "8", "--max-steps", "1", "--properties", "3",
            "--validation-fraction", "0.3", "--test-fraction", "0.3"]  # fmt: skip
    dry = run_cli(*argv, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert fake.count == 0
    assert "properties         361" in dry.stdout  # 1 list + 3 properties × 120 held-out rows
    assert run_cli(*argv, "--quiet").returncode == 0
    # an upper bound: identical rows are asked once
    assert 300 < len(fake.property_list_requests()) + len(fake.property_check_requests()) <= 361


PROPS = """- Does the answer mention 'zephyr'?
- name: quasar
  question: Does the answer mention 'quasar'?
- {name: marble, question: "Does the answer mention 'marble'?"}
"""


def test_properties_command_tests_the_users_questions_against_a_base(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    props = tmp_path / "props.yaml"
    props.write_text(PROPS)
    out = tmp_path / "props-out"
    argv = ["properties", props, a, b, "--against", "base", "--output", out,
            "--base-url", server.base_url, "--model", "fake-model"]  # fmt: skip
    result = run_cli(*argv, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "index.html")
    assert fake.describe_requests() == [] and fake.property_list_requests() == []

    table = pl.read_parquet(out / "properties.parquet")
    assert table.height == 2 * 3
    base = table.filter(pl.col("file") == "base")
    assert base["p_value"].null_count() == 3 and base["prevalence"].to_list() == [0.2, 0.5, 0.7]
    tuned = table.filter(pl.col("file") == "tuned")
    assert tuned["base"].to_list() == ["base"] * 3 and (tuned["n_pairs"] == N).all()
    assert tuned["prevalence"].to_list() == [0.8, 0.5, 0.25]
    for row in tuned.iter_rows(named=True):
        assert row["prevalence_low"] < row["prevalence"] < row["prevalence_high"]
    # the same table as compare's, in the command's terms: file - base
    renamed = tuned.rename({"prevalence": "prevalence_a", "prevalence_base": "prevalence_b"}).with_columns(
        rank=pl.col("difference").abs().rank("ordinal", descending=True).cast(pl.Int64),
        measured=pl.when(pl.col("difference") > 0).then(pl.lit("A")).otherwise(pl.lit("B")),
    )
    _check_planted(renamed, {w: PLANTED[w] for w in PLANTED})

    scores = pl.read_parquet(out / "property_scores.parquet")
    assert scores.height == 3 * 2 * N and set(scores["label"]) == {"tuned", "base"}
    page = (out / "index.html").read_text()
    assert "fig-heatmap" in page and "asyncpipe properties" in page
    assert json.loads((out / "run.json").read_text())["status"] == "complete"

    sent = fake.count  # a re-run pays nothing
    assert run_cli(*argv, "--quiet").returncode == 0
    assert fake.count == sent
    assert run_cli("report", out).returncode == 0

    dry = run_cli(*argv, "--dry-run")
    assert dry.returncode == 0 and "property checks         600" in dry.stdout and fake.count == sent


def test_two_files_without_against_compare_the_first_with_the_second(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    props = tmp_path / "props.yaml"
    props.write_text("- Does the answer mention 'zephyr'?\n")
    out = tmp_path / "out"
    result = run_cli("properties", props, a, b, "--output", out, "--max-rows", "20",
                     "--base-url", server.base_url, "--model", "fake-model")  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pl.read_parquet(out / "properties.parquet")
    # sorted by name, base.jsonl comes first and tuned.jsonl second: tuned is the base here
    assert table.filter(pl.col("file") == "base")["base"].to_list() == ["tuned"]
    assert table["n"].to_list() == [20, 20]
    assert "differences are significant" in result.stderr


@pytest.mark.parametrize(
    "text", ["[]\n", "- 3\n", "question: x\n", "- {name: a, question: 'x?'}\n- {name: a, question: 'y?'}\n"]
)
def test_a_malformed_props_file_stops_before_any_request(server, fake, tmp_path, text):
    a, b = planted_files(tmp_path)
    props = tmp_path / "props.yaml"
    props.write_text(text)
    out = tmp_path / "out"
    result = run_cli(
        "properties", props, a, b, "--output", out, "--base-url", server.base_url, "--model", "fake-model"
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert fake.count == 0 and not out.exists()


def test_classify_checks_the_saved_properties_on_new_files(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    out = tmp_path / "out"
    argv = [*fake_compare(server, a, b, out), "--max-steps", "1", "--batch-size", "8", "--quiet"]
    assert run_cli(*argv).returncode == 0
    reuse = tmp_path / "reuse"
    result = run_cli("classify", out / "classify.yaml", a, b, "--output", reuse, "--max-rows", "40",
                     "--base-url", server.base_url)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pl.read_parquet(reuse / "properties.parquet")
    assert table.height == 2 * 3 and set(table["file"]) == {"tuned", "base"}
    tuned = table.filter(pl.col("file") == "tuned")
    assert tuned["base"].to_list() == ["base"] * 3 and (tuned["n_pairs"] == 40).all()
    zephyr = tuned.filter(pl.col("text").str.contains("zephyr")).row(0, named=True)
    assert zephyr["prevalence"] > zephyr["prevalence_base"] and zephyr["q_value"] < 0.05
    assert "mention 'zephyr'?" in result.stderr


def test_a_damaged_properties_entry_in_classify_yaml_is_a_user_error(server, fake, tmp_path):
    a, b = planted_files(tmp_path)
    out = tmp_path / "out"
    assert run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--quiet").returncode == 0
    document = yaml.safe_load((out / "classify.yaml").read_text())
    document["properties"]["items"][0]["messages"] = "nothing"
    damaged = tmp_path / "damaged.yaml"
    damaged.write_text(yaml.safe_dump(document))
    sent = fake.count
    result = run_cli("classify", damaged, a, "--output", tmp_path / "r", "--base-url", server.base_url)
    assert result.returncode == 2 and "damaged properties" in result.stderr
    assert fake.count == sent and not (tmp_path / "r").exists()


def mumbling_checker(body: dict) -> list[tuple[str, float]]:
    """Rows that say 'mumble' get yes/no masses of 0.1 in all; the others a clear, full-mass answer."""
    if "mumble" in row_of(body):
        return [("Hmm", -0.1), ("yes", math.log(0.06)), ("no", math.log(0.04))]
    return planted_word_checker()(body)


def test_a_property_check_with_little_yes_no_mass_is_unscored_with_its_reason(tmp_path):
    """As for 'A'/'B': a row whose 'yes'+'no' hold 0.1 of the answer is unscored, never a confident 0.6."""
    rows_a = [{"answer": f"Answer {i} {'mumble' if i < 5 else 'zephyr'}"} for i in range(20)]
    rows_b = [{"answer": f"Answer {i} plain"} for i in range(20)]
    a, b = write_jsonl(tmp_path / "a.jsonl", rows_a), write_jsonl(tmp_path / "b.jsonl", rows_b)
    props = tmp_path / "props.yaml"
    props.write_text("- Does the answer mention 'zephyr'?\n")
    out = tmp_path / "out"
    with ServerThread(FakeOpenAI(property_checker=mumbling_checker)) as server:
        result = run_cli("properties", props, a, b, "--output", out,
                         "--base-url", server.base_url, "--model", "fake-model", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = pl.read_parquet(out / "property_scores.parquet").filter(pl.col("label") == "a").sort("row")
    assert scores["p_yes"].null_count() == 5 and scores["p_yes"][:5].null_count() == 5
    reason = "label mass 0.100 below min_label_mass 0.5: the model put most of its answer on tokens other than 'yes' and 'no'"
    assert all(e == reason for e in scores["error"][:5])
    assert scores["p_yes"][5:].min() > 0.85
