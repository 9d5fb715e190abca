"""``asyncpipe compare``: describe → classify → refine, then save the best classifier and classify
every row with it.

Each step shows the describer one aligned batch from A and from B (and, from the second step on, the
earlier descriptions with their metrics and rows the last classifier got wrong), then classifies the
batch's rows and the held-out validation rows with the new description, each row alone in a fresh
context. Validation rows are never shown to the describer. The step with the best validation log loss
wins. Every answer is cached as it arrives, so an interrupted run resumes for free.

A run is a short sequence of named stages: :meth:`Run.prepare` (read, plan, check the models, open the
output directory), :meth:`Run.loop` (the describe steps, :meth:`Run.step` each), :meth:`Run.finish` (classify every row with the selected description, save the classifier: :mod:`.finish`). What the describer is shown
is :mod:`.describe`, which step wins :mod:`.selection`, and every file goes through one writer,
:class:`~asyncpipe.pipeline.outputs.RunDirectory`.
"""

from __future__ import annotations

import time
from functools import partial

import anyio

from asyncpipe.config import RunConfig
from asyncpipe.errors import BatchFilesWritten, FatalAPIError, UserError
from asyncpipe.llm.base import ClassifyMode, Message, Sampling
from asyncpipe.llm.interrupt import Stopper
from asyncpipe.llm.pool import ModelPool, build_pool
from asyncpipe.llm.stats import RunStats
from asyncpipe.metrics.stopping import patience_ran_out, race_pairs
from asyncpipe.pipeline import artifacts, run_info
from asyncpipe.pipeline.describe import describe_prompt, wrong_rows
from asyncpipe.pipeline.fanout import Scores, classify_rows
from asyncpipe.pipeline.finish import finish
from asyncpipe.pipeline.inputs import Loaded, load_comparison, test_split_warning
from asyncpipe.pipeline.outcome import Outcome, Selection
from asyncpipe.pipeline.outputs import RunDirectory, run_fingerprint
from asyncpipe.pipeline.progress import Reporter, percent
from asyncpipe.pipeline.race import race_opponent, score_step
from asyncpipe.pipeline.selection import select, selection_loss
from asyncpipe.prompts.build import classify_messages, swap_dataset_names, unswappable_mentions
from asyncpipe.records import RunRecord, RunStatus, StepRecord


class Run:
    """One comparison in one output directory."""

    def __init__(self, cfg: RunConfig, reporter: Reporter, pool: ModelPool, *, owns_pool: bool) -> None:
        self.cfg = cfg
        self.reporter = reporter
        self.stats = reporter.stats  # the classifier's: what the progress display shows
        self.describe_stats = RunStats()
        #: the final pass's answers that came through the Batch API (priced at the batch discount)
        self.batch_stats = RunStats()
        self.batches: dict = {}  # the Batch API jobs' progress (--batch-api), for run.json
        self._warned: set[str] = set()  # descriptions already warned about (--swap-labels)
        self.pool = pool
        self.owns_pool = owns_pool
        self.steps: list[StepRecord] = []
        self.metric_rows: list[dict] = []
        self.loop_end: dict | None = None
        self.selection: Selection | None = None
        #: said before any request is sent (a test split too small to be significant), and at the end
        self.warnings: list[str] = []
        self.started = time.time()

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self) -> Loaded:
        """Read and plan, check the models, then open the output directory: bad input stops the run
        before anything is written. Returns what was loaded and planned."""
        cfg = self.cfg
        loaded = load_comparison(cfg)
        if warning := test_split_warning(cfg, loaded.plan):
            self.warnings.append(warning)
        # checks the models (a missing GGUF, a model without logprobs) before anything is written
        self.pool.provider(cfg.classify_model, "classify")
        self.pool.provider(cfg.describe_model, "describe")
        fingerprint = run_fingerprint(cfg.fingerprint_dict(), [cfg.file_a, cfg.file_b])
        # only now, with every input checked, does anything get written
        self.out = RunDirectory.open(
            cfg.output,
            fingerprint,
            command="compare",
            force=cfg.force,
            resume=cfg.resume,
            settings=cfg.fingerprint_dict(),
        )
        self.fingerprint = fingerprint
        self.earlier = run_info.earlier_spending(self.out.earlier)
        self.pool.open_cache(cfg.cache_path or cfg.output / "cache.sqlite")
        self.classifier = self.pool.client(cfg.classify_model, self.stats)
        self.describer = self.pool.client(cfg.describe_model, self.describe_stats)
        self.reporter.limiter = self.classifier.limiter
        for warning in self.warnings:  # before any request is sent
            self.reporter.log(f"warning: {warning}")
        n_a, n_b = len(loaded.side_a.texts), len(loaded.side_b.texts)
        if n_a != n_b:
            self.reporter.log(
                f"note: A has {n_a} rows and B has {n_b}; pairing the first {loaded.n_pairs}. "
                "The final classification still covers every row of both files."
            )
        if loaded.rows_cut:
            self.reporter.log(
                f"note: {loaded.rows_cut} row(s) longer than {cfg.max_row_chars} characters were cut (marked in the text)"
            )
        self.loaded = loaded
        self.race_pairs = race_pairs(loaded.plan.validation)
        return loaded

    async def close(self) -> None:
        if self.owns_pool:
            await self.pool.aclose()

    # -- the loop ---------------------------------------------------------------------------------
    async def loop(self) -> None:
        """Every describe step of the plan (or until patience runs out), each saved as it ends."""
        self.out.save_run(self.record("running"))  # the steps of a run being continued stay as they are
        plan = self.loaded.plan
        restored = self.out.earlier_steps(len(self.loaded.side_a.texts), len(self.loaded.side_b.texts))
        for number, (epoch, batch_index) in enumerate(plan.steps, start=1):
            pairs = plan.batches[batch_index]
            if restored and (restored[0].step, restored[0].epoch, restored[0].pairs) == (
                number,
                epoch,
                pairs,
            ):
                result = restored.pop(0)
                self.reporter.log(f"step {number}/{len(plan.steps)}: done in an earlier run (steps.jsonl)")
            else:
                restored = []
                result = await self.step(number, epoch, pairs)
            self.steps.append(result)
            self.metric_rows.append(
                artifacts.metrics_row("step", number, epoch, "train", "raw", result.train)
            )  # type: ignore[arg-type]
            if result.validation is not None:
                split = "validation_partial" if result.validation_partial else "validation"
                self.metric_rows.append(
                    artifacts.metrics_row("step", number, epoch, split, "raw", result.validation)
                )
            losses = [self.loss(s) for s in self.steps]
            if number < len(plan.steps) and patience_ran_out(losses, self.cfg.patience):
                self.end_loop(f"no improvement in {self.cfg.patience} steps", early=True)
                self.save("running")
                break
            if number == len(plan.steps):
                self.end_loop(self.plan_end_reason(), early=False)
            self.save("running")

    def loss(self, step: StepRecord) -> float | None:
        return selection_loss(step, has_validation=bool(self.loaded.plan.validation))

    def best(self) -> tuple[StepRecord, str]:
        return select(self.steps, has_validation=bool(self.loaded.plan.validation))

    def plan_end_reason(self) -> str:
        plan = self.loaded.plan
        if len(plan.steps) < len(plan.batches) * self.cfg.epochs:
            return f"--max-steps {len(plan.steps)} reached"
        return "all batches done"

    def end_loop(self, reason: str, *, early: bool) -> None:
        """Say where and why the describe loop ended (terminal, run.json, report)."""
        done, planned = len(self.steps), len(self.loaded.plan.steps)
        self.loop_end = {"reason": reason, "after_step": done, "steps_planned": planned, "early": early}
        if early:
            best, _ = self.best()
            self.reporter.log(
                f"describe loop ends after step {done} of {planned}: {reason} (the best is step {best.step}; "
                f"{planned - done} step(s) not bought; --patience 0 runs them all)"
            )

    async def step(self, number: int, epoch: int, pairs: tuple[int, ...]) -> StepRecord:
        """Describe one batch, then score the description on the batch and the validation rows."""
        cfg, total = self.cfg, len(self.loaded.plan.steps)
        self.reporter.log(f"step {number}/{total}: describing {len(pairs)} rows of A and of B")
        messages = describe_prompt(
            cfg, self.loaded, self.steps, pairs, context_tokens=self.describer.provider.context_tokens
        )
        sampling = Sampling(
            cfg.describe_max_tokens, cfg.describe_temperature, cfg.seed + number, cfg.reasoning_effort
        )
        generation = await self.describer.generate(messages, sampling)
        description = generation.text
        train_rows = [("A", i) for i in pairs] + [("B", i) for i in pairs]
        val_rows = [("A", i) for i in self.loaded.plan.validation] + [
            ("B", i) for i in self.loaded.plan.validation
        ]
        phase = f"step {number}/{total}: classifying"
        opponent = race_opponent(cfg, self.steps, self.loaded.plan.validation, self.race_pairs)
        scored = await score_step(
            partial(self.classify, description), train_rows, val_rows, opponent, self.race_pairs, phase
        )
        train, validation = scored.train, scored.validation
        message = f"step {number}/{total}: accuracy {percent(train.accuracy)} on its batch"
        if scored.note and validation is not None:
            message += f", {percent(validation.accuracy)} on {scored.note}"
        elif validation:
            message += f", {percent(validation.accuracy)} held out"
        self.reporter.log(message)
        wrong = wrong_rows(train_rows, scored.train_p, limit=cfg.wrong_examples)
        p_a = tuple(scored.val_p) if cfg.race and val_rows else None
        return StepRecord(
            number,
            epoch,
            description,
            pairs,
            train,
            validation,
            tuple(wrong),
            scored.race,
            p_a,
            raced=cfg.race,
        )

    def classifier_prompts(self, description: str) -> tuple[list[Message], list[Message] | None]:
        """The classify prompt for a description, and its swapped twin under --swap-labels."""
        messages = classify_messages(self.cfg.templates, description)
        if not self.cfg.swap_labels:
            return messages, None
        return messages, classify_messages(self.cfg.templates, swap_dataset_names(description))

    async def classify(self, description: str, rows: list[tuple[str, int]], phase: str) -> Scores:
        messages, swapped = self.classifier_prompts(description)
        if (
            swapped is not None
            and (bare := unswappable_mentions(description))
            and description not in self._warned
        ):
            self._warned.add(description)
            self.reporter.log(
                f"note: this description names dataset B {bare} time(s) without the word 'dataset'; "
                "--swap-labels cannot exchange those, so its swapped prompt may contradict itself"
            )
        texts = [self.loaded.side(label).texts[i] for label, i in rows]
        self.reporter.phase(phase, len(texts))
        try:
            return await classify_rows(
                self.classifier,
                messages,
                texts,
                workers=self.classifier.limiter.maximum,
                swapped_messages=swapped,
                on_done=self.reporter.advance,
                min_label_mass=self.cfg.min_label_mass,
            )
        finally:
            self.reporter.end_phase()

    # -- the end ----------------------------------------------------------------------------------
    async def finish(self) -> Outcome:
        """Classify every row of both files with the selected description; save the classifier."""
        return await finish(self)

    # -- the record -------------------------------------------------------------------------------
    def loop_record(self) -> dict:
        return run_info.loop_record(self.cfg, self.loaded.plan, self.steps, self.race_pairs, self.loop_end)

    def record(self, status: RunStatus, message: str | None = None) -> RunRecord:
        """run.json as of now."""
        cfg, loaded, chosen = self.cfg, self.loaded, self.selection
        return RunRecord.as_of_now(
            "compare",
            status,
            self.started,
            message=message,
            fingerprint=self.fingerprint,
            labels=loaded.labels(),
            models={"describe": cfg.describe_model, "classify": cfg.classify_model},
            classify_mode=cfg.classify_mode,
            config=cfg.public_dict(),
            plan={
                "pairs": loaded.n_pairs,
                "validation_pairs": len(loaded.plan.validation),
                "test_pairs": len(loaded.plan.test),
                "steps": len(loaded.plan.steps),
                "steps_done": len(self.steps),
                "rows_cut": loaded.rows_cut,
            },
            loop=self.loop_record(),
            warnings=tuple(self.warnings),
            stats=run_info.stats_record(cfg, self.describe_stats, self.stats, self.batch_stats, self.earlier),
            batches=self.batches,
            limiter=self.classifier.limiter.state().to_dict(),
            packages=run_info.package_versions(),
            selected_step=chosen.step.step if chosen else None,
            selection_reason=chosen.reason if chosen else None,
            bias_offset=chosen.bias_offset if chosen else None,
            final=chosen.final if chosen else None,
            properties=chosen.properties if chosen else None,
        )

    def save(self, status: RunStatus, message: str | None = None) -> None:
        self.out.save_progress(self.record(status, message), self.steps, self.metric_rows)


def make_pool(cfg: RunConfig, stopper: Stopper | None = None) -> ModelPool:
    """The model pool a comparison's configuration asks for (``pairs`` shares one over every pair)."""
    return build_pool(cfg.pool, classify_mode=ClassifyMode.parse(cfg.classify_mode), stopper=stopper)


async def compare(
    cfg: RunConfig, reporter: Reporter, *, pool: ModelPool | None = None, stopper: Stopper | None = None
) -> Outcome:
    """Run a whole comparison. Bad input raises UserError before anything is written. With a shared
    ``pool`` (``asyncpipe pairs``), the pool's limiter and cache serve this run too; ``stopper`` handles
    Ctrl-C (asyncpipe.llm.interrupt)."""
    if cfg.dry_run:  # the command line prints estimate_run(cfg) instead; a dry run must never spend
        raise UserError("a dry run sends nothing: use asyncpipe.pipeline.estimate.estimate_run(cfg)")
    run = Run(cfg, reporter, pool or make_pool(cfg, stopper), owns_pool=pool is None)
    try:
        run.prepare()
        try:
            await run.loop()
            return await run.finish()
        except (FatalAPIError, UserError, BatchFilesWritten) as exc:  # --batch-api export stops on purpose
            run.save("exported" if isinstance(exc, BatchFilesWritten) else "failed", str(exc))
            raise
        except BaseException:
            # Ctrl-C or cancellation: what is finished is in the cache; say how far the run got.
            run.save("interrupted", "interrupted; run the same command again to continue")
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await run.close()
