"""Token counts for estimates (``--dry-run``): tiktoken when ``config/models.yaml`` names a tokenizer
for the model, else about four characters per token. tiktoken downloads its encoding files on first use;
offline, with nothing in its cache, it cannot load them, and the estimate says so. Rows are counted
exactly on a spread-out sample and scaled to all their characters, so millions of rows stay quick."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from asyncpipe.config import CHARS_PER_TOKEN
from asyncpipe.model_facts import ModelFacts

#: tokens a chat message adds around its content, and the reply's priming (OpenAI's accounting)
PER_MESSAGE = 4
PER_REQUEST = 3
#: rows whose tokens are counted exactly; the rest is scaled from their characters
SAMPLE_ROWS = 2000
TOKENIZER_TIMEOUT = 15.0


@dataclass(frozen=True)
class TokenCounter:
    method: str
    count: Callable[[str], int]
    exact: bool
    note: str | None = None


def _chars(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _load_encoding(name: str):
    """tiktoken's encoding, or the reason it cannot be had (it fetches its files over the network the
    first time; the fetch has no timeout of its own, hence the thread)."""
    result: dict = {}

    def load() -> None:
        try:
            import tiktoken

            result["encoding"] = tiktoken.get_encoding(name)
        except Exception as exc:  # noqa: BLE001 - any failure means: estimate instead
            result["error"] = f"{type(exc).__name__}"

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(TOKENIZER_TIMEOUT)
    if "encoding" in result:
        return result["encoding"], None
    return None, result.get("error", f"no answer within {TOKENIZER_TIMEOUT:g} s")


def token_counter(facts: ModelFacts) -> TokenCounter:
    fallback = f"about {CHARS_PER_TOKEN} characters per token"
    if not facts.tokenizer:
        return TokenCounter(
            fallback, _chars, False, f"config/models.yaml names no tokenizer for {facts.name}"
        )
    encoding, error = _load_encoding(facts.tokenizer)
    if encoding is None:
        note = (
            f"tiktoken could not load {facts.tokenizer} ({error}): it downloads its encoding files on first "
            f"use and this machine seems to be offline, so tokens are estimated at {CHARS_PER_TOKEN} characters each"
        )
        return TokenCounter(fallback, _chars, False, note)
    return TokenCounter(
        f"tiktoken {facts.tokenizer}", lambda text: len(encoding.encode(text, disallowed_special=())), True
    )


def messages_tokens(messages: list, count: Callable[[str], int]) -> int:
    return sum(count(m["content"]) + PER_MESSAGE for m in messages) + PER_REQUEST


def count_row_tokens(texts: list[str], counter: TokenCounter) -> tuple[int, float]:
    """(tokens of all rows, tokens per character), counting a spread-out sample exactly."""
    total_chars = sum(len(t) for t in texts)
    if not texts:
        return 0, 1.0 / CHARS_PER_TOKEN
    if not counter.exact or len(texts) <= SAMPLE_ROWS:
        tokens = sum(counter.count(t) for t in texts)
        return tokens, tokens / max(1, total_chars)
    step = len(texts) / SAMPLE_ROWS
    sample = [texts[int(i * step)] for i in range(SAMPLE_ROWS)]
    ratio = sum(counter.count(t) for t in sample) / max(1, sum(len(t) for t in sample))
    return round(total_chars * ratio), ratio
