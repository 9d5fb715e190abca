"""Counters of one run: what was sent, what came from the cache, what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from asyncpipe.llm.base import Usage
from asyncpipe.model_facts import Price


@dataclass
class RunStats:
    requests: int = 0  # sent over the wire (or to the embedded model), retries included
    cache_hits: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0  # attempts abandoned at --timeout (each one retried or failed)
    failed: int = 0  # requests that ended in an error after their last attempt
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    unscored: int = 0
    off_label_samples: int = 0  # sampled answers that were neither 'A' nor 'B' (classify-mode sample:N)

    def add_usage(self, usage: Usage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cached_tokens += usage.cached_tokens

    def cost(self, price: Price | None) -> float | None:
        if price is None:
            return None
        uncached = max(0, self.prompt_tokens - self.cached_tokens)
        return (
            uncached * price.input
            + self.cached_tokens * price.cached_input
            + self.completion_tokens * price.output
        ) / 1e6

    def __add__(self, other: RunStats) -> RunStats:
        return RunStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict:
        return asdict(self)
