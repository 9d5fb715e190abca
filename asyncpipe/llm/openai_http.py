"""The OpenAI-compatible chat completions API over one shared aiohttp session.

Serves OpenAI, vLLM, llama.cpp's server, OpenRouter and Together with the same code. Classification is
millions of tiny requests, so the hot path is a bare aiohttp POST with minimal parsing (the openai SDK
costs several milliseconds of client CPU per request). Each HTTP outcome is mapped to an error by what
the caller can do about it; see :mod:`asyncpipe.errors`.

For classification, :meth:`OpenAIHTTPProvider.prepare_score` encodes the request body of a step once,
split around the row: each request is then three byte strings joined, not a JSON encoding of the whole
prompt. JSON escapes a string character by character, so the joined bytes are exactly what encoding the
full body gives. Answers are still parsed in full with ``json.loads``: correctness before the last
microseconds.

The server's own limit is read from ``x-ratelimit-limit-requests`` (OpenAI sends it with every answer)
into :attr:`OpenAIHTTPProvider.server_rpm`, so the client can pace itself without an ``--rpm`` flag.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii  # what json.dumps (ensure_ascii) escapes strings with
from typing import TYPE_CHECKING, Any

import aiohttp

from asyncpipe.config import ModelFacts
from asyncpipe.errors import FatalAPIError, RequestRejected, RetryableAPIError, UserError
from asyncpipe.llm.base import Generation, LabelScore, Message, SlotPrompt, Usage
from asyncpipe.llm.labels import AB, LabelSet, implausible_logprobs, p_a_from_samples, read_top_logprobs

if TYPE_CHECKING:
    from asyncpipe.llm.batch.api import BatchAPI

OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 425, 429}
# hidden reasoning tokens allowed to a reasoning model's describe answer, on top of --describe-max-tokens
REASONING_ALLOWANCE = 16_000
# the same for one sampled label from a reasoning model at its cheapest effort (hidden tokens, then 'A')
SAMPLE_REASONING_ALLOWANCE = 2_048
# tokens a sampled answer may take: 'A' is one token, a little room shows what else a model says
SAMPLE_MAX_TOKENS = 4
# refusals of one request for what it holds (content filter, context length): not the whole run's fault
REJECTED_STATUS = {400, 413, 422}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)
# 429 codes that no amount of waiting fixes
PERMANENT_429 = {"insufficient_quota", "credit_limit", "billing_hard_limit_reached"}
_SLOT = "\ue000asyncpipe-slot\ue001"
_JSON = json.JSONEncoder(separators=(",", ":"))


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


def _parse_rpm(value: str) -> float | None:
    try:
        rpm = float(value)
    except ValueError:
        return None
    return rpm if rpm > 0 else None


def _usage(body: dict) -> Usage:
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
    )


def label_score(body: dict[str, Any], labels: LabelSet = AB) -> LabelScore:
    """p(first label) (p(A), or p(yes)) from a classification answer, or a retryable error when the answer has no usable logprobs."""
    choices = body.get("choices")
    if not choices:
        raise RetryableAPIError("the answer has no choices")
    logprobs = (choices[0] or {}).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        raise RetryableAPIError(
            "the answer has no logprobs (does this model or provider return them?)", no_logprobs=True
        )
    first = content[0]
    pairs = [(t.get("token", ""), t.get("logprob")) for t in first.get("top_logprobs") or []]
    chosen = first.get("token")
    if chosen is not None and all(token != chosen for token, _ in pairs):
        pairs.append((chosen, first.get("logprob")))
    suspect = implausible_logprobs((chosen, first.get("logprob")) if chosen is not None else None, pairs)
    reading = read_top_logprobs(pairs, labels)
    return LabelScore(
        p_a=reading.p_a,
        error=reading.error,
        usage=_usage(body),
        method="logprobs",
        label_mass=reading.label_mass,
        suspect=suspect,
    )


def _sampled_answers(body: dict[str, Any]) -> list[str]:
    choices = body.get("choices")
    if not choices:
        raise RetryableAPIError("the answer has no choices")
    return [str(((c or {}).get("message") or {}).get("content") or "") for c in choices]


class OpenAIHTTPProvider:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    max_concurrency = 1_000_000

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None,
        facts: ModelFacts,
        timeout: float = 60.0,
        connections: int = 64,
    ) -> None:
        self.model = model
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.cache_identity = f"openai-compatible:{self.base_url}:{model}"
        self.facts = facts
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._url = self.base_url + "/chat/completions"
        #: requests per minute the server says this key may send (``x-ratelimit-limit-requests``)
        self.server_rpm: float | None = None
        self._rpm_header: str | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections, limit_per_host=self._connections, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _exchange(self, data: bytes) -> tuple[int, Any, bytes]:
        """POST one encoded body; (status, headers, raw answer). The only method that touches the network."""
        session = (
            self._session if self._session is not None and not self._session.closed else self._get_session()
        )
        try:
            async with session.post(self._url, data=data) as response:
                return response.status, response.headers, await response.read()
        except TimeoutError:
            raise RetryableAPIError(
                f"no answer within {self._timeout_seconds:g}s (--timeout)", timed_out=True
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableAPIError(f"connection error: {type(exc).__name__}: {exc}".strip()) from None

    def _note_limits(self, headers: Any) -> None:
        value = headers.get("x-ratelimit-limit-requests")
        if value is not None and value != self._rpm_header:
            self._rpm_header = value
            self.server_rpm = _parse_rpm(value)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post_bytes(_JSON.encode(body).encode("ascii"))

    async def _post_bytes(self, data: bytes) -> dict[str, Any]:
        status, headers, raw = await self._exchange(data)
        self._note_limits(headers)
        if status == 200:
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise RetryableAPIError(
                    f"invalid JSON in a 200 answer ({len(raw)} bytes)", status=status
                ) from None
            if not isinstance(parsed, dict):
                raise RetryableAPIError("the answer is not a JSON object", status=status)
            return parsed
        message, kind, code = error_fields(raw)
        where = f"{self.base_url} ({self.model})"
        if status == 429:
            if code in PERMANENT_429 or kind in PERMANENT_429:
                raise FatalAPIError(f"{where}: quota exhausted: {message}", status=status, code=code or kind)
            raise RetryableAPIError(
                f"rate limited (429): {message}",
                status=status,
                retry_after=retry_hint(headers, message, kind),
                rate_limited=True,
            )
        if status in RETRYABLE_STATUS or status >= 500:
            raise RetryableAPIError(
                f"HTTP {status}: {message}", status=status, retry_after=retry_hint(headers, message)
            )
        if status in (401, 403):
            raise FatalAPIError(
                f"{where}: not authorised (HTTP {status}): {message}; check OPENAI_API_KEY", status=status
            )
        if status == 404:
            raise FatalAPIError(
                f"{where}: not found (HTTP 404): {message}; check --model and --base-url", status=status
            )
        if status in REJECTED_STATUS:
            label = f"HTTP {status}" + (f" {code}" if code else "")
            raise RequestRejected(f"refused by the API ({label}): {message}", status=status, code=code)
        raise FatalAPIError(f"{where}: request refused (HTTP {status}): {message}", status=status, code=code)

    def classify_body(self, messages: list[Message]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            self.facts.token_param: 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        if self.facts.logprobs_effort is not None:  # gpt-5.1+: logprobs only at reasoning_effort "none"
            body["reasoning_effort"] = self.facts.logprobs_effort
        return body

    def sample_body(self, messages: list[Message], n: int) -> dict[str, Any]:
        """One request for ``n`` sampled labels (``n`` only when above 1), at temperature 1, with no
        logprobs; a reasoning model answers at its cheapest effort with room for its hidden tokens."""
        facts = self.facts
        effort = facts.logprobs_effort or facts.sample_effort
        budget = SAMPLE_MAX_TOKENS + (SAMPLE_REASONING_ALLOWANCE if facts.reasons(effort) else 0)
        body: dict[str, Any] = {"model": self.model, "messages": messages, facts.token_param: budget}
        if facts.sends_temperature(effort):
            body["temperature"] = 1
        if effort is not None:
            body["reasoning_effort"] = effort
        if n > 1:
            body["n"] = n
        return body

    async def sample_labels(self, messages: list[Message], n: int) -> LabelScore:
        """``n`` answers in one request where the model takes ``n``; from a server that returns fewer
        (or refuses ``n``: config/models.yaml ``n: false``), the rest in further requests."""
        answers: list[str] = []
        usage = Usage()
        requests = 0
        while len(answers) < n:
            want = n - len(answers) if self.facts.n else 1
            body = await self._post(self.sample_body(messages, want))
            requests += 1
            answers += _sampled_answers(body)[:want]
            usage += _usage(body)
        p_a, scored, other = p_a_from_samples(answers)
        error = (
            None
            if p_a is not None
            else f"none of the {n} sampled answers was 'A' or 'B' (e.g. {answers[0][:40]!r})"
        )
        return LabelScore(
            p_a, error, usage, method="sampled", samples=scored, off_label=other, requests=requests
        )

    async def score_labels(self, messages: list[Message], labels: LabelSet = AB) -> LabelScore:
        return label_score(await self._post(self.classify_body(messages)), labels)

    def prepare_body(self, prompt: SlotPrompt) -> Callable[[str], bytes]:
        """``body(fill)``: the encoded classify request for ``prompt.messages(fill)``, exactly the bytes
        :meth:`score_labels` would send (the Batch API sends them too), the shared part encoded once."""
        text = _JSON.encode(self.classify_body(prompt.messages(_SLOT)))
        slot = encode_basestring_ascii(_SLOT)[1:-1]
        at = text.find(slot)
        if not prompt.has_slot or at < 0 or text.find(slot, at + 1) >= 0:
            constant = text.encode("ascii")
            return lambda fill: constant
        head, tail = text[:at].encode("ascii"), text[at + len(slot) :].encode("ascii")
        return lambda fill: head + encode_basestring_ascii(fill)[1:-1].encode("ascii") + tail

    def prepare_score(
        self, prompt: SlotPrompt, labels: LabelSet = AB
    ) -> Callable[[str], Awaitable[LabelScore]]:
        """``score(fill)`` ≡ ``score_labels(prompt.messages(fill), labels)``, with the body encoded once."""
        body = self.prepare_body(prompt)

        async def score(fill: str) -> LabelScore:
            return label_score(await self._post_bytes(body(fill)), labels)

        return score

    def batch_api(self) -> BatchAPI:
        """The same endpoint's Batch API (files and batch jobs), for the final pass at batch prices."""
        from asyncpipe.llm.batch.api import BatchAPI

        return BatchAPI(self.base_url, self._headers, timeout=self._timeout_seconds)

    async def generate(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        reasoning_effort: str | None = None,
    ) -> Generation:
        facts = self.facts
        # a reasoning model spends hidden tokens before it writes: budget them on top of the description
        budget = max_tokens + REASONING_ALLOWANCE if facts.reasons(reasoning_effort) else max_tokens
        body: dict[str, Any] = {"model": self.model, "messages": messages, facts.token_param: budget}
        if reasoning_effort is not None:
            body["reasoning_effort"] = reasoning_effort
        # reasoning models reject temperature and seed, except at the effort that enables logprobs
        if facts.sends_temperature(reasoning_effort):
            body["temperature"] = temperature
            if seed is not None:
                body["seed"] = seed
        answer = await self._post(body)
        choices = answer.get("choices")
        if not choices:
            raise RetryableAPIError("the answer has no choices")
        text = ((choices[0] or {}).get("message") or {}).get("content")
        if not isinstance(text, str) or not text.strip():
            raise RetryableAPIError("the describe answer is empty")
        return Generation(text=text.strip(), usage=_usage(answer))

    async def list_models(self) -> list[str]:
        session = self._get_session()
        try:
            async with session.get(self.base_url + "/models") as response:
                if response.status != 200:
                    raise UserError(
                        f"{self.base_url}/models answered HTTP {response.status}; pass --model NAME"
                    )
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UserError(
                f"cannot reach {self.base_url} ({type(exc).__name__}); is the server running?"
            ) from None
        return [str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict)]
