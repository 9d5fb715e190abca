"""The embedded llama.cpp provider against the shipped SmolLM2 (slow: loads a real model)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncpipe.errors import UserError
from asyncpipe.llm.base import Message

pytest.importorskip("llama_cpp")

from asyncpipe.llm.local import LocalProvider, resolve_model, shipped_model_path  # noqa: E402

pytestmark = pytest.mark.slow

DESCRIPTION = (
    "Set A rows are short, plain product reviews written in the first person. "
    "Set B rows are formal news summaries written in the third person."
)


def classify(row: str, description: str = DESCRIPTION) -> list[Message]:
    return [
        Message(
            role="system", content=f"You tell two datasets apart. {description} Answer with A or B only."
        ),
        Message(role="user", content=f"Row: {row}\nWhich set is this row from? Answer A or B."),
    ]


ROWS = [
    "I loved this kettle, it boils fast.",
    "The council approved the new budget on Tuesday.",
    "My dog hates this toy.",
]


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


@pytest.fixture(scope="module")
def provider():
    p = resolve_model("local")
    yield p
    anyio.run(p.aclose)


@pytest.fixture(scope="module")
def small_provider():
    p = LocalProvider(shipped_model_path(), n_ctx=512)
    yield p
    anyio.run(p.aclose)


def full_eval_p_a(provider: LocalProvider, messages: list[Message]) -> float:
    provider.reset_prefix_cache()
    return run(provider.score_labels, messages).p_a


def test_reuse_matches_full_evaluation(provider):
    prompts = [classify(row) for row in ROWS]
    prompts.append(prompts[-1])  # the whole prompt already cached: logits must still be fresh
    prompts.append(classify(ROWS[0], description="Set A is poetry; set B is prose."))  # a different prefix
    full = [full_eval_p_a(provider, m) for m in prompts]

    provider.reset_prefix_cache()
    reused = [run(provider.score_labels, m) for m in prompts]

    assert reused[0].usage.cached_tokens == 0
    assert reused[1].usage.cached_tokens > 0.5 * reused[1].usage.prompt_tokens
    assert reused[3].usage.cached_tokens == reused[3].usage.prompt_tokens - 1
    assert reused[4].usage.cached_tokens < 0.5 * reused[4].usage.prompt_tokens
    for got, want in zip(reused, full, strict=True):
        assert got.p_a == pytest.approx(want, abs=1e-4)
    # the rows do not all get the same answer: the logits really are per prompt
    assert len({round(s.p_a, 6) for s in reused}) > 1


def test_p_a_is_a_probability_from_logits(provider):
    score = run(provider.score_labels, classify(ROWS[1]))
    assert score.method == "logits"
    assert score.error is None
    assert 0.0 < score.p_a < 1.0
    assert score.usage.prompt_tokens > 0


def test_identity_and_name(provider):
    assert provider.model == "local"
    assert provider.max_concurrency == 1
    assert provider.cache_identity.startswith("llama.cpp:")
    assert str(shipped_model_path().resolve()) in provider.cache_identity


def test_gguf_spec_names_the_path():
    path = shipped_model_path()
    p = resolve_model(f"gguf:{path}")  # nothing is loaded until first use
    assert p.model == f"gguf:{path}"


@pytest.mark.parametrize(
    "make_spec",
    [
        lambda tmp: "gguf:/nonexistent.gguf",
        lambda tmp: f"gguf:{tmp}",
        lambda tmp: f"gguf:{_write(tmp / 'notes.gguf', b'not a model at all')}",
        lambda tmp: f"gguf:{_write(tmp / 'empty.gguf', b'')}",
        lambda tmp: "gguf:",
        lambda tmp: "llama:whatever",
    ],
    ids=["missing", "directory", "not-gguf", "empty", "no-path", "unknown-scheme"],
)
def test_bad_model_specs_are_user_errors(tmp_path, make_spec):
    with pytest.raises(UserError) as info:
        resolve_model(make_spec(tmp_path))
    assert "\n" not in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_row_longer_than_context_is_cut_and_scored(small_provider):
    long_row = " ".join(f"word{i}" for i in range(1500))  # several thousand tokens
    messages = classify(long_row)
    text, tokens = small_provider.render_prompt(messages)
    assert len(tokens) <= 512
    assert "cut" in text and "tokens to fit the model's context" in text
    assert "Which set is this row from?" in text  # the tail of the message survives the cut
    assert DESCRIPTION in text  # the instructions are never cut

    score = run(small_provider.score_labels, messages)
    assert 0.0 < score.p_a < 1.0
    assert score.usage.prompt_tokens <= 512


def test_instructions_too_long_for_context_is_a_user_error(small_provider):
    huge_system = " ".join(f"rule{i}" for i in range(1500))
    messages = [Message(role="system", content=huge_system), Message(role="user", content="Row: x")]
    with pytest.raises(UserError, match="context of 512 tokens is too small"):
        run(small_provider.score_labels, messages)


def test_generate_returns_text_within_max_tokens(provider):
    messages = [Message(role="user", content="Name one colour.")]
    out = run(lambda: provider.generate(messages, max_tokens=12, temperature=0.0, seed=1))
    assert out.text.strip()
    assert 0 < out.usage.completion_tokens <= 12

    # generate invalidates the prefix cache; scoring afterwards is still exact
    after = run(provider.score_labels, classify(ROWS[2]))
    assert after.usage.cached_tokens == 0
    assert after.p_a == pytest.approx(full_eval_p_a(provider, classify(ROWS[2])), abs=1e-4)


def test_event_loop_stays_responsive_while_scoring(provider):
    ticks = 0

    async def main():
        nonlocal ticks

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            provider.reset_prefix_cache()
            await provider.score_labels(classify(ROWS[0]))
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert ticks > 1
