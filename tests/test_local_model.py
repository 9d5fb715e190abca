"""The embedded llama.cpp provider against the shipped SmolLM2 (slow: loads a real model)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncpipe.errors import UserError
from asyncpipe.llm.base import Message, Sampling

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


# One thread: by default llama.cpp evaluates a batch on one thread per core, and on a busy 2-core machine
# those threads spin at every layer waiting for a descheduled sibling (ten times the CPU time measured,
# for the same p(A)). The suite shares its machine; one thread keeps it from burning it.
THREADS = 1


@pytest.fixture(scope="module")
def provider():
    p = resolve_model("local", n_threads=THREADS)
    yield p
    anyio.run(p.aclose)


@pytest.fixture(scope="module")
def small_provider():
    p = LocalProvider(shipped_model_path(), n_ctx=512, n_threads=THREADS)
    yield p
    anyio.run(p.aclose)


# Reuse against a whole evaluation: the prefix-then-row evaluation and a one-call evaluation of the whole
# prompt compute the same logits in batches of different shapes, and llama.cpp picks SIMD kernels by batch
# shape and CPU (AVX2, AVX-512, ...), so p(A) agrees only up to rounding. A one-token replay measured 0.012
# on an AMD EPYC with AVX2 and no AVX-512 (the split evaluation used now measured 0 on an AVX-512 EPYC);
# 0.05 leaves four times the worst figure seen as margin for other CPUs. It is a sanity bound: what is
# promised exactly (the same p(A) whatever came before) is tested with == above.
REUSE_TOLERANCE = 0.05


def fresh_p_a(provider: LocalProvider, messages: list[Message]) -> float:
    provider.reset_prefix_cache()
    return run(provider.score_labels, messages).p_a


def test_same_row_gets_the_same_p_a_whatever_came_before(provider):
    """Exact equality on any machine: every prompt is evaluated as the same two batches (prefix, then row
    part) from the same prefix state, whether the prefix was already in the cache or not."""
    target = classify(ROWS[0])
    alone = fresh_p_a(provider, target)
    histories = {
        "after another row of the same description": [classify(ROWS[1])],
        "an exact repeat": [target],
        "after a repeat of another row": [classify(ROWS[2]), classify(ROWS[2])],
        "after another description": [classify(ROWS[1], description="Set A is poetry; set B is prose.")],
        "after a longer row": [classify(ROWS[1] + " " + ROWS[2] * 5)],
    }
    for name, before in histories.items():
        provider.reset_prefix_cache()
        for messages in before:
            run(provider.score_labels, messages)
        score = run(provider.score_labels, target)
        assert score.p_a == alone, name
    run(lambda: provider.generate([Message(role="user", content="Hi")], Sampling(2, 0.0, 1)))
    assert run(provider.score_labels, target).p_a == alone, "after generate"


def test_prefix_is_reused_whole_and_never_into_the_row(provider):
    _, tokens = provider.render_prompt(classify(ROWS[0]))
    _, other_description = provider.render_prompt(classify(ROWS[0], description="Set A is poetry."))
    provider.reset_prefix_cache()
    first, second, repeat = (run(provider.score_labels, classify(row)) for row in (ROWS[0], ROWS[1], ROWS[1]))
    switched = run(provider.score_labels, classify(ROWS[0], description="Set A is poetry."))
    assert first.usage.cached_tokens == 0
    prefix = second.usage.cached_tokens
    # the system message and the user turn's header: everything before the row's message content
    assert tokens[:prefix] == provider.render_prompt(classify(ROWS[1]))[1][:prefix]
    assert prefix > 0.5 * len(tokens)
    assert repeat.usage.cached_tokens == prefix  # an exact repeat evaluates its row part again
    assert switched.usage.cached_tokens == 0  # another description: the prefix is evaluated afresh
    assert switched.usage.prompt_tokens == len(other_description)


def test_reuse_matches_whole_evaluation_within_rounding(provider):
    prompts = [classify(row) for row in ROWS]
    prompts.append(prompts[-1])  # an exact repeat of a cached prompt
    prompts.append(classify(ROWS[0], description="Set A is poetry; set B is prose."))  # a different prefix
    whole = [run(provider.score_labels_whole, m).p_a for m in prompts]
    provider.reset_prefix_cache()
    reused = [run(provider.score_labels, m).p_a for m in prompts]
    for got, want in zip(reused, whole, strict=True):
        assert got == pytest.approx(want, abs=REUSE_TOLERANCE)
    # the rows do not all get the same answer: the logits really are per prompt (this small model leans
    # to 'A' on all of them, so their spread is no wider than the bound; the exact tests above are sharp)
    assert len({round(p, 6) for p in whole}) > 1


def test_p_a_is_the_label_mass_of_the_full_vocabulary_softmax(provider):
    """p(A) = mass of every token reading 'A' / mass of every 'A' and 'B' token, over the whole vocabulary
    at the last position (recomputed here from llama.cpp's logits, not from the provider's arithmetic)."""
    import llama_cpp
    import numpy as np

    score = run(provider.score_labels, classify(ROWS[1]))
    assert score.method == "logits" and score.error is None
    llm = provider._llm  # the loaded llama_cpp.Llama, whose context holds the last position's logits
    n_vocab = llm.n_vocab()
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()

    def mass(label: str) -> float:
        ids = {llm.tokenize(t.encode(), add_bos=False, special=False)[0] for t in (label, " " + label)}
        return float(sum(probs[i] for i in ids))

    assert score.p_a == pytest.approx(mass("A") / (mass("A") + mass("B")), rel=1e-6)
    _, tokens = provider.render_prompt(classify(ROWS[1]))
    assert score.usage.prompt_tokens == len(tokens)


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
    assert score.error is None
    assert score.usage.prompt_tokens == len(tokens)  # what was scored is the cut prompt
    # and it was scored like any prompt: the same as its one-call evaluation, up to rounding
    whole = run(small_provider.score_labels_whole, messages)
    assert whole.usage.prompt_tokens == len(tokens)
    assert score.p_a == pytest.approx(whole.p_a, abs=REUSE_TOLERANCE)


def test_instructions_too_long_for_context_is_a_user_error(small_provider):
    huge_system = " ".join(f"rule{i}" for i in range(1500))
    messages = [Message(role="system", content=huge_system), Message(role="user", content="Row: x")]
    with pytest.raises(UserError, match="context of 512 tokens is too small"):
        run(small_provider.score_labels, messages)


def test_generate_returns_text_within_max_tokens(provider):
    messages = [Message(role="user", content="Name one colour.")]
    out = run(lambda: provider.generate(messages, Sampling(12, 0.0, 1)))
    assert out.text.strip()
    assert 0 < out.usage.completion_tokens <= 12

    # generate invalidates the prefix cache; scoring afterwards gives what a fresh cache gives
    after = run(provider.score_labels, classify(ROWS[2]))
    assert after.usage.cached_tokens == 0
    assert after.p_a == fresh_p_a(provider, classify(ROWS[2]))


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
