"""A fake OpenAI-compatible server for tests and benchmarks, speaking the real wire format.

``POST /v1/chat/completions`` answers classification requests (one token, logprobs on) with
``choices[0].logprobs.content[0].top_logprobs`` and describe requests with a text; ``GET /v1/models``
lists the model. Property requests are told apart by their prompts: a request to list properties gets
``property_reply`` (when set; otherwise the ordinary description, which lists none), and a yes/no check
(the question in a ``<question>`` fence) is answered 'yes' when the row contains the word the question
quotes ('zephyr'), else 'no', with the mass spread over "yes", " Yes", "no" and " No". Errors have the OpenAI shape ``{"error": {"message", "type", "code"}}`` and the real
headers (``retry-after``, ``retry-after-ms``, ``x-ratelimit-*``). Every request body is recorded, so
tests can check what the client really sent. Faults can be injected per request.

``serial=SECONDS`` makes it a queueing server, as llama.cpp's is (one global lock): chat requests are
answered one at a time, each after ``SECONDS`` of service, the others wait their turn without a 429. A
request whose client gave up while it waited is still served when its turn comes, as a real server
does; ``served`` counts the answers written, ``count`` every request received.

The Batch API (:class:`~tests.fake_batch.FakeBatches`): ``POST /v1/files`` (multipart, ``purpose=batch``),
``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` and ``/v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``. Each ``GET`` of a batch moves it one status on
(``validating → in_progress → finalizing → completed``); output lines come back shuffled; options put
lines in the error file, refuse lines, expire a batch with part of it done, fail its validation, or
hold it ``in_progress`` (a test then kills the client while it polls).

Run it by hand: ``python -m tests.fake_openai --port 8900``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fake_batch import FakeBatches, run_batch_file

ROW = re.compile(r"<example>\n(.*)\n</example>", re.DOTALL)
#: a description written by :func:`scripted_describer` carries its strength, read by :func:`graded_scorer`
STRENGTH = re.compile(r"\[strength (-?[0-9.]+)\]")
#: the step numbers of earlier descriptions shown in a describe prompt's history
HISTORY_STEP = re.compile(r'<description step="(\d+)">')
#: OpenAI caches a prompt prefix from 1,024 tokens on, in steps of 128 tokens
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
QUESTION = re.compile(r"<question>\n(.*)\n</question>", re.DOTALL)
QUOTED = re.compile(r"'([^']+)'")
#: words of the default template that asks for a list of properties
PROPERTY_LIST_MARKER = "distinct, atomic properties"
FAULTS = (
    "rate_limit",
    "rate_limit_retry_after",
    "quota",
    "500",
    "502",
    "503",
    "timeout",
    "reset",
    "truncated",
    "null_logprobs",
    "no_labels",
    "empty_choices",
    "refused",
)


def row_of(body: dict) -> str:
    match = ROW.search(body["messages"][-1]["content"])
    return match.group(1) if match else ""


def is_classify(body: dict) -> bool:
    """A classify request: one token with logprobs, or a sampled label (no logprobs, a row fenced as
    ``<example>`` with no attributes, which describe prompts never use)."""
    return (
        bool(body.get("logprobs")) and (body.get("max_tokens") == 1 or body.get("max_completion_tokens") == 1)
    ) or is_sample(body)


def is_sample(body: dict) -> bool:
    return not body.get("logprobs") and bool(ROW.search(body["messages"][-1]["content"]))


@dataclass(frozen=True)
class ReasoningRule:
    """How an OpenAI reasoning model checks parameters (the shapes of its 400 answers are OpenAI's):
    ``efforts`` it accepts, the one at which logprobs and temperature are allowed (None: never), and the
    effort it uses when the request names none."""

    efforts: tuple[str, ...]
    logprobs_effort: str | None
    default_effort: str


#: gpt-5.1 returns logprobs (and takes temperature) only at reasoning_effort "none", its default;
#: gpt-5 never does.
REASONING_MODELS = {
    "gpt-5.1": ReasoningRule(("none", "low", "medium", "high"), "none", "none"),
    "gpt-5": ReasoningRule(("minimal", "low", "medium", "high"), None, "medium"),
}


def is_property_check(body: dict) -> bool:
    return is_classify(body) and "<question>" in body["messages"][0]["content"]


def is_property_list(body: dict) -> bool:
    return not is_classify(body) and PROPERTY_LIST_MARKER in body["messages"][-1]["content"]


def planted_word_checker(
    p_present: float = 0.9, p_absent: float = 0.1
) -> Callable[[dict], list[tuple[str, float]]]:
    """Top logprobs for a property check: p(yes) = ``p_present`` when the row contains the word the
    question quotes (case ignored), else ``p_absent``; a question that quotes nothing gets 0.5."""

    def check(body: dict) -> list[tuple[str, float]]:
        match = QUESTION.search(body["messages"][0]["content"])
        word = QUOTED.search(match.group(1)) if match else None
        if word is None:
            return yes_no_logprobs(0.5)
        return yes_no_logprobs(p_present if word.group(1).lower() in row_of(body).lower() else p_absent)

    return check


def yes_no_logprobs(p_yes: float) -> list[tuple[str, float]]:
    """Logprobs whose yes/no masses give exactly ``p_yes``, each split over two spellings (1% elsewhere)."""
    mass = 0.99
    yes, no = mass * p_yes, mass * (1 - p_yes)
    out = [
        ("yes", math.log(yes * 0.6)),
        (" Yes", math.log(yes * 0.4)),
        ("no", math.log(no * 0.7)),
        (" No", math.log(no * 0.3)),
        ("Maybe", math.log(0.01)),
    ]
    return sorted(out, key=lambda t: -t[1])


def keyword_scorer(
    word_a: str = "apple", word_b: str = "banana"
) -> Callable[[dict], list[tuple[str, float]]]:
    """Top logprobs that favour 'A' when the row mentions ``word_a`` and 'B' for ``word_b``; the mass
    is split between "A" and " A" to exercise the summing of both token forms."""

    def score(body: dict) -> list[tuple[str, float]]:
        row = row_of(body).lower()
        p_a = 0.9 if word_a in row else 0.15 if word_b in row else 0.5
        return top_logprobs_for(p_a)

    return score


def _unit_normal(*parts: str) -> float:
    """A standard normal draw fixed by ``parts`` (sha256, not Python's salted hash: the same in every run)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    u2 = int.from_bytes(digest[8:16], "big") / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def graded_scorer(
    word_a: str = "apple", word_b: str = "banana", *, row_spread: float = 0.8, noise: float = 0.5
) -> Callable[[dict], list[tuple[str, float]]]:
    """Top logprobs whose quality follows the description: a description carrying ``[strength S]``
    (see :func:`scripted_describer`) gives a row of A the logit S + h + e towards 'A' (and a row of B
    the same towards 'B'), where h is the row's own ease (fixed per row, spread ``row_spread``) and e
    is noise fixed per row and description (spread ``noise``). Rows with neither word, and descriptions
    without a strength, get 0.5."""

    def score(body: dict) -> list[tuple[str, float]]:
        row = row_of(body)
        system = body["messages"][0]["content"]
        found = STRENGTH.search(system)
        lower = row.lower()
        sign = 1.0 if word_a in lower else -1.0 if word_b in lower else 0.0
        if found is None or not sign:
            return top_logprobs_for(0.5)
        logit = float(found.group(1)) + row_spread * _unit_normal(row) + noise * _unit_normal(row, system)
        return top_logprobs_for(1.0 / (1.0 + math.exp(-sign * logit)))

    return score


def leaning_scorer(
    word_a: str = "apple",
    word_b: str = "banana",
    *,
    p_a_rows: float = 0.95,
    p_b_rows: float = 0.85,
    low_mass_word: str | None = None,
) -> Callable[[dict], list[tuple[str, float]]]:
    """A model that ranks every pair right but leans heavily to 'A': rows mentioning ``word_a`` get
    p(A) = ``p_a_rows``, rows mentioning ``word_b`` the lower but still A-leaning ``p_b_rows``, so raw
    accuracy sits at 50 % while every pair is ordered correctly. A row mentioning ``low_mass_word`` is
    answered mostly with "**" (the labels hold 10 % of the answer, split evenly)."""

    def score(body: dict) -> list[tuple[str, float]]:
        row = row_of(body).lower()
        if low_mass_word is not None and low_mass_word in row:
            return top_logprobs_for(0.5, mass=0.1, other="**")
        return top_logprobs_for(p_a_rows if word_a in row else p_b_rows if word_b in row else 0.9)

    return score


def describe_step(body: dict) -> int:
    """Which describe step a request is for, read from the prompt itself (1 + the latest earlier step
    in its history), so that it holds however many requests the cache answered."""
    steps = [int(n) for n in HISTORY_STEP.findall(body["messages"][-1]["content"])]
    return 1 + max(steps, default=0)


def scripted_describer(strengths: list[float], *, words: int = 220) -> Callable[[dict, int], str]:
    """Descriptions whose quality follows a script: step n's carries ``[strength strengths[n-1]]``
    (the last one repeats), padded to about ``words`` words like a real description."""

    def describe(body: dict, _number: int) -> str:
        step = describe_step(body)
        strength = strengths[min(step, len(strengths)) - 1]
        filler = " ".join(f"feature{(step * 31 + i) % 97}" for i in range(words))
        return (
            f"Description for step {step} [strength {strength:.3f}]: rows of dataset A talk about apples; "
            f"rows of dataset B talk about bananas. Further cues: {filler}."
        )

    return describe


def top_logprobs_for(
    p_a: float, split: float = 0.7, *, mass: float = 0.99, other: str = "Sure"
) -> list[tuple[str, float]]:
    """Logprobs for which the label masses give exactly ``p_a``, the labels holding ``mass`` together
    and the token ``other`` the rest."""
    a, b = mass * p_a, mass * (1 - p_a)
    out = [
        ("A", math.log(a * split)),
        (" A", math.log(a * (1 - split))),
        ("B", math.log(b)),
        (other, math.log(1.0 - mass)),
    ]
    return sorted(out, key=lambda t: -t[1])


@dataclass
class FakeOpenAI:
    scorer: Callable[[dict], list[tuple[str, float]]] = field(default_factory=keyword_scorer)
    describer: Callable[[dict, int], str] | None = None
    #: the answer to a request for a list of properties (None: the ordinary description)
    property_reply: str | None = None
    property_checker: Callable[[dict], list[tuple[str, float]]] = field(default_factory=planted_word_checker)
    #: fault(request_number, body) -> a name from FAULTS, or None
    fault: Callable[[int, dict], str | None] | None = None
    latency: Callable[[], float] | float = 0.0
    #: extra seconds before answering a describe request (to interrupt a run in a describe step)
    describe_latency: float = 0.0
    model: str = "fake-model"
    #: enforce a requests-per-minute cap with 429 + retry-after (fixed one-second windows)
    rpm: float | None = None
    timeout_sleep: float = 30.0
    #: answer chat requests one at a time, each after this many seconds of service (a queueing server)
    serial: float | None = None
    served: int = 0
    record: bool = True
    requests: list[dict] = field(default_factory=list)
    count: int = 0
    answered_429: int = 0
    #: every Authorization header seen
    auth: set = field(default_factory=set)
    #: answer like OpenAI's prompt cache: a prefix seen before, of 1,024 tokens or more, is cached
    prefix_cache: bool = True
    _prefixes: set = field(default_factory=set)
    #: models that never return logprobs (``null``, as OpenRouter does for providers without them)
    no_logprobs_models: set = field(default_factory=set)
    #: answer ``n`` > 1 with one choice only (a server that ignores ``n``)
    ignore_n: bool = False
    #: placeholder logprobs: "zero" (every token 0) or "minus9999" (every alternative −9999), as DeepSeek
    fake_logprobs: str | None = None
    #: a sampled answer that is not a label, for rows containing this word (one answer in four)
    off_label_word: str | None = None
    _samples_given: dict = field(default_factory=dict)
    _window: tuple[int, int] = (0, 0)
    _lock: asyncio.Lock | None = None
    batch: FakeBatches = field(default_factory=lambda: FakeBatches())  # the Batch API (tests/fake_batch.py)

    # -- behaviour ----------------------------------------------------------------------------------
    def describe_text(self, body: dict, number: int) -> str:
        if self.describer is not None:
            return self.describer(body, number)
        return f"Description {number}: rows of dataset A talk about apples; rows of dataset B talk about bananas."

    def sampled_body(self, body: dict) -> dict:
        """``n`` sampled labels for the row (one if ``ignore_n``), deterministic: of every N answers
        for a row, round(p(A)·N) are 'A', where p(A) is the scorer's."""
        tops = self.scorer(body)
        mass_a = sum(math.exp(lp) for t, lp in tops if t.strip() == "A")
        mass_b = sum(math.exp(lp) for t, lp in tops if t.strip() == "B")
        p_a = mass_a / (mass_a + mass_b) if mass_a + mass_b else 0.5
        n = 1 if self.ignore_n else int(body.get("n") or 1)
        row = row_of(body)
        answers = []
        for _ in range(n):
            given = self._samples_given.get(row, 0)
            self._samples_given[row] = given + 1
            slot = given % 8
            if self.off_label_word and self.off_label_word in row.lower() and slot % 4 == 3:
                answers.append("Sure, here is my answer")
            else:
                answers.append("A" if slot < round(p_a * 8) else "B")
        answer = self._completion(
            body, answers[0], None, sum(len(m["content"]) for m in body["messages"]) // 4
        )
        answer["choices"] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i, text in enumerate(answers)
        ]
        answer["usage"]["completion_tokens"] = n
        return answer

    def reasoning_refusal(self, body: dict) -> web.Response | None:
        """OpenAI's 400 for a parameter the reasoning model refuses, else None."""
        rule = REASONING_MODELS.get(body.get("model", ""))
        if rule is None:
            return None
        if "max_tokens" in body:
            return self.error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                "invalid_request_error",
                "unsupported_parameter",
            )
        effort = body.get("reasoning_effort", rule.default_effort)
        if effort not in rule.efforts:
            return self.error(
                400,
                f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. "
                f"Supported values are: {', '.join(repr(e) for e in rule.efforts)}.",
                "invalid_request_error",
                "unsupported_value",
            )
        if effort != rule.logprobs_effort:
            for name in ("logprobs", "top_logprobs"):
                if body.get(name):
                    return self.error(
                        400,
                        f"Unsupported parameter: '{name}' is not supported with this model.",
                        "invalid_request_error",
                        "unsupported_parameter",
                    )
            if body.get("temperature") not in (None, 1):
                return self.error(
                    400,
                    f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
                    "Only the default (1) value is supported.",
                    "invalid_request_error",
                    "unsupported_value",
                )
        return None

    def label_answer(self, body: dict) -> dict:
        """The answer to a one-token request with logprobs: a property check's yes/no, else 'A'/'B'."""
        tops = self.property_checker(body) if is_property_check(body) else self.scorer(body)
        return self.classify_body(body, tops)

    def classify_body(self, body: dict, tops: list[tuple[str, float]]) -> dict:
        if self.fake_logprobs == "zero":
            tops = [(t, 0.0) for t, _ in tops]
        elif self.fake_logprobs == "minus9999":
            tops = [tops[0]] + [(t, -9999.0) for t, _ in tops[1:]]
        token, logprob = tops[0]
        entry = {
            "token": token,
            "logprob": logprob,
            "bytes": list(token.encode()),
            "top_logprobs": [
                {"token": t, "logprob": lp, "bytes": list(t.encode())}
                for t, lp in tops[: body.get("top_logprobs") or 0]
            ],
        }
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
        return self._completion(body, token, {"content": [entry], "refusal": None}, prompt_tokens)

    def cached_tokens(self, body: dict) -> int:
        """The prompt tokens OpenAI would take from its prefix cache (four characters a token): the
        shared part of a classify prompt (everything before the row) or a describe prompt's system
        message, once it has been seen, when it is at least 1,024 tokens long, in steps of 128."""
        if not self.prefix_cache:
            return 0
        messages = body["messages"]
        if is_classify(body):
            last = messages[-1]["content"]
            shared = [m["content"] for m in messages[:-1]] + [last[: last.find("<example>")]]
        else:
            shared = [messages[0]["content"]]
        tokens = sum(len(part) for part in shared) // 4
        if tokens < CACHE_MIN_TOKENS:
            return 0
        key = hashlib.sha256("\x00".join([body.get("model", ""), *shared]).encode()).hexdigest()
        if key not in self._prefixes:
            self._prefixes.add(key)
            return 0
        return tokens // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS

    def _completion(self, body: dict, content: str, logprobs: Any, prompt_tokens: int) -> dict:
        return {
            "id": f"chatcmpl-fake{self.count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": "length" if logprobs else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": max(1, len(content) // 4),
                "total_tokens": prompt_tokens + max(1, len(content) // 4),
                "prompt_tokens_details": {"cached_tokens": min(prompt_tokens, self.cached_tokens(body))},
            },
        }

    @staticmethod
    def error(
        status: int, message: str, kind: str | None, code: str | None, headers: dict | None = None
    ) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": code}},
            status=status,
            headers=headers,
        )

    # -- handlers -----------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.count += 1
        self.auth.add(request.headers.get("Authorization", ""))
        number = self.count
        if self.record:
            self.requests.append(body)
        delay = self.latency() if callable(self.latency) else self.latency
        if delay:
            await asyncio.sleep(delay)
        if self.serial is not None:
            if self._lock is None:
                self._lock = asyncio.Lock()  # made here, on the server's own event loop
            async with self._lock:
                await asyncio.sleep(self.serial)
                self.served += 1
        if self.rpm is not None:
            second = int(time.monotonic())
            start, used = self._window
            if second != start:
                start, used = second, 0
            if used >= self.rpm / 60.0:
                self.answered_429 += 1
                return self.error(
                    429,
                    "Rate limit reached for requests. Please try again in 1s.",
                    "requests",
                    "rate_limit_exceeded",
                    {"retry-after": "1", "x-ratelimit-reset-requests": "1s"},
                )
            self._window = (start, used + 1)
        if self.describe_latency and not is_classify(body):
            await asyncio.sleep(self.describe_latency)
        fault = self.fault(number, body) if self.fault else None
        if fault:
            return await self.inject(fault, request, body)
        if is_property_check(body):
            return web.json_response(self.label_answer(body))
        if (refusal := self.reasoning_refusal(body)) is not None:
            return refusal
        if is_sample(body):
            return web.json_response(self.sampled_body(body))
        if is_classify(body) and body.get("model") in self.no_logprobs_models:
            return web.json_response(self._completion(body, "A", None, 10))
        if is_classify(body):
            return web.json_response(self.classify_body(body, self.scorer(body)))
        if is_property_list(body) and self.property_reply is not None:
            return web.json_response(self._completion(body, self.property_reply, None, 100))
        describe_number = sum(1 for b in self.requests if not is_classify(b)) if self.record else number
        text = self.describe_text(body, describe_number)
        return web.json_response(
            self._completion(body, text, None, sum(len(m["content"]) for m in body["messages"]) // 4)
        )

    async def inject(self, fault: str, request: web.Request, body: dict) -> web.StreamResponse:
        if fault == "rate_limit":
            self.answered_429 += 1
            return self.error(
                429,
                "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 500, Used 500, "
                "Requested 1. Please try again in 20ms.",
                "requests",
                "rate_limit_exceeded",
                {
                    "retry-after-ms": "20",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "20ms",
                },
            )
        if fault == "rate_limit_retry_after":
            # Azure OpenAI's 429: the wait is in ``retry-after`` alone (its message has no "try again in")
            self.answered_429 += 1
            return self.error(
                429,
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
                "have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after "
                "7 seconds.",
                None,
                "429",
                {"retry-after": "7"},
            )
        if fault == "refused":  # OpenAI's content-policy refusal of one prompt
            return self.error(
                400,
                "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
                "invalid_request_error",
                "invalid_prompt",
            )
        if fault == "quota":
            self.answered_429 += 1
            return self.error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if fault in ("500", "502", "503"):
            return self.error(
                int(fault), "The server had an error while processing your request.", "server_error", None
            )
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep)
            return web.json_response({})
        if fault == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if fault == "truncated":
            full = json.dumps(self.classify_body(body, self.scorer(body)))
            return web.Response(text=full[: len(full) // 2], content_type="application/json")
        if fault == "null_logprobs":
            return web.json_response(self._completion(body, "A", None, 10))
        if fault == "no_labels":
            return web.json_response(self.classify_body(body, [("Sure", -0.1), ("I", -2.5), ("The", -3.0)]))
        if fault == "empty_choices":
            answer = self._completion(body, "A", None, 10)
            answer["choices"] = []
            return web.json_response(answer)
        raise ValueError(f"unknown fault {fault}")

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "fake"}]}
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.batch.attach(self, app)
        return app

    def classify_requests(self) -> list[dict]:
        """A/B classification requests (property checks not included)."""
        return [b for b in self.requests if is_classify(b) and not is_property_check(b)]

    def describe_requests(self) -> list[dict]:
        """Describe requests of the loop (the request for a list of properties not included)."""
        return [b for b in self.requests if not is_classify(b) and not is_property_list(b)]

    def property_list_requests(self) -> list[dict]:
        return [b for b in self.requests if is_property_list(b)]

    def property_check_requests(self) -> list[dict]:
        return [b for b in self.requests if is_property_check(b)]


class ServerThread:
    """Serve a FakeOpenAI on 127.0.0.1 from a background thread (so a CLI subprocess can reach it)."""

    def __init__(self, fake: FakeOpenAI, port: int = 0) -> None:
        self.fake = fake
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.fake.app(), access_log=None, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=4096)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        # closed here, in its own thread: a loop left for the garbage collector closes its selector
        # from whatever thread collects it ("Invalid file descriptor: -1" in an unrelated test)
        self._loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--serial", type=float, help="answer one request at a time, each taking SECONDS")
    parser.add_argument("--word-a", default="apple", help="rows containing this lean towards 'A'")
    parser.add_argument("--word-b", default="banana", help="rows containing this lean towards 'B'")
    parser.add_argument(
        "--strengths",
        help="comma-separated description strengths by step (e.g. 0.3,0.9,1.4,1.6,1.5): scripted "
        "descriptions whose quality follows them, scored by graded_scorer",
    )
    parser.add_argument(
        "--run-batch",
        nargs=2,
        metavar=("REQUESTS", "OUTPUT"),
        help="answer a request file offline, as 'vllm run-batch -i REQUESTS -o OUTPUT' would, and exit",
    )
    parser.add_argument(
        "--list-properties",
        action="store_true",
        help="asked for properties, list one per word (and a third that tells nothing apart)",
    )
    args = parser.parse_args()
    word_a, word_b = args.word_a.lower(), args.word_b.lower()
    strengths = [float(x) for x in args.strengths.split(",")] if args.strengths else None
    reply = (
        f"- Does the answer contain '{args.word_a}'? [A]\n- Does the answer contain '{args.word_b}'? [B]\n"
        "- Does the answer contain 'the'? [A]\n"
    )
    fake = FakeOpenAI(
        property_reply=reply if args.list_properties else None,
        scorer=graded_scorer(word_a, word_b) if strengths else keyword_scorer(word_a, word_b),
        describer=scripted_describer(strengths) if strengths else None,
        latency=args.latency,
        rpm=args.rpm,
        serial=args.serial,
        record=False,
    )
    if args.run_batch:
        run_batch_file(fake, *args.run_batch)
        return
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
