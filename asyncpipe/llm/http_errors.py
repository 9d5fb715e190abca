"""What an OpenAI-compatible server's error answer means, by what the caller can do about it: wait and
retry (429 with a pause hint, 5xx), give up on this request only (400/413/422: content filter, context
length), or stop the run (401/403/404, an exhausted quota)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import Any

from asyncpipe.errors import AsyncpipeError, FatalAPIError, RequestRejected, RetryableAPIError

RETRYABLE_STATUS = {408, 409, 425, 429}
# refusals of one request for what it holds (content filter, context length): not the whole run's fault
REJECTED_STATUS = {400, 413, 422}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)
# 429 codes that no amount of waiting fixes
PERMANENT_429 = {"insufficient_quota", "credit_limit", "billing_hard_limit_reached"}


def parse_duration(text: str) -> float | None:
    """'6m0s' → 360, '1.5s' → 1.5, '20ms' → 0.02 (the x-ratelimit-reset-* format)."""
    parts = _DURATION.findall(text.strip())
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(value) * scale[unit] for value, unit in parts)


def retry_hint(headers: Any, message: str = "", kind: str | None = None) -> float | None:
    """Seconds to wait, from the headers a 429/503 carries, else from the error message.

    Order: ``retry-after-ms``, ``retry-after``, the message's "try again in …" (it speaks of the limit
    that was hit), then the ``x-ratelimit-reset-*`` header of the exhausted limit (``kind`` is the error's
    type, "requests" or "tokens"). Taking the larger of both resets would make a run wait minutes for a
    token window when only the request window (milliseconds) was exhausted."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    if (after := headers.get("retry-after")) is not None:
        try:
            return float(after)
        except ValueError:
            try:  # an HTTP date; anything else is ignored (parsedate_to_datetime raises on it)
                parsed = email.utils.parsedate_to_datetime(after) if after else None
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    if match := _TRY_AGAIN.search(message):
        value = float(match.group(1))
        return value / 1000.0 if match.group(2).lower() == "ms" else value
    names = {"requests": ("requests",), "tokens": ("tokens",)}.get(kind or "", ("requests", "tokens"))
    resets = [
        parse_duration(headers[f"x-ratelimit-reset-{n}"])
        for n in names
        if headers.get(f"x-ratelimit-reset-{n}")
    ]
    resets = [r for r in resets if r is not None]
    # without a type, the shorter wait: a retry that comes too early costs one more 429, not minutes
    return min(resets) if resets else None


def error_fields(raw: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an OpenAI-style error body, tolerating anything else."""
    try:
        body = json.loads(raw)
        error = body.get("error", body) if isinstance(body, dict) else {}
        if isinstance(error, str):
            return error, None, None
        return (
            str(error.get("message") or raw[:200].decode("utf-8", "replace")),
            error.get("type"),
            error.get("code"),
        )
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace").strip() or "(empty body)", None, None


def parse_rpm(value: str) -> float | None:
    try:
        rpm = float(value)
    except ValueError:
        return None
    return rpm if rpm > 0 else None


def error_for(status: int, headers: Any, raw: bytes, where: str) -> AsyncpipeError:
    """The error to raise for a non-200 answer (``where``: the server and model, for the message)."""
    message, kind, code = error_fields(raw)
    if status == 429:
        if code in PERMANENT_429 or kind in PERMANENT_429:
            return FatalAPIError(f"{where}: quota exhausted: {message}", status=status, code=code or kind)
        return RetryableAPIError(
            f"rate limited (429): {message}",
            status=status,
            retry_after=retry_hint(headers, message, kind),
            rate_limited=True,
        )
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableAPIError(
            f"HTTP {status}: {message}", status=status, retry_after=retry_hint(headers, message)
        )
    if status in (401, 403):
        return FatalAPIError(
            f"{where}: not authorised (HTTP {status}): {message}; check OPENAI_API_KEY", status=status
        )
    if status == 404:
        return FatalAPIError(
            f"{where}: not found (HTTP 404): {message}; check --model and --base-url", status=status
        )
    if status in REJECTED_STATUS:
        label = f"HTTP {status}" + (f" {code}" if code else "")
        return RequestRejected(f"refused by the API ({label}): {message}", status=status, code=code)
    return FatalAPIError(f"{where}: request refused (HTTP {status}): {message}", status=status, code=code)
