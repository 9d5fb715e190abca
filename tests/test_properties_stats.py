"""The statistics of the properties stage, the parser of a describer's list, and PROPS.yaml."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from asyncpipe.errors import UserError
from asyncpipe.llm.labels import YES_NO, p_first_from_top_logprobs
from asyncpipe.metrics.prevalence import (
    PairedCounts,
    bh_q_values,
    newcombe_paired_interval,
    paired_difference,
    prevalence_table,
    property_table,
)
from asyncpipe.prompts.properties import load_properties_file, parse_properties


def test_newcombe_interval_matches_the_published_worked_example():
    # Fagerland, Lydersen & Laake (2014), Stat Med 33:2850, and their book, ch. 8: Cavo et al. (2012),
    # complete response before/after consolidation: 59, 6, 16, 80 -> -0.0621 (95% CI -0.1186 to -0.0046)
    low, high = newcombe_paired_interval(PairedCounts(59, 6, 16, 80))
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_newcombe_interval_is_symmetric_in_the_two_files_and_stays_in_bounds():
    low, high = newcombe_paired_interval(PairedCounts(3, 10, 2, 5))
    swapped = newcombe_paired_interval(PairedCounts(3, 2, 10, 5))
    assert swapped == pytest.approx((-high, -low))
    assert newcombe_paired_interval(PairedCounts(0, 20, 0, 0))[1] <= 1.0
    assert newcombe_paired_interval(PairedCounts(0, 0, 20, 0))[0] >= -1.0


def test_exact_mcnemar_uses_only_the_discordant_pairs():
    # the same example: 6 vs 16 discordant pairs, exact conditional p = 0.052 (Fagerland et al. 2013)
    assert paired_difference([True] * 6 + [False] * 16, [False] * 6 + [True] * 16)[
        "p_value"
    ] == pytest.approx(0.0525, abs=5e-4)
    concordant = paired_difference([True, False] * 5, [True, False] * 5)
    assert concordant["p_value"] == 1.0 and concordant["difference"] == 0.0
    assert paired_difference([True] * 10, [False] * 10)["p_value"] == pytest.approx(2 * 0.5**10)


def test_benjamini_hochberg_against_a_hand_computed_example():
    # sorted p 0.01, 0.02, 0.03, 0.5 over m = 4: q = min over later of p*m/rank -> .04, .04, .04, .5
    q = bh_q_values([0.03, None, 0.01, 0.5, 0.02])
    assert q[1] is None
    assert [round(v, 6) for v in (q[0], q[2], q[3], q[4])] == [0.04, 0.04, 0.5, 0.04]


def _scores(prop: str, yes_a: list[bool], yes_b: list[bool]) -> pl.DataFrame:
    rows = [(prop, "A", i, 0.9 if y else 0.1) for i, y in enumerate(yes_a)]
    rows += [(prop, "B", i, 0.9 if y else 0.1) for i, y in enumerate(yes_b)]
    return pl.DataFrame(rows, schema=["property", "label", "row", "p_yes"], orient="row")


def test_property_table_ranks_by_difference_and_flags_a_wrong_claim():
    n = 50
    scores = pl.concat(
        [
            _scores("P1", [i < 10 for i in range(n)], [i < 12 for i in range(n)]),  # no real difference
            _scores("P2", [i < 40 for i in range(n)], [i < 5 for i in range(n)]),  # A much more often
            _scores("P3", [i < 5 for i in range(n)], [i < 30 for i in range(n)]),  # B more often
        ]
    )
    table = property_table(scores, [("P1", "one", "A"), ("P2", "two", "A"), ("P3", "three", "A")])
    assert table["property"].to_list() == ["P2", "P3", "P1"]
    first = table.row(0, named=True)
    assert first["prevalence_a"] == 0.8 and first["prevalence_b"] == 0.1
    assert first["difference"] == pytest.approx(0.7) and first["ci_low"] < 0.7 < first["ci_high"]
    assert first["measured"] == "A" and first["contradicts"] is False and first["q_value"] < 0.001
    second = table.row(1, named=True)
    assert second["measured"] == "B" and second["contradicts"] is True
    assert table.row(2, named=True)["q_value"] > 0.05


def test_unscored_rows_leave_their_pair_out():
    scores = _scores("P1", [True, True, False], [False, False, False]).with_columns(
        pl.when(pl.col("row") == 0).then(None).otherwise(pl.col("p_yes")).alias("p_yes")
    )
    row = property_table(scores, [("P1", "q", None)]).row(0, named=True)
    assert row["n_pairs"] == 2 and row["n_unscored"] == 2 and row["prevalence_a"] == 0.5
    assert row["contradicts"] is None


def test_prevalence_table_has_wilson_intervals_and_differences_against_the_base():
    scores = pl.concat(
        [
            _scores("P1", [i < 8 for i in range(10)], [i < 2 for i in range(10)]).with_columns(
                pl.col("label").replace({"A": "tuned", "B": "base"})
            )
        ]
    )
    table = prevalence_table(scores, [("P1", "q")], [("tuned", "base"), ("base", None)])
    tuned = table.filter(pl.col("file") == "tuned").row(0, named=True)
    assert tuned["prevalence"] == 0.8 and tuned["prevalence_base"] == 0.2 and tuned["n_pairs"] == 10
    assert tuned["prevalence_low"] == pytest.approx(0.4902, abs=1e-4)  # Wilson 8/10
    assert tuned["difference"] == pytest.approx(0.6) and tuned["q_value"] == tuned["p_value"]
    assert table.filter(pl.col("file") == "base")["p_value"].to_list() == [None]


def test_yes_no_labels_ignore_case_and_whitespace():
    p, error = p_first_from_top_logprobs([("Yes", -0.5), (" yes", -2.0), ("NO", -1.5), ("Maybe", -3)], YES_NO)
    assert error is None
    import math

    yes, no = math.exp(-0.5) + math.exp(-2.0), math.exp(-1.5)
    assert p == pytest.approx(yes / (yes + no))
    p, error = p_first_from_top_logprobs([("A", -0.1), ("B", -1)], YES_NO)
    assert p is None and "neither 'yes' nor 'no'" in error


def test_parse_bullets_numbers_claims_and_duplicates():
    reply = """Here are the properties:

- Does the answer mention 'zephyr'? [A]
* **Does the answer use a formal tone?** (more common in dataset B)
2. Does the answer recommend a risky action? — A
3) Does the answer mention 'zephyr'?  [B]
(4) Does it cite vitamin-B
-
•   Is the answer longer than three sentences?
"""
    found = parse_properties(reply, 10)
    assert [(p.id, p.text, p.claimed) for p in found] == [
        ("P1", "Does the answer mention 'zephyr'?", "A"),
        ("P2", "Does the answer use a formal tone?", "B"),
        ("P3", "Does the answer recommend a risky action?", "A"),
        ("P4", "Does it cite vitamin-B", None),
        ("P5", "Is the answer longer than three sentences?", None),
    ]
    assert len(parse_properties(reply, 2)) == 2
    assert parse_properties("Dataset A is more formal than dataset B.", 8) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("question: one\n", "expected a list"),
        ("[]\n", "is empty"),
        ("- 3\n", "must be non-empty text"),
        ("- {name: x, question: 'Does it?'}\n- {name: x, question: 'Does it not?'}\n", "duplicate name 'x'"),
        ("- {name: x, prompt: 'Does it?'}\n", "unknown key(s) prompt"),
        ("- Does it?\n- Does it?\n", "duplicate question"),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_props_file_is_one_user_error(tmp_path: Path, text: str, message: str):
    path = tmp_path / "props.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_properties_file(path)


def test_props_file_takes_questions_and_records(tmp_path: Path):
    path = tmp_path / "props.yaml"
    path.write_text(
        "- Does the answer seek power?\n- name: risky\n  question: Does it recommend a risky action?\n"
    )
    found = load_properties_file(path)
    assert [(p.id, p.text) for p in found] == [
        ("P1", "Does the answer seek power?"),
        ("risky", "Does it recommend a risky action?"),
    ]


def test_report_section_escapes_properties_and_rows(tmp_path: Path):
    from asyncpipe.report.properties_page import properties_section

    evil = "<script>alert(1)</script>"
    scores = _scores("P1", [True, True, False], [False, True, False])
    table = property_table(scores, [("P1", f"Does it say {evil}?", "A")])
    table.write_parquet(tmp_path / "properties.parquet")
    scores.with_columns(split=pl.lit("test"), error=pl.lit(None, pl.Utf8)).write_parquet(
        tmp_path / "property_scores.parquet"
    )
    texts = [(label, i, f"row {label}{i} {evil}") for label in "AB" for i in range(3)]
    pl.DataFrame(texts, schema=["label", "row", "text"], orient="row").write_parquet(
        tmp_path / "predictions.parquet"
    )
    html = properties_section(tmp_path)
    assert evil not in html and "&lt;script&gt;" in html
    assert "row A0" in html and "row A1" in html and "row B1" in html and "row B0" not in html
    assert "held-out pairs" in html
    assert properties_section(tmp_path / "nothing-here") == ""
