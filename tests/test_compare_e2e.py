"""The whole job through the real command line against the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import PLANTED_KEY, fake_compare, fruit_files, fruit_rows, run_cli, write_jsonl
from tests.fake_openai import FakeOpenAI, ServerThread, keyword_scorer, row_of, top_logprobs_for


def compare(server, files, out: Path, *extra: str | Path):
    a, b = files
    return run_cli(
        *fake_compare(server, a, b, out),
        "--batch-size",
        "8",
        "--max-steps",
        "3",
        "--quiet",
        *extra,
    )


def test_full_run_writes_every_artifact_and_scores_every_row(server, fake, files, tmp_path):
    out = tmp_path / "out"
    result = compare(server, files, out)
    assert result.returncode == 0, result.stderr
    for name in (
        "classify.yaml",
        "predictions.parquet",
        "metrics.parquet",
        "steps.jsonl",
        "run.json",
        "index.html",
        "accuracy.html",
        "confidence.html",
    ):
        assert (out / name).is_file(), name

    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.height == 80
    for label in "AB":
        rows = predictions.filter(pl.col("label") == label)["row"].sort().to_list()
        assert rows == list(range(40))
    # the fake gives p(A) = 0.9 for apple rows and 0.15 for banana rows, split over "A" and " A"
    p_a = predictions.filter(pl.col("label") == "A")["p_a"]
    p_b = predictions.filter(pl.col("label") == "B")["p_a"]
    assert all(math.isclose(p, 0.9, abs_tol=1e-9) for p in p_a)
    assert all(math.isclose(p, 0.15, abs_tol=1e-9) for p in p_b)
    assert predictions["error"].null_count() == 80
    assert set(predictions["split"]) <= {"train", "validation", "test", "rest"}

    metrics = pl.read_parquet(out / "metrics.parquet")
    steps = metrics.filter(pl.col("phase") == "step")
    assert sorted(set(steps["step"])) == [1, 2, 3]
    for column in (
        "step",
        "epoch",
        "n",
        "tp",
        "fp",
        "tn",
        "fn",
        "accuracy",
        "mean_confidence",
        "n_unscored",
        "split",
    ):
        assert column in metrics.columns
    train1 = steps.filter((pl.col("step") == 1) & (pl.col("split") == "train")).row(0, named=True)
    assert (train1["n"], train1["tp"], train1["tn"], train1["fp"], train1["fn"]) == (16, 8, 8, 0, 0)
    assert math.isclose(train1["mean_confidence"], (0.9 + 0.85) / 2)

    lines = (out / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["stats"]["requests"] == len(fake.requests)
    assert run["labels"]["A"]["name"] == "apples" and run["labels"]["B"]["name"] == "bananas"


def test_requests_on_the_wire(server, fake, files, tmp_path):
    """Classify requests hold exactly one row and the exact parameters; describe requests carry history."""
    out = tmp_path / "out"
    assert compare(server, files, out, "--extra-prompt", "Mind the FRUIT.").returncode == 0
    classify = fake.classify_requests()
    assert classify, "no classify request reached the server"
    texts = {json.dumps(r) for r in fruit_rows("apple", 40) + fruit_rows("banana", 40)}
    rendered = {f"Question:\n{r['question']}\n\nAnswer:\n{r['answer']}" for r in map(json.loads, texts)}
    for body in classify:
        assert body["max_tokens"] == 1 and body["temperature"] == 0
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        content = "".join(m["content"] for m in body["messages"])
        assert len(body["messages"]) == 2 and body["messages"][-1]["content"].count("<example>") == 1
        assert row_of(body) in rendered
        assert (
            "apples.jsonl" not in content and "bananas.jsonl" not in content and str(tmp_path) not in content
        )
    # the row comes after the instructions and the question after the row
    last = classify[0]["messages"][-1]["content"]
    assert last.index("</example>") < last.index("Answer only with 'A' or 'B'")

    describe = fake.describe_requests()
    assert len(describe) == 3
    assert "Mind the FRUIT." in describe[0]["messages"][-1]["content"]
    assert "Earlier descriptions" not in describe[0]["messages"][-1]["content"]
    second = describe[1]["messages"][-1]["content"]
    first_description = json.loads((out / "steps.jsonl").read_text().splitlines()[0])["description"]
    assert first_description in second
    assert "accuracy 100%" in second and "TP=8" in second


def test_validation_rows_never_reach_the_describer(server, fake, files, tmp_path):
    out = tmp_path / "out"
    assert compare(server, files, out).returncode == 0
    predictions = pl.read_parquet(out / "predictions.parquet")
    held = predictions.filter(pl.col("split") == "validation")
    assert held.height == 8  # 10% of 40 pairs, from each file
    describe_text = "\n".join(m["content"] for body in fake.describe_requests() for m in body["messages"])
    for text in held["text"]:
        assert text not in describe_text
    shown = predictions.filter(pl.col("split") == "train")
    assert all(text in describe_text for text in shown["text"])


def test_seed_spellings_and_classifier_reuse(server, fake, files, tmp_path):
    a, b = files
    out = tmp_path / "out"
    result = run_cli(
        "compare",
        a,
        b,
        "--base-url",
        server.base_url,
        "--model",
        "fake-model",
        "--outout",
        out,
        "--batch_size",
        "16",
        "--epochs",
        "1",
        "--extra-prompt",
        "Explain the difference",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load((out / "classify.yaml").read_text())
    assert document["labels"]["A"] == {"name": "apples", "path": str(a), "rows": 40}
    assert document["labels"]["B"]["path"] == str(b)
    assert "{row}" in document["messages"][-1]["content"]
    assert document["description"] in document["messages"][0]["content"]
    assert document["selected"]["step"] >= 1 and "log loss" in document["selected"]["reason"]

    new_a = write_jsonl(tmp_path / "new_a.jsonl", fruit_rows("apple", 5))
    new_b = write_jsonl(tmp_path / "new_b.jsonl", fruit_rows("banana", 7))
    reused = run_cli(
        "classify",
        out / "classify.yaml",
        new_a,
        new_b,
        "--output",
        tmp_path / "reuse",
        "--quiet",
        "--base-url",
        server.base_url,
    )
    assert reused.returncode == 0, reused.stderr
    predictions = pl.read_parquet(tmp_path / "reuse" / "predictions.parquet")
    assert predictions.height == 12
    assert predictions.filter(pl.col("label") == "A")["predicted"].to_list() == ["A"] * 5
    assert pl.read_parquet(tmp_path / "reuse" / "metrics.parquet")["accuracy"][0] == 1.0

    single = run_cli(
        "classify",
        out / "classify.yaml",
        new_a,
        "--output",
        tmp_path / "one",
        "--quiet",
        "--base-url",
        server.base_url,
    )
    assert single.returncode == 0, single.stderr
    assert pl.read_parquet(tmp_path / "one" / "predictions.parquet")["p_a"].to_list() == pytest.approx(
        [0.9] * 5
    )


def test_rerun_sends_nothing_and_gives_identical_outputs(server, fake, files, tmp_path):
    out = tmp_path / "out"
    assert compare(server, files, out).returncode == 0
    sent = len(fake.requests)
    before = {
        n: (out / n).read_bytes()
        for n in ("classify.yaml", "predictions.parquet", "metrics.parquet", "steps.jsonl")
    }
    again = compare(server, files, out)
    assert again.returncode == 0, again.stderr
    assert len(fake.requests) == sent, "a re-run sent paid requests again"
    after = {n: (out / n).read_bytes() for n in before}
    assert after == before
    assert json.loads((out / "run.json").read_text())["stats"]["requests"] == 0


def test_unscored_rows_are_recorded_not_half(files, tmp_path, fast_retries):
    def scorer(body):
        if "Answer 3:" in row_of(body):
            return [("Sure", -0.1), ("I", -2.0)]
        return top_logprobs_for(0.9 if "apple" in row_of(body) else 0.15)

    fake = FakeOpenAI(scorer=scorer)
    with ServerThread(fake) as server:
        assert compare(server, files, tmp_path / "out", "--config", fast_retries).returncode == 0
    predictions = pl.read_parquet(tmp_path / "out" / "predictions.parquet")
    bad = predictions.filter(pl.col("row") == 3)
    assert bad["p_a"].null_count() == 2 and bad["predicted"].null_count() == 2
    assert all("neither 'A' nor 'B'" in e for e in bad["error"])
    final = pl.read_parquet(tmp_path / "out" / "metrics.parquet").filter(
        (pl.col("phase") == "final") & (pl.col("split") == "all") & (pl.col("correction") == "raw")
    )
    assert final["n_unscored"][0] == 2 and final["n"][0] == 80


def test_unequal_lengths_pair_the_shorter_and_classify_all(server, fake, tmp_path):
    a, b = fruit_files(tmp_path, 30, 22)
    result = run_cli(
        *fake_compare(server, a, b, tmp_path / "out"),
        "--batch-size",
        "8",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("pairing the first 22") == 1
    predictions = pl.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert predictions.filter(pl.col("label") == "A").height == 30
    assert predictions.filter(pl.col("label") == "B").height == 22
    assert set(predictions.filter(pl.col("row") >= 22)["split"]) == {"rest"}


@pytest.mark.parametrize("suffix", ["csv", "json", "parquet"])
def test_other_formats(server, fake, tmp_path, suffix):
    paths = []
    for name, fruit in (("a", "apple"), ("b", "banana")):
        frame = pl.DataFrame(fruit_rows(fruit, 12)).rename({"answer": "response"})
        path = tmp_path / f"{name}.{suffix}"
        if suffix == "csv":
            frame.write_csv(path)
        elif suffix == "json":
            path.write_text(json.dumps(frame.to_dicts()))
        else:
            frame.write_parquet(path)
        paths.append(path)
    result = run_cli(
        "compare",
        *paths,
        "--base-url",
        server.base_url,
        "--model",
        "fake-model",
        "--output",
        tmp_path / "out",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert pl.read_parquet(tmp_path / "out" / "predictions.parquet").height == 24


def test_api_key_never_written(server, fake, files, tmp_path):
    out = tmp_path / "out"
    result = compare(server, files, out)
    assert result.returncode == 0
    for path in out.rglob("*"):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path
    assert PLANTED_KEY not in result.stdout + result.stderr
    # ...while it really was sent, as the bearer token
    assert fake.auth == {f"Bearer {PLANTED_KEY}"}


def test_key_from_a_dotenv_file(server, fake, files, tmp_path):
    (tmp_path / ".env").write_text(f"# a comment\nexport OPENAI_API_KEY='{PLANTED_KEY}-from-dotenv'\n")
    a, b = files
    common = ("--base-url", server.base_url, "--model", "fake-model", "--max-steps", "1", "--quiet")
    result = run_cli("compare", a, b, "--output", tmp_path / "out", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert fake.auth == {f"Bearer {PLANTED_KEY}"}, "a key in the environment wins over .env"
    fake.auth.clear()
    result = run_cli(
        "compare", a, b, "--output", tmp_path / "out2", *common, cwd=tmp_path, env={"OPENAI_API_KEY": None}
    )
    assert result.returncode == 0, result.stderr
    assert fake.auth == {f"Bearer {PLANTED_KEY}-from-dotenv"}


def test_a_different_run_in_the_output_is_refused(server, fake, files, tmp_path):
    out = tmp_path / "out"
    assert compare(server, files, out).returncode == 0
    other = compare(server, files, out, "--extra-prompt", "something else")
    assert other.returncode == 2
    assert "different earlier run" in other.stderr and "Traceback" not in other.stderr
    assert compare(server, files, out, "--extra-prompt", "something else", "--force").returncode == 0


def test_default_model_from_the_server(server, fake, files, tmp_path):
    a, b = files
    result = run_cli(
        "compare", a, b, "--base-url", server.base_url, "--output", tmp_path / "out", "--max-steps", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "fake-model" in result.stderr
    assert re.search(r"index\.html", result.stdout)


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([], "Question:\nQuestion 0?\n\nAnswer:\nAnswer 0: I would plant a apple tree in every town."),
        (["--no-question"], "Answer 0: I would plant a apple tree in every town."),
        (
            ["--columns", "answer,question"],
            "answer:\nAnswer 0: I would plant a apple tree in every town.\n\nquestion:\nQuestion 0?",
        ),
    ],
)
def test_what_a_row_shows(server, fake, files, tmp_path, flags, expected):
    a, b = files
    result = run_cli(*fake_compare(server, a, b, tmp_path / "out"), "--max-steps", "1", "--quiet", *flags)
    assert result.returncode == 0, result.stderr
    rows = {row_of(body) for body in fake.classify_requests()}
    assert expected in rows
    predictions = pl.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert expected in predictions["text"].to_list()


def test_each_role_is_priced_at_its_own_model(server, fake, files, tmp_path):
    a, b = files
    out = tmp_path / "out"
    result = run_cli(
        "compare", a, b, "--base-url", server.base_url, "--describe-model", "gpt-4.1", "--classify-model",
        "gpt-4.1-mini", "--output", out, "--max-steps", "2", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {body["model"] for body in fake.describe_requests()} == {"gpt-4.1"}
    assert {body["model"] for body in fake.classify_requests()} == {"gpt-4.1-mini"}
    # the request that lists the properties is the describer's too
    assert [body["model"] for body in fake.property_list_requests()] == ["gpt-4.1"]
    stats = json.loads((out / "run.json").read_text())["stats"]
    describe, classify = stats["by_role"]["describe"], stats["by_role"]["classify"]
    assert describe["requests"] == 2 + 1 and classify["requests"] == len(fake.classify_requests())
    expected = (
        describe["prompt_tokens"] * 2.00 + describe["completion_tokens"] * 8.00  # gpt-4.1, per million
        + classify["prompt_tokens"] * 0.40 + classify["completion_tokens"] * 1.60  # gpt-4.1-mini
    ) / 1e6  # fmt: skip
    assert stats["estimated_cost_usd"] == pytest.approx(expected)
    assert stats["requests"] == describe["requests"] + classify["requests"]


def test_classify_never_sends_the_key_to_an_address_from_the_file(server, fake, files, tmp_path):
    a, b = files
    out = tmp_path / "out"
    assert run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--quiet").returncode == 0
    fake.auth.clear()
    sent = len(fake.requests)
    result = run_cli("classify", out / "classify.yaml", a, "--output", tmp_path / "reuse")
    assert result.returncode == 2
    assert f"--base-url {server.base_url}" in result.stderr and "does not send your key" in result.stderr
    assert len(fake.requests) == sent and not fake.auth
    assert not (tmp_path / "reuse").exists()


def test_classify_does_not_overwrite_a_compare_run(server, fake, files, tmp_path):
    a, b = files
    out = tmp_path / "out"
    assert run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--quiet").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for force in ([], ["--force"]):
        result = run_cli(
            "classify", out / "classify.yaml", a, "--output", out, "--base-url", server.base_url, *force
        )
        assert result.returncode == 2, result.stderr
        assert "holds the results of 'asyncpipe compare'" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_compare_does_not_overwrite_a_pairs_summary(server, fake, files, tmp_path):
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "pairs.json").write_text("{}")
    a, b = files
    result = run_cli(*fake_compare(server, a, b, tmp_path / "pairs"))
    assert result.returncode == 2 and "'asyncpipe pairs' summary" in result.stderr
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["pairs.json"]


def test_outputs_are_readable_like_any_new_file(server, fake, files, tmp_path):
    import os
    import stat

    a, b = files
    out = tmp_path / "out"
    assert run_cli(*fake_compare(server, a, b, out), "--max-steps", "1", "--quiet").returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in (
        "classify.yaml",
        "predictions.parquet",
        "metrics.parquet",
        "steps.jsonl",
        "run.json",
        "index.html",
    ):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_reasoning_model_describes_with_room_to_think(server, fake, files, tmp_path):
    a, b = files
    result = run_cli(
        "compare", a, b, "--base-url", server.base_url, "--describe-model", "gpt-5", "--classify-model",
        "fake-model", "--output", tmp_path / "out", "--max-steps", "1", "--describe-max-tokens", "500", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (describe,) = fake.describe_requests()
    assert describe["max_completion_tokens"] == 500 + 16_000 and "max_tokens" not in describe
    assert "temperature" not in describe and "seed" not in describe
    assert all(body["max_tokens"] == 1 for body in fake.classify_requests())


def test_a_shared_cache_keeps_models_and_servers_apart(tmp_path):
    """Two servers, or two models on one server, sharing one --cache never get each other's answers: the
    cache key holds the base URL and the model (the same run against the same endpoint sends nothing)."""
    a, b = fruit_files(tmp_path, 8)
    cache = tmp_path / "shared.sqlite"
    first = FakeOpenAI()
    # a second server that disagrees with the first on every row
    other = FakeOpenAI(scorer=keyword_scorer("banana", "apple"), model="other-model")

    def run(server, model: str, out: str):
        result = run_cli(
            "compare", a, b, "--base-url", server.base_url, "--model", model, "--output", tmp_path / out,
            "--cache", cache, "--max-steps", "1", "--batch-size", "4", "--quiet",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return pl.read_parquet(tmp_path / out / "predictions.parquet").sort("label", "row")["p_a"].to_list()

    with ServerThread(first) as one, ServerThread(other) as two:
        p_first = run(one, "fake-model", "one")
        sent = first.count
        assert run(one, "fake-model", "one-again") == p_first and first.count == sent  # all from the cache
        p_other = run(two, "fake-model", "two")  # same model name, another base URL
        assert other.count == sent
        assert all(x != y for x, y in zip(p_first, p_other, strict=True))
        run(one, "another-model", "three")  # same base URL, another model
        assert first.count == 2 * sent


def test_the_report_of_a_run_shows_the_held_out_test_accuracy(server, fake, files, tmp_path):
    """The figure the README says to publish: the report of a real run has the test cards, with their n."""
    out = tmp_path / "out"
    assert compare(server, files, out).returncode == 0
    final = json.loads((out / "run.json").read_text())["final"]
    assert final["raw"]["test"]["n"] == 8  # 10% of 40 pairs, from both files
    html = (out / "index.html").read_text()
    start = html.index("<h3>Test split")
    section = html[start : html.index("<h3>", start + 1)]
    cards = re.findall(
        r'<div class="card-title">test split: accuracy, ([^<]+)</div>(.*?)</div></div>', section
    )
    assert [title for title, _ in cards] == ["raw", "bias-corrected"]
    for _, body in cards:
        assert "n = 8" in body and ">100.0%<" in body  # the fake tells every row apart
    # pair accuracy comes first: 4 test pairs, every one ordered right
    assert section.index("test split: pair accuracy") < section.index("test split: accuracy, raw")
    assert "4 pairs: 4 won · 0 lost · 0 tied" in section
