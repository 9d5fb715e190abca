"""Properties: yes/no questions about a single row, the request that lists them, the request that checks
one on one row, and the parser that reads a describer's list.

A check request puts the question in the system message and the row at the end of the user message,
so everything before the row is byte-identical for all rows of a property (providers cache that
prefix). The question sits inside a ``<question>`` fence; the row inside ``<example>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from asyncpipe.config import Templates
from asyncpipe.errors import UserError
from asyncpipe.llm.base import Message
from asyncpipe.prompts.build import examples_block, fence_safe, fill


@dataclass(frozen=True)
class Property:
    """One yes/no question; ``claimed`` is the dataset ("A" or "B") the describer said it is more
    common in (None when it did not say, and for the user's own hypotheses)."""

    id: str
    text: str
    claimed: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "claimed": self.claimed}


# a list item: "- x", "* x", "• x", "1. x", "1) x", "(1) x"
_ITEM = re.compile(r"^\s*(?:[-*•+–—]|\d{1,3}[.)]|\(\d{1,3}\))\s+(.*\S)\s*$")
_MORE = r"(?i:more\s+(?:common|frequent|often|prevalent)\s+in\s+)?(?i:(?:the\s+)?dataset[\s_-]*)?"
# the claimed dataset at the end of a line: "[A]", "(B)", "[dataset A]", "(more common in dataset B)",
# "— A", "-> B", ": A"
_CLAIM = re.compile(
    r"\s*(?:[\[(]\s*" + _MORE + r"([AB])\s*[\])]|(?:\s(?:->|[-–—→])|:)\s*" + _MORE + r"([AB]))\s*[.!]?\s*$"
)
_EMPHASIS = re.compile(r"\*\*|__|`")


def parse_properties(reply: str, limit: int, *, prefix: str = "P") -> list[Property]:
    """The properties in a describer's reply: bullet and numbered list items alike, each with its
    claimed dataset when it names one; duplicates (ignoring case, spacing and punctuation) and empty
    items dropped; at most ``limit``. Lines that are not list items (a preamble, a heading) are ignored."""
    found: list[Property] = []
    seen: set[str] = set()
    for line in reply.splitlines():
        match = _ITEM.match(line)
        if not match:
            continue
        text = _EMPHASIS.sub("", match.group(1)).strip()
        claimed = None
        if claim := _CLAIM.search(text):
            claimed = claim.group(1) or claim.group(2)
            text = text[: claim.start()].strip()
        text = text.strip(" \"'“”").strip()
        key = re.sub(r"[\W_]+", " ", text.lower()).strip()
        if not key or key in seen:
            continue
        seen.add(key)
        found.append(Property(f"{prefix}{len(found) + 1}", text, claimed))
        if len(found) >= limit:
            break
    return found


def properties_messages(
    templates: Templates, *, description: str, examples_a: list[str], examples_b: list[str], k: int
) -> list[Message]:
    """The request that lists up to ``k`` properties, from the chosen description and its rows."""
    user = fill(
        templates.properties_user,
        k=str(k),
        n_a=str(len(examples_a)),
        n_b=str(len(examples_b)),
        description=fence_safe(description.strip()),
        examples_a=examples_block(examples_a),
        examples_b=examples_block(examples_b),
    )
    return [
        {"role": "system", "content": templates.properties_system},
        {"role": "user", "content": user},
    ]


def property_check_messages(templates: Templates, question: str) -> list[Message]:
    """The check request for one property, with ``{row}`` still in it."""
    return [
        {
            "role": "system",
            "content": fill(templates.property_check_system, question=fence_safe(question.strip())),
        },
        {"role": "user", "content": templates.property_check_user},
    ]


def load_properties_file(path: Path) -> list[Property]:
    """The user's own properties from a YAML file: a list of questions, or of ``{name, question}``
    records (mixing both is fine). Anything else stops with one line, before any request is sent."""
    where = f"{path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, list):
        raise UserError(f"{where}: expected a list of questions (or of {{name, question}} records)")
    if not data:
        raise UserError(f"{where}: the list of properties is empty")
    found: list[Property] = []
    names: set[str] = set()
    questions: set[str] = set()
    for number, item in enumerate(data, start=1):
        if isinstance(item, dict):
            unknown = set(item) - {"name", "question"}
            if unknown:
                raise UserError(
                    f"{where}: item {number} has unknown key(s) {', '.join(sorted(map(str, unknown)))}; use name and question"
                )
            name, question = item.get("name", f"P{number}"), item.get("question")
        else:
            name, question = f"P{number}", item
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"{where}: item {number}: the question must be non-empty text, got {question!r}")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{where}: item {number}: the name must be non-empty text, got {name!r}")
        name, question = name.strip(), question.strip()
        if name in names:
            raise UserError(f"{where}: item {number}: duplicate name {name!r}")
        if question in questions:
            raise UserError(f"{where}: item {number}: duplicate question {question!r}")
        names.add(name)
        questions.add(question)
        found.append(Property(name, question))
    return found
