"""``--dry-run`` for the properties stage of ``compare``: what it sends at most (an upper bound, since
the describer may list fewer than K properties and identical rows are asked once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from asyncpipe.config import CHARS_PER_TOKEN, RunConfig
from asyncpipe.data.pairing import Plan
from asyncpipe.model_facts import model_facts
from asyncpipe.pipeline.estimate import RoleEstimate
from asyncpipe.pipeline.token_count import TokenCounter, messages_tokens
from asyncpipe.prompts.properties import properties_messages, property_check_messages


def properties_sides(
    cfg: RunConfig,
    texts_a: list[str],
    texts_b: list[str],
    plan: Plan,
    describe_counter: TokenCounter,
    classify_counter: TokenCounter,
    rows_tokens: Callable[[list[str]], int],
) -> tuple[RoleEstimate | None, RoleEstimate | None, int]:
    """The properties stage at its most: one request listing K properties, then K checks per row
    (held-out pairs, or every row with ``properties_on: all``)."""
    if cfg.properties <= 0:
        return None, None, 0
    k = cfg.properties
    if cfg.properties_on == "all":
        checked = list(texts_a) + list(texts_b)
    else:
        held = sorted(set(plan.validation) | set(plan.test))
        checked = [texts_a[i] for i in held] + [texts_b[i] for i in held]
    batch = plan.batches[plan.steps[0][1]] if plan.steps else ()
    listing = properties_messages(
        cfg.templates,
        description="x" * (cfg.describe_max_tokens * CHARS_PER_TOKEN),
        examples_a=[texts_a[i] for i in batch],
        examples_b=[texts_b[i] for i in batch],
        k=k,
    )
    list_side = RoleEstimate(
        cfg.describe_model,
        1,
        messages_tokens(listing, describe_counter.count),
        cfg.describe_max_tokens,
        describe_counter,
        model_facts(cfg.describe_model),
    )
    # a question of about 30 tokens around every row
    prefix = messages_tokens(property_check_messages(cfg.templates, "x" * 120), classify_counter.count)
    requests = k * len(checked)
    facts = model_facts(cfg.classify_model)
    if cfg.batch is not None:  # the checks go with the final pass, at the batch price
        facts = replace(facts, price=facts.batch_price)
    check_side = RoleEstimate(
        cfg.classify_model,
        requests,
        k * (len(checked) * prefix + rows_tokens(checked)),
        requests,
        classify_counter,
        facts,
    )
    return list_side, check_side, len(checked)
