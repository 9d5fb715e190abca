"""What the terminal shows while a run goes: a rich progress bar on a terminal, plain lines elsewhere
(CI, logs, pipes). The pipeline only calls :class:`Reporter` methods; it never prints itself."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from asyncpipe.llm.stats import RunStats


class Reporter:
    def __init__(self, stats: RunStats, *, quiet: bool = False, console: Console | None = None) -> None:
        self.stats = stats
        self.console = console or Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal and not quiet
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task = None
        self._started = time.monotonic()
        self._phase_start = time.monotonic()
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
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s · {task.fields[extra]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=total, rate="0", extra="")

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._progress is not None and self._task is not None:
            elapsed = max(1e-6, time.monotonic() - self._phase_start)
            s = self.stats
            extra = (
                f"{s.requests} sent · {s.cache_hits} cached · {s.retries} retries · {s.rate_limited}×429 · "
                f"{s.prompt_tokens + s.completion_tokens} tokens"
            )
            self._progress.update(self._task, advance=n, rate=f"{self._done / elapsed:.0f}", extra=extra)

    def end_phase(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
