"""Lenient readers for values from a file, and the one error a record reader raises."""

from __future__ import annotations

import math
from typing import Any


class RecordError(ValueError):
    """A file is not a record this asyncpipe can read. The message is one line and names the file."""


def check_format(raw: Any, key: str, supported: int, name: str) -> dict[str, Any]:
    """``raw`` as a record's mapping, refusing what is not one and a format newer than ``supported``
    (``raw[key]``; an older file has no number and is read as it is)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{name} could not be read: not a JSON object")
    fmt = raw.get(key)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > supported:
        what = key.removeprefix("asyncpipe_")
        raise RecordError(
            f"{name} was written by a newer asyncpipe ({what} format {fmt}; this one reads up to {supported})"
        )
    return raw


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    """A finite float, else None (JSON has no NaN, and a summary never holds one)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
