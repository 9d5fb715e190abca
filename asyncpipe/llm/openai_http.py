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

import json
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii  # what json.dumps (ensure_ascii) escapes strings with
from typing import TYPE_CHECKING, Any

import aiohttp

from asyncpipe.errors import RetryableAPIError, UserError
from asyncpipe.llm.base import SLOT, Generation, LabelScore, Message, Provider, Sampling, SlotPrompt, Usage
from asyncpipe.llm.http_errors import error_for, parse_rpm
from asyncpipe.llm.labels import AB, LabelSet, implausible_logprobs, p_a_from_samples, read_top_logprobs
from asyncpipe.model_facts import ModelFacts

if TYPE_CHECKING:
    from asyncpipe.llm.batch.api import BatchAPI

OPENAI_BASE_URL = "https://api.openai.com/v1"
# hidden reasoning tokens allowed to a reasoning model's describe answer, on top of --describe-max-tokens
REASONING_ALLOWANCE = 16_000
# the same for one sampled label from a reasoning model at its cheapest effort (hidden tokens, then 'A')
SAMPLE_REASONING_ALLOWANCE = 2_048
# tokens a sampled answer may take: 'A' is one token, a little room shows what else a model says
SAMPLE_MAX_TOKENS = 4
_JSON = json.JSONEncoder(separators=(",", ":"))


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


class OpenAIHTTPProvider(Provider):
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
        describe_timeout: float | None = None,
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
        #: a describe request writes up to describe_max_tokens: it gets its own, longer bound
        self._describe_timeout = describe_timeout or timeout
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

    async def _exchange(self, data: bytes, *, describe: bool = False) -> tuple[int, Any, bytes]:
        """POST one encoded body; (status, headers, raw answer). The only method that touches the network.
        ``describe``: a describe request, bounded by its own timeout (--describe-timeout)."""
        session = (
            self._session if self._session is not None and not self._session.closed else self._get_session()
        )
        seconds = self._describe_timeout if describe else self._timeout_seconds
        timeout = aiohttp.ClientTimeout(total=seconds) if describe else self._timeout
        try:
            async with session.post(self._url, data=data, timeout=timeout) as response:
                return response.status, response.headers, await response.read()
        except TimeoutError:
            flag = "--describe-timeout" if describe else "--timeout"
            raise RetryableAPIError(f"no answer within {seconds:g}s ({flag})", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise RetryableAPIError(f"connection error: {type(exc).__name__}: {exc}".strip()) from None

    def _note_limits(self, headers: Any) -> None:
        value = headers.get("x-ratelimit-limit-requests")
        if value is not None and value != self._rpm_header:
            self._rpm_header = value
            self.server_rpm = parse_rpm(value)

    async def _post(self, body: dict[str, Any], *, describe: bool = False) -> dict[str, Any]:
        return await self._post_bytes(_JSON.encode(body).encode("ascii"), describe=describe)

    async def _post_bytes(self, data: bytes, *, describe: bool = False) -> dict[str, Any]:
        status, headers, raw = await self._exchange(data, describe=describe)
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
        raise error_for(status, headers, raw, f"{self.base_url} ({self.model})")

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
        text = _JSON.encode(self.classify_body(prompt.messages(SLOT)))
        slot = encode_basestring_ascii(SLOT)[1:-1]
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

    async def generate(self, messages: list[Message], sampling: Sampling) -> Generation:
        facts, effort = self.facts, sampling.reasoning_effort
        # a reasoning model spends hidden tokens before it writes: budget them on top of the description
        budget = sampling.max_tokens + (REASONING_ALLOWANCE if facts.reasons(effort) else 0)
        body: dict[str, Any] = {"model": self.model, "messages": messages, facts.token_param: budget}
        if effort is not None:
            body["reasoning_effort"] = effort
        # reasoning models reject temperature and seed, except at the effort that enables logprobs
        if facts.sends_temperature(effort):
            body["temperature"] = sampling.temperature
            if sampling.seed is not None:
                body["seed"] = sampling.seed
        answer = await self._post(body, describe=True)
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
