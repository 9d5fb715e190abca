"""Every model a researcher has: gpt-5.1+ classify with reasoning_effort "none" and logprobs; models
without logprobs classify by sampling (in one request with ``n``, or N requests where ``n`` is ignored);
placeholder logprobs (all 0, or −9999 on every alternative) stop the run on its first answers.

Provider and client level, against the fake server over real HTTP; the command line is in test_cli_models.
"""

from __future__ import annotations

import anyio
import pytest

from asyncpipe.config import Templates, load_settings
from asyncpipe.errors import FatalAPIError, UserError
from asyncpipe.llm.base import LOGPROBS, ClassifyMode, Sampling
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.llm.client import SUSPECT_LOGPROBS_LIMIT, LLMClient
from asyncpipe.llm.labels import implausible_logprobs, p_a_from_samples
from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.openai_http import REASONING_ALLOWANCE, OpenAIHTTPProvider
from asyncpipe.llm.registry import check_can_classify, default_classify_mode
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats
from asyncpipe.model_facts import model_facts
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.prompts.build import classify_messages, with_row
from tests.fake_openai import FakeOpenAI, ServerThread, is_sample

ESTIMATES_8 = {(k + 0.5) / 9 for k in range(9)}


def prompt() -> list:
    templates = Templates.from_settings(load_settings()["prompts"])
    return classify_messages(templates, "Dataset A mentions apples; dataset B mentions bananas.")


def provider(server: ServerThread, model: str) -> OpenAIHTTPProvider:
    return OpenAIHTTPProvider(model, base_url=server.base_url, api_key="k", facts=model_facts(model))


def client(server: ServerThread, model: str, mode: ClassifyMode = LOGPROBS, cache=None) -> LLMClient:
    return LLMClient(
        provider(server, model),
        cache=cache,
        policy=RetryPolicy(2, 0.0, 0.0),
        limiter=AdaptiveLimiter(4, initial=4),
        stats=RunStats(),
        classify_mode=mode,
    )


def test_model_facts_per_family():
    for name in ("gpt-5.1", "gpt-5.1-2025-11-13", "gpt-5.2", "gpt-5.3", "openai/gpt-5.2"):
        facts = model_facts(name)
        assert facts.logprobs and facts.logprobs_effort == "none" and "none" in facts.efforts, name
        assert facts.token_param == "max_completion_tokens"
    assert "xhigh" in model_facts("gpt-5.2").efforts and "xhigh" not in model_facts("gpt-5.1").efforts
    assert "minimal" not in model_facts("gpt-5.1").efforts
    assert not model_facts("gpt-5").logprobs and model_facts("gpt-5").logprobs_effort is None
    assert model_facts("gpt-5-mini-2025-08-07").price == model_facts("gpt-5-mini").price
    assert model_facts("gpt-5.1-mini").logprobs_effort == "none"  # gpt-5.1's entry, not gpt-5.*
    # a variant behaves as its family but is priced otherwise (-pro at many times the price): unknown
    for variant in ("gpt-5.1-codex-mini", "gpt-5.2-pro", "o4-mini-deep-research"):
        assert model_facts(variant).price is None, variant
    assert model_facts("gpt-5.2-pro").logprobs_effort == "none"
    assert model_facts("openai/gpt-4.1-mini-2025-04-14").price == model_facts("gpt-4.1-mini").price
    assert not model_facts("claude-sonnet-4-5").logprobs and not model_facts("claude-sonnet-4-5").n
    unknown = model_facts("my-finetune")
    assert unknown.logprobs and unknown.logprobs_effort is None and unknown.efforts == ()
    with pytest.raises(UserError, match="accepts --reasoning-effort none, low, medium, high"):
        model_facts("gpt-5.1").check_effort("minimal")


def test_gpt_5_1_classifies_with_effort_none_and_logprobs():
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        c = client(server, "gpt-5.1")
        score = anyio.run(c.score_labels, with_row(prompt(), "I love apple pie."))
        anyio.run(c.aclose)
    assert score.error is None and score.p_a == pytest.approx(0.9)
    (body,) = fake.requests
    assert body["reasoning_effort"] == "none"
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["max_completion_tokens"] == 1 and "max_tokens" not in body


def test_gpt_5_1_describe_effort():
    """Describing keeps the effort the user picks: at "low" no temperature (refused) and room for hidden
    reasoning; by default (its own "none") temperature and seed are sent."""
    fake = FakeOpenAI()
    messages = [{"role": "user", "content": "Describe."}]
    with ServerThread(fake) as server:
        p = provider(server, "gpt-5.1")

        async def both():
            low = await p.generate(messages, Sampling(100, 0.7, 1, reasoning_effort="low"))
            own = await p.generate(messages, Sampling(100, 0.7, 1))
            await p.aclose()
            return low, own

        low, own = anyio.run(both)
    assert low.text and own.text
    first, second = fake.requests
    assert first["reasoning_effort"] == "low" and "temperature" not in first and "seed" not in first
    assert first["max_completion_tokens"] == 100 + REASONING_ALLOWANCE
    assert "reasoning_effort" not in second and second["temperature"] == 0.7 and second["seed"] == 1
    assert second["max_completion_tokens"] == 100


def test_the_fake_refuses_logprobs_at_other_efforts():
    """The fake server holds gpt-5.1 to OpenAI's rule, so the tests above can fail."""
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        p = provider(server, "gpt-5.1")
        body = p.classify_body(with_row(prompt(), "apple"))
        body["reasoning_effort"] = "low"

        async def post():
            try:
                return await p._post(body)
            finally:
                await p.aclose()

        with pytest.raises(Exception, match="logprobs' is not supported"):
            anyio.run(post)


@pytest.mark.parametrize("ignore_n", [False, True])
def test_sampled_classification(ignore_n):
    fake = FakeOpenAI(no_logprobs_models={"no-logprobs"}, ignore_n=ignore_n)
    rows = ["an apple a day", "a banana split", "nothing in particular"]
    with ServerThread(fake) as server:
        c = client(server, "no-logprobs", ClassifyMode("sample", 8))

        async def run():
            try:
                return await classify_rows(c, prompt(), rows, workers=2)
            finally:
                await c.aclose()

        scores = anyio.run(run)
    values = scores.values()
    assert all(v in ESTIMATES_8 for v in values), values
    # the fake answers round(p·8) 'A' of 8: apple p=0.9 → 7, banana p=0.15 → 1, neither p=0.5 → 4
    assert values == pytest.approx([7.5 / 9, 1.5 / 9, 4.5 / 9])
    sent = fake.classify_requests()
    assert all(is_sample(b) and not b.get("logprobs") and b["temperature"] == 1 for b in sent)
    if ignore_n:
        assert len(sent) == 3 * 8 and c.stats.requests == 3 * 8
    else:
        assert len(sent) == 3 and all(b["n"] == 8 for b in sent) and c.stats.requests == 3


def test_sampled_answers_that_are_not_labels_are_unscored_samples(tmp_path):
    fake = FakeOpenAI(no_logprobs_models={"no-logprobs"}, off_label_word="cherry")
    with ServerThread(fake) as server:
        cache = ResponseCache(tmp_path / "c.sqlite")
        c = client(server, "no-logprobs", ClassifyMode("sample", 8), cache=cache)
        messages = with_row(prompt(), "a cherry and an apple")
        first = anyio.run(c.score_labels, messages)
        again = anyio.run(c.score_labels, messages)
        anyio.run(c.aclose)
        cache.close()
    # answers 4 and 8 are "Sure, …"; the other 6 are all 'A' (the fake answers 'A' to 7 in 8 for an apple):
    # p(A) is taken over the 6 label answers only
    assert (first.samples, first.off_label) == (6, 2)
    assert first.method == "sampled" and first.p_a == pytest.approx((6 + 0.5) / (6 + 1))
    assert again.from_cache and (again.p_a, again.samples, again.off_label) == (first.p_a, 6, 2)
    assert c.stats.off_label_samples == 2 and len(fake.requests) == 1


def test_the_estimator():
    assert p_a_from_samples(["A"] * 8) == (8.5 / 9, 8, 0)
    assert p_a_from_samples(["B"] * 8) == (0.5 / 9, 8, 0)
    assert p_a_from_samples([" A.", "**B**", "'A'", "Dataset A"]) == (2.5 / 4, 3, 1)
    assert p_a_from_samples(["no", "idea"]) == (None, 0, 2)


@pytest.mark.parametrize("kind", ["zero", "minus9999"])
def test_placeholder_logprobs_stop_on_the_first_answers(kind):
    fake = FakeOpenAI(fake_logprobs=kind)
    rows = [f"row {i} apple" for i in range(40)]
    with ServerThread(fake) as server:
        c = client(server, "deepseek-chat")

        async def run():
            try:
                return await classify_rows(c, prompt(), rows, workers=4)
            finally:
                await c.aclose()

        with pytest.raises(FatalAPIError, match="cannot be real.*--classify-mode sample:8"):
            anyio.run(run)
    # stopped within its first answers: the limit plus what was already in flight
    assert len(fake.requests) <= SUSPECT_LOGPROBS_LIMIT + 4


def test_real_logprobs_are_not_suspect():
    assert implausible_logprobs(("A", -0.1), [("A", -0.1), ("B", -2.3), (" A", -4.0)]) is None
    assert implausible_logprobs(("A", 0.0), [("A", 0.0)]) is None  # one certain token is possible
    assert implausible_logprobs(("A", 0.0), [("A", 0.0), ("B", -25.0)]) is None
    assert implausible_logprobs(("A", 0.0), [("A", 0.0), ("B", 0.0)]) is not None
    assert implausible_logprobs(("A", -0.5), [("A", -0.5), ("B", -9999.0), ("C", -9999.0)]) is not None


def test_default_mode_and_refusals():
    mode, note = default_classify_mode("gpt-5-mini")
    assert str(mode) == "sample:8" and "returns no logprobs" in note
    assert default_classify_mode("gpt-5.1") == (ClassifyMode(), None)
    assert default_classify_mode("local") == (ClassifyMode(), None)
    with pytest.raises(UserError, match="--classify-mode sample:8"):
        check_can_classify("gpt-5-mini")
    check_can_classify("gpt-5-mini", ClassifyMode("sample", 4))
    with pytest.raises(UserError, match="exact label probabilities"):
        check_can_classify("local", ClassifyMode("sample", 4))
    assert str(ClassifyMode.parse("sample:16")) == "sample:16"
    for bad in ("sample", "sample:1", "sample:x", "samples:8", "logits"):
        with pytest.raises(ValueError):
            ClassifyMode.parse(bad)


def test_drain_keeps_the_answers_in_flight_and_sends_nothing_more(tmp_path):
    """Stopping: the requests already sent finish and are cached; no new request leaves."""
    from asyncpipe.llm.interrupt import Stopper

    fake = FakeOpenAI(latency=0.2)
    rows = [f"row {i} apple" for i in range(40)]
    stopper = Stopper()
    with ServerThread(fake) as server:
        cache = ResponseCache(tmp_path / "c.sqlite")
        c = client(server, "fake-model", cache=cache)
        c.stopper = stopper
        # more workers than slots: some wait for a slot when the stop comes, and must not send then
        c.limiter = AdaptiveLimiter(4, initial=2)
        kept: list[bool] = []
        at_stop: list[int] = []

        async def run():
            async with anyio.create_task_group() as group:

                async def classify():
                    await classify_rows(c, prompt(), rows, workers=8)

                async def stop_after_some():
                    while fake.count < 6:
                        await anyio.sleep(0.01)
                    at_stop.append(c.stats.requests)  # sent so far, some perhaps not yet arrived
                    kept.append(await stopper.drain(30))
                    group.cancel_scope.cancel()

                group.start_soon(classify)
                group.start_soon(stop_after_some)
            await c.aclose()

        anyio.run(run)
        stored = len(cache)
        cache.close()
    assert kept == [True]
    # every request the server received was answered and stored; none was sent after the stop
    assert stored == fake.count == len(fake.requests)
    assert fake.count == at_stop[0]
