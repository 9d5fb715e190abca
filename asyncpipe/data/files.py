"""Find the data files a ``pairs`` run compares, and give each a unique readable name.

Which files. Each path given is a directory (every supported file below it, sorted; hidden entries and
asyncpipe output folders — ones holding ``run.json`` or ``pairs.json`` — are skipped, and so is the
``--output`` folder), a glob (its matches with a supported extension), or a file (itself). A file's
*name* is its stem; when two files in one group share a stem, enough of their parent folders is added
to tell them apart.

Which question. A file's question is the first path component below the root it was found under: the
DIR given, or for a glob the folders before its first wildcard. So ``pairs results/`` over
``results/<question>/<org>/<model>.jsonl`` groups by ``<question>``. A file directly in its root, or a
file named by itself, takes the name of the folder it sits in.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from asyncpipe.data.load import SUPPORTED
from asyncpipe.errors import UserError


@dataclass(frozen=True)
class Member:
    """One data file of the set."""

    path: Path
    question: str
    name: str = ""  # unique within its group
    slug: str = ""  # filesystem-safe and unique within its group


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_output_dir(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "run.json")) or os.path.isfile(
        os.path.join(directory, "pairs.json")
    )


def matches(member: Member, base: str) -> bool:
    """Whether ``base`` (the value of ``--against``: a display name, a file name or stem, or a path)
    names ``member``."""
    return base in (member.name, member.path.stem, member.path.name) or (
        os.path.exists(base) and os.path.abspath(member.path) == os.path.abspath(base)
    )


def question_of(path: str, root: str) -> str:
    rel = Path(os.path.relpath(path, root)).parts
    return rel[0] if len(rel) > 1 else Path(os.path.abspath(root)).name or "root"


def _walk(root: str, skip: str | None) -> Iterable[str]:
    for here, dirs, names in os.walk(root):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and os.path.abspath(os.path.join(here, d)) != skip
            and not _is_output_dir(os.path.join(here, d))
        )
        yield from (
            os.path.join(here, n)
            for n in sorted(names)
            if not n.startswith(".") and Path(n).suffix.lower() in SUPPORTED
        )


def find_files(paths: Iterable[str], *, output: Path | None = None) -> list[Member]:
    """The data files named by ``paths`` (directories, globs, files), each with its question."""
    skip = os.path.abspath(output) if output is not None else None
    found: dict[str, Member] = {}

    def add(path: str, root: str) -> None:
        full = os.path.abspath(path)
        if skip is not None and (full == skip or full.startswith(skip + os.sep)):
            return
        found.setdefault(full, Member(Path(path), question_of(path, root)))

    for given in paths:
        if os.path.isdir(given):
            if _is_output_dir(given) and os.path.abspath(given) != skip:
                raise UserError(f"{given}: is an asyncpipe output folder, not a folder of data files")
            before = len(found)
            for path in _walk(given, skip):
                add(path, given)
            if len(found) == before:
                raise UserError(f"{given}: holds no data files ({', '.join(SUPPORTED)})")
        elif os.path.isfile(given):
            if Path(given).suffix.lower() not in SUPPORTED:
                raise UserError(
                    f"{given}: unsupported file type '{Path(given).suffix or '(none)'}'; use one of {', '.join(SUPPORTED)}"
                )
            add(given, os.path.dirname(given) or ".")
        elif _has_magic(given):
            parts = Path(given).parts
            fixed = list(itertools.takewhile(lambda p: not _has_magic(p), parts))
            root = str(Path(*fixed)) if fixed else "."
            matches = sorted(
                m
                for m in glob.glob(given, recursive=True)
                if os.path.isfile(m) and Path(m).suffix.lower() in SUPPORTED
            )
            if not matches:
                raise UserError(f"{given}: matches no data files ({', '.join(SUPPORTED)})")
            for path in matches:
                add(path, root)
        else:
            raise UserError(f"{given}: no such file or directory")
    if not found:
        raise UserError("no data files found")
    return sorted(found.values(), key=lambda m: (m.question, str(m.path)))


def slugify(text: str, limit: int = 100) -> str:
    """A folder name: letters, digits and ``._+-`` kept, every other run of characters becomes ``_``."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._")[:limit].rstrip("._")
    return slug or "file"


def named(members: list[Member]) -> list[Member]:
    """Give each member a name unique within ``members``: its stem, with parent folders when needed."""
    out = []
    for m in members:
        parts = Path(os.path.abspath(m.path)).with_suffix("").parts
        depth = 1
        while depth < len(parts):
            name = "/".join(parts[-depth:])
            rivals = [
                o
                for o in members
                if o is not m
                and "/".join(Path(os.path.abspath(o.path)).with_suffix("").parts[-depth:]) == name
            ]
            if not rivals:
                break
            depth += 1
        name = "/".join(parts[-depth:])
        out.append(replace(m, name=name))
    slugs: dict[str, int] = {}
    result = []
    for m in out:
        slug = slugify(m.name)
        slugs[slug] = slugs.get(slug, 0) + 1
        result.append(replace(m, slug=slug if slugs[slug] == 1 else f"{slug}-{slugs[slug]}"))
    return sorted(result, key=lambda m: m.name)
