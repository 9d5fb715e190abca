"""What one comparison costs: every step scored in full against early stopping and racing, side by side.

Run ``python -m bench.bench_cost`` (``make bench-cost``). It writes two files of ``--pairs`` aligned rows
(A's rows mention apples, B's bananas, each row about 600 characters like a real completion) and serves
them from the project's fake OpenAI-compatible server with *scripted* descriptions: step n's description
carries a strength that rises over the first steps and then stops improving (a plateau just below the
best, with some weaker descriptions), and the fake's classifier is as good as that strength, with a
per-row ease and a per-row-and-description noise (:func:`tests.fake_openai.graded_scorer`). The same
command then runs twice on the same data, each in its own output directory with its own cache:

- today's behaviour: ``--patience 0 --race off`` (every batch, every description scored on every
  validation row);
- patience alone: ``--race off`` (to show what each part saves);
- the defaults: ``--patience 5``, racing on.

It also prints what ``--dry-run`` estimates for the defaults: the upper bound, and the earliest stop.

Both use ``--model gpt-4.1-mini`` (so the fake's token counts are priced at its list price) and print
requests, tokens (and the share the fake's prompt cache served), estimated dollars and the selected
step's validation log loss. The target: the defaults spend at most half the dollars, with a selected
validation loss within 0.02 of today's. It reports; it never asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fake_openai import FakeOpenAI, ServerThread, graded_scorer, scripted_describer

REPO = Path(__file__).resolve().parent.parent
TARGET_DOLLARS = 0.5
TARGET_LOSS = 0.02
#: quality by step: rising over five steps, then a plateau that never beats step 5 (the last repeats)
STRENGTHS = [0.3, 0.8, 1.2, 1.45, 1.6, 1.5, 1.15, 1.55, 1.3, 1.0, 1.58, 1.4, 1.5, 1.2, 1.55, 1.35]

MODES = {
    "every step (today)": ["--patience", "0", "--race", "off"],
    "patience 5 only": ["--race", "off"],
    "defaults (patience 5, race)": [],
}

_FILLER = (
    "The answer walks through the question step by step, gives a short example, weighs two options "
    "against each other and ends with a recommendation that the reader can act on straight away. "
)


def write_inputs(folder: Path, pairs: int) -> tuple[Path, Path]:
    paths = []
    for name, fruit in (("a", "apple"), ("b", "banana")):
        path = folder / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for i in range(pairs):
                answer = f"Answer {i}: I would plant a {fruit} tree. " + _FILLER * 3
                handle.write(json.dumps({"question": f"Question {i}?", "answer": answer}) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def run_mode(base_url: str, a: Path, b: Path, out: Path, flags: list[str]) -> dict:
    command = [
        sys.executable, "-m", "asyncpipe", "compare", str(a), str(b), "--base-url", base_url,
        "--model", "gpt-4.1-mini", "--output", str(out), "--quiet", *flags,
    ]  # fmt: skip
    env = {"OPENAI_API_KEY": "sk-bench", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(flags) or 'defaults'} failed:\n{done.stderr}")
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text(encoding="utf-8").splitlines()]
    selected = next(s for s in steps if s["step"] == run["selected_step"])
    return {
        "run": run,
        "steps": len(steps),
        "selected": run["selected_step"],
        "loss": selected["metrics"]["validation"]["log_loss"],
        "seconds": seconds,
    }


def dry_run(base_url: str, a: Path, b: Path, out: Path):
    """What ``--dry-run`` estimates for the defaults (in this process: it sends and writes nothing)."""
    from asyncpipe.cli import build_config, build_parser

    argv = [
        "compare",
        str(a),
        str(b),
        "--base-url",
        base_url,
        "--model",
        "gpt-4.1-mini",
        "--output",
        str(out),
    ]
    cfg = build_config(build_parser().parse_args([*argv, "--dry-run"]), lambda _message: None)
    from asyncpipe.pipeline.estimate import estimate_run

    return estimate_run(cfg)


def row(name: str, result: dict) -> str:
    stats = result["run"]["stats"]
    loop = result["run"].get("loop") or {}
    end = loop.get("reason") or ""
    lost = len(loop.get("steps_lost_race") or [])
    cached = stats["cached_tokens"] / max(1, stats["prompt_tokens"])
    return (
        f"{name:<28} {result['steps']:>5} {stats['requests']:>9,} {stats['prompt_tokens']:>12,} "
        f"{cached:>7.0%} {stats['completion_tokens']:>10,} {stats['estimated_cost_usd']:>9.4f} "
        f"{result['selected']:>8} {result['loss']:>9.4f} {lost:>5}  {end}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=805, help="aligned rows per file (default 805)")
    args = parser.parse_args()
    fake = FakeOpenAI(scorer=graded_scorer(), describer=scripted_describer(STRENGTHS), record=False)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp, ServerThread(fake) as server:
        folder = Path(tmp)
        a, b = write_inputs(folder, args.pairs)
        for index, (name, flags) in enumerate(MODES.items()):
            results[name] = run_mode(server.base_url, a, b, folder / f"out{index}", flags)
        bound = dry_run(server.base_url, a, b, folder / "dry")
    print(
        f"bench-cost: {args.pairs} pairs, batch 16, gpt-4.1-mini prices, scripted description strengths "
        f"{STRENGTHS[:6]}… (best at step {STRENGTHS.index(max(STRENGTHS)) + 1})"
    )
    print(
        f"{'mode':<28} {'steps':>5} {'requests':>9} {'tokens in':>12} {'cached':>7} {'tokens out':>10} "
        f"{'dollars':>9} {'selected':>8} {'val loss':>9} {'lost':>5}  loop end (lost: raced descriptions cut short)"
    )
    for name, result in results.items():
        print(row(name, result))
    spent_by_defaults = results["defaults (patience 5, race)"]["run"]["stats"]
    print(
        f"--dry-run for the defaults: a bound of {bound.describe.requests + bound.classify.requests:,} requests, "
        f"${bound.cost:.4f} (the defaults spent {spent_by_defaults['requests']:,}, "
        f"${spent_by_defaults['estimated_cost_usd']:.4f}); the earliest stop it names: "
        + (
            f"{bound.earliest.describe.requests + bound.earliest.classify.requests:,} requests, ${bound.earliest.cost:.4f}"
            if bound.earliest is not None and bound.earliest.cost is not None
            else "none"
        )
    )
    today, new = results["every step (today)"], results["defaults (patience 5, race)"]
    spent = new["run"]["stats"]["estimated_cost_usd"] / today["run"]["stats"]["estimated_cost_usd"]
    asked = new["run"]["stats"]["requests"] / today["run"]["stats"]["requests"]
    gap = new["loss"] - today["loss"]
    met = spent <= TARGET_DOLLARS and abs(gap) <= TARGET_LOSS
    print(
        f"defaults against today: {spent:.0%} of the dollars, {asked:.0%} of the requests, selected validation "
        f"loss {gap:+.4f} (target: ≤ {TARGET_DOLLARS:.0%} of the dollars within ±{TARGET_LOSS}): "
        f"{'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
