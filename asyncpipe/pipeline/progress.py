"""What the terminal shows while a run goes: a rich progress bar on a terminal, plain lines elsewhere
(CI, logs, pipes). The pipeline only calls :class:`Reporter` methods; it never prints itself."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.stats import RunStats
from asyncpipe.model_facts import Price


def percent(value: float | None) -> str:
    """A rate for the terminal: "81.2%", or "n/a" where it is undefined."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _tokens(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def limiter_text(limiter: AdaptiveLimiter) -> str:
    """ "limit 12/64 · latency 0.84s (base 0.25s)": the concurrency limit and what it follows."""
    text = f"limit {int(limiter.limit)}/{limiter.maximum}"
    if limiter.latency is not None:
        text += f" · latency {limiter.latency:.2f}s"
        if limiter.base_latency is not None:
            text += f" (base {limiter.base_latency:.2f}s)"
    if limiter.timeouts:
        text += f" · {limiter.timeouts} timeouts"
    return text


class Reporter:
    """Progress for one run. ``price`` (set once the model is known) adds a running cost estimate;
    ``limiter`` (the classifier's) adds its concurrency limit and the latency it measures."""

    def __init__(self, stats: RunStats, *, quiet: bool = False, console: Console | None = None) -> None:
        self.stats = stats
        self.console = console or Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal and not quiet
        self.quiet = quiet
        self.price: Price | None = None
        self.limiter: AdaptiveLimiter | None = None
        self._progress: Progress | None = None
        self._task = None
        self._phase_start = time.monotonic()
        self._last_refresh = 0.0
        self._done = 0

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def phase(self, name: str, total: int) -> None:
        self.end_phase()
        self._phase_start = time.monotonic()
        self._done = 0
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=total, rate="0", extra=self._stats_text())

    def _stats_text(self) -> str:
        s = self.stats
        cost = s.cost(self.price)
        parts = [
            f"sent {s.requests}",
            f"cache {s.cache_hits}",
            f"retries {s.retries}",
            f"429s {s.rate_limited}",
            f"tokens {_tokens(s.prompt_tokens)} in ({_tokens(s.cached_tokens)} cached) / {_tokens(s.completion_tokens)} out",
        ]
        if cost is not None:
            parts.append(f"≈${cost:.4f}")
        if self.limiter is not None:
            parts.append(limiter_text(self.limiter))
        return " · ".join(parts)

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._progress is None or self._task is None:
            return
        now = time.monotonic()
        if now - self._last_refresh < 0.1:  # thousands of rows a second: refresh the text ten times a second
            self._progress.advance(self._task, n)
            return
        self._last_refresh = now
        rate = self._done / max(1e-6, now - self._phase_start)
        self._progress.update(self._task, advance=n, rate=f"{rate:.0f}", extra=self._stats_text())

    def end_phase(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
