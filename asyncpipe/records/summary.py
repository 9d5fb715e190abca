"""The metrics summary: how a classifier did on a set of rows, in memory, in every record and file."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from asyncpipe.records.values import as_float, as_int, as_str


@dataclass(frozen=True)
class Summary:
    """How a classifier did on a set of rows: counts first, then rates (None where undefined).

    The fields are :data:`asyncpipe.metrics.SUMMARY_INT_KEYS`, ``SUMMARY_FLOAT_KEYS`` then
    ``SUMMARY_TEXT_KEYS``, in that order (a test holds them equal): a new statistic is added to ``summarize`` and here."""

    n: int | None = None
    n_scored: int | None = None
    n_unscored: int | None = None
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    n_pairs: int | None = None
    pair_wins: int | None = None
    pair_losses: int | None = None
    pair_ties: int | None = None
    pair_accuracy: float | None = None
    pair_ci_low: float | None = None
    pair_ci_high: float | None = None
    pair_p_value: float | None = None
    coverage: float | None = None
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    p_value: float | None = None
    auc: float | None = None
    auc_p_value: float | None = None
    mean_confidence: float | None = None
    log_loss: float | None = None
    selection_log_loss: float | None = None
    brier: float | None = None
    ece_p_a: float | None = None
    #: which test gave ``p_value``: "binomial" (balanced split) or "mann-whitney"
    p_value_test: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> Summary | None:
        """A summary from :func:`~asyncpipe.metrics.summarize` or a file; None for anything but a mapping."""
        if not isinstance(raw, dict):
            return None
        if "ece_p_a" not in raw and "ece" in raw:  # the name before the ECE said which probability it bins
            raw = {**raw, "ece_p_a": raw["ece"]}
        return cls(**{f.name: _SUMMARY_CAST[f.name](raw.get(f.name)) for f in fields(cls)})

    def to_dict(self) -> dict[str, int | float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_CAST_BY_TYPE = {"int | None": as_int, "float | None": as_float, "str | None": as_str}
_SUMMARY_CAST = {f.name: _CAST_BY_TYPE[str(f.type)] for f in fields(Summary)}

#: final summaries by correction ("raw", "corrected"; "final" in an early run.json that did not say),
#: then by split ("train", "validation", "test", "rest", "all")
Finals = dict[str, dict[str, Summary]]


def finals_to_dict(finals: Finals | None) -> dict | None:
    if finals is None:
        return None
    return {c: {split: s.to_dict() for split, s in per.items()} for c, per in finals.items()}


def finals_from_dict(raw: Any) -> Finals | None:
    """``{correction: {split: summary}}``; also the shapes older files hold: ``{split: summary}`` (read as
    correction "final") and ``{correction: summary}`` (an old ``classify`` run.json, over all rows)."""
    if not isinstance(raw, dict):
        return None
    out: Finals = {}
    for key, value in raw.items():
        if not isinstance(value, dict):
            continue
        flat = bool({"n", "accuracy"} & value.keys())
        if key in ("raw", "corrected") and not flat:
            summaries = {str(split): Summary.from_dict(v) for split, v in value.items()}
            out[key] = {split: v for split, v in summaries.items() if v is not None}
        elif key in ("raw", "corrected"):
            out.setdefault(key, {})["all"] = Summary.from_dict(value)  # type: ignore[assignment]
        else:
            out.setdefault("final", {})[str(key)] = Summary.from_dict(value)  # type: ignore[assignment]
    return out
