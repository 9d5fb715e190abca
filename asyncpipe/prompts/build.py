"""Build the describe and classify messages from the templates in ``config/default.yaml``.

Layout matters for cost and safety: in a classify request everything before the row (instructions and
description) is byte-identical across the rows of a step, so providers can cache that prefix; the row
sits inside an ``<example>`` fence and the question comes after it, so text inside a row cannot pass
for instructions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asyncpipe.config import Templates
from asyncpipe.llm.base import Message
from asyncpipe.records import Summary

ROW_PLACEHOLDER = "{row}"
_FIELD = re.compile(r"\{([a-z_]+)\}")
# Whitespace anywhere inside the tag too: a reader (and a model) takes "</ example>" or "< /EXAMPLE >"
# for the closing tag.
_FENCE_CLOSE = re.compile(r"<\s*/\s*(example|dataset_[AB]|description|question)\s*>", re.IGNORECASE)


def fill(template: str, **values: str) -> str:
    """Replace ``{name}`` for the given names only, in one pass: braces in values or in user templates
    are left alone, and a value is never re-scanned for fields."""
    return _FIELD.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def fence_safe(text: str) -> str:
    """Neutralise closing tags that would end a fence early (``</example>`` → ``<\\/example>``,
    ``</ EXAMPLE >`` → ``<\\/ EXAMPLE >``): a backslash before the slash, the rest kept as it was."""
    return _FENCE_CLOSE.sub(lambda m: "<\\/" + m.group(0).split("/", 1)[1], text)


@dataclass(frozen=True)
class HistoryEntry:
    """An earlier description and how a classifier did with it."""

    step: int
    description: str
    train: Summary
    validation: Summary | None
    best: bool = False
    #: scored on the first validation rows only: it lost its race against the best
    partial: bool = False


@dataclass(frozen=True)
class WrongRow:
    label: str
    p_a: float
    text: str
    row: int = -1  # index in its file, so that a resumed run can show the same rows again


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _metrics_line(name: str, summary: Summary | None) -> str:
    if not summary or not summary.n:
        return ""
    return (
        f"{name}: accuracy {_pct(summary.accuracy)} on {summary.n_scored} rows "
        f"(confusion with A as positive: TP={summary.tp} FN={summary.fn} FP={summary.fp} TN={summary.tn}), "
        f"mean confidence {_pct(summary.mean_confidence)}"
    )


def examples_block(texts: list[str]) -> str:
    return "\n".join(f'<example index="{i}">\n{fence_safe(t)}\n</example>' for i, t in enumerate(texts))


def describe_messages(
    templates: Templates,
    *,
    examples_a: list[str],
    examples_b: list[str],
    extra_prompt: str,
    history: list[HistoryEntry],
    wrong: list[WrongRow],
) -> list[Message]:
    history_text = ""
    if history:
        entries = []
        for entry in history:
            lines = [
                _metrics_line("on the rows it was written from", entry.train),
                _metrics_line(
                    "on the first held-out rows only (clearly worse than the best there, so not scored further)"
                    if entry.partial
                    else "on held-out rows",
                    entry.validation,
                ),
            ]
            tag = " (best so far)" if entry.best else ""
            stats = "; ".join(line for line in lines if line)
            entries.append(
                f'<description step="{entry.step}">{tag}\n{fence_safe(entry.description)}\n</description>\n'
                f"Result: {stats}"
            )
        wrong_text = ""
        if wrong:
            items = [
                f'<example true_dataset="{w.label}" classifier_p_A="{w.p_a:.2f}">\n{fence_safe(w.text)}\n</example>'
                for w in wrong
            ]
            wrong_text = "Examples the last classifier got wrong:\n" + "\n".join(items) + "\n"
        history_text = fill(templates.describe_history, entries="\n\n".join(entries), wrong=wrong_text)
    user = fill(
        templates.describe_user,
        n_a=str(len(examples_a)),
        n_b=str(len(examples_b)),
        examples_a=examples_block(examples_a),
        examples_b=examples_block(examples_b),
        extra_prompt=extra_prompt.strip(),
        history=history_text,
    )
    return [
        {"role": "system", "content": templates.describe_system},
        {"role": "user", "content": user},
    ]


def classify_messages(templates: Templates, description: str) -> list[Message]:
    """The classifier prompt with ``{row}`` still in it: this is what classify.yaml stores."""
    return [
        {
            "role": "system",
            "content": fill(templates.classify_system, description=fence_safe(description.strip())),
        },
        {"role": "user", "content": templates.classify_user},
    ]


def with_row(messages: list[Message], row: str) -> list[Message]:
    """Put one row into the placeholder (only the first occurrence, only in the last message)."""
    *head, last = messages
    content = last["content"].replace(ROW_PLACEHOLDER, fence_safe(row), 1)
    return [*head, {"role": last["role"], "content": content}]


_OTHER = {"A": "B", "B": "A"}
# "dataset A", "Dataset-A", "datasets A and B", "datasets A/B", "dataset A's"
_NAMED = re.compile(r"\b([Dd]atasets?[ -])([AB])\b(?:(\s*(?:,|/|and|or|vs\.?|versus)\s*)([AB])\b)?")
# a capital B standing alone is no English word: a dataset named without the word "dataset"
_BARE_B = re.compile(r"(?<![\w-])B(?![\w-])")


def swap_dataset_names(description: str) -> str:
    """The description with the roles of A and B exchanged, for ``--swap-labels``. The describer is told
    to say "dataset A" / "dataset B"; those phrases (and "datasets A and B", "Dataset-A") are exchanged."""

    def swap(m: re.Match) -> str:
        tail = f"{m.group(3)}{_OTHER[m.group(4)]}" if m.group(4) else ""
        return f"{m.group(1)}{_OTHER[m.group(2)]}{tail}"

    return _NAMED.sub(swap, description)


def unswappable_mentions(description: str) -> int:
    """How often the description names dataset B without the word "dataset" (so the swap cannot reach
    it): a hint that the swapped prompt may contradict itself."""
    return len(_BARE_B.findall(_NAMED.sub("", description)))
