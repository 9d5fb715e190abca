"""Small formatters: numbers for people, and run text made safe for HTML.

Everything that came from the run (row text, descriptions, file names, messages) goes through
:func:`esc` or :func:`clipped` before it reaches the page: model output may contain ``<script>``.
"""

from __future__ import annotations

import html
import math
from typing import Any

#: characters of a row shown before the rest is folded away behind a marker
ROW_CHARS = 400


def esc(value: Any) -> str:
    """HTML-escape anything (None becomes an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def clipped(text: str | None, limit: int = ROW_CHARS) -> str:
    """Escaped text; past ``limit`` characters the rest folds into a <details> whose summary is the marker."""
    text = text or ""
    if len(text) <= limit:
        return f'<span class="text">{esc(text)}</span>'
    head, rest = text[:limit], text[limit:]
    return (
        f'<span class="text">{esc(head)}</span><details class="more"><summary>… [clipped: {len(rest):,} more'
        f' characters]</summary><span class="text">{esc(rest)}</span></details>'
    )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def pct(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}%}" if is_number(value) else "–"


def interval(low: Any, high: Any) -> str:
    if not (is_number(low) and is_number(high)):
        return "–"
    return f"[{low:.1%}, {high:.1%}]"


def p_value(value: Any) -> str:
    if not is_number(value):
        return "–"
    if value < 1e-4:
        return "p < 0.0001"
    return f"p = {value:.2g}" if value < 0.01 else f"p = {value:.3f}"


def num(value: Any, digits: int = 3) -> str:
    if not is_number(value):
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def prob(value: Any) -> str:
    return f"{value:.3f}" if is_number(value) else "–"


def cost(value: Any) -> str:
    if not is_number(value):
        return "unknown"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def duration(seconds: Any) -> str:
    if not is_number(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
