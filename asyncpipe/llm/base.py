"""The one provider interface, and the records that cross it.

A provider turns chat messages into either a label probability (classification: one token, 'A' or 'B')
or free text (the describe step). It raises :class:`~asyncpipe.errors.RetryableAPIError` for passing
faults and :class:`~asyncpipe.errors.FatalAPIError` for refusals; retrying, rate limiting and caching are
layered on top by :mod:`asyncpipe.llm.client`, never inside a provider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from asyncpipe.llm.labels import AB, LabelSet

if TYPE_CHECKING:
    from asyncpipe.llm.batch.api import BatchAPI

#: stands for the row while the shared part of a classify request is encoded once (request body, cache
#: key): private-use characters, which JSON leaves as they are and no prompt is expected to hold
SLOT = "\ue000asyncpipe-slot\ue001"


class Message(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class LabelScore:
    """The classifier's answer for one row.

    ``p_a`` is the softmax over the two labels' masses — p('A') for A/B, p('yes') for yes/no (the first
    label of the :class:`~asyncpipe.llm.labels.LabelSet` asked for) — or ``None`` when the row is unscored, in which
    case ``error`` says why (for example that neither label was among the returned tokens).
    ``method`` says how the probability was obtained: ``"logprobs"`` (top-k logprobs from an API),
    ``"logits"`` (exact logits over the whole vocabulary, embedded model) or ``"sampled"`` (the share of
    'A' among sampled answers, see :func:`~asyncpipe.llm.labels.p_a_from_samples`).
    For a sampled score, ``samples`` counts the answers that were a label and ``off_label`` those that
    were not (unscored samples). ``suspect`` says why logprobs look fake (all 0, or −9999 on every
    alternative); such an answer is never cached. ``requests`` is how many HTTP requests it took.
    ``label_mass`` is the probability both labels hold together (None when unknown: an answer cached
    before it was recorded, or a sampled one); the pipeline leaves a row with too little of it unscored.
    """

    p_a: float | None
    error: str | None
    usage: Usage = Usage()
    method: str = "logprobs"
    from_cache: bool = False
    label_mass: float | None = None
    samples: int = 0
    off_label: int = 0
    suspect: str | None = None
    requests: int = 1


@dataclass(frozen=True)
class ClassifyMode:
    """How the classifier's p(A) is obtained: from label logprobs (one request, one token, exact up to the
    top-k list) or by sampling the label ``samples`` times at temperature 1 (coarse: N + 1 possible
    values). Written ``logprobs`` or ``sample:N`` on the command line, in run.json and classify.yaml."""

    kind: str = "logprobs"  # "logprobs" | "sample"
    samples: int = 1

    @classmethod
    def parse(cls, text: str) -> ClassifyMode:
        text = text.strip()
        if text == "logprobs":
            return cls()
        kind, _, count = text.partition(":")
        if kind == "sample" and count.isdigit() and 2 <= int(count) <= 128:
            return cls("sample", int(count))
        raise ValueError(f"expected 'logprobs' or 'sample:N' with N from 2 to 128, got '{text}'")

    @property
    def sampled(self) -> bool:
        return self.kind == "sample"

    def __str__(self) -> str:
        return f"sample:{self.samples}" if self.sampled else "logprobs"


#: the default mode: p(A) from label logprobs
LOGPROBS = ClassifyMode()


@dataclass(frozen=True)
class Generation:
    """Free text from the describe step."""

    text: str
    usage: Usage = Usage()
    from_cache: bool = False


@dataclass(frozen=True)
class SlotPrompt:
    """Chat messages that differ from request to request only in one slot of the last message.

    Classification sends the same instructions and description with a different row each time; knowing
    which part varies lets the layers below encode the shared part once (request body, cache key)
    instead of once per row. ``messages(fill)`` equals replacing the first ``placeholder`` in the last
    message by ``fill``; without a placeholder every fill gives the same messages.
    """

    head: tuple[Message, ...]
    role: str
    before: str
    after: str
    has_slot: bool

    @classmethod
    def split(cls, messages: list[Message], placeholder: str) -> SlotPrompt:
        *head, last = messages
        content = last["content"]
        at = content.find(placeholder)
        if at < 0:
            return cls(tuple(head), last["role"], content, "", False)
        return cls(tuple(head), last["role"], content[:at], content[at + len(placeholder) :], True)

    def messages(self, fill: str) -> list[Message]:
        content = self.before + fill + self.after if self.has_slot else self.before
        return [*self.head, {"role": self.role, "content": content}]


@dataclass(frozen=True)
class Sampling:
    """How a describe request is answered: at most ``max_tokens`` of text, at ``temperature`` with
    ``seed``, and with ``reasoning_effort`` for a model that takes one (None: the model's own default)."""

    max_tokens: int
    temperature: float
    seed: int | None = None
    reasoning_effort: str | None = None

    def key_params(self) -> dict[str, Any]:
        """What the response cache keys a describe answer by (no effort when none is set, so caches
        written before efforts existed stay valid)."""
        params: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }
        if self.reasoning_effort is not None:
            params["reasoning_effort"] = self.reasoning_effort
        return params


class Provider:
    """What every model backend implements (OpenAI-compatible HTTP, embedded llama.cpp), in one place.

    A provider sets ``model``, ``cache_identity`` and ``max_concurrency`` and implements
    ``score_labels`` and ``generate``. Everything else is optional, with the default here: a provider
    overrides what it can do better."""

    #: model name as recorded in outputs
    model: str
    #: stable identity for cache keys: where requests go and to which model (never the API key)
    cache_identity: str
    #: how many requests this backend can usefully run at once (1 for an in-process model)
    max_concurrency: int
    #: the model's context window in tokens, when known: the describe prompt is then cut to fit it
    context_tokens: int | None = None
    #: requests per minute the server says this key may send, when it says: the limiter paces itself to it
    server_rpm: float | None = None

    async def score_labels(self, messages: list[Message], labels: LabelSet = AB) -> LabelScore:
        """Classify: ask for one token and return p(first label), e.g. p('A') over {'A', 'B'}."""
        raise NotImplementedError

    def prepare_score(
        self, prompt: SlotPrompt, labels: LabelSet = AB
    ) -> Callable[[str], Awaitable[LabelScore]] | None:
        """For speed: ``score(fill)`` that behaves exactly like ``score_labels(prompt.messages(fill),
        labels)``, with the part shared by every row prepared once. None (the default): each row goes
        through ``score_labels``."""
        return None

    async def sample_labels(self, messages: list[Message], n: int) -> LabelScore:
        """Classify by sampling: ask for the label ``n`` times at temperature 1 and return the smoothed
        share of 'A' (method ``"sampled"``)."""
        raise NotImplementedError

    def prepare_body(self, prompt: SlotPrompt) -> Callable[[str], bytes]:
        """For ``--batch-api``: ``body(fill)``, the exact bytes ``score_labels(prompt.messages(fill))``
        would POST. Only an HTTP provider has them (the embedded model is refused before a run starts)."""
        raise NotImplementedError(f"{type(self).__name__} sends no HTTP requests")

    def batch_api(self) -> BatchAPI:
        """For ``--batch-api``: the endpoint's Batch API (files and batch jobs)."""
        raise NotImplementedError(f"{type(self).__name__} has no Batch API")

    async def generate(self, messages: list[Message], sampling: Sampling) -> Generation:
        """Describe: return free text, answered as ``sampling`` says."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the provider holds (an HTTP session, a loaded model)."""
