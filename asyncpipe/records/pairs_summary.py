"""``pairs.json`` and ``pairs.parquet``: the summary of an ``asyncpipe pairs`` run, rewritten whenever a
pair changes state, so that it survives Ctrl-C.

``pairs.json``: ``status``, ``against``, ``by_question``, ``models``, ``cache``, ``warnings``,
``multiple_testing`` (which correction, over how many tests) and ``pairs``, one :class:`PairRecord` each. ``pairs.parquet`` holds the same, one flat row per pair
(:data:`PAIRS_PARQUET_SCHEMA`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from asyncpipe.atomic import write_json_atomic, write_parquet_atomic
from asyncpipe.records.summary import Finals, Summary
from asyncpipe.records.values import RecordError, as_dict, as_float, as_int, as_str, check_format

PairStatus = Literal["pending", "running", "complete", "failed", "interrupted", "exported"]
PAIRS_FORMAT = 1
#: the statistics of a pair's held-out rows that the summary keeps
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
#: the pair columns of pairs.parquet (from the raw held-out figures)
PAIR_KEYS = ("n_pairs", "pair_accuracy", "pair_ci_low", "pair_ci_high", "pair_p_value")
#: the per-correction columns of pairs.parquet
FLAT_KEYS = ("accuracy", "accuracy_low", "accuracy_high", "p_value", "auc")


@dataclass(frozen=True)
class HeldOut:
    """A pair's result on rows its description never saw, under one correction: the test rows where any
    were kept, else the validation rows (``split`` says which). ``scores`` holds the statistics of
    :data:`HELD_OUT_KEYS`; the others are None."""

    split: str
    scores: Summary

    @classmethod
    def of(cls, split: str, summary: Summary) -> HeldOut:
        return cls(split, Summary(**{k: getattr(summary, k) for k in HELD_OUT_KEYS}))

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, **{k: getattr(self.scores, k) for k in HELD_OUT_KEYS}}

    @classmethod
    def from_dict(cls, raw: Any) -> HeldOut | None:
        summary = Summary.from_dict(raw)
        return None if summary is None else cls.of(str(raw.get("split") or ""), summary)


def held_out_scores(final: Finals | None) -> dict[str, HeldOut] | None:
    """The held-out results, raw and bias-corrected, from a run's final summaries: the test rows (used
    for nothing else) where there are any, else the validation rows."""
    raw = (final or {}).get("raw", {})
    split = "test" if raw.get("test") is not None and raw["test"].n else "validation"
    if split not in raw or final is None:
        return None
    return {c: HeldOut.of(split, final[c][split]) for c in ("raw", "corrected") if c in final}


@dataclass(frozen=True)
class FileRef:
    name: str
    path: str


@dataclass(frozen=True)
class PairRecord:
    """One pair: its files, where its folder is (``dir``, relative to the summary), and how it went.

    ``skipped``: finished by an earlier run, its results read back from the pair's run.json.
    ``report``: the link to the pair's own report, once it exists. ``pair_p_value_holm``: the held-out
    sign test's p, Holm-adjusted over every tested pair of the run; ``significant``: by that p only
    (None without a test)."""

    question: str | None
    dir: str
    a: FileRef
    b: FileRef
    status: PairStatus = "pending"
    reason: str | None = None
    skipped: bool = False
    selected_step: int | None = None
    description: str | None = None
    held_out: dict[str, HeldOut] | None = None
    stats: dict[str, Any] | None = None
    seconds: float | None = None
    report: str | None = None
    pair_p_value_holm: float | None = None
    significant: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "dir": self.dir,
            "a": {"name": self.a.name, "path": self.a.path},
            "b": {"name": self.b.name, "path": self.b.path},
            "status": self.status,
            "reason": self.reason,
            "skipped": self.skipped,
            "selected_step": self.selected_step,
            "description": self.description,
            "held_out": None if self.held_out is None else {c: h.to_dict() for c, h in self.held_out.items()},
            "stats": self.stats,
            "seconds": self.seconds,
            "report": self.report,
            "pair_p_value_holm": self.pair_p_value_holm,
            "significant": self.significant,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> PairRecord:
        raw = as_dict(raw)
        held = raw.get("held_out")
        held_out = (
            {str(c): h for c, v in held.items() if (h := HeldOut.from_dict(v)) is not None}
            if isinstance(held, dict)
            else None
        )
        return cls(
            question=as_str(raw.get("question")),
            dir=str(raw.get("dir") or ""),
            a=_file_ref(raw.get("a")),
            b=_file_ref(raw.get("b")),
            status=raw.get("status") if isinstance(raw.get("status"), str) else "pending",
            reason=as_str(raw.get("reason")),
            skipped=raw.get("skipped") is True,
            selected_step=as_int(raw.get("selected_step")),
            description=as_str(raw.get("description")),
            held_out=held_out,
            stats=raw.get("stats") if isinstance(raw.get("stats"), dict) else None,
            seconds=as_float(raw.get("seconds")),
            report=as_str(raw.get("report")),
            pair_p_value_holm=as_float(raw.get("pair_p_value_holm")),
            significant=raw.get("significant") if isinstance(raw.get("significant"), bool) else None,
        )

    def flat_row(self) -> dict[str, Any]:
        """One ``pairs.parquet`` row (columns: :data:`PAIRS_PARQUET_SCHEMA`)."""
        raw = (self.held_out or {}).get("raw")
        row: dict[str, Any] = {
            "question": self.question,
            "dir": self.dir,
            "a_name": self.a.name,
            "a_path": self.a.path,
            "b_name": self.b.name,
            "b_path": self.b.path,
            "status": self.status,
            "reason": self.reason,
            "skipped": self.skipped,
            "selected_step": self.selected_step,
            "description": self.description,
            "report": self.report,
            "held_out_split": raw.split if raw else None,
            **{key: getattr(raw.scores, key) if raw else None for key in PAIR_KEYS},
            "pair_p_value_holm": self.pair_p_value_holm,
            "significant": self.significant,
            "n_held_out": raw.scores.n if raw else None,
            "coverage": raw.scores.coverage if raw else None,
        }
        for correction in ("raw", "corrected"):
            values = (self.held_out or {}).get(correction)
            for key in FLAT_KEYS:
                row[f"{key}_{correction}"] = getattr(values.scores, key) if values else None
        return row


def _file_ref(raw: Any) -> FileRef:
    info = as_dict(raw)
    return FileRef(str(info.get("name") or ""), str(info.get("path") or ""))


#: pairs.parquet: question, dir, a_name, a_path, b_name, b_path, status, reason, skipped, selected_step,
#: description, report (relative link or null), held_out_split ("test", or "validation" when no test
#: rows were kept), n_pairs, pair_accuracy, pair_ci_low, pair_ci_high, pair_p_value (the one-sided sign
#: test), pair_p_value_holm (Holm-adjusted over every tested pair of the run), significant (by the
#: adjusted p only), n_held_out, coverage, and per correction (raw/corrected) accuracy, its interval,
#: p_value (one-sided), auc
PAIRS_PARQUET_SCHEMA: dict[str, Any] = {
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
    **{f"{k}_{c}": pl.Float64 for c in ("raw", "corrected") for k in FLAT_KEYS},
}


@dataclass(frozen=True)
class PairsRecord:
    """``pairs.json``: the whole ``pairs`` run. ``status``: running, complete, failed or interrupted."""

    status: str
    version: str | None = None
    updated_at: str | None = None
    against: str | None = None
    by_question: bool = False
    models: dict[str, str] = field(default_factory=dict)
    cache: str | None = None
    warnings: tuple[str, ...] = ()
    pairs: tuple[PairRecord, ...] = ()
    #: which correction for many tests, over how many (method, p_value, tests, alpha, significant)
    multiple_testing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "asyncpipe_pairs": PAIRS_FORMAT,
            "version": self.version,
            "status": self.status,
            "updated_at": self.updated_at,
            "against": self.against,
            "by_question": self.by_question,
            "models": dict(self.models),
            "cache": self.cache,
            "warnings": list(self.warnings),
            "multiple_testing": self.multiple_testing,
            "pairs": [p.to_dict() for p in self.pairs],
        }

    @classmethod
    def from_dict(cls, raw: Any, name: str = "pairs.json") -> PairsRecord:
        raw = check_format(raw, "asyncpipe_pairs", PAIRS_FORMAT, name)
        return cls(
            status=str(raw.get("status") or "running"),
            version=as_str(raw.get("version")),
            updated_at=as_str(raw.get("updated_at")),
            against=as_str(raw.get("against")),
            by_question=bool(raw.get("by_question")),
            models={str(k): str(v) for k, v in as_dict(raw.get("models")).items()},
            cache=as_str(raw.get("cache")),
            warnings=tuple(str(w) for w in raw.get("warnings") or ()),
            multiple_testing=raw.get("multiple_testing")
            if isinstance(raw.get("multiple_testing"), dict)
            else None,
            pairs=tuple(PairRecord.from_dict(p) for p in raw.get("pairs") or ()),
        )


def write_pairs(out_dir: Path, record: PairsRecord) -> None:
    """``pairs.json`` and ``pairs.parquet`` at the top of ``out_dir``."""
    write_json_atomic(out_dir / "pairs.json", record.to_dict())
    rows = [p.flat_row() for p in record.pairs]
    write_parquet_atomic(out_dir / "pairs.parquet", pl.DataFrame(rows, schema=PAIRS_PARQUET_SCHEMA))


def read_pairs(out_dir: Path) -> PairsRecord | None:
    """``out_dir/pairs.json``, or None when there is none; :class:`RecordError` when it cannot be read."""
    path = out_dir / "pairs.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path.name} could not be read: {exc}") from None
    return PairsRecord.from_dict(raw, path.name)
