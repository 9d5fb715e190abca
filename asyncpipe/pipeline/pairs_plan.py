"""Which pairs ``asyncpipe pairs`` compares, and where each one goes.

Which question. With ``--by-question``, files are grouped by question (see :mod:`asyncpipe.data.files`)
and paired only within one; without it, all files form one group.

Which pairs. Without ``--against``: every unordered pair within a group, A being the first name in
sorted order. With ``--against BASE``: every other file against the base, the other file as **A** and
the base as **B** (read "fine-tune vs base"). BASE is a name (matched against each file's name, stem
or file name) or a path; with ``--by-question`` it is matched by name in each question.

Where. Pair *p* goes to ``OUTPUT/[<question>/]<A>__vs__<B>/`` (filesystem-safe names), which holds
exactly what ``asyncpipe compare`` writes. The top of OUTPUT holds the summary — ``pairs.json``,
``pairs.parquet``, ``index.html`` — and the shared ``cache.sqlite`` (unless ``--cache``). Pair folders
always contain ``__vs__``, so they never clash with these names nor equal OUTPUT itself.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncpipe.data.files import Member, find_files, matches, named, question_of, slugify
from asyncpipe.errors import UserError

SEPARATOR = "__vs__"
#: names at the top of OUTPUT that a question folder must never take
RESERVED = {"index.html", "pairs.json", "pairs.parquet", "cache.sqlite", "run.json", "plotly.min.js"}


@dataclass(frozen=True)
class PairJob:
    question: str | None  # None without --by-question
    a: Member
    b: Member
    subdir: str  # relative to OUTPUT, with "/" separators


@dataclass(frozen=True)
class PairsPlan:
    jobs: tuple[PairJob, ...]
    against: str | None
    by_question: bool
    warnings: tuple[str, ...] = ()


def plan_pairs(
    paths: Iterable[str], *, output: Path, against: str | None = None, by_question: bool = False
) -> PairsPlan:
    """Find the files and form the pairs. Raises UserError when there is nothing to compare."""
    members = find_files(paths, output=output)
    warnings: list[str] = []
    known = {os.path.abspath(m.path) for m in members}
    if (
        against is not None
        and not by_question
        and os.path.isfile(against)
        and os.path.abspath(against) not in known
    ):
        members.append(Member(Path(against), question_of(against, os.path.dirname(against) or ".")))
    groups: dict[str | None, list[Member]] = {}
    for m in members:
        groups.setdefault(m.question if by_question else None, []).append(m)
    questions = sorted({m.question for m in members})
    if not by_question and len(questions) > 1:
        warnings.append(
            f"the files come from {len(questions)} question folders ({', '.join(questions[:5])}"
            f"{', …' if len(questions) > 5 else ''}) and are paired across them: row i of one file may not be "
            "comparable to row i of another; --by-question pairs files only within a question"
        )
    if against is not None and by_question and os.path.isfile(against):
        against_key = Path(against).stem  # matched by name in every question
    else:
        against_key = against
    jobs: list[PairJob] = []
    found_base = False
    for question in sorted(groups, key=lambda q: q or ""):
        group = named(groups[question])
        where = f"question '{question}'" if question is not None else "the files found"
        if len(group) < 2:
            warnings.append(f"{where}: only one file ({group[0].path}); no pair to compare")
            continue
        if against is None:
            pairs = list(itertools.combinations(group, 2))
        else:
            bases = [m for m in group if matches(m, against_key)]
            if len(bases) > 1:
                raise UserError(
                    f"--against {against}: matches {len(bases)} files in {where} ({', '.join(str(b.path) for b in bases)}); give a path"
                )
            if not bases:
                warnings.append(f"{where}: no file matches --against {against}; skipped")
                continue
            found_base = True
            pairs = [(m, bases[0]) for m in group if m is not bases[0]]
        prefix = f"{_question_slug(question)}/" if question is not None else ""
        jobs += [PairJob(question, a, b, f"{prefix}{a.slug}{SEPARATOR}{b.slug}") for a, b in pairs]
    if against is not None and not found_base:
        names = ", ".join(sorted({m.path.stem for m in members})[:10])
        raise UserError(f"--against {against}: matches none of the {len(members)} files found ({names})")
    if not jobs:
        raise UserError(
            f"nothing to compare: {len(members)} file(s) found, and a pair needs two in one group"
        )
    return PairsPlan(tuple(jobs), against, by_question, tuple(warnings))


def _question_slug(question: str) -> str:
    slug = slugify(question)
    return f"q_{slug}" if slug in RESERVED else slug
