"""``asyncpipe pairs``: many comparisons in one process, over one shared pool of model resources.

Which files and pairs: :mod:`asyncpipe.data.files` and :mod:`asyncpipe.pipeline.pairs_plan`; what is
written at the top of OUTPUT (``pairs.json``, ``pairs.parquet``): :mod:`asyncpipe.records`.

How. Pairs run concurrently (at most ``--parallel-pairs`` at a time) over one
:class:`~asyncpipe.llm.pool.ModelPool`: one adaptive limiter per model, one HTTP session, one response
cache, so the total stays within the API's limits and an answer paid for by one pair serves every
other. Each pair has its own :class:`RunStats`, and its log lines carry its folder name. A finished
pair (``run.json`` complete, same fingerprint) is skipped and its metrics are read back; an unfinished
one resumes from the cache. A pair that fails (bad file, fatal API error) is recorded with its reason
and the others go on. The summary is rewritten each time a pair ends, so it survives Ctrl-C.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import anyio
import yaml

from asyncpipe import __version__
from asyncpipe.config import RunConfig
from asyncpipe.errors import BatchFilesWritten, FatalAPIError, UserError
from asyncpipe.llm.interrupt import Stopper
from asyncpipe.llm.stats import RunStats
from asyncpipe.metrics import holm_adjust
from asyncpipe.pipeline.compare import compare, make_pool
from asyncpipe.pipeline.outputs import run_fingerprint
from asyncpipe.pipeline.pairs_plan import PairJob, PairsPlan
from asyncpipe.pipeline.progress import Reporter, percent
from asyncpipe.records import (
    FileRef,
    PairRecord,
    PairsRecord,
    RecordError,
    RunRecord,
    held_out_scores,
    read_run,
    write_pairs,
)
from asyncpipe.report.pairs_page import render_pairs_summary

#: the family-wise error rate the pairs page marks significance at, after Holm's correction
ALPHA = 0.05


# -- results ----------------------------------------------------------------------------------------
def pending(job: PairJob) -> PairRecord:
    return PairRecord(
        job.question, job.subdir, FileRef(job.a.name, str(job.a.path)), FileRef(job.b.name, str(job.b.path))
    )


def _earlier(
    cfg: RunConfig,
) -> tuple[Literal["new", "finished", "unfinished", "different"], RunRecord | None]:
    """How far an earlier run in one pair's folder got, and its run record."""
    try:
        run = read_run(cfg.output)
    except RecordError:
        return "unfinished", None
    if run is None:
        return "new", None
    try:
        same = run.fingerprint == run_fingerprint(cfg.fingerprint_dict(), [cfg.file_a, cfg.file_b])
    except OSError:
        same = False
    if not same:
        return "different", run
    return ("finished" if run.status == "complete" else "unfinished"), run


def _reused(job: PairJob, cfg: RunConfig, run: RunRecord) -> PairRecord:
    description = None
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        description = (yaml.safe_load((cfg.output / "classify.yaml").read_text(encoding="utf-8")) or {}).get(
            "description"
        )
    return replace(
        pending(job),
        status="complete",
        skipped=True,
        selected_step=run.selected_step,
        description=description,
        held_out=held_out_scores(run.final),
        stats=run.stats or None,
        seconds=run.wall_seconds,
    )


def with_holm(pairs: tuple[PairRecord, ...], alpha: float = ALPHA) -> tuple[tuple[PairRecord, ...], dict]:
    """Each pair with ``pair_p_value_holm`` (Holm-adjusted over every pair of the run that has a held-out
    sign test) and ``significant`` (adjusted p < ``alpha``; None without a test), and a record of the
    correction for ``pairs.json``. Many pairs are many tests: with 45 pairs and no real difference
    anywhere, some raw p < 0.05 turns up about nine times in ten; the adjusted p does not."""

    def tested_p(pair: PairRecord) -> float | None:
        raw = (pair.held_out or {}).get("raw")
        return raw.scores.pair_p_value if raw else None

    tested = [i for i, pair in enumerate(pairs) if tested_p(pair) is not None]
    adjusted = holm_adjust([tested_p(pairs[i]) for i in tested])
    by_index = dict(zip(tested, adjusted, strict=True))
    out = tuple(
        replace(
            pair,
            pair_p_value_holm=by_index.get(i),
            significant=None if i not in by_index else by_index[i] < alpha,
        )
        for i, pair in enumerate(pairs)
    )
    correction = {
        "method": "holm",
        "p_value": "pair_p_value",
        "tests": len(tested),
        "alpha": alpha,
        "significant": sum(1 for v in adjusted if v < alpha),
    }
    return out, correction


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
    results: list[PairRecord] = field(default_factory=list)


class _Summary:
    """The summary files at the top of OUTPUT, rewritten whenever a pair changes state."""

    def __init__(self, out: Path, cfg: RunConfig, plan: PairsPlan, results: dict[str, PairRecord]) -> None:
        self.out, self.cfg, self.plan, self.results = out, cfg, plan, results

    def write(self, status: str) -> Path:
        pairs, correction = with_holm(
            tuple(
                replace(
                    r, report=f"{r.dir}/index.html" if (self.out / r.dir / "index.html").is_file() else None
                )
                for r in self.results.values()
            )
        )
        record = PairsRecord(
            status=status,
            version=__version__,
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            against=self.plan.against,
            by_question=self.plan.by_question,
            models={"describe": self.cfg.describe_model, "classify": self.cfg.classify_model},
            cache=str(self.cfg.cache_path),
            warnings=self.plan.warnings,
            multiple_testing=correction,
            pairs=pairs,
        )
        write_pairs(self.out, record)
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
    cfg: RunConfig,
    plan: PairsPlan,
    reporter: Reporter,
    *,
    parallel: int = 4,
    stopper: Stopper | None = None,
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
    results = {job.subdir: pending(job) for job in plan.jobs}
    todo: list[PairJob] = []
    different = []
    for job in plan.jobs:
        state, run = _earlier(configs[job.subdir])
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
    pool = make_pool(cfg, stopper) if todo else None
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
                except (UserError, FatalAPIError, BatchFilesWritten) as exc:
                    # --batch-api export: the pair waits for its results; otherwise it failed
                    result = replace(
                        pending(job),
                        status="exported" if isinstance(exc, BatchFilesWritten) else "failed",
                        reason=str(exc),
                        stats=stats.to_dict(),
                        seconds=time.monotonic() - started,
                    )
                except BaseException:
                    results[job.subdir] = replace(results[job.subdir], status="interrupted")
                    raise
                else:
                    result = replace(
                        pending(job),
                        status="complete",
                        selected_step=outcome.selected.step if outcome.selected else None,
                        description=outcome.selected.description if outcome.selected else None,
                        held_out=held_out_scores(outcome.final),
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


def _one_line(result: PairRecord) -> str:
    if result.status in ("failed", "exported"):
        return f"{result.status}: {result.reason}"
    held = (result.held_out or {}).get("raw")
    raw = held.scores if held else None
    stats = result.stats or {}
    accuracy = (
        "no held-out rows"
        if raw is None
        else (
            f"{held.split} split: pair accuracy {percent(raw.pair_accuracy)} "
            f"[{percent(raw.pair_ci_low)}, {percent(raw.pair_ci_high)}] over {raw.n_pairs} pairs, "
            f"accuracy {percent(raw.accuracy)} [{percent(raw.accuracy_low)}, {percent(raw.accuracy_high)}]"
        )
    )
    return f"{result.status}, {accuracy} ({result.seconds or 0:.1f} s, {stats.get('requests', 0)} sent, {stats.get('cache_hits', 0)} cached)"
