"""Render one row as the text a model sees: labelled fields in a stable order, long rows cut visibly."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from asyncpipe.data.load import text_values
from asyncpipe.errors import UserError

CUT_MARKER = "[… {n} characters cut …]"


@dataclass(frozen=True)
class RowLayout:
    """Which columns make up a row, and under which labels. One field alone is shown bare."""

    columns: tuple[str, ...]
    labels: tuple[str, ...]
    max_chars: int

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "labels": list(self.labels), "max_row_chars": self.max_chars}

    @classmethod
    def from_dict(cls, data: dict) -> RowLayout:
        return cls(tuple(data["columns"]), tuple(data["labels"]), int(data["max_row_chars"]))


def make_layout(
    a: pl.DataFrame,
    b: pl.DataFrame,
    *,
    text_column: str,
    columns: list[str] | None,
    with_question: bool,
    max_chars: int,
) -> RowLayout:
    """Decide the layout: explicit ``--columns``, or the text column with the question as context."""
    if columns:
        for column in columns:
            for frame, side in ((a, "A"), (b, "B")):
                if column not in frame.columns:
                    raise UserError(
                        f"file {side} has no column '{column}' (from --columns); it has: {', '.join(frame.columns)}"
                    )
        return RowLayout(tuple(columns), tuple(columns), max_chars)
    if with_question and text_column != "question" and "question" in a.columns and "question" in b.columns:
        return RowLayout(("question", text_column), ("Question", "Answer"), max_chars)
    return RowLayout((text_column,), (text_column,), max_chars)


def cut_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the head of a long text and mark the cut; the marker itself says how much went."""
    if len(text) <= max_chars:
        return text, False
    removed = len(text) - max_chars
    return text[:max_chars] + "\n" + CUT_MARKER.format(n=removed), True


def render_rows(frame: pl.DataFrame, layout: RowLayout, name: str) -> tuple[list[str], int]:
    """All rows of ``frame`` rendered by ``layout``; returns the texts and how many were cut."""
    values = [text_values(frame, column, name) for column in layout.columns]
    budget = max(1, layout.max_chars // len(layout.columns))
    texts: list[str] = []
    n_cut = 0
    single = len(layout.columns) == 1
    for fields in zip(*values, strict=True):
        parts = []
        row_cut = False
        for label, value in zip(layout.labels, fields, strict=True):
            value, was_cut = cut_text(value, budget)
            row_cut |= was_cut
            parts.append(value if single else f"{label}:\n{value}")
        n_cut += row_cut
        texts.append("\n\n".join(parts))
    return texts, n_cut
