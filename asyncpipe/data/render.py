"""Render one row as the text a model sees: labelled fields in a stable order, long rows cut visibly."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from asyncpipe.data.load import text_values
from asyncpipe.errors import UserError

CUT_MARKER = "[… {n} characters cut …]"
QUESTION_LABELS = ("Question", "Answer")


@dataclass(frozen=True)
class RowLayout:
    """Which columns make up a row, and under which labels. One field alone is shown bare.

    ``text_column`` is the field being compared: it must have a value in every row, while the other
    fields are context and show as empty when null. ``None`` (a layout whose text column is unknown)
    requires a value in every field."""

    columns: tuple[str, ...]
    labels: tuple[str, ...]
    max_chars: int
    text_column: str | None = None

    def to_dict(self) -> dict:
        return {
            "columns": list(self.columns),
            "labels": list(self.labels),
            "max_row_chars": self.max_chars,
            "text_column": self.text_column,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RowLayout:
        columns, labels = tuple(data["columns"]), tuple(data["labels"])
        if (
            not columns
            or len(labels) != len(columns)
            or not all(isinstance(c, str) for c in columns + labels)
        ):
            raise ValueError("columns and labels must be two equally long lists of names")
        text_column = data.get("text_column")
        # saved before the text column was recorded: the automatic layouts put it last
        if "text_column" not in data and (len(columns) == 1 or labels == QUESTION_LABELS):
            text_column = columns[-1]
        if text_column is not None and text_column not in columns:
            raise ValueError(f"text column {text_column!r} is not one of the columns")
        max_chars = int(data["max_row_chars"])
        if max_chars < 1:
            raise ValueError("max_row_chars must be at least 1")
        return cls(columns, labels, max_chars, text_column)


def make_layout(
    a: pl.DataFrame,
    b: pl.DataFrame,
    *,
    text_column: str,
    columns: list[str] | None,
    with_question: bool,
    max_chars: int,
    context_column: str = "question",
) -> RowLayout:
    """Decide the layout: explicit ``--columns``, or the text column with the context column (the
    question, by default) before it."""
    if columns:
        for column in columns:
            for frame, side in ((a, "A"), (b, "B")):
                if column not in frame.columns:
                    raise UserError(
                        f"file {side} has no column '{column}' (from --columns); it has: {', '.join(frame.columns)}"
                    )
        text = text_column if text_column in columns else None
        return RowLayout(tuple(columns), tuple(columns), max_chars, text)
    if (
        with_question
        and text_column != context_column
        and context_column in a.columns
        and context_column in b.columns
    ):
        return RowLayout((context_column, text_column), QUESTION_LABELS, max_chars, text_column)
    return RowLayout((text_column,), (text_column,), max_chars, text_column)


def cut_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the head of a long text and mark the cut; the marker itself says how much went."""
    if len(text) <= max_chars:
        return text, False
    removed = len(text) - max_chars
    return text[:max_chars] + "\n" + CUT_MARKER.format(n=removed), True


def share_budget(lengths: list[int], budget: int) -> list[int]:
    """How many characters each field may keep so that together they fit ``budget`` (water-filling).

    Fields shorter than an even share keep their length and leave the rest to the longer ones, which
    split it evenly; the shortest go first, so the rounding remainder falls to the longest."""
    allowed = [0] * len(lengths)
    left = budget
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for rank, i in enumerate(order):
        allowed[i] = min(lengths[i], left // (len(lengths) - rank))
        left -= allowed[i]
    return allowed


def check_columns(frame: pl.DataFrame, layout: RowLayout, name: str) -> None:
    """Every column the layout shows must be in the file (a saved classifier may meet any file)."""
    for column in layout.columns:
        if column not in frame.columns:
            raise UserError(
                f"{name}: no column '{column}' that this classifier's rows use (it shows: "
                f"{', '.join(layout.columns)}); its columns are: {', '.join(frame.columns)}"
            )


def render_rows(frame: pl.DataFrame, layout: RowLayout, name: str) -> tuple[list[str], int]:
    """All rows of ``frame`` rendered by ``layout``; returns the texts and how many were cut.

    ``layout.max_chars`` bounds the fields of a row together (labels and cut markers come on top)."""
    check_columns(frame, layout, name)
    values = [
        text_values(
            frame,
            column,
            name,
            missing_as_empty=layout.text_column is not None and column != layout.text_column,
        )
        for column in layout.columns
    ]
    texts: list[str] = []
    n_cut = 0
    single = len(layout.columns) == 1
    for fields in zip(*values, strict=True):
        lengths = [len(value) for value in fields]
        allowed = share_budget(lengths, layout.max_chars) if sum(lengths) > layout.max_chars else lengths
        parts = []
        row_cut = False
        for label, value, limit in zip(layout.labels, fields, allowed, strict=True):
            value, was_cut = cut_text(value, limit)
            row_cut |= was_cut
            parts.append(value if single else f"{label}:\n{value}")
        n_cut += row_cut
        texts.append("\n\n".join(parts))
    return texts, n_cut
