"""``asyncpipe pairs``: many comparisons in one process, over one shared pool of model resources.

Which files. Each path given is a directory (every supported file below it, sorted; hidden entries and
asyncpipe output folders — ones holding ``run.json`` or ``pairs.json`` — are skipped, and so is the
``--output`` folder), a glob (its matches with a supported extension), or a file (itself). A file's
*name* is its stem; when two files in one group share a stem, enough of their parent folders is added
to tell them apart.

Which question. ``--by-question`` groups files by question and pairs them only within one. A file's
question is the first path component below the root it was found under: the DIR given, or for a glob
the folders before its first wildcard. So ``pairs results/`` over
``results/<question>/<org>/<model>.jsonl`` groups by ``<question>``. A file directly in its root, or a
file named by itself, takes the name of the folder it sits in.

Which pairs. Without ``--against``: every unordered pair within a group, A being the first name in
sorted order. With ``--against BASE``: every other file against the base, the other file as **A** and
the base as **B** (read "fine-tune vs base"). BASE is a name (matched against each file's name, stem
or file name) or a path; with ``--by-question`` it is matched by name in each question.

Where. Pair *p* goes to ``OUTPUT/[<question>/]<A>__vs__<B>/`` (filesystem-safe names), which holds
exactly what ``asyncpipe compare`` writes. The top of OUTPUT holds the summary — ``pairs.json``,
``pairs.parquet``, ``index.html`` — and the shared ``cache.sqlite`` (unless ``--cache``). Pair folders
always contain ``__vs__``, so they never clash with these names nor equal OUTPUT itself.

How. Pairs run concurrently (at most ``--parallel-pairs`` at a time) over one
:class:`~asyncpipe.llm.pool.ModelPool`: one adaptive limiter per model, one HTTP session, one response
cache, so the total stays within the API's limits and an answer paid for by one pair serves every
other. Each pair has its own :class:`RunStats`, and its log lines carry its folder name. A finished
pair (``run.json`` complete, same fingerprint) is skipped and its metrics are read back; an unfinished
one resumes from the cache. A pair that fails (bad file, fatal API error) is recorded with its reason
and the others go on. The summary is rewritten each time a pair ends, so it survives Ctrl-C.

``pairs.json`` (read by :func:`asyncpipe.report.pairs.render_pairs_summary`): ``status`` (running,
complete, failed, interrupted), ``against``, ``by_question``, ``models``, ``warnings`` and ``pairs``, a
list of :meth:`PairResult.to_dict`. ``pairs.parquet`` holds the same, one flat row per pair (see
:func:`flat_row`).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import polars as pl
import yaml

from asyncpipe import __version__
from asyncpipe.config import RunConfig
from asyncpipe.data.load import SUPPORTED
from asyncpipe.errors import FatalAPIError, UserError
from asyncpipe.llm.stats import RunStats
from asyncpipe.pipeline.compare import compare, make_pool
from asyncpipe.pipeline.outputs import run_fingerprint, write_json_atomic, write_parquet_atomic
from asyncpipe.pipeline.progress import Reporter, percent
from asyncpipe.report.pairs import render_pairs_summary

SEPARATOR = "__vs__"
#: names at the top of OUTPUT that a question folder must never take
RESERVED = {"index.html", "pairs.json", "pairs.parquet", "cache.sqlite", "run.json", "plotly.min.js"}
HELD_OUT_KEYS = (
    "n",
    "n_scored",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "p_value",
    "auc",
    "balanced_accuracy",
)


# -- which files, which pairs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One data file of the set."""

    path: Path
    question: str
    name: str = ""  # unique within its group
    slug: str = ""  # filesystem-safe and unique within its group


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


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_output_dir(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "run.json")) or os.path.isfile(
        os.path.join(directory, "pairs.json")
    )


def _question(path: str, root: str) -> str:
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
        found.setdefault(full, Member(Path(path), _question(path, root)))

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


def _named(members: list[Member]) -> list[Member]:
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


def _matches(member: Member, base: str) -> bool:
    return base in (member.name, member.path.stem, member.path.name) or (
        os.path.exists(base) and os.path.abspath(member.path) == os.path.abspath(base)
    )


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
        members.append(Member(Path(against), _question(against, os.path.dirname(against) or ".")))
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
        group = _named(groups[question])
        where = f"question '{question}'" if question is not None else "the files found"
        if len(group) < 2:
            warnings.append(f"{where}: only one file ({group[0].path}); no pair to compare")
            continue
        if against is None:
            pairs = list(itertools.combinations(group, 2))
        else:
            bases = [m for m in group if _matches(m, against_key)]
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


# -- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairResult:
    job: PairJob
    status: str = "pending"  # pending | running | complete | failed | interrupted
    reason: str | None = None
    skipped: bool = False  # finished by an earlier run; metrics read back from its run.json
    selected_step: int | None = None
    description: str | None = None
    held_out: dict | None = None  # {"raw": {...}, "corrected": {...}} on the validation rows
    stats: dict | None = None
    seconds: float | None = None

    def to_dict(self) -> dict:
        job = self.job
        return {
            "question": job.question,
            "dir": job.subdir,
            "a": {"name": job.a.name, "path": str(job.a.path)},
            "b": {"name": job.b.name, "path": str(job.b.path)},
            "status": self.status,
            "reason": self.reason,
            "skipped": self.skipped,
            "selected_step": self.selected_step,
            "description": self.description,
            "held_out": self.held_out,
            "stats": self.stats,
            "seconds": self.seconds,
        }


def held_out(final: dict | None) -> dict | None:
    """The held-out metrics, raw and bias-corrected, from compare's ``final`` summaries: the test rows
    (used for nothing else) where there are any, else the validation rows. ``split`` says which."""
    raw = (final or {}).get("raw", {})
    split = "test" if raw.get("test", {}).get("n") else "validation"
    if split not in raw:
        return None
    return {
        c: {"split": split, **{k: final[c][split].get(k) for k in HELD_OUT_KEYS}}
        for c in ("raw", "corrected")
        if c in final
    }


def flat_row(result: dict) -> dict:
    """One ``pairs.parquet`` row: question, dir, a_name, a_path, b_name, b_path, status, reason, skipped,
    selected_step, description, report (relative link or null), held_out_split ("test", or "validation"
    when no test rows were kept), n_held_out, and per correction
    (``raw``/``corrected``) accuracy, accuracy_low, accuracy_high, p_value, auc."""
    row = {
        "question": result["question"],
        "dir": result["dir"],
        "a_name": result["a"]["name"],
        "a_path": result["a"]["path"],
        "b_name": result["b"]["name"],
        "b_path": result["b"]["path"],
        "status": result["status"],
        "reason": result["reason"],
        "skipped": result["skipped"],
        "selected_step": result["selected_step"],
        "description": result["description"],
        "report": result.get("report"),
    }
    metrics = result["held_out"] or {}
    row["held_out_split"] = (metrics.get("raw") or {}).get("split")
    row["n_held_out"] = (metrics.get("raw") or {}).get("n")
    for correction in ("raw", "corrected"):
        values = metrics.get(correction) or {}
        for key in ("accuracy", "accuracy_low", "accuracy_high", "p_value", "auc"):
            row[f"{key}_{correction}"] = values.get(key)
    return row


PARQUET_SCHEMA = {
    "question": pl.Utf8,
    "dir": pl.Utf8,
    "a_name": pl.Utf8,
    "a_path": pl.Utf8,
    "b_name": pl.Utf8,
    "b_path": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "skipped": pl.Boolean,
    "selected_step": pl.Int64,
    "description": pl.Utf8,
    "report": pl.Utf8,
    "held_out_split": pl.Utf8,
    "n_held_out": pl.Int64,
    **{
        f"{k}_{c}": pl.Float64
        for c in ("raw", "corrected")
        for k in ("accuracy", "accuracy_low", "accuracy_high", "p_value", "auc")
    },
}


def _finished(cfg: RunConfig) -> tuple[str, dict | None]:
    """("new" | "finished" | "unfinished" | "different", run.json) for one pair's folder."""
    try:
        run = json.loads((cfg.output / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "new", None
    except (OSError, ValueError):
        return "unfinished", None
    try:
        same = run.get("fingerprint") == run_fingerprint(cfg.fingerprint_dict(), [cfg.file_a, cfg.file_b])
    except OSError:
        same = False
    if not same:
        return "different", run
    return ("finished" if run.get("status") == "complete" else "unfinished"), run


def _reused(job: PairJob, cfg: RunConfig, run: dict) -> PairResult:
    description = None
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        description = (yaml.safe_load((cfg.output / "classify.yaml").read_text(encoding="utf-8")) or {}).get(
            "description"
        )
    return PairResult(
        job,
        "complete",
        skipped=True,
        selected_step=run.get("selected_step"),
        description=description,
        held_out=held_out(run.get("final")),
        stats=run.get("stats"),
        seconds=run.get("wall_seconds"),
    )


# -- running ----------------------------------------------------------------------------------------
class PairReporter(Reporter):
    """A pair's reporter: no progress bars (pairs run side by side), log lines prefixed with its folder."""

    def __init__(self, stats: RunStats, *, prefix: str, show: bool) -> None:
        super().__init__(stats, quiet=True)
        self.prefix = prefix
        self.show = show

    def log(self, message: str) -> None:
        if self.show:
            print(f"[{self.prefix}] {message}", file=sys.stderr, flush=True)


@dataclass
class PairsOutcome:
    out_dir: Path
    index_html: Path
    total: int
    failed: int
    skipped: int
    results: list[PairResult] = field(default_factory=list)


class _Summary:
    """The summary files at the top of OUTPUT, rewritten whenever a pair changes state."""

    def __init__(self, out: Path, cfg: RunConfig, plan: PairsPlan, results: dict[str, PairResult]) -> None:
        self.out, self.cfg, self.plan, self.results = out, cfg, plan, results

    def write(self, status: str) -> Path:
        pairs = []
        for result in self.results.values():
            entry = result.to_dict()
            report = self.out / result.job.subdir / "index.html"
            entry["report"] = f"{result.job.subdir}/index.html" if report.is_file() else None
            pairs.append(entry)
        write_json_atomic(
            self.out / "pairs.json",
            {
                "asyncpipe_pairs": 1,
                "version": __version__,
                "status": status,
                "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "against": self.plan.against,
                "by_question": self.plan.by_question,
                "models": {"describe": self.cfg.describe_model, "classify": self.cfg.classify_model},
                "cache": str(self.cfg.cache_path),
                "warnings": list(self.plan.warnings),
                "pairs": pairs,
            },
        )
        write_parquet_atomic(
            self.out / "pairs.parquet", pl.DataFrame([flat_row(p) for p in pairs], schema=PARQUET_SCHEMA)
        )
        return render_pairs_summary(self.out)


def _prepare_top(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out}: exists and is not a directory")
    if (out / "run.json").exists():
        raise UserError(
            f"--output {out}: holds a single comparison (run.json); choose another --output for pairs"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output {out}: cannot create it ({exc.strerror})") from None


async def run_pairs(
    cfg: RunConfig, plan: PairsPlan, reporter: Reporter, *, parallel: int = 4
) -> PairsOutcome:
    """Run every pair of ``plan`` into a subfolder of ``cfg.output``; ``cfg.file_a``/``file_b`` are
    ignored. Returns how many failed; raises UserError (before anything runs) when a pair folder
    holds a different earlier run and neither ``--resume`` nor ``--force`` was given."""
    if cfg.dry_run:
        raise UserError(
            "pairs does not take --dry-run yet; estimate one pair with 'asyncpipe compare A B --dry-run'"
        )
    out = cfg.output
    _prepare_top(out)
    cfg = replace(cfg, cache_path=cfg.cache_path or out / "cache.sqlite")
    configs = {
        job.subdir: replace(cfg, file_a=job.a.path, file_b=job.b.path, output=out / job.subdir)
        for job in plan.jobs
    }
    results = {job.subdir: PairResult(job) for job in plan.jobs}
    todo: list[PairJob] = []
    different = []
    for job in plan.jobs:
        state, run = _finished(configs[job.subdir])
        if state == "finished" and run is not None:
            results[job.subdir] = _reused(job, configs[job.subdir], run)
        else:
            todo.append(job)
            if state == "different":
                different.append(job.subdir)
    if different and not (cfg.resume or cfg.force):
        raise UserError(
            f"--output {out}: {len(different)} pair folder(s) hold a different earlier run (e.g. {different[0]}); "
            "pass --resume to continue them with these settings, --force to replace them, or choose another --output"
        )
    for warning in plan.warnings:
        reporter.log(f"note: {warning}")
    skipped = len(plan.jobs) - len(todo)
    reporter.log(
        f"{len(plan.jobs)} pair(s)"
        + (f", {skipped} already finished (skipped)" if skipped else "")
        + (f"; running {len(todo)}, at most {parallel} at a time" if todo else "")
        + f"; summary: {out / 'index.html'}"
    )
    summary = _Summary(out, cfg, plan, results)
    index = summary.write("running" if todo else "complete")
    done = skipped
    status = "interrupted"
    pool = make_pool(cfg) if todo else None
    try:
        if pool is not None:
            pool.open_cache(cfg.cache_path)
        limiter = anyio.CapacityLimiter(parallel)

        async def run_one(job: PairJob) -> None:
            nonlocal done
            async with limiter:
                results[job.subdir] = replace(results[job.subdir], status="running")
                summary.write("running")
                stats = RunStats()
                started = time.monotonic()
                pair_reporter = PairReporter(stats, prefix=job.subdir, show=not reporter.quiet)
                try:
                    outcome = await compare(configs[job.subdir], pair_reporter, pool=pool)
                except (UserError, FatalAPIError) as exc:
                    result = PairResult(
                        job,
                        "failed",
                        reason=str(exc),
                        stats=stats.to_dict(),
                        seconds=time.monotonic() - started,
                    )
                except BaseException:
                    results[job.subdir] = replace(results[job.subdir], status="interrupted")
                    raise
                else:
                    result = PairResult(
                        job,
                        "complete",
                        selected_step=outcome.selected.step if outcome.selected else None,
                        description=outcome.selected.description if outcome.selected else None,
                        held_out=held_out(outcome.final),
                        stats={**(outcome.stats or stats).to_dict(), "estimated_cost_usd": outcome.cost},
                        seconds=round(time.monotonic() - started, 3),
                    )
                results[job.subdir] = result
                done += 1
                reporter.log(f"[{done}/{len(plan.jobs)}] {job.subdir}: {_one_line(result)}")
                summary.write("running")

        async with anyio.create_task_group() as tg:
            for job in todo:
                tg.start_soon(run_one, job)
        failed = sum(r.status == "failed" for r in results.values())
        status = "failed" if failed else "complete"
    finally:
        with anyio.CancelScope(shield=True):
            if pool is not None:
                await pool.aclose()
            for key, result in results.items():
                if result.status in ("pending", "running"):
                    results[key] = replace(result, status="interrupted")
            index = summary.write(status)
    return PairsOutcome(out, index, len(plan.jobs), failed, skipped, list(results.values()))


def _one_line(result: PairResult) -> str:
    if result.status == "failed":
        return f"failed: {result.reason}"
    raw = (result.held_out or {}).get("raw") or {}
    stats = result.stats or {}
    accuracy = (
        "no held-out rows"
        if not raw
        else (
            f"held-out accuracy {percent(raw.get('accuracy'))} [{percent(raw.get('accuracy_low'))}, {percent(raw.get('accuracy_high'))}]"
        )
    )
    return f"{result.status}, {accuracy} ({result.seconds or 0:.1f} s, {stats.get('requests', 0)} sent, {stats.get('cache_hits', 0)} cached)"
