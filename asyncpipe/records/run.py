"""``run.json``: one run of ``compare``, ``classify`` or ``properties`` in its output directory, in one shape."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from asyncpipe import __version__
from asyncpipe.atomic import write_json_atomic
from asyncpipe.records.summary import Finals, finals_from_dict, finals_to_dict
from asyncpipe.records.values import RecordError, as_dict, as_float, as_int, as_str, check_format

RunKind = Literal["compare", "classify", "properties"]
#: "unknown" only for a run.json that does not say
RunStatus = Literal["running", "complete", "failed", "interrupted", "exported", "unknown"]
#: the run.json format this asyncpipe writes; a newer one is refused, an older one (no number) is read
RUN_FORMAT = 1


@dataclass(frozen=True)
class LabelInfo:
    """What 'A' or 'B' stands for: a display name, the file it came from and its row count."""

    name: str
    path: str
    rows: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "rows": self.rows}

    @classmethod
    def from_dict(cls, raw: Any, key: str) -> LabelInfo:
        info = {"name": raw} if isinstance(raw, str) else as_dict(raw)
        return cls(str(info.get("name") or key), str(info.get("path") or ""), as_int(info.get("rows")))


@dataclass(frozen=True)
class CheckedFile:
    """A file the ``properties`` command checked: its display name, path, question folder, the file it
    is compared with (a display name; None: none) and its row count."""

    name: str
    path: str
    question: str | None = None
    base: str | None = None
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "question": self.question,
            "base": self.base,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> CheckedFile:
        info = as_dict(raw)
        return cls(
            str(info.get("name") or ""),
            str(info.get("path") or ""),
            as_str(info.get("question")),
            as_str(info.get("base")),
            as_int(info.get("rows")),
        )


@dataclass(frozen=True)
class RunRecord:
    """``run.json``: one run of ``compare`` or ``classify`` in its output directory.

    ``fingerprint`` identifies the inputs and the settings that decide the results; a directory holding
    another fingerprint is another run. ``stats`` and ``config`` stay plain mappings (counts by role and
    the resolved configuration): they are shown, never computed with. ``classifier`` and ``inputs`` are
    ``classify``'s (the classify.yaml applied, the files classified); ``plan`` and ``selected_step``
    onwards are ``compare``'s; ``files`` is the ``properties`` command's, whose ``properties`` holds
    ``items``, the properties it checked (compare's holds how its properties stage went)."""

    kind: RunKind
    status: RunStatus
    fingerprint: str | None = None
    message: str | None = None
    version: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    wall_seconds: float | None = None
    labels: dict[str, LabelInfo] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    #: how p(A) was obtained: "logprobs" or "sample:N"
    classify_mode: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    #: how the describe loop went and why it ended (patience, racing); empty in older runs
    loop: dict[str, Any] = field(default_factory=dict)
    #: said before any request was sent (a test split too small to be significant)
    warnings: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    #: --batch-api: the batch jobs' progress (compare) and the answers they brought (classify)
    batches: dict[str, Any] = field(default_factory=dict)
    batch_stats: dict[str, Any] | None = None
    #: the classify limiter at the end of the run (its limit, latency, what it learnt); empty in older runs
    limiter: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    selected_step: int | None = None
    selection_reason: str | None = None
    bias_offset: float | None = None
    final: Finals | None = None
    #: the properties stage (status, the properties found, how they were checked); None before it
    properties: dict[str, Any] | None = None
    classifier: str | None = None
    inputs: tuple[str, ...] = ()
    files: tuple[CheckedFile, ...] = ()

    @classmethod
    def as_of_now(cls, kind: RunKind, status: RunStatus, started: float, **fields: Any) -> RunRecord:
        """The record of a run of this asyncpipe that started at ``started`` (``time.time()``), as of
        now: its version and times filled in, ``finished_at`` once the status is no longer "running"."""
        now = time.time()
        return cls(
            kind=kind,
            status=status,
            version=__version__,
            started_at=_iso(started),
            finished_at=None if status == "running" else _iso(now),
            wall_seconds=round(now - started, 3),
            **fields,
        )

    def label(self, key: str) -> LabelInfo:
        return self.labels.get(key) or LabelInfo(key, "", None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "asyncpipe_run": RUN_FORMAT,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_seconds": self.wall_seconds,
            "labels": {k: v.to_dict() for k, v in self.labels.items()},
            "models": dict(self.models),
            "classify_mode": self.classify_mode,
            "config": dict(self.config),
            "plan": self.plan,
            "loop": dict(self.loop),
            "warnings": list(self.warnings),
            "stats": dict(self.stats),
            "limiter": dict(self.limiter),
            "batches": dict(self.batches),
            "batch_stats": self.batch_stats,
            "packages": dict(self.packages),
            "selected_step": self.selected_step,
            "selection_reason": self.selection_reason,
            "bias_offset": self.bias_offset,
            "final": finals_to_dict(self.final),
            "properties": self.properties,
            "classifier": self.classifier,
            "inputs": list(self.inputs),
            "files": [f.to_dict() for f in self.files],
        }

    @classmethod
    def from_dict(cls, raw: Any, name: str = "run.json") -> RunRecord:
        raw = check_format(raw, "asyncpipe_run", RUN_FORMAT, name)
        kind = raw.get("kind") or raw.get("command") or "compare"  # "command": before the format number
        if kind not in get_args(RunKind):
            raise RecordError(f"{name} records an unknown kind of run ({as_str(kind)!r})")
        status = raw.get("status")
        plan = raw.get("plan")
        properties = raw.get("properties")
        if isinstance(properties, list):  # the properties command before this format: the list itself
            properties = {"items": properties}
        models = as_dict(raw.get("models")) or (
            {"check": raw["model"]} if isinstance(raw.get("model"), str) else {}
        )
        return cls(
            kind=kind,
            status=status if status in get_args(RunStatus) else "unknown",
            fingerprint=as_str(raw.get("fingerprint")),
            message=as_str(raw.get("message")),
            version=as_str(raw.get("version")),
            started_at=as_str(raw.get("started_at")),
            finished_at=as_str(raw.get("finished_at")),
            wall_seconds=as_float(raw.get("wall_seconds")),
            labels={
                k: LabelInfo.from_dict(v, k) for k, v in as_dict(raw.get("labels")).items() if k in ("A", "B")
            },
            models={str(k): str(v) for k, v in models.items()},
            classify_mode=as_str(raw.get("classify_mode")),
            config=as_dict(raw.get("config")),
            plan=plan if isinstance(plan, dict) else None,
            loop=as_dict(raw.get("loop")),
            warnings=tuple(str(w) for w in raw.get("warnings") or () if isinstance(w, str)),
            stats=as_dict(raw.get("stats")),
            limiter=as_dict(raw.get("limiter")),
            batches=as_dict(raw.get("batches")),
            batch_stats=raw.get("batch_stats") if isinstance(raw.get("batch_stats"), dict) else None,
            packages={str(k): str(v) for k, v in as_dict(raw.get("packages")).items()},
            selected_step=as_int(raw.get("selected_step")),
            selection_reason=as_str(raw.get("selection_reason")),
            bias_offset=as_float(raw.get("bias_offset")),
            final=finals_from_dict(raw.get("final")),
            properties=properties if isinstance(properties, dict) else None,
            classifier=as_str(raw.get("classifier")),
            inputs=tuple(str(i) for i in raw.get("inputs") or () if isinstance(i, str)),
            files=tuple(CheckedFile.from_dict(f) for f in raw.get("files") or () if isinstance(f, dict)),
        )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def write_run(out_dir: Path, record: RunRecord) -> None:
    write_json_atomic(out_dir / "run.json", record.to_dict())


def read_run(out_dir: Path) -> RunRecord | None:
    """``out_dir/run.json``, or None when there is none. Raises :class:`RecordError` (one line) for a
    file that cannot be read or is no run record."""
    path = out_dir / "run.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(f"{path.name} could not be read: {exc}") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"{path.name} could not be read: {exc}") from None
    return RunRecord.from_dict(raw, path.name)
