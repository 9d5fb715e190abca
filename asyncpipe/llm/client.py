"""A provider with the cache, the retry policy and the limiter around it: what the pipeline calls.

Order of layers for one request: cache lookup → (retry: limiter slot → provider call) → cache store.
A classify request whose attempts run out comes back *unscored* with the reason (and is not cached, so
a later run tries it again); a describe request whose attempts run out stops the run, since nothing can
go on without a description. Fatal errors pass straight through.

Classification goes through :class:`RowScorer` (``client.row_scorer(messages, placeholder)``): the rows
of a step share everything but the row, so the cache key's shared part is hashed once and, when the
provider offers ``prepare_score``, the request body's shared part is encoded once. Keys and requests are
exactly those of ``score_labels(messages with the row filled in)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from functools import partial
from json.encoder import encode_basestring

import anyio

from asyncpipe.config import CHARS_PER_TOKEN
from asyncpipe.errors import FatalAPIError, RequestRejected, RetryableAPIError
from asyncpipe.llm.base import (
    LOGPROBS,
    SLOT,
    ClassifyMode,
    Generation,
    LabelScore,
    Message,
    Provider,
    Sampling,
    SlotPrompt,
    Usage,
)
from asyncpipe.llm.cache import ResponseCache, SlotKey, cache_key
from asyncpipe.llm.interrupt import Stopper
from asyncpipe.llm.labels import AB, LabelSet
from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats

# Answers in a row without logprobs, from an endpoint that never sent any, before the run stops.
NO_LOGPROBS_LIMIT = 8
# Classify requests refused in a row (HTTP 400/413/422) before the run stops: one refused row is that
# row's problem, a run of them is the whole run's (a wrong parameter, a model that rejects the prompt).
REJECTED_LIMIT = 8
# Answers from an endpoint whose logprobs look fake (all 0, or −9999 on every alternative), in a row
# before any real-looking one, after which the run stops with advice to classify by sampling.
SUSPECT_LOGPROBS_LIMIT = 4
# Part of every classify cache key: changing how we ask changes the key.
CLASSIFY_PARAMS = {"max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20}


def score_params(labels: LabelSet) -> dict:
    """The cache-key parameters of a scoring request: A/B keeps the keys it always had; any other label
    set is part of the key (the same messages read as yes/no give another number)."""
    return CLASSIFY_PARAMS if labels == AB else {**CLASSIFY_PARAMS, "labels": labels.key}


def classify_params(mode: ClassifyMode) -> dict:
    """The cache key's description of how a classify request asks (logprobs keep their historic key)."""
    if mode.sampled:
        return {"mode": "sample", "n": mode.samples, "temperature": 1}
    return CLASSIFY_PARAMS


class LLMClient:
    def __init__(
        self,
        provider: Provider,
        *,
        cache: ResponseCache | None,
        policy: RetryPolicy,
        limiter: AdaptiveLimiter,
        stats: RunStats,
        inflight: dict[str, _Flight] | None = None,
        classify_mode: ClassifyMode = LOGPROBS,
        stopper: Stopper | None = None,
    ) -> None:
        self.provider = provider
        # Ctrl-C: no new request once stopping; requests in flight are counted so their answers are kept
        self.stopper = stopper if stopper is not None else Stopper()
        self.classify_mode = classify_mode
        self._params = classify_params(classify_mode)
        self.cache = cache
        self.policy = policy
        self.limiter = limiter
        self.stats = stats
        self._server_rpm: float | None = None
        # An endpoint that has never sent logprobs and keeps answering without them will not start
        # (OpenRouter returns null for providers without logprobs): stop rather than pay for every row.
        self._logprobs_seen = False
        self._rejected_streak = 0
        self._no_logprobs_streak = 0
        # placeholder logprobs are caught on the first answers, before they are paid for on every row
        self._real_logprobs_seen = False
        self._suspect_streak = 0
        # requests under way, by cache key: an identical request waits for that answer instead of
        # paying for it again (duplicate rows; the same file in several pairs). Shared through the pool.
        self.inflight: dict[str, _Flight] = inflight if inflight is not None else {}
        #: answers settled outside this client, by cache key: rows the Batch API refused for their
        #: content come back unscored with the reason instead of being sent again
        self.settled: dict[str, LabelScore] = {}

    def _learn_limits(self) -> None:
        rpm = self.provider.server_rpm
        if rpm != self._server_rpm:
            self._server_rpm = rpm
            self.limiter.learn_rpm(rpm)

    async def _attempt(self, call, tokens: int, *, timed: bool = True):
        """One request under a limiter slot. ``timed``: its latency and its timeout tell the limiter
        about the server's queue (classify requests; a describe request's latency is its length)."""
        limiter = self.limiter
        await self.stopper.hold()
        await limiter.acquire(tokens)
        if self.stopper.stopping:  # Ctrl-C came while this request waited for its slot: never send it
            limiter.release(ok=False)
            await self.stopper.hold()
        self.stats.requests += 1
        sent = limiter.clock()
        # counted until the caller has stored the answer: it does so before its next await
        self.stopper.begin()
        try:
            result = await call()
        except RetryableAPIError as exc:
            self._learn_limits()
            if exc.timed_out:
                self.stats.timeouts += 1
            limiter.release(ok=False, rate_limited=exc.rate_limited, timed_out=exc.timed_out and timed)
            if exc.no_logprobs and not self._logprobs_seen:
                self._no_logprobs_streak += 1
                if self._no_logprobs_streak >= NO_LOGPROBS_LIMIT:
                    raise FatalAPIError(
                        f"{self.provider.model}: {NO_LOGPROBS_LIMIT} answers in a row came without logprobs and none "
                        "ever had them; this model or provider does not return logprobs: classify by sampling "
                        "(--classify-mode sample:8), or choose another --classify-model or provider"
                    ) from None
            if exc.rate_limited:
                self.stats.rate_limited += 1
                if exc.retry_after:
                    # a hint is trusted up to the policy's longest wait: never a stalled run
                    limiter.pause(min(exc.retry_after, self.policy.max_delay))
            raise
        except BaseException:
            limiter.release(ok=False)
            raise
        finally:
            self.stopper.end()
        self._learn_limits()
        limiter.release(ok=True, latency=limiter.clock() - sent if timed else None)
        if isinstance(result, LabelScore):
            self._logprobs_seen = True
            self.stats.requests += result.requests - 1  # a sampled score may take several requests
            if result.method == "logprobs" and not self._real_logprobs_seen:
                self._check_real_logprobs(result)
        return result

    def _check_real_logprobs(self, result: LabelScore) -> None:
        if result.suspect is None:
            self._real_logprobs_seen = True
            return
        self._suspect_streak += 1
        if self._suspect_streak >= SUSPECT_LOGPROBS_LIMIT:
            raise FatalAPIError(
                f"{self.provider.model}: the logprobs of its first {self._suspect_streak} answers cannot be real "
                f"({result.suspect}); this provider fills them with placeholders. Classify by sampling "
                "instead: --classify-mode sample:8"
            )

    def _count_retry(self, _exc: RetryableAPIError) -> None:
        self.stats.retries += 1

    async def score_labels(self, messages: list[Message], labels: LabelSet = AB) -> LabelScore:
        params = self._params if labels == AB else score_params(labels)
        key = cache_key(self.provider.cache_identity, "score", {"messages": messages, **params})
        return await self._score(key, partial(self._call, messages, labels), _estimate_tokens(messages))

    def _call(self, messages: list[Message], labels: LabelSet = AB) -> Awaitable[LabelScore]:
        """The request for one row: sampled (A/B only) or from logprobs. A/B calls the one-argument form
        every provider (and every test double) has always had."""
        mode = self.classify_mode
        if labels != AB:
            return self.provider.score_labels(messages, labels)
        if mode.sampled:
            return self.provider.sample_labels(messages, mode.samples)
        return self.provider.score_labels(messages)

    def row_scorer(self, messages: list[Message], placeholder: str, labels: LabelSet = AB) -> RowScorer:
        """Score many rows that differ only where ``placeholder`` stands in the last message."""
        return RowScorer(self, messages, placeholder, labels)

    async def _score(self, key: str, call: Callable[[], Awaitable[LabelScore]], tokens: int) -> LabelScore:
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return LabelScore(
                hit["p_a"],
                hit["error"],
                Usage(*hit["usage"]),
                hit["method"],
                from_cache=True,
                label_mass=hit.get("label_mass"),  # absent from answers cached before it was recorded
                samples=hit.get("samples", 0),
                off_label=hit.get("off_label", 0),
            )
        if self.settled and (settled := self.settled.get(key)) is not None:
            return settled
        if (flight := self.inflight.get(key)) is not None:
            await flight.done.wait()
            if flight.result is not None:
                self.stats.cache_hits += 1
                return replace(flight.result, usage=Usage(), from_cache=True)
            # the request it waited for was cancelled: ask for itself
        flight = self.inflight[key] = _Flight()
        try:
            try:
                result = await self.policy.run(
                    lambda: self._attempt(call, tokens), on_retry=self._count_retry
                )
            except RetryableAPIError as exc:
                self.stats.failed += 1
                result = LabelScore(None, f"gave up after {self.policy.max_attempts} attempts: {exc}")
            except RequestRejected as exc:
                # this row's request was refused for what it holds; not cached, so a later run asks again
                self.stats.failed += 1
                self._rejected_streak += 1
                if self._rejected_streak >= REJECTED_LIMIT:
                    raise FatalAPIError(
                        f"{self._rejected_streak} classify requests in a row were refused; the last: {exc}"
                    ) from None
                result = LabelScore(None, str(exc))
            else:
                self._rejected_streak = 0
                self.stats.add_usage(result.usage)
                self.stats.off_label_samples += result.off_label
                if self.cache is not None and result.suspect is None:
                    self.cache.put(key, "score", score_json(result))
            flight.result = result
            return result
        finally:
            if self.inflight.get(key) is flight:
                del self.inflight[key]
            flight.done.set()

    async def generate(self, messages: list[Message], sampling: Sampling) -> Generation:
        key = cache_key(
            self.provider.cache_identity, "generate", {"messages": messages, **sampling.key_params()}
        )
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return Generation(hit["text"], Usage(*hit["usage"]), from_cache=True)
        try:
            result = await self.policy.run(
                lambda: self._attempt(
                    lambda: self.provider.generate(messages, sampling),
                    _estimate_tokens(messages) + sampling.max_tokens,
                    timed=False,
                ),
                on_retry=self._count_retry,
            )
        except RetryableAPIError as exc:
            self.stats.failed += 1
            raise FatalAPIError(
                f"the describe request failed after {self.policy.max_attempts} attempts: {exc}"
            ) from None
        except RequestRejected as exc:
            self.stats.failed += 1
            raise FatalAPIError(
                f"the describe request was {exc}; if it is too long, lower --batch-size or --max-row-chars"
            ) from None
        self.stats.add_usage(result.usage)
        if self.cache is not None:
            usage = result.usage
            self.cache.put(
                key,
                "generate",
                {
                    "text": result.text,
                    "usage": [usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens],
                },
            )
        return result

    async def aclose(self) -> None:
        await self.provider.aclose()


class RowScorer:
    """``score_labels`` for the rows of one step: ``score(fill)`` scores the messages with ``fill`` put
    where ``placeholder`` stands (first occurrence, last message), with the same cache key and the same
    request as ``score_labels`` would use, at a fraction of the CPU."""

    def __init__(
        self, client: LLMClient, messages: list[Message], placeholder: str, labels: LabelSet = AB
    ) -> None:
        self._client = client
        self._prompt = prompt = SlotPrompt.split(messages, placeholder)
        self._labels = labels
        self._params = client._params if labels == AB else score_params(labels)
        provider = client.provider
        self._key: Callable[[str], str] | None = None
        if prompt.has_slot:
            try:
                self._key = SlotKey(
                    provider.cache_identity, "score", {"messages": prompt.messages(SLOT), **self._params}
                )
            except ValueError:  # the prompt itself holds the slot marker: take the slow, general path
                self._key = None
        self._send: Callable[[str], Awaitable[LabelScore]] | None = None
        if not (client.classify_mode.sampled and labels == AB):
            self._send = (
                provider.prepare_score(prompt) if labels == AB else provider.prepare_score(prompt, labels)
            )
        self._tokens = _estimate_tokens(prompt.messages(""))

    def key(self, fill: str) -> str:
        """The cache key of the request for ``fill``."""
        if self._key is not None:
            return self._key(fill)
        return cache_key(
            self._client.provider.cache_identity,
            "score",
            {"messages": self._prompt.messages(fill), **self._params},
        )

    def requests(self, fills: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(cache key, encoded body)`` of each fill's request, the body exactly what :meth:`score`
        sends: the final pass's lines for the Batch API. Needs a provider with ``prepare_body``."""
        body = self._client.provider.prepare_body(self._prompt)
        for fill in fills:
            yield self.key(fill), body(fill)

    async def score(self, fill: str) -> LabelScore:
        client = self._client
        key = self._key(fill) if self._key is not None else self.key(fill)
        if self._send is not None:
            call = partial(self._send, fill)
        else:
            call = partial(client._call, self._prompt.messages(fill), self._labels)
        return await client._score(key, call, self._tokens + len(fill) // CHARS_PER_TOKEN)


def score_json(result: LabelScore) -> str:
    """The cached form of a score, as json.dumps would write it, without json.dumps's cost (a tenth of
    the client's own time per row)."""
    p_a = result.p_a
    if p_a is not None and not math.isfinite(p_a):
        p_a = None  # never stored as NaN: JSON has no such number
    mass = result.label_mass
    if mass is not None and not math.isfinite(mass):
        mass = None
    usage = result.usage
    sampled = (
        f',"samples":{int(result.samples)},"off_label":{int(result.off_label)}'
        if result.samples or result.off_label
        else ""
    )
    return (
        f'{{"p_a":{"null" if p_a is None else repr(float(p_a))},'
        f'"error":{"null" if result.error is None else encode_basestring(result.error)},'
        f'"method":{encode_basestring(result.method)},'
        f'"label_mass":{"null" if mass is None else repr(float(mass))},'
        f'"usage":[{int(usage.prompt_tokens)},{int(usage.completion_tokens)},{int(usage.cached_tokens)}]{sampled}}}'
    )


class _Flight:
    """One request under way, for identical requests to wait on."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: LabelScore | None = None


def _estimate_tokens(messages: list[Message]) -> int:
    """A cheap estimate for the tokens-per-minute budget."""
    return len(json.dumps(messages)) // CHARS_PER_TOKEN + 4
