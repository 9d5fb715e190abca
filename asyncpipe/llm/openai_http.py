"""The OpenAI-compatible chat completions API over one shared aiohttp session.

Serves OpenAI, vLLM, llama.cpp's server, OpenRouter and Together with the same code. Classification is
millions of tiny requests, so the hot path is a bare aiohttp POST with minimal parsing (the openai SDK
costs several milliseconds of client CPU per request). Each HTTP outcome is mapped to an error by what
the caller can do about it; see :mod:`asyncpipe.errors`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from typing import Any

import aiohttp

from asyncpipe.config import ModelFacts
from asyncpipe.errors import FatalAPIError, RetryableAPIError, UserError
from asyncpipe.llm.base import Generation, LabelScore, Message, Usage
from asyncpipe.llm.labels import p_a_from_top_logprobs

OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 425, 429}
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


def retry_hint(headers: Any, message: str = "") -> float | None:
    """Seconds to wait, from the headers a 429/503 carries, else from the error message."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    if (after := headers.get("retry-after")) is not None:
        try:
            return float(after)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(after) if after else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    resets = [parse_duration(headers[h]) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens") if headers.get(h)]
    resets = [r for r in resets if r is not None]
    if resets:
        return max(resets)
    if match := _TRY_AGAIN.search(message):
        value = float(match.group(1))
        return value / 1000.0 if match.group(2).lower() == "ms" else value
    return None


def _error_fields(raw: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an OpenAI-style error body, tolerating anything else."""
    try:
        body = json.loads(raw)
        error = body.get("error", body) if isinstance(body, dict) else {}
        if isinstance(error, str):
            return error, None, None
        return str(error.get("message") or raw[:200].decode("utf-8", "replace")), error.get("type"), error.get("code")
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace").strip() or "(empty body)", None, None


def _usage(body: dict) -> Usage:
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
    )


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

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self._get_session()
        try:
            async with session.post(self._url, data=json.dumps(body)) as response:
                raw = await response.read()
                status = response.status
                headers = response.headers
        except asyncio.TimeoutError:
            raise RetryableAPIError(f"no answer within {self._timeout_seconds:g}s (--timeout)") from None
        except aiohttp.ClientError as exc:
            raise RetryableAPIError(f"connection error: {type(exc).__name__}: {exc}".strip()) from None
        if status == 200:
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise RetryableAPIError(f"invalid JSON in a 200 answer ({len(raw)} bytes)", status=status) from None
            if not isinstance(parsed, dict):
                raise RetryableAPIError("the answer is not a JSON object", status=status)
            return parsed
        message, kind, code = _error_fields(raw)
        where = f"{self.base_url} ({self.model})"
        if status == 429:
            if code in PERMANENT_429 or kind in PERMANENT_429:
                raise FatalAPIError(f"{where}: quota exhausted: {message}", status=status, code=code or kind)
            raise RetryableAPIError(
                f"rate limited (429): {message}", status=status, retry_after=retry_hint(headers, message), rate_limited=True
            )
        if status in RETRYABLE_STATUS or status >= 500:
            raise RetryableAPIError(f"HTTP {status}: {message}", status=status, retry_after=retry_hint(headers, message))
        if status in (401, 403):
            raise FatalAPIError(f"{where}: not authorised (HTTP {status}): {message}; check OPENAI_API_KEY", status=status)
        if status == 404:
            raise FatalAPIError(f"{where}: not found (HTTP 404): {message}; check --model and --base-url", status=status)
        raise FatalAPIError(f"{where}: request refused (HTTP {status}): {message}", status=status, code=code)

    def classify_body(self, messages: list[Message]) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            self.facts.token_param: 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
        }

    async def score_labels(self, messages: list[Message]) -> LabelScore:
        body = await self._post(self.classify_body(messages))
        choices = body.get("choices")
        if not choices:
            raise RetryableAPIError("the answer has no choices")
        logprobs = (choices[0] or {}).get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not content:
            raise RetryableAPIError("the answer has no logprobs (does this model or provider return them?)")
        first = content[0]
        pairs = [(t.get("token", ""), t.get("logprob")) for t in first.get("top_logprobs") or []]
        chosen = first.get("token")
        if chosen is not None and all(token != chosen for token, _ in pairs):
            pairs.append((chosen, first.get("logprob")))
        p_a, error = p_a_from_top_logprobs(pairs)
        return LabelScore(p_a=p_a, error=error, usage=_usage(body), method="logprobs")

    async def generate(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Generation:
        body: dict[str, Any] = {"model": self.model, "messages": messages, self.facts.token_param: max_tokens}
        if self.facts.logprobs:  # reasoning models reject temperature and seed along with logprobs
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
                    raise UserError(f"{self.base_url}/models answered HTTP {response.status}; pass --model NAME")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UserError(f"cannot reach {self.base_url} ({type(exc).__name__}); is the server running?") from None
        return [str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict)]
