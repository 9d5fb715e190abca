"""The sequence of a batch pass: write the request files, upload, submit, poll, import, resubmit.

:meth:`BatchRunner.run` takes the pass's requests as ``(cache key, encoded body)`` pairs, streamed, and
returns once every line has an answer in the response cache, a refusal, or an error the usual retry
policy owns (the caller's online pass sends those). In order:

1. *Write*: requests already answered (in the cache) or covered by a batch of an earlier invocation
   (the ledger's ids files) are skipped; the rest go into request files, each recorded as ``written``.
2. *Submit*: upload (recorded: ``uploaded``), create the batch (recorded: ``submitted``). A part found
   ``uploaded`` on a re-run is looked up among the provider's batches by its file id before a new batch
   is created, so a kill between the two steps does not pay twice.
3. *Poll*: every open batch, every ``poll_interval`` seconds, stretched by half each round without
   news up to ten times that (at most ten minutes); network errors, 429 and 5xx only delay the next
   poll. Each change of ``request_counts`` is recorded and reported.
4. *Import* a finished batch's output and error files (:mod:`.results`). ``completed``: done.
   ``expired``: its answered lines are kept and the rest go into a new part, submitted the same way.
   ``failed`` (validation): stop with the provider's message. ``cancelled``: keep what was answered and
   stop; a later run sends the open lines anew.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from asyncpipe.errors import FatalAPIError, RetryableAPIError
from asyncpipe.llm.batch.api import TERMINAL, BatchAPI
from asyncpipe.llm.batch.ledger import Ledger, Part
from asyncpipe.llm.batch.requests import read_ids, remaining_lines, write_request_files
from asyncpipe.llm.batch.results import Imported, import_line
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.llm.client import REJECTED_LIMIT
from asyncpipe.llm.labels import AB, LabelSet, label_set
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats

#: answers without logprobs, and none with, before the pass stops (the endpoint does not send them)
NO_LOGPROBS_LIMIT = 8
#: the longest wait between two polls
MAX_POLL_SECONDS = 600.0


@dataclass(frozen=True)
class Lines:
    """One kind of request of a pass: ``(cache key, encoded body)`` pairs, streamed, and the labels their
    answers are read with ('A'/'B' to classify, 'yes'/'no' to check a property). A pass may hold both:
    they go into separate request files, sent together, so the pass waits once."""

    items: Iterable[tuple[str, bytes]]
    labels: LabelSet = AB


@dataclass(frozen=True)
class BatchSettings:
    """From ``config/default.yaml`` (``batch_*``) and ``--poll-interval``."""

    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    poll_interval: float = 30.0


@dataclass(frozen=True)
class PassResult:
    #: rows refused for their content: custom id (cache key) → reason
    refused: dict[str, str]
    #: lines left to the usual retry policy (sent online by the caller)
    to_retry: int
    sent: int


class BatchRunner:
    def __init__(
        self,
        directory: Path,
        *,
        cache: ResponseCache,
        stats: RunStats,
        settings: BatchSettings,
        policy: RetryPolicy,
        model: str,
        api: BatchAPI | None = None,
        log: Callable[[str], None] = lambda _message: None,
        on_progress: Callable[[dict], None] | None = None,
    ) -> None:
        self.directory = directory
        self.cache = cache
        self.stats = stats
        self.settings = settings
        self.policy = policy
        self.model = model
        self.api = api
        self.log = log
        self.on_progress = on_progress
        self.ledger = Ledger(directory)

    # -- 1. write ---------------------------------------------------------------------------------
    def _fresh(self, items: Iterable[tuple[str, bytes]], covered: set[str]) -> Iterator[tuple[str, bytes]]:
        """The requests not answered, not covered by a recorded batch, and not already written."""
        for key, body in items:
            if key in covered or self.cache.has(key):
                continue
            covered.add(key)
            yield key, body

    def _covered(self, states: tuple[str, ...]) -> set[str]:
        covered: set[str] = set()
        for part in self.ledger.parts:
            if part.state in states and self.ledger.ids_path(part).is_file():
                covered.update(read_ids(self.ledger.ids_path(part)))
        return covered

    def _write(
        self, items: Iterable[tuple[str, bytes]], covered: set[str], state: str, labels: LabelSet
    ) -> list[Part]:
        written = []
        for file in write_request_files(
            self._fresh(items, covered),
            self.directory,
            first_number=self.ledger.next_number(),
            max_requests=self.settings.max_requests,
            max_bytes=self.settings.max_bytes,
        ):
            part = Part(file.name, file.requests, state=state, labels=labels.key)  # type: ignore[arg-type]
            self.ledger.add(part)
            written.append(part)
        return written

    # -- the whole pass ---------------------------------------------------------------------------
    async def run(self, *kinds: Lines) -> PassResult:
        if self.api is None:
            raise ValueError("BatchRunner.run needs a BatchAPI")
        covered = self._covered(("written", "uploaded", "submitted", "done"))
        new = [part for kind in kinds for part in self._write(kind.items, covered, "written", kind.labels)]
        del covered
        sent = sum(p.requests for p in new)
        if new:
            self.log(f"batch: {sent:,} request(s) in {len(new)} file(s) for the Batch API")
        await self._drive()
        refused: dict[str, str] = {}
        to_retry = 0
        for part in self.ledger.parts:
            refused.update(part.refused)
            if part.state == "done" and part.resubmitted_as is None:
                to_retry += part.to_retry
        return PassResult(refused, to_retry, sent)

    async def _drive(self) -> None:
        delay = self.settings.poll_interval
        longest = max(self.settings.poll_interval, min(10 * self.settings.poll_interval, MAX_POLL_SECONDS))
        failing = False
        while True:
            for part in [p for p in self.ledger.parts if p.state in ("written", "uploaded")]:
                await self._submit(part)
            waiting = [p for p in self.ledger.parts if p.state == "submitted"]
            if not waiting:
                return
            changed = False
            for part in waiting:
                try:
                    batch = await self.api.retrieve(part.batch_id)  # type: ignore[union-attr,arg-type]
                except RetryableAPIError as exc:
                    if not failing:
                        self.log(f"batch: polling {part.batch_id} failed ({exc}); polling on")
                    failing = True
                    continue
                failing = False
                changed |= self._note(part, batch)
                if batch.get("status") in TERMINAL:
                    await self._finish(part, batch)
                    changed = True
            if changed:
                self._progress()
                delay = self.settings.poll_interval
            if any(p.state in ("written", "uploaded") for p in self.ledger.parts):
                continue
            if any(p.state == "submitted" for p in self.ledger.parts):
                await anyio.sleep(delay)
                delay = min(longest, delay * 1.5)

    def _note(self, part: Part, batch: dict) -> bool:
        counts = batch.get("request_counts") or {}
        new_counts = {k: int(counts.get(k) or 0) for k in ("total", "completed", "failed")}
        status = str(batch.get("status"))
        if (status, new_counts) == (part.batch_status, part.counts):
            return False
        part.batch_status, part.counts = status, new_counts
        part.output_file_id = batch.get("output_file_id") or part.output_file_id
        part.error_file_id = batch.get("error_file_id") or part.error_file_id
        self.ledger.save()
        return True

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.ledger.summary())

    # -- 2. submit --------------------------------------------------------------------------------
    async def _call(self, what: str, call):
        """One Batch API call under the usual retry policy; when its tries run out, the run stops (the
        ledger says where, and the same command continues from there)."""
        try:
            return await self.policy.run(call)
        except RetryableAPIError as exc:
            raise FatalAPIError(f"{what} failed after {self.policy.max_attempts} attempts: {exc}") from None

    async def _submit(self, part: Part) -> None:
        api = self.api
        assert api is not None
        if part.state == "written":
            path = self.ledger.requests_path(part)
            part.input_file_id = await self._call(f"uploading {path}", lambda: api.upload(path))
            part.state = "uploaded"
            self.ledger.save()
        batch = None
        if part.batch_id is None and part.input_file_id is not None:
            batch = await self._call("listing batches", lambda: api.find(part.input_file_id))  # type: ignore[arg-type]
            if batch is not None:
                self.log(
                    f"batch: {part.name} was submitted before it could be recorded: polling {batch['id']}"
                )
        if batch is None:
            metadata = {"asyncpipe_part": part.name, "model": self.model}
            batch = await self._call(
                f"creating the batch of {part.name}",
                lambda: api.create(part.input_file_id, metadata),  # type: ignore[arg-type]
            )
        part.batch_id = str(batch["id"])
        part.state = "submitted"
        self._note(part, batch)
        self.ledger.save()
        self._progress()
        self.log(f"batch: submitted {part.name} ({part.requests:,} requests) as {part.batch_id}")

    # -- 4. import --------------------------------------------------------------------------------
    async def _import(self, part: Part) -> Imported:
        """Read a finished batch's result files into the cache (again from the start after a network
        error: storing an answer twice is harmless)."""
        api = self.api
        assert api is not None
        labels = label_set(part.labels)

        async def read() -> tuple[Imported, RunStats]:
            into, stats = Imported(), RunStats()
            for file_id in (part.output_file_id, part.error_file_id):
                if file_id:
                    async for line in api.lines(file_id):
                        import_line(line, self.cache, stats, into, lambda _custom_id: labels)
            return into, stats

        into, stats = await self._call(f"reading the results of {part.batch_id}", read)
        self._count(stats)
        problem = None
        if into.no_logprobs >= NO_LOGPROBS_LIMIT and into.answered == 0:
            problem = (
                f"{into.no_logprobs} answers came without logprobs and none with them; this endpoint's Batch API "
                "does not return logprobs, so it cannot classify: run without --batch-api"
            )
        elif len(into.refused) >= REJECTED_LIMIT and into.answered == 0:
            # as online: a run of refusals is the whole run's problem (a wrong parameter), not the rows'
            problem = f"all {len(into.refused)} answered lines were refused; the first: {next(iter(into.refused.values()))}"
        if problem is not None:
            part.state, part.message = "failed", problem
            self.ledger.save()
            raise FatalAPIError(f"batch {part.batch_id}: {problem}")
        part.refused = into.refused
        part.to_retry = into.to_retry
        return into

    async def _finish(self, part: Part, batch: dict) -> None:
        status = batch.get("status")
        if status == "failed":
            errors = ((batch.get("errors") or {}).get("data")) or []
            message = (
                "; ".join(str(e.get("message")) for e in errors[:3] if isinstance(e, dict))
                or "no reason given"
            )
            part.state, part.message = "failed", message
            self.ledger.save()
            raise FatalAPIError(f"batch {part.batch_id} ({part.name}) failed: {message}")
        into = await self._import(part)
        if status == "cancelled":
            part.state = "cancelled"
            part.message = f"cancelled with {into.answered:,} of {part.requests:,} lines answered"
            self.ledger.save()
            raise FatalAPIError(
                f"batch {part.batch_id} was cancelled; its {into.answered:,} answers are kept. Run the same "
                "command again to send the rest in a new batch, or without --batch-api to finish online"
            )
        if status == "expired" or into.not_run:
            self._resubmit(part)
        part.state = "done"
        self.ledger.save()
        self.ledger.requests_path(part).unlink(missing_ok=True)
        if into.to_retry:
            self.log(
                f"batch: {part.batch_id}: {into.to_retry} line(s) failed ({into.last_error}); "
                "they are retried online by the usual retry policy"
            )

    def _resubmit(self, part: Part) -> None:
        """A new part for the lines of ``part`` that have neither an answer nor a refusal."""
        refused = part.refused
        lines = remaining_lines(
            self.ledger.requests_path(part), lambda key: key in refused or self.cache.has(key)
        )
        new = self._write(lines, set(), "written", label_set(part.labels))
        if new:
            part.resubmitted_as = ",".join(p.name for p in new)
            self.log(
                f"batch: {part.batch_id} {part.batch_status}: {part.counts.get('completed', 0):,} lines kept; "
                f"the other {sum(p.requests for p in new):,} resubmitted"
            )

    # -- offline engines --------------------------------------------------------------------------
    def export(self, *kinds: Lines) -> list[Path]:
        """Write the request files for an offline engine (``vllm run-batch``); nothing is sent. Files of
        an earlier export are replaced."""
        for part in [p for p in self.ledger.parts if p.state == "exported"]:
            self.ledger.requests_path(part).unlink(missing_ok=True)
            self.ledger.ids_path(part).unlink(missing_ok=True)
            self.ledger.parts.remove(part)
        covered = self._covered(("written", "uploaded", "submitted"))
        parts = [p for kind in kinds for p in self._write(kind.items, covered, "exported", kind.labels)]
        return [self.ledger.requests_path(p) for p in parts]

    def import_files(self, paths: list[Path], *kinds: Lines) -> Imported:
        """Read result files (OpenAI's or ``vllm run-batch``'s format) into the cache; only lines whose
        custom id is a request of this pass are taken, each read with its kind's labels."""
        wanted = {key: kind.labels for kind in kinds for key, _body in kind.items}
        into, stats = Imported(), RunStats()
        for path in paths:
            with path.open("rb") as handle:
                for line in handle:
                    if line.strip():
                        import_line(line, self.cache, stats, into, wanted.get)
        self._count(stats)
        for part in self.ledger.parts:
            if part.state == "exported":
                ids = set(read_ids(self.ledger.ids_path(part)))
                part.state = "done"
                part.refused = {k: v for k, v in into.refused.items() if k in ids}
        self.ledger.save()
        return into

    def _count(self, stats: RunStats) -> None:
        """Add what imported lines cost (the batch role's counts: requests, failures, tokens)."""
        self.stats.requests += stats.requests
        self.stats.failed += stats.failed
        self.stats.prompt_tokens += stats.prompt_tokens
        self.stats.completion_tokens += stats.completion_tokens
        self.stats.cached_tokens += stats.cached_tokens
