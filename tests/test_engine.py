"""The classification engine: limiter, retry policy, retry hints, cache, the prepared hot path, and
classify_rows against the fake server over real HTTP.

No test sleeps to wait for timing and none asserts a duration: the limiter runs on a virtual clock
(its clock and sleep are parameters), the retry policy on a recording sleep.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from asyncpipe.config import Templates, load_settings
from asyncpipe.errors import FatalAPIError, RetryableAPIError
from asyncpipe.llm.base import SLOT, LabelScore, SlotPrompt, Usage
from asyncpipe.llm.cache import ResponseCache, SlotKey, cache_key
from asyncpipe.llm.client import CLASSIFY_PARAMS, LLMClient, score_json
from asyncpipe.llm.http_errors import parse_duration, retry_hint
from asyncpipe.llm.limiter import INFER_MIN_PER_SECOND, INFERRED_TTL, AdaptiveLimiter
from asyncpipe.llm.openai_http import OpenAIHTTPProvider
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats
from asyncpipe.model_facts import model_facts
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.prompts.build import ROW_PLACEHOLDER, classify_messages, fence_safe, with_row
from tests.fake_openai import FakeOpenAI, ServerThread, row_of

TRICKY_ROWS = [
    "plain row",
    'quotes " and \\ backslashes \\n not a newline',
    "real\nnewlines\tand tabs",
    "unicode: café, 日本語, emoji 😀, zero width \u200b",
    "a closing tag </example> inside, and {row} and {description}",
    "",
]


class VirtualClock:
    """Time that moves only when someone sleeps: sleeping until t moves the clock to t at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now = max(self.now, self.now + seconds)
        await anyio.lowlevel.checkpoint()


def classify_prompt(description: str = "Dataset A mentions apples; dataset B mentions bananas.") -> list:
    return classify_messages(Templates.from_settings(load_settings()["prompts"]), description)


# -- limiter -------------------------------------------------------------------------------------------
def test_limit_grows_while_used_in_slow_start():
    async def main() -> AdaptiveLimiter:
        clock = VirtualClock()
        limiter = AdaptiveLimiter(64, initial=4, clock=clock, sleep=clock.sleep)

        async def worker() -> None:
            for _ in range(20):
                await limiter.acquire()
                await anyio.lowlevel.checkpoint()
                limiter.release(ok=True)

        async with anyio.create_task_group() as group:
            for _ in range(40):  # far more demand than the limit
                group.start_soon(worker)
        return limiter

    limiter = anyio.run(main)
    assert limiter.slow_start
    assert limiter.peak_limit >= 40  # 800 successes under full use: from 4 to the demand and beyond
    assert limiter.limit <= 64
    assert limiter.in_flight == 0


def test_an_idle_limit_does_not_grow():
    async def main() -> AdaptiveLimiter:
        limiter = AdaptiveLimiter(64, initial=4)
        for _ in range(200):  # one caller at a time never uses more than one of the four slots
            await limiter.acquire()
            limiter.release(ok=True)
        return limiter

    limiter = anyio.run(main)
    assert limiter.limit == 4
    assert limiter.peak_limit == 4


def test_a_burst_of_429s_halves_the_limit_once():
    async def main() -> tuple[AdaptiveLimiter, VirtualClock]:
        clock = VirtualClock()
        limiter = AdaptiveLimiter(64, initial=32, cooldown=1.0, clock=clock, sleep=clock.sleep)
        for _ in range(20):
            await limiter.acquire()
        for _ in range(20):  # twenty 429s at the same moment: one burst
            limiter.release(ok=False, rate_limited=True)
        assert limiter.limit == 16
        assert limiter.decreases == 1
        assert not limiter.slow_start
        clock.now += 5.0  # a later burst halves again
        await limiter.acquire()
        limiter.release(ok=False, rate_limited=True)
        return limiter, clock

    limiter, _ = anyio.run(main)
    assert limiter.limit == 8
    assert limiter.decreases == 2
    assert limiter.in_flight == 0


def test_after_a_decrease_the_limit_grows_by_one_per_window():
    async def main() -> AdaptiveLimiter:
        clock = VirtualClock()
        limiter = AdaptiveLimiter(64, initial=8, clock=clock, sleep=clock.sleep)
        await limiter.acquire()
        limiter.release(ok=False, rate_limited=True)  # 8 → 4, congestion avoidance from now on

        async def worker() -> None:
            for _ in range(10):
                await limiter.acquire()
                await anyio.lowlevel.checkpoint()
                limiter.release(ok=True)

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(worker)
        return limiter

    limiter = anyio.run(main)
    # 80 successes starting at 4: about 4 → 5 → 6 → ... one step per window, far from slow start's 84
    assert 5 <= limiter.limit <= 14


def test_shared_pause_delays_every_caller():
    async def main() -> list[float]:
        clock = VirtualClock()
        limiter = AdaptiveLimiter(64, initial=64, clock=clock, sleep=clock.sleep)
        limiter.pause(5.0)
        started: list[float] = []

        async def caller() -> None:
            await limiter.acquire()
            started.append(clock())
            limiter.release()

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(caller)
        # once the pause is over, callers go straight through again
        await limiter.acquire()
        limiter.release()
        return started

    started = anyio.run(main)
    assert len(started) == 10
    assert min(started) >= 5.0


def test_a_pause_during_pacing_sleep_is_still_honoured():
    async def main() -> tuple[float, VirtualClock]:
        clock = VirtualClock()
        limiter = AdaptiveLimiter(8, initial=8, rpm=60, clock=clock, sleep=clock.sleep)  # one per second
        times = []
        for _ in range(4):
            await limiter.acquire()
            times.append(clock())
            limiter.release()
        limiter.pause(30.0)
        await limiter.acquire()
        return clock(), times

    after_pause, times = anyio.run(main)
    assert times == sorted(times) and times[-1] - times[0] >= 2.5  # paced at about one per second
    assert after_pause >= times[-1] + 30.0


def test_cancelled_waiter_does_not_leak_a_slot():
    async def main() -> AdaptiveLimiter:
        limiter = AdaptiveLimiter(1, initial=1)
        await limiter.acquire()
        with anyio.fail_after(10):  # a guard against a hang, not a timing assertion
            # 1) cancelled while queued
            async with anyio.create_task_group() as group:
                group.start_soon(limiter.acquire)
                await anyio.wait_all_tasks_blocked()
                group.cancel_scope.cancel()
            assert limiter.in_flight == 1
            # 2) cancelled just after the slot was handed over to it
            async with anyio.create_task_group() as group:
                scope = anyio.CancelScope()

                async def waiter() -> None:
                    with scope:
                        await limiter.acquire()
                        limiter.release()

                group.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                limiter.release()  # hands the only slot to the waiter ...
                scope.cancel()  # ... which is cancelled before it runs
            assert limiter.in_flight == 0
            await limiter.acquire()  # the slot is free: this does not wait
            limiter.release()
        return limiter

    limiter = anyio.run(main)
    assert limiter.in_flight == 0
    assert not limiter._waiters


def test_learned_rpm_paces_unless_one_was_given():
    limiter = AdaptiveLimiter(8)
    assert limiter.rpm is None
    limiter.learn_rpm(600.0)
    assert limiter.rpm == 600.0
    limiter.learn_rpm(None)  # a server that stops announcing keeps the last known limit
    assert limiter.rpm == 600.0
    given = AdaptiveLimiter(8, rpm=100)
    given.learn_rpm(600.0)
    assert given.rpm == 100


def _successes_then_a_429(
    limiter: AdaptiveLimiter, clock: VirtualClock, per_second: int, seconds: float
) -> None:
    async def main() -> None:
        for _ in range(int(per_second * seconds)):
            await limiter.acquire()
            clock.now += 1.0 / per_second
            limiter.release(ok=True)
        await limiter.acquire()
        limiter.release(ok=False, rate_limited=True)

    anyio.run(main)


def test_a_rate_is_inferred_from_a_burst_of_429s_and_later_dropped():
    clock = VirtualClock()
    limiter = AdaptiveLimiter(64, initial=8, clock=clock, sleep=clock.sleep)
    _successes_then_a_429(limiter, clock, per_second=500, seconds=3.0)
    assert limiter.rpm_source == "inferred"
    assert 0.85 * 30_000 <= (limiter.rpm or 0) <= 1.01 * 30_000  # what got through in the last second
    clock.now += INFERRED_TTL + 1  # long quiet: the inferred pace is dropped, to find a raised limit

    async def one_success() -> None:
        await limiter.acquire()
        limiter.release(ok=True)

    anyio.run(one_success)
    assert limiter.rpm is None and limiter.rpm_source is None


def test_no_rate_is_inferred_from_a_trickle():
    clock = VirtualClock()
    limiter = AdaptiveLimiter(64, initial=8, clock=clock, sleep=clock.sleep)
    _successes_then_a_429(limiter, clock, per_second=INFER_MIN_PER_SECOND // 2, seconds=3.0)
    assert limiter.decreases == 1
    assert limiter.rpm is None  # a small step or a stray 429 must not throttle the rest of the run


def test_a_given_or_announced_rpm_is_not_replaced_by_an_inferred_one():
    clock = VirtualClock()
    given = AdaptiveLimiter(64, rpm=100_000, clock=clock, sleep=clock.sleep)
    _successes_then_a_429(given, clock, per_second=100, seconds=2.0)
    assert (given.rpm, given.rpm_source) == (100_000, "given")
    announced = AdaptiveLimiter(64, clock=clock, sleep=clock.sleep)
    announced.learn_rpm(100_000)
    _successes_then_a_429(announced, clock, per_second=100, seconds=2.0)
    assert (announced.rpm, announced.rpm_source) == (100_000, "server")


# -- retry policy --------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_retryable_errors_are_retried_up_to_max_attempts_then_reraised():
    recorder = Recorder()
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=10.0, sleep=recorder)
    calls: list[int] = []
    retried: list[RetryableAPIError] = []

    async def call() -> str:
        calls.append(1)
        raise RetryableAPIError(f"HTTP 503: attempt {len(calls)}", status=503)

    with pytest.raises(RetryableAPIError, match="attempt 4"):
        anyio.run(lambda: policy.run(call, on_retry=retried.append))
    assert len(calls) == 4
    assert len(retried) == 3
    assert len(recorder.waits) == 3
    # exponential backoff with jitter: attempt n waits between half and all of base * 2**(n-1)
    for n, wait in enumerate(recorder.waits, start=1):
        ceiling = 0.5 * 2 ** (n - 1)
        assert 0.5 * ceiling <= wait <= ceiling


def test_success_after_a_failure_returns_the_value():
    recorder = Recorder()
    policy = RetryPolicy(max_attempts=3, sleep=recorder)
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise RetryableAPIError("connection error")
        return "ok"

    assert anyio.run(lambda: policy.run(call)) == "ok"
    assert len(calls) == 2


@pytest.mark.parametrize("error", [FatalAPIError("HTTP 401", status=401), ValueError("a bug")])
def test_fatal_errors_are_not_retried(error):
    recorder = Recorder()
    policy = RetryPolicy(max_attempts=5, sleep=recorder)
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        anyio.run(lambda: policy.run(call))
    assert len(calls) == 1
    assert recorder.waits == []


def test_the_servers_retry_after_is_the_wait():
    recorder = Recorder()
    policy = RetryPolicy(max_attempts=3, base_delay=100.0, max_delay=60.0, sleep=recorder)
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RetryableAPIError("rate limited (429)", status=429, retry_after=2.5, rate_limited=True)
        if len(calls) == 2:
            raise RetryableAPIError("rate limited (429)", status=429, retry_after=500.0, rate_limited=True)
        return "ok"

    assert anyio.run(lambda: policy.run(call)) == "ok"
    first, second = recorder.waits
    assert 2.5 <= first <= 2.5 + 0.26  # the hint plus at most 10% jitter, not the 100 s backoff
    assert second == 60.0  # a hint is still capped by max_delay


# -- retry hints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "message", "expected"),
    [
        ({"retry-after-ms": "20"}, "", 0.02),
        ({"retry-after-ms": "1500", "retry-after": "9"}, "", 1.5),
        ({"retry-after": "3"}, "", 3.0),
        ({"retry-after": "0.5"}, "", 0.5),
        ({"x-ratelimit-reset-requests": "6m0s"}, "", 360.0),
        ({"x-ratelimit-reset-requests": "20ms"}, "", 0.02),
        # untyped: the shorter wait (a too-early retry costs one 429, a too-late one minutes of idling)
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, "", 1.0),
        ({}, "Rate limit reached for gpt-4o-mini. Please try again in 1.574s. Visit ...", 1.574),
        ({}, "Please try again in 20ms.", 0.02),
        ({}, "Something else went wrong", None),
        ({"retry-after": "soon"}, "", None),  # was a ValueError from the date parser: a crash on a 429
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, "", 0.0),  # an HTTP date in the past
    ],
)
def test_retry_hint(headers, message, expected):
    hint = retry_hint(headers, message)
    if expected is None:
        assert hint is None
    else:
        assert hint == pytest.approx(expected)


def test_parse_duration():
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("soon") is None


# -- cache ---------------------------------------------------------------------------------------------
def test_cache_round_trip(tmp_path: Path):
    path = tmp_path / "sub" / "cache.sqlite"
    cache = ResponseCache(path)
    key = cache_key("id", "score", {"messages": [{"role": "user", "content": "x"}]})
    assert cache.get(key) is None
    value = {"p_a": 0.25, "error": None, "method": "logprobs", "usage": [10, 1, 0], "text": "é 😀"}
    cache.put(key, "score", value)
    assert cache.get(key) == value
    cache.close()
    again = ResponseCache(path)  # committed: a new process would find it
    assert again.get(key) == value
    assert len(again) == 1
    again.close()


def test_two_caches_on_one_file_write_concurrently(tmp_path: Path):
    path = tmp_path / "shared.sqlite"
    caches = [ResponseCache(path), ResponseCache(path)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(which: int) -> None:
        try:
            start.wait()
            for i in range(300):
                caches[which].put(f"{which}-{i}", "score", {"i": i, "writer": which})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(caches[0]) == 600
    assert caches[1].get("0-299") == {"i": 299, "writer": 0}
    assert caches[0].get("1-0") == {"i": 0, "writer": 1}
    for cache in caches:
        cache.close()


def test_several_openers_of_one_new_file_all_get_in(tmp_path: Path):
    """Two processes creating one cache file at once could get "database is locked" from the switch to
    WAL (SQLite does not wait there); opening now tries again. Threads open it here, 40 times over."""
    errors: list[BaseException] = []
    for trial in range(40):
        path = tmp_path / f"new-{trial}.sqlite"
        start = threading.Barrier(3)

        def open_and_write(which: int, path: Path = path, start: threading.Barrier = start) -> None:
            try:
                start.wait()
                cache = ResponseCache(path)
                cache.put(f"{which}", "score", {"which": which})
                cache.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


@pytest.mark.parametrize(
    "score",
    [
        LabelScore(0.1234567890123, None, Usage(310, 1, 256)),
        LabelScore(None, "neither 'A' nor \"B\" among: ü 😀\n", Usage()),
        LabelScore(1.0, None, Usage(1, 2, 3), "logits"),
        LabelScore(1e-300, None),
        LabelScore(0.75, None, Usage(5, 1, 0), label_mass=0.123456789),
    ],
)
def test_the_cached_form_of_a_score_is_its_json(score: LabelScore):
    usage = [score.usage.prompt_tokens, score.usage.completion_tokens, score.usage.cached_tokens]
    plain = {
        "p_a": score.p_a,
        "error": score.error,
        "method": score.method,
        "label_mass": score.label_mass,
        "usage": usage,
    }
    assert score_json(score) == json.dumps(plain, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("fill", TRICKY_ROWS)
def test_slot_key_equals_the_full_cache_key(fill: str):
    messages = classify_prompt('A "quoted" description, café, </description> {row}')
    prompt = SlotPrompt.split(messages, ROW_PLACEHOLDER)
    slot_key = SlotKey(
        "openai-compatible:http://x/v1:m", "score", {"messages": prompt.messages(SLOT), **CLASSIFY_PARAMS}
    )
    full = cache_key(
        "openai-compatible:http://x/v1:m", "score", {"messages": with_row(messages, fill), **CLASSIFY_PARAMS}
    )
    assert slot_key(fence_safe(fill)) == full


def test_slot_prompt_equals_with_row():
    messages = classify_prompt()
    prompt = SlotPrompt.split(messages, ROW_PLACEHOLDER)
    for row in TRICKY_ROWS:
        assert prompt.messages(fence_safe(row)) == with_row(messages, row)
    no_slot = [{"role": "user", "content": "no placeholder here"}]
    assert SlotPrompt.split(no_slot, ROW_PLACEHOLDER).messages("anything") == with_row(no_slot, "anything")


# -- the prepared request body -------------------------------------------------------------------------
class CapturingProvider(OpenAIHTTPProvider):
    """The real provider with its one network method replaced: records bodies, returns one answer."""

    def __init__(self, answer: dict, headers: dict | None = None) -> None:
        super().__init__(
            "gpt-4.1-mini",
            base_url="http://capture.invalid/v1",
            api_key=None,
            facts=model_facts("gpt-4.1-mini"),
        )
        self.answer = json.dumps(answer).encode()
        self.headers = headers or {}
        self.bodies: list[bytes] = []

    async def _exchange(self, data: bytes, *, describe: bool = False):
        self.bodies.append(data)
        await anyio.lowlevel.checkpoint()
        return 200, self.headers, self.answer


def classify_answer(p_a: float = 0.8) -> dict:
    fake = FakeOpenAI()
    from tests.fake_openai import top_logprobs_for

    return fake.classify_body({"messages": [{"content": "x"}], "top_logprobs": 20}, top_logprobs_for(p_a))


def test_prepared_body_is_the_full_body():
    provider = CapturingProvider(classify_answer(0.8))
    messages = classify_prompt('Dataset A says "hi" in ünïcödé; dataset B doesn\'t.')
    score = provider.prepare_score(SlotPrompt.split(messages, ROW_PLACEHOLDER))

    async def main() -> list:
        return [await score(fence_safe(row)) for row in TRICKY_ROWS]

    results = anyio.run(main)
    assert all(r.p_a == pytest.approx(0.8) for r in results)
    for row, body in zip(TRICKY_ROWS, provider.bodies, strict=True):
        assert json.loads(body) == provider.classify_body(with_row(messages, row))


def test_client_learns_the_servers_request_limit():
    provider = CapturingProvider(classify_answer(), headers={"x-ratelimit-limit-requests": "5000"})
    limiter = AdaptiveLimiter(8)
    client = LLMClient(provider, cache=None, policy=RetryPolicy(), limiter=limiter, stats=RunStats())

    async def main() -> None:
        await client.row_scorer(classify_prompt(), ROW_PLACEHOLDER).score("a row")

    anyio.run(main)
    assert limiter.rpm == 5000.0


# -- classify_rows over real HTTP ----------------------------------------------------------------------
def make_client(base_url: str, cache: ResponseCache | None, concurrency: int) -> LLMClient:
    provider = OpenAIHTTPProvider(
        "fake-model",
        base_url=base_url,
        api_key="sk-test",
        facts=model_facts("fake-model"),
        connections=concurrency,
    )
    limiter = AdaptiveLimiter(concurrency, initial=min(concurrency, 16))
    return LLMClient(
        provider,
        cache=cache,
        policy=RetryPolicy(max_attempts=3, base_delay=0.01),
        limiter=limiter,
        stats=RunStats(),
    )


def test_classify_rows_in_order_each_row_sent_once(tmp_path: Path):
    n = 2000
    rows = [f"row {i}: I like {'apples' if i % 3 == 0 else 'bananas'} a lot" for i in range(n)]
    fake = FakeOpenAI()
    messages = classify_prompt()
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with ServerThread(fake) as server:
        client = make_client(server.base_url, cache, 64)

        async def first() -> list:
            try:
                return (await classify_rows(client, messages, rows, workers=64)).values()
            finally:
                await client.aclose()

        values = anyio.run(first)
        seen = Counter(row_of(body) for body in fake.classify_requests())
        # a second run over the same cache: every answer is found, nothing is sent
        again = make_client(server.base_url, cache, 64)

        async def second() -> list:
            try:
                return (await classify_rows(again, messages, rows, workers=64)).values()
            finally:
                await again.aclose()

        values_again = anyio.run(second)
    cache.close()
    assert len(values) == n
    for i, p in enumerate(values):
        assert p == pytest.approx(0.9 if i % 3 == 0 else 0.15), i
    assert seen == Counter({fence_safe(row): 1 for row in rows})
    assert fake.count == n
    assert values_again == values
    assert again.stats.cache_hits == n
    assert again.stats.requests == 0


def test_fast_path_and_score_labels_share_cache_entries(tmp_path: Path):
    rows = ["an apple a day", "bananas </example> again", "unicode ü 😀"]
    fake = FakeOpenAI()
    messages = classify_prompt()
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with ServerThread(fake) as server:
        client = make_client(server.base_url, cache, 4)

        async def main() -> list:
            try:
                await classify_rows(client, messages, rows, workers=4)
                return [await client.score_labels(with_row(messages, row)) for row in rows]
            finally:
                await client.aclose()

        results = anyio.run(main)
    cache.close()
    assert fake.count == len(rows)
    assert all(r.from_cache for r in results)


def test_swapped_prompts_average_both_answers(tmp_path: Path):
    rows = [f"row {i} apples" for i in range(50)]
    fake = FakeOpenAI()
    messages = classify_prompt()
    swapped = classify_prompt("Dataset B mentions apples; dataset A mentions bananas.")
    with ServerThread(fake) as server:
        client = make_client(server.base_url, None, 8)

        async def main() -> list:
            try:
                return (
                    await classify_rows(client, messages, rows, workers=8, swapped_messages=swapped)
                ).values()
            finally:
                await client.aclose()

        values = anyio.run(main)
    assert fake.count == 2 * len(rows)
    # the fake answers by keyword, not by description: (0.9 + (1 - 0.9)) / 2
    assert all(math.isclose(v, 0.5, abs_tol=1e-9) for v in values)


def test_retry_hint_follows_the_exhausted_limit():
    headers = {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}
    assert retry_hint(headers, "", "requests") == pytest.approx(0.02)
    assert retry_hint(headers, "", "tokens") == pytest.approx(360.0)
    # the message speaks of the limit that was hit: it wins over the reset headers
    assert retry_hint(headers, "Rate limit reached ... Please try again in 20ms.", "tokens") == pytest.approx(
        0.02
    )


# -- the limiter against simulated servers (virtual time) ----------------------------------------------
def simulate(limiter: AdaptiveLimiter, clock: VirtualClock, answer, requests: int, timeout: float) -> dict:
    """Send ``requests`` requests as fast as the limit allows; ``answer(sent_at)`` says when the server
    answers one sent at that moment. A request not answered within ``timeout`` is abandoned (the server
    still works on it) and sent again. Returns what happened, in virtual seconds."""

    async def main() -> dict:
        pending: list[tuple[float, float, bool]] = []  # (answered at, sent at, abandoned)
        to_send, latencies, timeouts, sent = requests, [], 0, 0
        while to_send or pending:
            while to_send and limiter.in_flight < int(limiter.limit):
                await limiter.acquire()
                to_send -= 1
                sent += 1
                pending.append((answer(clock.now), clock.now, False))
            pending.sort()
            answered, started, _ = pending.pop(0)
            if answered - started > timeout:  # the client gives up at sent + timeout
                clock.now = max(clock.now, started + timeout)
                timeouts += 1
                to_send += 1
                limiter.release(ok=False, timed_out=True)
                continue
            clock.now = max(clock.now, answered)
            latencies.append(answered - started)
            limiter.release(ok=True, latency=answered - started)
        return {"seconds": clock.now, "latencies": latencies, "timeouts": timeouts, "sent": sent}

    return anyio.run(main)


def serial_server(service: float):
    """One request at a time, in arrival order, ``service`` seconds each (llama.cpp's server)."""
    busy_until = [0.0]

    def answer(now: float) -> float:
        busy_until[0] = max(now, busy_until[0]) + service
        return busy_until[0]

    return answer


def test_a_queueing_server_is_kept_busy_with_a_short_queue_and_no_timeouts():
    clock = VirtualClock()
    limiter = AdaptiveLimiter(64, initial=16, timeout=5.0, clock=clock, sleep=clock.sleep)
    result = simulate(limiter, clock, serial_server(0.25), requests=600, timeout=5.0)
    assert result["timeouts"] == 0
    assert result["seconds"] <= 600 * 0.25 / 0.95  # the server never idles for long
    # the first answer (0.25 s) says 16 at once would wait 4 s: only FIRST_WINDOW went, never 16
    assert limiter.peak_limit < 16
    assert max(result["latencies"]) <= 5.0 * 0.25 + 2 * 0.25  # well under the timeout from the start
    assert limiter.limit <= 8 and limiter.latency_decreases >= 1
    assert limiter.base_latency == pytest.approx(0.25, rel=0.3)  # still known after the base was renewed


def test_spread_latencies_from_a_parallel_server_are_not_read_as_a_queue():
    import random

    rng = random.Random(1)
    clock = VirtualClock()
    limiter = AdaptiveLimiter(256, initial=16, timeout=60.0, clock=clock, sleep=clock.sleep)
    simulate(limiter, clock, lambda now: now + rng.uniform(0.1, 0.3), requests=8000, timeout=60.0)
    assert limiter.latency_decreases == 0
    assert limiter.peak_limit == 256


def test_a_timeout_is_a_congestion_signal_and_halves_what_was_in_flight():
    async def main() -> AdaptiveLimiter:
        clock = VirtualClock()
        limiter = AdaptiveLimiter(64, initial=32, clock=clock, sleep=clock.sleep)
        for _ in range(10):
            await limiter.acquire()
        limiter.release(ok=False, timed_out=True)  # ten in flight, far under the limit of 32
        return limiter

    limiter = anyio.run(main)
    assert limiter.limit == 5  # half of the ten in flight, not half of the limit
    assert limiter.timeouts == 1 and limiter.decreases == 1
    assert not limiter.slow_start


def test_a_request_abandoned_at_the_timeout_is_sent_again_under_a_lower_limit():
    class TimesOutOnce(CapturingProvider):
        def __init__(self, limiter: AdaptiveLimiter) -> None:
            super().__init__(classify_answer())
            self.limiter = limiter
            self.limits_when_sent: list[int] = []

        async def _exchange(self, data: bytes, *, describe: bool = False):
            self.limits_when_sent.append(int(self.limiter.limit))
            if len(self.limits_when_sent) == 1:  # what the real exchange raises at --timeout
                raise RetryableAPIError("no answer within 5s (--timeout)", timed_out=True)
            return await super()._exchange(data)

    limiter = AdaptiveLimiter(64, initial=16, timeout=5.0)
    provider = TimesOutOnce(limiter)
    stats = RunStats()
    client = LLMClient(
        provider, cache=None, policy=RetryPolicy(sleep=Recorder()), limiter=limiter, stats=stats
    )

    async def main() -> LabelScore:
        return await client.row_scorer(classify_prompt(), ROW_PLACEHOLDER).score("a row")

    result = anyio.run(main)
    assert result.p_a is not None
    first, second = provider.limits_when_sent
    assert second < first  # the timeout was a congestion signal before the request went again
    assert (stats.timeouts, stats.retries, limiter.timeouts) == (1, 1, 1)


def test_a_retry_after_of_7_seconds_is_the_retrys_wait_and_holds_back_every_request():
    """Azure-style 429 (the wait only in ``retry-after: 7``) over real HTTP, on a virtual clock: the
    provider reads the header, the client pauses the limiter, the policy waits that long; the other rows,
    queued behind the refused one, are not sent before those 7 seconds are up either."""
    clock = VirtualClock()
    retry_waits: list[float] = []

    async def policy_sleep(seconds: float) -> None:
        # recorded, without moving the clock: only the limiter's pause may make the others wait
        retry_waits.append(seconds)
        await anyio.lowlevel.checkpoint()

    fake = FakeOpenAI(fault=lambda n, body: "rate_limit_retry_after" if n == 1 else None)
    sent_at: list[tuple[float, str]] = []

    class Timed(OpenAIHTTPProvider):
        async def _exchange(self, data: bytes, *, describe: bool = False):
            sent_at.append((clock(), row_of(json.loads(data))))
            return await super()._exchange(data)

    rows = [f"row {i} apples" for i in range(6)]
    with ServerThread(fake) as server:
        provider = Timed(
            "fake-model", base_url=server.base_url, api_key="sk-test", facts=model_facts("fake-model")
        )
        client = LLMClient(
            provider,
            cache=None,
            # a backoff far from 7 s either way, so that only the hint can make the wait 7 s
            policy=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=60.0, sleep=policy_sleep),
            limiter=AdaptiveLimiter(4, initial=1, clock=clock, sleep=clock.sleep),
            stats=RunStats(),
        )

        async def main() -> list:
            try:
                return (await classify_rows(client, classify_prompt(), rows, workers=4)).values()
            finally:
                await client.aclose()

        values = anyio.run(main)
    assert all(v == pytest.approx(0.9) for v in values)
    assert fake.answered_429 == 1 and fake.count == len(rows) + 1
    assert len(retry_waits) == 1 and 7.0 <= retry_waits[0] <= 7.0 * 1.1 + 0.01  # the hint plus jitter
    first_time, first_row = sent_at[0]
    assert first_time == 0.0
    # every later request, the refused row's retry and the rows behind it, waited the 7 seconds out
    assert [t for t, _ in sent_at[1:]] and all(t >= 7.0 for t, _ in sent_at[1:]), sent_at
    assert client.stats.rate_limited == 1 and client.stats.retries == 1


def test_the_progress_line_shows_the_limit_and_the_latency():
    from asyncpipe.pipeline.progress import limiter_text

    clock = VirtualClock()
    limiter = AdaptiveLimiter(64, initial=16, timeout=5.0, clock=clock, sleep=clock.sleep)
    assert limiter_text(limiter) == "limit 4/64"  # nothing measured yet: the first window
    simulate(limiter, clock, serial_server(0.25), requests=100, timeout=5.0)
    text = limiter_text(limiter)
    assert text.startswith(f"limit {int(limiter.limit)}/64 · latency ")
    assert "(base 0.25s)" in text
    assert limiter.state().to_dict()["base_latency_s"] == 0.25
