"""``steps.jsonl``: one line per describe step, rewritten whole after each step."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncpipe.atomic import write_text_atomic
from asyncpipe.records.summary import Summary
from asyncpipe.records.values import as_int


@dataclass(frozen=True)
class Miss:
    """A training row a step's classifier got wrong: shown to the next describe step."""

    label: str
    row: int
    p_a: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "row": self.row, "p_a": self.p_a}


@dataclass(frozen=True)
class Race:
    """How a step's description fared in its race against the best step so far (``--race``): on
    ``rows`` race rows, the mean per-row log-loss difference new − best and its one-sided 95% lower
    bound; ``go_on`` whether it was then scored on every other validation row."""

    against: int
    rows: int
    mean_difference: float
    lower_bound: float
    go_on: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "rows": self.rows,
            "mean_difference": self.mean_difference,
            "lower_bound": self.lower_bound,
            "go_on": self.go_on,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Race:
        return cls(
            int(raw["against"]),
            int(raw["rows"]),
            float(raw["mean_difference"]),
            float(raw["lower_bound"]),
            bool(raw["go_on"]),
        )


@dataclass(frozen=True)
class StepRecord:
    """One describe step: its description, the pairs it was shown, and how a classifier with that
    description did on them (``train``) and on the held-out validation rows.

    With racing on (``raced``) a step also records its race (None: nothing to race against) and
    ``validation_p_a``, p(A) per validation row (A rows, then B rows, in validation order; None where
    not scored), so that later steps and a resumed run can race against it. Without racing neither key
    is written, so such a run writes what it always wrote."""

    step: int
    epoch: int | None
    description: str
    pairs: tuple[int, ...]
    train: Summary | None
    #: over every validation row, or, when the description lost its race, over the race rows only
    validation: Summary | None
    wrong: tuple[Miss, ...] = ()
    race: Race | None = None
    validation_p_a: tuple[float | None, ...] | None = None
    raced: bool = False

    @property
    def validation_partial(self) -> bool:
        """Scored on the race rows only: it lost its race."""
        return self.race is not None and not self.race.go_on

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "description": self.description,
            "pairs": list(self.pairs),
            "metrics": {
                "train": None if self.train is None else self.train.to_dict(),
                "validation": None if self.validation is None else self.validation.to_dict(),
            },
            "wrong": [w.to_dict() for w in self.wrong],
            **(
                {
                    "race": None if self.race is None else self.race.to_dict(),
                    "validation_p_a": None if self.validation_p_a is None else list(self.validation_p_a),
                }
                if self.raced
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepRecord:
        """Raises ValueError, KeyError, TypeError or AttributeError for a line that is no step."""
        metrics = raw.get("metrics") or {}
        p_a = raw.get("validation_p_a")
        return cls(
            step=int(raw["step"]),
            epoch=as_int(raw.get("epoch")),
            description=str(raw.get("description") or ""),
            pairs=tuple(int(p) for p in raw.get("pairs") or ()),
            train=Summary.from_dict(metrics.get("train")),
            validation=Summary.from_dict(metrics.get("validation")),
            wrong=tuple(
                Miss(str(w["label"]), int(w["row"]), float(w["p_a"])) for w in raw.get("wrong") or ()
            ),
            race=Race.from_dict(raw["race"]) if raw.get("race") else None,
            validation_p_a=None if p_a is None else tuple(None if v is None else float(v) for v in p_a),
            raced="race" in raw or "validation_p_a" in raw,
        )


def write_steps(path: Path, steps: Iterable[StepRecord]) -> None:
    write_text_atomic(path, "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in steps))


def read_steps(path: Path) -> tuple[tuple[StepRecord, ...], tuple[str, ...]]:
    """The steps in ``path`` in step order (a step written twice: the later line wins), and one line per
    problem. A torn last line (the file is being rewritten) is skipped with a problem, never raised."""
    if not path.exists():
        return (), ()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        return (), (f"{path.name} could not be read: {exc}",)
    problems: list[str] = []
    by_step: dict[int, StepRecord] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = StepRecord.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{path.name} line {number} skipped: {exc}")
            continue
        by_step[record.step] = record
    return tuple(by_step[k] for k in sorted(by_step)), tuple(problems)
