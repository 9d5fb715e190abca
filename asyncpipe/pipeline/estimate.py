"""``asyncpipe compare --dry-run``: what a comparison would send and cost, before anything is spent.

The plan is the one ``compare`` would follow (same loading, pairing and batching), so the request
counts are exact: one describe request per step; per step, every row of the step's batch and every
held-out row from both files classified once (twice with ``--swap-labels``); then every row of both
files once more in the final pass, less the rows the selected step already classified with the same
description (the held-out rows and that step's batch), which come from the response cache.

Tokens are counted with tiktoken when ``config/models.yaml`` names a tokenizer for the model (OpenAI
models), else estimated at four characters per token. tiktoken downloads its encoding files on first
use; offline, and with nothing in its cache, it cannot load them, and the four-characters estimate is
used instead, which the output says. Row tokens are counted exactly on a sample of rows spread over the
files and scaled to all their characters, so a dry run over millions of rows stays quick.

The cost is an upper bound: every step of the plan is taken to run (``--patience`` may end the loop
sooner) and every description to be scored on every held-out row (a description that loses its race is
not), every description is taken to be as long as ``--describe-max-tokens`` allows, every request is
paid at the list price (no provider prefix-cache discount), and answers already in the response cache
are not subtracted. Below the bound it says what early stopping may save at best (the loop ending
``--patience`` steps after the first) and what each lost race saves. Nothing is sent and nothing is
written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from asyncpipe.config import RunConfig
from asyncpipe.llm.base import ClassifyMode
from asyncpipe.llm.openai_http import REASONING_ALLOWANCE, SAMPLE_REASONING_ALLOWANCE
from asyncpipe.metrics.stopping import race_pairs
from asyncpipe.model_facts import ModelFacts, model_facts
from asyncpipe.pipeline.inputs import load_comparison, test_split_warning
from asyncpipe.pipeline.token_count import TokenCounter, count_row_tokens, messages_tokens, token_counter
from asyncpipe.prompts.build import ROW_PLACEHOLDER, classify_messages, describe_messages

#: the metrics lines that come with each earlier description in the describe prompt (a generous guess)
HISTORY_LINES_TOKENS = 80


def _usd(value: float) -> str:
    text = f"{value:.3f}"
    return "$" + (text[:-1] if text.endswith("0") else text)


@dataclass(frozen=True)
class RoleEstimate:
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    counter: TokenCounter
    facts: ModelFacts

    @property
    def cost(self) -> float | None:
        price = self.facts.price
        if price is None:
            return None
        return (self.input_tokens * price.input + self.output_tokens * price.output) / 1e6


@dataclass(frozen=True)
class Estimate:
    steps: int
    pairs: int
    validation_pairs: int
    test_pairs: int
    rows_a: int
    rows_b: int
    classify_during_steps: int
    classify_final: int
    final_from_cache: int
    describe: RoleEstimate
    classify: RoleEstimate
    description_tokens: int
    #: --patience, and the estimate if the loop ended as early as it can (None: it cannot end early)
    patience: int = 0
    earliest: Estimate | None = None
    #: validation pairs a race is run on (0: no race), and the requests and tokens a lost race saves
    race_pairs: int = 0
    race_saves: int = 0
    race_saves_tokens: int = 0
    race_enabled: bool = False
    #: with --batch-api: the final pass, sent as batch jobs at the batch price (``classify`` then
    #: holds the steps' requests only)
    classify_batch: RoleEstimate | None = None
    classify_mode: ClassifyMode = ClassifyMode()
    #: the properties stage: the request that lists them (describe model) and the checks (classify model)
    properties_list: RoleEstimate | None = None
    properties_check: RoleEstimate | None = None
    properties_rows: int = 0
    #: what the run would warn of before its first request (a test split too small to be significant)
    warnings: tuple[str, ...] = ()

    @property
    def roles(self) -> list[tuple[str, RoleEstimate]]:
        """Every priced part of the plan (the batch part's facts carry the batch price)."""
        extra = [
            ("batch   ", self.classify_batch),
            ("properties list", self.properties_list),
            ("property checks", self.properties_check),
        ]
        return [("describe", self.describe), ("classify", self.classify)] + [(n, s) for n, s in extra if s]

    @property
    def cost(self) -> float | None:
        costs = [side.cost for _, side in self.roles]
        return None if any(c is None for c in costs) else sum(costs)  # type: ignore[arg-type]

    def render(self) -> str:
        d, c, batch = self.describe, self.classify, self.classify_batch
        final = f"{self.classify_final:,} in the final pass (its other {self.final_from_cache:,} rows come from the cache)"
        lines = [
            "dry run: nothing was sent and nothing was written",
            f"plan: {self.steps} describe step(s) over {self.pairs} pairs ({self.validation_pairs + self.test_pairs} "
            f"held out: {self.validation_pairs} for validation, {self.test_pairs} for test), "
            f"then a final pass over all {self.rows_a} + {self.rows_b} rows",
            "requests:",
            f"  describe  {d.requests:>12,}  ({d.model})",
            f"  classify  {c.requests:>12,}  ({c.model}): {self.classify_during_steps:,} during the steps"
            + (", online" if batch is not None else f", {final}"),
        ]
        if batch is not None:
            lines.append(f"  batch     {batch.requests:>12,}  ({batch.model}): {final}, as Batch API jobs")
        k, listing = self.properties_check, self.properties_list
        if k is not None and listing is not None:
            lines.append(
                f"  properties  {listing.requests + k.requests:>10,}  ({k.model}): 1 request lists up to "
                f"{k.requests // max(1, self.properties_rows)} properties, then each is checked on "
                f"{self.properties_rows:,} rows" + (", as Batch API jobs" if batch is not None else "")
            )
        lines += [
            "tokens:",
            f"  describe  {d.input_tokens:>12,} in  {d.output_tokens:>10,} out  ({d.counter.method})",
            f"  classify  {c.input_tokens:>12,} in  {c.output_tokens:>10,} out  ({c.counter.method})",
        ]
        if batch is not None:
            lines.append(
                f"  batch     {batch.input_tokens:>12,} in  {batch.output_tokens:>10,} out  ({c.counter.method})"
            )
        if k is not None and listing is not None:
            lines.append(
                f"  properties  {listing.input_tokens + k.input_tokens:>10,} in  "
                f"{listing.output_tokens + k.output_tokens:>10,} out  ({k.counter.method})"
            )
        mode = self.classify_mode
        if mode.sampled:
            how = (
                f"one request per row with n={mode.samples}"
                if c.facts.n
                else f"{mode.samples} requests per row (the model takes no n)"
            )
            lines.append(
                f"  classify by sampling (--classify-mode {mode}): {how}, {mode.samples}× the output tokens"
            )
        for side in (d, c) if d.model != c.model else (c,):
            if side.counter.note:
                lines.append(f"  note: {side.counter.note}")
        lines.append("estimated cost (US$, list prices from config/models.yaml):")
        for name, side in self.roles:
            price = side.facts.price
            if price is None or side.cost is None:
                lines.append(f"  {name}  unknown: no price for {side.model} in config/models.yaml")
            else:
                lines.append(
                    f"  {name}  ${side.cost:,.4f}  ({_usd(price.input)} in / {_usd(price.output)} out per million tokens)"
                )
        total = self.cost
        lines.append(f"  total     {'unknown' if total is None else f'${total:,.4f}'}")
        lines.append(
            f"an upper bound: each description taken as {self.description_tokens:,} tokens (--describe-max-tokens), "
            "every step run and every description scored on every held-out row, every request paid in full "
            "(no prefix-cache discount), answers already in the cache not subtracted"
        )
        lines.extend(self.savings())
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)

    def savings(self) -> list[str]:
        """What early stopping and racing may save below the bound (they never spend more)."""
        lines = ["what early stopping and racing may save:"]
        if self.patience == 0:
            lines.append("  --patience 0: every step runs")
        elif self.earliest is None:
            lines.append(
                f"  --patience {self.patience}: the plan has {self.steps} step(s), too few to end early"
            )
        else:
            e = self.earliest
            share = f" ({e.cost / self.cost:.0%} of the bound)" if e.cost is not None and self.cost else ""
            spent = f", ${e.cost:,.4f}{share}" if e.cost is not None else ""
            lines.append(
                f"  --patience {self.patience}: the loop ends after {self.patience} steps in a row without a lower "
                f"validation loss; at the earliest after step {e.steps} of {self.steps}: {e.describe.requests:,} "
                f"describe and {e.classify.requests:,} classify requests{spent}"
            )
        if self.race_pairs:
            price = self.classify.facts.price
            dollars = (
                f" (${(self.race_saves_tokens * price.input + self.race_saves * price.output) / 1e6:,.4f})"
                if price is not None
                else ""
            )
            lines.append(
                f"  racing: a description that loses its race is scored on {self.race_pairs} of "
                f"{self.validation_pairs} held-out pairs: {self.race_saves:,} classify requests fewer{dollars} per "
                "losing step"
            )
        elif not self.race_enabled:
            lines.append("  --race off: every description is scored on every held-out row")
        else:
            lines.append(
                f"  racing saves nothing here: {self.validation_pairs} held-out pairs are no more than a race's "
                "20 (or there is one step)"
            )
        return lines


def estimate_run(cfg: RunConfig) -> Estimate:
    """What ``compare(cfg)`` would send, from the same plan; reads the input files, nothing else."""
    loaded = load_comparison(cfg)  # as compare loads them
    side_a, side_b, plan = loaded.side_a, loaded.side_b, loaded.plan
    n_pairs = plan.n_pairs
    mode = ClassifyMode.parse(cfg.classify_mode)
    # requests per row (each pays its prompt) and answers per request (each pays its tokens)
    per_row = 2 if cfg.swap_labels else 1
    answers_per_request = 1
    if mode.sampled:
        if model_facts(cfg.classify_model).n:
            answers_per_request = mode.samples  # n answers to one prompt
        else:
            per_row *= mode.samples
    describe_facts, classify_facts = model_facts(cfg.describe_model), model_facts(cfg.classify_model)
    describe_counter = token_counter(describe_facts)
    classify_counter = (
        describe_counter if cfg.classify_model == cfg.describe_model else token_counter(classify_facts)
    )
    description = cfg.describe_max_tokens

    # classify: the prompt around the row, with a description of the assumed length
    prompt = classify_messages(cfg.templates, "")
    prefix = (
        messages_tokens(prompt, classify_counter.count)
        - classify_counter.count(ROW_PLACEHOLDER)
        + description
    )
    _, ratio = count_row_tokens(side_a.texts + side_b.texts, classify_counter)

    def rows_tokens(texts: list[str]) -> int:
        return round(sum(len(t) for t in texts) * ratio)

    validation = list(plan.validation)
    val_texts = [side_a.texts[i] for i in validation] + [side_b.texts[i] for i in validation]
    val_tokens = rows_tokens(val_texts)
    # per step: classify requests and tokens, describe prompt tokens
    step_requests: list[int] = []
    step_tokens: list[int] = []
    describe_in: list[int] = []
    for number, (_, batch_index) in enumerate(plan.steps, start=1):
        batch = plan.batches[batch_index]
        texts_a, texts_b = [side_a.texts[i] for i in batch], [side_b.texts[i] for i in batch]
        n_rows = 2 * len(batch) + len(val_texts)
        step_requests.append(n_rows * per_row)
        step_tokens.append((n_rows * prefix + rows_tokens(texts_a + texts_b) + val_tokens) * per_row)
        messages = describe_messages(
            cfg.templates,
            examples_a=texts_a,
            examples_b=texts_b,
            extra_prompt=cfg.extra_prompt,
            history=[],
            wrong=[],
        )
        tokens = messages_tokens(messages, describe_counter.count)
        if number > 1:  # earlier descriptions (the best one kept besides the last few) and wrong rows
            shown = min(number - 1, cfg.history_size + 1)
            mean_row = rows_tokens(texts_a + texts_b) / max(1, len(texts_a) + len(texts_b))
            tokens += describe_counter.count(cfg.templates.describe_history)
            tokens += shown * (description + HISTORY_LINES_TOKENS) + round(cfg.wrong_examples * mean_row)
        describe_in.append(tokens)
    all_texts = side_a.texts + side_b.texts
    mean_tokens = rows_tokens(all_texts) / max(1, len(all_texts))
    answer_tokens = 1  # one token per label answer
    if mode.sampled and classify_facts.reasons(
        classify_facts.logprobs_effort or classify_facts.sample_effort
    ):
        answer_tokens += SAMPLE_REASONING_ALLOWANCE  # hidden reasoning before each sampled label, at most

    def first_steps(n_steps: int, **extra) -> Estimate:
        """The estimate for the plan's first ``n_steps`` steps, each scored on every validation row."""
        steps = plan.steps[:n_steps]
        # the final pass asks with the selected step's description: that step's rows are already answered
        smallest_batch = min((len(plan.batches[b]) for _, b in steps), default=0)
        from_cache = (len(val_texts) + 2 * smallest_batch) * per_row if steps else 0
        final_requests = len(all_texts) * per_row - from_cache
        final_tokens = round(final_requests * (prefix + mean_tokens))
        during = sum(step_requests[:n_steps])
        batch = None
        online_final, online_final_tokens = final_requests, final_tokens
        if cfg.batch is not None:
            # the final pass at the batch price (config/models.yaml: batch_discount); the steps stay online
            batch_facts = replace(classify_facts, price=classify_facts.batch_price)
            batch = RoleEstimate(
                cfg.classify_model,
                final_requests,
                final_tokens,
                final_requests,
                classify_counter,
                batch_facts,
            )
            online_final, online_final_tokens = 0, 0
        return Estimate(
            steps=n_steps,
            pairs=n_pairs,
            validation_pairs=len(validation),
            test_pairs=len(plan.test),
            rows_a=len(side_a.texts),
            rows_b=len(side_b.texts),
            classify_during_steps=during,
            classify_final=final_requests,
            final_from_cache=from_cache,
            describe=RoleEstimate(
                cfg.describe_model,
                n_steps,
                sum(describe_in[:n_steps]),
                # a reasoning model may also spend its whole hidden-reasoning allowance, billed as output
                n_steps
                * (
                    description + (REASONING_ALLOWANCE if describe_facts.reasons(cfg.reasoning_effort) else 0)
                ),
                describe_counter,
                describe_facts,
            ),
            classify=RoleEstimate(
                cfg.classify_model,
                during + online_final,
                sum(step_tokens[:n_steps]) + online_final_tokens,
                (during + online_final) * answers_per_request * answer_tokens,
                classify_counter,
                classify_facts,
            ),
            description_tokens=description,
            classify_batch=batch,
            properties_list=properties_list,
            properties_check=properties_check,
            properties_rows=checked_rows,
            classify_mode=mode,
            **extra,
        )

    from asyncpipe.pipeline.property_estimate import properties_sides  # it builds on RoleEstimate

    properties_list, properties_check, checked_rows = properties_sides(
        cfg, side_a.texts, side_b.texts, plan, describe_counter, classify_counter, rows_tokens
    )
    n_steps = len(plan.steps)
    earliest = first_steps(cfg.patience + 1) if cfg.patience > 0 and cfg.patience + 1 < n_steps else None
    race = race_pairs(validation) if cfg.race else ()
    racing = len(race) < len(validation) and n_steps > 1
    warning = test_split_warning(cfg, plan)  # what compare says before its first request
    return first_steps(
        n_steps,
        patience=cfg.patience,
        earliest=earliest,
        race_pairs=len(race) if racing else 0,
        race_saves=(len(validation) - len(race)) * 2 * per_row if racing else 0,
        race_saves_tokens=round(
            (
                (len(validation) - len(race)) * 2 * prefix
                + rows_tokens(val_texts) * (1 - len(race) / len(validation))
            )
            * per_row
        )
        if racing
        else 0,
        race_enabled=cfg.race,
        warnings=(warning,) if warning else (),
    )
