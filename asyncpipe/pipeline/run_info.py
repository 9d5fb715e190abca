"""What run.json says about a compare run besides its results: what it sent and cost, by role and over
every invocation of a run interrupted and continued, and the versions of the packages it ran on."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

from asyncpipe import __version__
from asyncpipe.config import RunConfig
from asyncpipe.data.pairing import Plan
from asyncpipe.llm.stats import RunStats
from asyncpipe.model_facts import model_facts
from asyncpipe.records import RunRecord, StepRecord

# What run.json adds up over the invocations of one run (a run interrupted and continued).
SPENDING_KEYS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "estimated_cost_usd",
    "invocations",
)


@functools.cache
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"asyncpipe": __version__}
    for name in (
        "polars",
        "scipy",
        "aiohttp",
        "anyio",
        "tenacity",
        "plotly",
        "rich",
        "pyyaml",
        "openai",
        "llama-cpp-python",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def cached_share(stats: RunStats) -> float | None:
    """The share of prompt tokens the provider served from its prompt cache (None: no prompt sent)."""
    return stats.cached_tokens / stats.prompt_tokens if stats.prompt_tokens else None


def totals(
    cfg: RunConfig, describe: RunStats, classify: RunStats, batch: RunStats
) -> tuple[RunStats, float | None]:
    """Every role's counts added up, and the cost with each role at its own model's price, the answers
    that came through the Batch API at its batch price (None when a price is unknown)."""
    classify_facts = model_facts(cfg.classify_model)
    costs = [
        describe.cost(model_facts(cfg.describe_model).price),
        classify.cost(classify_facts.price),
        batch.cost(classify_facts.batch_price) if batch.requests else 0.0,
    ]
    cost = None if any(c is None for c in costs) else sum(costs)  # type: ignore[arg-type]
    return classify + describe + batch, cost


def earlier_spending(earlier: RunRecord | None) -> dict:
    """What earlier invocations of this very run (interrupted, then continued) sent and cost."""
    spent = earlier.stats.get("all_invocations") if earlier is not None else None
    if not isinstance(spent, dict):
        return {}
    return {k: spent[k] for k in SPENDING_KEYS if isinstance(spent.get(k), int | float)}


def stats_record(
    cfg: RunConfig, describe: RunStats, classify: RunStats, batch: RunStats, earlier: dict
) -> dict:
    """This invocation's counts and cost, by role, and the running total over every invocation."""
    total, cost = totals(cfg, describe, classify, batch)
    now = {**total.to_dict(), "estimated_cost_usd": cost, "invocations": 1}
    all_invocations = {
        k: (now[k] + earlier[k]) if now[k] is not None and k in earlier else now[k] for k in SPENDING_KEYS
    }
    return {
        **now,
        "cached_share": cached_share(total),
        "by_role": {
            role: {**stats.to_dict(), "cached_share": cached_share(stats)}
            for role, stats in (("describe", describe), ("classify", classify), ("classify_batch", batch))
        },
        "all_invocations": all_invocations,
    }


def loop_record(
    cfg: RunConfig, plan: Plan, steps: Sequence[StepRecord], race_pairs: Sequence[int], loop_end: dict | None
) -> dict:
    """How the describe loop went: patience and racing as configured, where and why it ended, and
    which steps lost their race (scored on the race rows only)."""
    raced = [s for s in steps if s.race is not None]
    unfinished = {"reason": None, "after_step": None, "steps_planned": len(plan.steps), "early": None}
    return {
        "patience": cfg.patience,
        "race": cfg.race,
        "race_pairs": len(race_pairs) if cfg.race else None,
        "validation_pairs": len(plan.validation),
        "steps_raced": len(raced),
        "steps_lost_race": [s.step for s in raced if s.validation_partial],
        **(loop_end or unfinished),
    }
