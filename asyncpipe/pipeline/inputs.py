"""Load both files, choose what a row is, render every row once, and plan the comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from asyncpipe.config import RunConfig
from asyncpipe.data.load import choose_text_column, read_table, rename_side_column
from asyncpipe.data.pairing import Plan, make_plan, smallest_test_fraction
from asyncpipe.data.render import RowLayout, make_layout, render_rows
from asyncpipe.errors import UserError
from asyncpipe.metrics import pairs_needed, smallest_sign_test_p
from asyncpipe.records import LabelInfo


@dataclass(frozen=True)
class Side:
    """One input file, rendered: ``texts[i]`` is row i as a model sees it."""

    label: str
    name: str
    path: Path
    texts: list[str]
    n_cut: int

    def label_info(self) -> LabelInfo:
        """What this side's label stands for, as run.json and classify.yaml record it."""
        return LabelInfo(self.name, str(self.path), len(self.texts))


def side_names(path_a: Path, path_b: Path) -> tuple[str, str]:
    """Readable names for the two files: the file stem, with the parent folder when stems collide."""
    a, b = path_a.stem, path_b.stem
    if a == b:
        a, b = f"{path_a.parent.name}/{a}", f"{path_b.parent.name}/{b}"
    if a == b:
        a, b = str(path_a), str(path_b)
    return a, b


def load_sides(
    path_a: Path,
    path_b: Path,
    *,
    text_column: str | None,
    columns: list[str] | None,
    with_question: bool,
    max_row_chars: int,
    max_rows: int | None,
    text_column_b: str | None = None,
    context_column: str = "question",
    context_column_b: str | None = None,
) -> tuple[Side, Side, RowLayout]:
    """Both files rendered with one layout. B's text and context columns may have names of their own
    (``text_column_b``, ``context_column_b``): they are read under A's names."""
    name_a, name_b = side_names(path_a, path_b)
    frame_a, frame_b = read_table(path_a), read_table(path_b)
    if max_rows is not None:
        frame_a, frame_b = frame_a.head(max_rows), frame_b.head(max_rows)
    if text_column_b is not None:
        if text_column is None:
            text_column = choose_text_column(frame_a, frame_a, None, (str(path_a), str(path_a)))
        frame_b = rename_side_column(frame_b, text_column_b, text_column, str(path_b), "--column-b")
    if context_column_b is not None:
        frame_b = rename_side_column(
            frame_b, context_column_b, context_column, str(path_b), "--context-column-b"
        )
    column = choose_text_column(frame_a, frame_b, text_column, (str(path_a), str(path_b)))
    layout = make_layout(
        frame_a,
        frame_b,
        text_column=column,
        columns=columns,
        with_question=with_question,
        max_chars=max_row_chars,
        context_column=context_column,
    )
    return (
        _side("A", name_a, path_a, frame_a, layout),
        _side("B", name_b, path_b, frame_b, layout),
        layout,
    )


@dataclass(frozen=True)
class Loaded:
    """What a comparison read and planned, before anything is sent or written: both files rendered row
    by row, the row layout, and the plan (batches, validation and test pairs, steps)."""

    side_a: Side
    side_b: Side
    layout: RowLayout
    plan: Plan

    @property
    def n_pairs(self) -> int:
        return self.plan.n_pairs

    @property
    def rows_cut(self) -> int:
        return self.side_a.n_cut + self.side_b.n_cut

    def side(self, label: str) -> Side:
        return self.side_a if label == "A" else self.side_b

    def labels(self) -> dict[str, LabelInfo]:
        return {"A": self.side_a.label_info(), "B": self.side_b.label_info()}


def load_comparison(cfg: RunConfig) -> Loaded:
    """Both files of a comparison, read as its configuration says, and its plan. Raises UserError."""
    side_a, side_b, layout = load_sides(
        cfg.file_a,
        cfg.file_b,
        text_column=cfg.text_column,
        columns=list(cfg.columns) if cfg.columns else None,
        with_question=cfg.with_question,
        max_row_chars=cfg.max_row_chars,
        max_rows=cfg.max_rows,
        text_column_b=cfg.text_column_b,
        context_column=cfg.context_column,
        context_column_b=cfg.context_column_b,
    )
    n_pairs = min(len(side_a.texts), len(side_b.texts))
    plan = make_plan(
        n_pairs,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_fraction=cfg.validation_fraction,
        validation_max=cfg.validation_max,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        test_fraction=cfg.test_fraction,
        test_max=cfg.test_max,
    )
    return Loaded(side_a, side_b, layout, plan)


def load_side(
    label: str, name: str, path: Path, layout: RowLayout, *, text_column: str | None = None
) -> Side:
    """One file rendered with ``layout``; ``text_column``: its own name for the layout's text column."""
    frame = read_table(path)
    if text_column is not None:
        if layout.text_column is None:
            raise UserError("--column-b: the classifier's rows have no text column to stand for")
        frame = rename_side_column(frame, text_column, layout.text_column, str(path), "--column-b")
    return _side(label, name, path, frame, layout)


def _side(label: str, name: str, path: Path, frame: pl.DataFrame, layout: RowLayout) -> Side:
    texts, n_cut = render_rows(frame, layout, str(path))
    return Side(label, name, path, texts, n_cut)


def test_split_warning(cfg: RunConfig, plan: Plan, alpha: float = 0.05) -> str | None:
    """A warning when the test split is too small for even a perfect classifier to reach p < ``alpha``
    in the one-sided pair sign test (every pair won gives p = 0.5 ** n), with the ``--test-fraction``
    that would suffice; None when the split is large enough or there is none."""
    n_test = len(plan.test)
    needed = pairs_needed(alpha)
    if n_test == 0 or n_test >= needed:
        return None
    fraction = smallest_test_fraction(plan.n_pairs, len(plan.validation), cfg.test_max, needed)
    if fraction is not None:
        advice = f"--test-fraction {fraction:g} would give {needed}"
    elif cfg.test_max < needed:
        advice = f"raise test_max (now {cfg.test_max}) to at least {needed}"
    else:
        advice = f"{plan.n_pairs} pairs are too few for that with this validation split"
    return (
        f"the test split holds {n_test} pair(s): even a perfect classifier cannot reach p < {alpha:g} "
        f"in the one-sided pair sign test there (at best p = {smallest_sign_test_p(n_test):.3g}; "
        f"{needed} pairs are needed); {advice}"
    )
