"""``asyncpipe compare``: describe → classify → refine, then save the best classifier and classify
every row with it.

Each step shows the describer one aligned batch from A and from B (and, from the second step on, the
earlier descriptions with their metrics and rows the last classifier got wrong), then classifies the
batch's rows and the held-out validation rows with the new description, each row alone in a fresh
context. Validation rows are never shown to the describer. The step with the best validation log loss
wins. Every answer is cached as it arrives, so an interrupted run resumes for free.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from asyncpipe import __version__
from asyncpipe.config import RunConfig, model_facts
from asyncpipe.data.pairing import Plan
from asyncpipe.data.render import CUT_MARKER, cut_text
from asyncpipe.errors import BatchFilesWritten, FatalAPIError, UserError
from asyncpipe.llm.base import ClassifyMode, Message
from asyncpipe.llm.pool import ModelPool, build_pool
from asyncpipe.llm.stats import RunStats
from asyncpipe.llm.stopping import Stopper
from asyncpipe.metrics import fit_bias_offset, summarize
from asyncpipe.metrics.stopping import (
    RaceVerdict,
    patience_ran_out,
    race_pairs,
    race_verdict,
    row_log_losses,
)
from asyncpipe.pipeline import artifacts
from asyncpipe.pipeline.batch_pass import (
    batch_final_pass,
    final_requests,
    open_batches_note,
    progress_display,
)
from asyncpipe.pipeline.fanout import Scores, classify_rows
from asyncpipe.pipeline.inputs import load_sides_for, plan_for, test_split_warning
from asyncpipe.pipeline.outputs import (
    prepare_output_dir,
    run_fingerprint,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
    write_yaml_atomic,
)
from asyncpipe.pipeline.progress import Reporter, percent
from asyncpipe.pipeline.property_stage import PropertyResult, rows_to_check, run_property_stage
from asyncpipe.prompts.build import (
    HistoryEntry,
    WrongRow,
    classify_messages,
    describe_messages,
    swap_dataset_names,
    unswappable_mentions,
)
from asyncpipe.report import render_report

# What run.json adds up over the invocations of one run (a run interrupted and continued).
SPENDING_KEYS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "estimated_cost_usd",
    "invocations",
)
# A conservative characters-per-token figure for fitting text into a context window (dense text and
# other languages run below the usual four).
CHARS_PER_TOKEN_LOW = 3.0


@dataclass(frozen=True)
class Race:
    """How a step's description fared in its race against the best step so far."""

    against: int  # the best step's number
    verdict: RaceVerdict

    def to_dict(self) -> dict:
        v = self.verdict
        return {
            "against": self.against,
            "rows": v.rows,
            "mean_difference": v.mean_difference,
            "lower_bound": v.lower_bound,
            "go_on": v.go_on,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Race:
        verdict = RaceVerdict(
            bool(data["go_on"]), int(data["rows"]), float(data["mean_difference"]), float(data["lower_bound"])
        )
        return cls(int(data["against"]), verdict)


@dataclass(frozen=True)
class StepResult:
    step: int
    epoch: int
    description: str
    pairs: tuple[int, ...]
    train: dict
    #: over every validation row, or, when the description lost its race, over the race rows only
    validation: dict | None
    wrong: tuple[WrongRow, ...]
    #: None when the step ran no race (racing off, the first step, nothing to save)
    race: Race | None = None
    #: p(A) per validation row (A rows, then B rows, in validation order; None where not scored),
    #: kept with racing on so that later steps, and a resumed run, can race against this one
    validation_p_a: tuple[float | None, ...] | None = None

    @property
    def validation_partial(self) -> bool:
        """Scored on the race rows only: it lost the race."""
        return self.race is not None and not self.race.verdict.go_on


@dataclass(frozen=True)
class Outcome:
    out_dir: Path
    status: str
    selected: StepResult | None
    final: dict | None
    index_html: Path | None
    #: both roles added up, and the estimated cost of this run (None when a price is unknown)
    stats: RunStats | None = None
    cost: float | None = None
    #: each role's counts, for its share of prompt tokens served from the provider's cache
    by_role: dict[str, RunStats] | None = None
    #: where and why the describe loop ended (run.json's ``loop``)
    loop: dict | None = None
    #: the properties stage (None when the run did not get that far)
    properties: PropertyResult | None = None
    #: said before any request was sent (a test split too small to be significant), repeated at the end
    warnings: tuple[str, ...] = ()
    #: why final-pass rows went unscored, most frequent first: (reason, rows)
    unscored_reasons: tuple[tuple[str, int], ...] = ()


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


class Run:
    """One comparison in one output directory."""

    def __init__(
        self, cfg: RunConfig, reporter: Reporter, stats: RunStats, pool: ModelPool, *, owns_pool: bool
    ) -> None:
        self.cfg = cfg
        self.reporter = reporter
        self.stats = stats  # the classifier's: what the progress display shows
        self.describe_stats = RunStats()
        #: the final pass's answers that came through the Batch API (priced at the batch discount)
        self.batch_stats = RunStats()
        self._warned: set[str] = set()  # descriptions already warned about (--swap-labels)
        self.out = cfg.output
        self.pool = pool
        self.owns_pool = owns_pool
        self.steps: list[StepResult] = []
        self.metric_rows: list[dict] = []
        self.loop_end: dict | None = None
        self.started = time.time()
        self.run_info: dict = {}

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        self.side_a, self.side_b, self.layout = load_sides_for(cfg)
        n_a, n_b = len(self.side_a.texts), len(self.side_b.texts)
        self.n_pairs = min(n_a, n_b)
        self.plan: Plan = plan_for(cfg, self.n_pairs)
        self.validation = self.plan.validation
        self.race_pairs = race_pairs(self.validation)
        self.warnings: list[str] = []
        if warning := test_split_warning(cfg, self.plan):
            self.warnings.append(warning)
        # checks the models (a missing GGUF, a model without logprobs) before anything is written
        self.pool.provider(cfg.classify_model, "classify")
        self.pool.provider(cfg.describe_model, "describe")
        self.fingerprint = run_fingerprint(cfg.fingerprint_dict(), [cfg.file_a, cfg.file_b])
        # only now, with every input checked, does anything get written
        self.continuing = prepare_output_dir(
            self.out,
            self.fingerprint,
            command="compare",
            force=cfg.force,
            resume=cfg.resume,
            settings=cfg.fingerprint_dict(),
        )
        self.earlier = self.earlier_spending() if self.continuing else {}
        self._make_clients()
        for warning in self.warnings:  # before any request is sent
            self.reporter.log(f"warning: {warning}")
        if n_a != n_b:
            self.reporter.log(
                f"note: A has {n_a} rows and B has {n_b}; pairing the first {self.n_pairs}. "
                "The final classification still covers every row of both files."
            )
        cut = self.side_a.n_cut + self.side_b.n_cut
        if cut:
            self.reporter.log(
                f"note: {cut} row(s) longer than {cfg.max_row_chars} characters were cut (marked in the text)"
            )

    def _make_clients(self) -> None:
        cfg = self.cfg
        self.pool.open_cache(cfg.cache_path or cfg.output / "cache.sqlite")
        self.classifier = self.pool.client(cfg.classify_model, self.stats)
        self.describer = self.pool.client(cfg.describe_model, self.describe_stats)
        self.reporter.limiter = self.classifier.limiter

    async def close(self) -> None:
        if self.owns_pool:
            await self.pool.aclose()

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        self.write_run_json("running")
        restored = self.restore_steps() if self.continuing else []
        for number, (epoch, batch_index) in enumerate(self.plan.steps, start=1):
            pairs = self.plan.batches[batch_index]
            if restored and (restored[0].step, restored[0].epoch, restored[0].pairs) == (
                number,
                epoch,
                pairs,
            ):
                result = restored.pop(0)
                self.reporter.log(
                    f"step {number}/{len(self.plan.steps)}: done in an earlier run (steps.jsonl)"
                )
            else:
                restored = []
                result = await self.step(number, epoch, pairs)
            self.steps.append(result)
            self.metric_rows.append(
                artifacts.metrics_row("step", number, epoch, "train", "raw", result.train)
            )
            if result.validation is not None:
                split = "validation_partial" if result.validation_partial else "validation"
                self.metric_rows.append(
                    artifacts.metrics_row("step", number, epoch, split, "raw", result.validation)
                )
            losses = [self.selection_loss(s) for s in self.steps]
            if number < len(self.plan.steps) and patience_ran_out(losses, self.cfg.patience):
                self.end_loop(f"no improvement in {self.cfg.patience} steps", early=True)
                self.write_progress()
                break
            if number == len(self.plan.steps):
                self.end_loop(self.plan_end_reason(), early=False)
            self.write_progress()
        selected, reason = self.select()
        return await self.finish(selected, reason)

    def plan_end_reason(self) -> str:
        planned = len(self.plan.batches) * self.cfg.epochs
        if len(self.plan.steps) < planned:
            return f"--max-steps {len(self.plan.steps)} reached"
        return "all batches done"

    def end_loop(self, reason: str, *, early: bool) -> None:
        """Say where and why the describe loop ended (terminal, run.json, report)."""
        done, planned = len(self.steps), len(self.plan.steps)
        self.loop_end = {"reason": reason, "after_step": done, "steps_planned": planned, "early": early}
        if early:
            best, _ = self.select()
            self.reporter.log(
                f"describe loop ends after step {done} of {planned}: {reason} (the best is step {best.step}; "
                f"{planned - done} step(s) not bought; --patience 0 runs them all)"
            )

    def restore_steps(self) -> list[StepResult]:
        """The steps an earlier, interrupted or finished, run of this very command completed.

        They are taken as recorded rather than recomputed: a row that was unscored then and is answered
        now would change a step's metrics, hence every later describe prompt, and every later step
        would be bought again. Anything unreadable is simply not restored (the cache still helps)."""
        path = self.out / "steps.jsonl"
        restored: list[StepResult] = []
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                data = json.loads(line)
                wrong = tuple(
                    WrongRow(
                        w["label"],
                        float(w["p_a"]),
                        (self.side_a if w["label"] == "A" else self.side_b).texts[w["row"]],
                        w["row"],
                    )
                    for w in data.get("wrong", [])
                )
                metrics = data["metrics"]
                race = Race.from_dict(data["race"]) if data.get("race") else None
                p_a = data.get("validation_p_a")
                p_a = tuple(None if v is None else float(v) for v in p_a) if p_a is not None else None
                restored.append(
                    StepResult(int(data["step"]), int(data["epoch"]), str(data["description"]), tuple(data["pairs"]),
                               metrics["train"], metrics["validation"], wrong, race, p_a)
                )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return restored
        return restored

    def history(self) -> list[HistoryEntry]:
        if not self.steps:
            return []
        best, _ = self.select()
        keep = self.steps[-self.cfg.history_size :] if self.cfg.history_size > 0 else []
        if best not in keep:
            keep = [best, *keep]
        return [
            HistoryEntry(
                s.step, s.description, s.train, s.validation, best=s is best, partial=s.validation_partial
            )
            for s in keep
        ]

    async def step(self, number: int, epoch: int, pairs: tuple[int, ...]) -> StepResult:
        cfg = self.cfg
        total = len(self.plan.steps)
        self.reporter.log(f"step {number}/{total}: describing {len(pairs)} rows of A and of B")
        messages = self.describe_prompt(pairs)
        generation = await self.describer.generate(
            messages,
            max_tokens=cfg.describe_max_tokens,
            temperature=cfg.describe_temperature,
            seed=cfg.seed + number,
            reasoning_effort=cfg.reasoning_effort,
        )
        description = generation.text
        train_rows = [("A", i) for i in pairs] + [("B", i) for i in pairs]
        val_rows = [("A", i) for i in self.validation] + [("B", i) for i in self.validation]
        phase = f"step {number}/{total}: classifying"
        opponent = self.race_opponent()
        race: Race | None = None
        if opponent is None:
            scores = await self.classify(description, train_rows + val_rows, phase)
            p = scores.values()
            train_p, val_p = p[: len(train_rows)], p[len(train_rows) :]
            validation = (
                summarize(artifacts.preds_frame([r[0] for r in val_rows], [r[1] for r in val_rows], val_p))
                if val_rows
                else None
            )
        else:
            # the race: the batch and the race rows first; the other validation rows only if it could win
            chosen = set(self.race_pairs)
            first = [k for k, (_, i) in enumerate(val_rows) if i in chosen]
            rest = [k for k, (_, i) in enumerate(val_rows) if i not in chosen]
            rows = train_rows + [val_rows[k] for k in first]
            p = (
                await self.classify(description, rows, f"{phase} (race: {len(first)} held-out rows)")
            ).values()
            train_p = p[: len(train_rows)]
            val_p = [None] * len(val_rows)
            for k, value in zip(first, p[len(train_rows) :], strict=True):
                val_p[k] = value
            labels = [val_rows[k][0] for k in first]
            assert opponent.validation_p_a is not None
            verdict = race_verdict(
                row_log_losses(labels, [val_p[k] for k in first]),
                row_log_losses(labels, [opponent.validation_p_a[k] for k in first]),
            )
            race = Race(opponent.step, verdict)
            if verdict.go_on:
                others = [val_rows[k] for k in rest]
                more = (await self.classify(description, others, f"{phase} the other held-out rows")).values()
                for k, value in zip(rest, more, strict=True):
                    val_p[k] = value
                validation = summarize(
                    artifacts.preds_frame([r[0] for r in val_rows], [r[1] for r in val_rows], val_p)
                )
            else:
                validation = summarize(
                    artifacts.preds_frame(labels, [val_rows[k][1] for k in first], [val_p[k] for k in first])
                )
        train = summarize(
            artifacts.preds_frame([r[0] for r in train_rows], [r[1] for r in train_rows], train_p)
        )
        wrong = self.wrong_rows(train_rows, train_p)
        message = f"step {number}/{total}: accuracy {percent(train['accuracy'])} on its batch"
        if race is not None and not race.verdict.go_on:
            message += (
                f", {percent(validation['accuracy'])} on {race.verdict.rows} held-out rows; "
                f"{race.verdict.describe()} (step {race.against}), so its other "
                f"{len(val_rows) - race.verdict.rows} held-out rows are not bought"
            )
        elif validation:
            message += f", {percent(validation['accuracy'])} held out"
        self.reporter.log(message)
        return StepResult(
            number,
            epoch,
            description,
            tuple(pairs),
            train,
            validation,
            tuple(wrong),
            race,
            tuple(val_p) if self.cfg.race and val_rows else None,
        )

    def race_opponent(self) -> StepResult | None:
        """The step a new description races against: the best so far, if its validation p(A) per row
        is known; None when there is no race (racing off, no earlier step, or the race rows are all
        the validation rows, so a race would save nothing)."""
        if not self.cfg.race or not self.steps or len(self.race_pairs) >= len(self.validation):
            return None
        best, _ = self.select()
        if self.selection_loss(best) is None or best.validation_p_a is None:
            return None
        return best

    def describe_prompt(self, pairs: tuple[int, ...], per_row_chars: int | None = None) -> list[Message]:
        """The describe request; when the describer's context is known and the prompt would not fit,
        every example is cut to the same share of the room left (cut visibly), rather than the prompt
        losing its middle."""
        examples_a = [self.side_a.texts[i] for i in pairs]
        examples_b = [self.side_b.texts[i] for i in pairs]
        wrong = list(self.steps[-1].wrong) if self.steps else []
        if per_row_chars is not None:
            examples_a = [cut_text(t, per_row_chars)[0] for t in examples_a]
            examples_b = [cut_text(t, per_row_chars)[0] for t in examples_b]
            wrong = [WrongRow(w.label, w.p_a, cut_text(w.text, per_row_chars)[0]) for w in wrong]
        messages = describe_messages(
            self.cfg.templates,
            examples_a=examples_a,
            examples_b=examples_b,
            extra_prompt=self.cfg.extra_prompt,
            history=self.history(),
            wrong=wrong,
        )
        context = getattr(self.describer.provider, "context_tokens", None)
        if per_row_chars is not None or not context:
            return messages
        room = int((context - self.cfg.describe_max_tokens) * CHARS_PER_TOKEN_LOW)
        total = sum(len(m["content"]) for m in messages)
        if total <= room:
            return messages
        rows = examples_a + examples_b + [w.text for w in wrong]
        fixed = total - sum(len(t) for t in rows)
        marker = len(CUT_MARKER) + 8  # the cut marker itself takes room
        share = max(80, (room - fixed) // max(1, len(rows)) - marker)
        return self.describe_prompt(pairs, per_row_chars=share)

    def wrong_rows(self, rows: list[tuple[str, int]], p: list[float | None]) -> list[WrongRow]:
        """The most confidently wrong training rows, alternating A and B (never validation rows)."""
        wrong = {"A": [], "B": []}
        for (label, i), value in zip(rows, p, strict=True):
            if value is None or (value >= 0.5) == (label == "A"):
                continue
            side = self.side_a if label == "A" else self.side_b
            wrong[label].append(WrongRow(label, value, side.texts[i], i))
        for label in wrong:
            wrong[label].sort(key=lambda w: abs(w.p_a - 0.5), reverse=True)
        merged = [w for pair in zip(wrong["A"], wrong["B"], strict=False) for w in pair]
        longer = wrong["A"] if len(wrong["A"]) > len(wrong["B"]) else wrong["B"]
        merged += longer[len(merged) // 2 :]
        return merged[: self.cfg.wrong_examples]

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
        texts = [(self.side_a if label == "A" else self.side_b).texts[i] for label, i in rows]
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

    def selection_loss(self, result: StepResult) -> float | None:
        """What steps are chosen by (and patience counts): the validation log loss over every
        validation row, or without validation rows the log loss on the step's own batch. A step that
        lost its race has none: it was not scored on every validation row. An unscored row counts as a
        coin flip (ln 2), so a description that makes the model abstain on hard rows gains nothing."""
        if self.validation and result.validation_partial:
            return None
        summary = result.validation if self.validation else result.train
        if not summary:
            return None
        loss = summary.get("selection_log_loss")
        return summary.get("log_loss") if loss is None else loss  # older steps.jsonl: no selection loss

    async def batch_pass(self, description: str, rows: list[tuple[str, int]]) -> None:
        """``--batch-api``: the final pass's requests as batch jobs first; their answers fill the cache."""
        assert self.cfg.batch is not None
        messages, swapped = self.classifier_prompts(description)
        texts = [(self.side_a if label == "A" else self.side_b).texts[i] for label, i in rows]
        show = progress_display(self.reporter)

        def on_progress(summary: dict) -> None:
            show(summary)
            self.run_info["batches"] = {k: v for k, v in summary.items()}
            self.write_run_json("running")

        try:
            await batch_final_pass(
                self.classifier,
                self.cfg.batch,
                self.out,
                final_requests(self.classifier, messages, swapped, texts),
                self.reporter,
                self.batch_stats,
                on_progress,
            )
        finally:
            self.reporter.end_phase()

    def select(self) -> tuple[StepResult, str]:
        """Best validation selection loss (ties go to the later step); without validation rows, best
        on the step's own batch. Steps that lost their race are not candidates. See
        :meth:`selection_loss`: an unscored row counts as a coin flip (ln 2)."""
        split = "validation" if self.validation else "train"
        best, best_loss = None, None
        for result in self.steps:
            loss = self.selection_loss(result)
            if loss is None:
                continue
            if best_loss is None or loss <= best_loss:
                best, best_loss = result, loss
        if best is None:
            return self.steps[-1], "no step had scored rows; the last step is kept"
        where = (
            "held-out validation rows"
            if split == "validation"
            else "its own batch (no validation rows were set aside)"
        )
        return best, (
            f"lowest log loss on {where}, an unscored row counted as a coin flip (ln 2): {best_loss:.4f} "
            "(ties go to the later step)"
        )

    # -- the end ----------------------------------------------------------------------------------
    async def finish(self, selected: StepResult, reason: str) -> Outcome:
        cfg = self.cfg
        self.reporter.log(f"selected step {selected.step}: {reason}")
        all_rows = [("A", i) for i in range(len(self.side_a.texts))] + [
            ("B", i) for i in range(len(self.side_b.texts))
        ]
        if cfg.batch is not None:
            await self.batch_pass(selected.description, all_rows)
        elif note := open_batches_note(self.out):
            self.reporter.log(note)
        scores = await self.classify(selected.description, all_rows, "final classification of every row")
        shown = self.plan.shown
        held = set(self.validation)

        test = set(self.plan.test)

        def split_of(i: int) -> str:
            if i < self.n_pairs and i in held:
                return "validation"
            if i < self.n_pairs and i in test:
                return "test"
            return "train" if i in shown else "rest"

        frame = artifacts.raw_predictions(
            [label for label, _ in all_rows],
            [i for _, i in all_rows],
            [split_of(i) for _, i in all_rows],
            [(self.side_a if label == "A" else self.side_b).texts[i] for label, i in all_rows],
            scores,
        )
        fit_on = "validation" if held else "train"
        offset = fit_bias_offset(frame.filter(pl.col("split") == fit_on))
        predictions = artifacts.predictions_with_correction(frame, offset)
        final = artifacts.final_summaries(predictions)
        found = await self.find_properties(selected, split_of)
        for correction, per_split in final.items():
            for split, summary in per_split.items():
                self.metric_rows.append(
                    artifacts.metrics_row("final", selected.step, None, split, correction, summary)
                )
        messages, swapped = self.classifier_prompts(selected.description)
        document = artifacts.classifier_document(
            model=cfg.classify_model,
            base_url=cfg.base_url,
            messages=messages,
            swapped_messages=swapped,
            description=selected.description,
            layout=self.layout.to_dict(),
            labels=self.labels(),
            selected={
                "step": selected.step,
                "epoch": selected.epoch,
                "reason": reason,
                "metrics": {"train": selected.train, "validation": selected.validation},
            },
            bias_offset=offset,
            bias_fitted_on=fit_on,
            min_label_mass=cfg.min_label_mass,
            classify_mode=cfg.classify_mode,
        )
        if (entry := found.classifier_entry(cfg)) is not None:
            document["properties"] = entry
        write_parquet_atomic(self.out / "predictions.parquet", predictions)
        if found.table is not None:
            write_parquet_atomic(self.out / "properties.parquet", found.table)
            write_parquet_atomic(self.out / "property_scores.parquet", found.scores)
        write_yaml_atomic(self.out / "classify.yaml", document)
        self.run_info.update(
            selected_step=selected.step,
            selection_reason=reason,
            bias_offset=offset,
            final=final,
            properties=found.run_record(),
        )
        self.write_progress(status="complete")
        total, cost = self.totals()
        roles = {"describe": self.describe_stats, "classify": self.stats}
        if self.batch_stats.requests:
            roles["classify (batch)"] = self.batch_stats
        return Outcome(
            self.out,
            "complete",
            selected,
            final,
            self.out / "index.html",
            total,
            cost,
            roles,
            self.loop_record(),
            found,
            tuple(self.warnings),
            artifacts.unscored_reasons(predictions),
        )

    async def find_properties(self, selected: StepResult, split_of) -> PropertyResult:
        """The properties stage: listed from the chosen description and its batch, checked on the
        held-out pairs (validation and test), or on every row with ``--properties-on all``."""
        held = [i for i in range(self.n_pairs) if split_of(i) in ("validation", "test")]
        return await run_property_stage(
            self.cfg,
            describer=self.describer,
            checker=self.classifier,
            description=selected.description,
            shown_a=[self.side_a.texts[i] for i in selected.pairs],
            shown_b=[self.side_b.texts[i] for i in selected.pairs],
            rows=rows_to_check(self.cfg, self.side_a.texts, self.side_b.texts, held, split_of),
            reporter=self.reporter,
        )

    # -- writing ----------------------------------------------------------------------------------
    def labels(self) -> dict:
        return {"A": self.side_a.to_dict(), "B": self.side_b.to_dict()}

    def totals(self) -> tuple[RunStats, float | None]:
        """Both roles' counts added up, and the cost with each role at its own model's price (None
        when either price is unknown)."""
        describe = self.describe_stats.cost(model_facts(self.cfg.describe_model).price)
        classify_facts = model_facts(self.cfg.classify_model)
        classify = self.stats.cost(classify_facts.price)
        batch = self.batch_stats.cost(classify_facts.batch_price) if self.batch_stats.requests else 0.0
        cost = None if describe is None or classify is None or batch is None else describe + classify + batch
        return self.stats + self.describe_stats + self.batch_stats, cost

    def earlier_spending(self) -> dict:
        """What earlier invocations of this very run (interrupted, then continued) sent and cost."""
        try:
            earlier = json.loads((self.out / "run.json").read_text(encoding="utf-8"))["stats"][
                "all_invocations"
            ]
            return {k: earlier[k] for k in SPENDING_KEYS if isinstance(earlier.get(k), int | float)}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def stats_record(self) -> dict:
        """This invocation's counts and cost, by role, and the running total over every invocation."""
        total, cost = self.totals()
        now = {**total.to_dict(), "estimated_cost_usd": cost, "invocations": 1}
        all_invocations = {
            k: (now[k] + self.earlier[k]) if now[k] is not None and k in self.earlier else now[k]
            for k in SPENDING_KEYS
        }
        return {
            **now,
            "cached_share": cached_share(total),
            "by_role": {
                role: {**stats.to_dict(), "cached_share": cached_share(stats)}
                for role, stats in (
                    ("describe", self.describe_stats),
                    ("classify", self.stats),
                    ("classify_batch", self.batch_stats),
                )
            },
            "all_invocations": all_invocations,
        }

    def loop_record(self) -> dict:
        """How the describe loop went: patience and racing as configured, where and why it ended, and
        which steps lost their race (scored on the race rows only)."""
        raced = [s for s in self.steps if s.race is not None]
        return {
            "patience": self.cfg.patience,
            "race": self.cfg.race,
            "race_pairs": len(self.race_pairs) if self.cfg.race else None,
            "validation_pairs": len(self.validation),
            "steps_raced": len(raced),
            "steps_lost_race": [s.step for s in raced if not s.race.verdict.go_on],
            **(
                self.loop_end
                or {"reason": None, "after_step": None, "steps_planned": len(self.plan.steps), "early": None}
            ),
        }

    def write_run_json(self, status: str, message: str | None = None) -> None:
        cfg = self.cfg
        finished = status != "running"
        info = {
            "command": "compare",
            "status": status,
            "message": message,
            "version": __version__,
            "fingerprint": self.fingerprint,
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds") if finished else None,
            "wall_seconds": round(time.time() - self.started, 3),
            "labels": self.labels(),
            "models": {"describe": cfg.describe_model, "classify": cfg.classify_model},
            "config": cfg.public_dict(),
            "plan": {
                "pairs": self.n_pairs,
                "validation_pairs": len(self.validation),
                "test_pairs": len(self.plan.test),
                "steps": len(self.plan.steps),
                "steps_done": len(self.steps),
                "rows_cut": self.side_a.n_cut + self.side_b.n_cut,
            },
            "loop": self.loop_record(),
            "warnings": list(self.warnings),
            "stats": self.stats_record(),
            "limiter": self.classifier.limiter.state().to_dict(),
            "packages": package_versions(),
            "selected_step": None,
            "selection_reason": None,
            "bias_offset": None,
            "final": None,
            **self.run_info,
        }
        write_json_atomic(self.out / "run.json", info)

    def write_progress(self, status: str = "running", message: str | None = None) -> None:
        lines = [
            {
                "step": s.step,
                "epoch": s.epoch,
                "description": s.description,
                "pairs": list(s.pairs),
                "metrics": {"train": s.train, "validation": s.validation},
                "wrong": [{"label": w.label, "row": w.row, "p_a": w.p_a} for w in s.wrong],
                # with racing on only, so that a run with it off writes what it always wrote
                **(
                    {
                        "race": s.race.to_dict() if s.race else None,
                        "validation_p_a": list(s.validation_p_a) if s.validation_p_a is not None else None,
                    }
                    if self.cfg.race
                    else {}
                ),
            }
            for s in self.steps
        ]
        write_text_atomic(self.out / "steps.jsonl", "".join(_json_line(line) for line in lines))
        write_parquet_atomic(self.out / "metrics.parquet", artifacts.metrics_frame(self.metric_rows))
        self.write_run_json(status, message)
        render_report(self.out)


def cached_share(stats: RunStats) -> float | None:
    """The share of prompt tokens the provider served from its prompt cache (None: no prompt sent)."""
    return stats.cached_tokens / stats.prompt_tokens if stats.prompt_tokens else None


def _json_line(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False) + "\n"


def make_pool(cfg: RunConfig, api_key: str | None = None, stopper: Stopper | None = None) -> ModelPool:
    return build_pool(
        base_url=cfg.base_url,
        api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
        timeout=cfg.timeout,
        concurrency=cfg.concurrency,
        max_attempts=cfg.max_attempts,
        retry_base_delay=cfg.extra.get("retry_base_delay", 1.0),
        retry_max_delay=cfg.extra.get("retry_max_delay", 60.0),
        rpm=cfg.rpm,
        tpm=cfg.tpm,
        classify_mode=ClassifyMode.parse(cfg.classify_mode),
        stopper=stopper,
    )


async def compare(
    cfg: RunConfig, reporter: Reporter, *, pool: ModelPool | None = None, stopper: Stopper | None = None
) -> Outcome:
    """Run a whole comparison. Bad input raises UserError before anything is written. With a shared
    ``pool`` (``asyncpipe pairs``), the pool's limiter and cache serve this run too; ``stopper`` handles
    Ctrl-C (asyncpipe.llm.stopping)."""
    if cfg.dry_run:  # the command line prints estimate_run(cfg) instead; a dry run must never spend
        raise UserError("a dry run sends nothing: use asyncpipe.pipeline.estimate.estimate_run(cfg)")
    stats = reporter.stats
    run = Run(cfg, reporter, stats, pool or make_pool(cfg, stopper=stopper), owns_pool=pool is None)
    try:
        run.prepare()
    except BaseException:
        await _close_quietly(run)
        raise
    try:
        return await run.run()
    except (FatalAPIError, UserError) as exc:
        run.write_progress(status="failed", message=str(exc))
        raise
    except BatchFilesWritten as exc:
        run.write_progress(status="exported", message=str(exc))
        raise
    except BaseException:
        # Ctrl-C or cancellation: what is finished is in the cache; say how far the run got.
        run.write_progress(
            status="interrupted", message="interrupted; run the same command again to continue"
        )
        raise
    finally:
        await _close_quietly(run)


async def _close_quietly(run: Run) -> None:
    import anyio

    with anyio.CancelScope(shield=True):
        await run.close()


__all__ = ["compare", "Outcome", "UserError"]
