"""``asyncpipe pairs``: many comparisons in one process, over one shared pool of model resources.

Which files and pairs: :mod:`asyncpipe.data.files` and :mod:`asyncpipe.pipeline.pairs_plan`.

How. Pairs run concurrently (at most ``--parallel-pairs`` at a time) over one
:class:`~asyncpipe.llm.pool.ModelPool`: one adaptive limiter per model, one HTTP session, one response
cache, so the total stays within the API's limits and an answer paid for by one pair serves every
other. Each pair has its own :class:`RunStats`, and its log lines carry its folder name. A finished
pair (``run.json`` complete, same fingerprint) is skipped and its metrics are read back; an unfinished
one resumes from the cache. A pair that fails (bad file, fatal API error) is recorded with its reason
and the others go on. The summary is rewritten each time a pair ends, so it survives Ctrl-C.

``pairs.json`` (read by :func:`asyncpipe.report.pairs_page.render_pairs_summary`): ``status`` (running,
complete, failed, interrupted), ``against``, ``by_question``, ``models``, ``warnings``,
``multiple_testing`` (which correction, over how many tests: see :func:`with_holm`) and ``pairs``, a
list of :meth:`PairResult.to_dict` each with ``pair_p_value_holm`` and ``significant``. ``pairs.parquet`` holds the same, one flat row per pair (see
:func:`flat_row`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import polars as pl
import yaml

from asyncpipe import __version__
from asyncpipe.config import RunConfig
from asyncpipe.errors import BatchFilesWritten, FatalAPIError, UserError
from asyncpipe.llm.stats import RunStats
from asyncpipe.llm.stopping import Stopper
from asyncpipe.metrics import holm_adjust
from asyncpipe.pipeline.compare import compare, make_pool
from asyncpipe.pipeline.outputs import run_fingerprint, write_json_atomic, write_parquet_atomic
from asyncpipe.pipeline.pairs_plan import PairJob, PairsPlan
from asyncpipe.pipeline.progress import Reporter, percent
from asyncpipe.report.pairs_page import render_pairs_summary

HELD_OUT_KEYS = (
    "n_pairs",
    "pair_accuracy",
    "pair_ci_low",
    "pair_ci_high",
    "pair_p_value",
    "n",
    "n_scored",
    "coverage",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "p_value",
    "p_value_test",
    "auc",
    "balanced_accuracy",
)
#: the family-wise error rate the pairs page marks significance at, after Holm's correction
ALPHA = 0.05


# -- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairResult:
    job: PairJob
    status: str = "pending"  # pending | running | complete | failed | interrupted
    reason: str | None = None
    skipped: bool = False  # finished by an earlier run; metrics read back from its run.json
    selected_step: int | None = None
    description: str | None = None
    held_out: dict | None = None  # {"raw": {...}, "corrected": {...}} on the test (else validation) rows
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


def with_holm(pairs: list[dict], alpha: float = ALPHA) -> tuple[list[dict], dict]:
    """Each pair entry with ``pair_p_value_holm`` (Holm-adjusted over every pair of the run that has a
    held-out sign test) and ``significant`` (adjusted p < ``alpha``; None without a test), and a record
    of the correction for ``pairs.json``. Many pairs are many tests: with 45 pairs and no real difference
    anywhere, some raw p < 0.05 turns up about nine times in ten; the adjusted p does not."""
    tested = [
        i
        for i, p in enumerate(pairs)
        if isinstance(((p.get("held_out") or {}).get("raw") or {}).get("pair_p_value"), int | float)
    ]
    adjusted = holm_adjust([pairs[i]["held_out"]["raw"]["pair_p_value"] for i in tested])
    by_index = dict(zip(tested, adjusted, strict=True))
    out = []
    for i, pair in enumerate(pairs):
        value = by_index.get(i)
        out.append(
            {**pair, "pair_p_value_holm": value, "significant": None if value is None else value < alpha}
        )
    correction = {
        "method": "holm",
        "p_value": "pair_p_value",
        "tests": len(tested),
        "alpha": alpha,
        "significant": sum(1 for v in adjusted if v < alpha),
    }
    return out, correction


def flat_row(result: dict) -> dict:
    """One ``pairs.parquet`` row: question, dir, a_name, a_path, b_name, b_path, status, reason, skipped,
    selected_step, description, report (relative link or null), held_out_split ("test", or "validation"
    when no test rows were kept), n_pairs, pair_accuracy, pair_ci_low, pair_ci_high, pair_p_value (the
    one-sided sign test), pair_p_value_holm (Holm-adjusted over every tested pair of the run),
    significant (by the adjusted p only), n_held_out, coverage, and per correction (``raw``/``corrected``)
    accuracy, accuracy_low, accuracy_high, p_value (one-sided), auc."""
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
    raw = metrics.get("raw") or {}
    for key in ("n_pairs", "pair_accuracy", "pair_ci_low", "pair_ci_high", "pair_p_value"):
        row[key] = raw.get(key)
    row["pair_p_value_holm"] = result.get("pair_p_value_holm")
    row["significant"] = result.get("significant")
    row["n_held_out"] = raw.get("n")
    row["coverage"] = raw.get("coverage")
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
    "n_pairs": pl.Int64,
    "pair_accuracy": pl.Float64,
    "pair_ci_low": pl.Float64,
    "pair_ci_high": pl.Float64,
    "pair_p_value": pl.Float64,
    "pair_p_value_holm": pl.Float64,
    "significant": pl.Boolean,
    "n_held_out": pl.Int64,
    "coverage": pl.Float64,
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
        pairs, correction = with_holm(pairs)
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
                "multiple_testing": correction,
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
    pool = make_pool(cfg, stopper=stopper) if todo else None
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
                except BatchFilesWritten as exc:  # --batch-api export: this pair waits for its results
                    result = PairResult(
                        job,
                        "exported",
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
    if result.status in ("failed", "exported"):
        return f"{result.status}: {result.reason}"
    raw = (result.held_out or {}).get("raw") or {}
    stats = result.stats or {}
    accuracy = (
        "no held-out rows"
        if not raw
        else (
            f"{raw.get('split')} split: pair accuracy {percent(raw.get('pair_accuracy'))} "
            f"[{percent(raw.get('pair_ci_low'))}, {percent(raw.get('pair_ci_high'))}] over {raw.get('n_pairs')} pairs, "
            f"accuracy {percent(raw.get('accuracy'))} [{percent(raw.get('accuracy_low'))}, {percent(raw.get('accuracy_high'))}]"
        )
    )
    return f"{result.status}, {accuracy} ({result.seconds or 0:.1f} s, {stats.get('requests', 0)} sent, {stats.get('cache_hits', 0)} cached)"
