"""A provider with the cache, the retry policy and the limiter around it: what the pipeline calls.

Order of layers for one request: cache lookup → (retry: limiter slot → provider call) → cache store.
A classify request whose attempts run out comes back *unscored* with the reason (and is not cached, so
a later run tries it again); a describe request whose attempts run out stops the run, since nothing can
go on without a description. Fatal errors pass straight through.
"""

from __future__ import annotations

import json

from asyncpipe.errors import FatalAPIError, RetryableAPIError
from asyncpipe.llm.base import Generation, LabelScore, Message, Provider, Usage
from asyncpipe.llm.cache import ResponseCache, cache_key
from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats

# Part of every classify cache key: changing how we ask changes the key.
CLASSIFY_PARAMS = {"max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20}


class LLMClient:
    def __init__(
        self,
        provider: Provider,
        *,
        cache: ResponseCache | None,
        policy: RetryPolicy,
        limiter: AdaptiveLimiter,
        stats: RunStats,
    ) -> None:
        self.provider = provider
        self.cache = cache
        self.policy = policy
        self.limiter = limiter
        self.stats = stats

    async def _attempt(self, call, tokens: int):
        await self.limiter.acquire(tokens)
        self.stats.requests += 1
        try:
            result = await call()
        except RetryableAPIError as exc:
            self.limiter.release(ok=False, rate_limited=exc.rate_limited)
            if exc.rate_limited:
                self.stats.rate_limited += 1
                if exc.retry_after:
                    self.limiter.pause(exc.retry_after)
            raise
        except BaseException:
            self.limiter.release(ok=False)
            raise
        self.limiter.release(ok=True)
        return result

    def _count_retry(self, _exc: RetryableAPIError) -> None:
        self.stats.retries += 1

    async def score_labels(self, messages: list[Message]) -> LabelScore:
        key = cache_key(self.provider.cache_identity, "score", {"messages": messages, **CLASSIFY_PARAMS})
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return LabelScore(hit["p_a"], hit["error"], Usage(*hit["usage"]), hit["method"], from_cache=True)
        tokens = _estimate_tokens(messages)
        try:
            result = await self.policy.run(
                lambda: self._attempt(lambda: self.provider.score_labels(messages), tokens),
                on_retry=self._count_retry,
            )
        except RetryableAPIError as exc:
            self.stats.failed += 1
            return LabelScore(None, f"gave up after {self.policy.max_attempts} attempts: {exc}")
        self.stats.add_usage(result.usage)
        if self.cache is not None:
            usage = result.usage
            self.cache.put(
                key,
                "score",
                {"p_a": result.p_a, "error": result.error, "method": result.method,
                 "usage": [usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens]},
            )
        return result

    async def generate(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Generation:
        params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        key = cache_key(self.provider.cache_identity, "generate", {"messages": messages, **params})
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return Generation(hit["text"], Usage(*hit["usage"]), from_cache=True)
        try:
            result = await self.policy.run(
                lambda: self._attempt(
                    lambda: self.provider.generate(messages, max_tokens=max_tokens, temperature=temperature, seed=seed),
                    _estimate_tokens(messages) + max_tokens,
                ),
                on_retry=self._count_retry,
            )
        except RetryableAPIError as exc:
            self.stats.failed += 1
            raise FatalAPIError(f"the describe request failed after {self.policy.max_attempts} attempts: {exc}") from None
        self.stats.add_usage(result.usage)
        if self.cache is not None:
            usage = result.usage
            self.cache.put(key, "generate", {"text": result.text, "usage": [usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens]})
        return result

    async def aclose(self) -> None:
        await self.provider.aclose()


def _estimate_tokens(messages: list[Message]) -> int:
    """A cheap estimate for the tokens-per-minute budget: about four characters per token."""
    return len(json.dumps(messages)) // 4 + 4
