"""Model resources shared by every comparison in one process: one provider (and HTTP session) per
model, one adaptive limiter per model, one response cache, one retry policy.

``asyncpipe compare`` uses a pool of its own; ``asyncpipe pairs`` runs many comparisons concurrently
over one pool, so that together they stay within the API's limits and never pay twice for an answer.
Each comparison gets its own :class:`~asyncpipe.llm.client.LLMClient` (a thin wrapper) so that its
request and token counts stay its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from asyncpipe.config import PoolSettings
from asyncpipe.llm.base import LOGPROBS, ClassifyMode, Provider
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.interrupt import Stopper
from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.registry import check_can_classify, make_provider
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats


def build_pool(
    settings: PoolSettings,
    *,
    api_key: str | None = None,
    classify_mode: ClassifyMode = LOGPROBS,
    stopper: Stopper | None = None,
) -> ModelPool:
    """The pool for resolved settings (flags over ``config/default.yaml``); the key is
    ``OPENAI_API_KEY`` unless one is given."""
    return ModelPool(
        settings,
        api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
        policy=RetryPolicy(
            settings.max_attempts, float(settings.retry_base_delay), float(settings.retry_max_delay)
        ),
        classify_mode=classify_mode,
        stopper=stopper,
    )


class ModelPool:
    def __init__(
        self,
        settings: PoolSettings,
        *,
        api_key: str | None,
        policy: RetryPolicy,
        classify_mode: ClassifyMode = LOGPROBS,
        stopper: Stopper | None = None,
    ) -> None:
        self.settings = settings
        self.classify_mode = classify_mode
        #: Ctrl-C handling shared by every client of the pool (see asyncpipe.llm.interrupt)
        self.stopper = stopper if stopper is not None else Stopper()
        self.api_key = api_key
        self.policy = policy
        self.cache: ResponseCache | None = None
        self._providers: dict[str, Provider] = {}
        self._limiters: dict[str, AdaptiveLimiter] = {}
        self._inflight: dict = {}  # requests under way, shared so that no two runs pay for one answer

    def provider(self, model: str, role: str) -> Provider:
        """The provider for ``model``, created on first use (checks the model can play ``role``)."""
        if role == "classify":
            check_can_classify(model, self.classify_mode)
        if model not in self._providers:
            self._providers[model] = make_provider(
                model,
                base_url=self.settings.base_url,
                api_key=self.api_key,
                timeout=self.settings.timeout,
                connections=self.settings.concurrency,
                describe_timeout=self.settings.describe_timeout,
            )
        return self._providers[model]

    def open_cache(self, path: Path) -> None:
        if self.cache is None:
            self.cache = ResponseCache(path)

    def client(self, model: str, stats: RunStats) -> LLMClient:
        provider = self._providers[model]
        if model not in self._limiters:
            maximum = min(self.settings.concurrency, provider.max_concurrency)
            self._limiters[model] = AdaptiveLimiter(
                maximum,
                initial=min(maximum, 16),
                rpm=self.settings.rpm,
                tpm=self.settings.tpm,
                timeout=self.settings.timeout,
            )
        return LLMClient(
            provider,
            cache=self.cache,
            policy=self.policy,
            limiter=self._limiters[model],
            stats=stats,
            inflight=self._inflight,
            classify_mode=self.classify_mode,
            stopper=self.stopper,
        )

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
        if self.cache is not None:
            self.cache.close()
            self.cache = None
