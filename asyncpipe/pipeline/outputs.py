"""The output directory of a ``compare`` or ``classify`` run: its one writer, and the identity of the
run that owns it.

:class:`RunDirectory` is the only thing that writes into the directory, every file atomically
(:mod:`asyncpipe.atomic`): ``save_run`` as a run starts (``run.json`` alone), ``save_progress`` after
every describe step (``steps.jsonl``, ``metrics.parquet``, ``run.json``, then the report re-rendered),
``save_results`` at the end (``predictions.parquet``, and for ``compare`` the classifier,
``classify.yaml``).

``run.json`` carries a fingerprint of the inputs and of every setting that decides the results; a
directory holding a different run is refused unless the user says ``--resume`` (continue anyway) or
``--force`` (start over).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from asyncpipe.atomic import write_parquet_atomic, write_yaml_atomic
from asyncpipe.errors import UserError
from asyncpipe.pipeline.artifacts import metrics_frame
from asyncpipe.records import RecordError, RunRecord, StepRecord, read_run, read_steps, write_run, write_steps
from asyncpipe.report import render_report

ARTIFACTS = (
    "classify.yaml",
    "predictions.parquet",
    "properties.parquet",
    "property_scores.parquet",
    "metrics.parquet",
    "steps.jsonl",
    "run.json",
    "index.html",
    "accuracy.html",
    "confidence.html",
)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _what_differs(earlier: RunRecord | None, settings: dict[str, Any] | None) -> str:
    """Which settings differ from the earlier run's run.json ("config"), for the refusal message."""
    before = earlier.config if earlier is not None else None
    if settings is None or not before:
        return "its settings or input files differ"
    now = json.loads(json.dumps(settings, default=str))  # as run.json holds them: lists, not tuples
    changed = [key for key in now if key != "templates" and before.get(key) != now[key]]
    if now.get("templates") != before.get("templates") and "templates" in before:
        changed.append("prompt templates (--config)")
    if not changed:
        return "the input files' contents differ"
    shown = ", ".join(
        f"{key}: {before.get(key)!r} then, {now[key]!r} now" if key in now else key for key in changed[:3]
    )
    return shown + (f", and {len(changed) - 3} more" if len(changed) > 3 else "")


def run_fingerprint(settings: dict[str, Any], inputs: list[Path]) -> str:
    blob = json.dumps(
        {"settings": settings, "inputs": [file_digest(p) for p in inputs]}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_output_dir(
    out: Path,
    fingerprint: str,
    *,
    command: str,
    force: bool,
    resume: bool,
    settings: dict[str, Any] | None = None,
) -> bool:
    """Create ``out`` (or check it), and refuse to mix two different runs in one directory.

    Returns True when ``out`` holds this very run (same command, inputs and settings) to continue.
    ``--force`` replaces an earlier run of the same command; a directory that holds another command's
    work (a compare run's classifier and report, a pairs summary) is never overwritten.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out}: exists and is not a directory")
    if (out / "pairs.json").exists():
        raise UserError(f"--output {out}: holds an 'asyncpipe pairs' summary; choose another --output")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".asyncpipe-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--output {out}: cannot write there ({exc.strerror})") from None
    if not (out / "run.json").exists():
        return False
    try:
        earlier = read_run(out)
    except RecordError:
        earlier = None  # unreadable: an earlier run all the same, refused below unless --resume/--force
    earlier_kind = earlier.kind if earlier is not None else "compare"
    if earlier_kind != command:
        raise UserError(
            f"--output {out}: holds the results of 'asyncpipe {earlier_kind}'; choose another --output"
        )
    if earlier is not None and earlier.fingerprint == fingerprint:
        return True
    if resume:
        return False
    if not force:
        raise UserError(
            f"--output {out}: holds a different earlier run ({_what_differs(earlier, settings)}); pass --resume "
            "to continue it with these settings, --force to replace it, or choose another --output"
        )
    for name in ARTIFACTS:
        (out / name).unlink(missing_ok=True)
    return False


class RunDirectory:
    """The output directory of one run, opened for writing (:meth:`open` checks whose it is first).

    ``continuing``: it holds this very run, interrupted or finished, to go on with; ``earlier`` is that
    run's record (None for a new run, or when it cannot be read)."""

    def __init__(self, path: Path, *, continuing: bool = False, earlier: RunRecord | None = None) -> None:
        self.path = path
        self.continuing = continuing
        self.earlier = earlier

    @classmethod
    def open(
        cls,
        path: Path,
        fingerprint: str,
        *,
        command: str,
        force: bool,
        resume: bool,
        settings: dict[str, Any] | None = None,
    ) -> RunDirectory:
        """Create or check ``path`` (see :func:`prepare_output_dir`; ``settings`` name what differs from
        an earlier run); nothing else is written yet."""
        continuing = prepare_output_dir(
            path, fingerprint, command=command, force=force, resume=resume, settings=settings
        )
        earlier = None
        if continuing:
            with contextlib.suppress(RecordError):
                earlier = read_run(path)
        return cls(path, continuing=continuing, earlier=earlier)

    def earlier_steps(self, rows_a: int, rows_b: int) -> list[StepRecord]:
        """The steps the run being continued completed, in order, up to the first that cannot be
        restored (files of ``rows_a`` and ``rows_b`` rows); none for a new run.

        They are taken as recorded rather than recomputed: a row that was unscored then and is answered
        now would change a step's metrics, hence every later describe prompt, and every later step
        would be bought again. Anything unreadable is simply not restored (the cache still helps)."""
        if not self.continuing:
            return []
        rows = {"A": rows_a, "B": rows_b}
        restored: list[StepRecord] = []
        for number, step in enumerate(read_steps(self.path / "steps.jsonl")[0], start=1):
            usable = (
                step.step == number
                and step.epoch is not None
                and step.train is not None
                and all(0 <= w.row < rows.get(w.label, 0) for w in step.wrong)
            )
            if not usable:
                break
            restored.append(step)
        return restored

    def save_run(self, record: RunRecord) -> None:
        write_run(self.path, record)

    def save_progress(self, record: RunRecord, steps: Sequence[StepRecord], metric_rows: list[dict]) -> None:
        """Everything a run knows so far, then the report re-rendered from it."""
        write_steps(self.path / "steps.jsonl", steps)
        write_parquet_atomic(self.path / "metrics.parquet", metrics_frame(metric_rows))
        write_run(self.path, record)
        render_report(self.path)

    def save_results(
        self,
        predictions: pl.DataFrame,
        *,
        classifier: dict[str, Any] | None = None,
        metric_rows: list[dict] | None = None,
        record: RunRecord | None = None,
        properties: tuple[pl.DataFrame | None, pl.DataFrame | None] = (None, None),
    ) -> None:
        """The final predictions, and whichever of the classifier, the metrics and the run record the
        command has (``compare`` saves its metrics and record with :meth:`save_progress`)."""
        write_parquet_atomic(self.path / "predictions.parquet", predictions)
        table, scores = properties
        if table is not None and scores is not None:
            self.save_properties(table, scores)
        if classifier is not None:
            write_yaml_atomic(self.path / "classify.yaml", classifier)
        if metric_rows is not None:
            write_parquet_atomic(self.path / "metrics.parquet", metrics_frame(metric_rows))
        if record is not None:
            write_run(self.path, record)

    def save_properties(self, table: pl.DataFrame, scores: pl.DataFrame) -> None:
        """The properties checked: prevalence per file (``properties.parquet``) and every check's answer
        (``property_scores.parquet``)."""
        write_parquet_atomic(self.path / "properties.parquet", table)
        write_parquet_atomic(self.path / "property_scores.parquet", scores)
