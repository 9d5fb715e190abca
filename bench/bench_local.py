"""Embedded model: prefix reuse against a whole evaluation per row, side by side.

Run ``python -m bench.bench_local`` (``make bench-local``). Builds classify prompts that share one long
prefix (a system message carrying a ~150-token difference description) and differ in a short row, then
scores them in the same process: (a) reusing the KV cache for the shared prefix (what a run does),
(b) evaluating every prompt whole, in one call from an empty cache (``score_labels_whole``). Prints seconds
per row both ways and the speedup against the 4x target, then how far p(A) differs:

- reuse against the whole evaluation: the two take different batch shapes, so llama.cpp may pick other
  SIMD kernels and p(A) differs in the last digits (0.012 was measured on an AVX2 machine); the tests
  allow ``REUSE_TOLERANCE``;
- reuse against the same prompts each evaluated from an empty cache: this must be exactly 0, since a
  row's p(A) may not depend on what was evaluated before it.

It reports; it never asserts timings. The two modes alternate for ``--rounds`` rounds and the fastest
round of each is reported (as ``timeit`` does): other processes on a small machine only ever make a round
slower. The reuse figure includes the first row, which evaluates the whole prefix.
"""

from __future__ import annotations

import argparse
import time

import anyio

from asyncpipe.llm.base import Message
from asyncpipe.llm.local import LocalProvider, resolve_model

TARGET_SPEEDUP = 4.0
#: the bound tests/test_local_model.py allows between reuse and a whole evaluation (see its comment)
REUSE_TOLERANCE = 0.05

DESCRIPTION = (
    "Rows in set A are customer reviews of kitchen appliances, written in the first person by people who "
    "bought the product themselves. They are short, informal and emotional: they use exclamation marks, "
    "contractions and everyday words, mention how long the owner has used the appliance, and usually end "
    "with a recommendation or a warning to other buyers. Rows in set B are summaries of local news stories "
    "written by reporters in the third person. They are longer, neutral and formal: they name officials, "
    "institutions and places, give dates and figures, attribute claims to sources with verbs such as said "
    "or announced, and avoid any personal opinion. When a row mixes both styles, decide by the point of "
    "view: a first-person account of using a product belongs to set A, a report about other people belongs "
    "to set B."
)

ROWS = [
    "This blender is a beast, I use it every morning!",
    "The mayor said the bridge will reopen in March.",
    "Kettle broke after two weeks. Do not buy.",
    "Officials announced a 3% rise in bus fares on Monday.",
    "Love my new toaster, perfect golden bread every time.",
    "The school board approved a new library budget.",
    "Microwave is loud but heats fast, happy overall.",
    "Police closed Main Street after a water pipe burst.",
    "Our coffee machine leaks a bit, still worth it.",
    "The hospital opened a new wing for children.",
    "I returned the air fryer, the basket scratched.",
    "Council members voted 5 to 2 to extend the park.",
    "Best rice cooker I have ever owned, honestly.",
    "A local bakery won the regional bread award.",
    "The dishwasher is quiet and saves so much time!",
    "Firefighters rescued two hikers near the river.",
    "Mixer arrived dented, customer service was slow.",
    "The library will stay open late during exams.",
    "I wish this slow cooker had a timer.",
    "Residents protested the new parking rules on Friday.",
]


def prompts() -> list[list[Message]]:
    system = Message(
        role="system",
        content=f"You tell two datasets apart. {DESCRIPTION} Answer with one letter: A or B.",
    )
    return [
        [system, Message(role="user", content=f"Row: {row}\nWhich set is this row from? Answer A or B.")]
        for row in ROWS
    ]


async def score_all(
    provider: LocalProvider, batch: list[list[Message]], *, mode: str
) -> tuple[float, list[float]]:
    """Seconds per row and the p(A) of each prompt. ``mode``: "reuse" (one warm cache for the batch),
    "fresh" (the cache emptied before every prompt) or "whole" (every prompt in one evaluation)."""
    provider.reset_prefix_cache()
    p_a: list[float] = []
    start = time.perf_counter()
    for messages in batch:
        if mode == "whole":
            score = await provider.score_labels_whole(messages)
        else:
            if mode == "fresh":
                provider.reset_prefix_cache()
            score = await provider.score_labels(messages)
        p_a.append(score.p_a)
    return (time.perf_counter() - start) / len(batch), p_a


def max_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


async def main_async(spec: str, n_threads: int | None, rounds: int) -> None:
    provider = resolve_model(spec, n_threads=n_threads)
    batch = prompts()
    _, tokens = provider.render_prompt(batch[0])
    await provider.score_labels(batch[0])  # load the model and warm up before timing
    whole_s = reuse_s = float("inf")
    whole_p: list[float] = []
    reuse_p: list[float] = []
    for _ in range(rounds):
        # each mode starts from an empty cache, so neither benefits from the other
        seconds, whole_p = await score_all(provider, batch, mode="whole")
        whole_s = min(whole_s, seconds)
        seconds, reuse_p = await score_all(provider, batch, mode="reuse")
        reuse_s = min(reuse_s, seconds)
    _, fresh_p = await score_all(provider, batch, mode="fresh")
    await provider.aclose()

    drift = max_difference(reuse_p, whole_p)
    history = max_difference(reuse_p, fresh_p)
    speedup = whole_s / reuse_s
    print(
        f"model {provider.model} ({provider.model_path.name}), {len(batch)} rows, {len(tokens)} prompt tokens, best of {rounds} rounds"
    )
    print(f"{'':24}{'whole evaluation':>18}{'prefix reuse':>16}")
    print(f"{'seconds per row':24}{whole_s:>18.3f}{reuse_s:>16.3f}")
    print(f"{'rows per second':24}{1 / whole_s:>18.2f}{1 / reuse_s:>16.2f}")
    print(
        f"speedup {speedup:.1f}x: target of {TARGET_SPEEDUP:.0f}x {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}"
        f"; p(A) reuse vs whole: max difference {drift:.2e} "
        f"({'within' if drift <= REUSE_TOLERANCE else 'OUTSIDE'} the tests' bound {REUSE_TOLERANCE})"
    )
    print(
        f"p(A) reuse vs each row from an empty cache: max difference {history:.2e} "
        f"({'identical, as promised' if history == 0 else 'NOT identical: p(A) depends on history'})"
    )
    print(f"p(A) range over rows {min(reuse_p):.3f}..{max(reuse_p):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="'local' or gguf:/path/to/model.gguf")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest is reported")
    args = parser.parse_args()
    anyio.run(main_async, args.model, args.threads, max(1, args.rounds))


if __name__ == "__main__":
    main()
