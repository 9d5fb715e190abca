"""The final classification through the Batch API (``--batch-api``), before the usual online pass.

The describe steps and their classification stay online: each step needs its answers before the next.
The final pass's requests, exactly those :func:`~asyncpipe.pipeline.fanout.classify_rows` would
send, go first as batch jobs (or as files for an offline engine); their answers land in the response
cache, and ``classify_rows`` then runs as always and finds them there. So metrics, predictions and the
report are those of an online run on the same answers, and whatever a batch could not answer (a line
that failed with a server error, say) is sent online by the usual retry policy.

``submit``: OpenAI's Batch API (:mod:`asyncpipe.llm.batch`). ``export``: write the request files and stop
(:class:`BatchFilesWritten`), with the ``vllm run-batch`` command to run. ``import``: read result files
into the cache, then go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio

from asyncpipe.config import BatchOptions
from asyncpipe.errors import AsyncpipeError, BatchFilesWritten, UserError
from asyncpipe.llm.base import LabelScore, Message
from asyncpipe.llm.batch.api import BatchAPI
from asyncpipe.llm.batch.ledger import Ledger, Part
from asyncpipe.llm.batch.runner import BatchRunner, BatchSettings, Lines
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.labels import AB, YES_NO, LabelSet
from asyncpipe.llm.openai_http import OPENAI_BASE_URL
from asyncpipe.llm.stats import RunStats
from asyncpipe.pipeline.progress import Reporter
from asyncpipe.prompts.build import ROW_PLACEHOLDER, fence_safe
from asyncpipe.records import RecordError, read_run

BATCH_DIR = "batches"


#: one kind of request of a pass, made anew on each call: the requests are streamed, and read more than once
Requests = Callable[[], Lines]


def final_requests(
    client: LLMClient,
    messages: list[Message],
    swapped: list[Message] | None,
    texts: Sequence[str],
) -> Requests:
    """The final pass's classify requests as ``(cache key, body)``, read as 'A'/'B'."""
    prompts = [messages] if swapped is None else [messages, swapped]
    return lambda: Lines(_rows(client, prompts, texts, AB), AB)


def check_requests(
    client: LLMClient, checks: Sequence[tuple[str, list[Message]]], texts: Sequence[str]
) -> Requests:
    """Every property check (each property's id and request) on every row, read as 'yes'/'no': the
    same requests :func:`~asyncpipe.pipeline.property_checks.check_properties` sends online."""
    return lambda: Lines(_rows(client, [messages for _id, messages in checks], texts, YES_NO), YES_NO)


def _rows(
    client: LLMClient, prompts: Sequence[list[Message]], texts: Sequence[str], labels: LabelSet
) -> Iterator[tuple[str, bytes]]:
    for prompt in prompts:
        scorer = client.row_scorer(prompt, ROW_PLACEHOLDER, labels)
        yield from scorer.requests(fence_safe(t) for t in texts)


async def batch_final_pass(
    client: LLMClient,
    options: BatchOptions,
    out: Path,
    kinds: Sequence[Requests],
    reporter: Reporter,
    batch_stats: RunStats,
    on_progress: Callable[[dict], None],
) -> None:
    """Answer the final pass's requests (its classification, and the property checks when there are
    any) through batches, sent together; refusals are settled on ``client``. The batches' progress is
    shown on ``reporter`` as a phase of its own; ``on_progress(summary)`` records it (run.json)."""
    show = _progress_display(reporter)

    def progress(summary: dict) -> None:
        show(summary)
        on_progress(summary)

    try:
        await _answer_by_batches(client, options, out, kinds, reporter, batch_stats, progress)
    finally:
        reporter.end_phase()


async def _answer_by_batches(
    client: LLMClient,
    options: BatchOptions,
    out: Path,
    kinds: Sequence[Requests],
    reporter: Reporter,
    batch_stats: RunStats,
    on_progress: Callable[[dict], None],
) -> None:
    if client.cache is None:
        raise UserError("--batch-api needs the response cache")
    runner = BatchRunner(
        out / BATCH_DIR,
        cache=client.cache,
        stats=batch_stats,
        settings=BatchSettings(options.max_requests, options.max_bytes, options.poll_interval),
        policy=client.policy,
        model=client.provider.model,
        api=client.provider.batch_api() if options.mode == "submit" else None,
        log=reporter.log,
        on_progress=on_progress,
    )
    if options.mode == "export":
        files = runner.export(*(kind() for kind in kinds))
        if not files:
            reporter.log("batch: every request of the final pass is answered already; going on")
            return
        model = client.provider.model
        commands = "; ".join(
            f"vllm run-batch -i {f} -o {f.with_suffix('.out.jsonl')} --model {model}" for f in files
        )
        outputs = ",".join(str(f.with_suffix(".out.jsonl")) for f in files)
        raise BatchFilesWritten(
            f"wrote {len(files)} request file(s) for the final pass to {out / BATCH_DIR}. Run them with an offline "
            f"engine: {commands}; then run the same command with --batch-api import={outputs} to continue"
        )
    if options.mode == "import":
        paths = [Path(p) for p in options.import_files]
        for path in paths:
            if not path.is_file():
                raise UserError(f"--batch-api import: {path}: no such file")
        into = runner.import_files(paths, *(kind() for kind in kinds))
        reporter.log(
            f"batch: imported {into.answered:,} answer(s) from {len(paths)} file(s)"
            + (f"; {into.foreign:,} line(s) of other requests ignored" if into.foreign else "")
            + (
                f"; {into.to_retry + into.not_run:,} failed line(s) go online"
                if into.to_retry + into.not_run
                else ""
            )
        )
        refused = into.refused
    else:
        async with _closing(runner.api):
            result = await runner.run(*(kind() for kind in kinds))
        refused = result.refused
        if result.to_retry:
            reporter.log(
                f"batch: {result.to_retry:,} failed line(s) are retried online by the usual retry policy"
            )
    client.settled.update({key: LabelScore(None, reason) for key, reason in refused.items()})


class _closing:
    def __init__(self, api) -> None:
        self.api = api

    async def __aenter__(self):
        return self.api

    async def __aexit__(self, *exc) -> None:
        if self.api is not None:
            await self.api.aclose()


def _progress_display(reporter: Reporter) -> Callable[[dict], None]:
    """Show a batch pass's ``request_counts`` (completed + failed of total) as the phase's progress."""
    state = {"shown": 0, "total": -1}

    def show(summary: dict) -> None:
        total = summary["total"] or summary["requests"]
        done = summary["completed"] + summary["failed"]
        if total != state["total"]:
            reporter.phase(f"batch: {summary['open']} open batch(es)", total)
            state["total"], state["shown"] = total, 0
        if done > state["shown"]:
            reporter.advance(done - state["shown"])
            state["shown"] = done
        reporter.log(
            f"batch: {summary['batches']} batch(es), {summary['open']} open: "
            f"{summary['completed']:,} completed, {summary['failed']:,} failed of {total:,}"
        )

    return show


def _ledgers(out: Path) -> list[Ledger]:
    """The batch ledgers recorded under ``out``: its own, and each pair's of a ``pairs`` output."""
    return [Ledger(path.parent) for path in sorted(out.glob(f"**/{BATCH_DIR}/batches.json"))]


def _open_parts(ledger: Ledger) -> list[Part]:
    """The parts sent as batches that have not finished (still running, and billed, at the provider)."""
    return [part for part in ledger.parts if part.state == "submitted" and part.batch_id]


def open_batches_note(out: Path) -> str | None:
    """A warning for a run without ``--batch-api`` in a directory whose earlier run left batches open
    (they go on, and are billed, until they finish or are cancelled)."""
    if not (out / BATCH_DIR / "batches.json").is_file():
        return None
    try:
        open_ids = [str(part.batch_id) for part in _open_parts(Ledger(out / BATCH_DIR))]
    except (OSError, ValueError, TypeError):
        return None
    if not open_ids:
        return None
    return (
        f"note: {len(open_ids)} batch(es) of an earlier --batch-api run are still open ({', '.join(open_ids[:3])}); "
        f"this run answers online. Add --batch-api to use their answers, or stop them: asyncpipe batches {out} --cancel"
    )


def describe_batches(out: Path, ledgers: list[Ledger], live: dict[str, dict]) -> str:
    """``asyncpipe batches DIR``: the batches of ``ledgers`` (an output directory's, and its pairs'); an
    open batch whose provider answered (``live``: batch id → the provider's batch object) shows the
    status and counts it has now, marked ``*``; the others as the run last saw them."""
    lines = [
        f"{'part':<16}{'batch id':<28}{'state':<11}{'status':<12}{'completed':>10}{'failed':>8}{'total':>8}"
    ]
    for ledger in ledgers:
        where = ledger.directory.parent.relative_to(out)
        if str(where) != ".":
            lines.append(f"{where}:")
        for part in ledger.parts:
            now = live.get(part.batch_id or "")
            c = (now.get("request_counts") or {}) if now else part.counts
            status = f"{now.get('status')}*" if now else part.batch_status or "-"
            lines.append(
                f"{part.name:<16}{part.batch_id or '-':<28}{part.state:<11}{status:<12}"
                f"{c.get('completed', 0):>10,}{c.get('failed', 0):>8,}{c.get('total', 0) or part.requests:>8,}"
                + (f"  {part.message}" if part.message else "")
            )
    if live:
        lines.append("* as the provider reports it now; the rest as the run last saw it")
    return "\n".join(lines)


async def live_status(batch_ids: list[str], api: BatchAPI) -> tuple[dict[str, dict], str | None]:
    """What the provider says of each batch now, and why it could not say it (None: it did)."""
    found: dict[str, dict] = {}
    try:
        for batch_id in batch_ids:
            found[batch_id] = await api.retrieve(batch_id)
    except AsyncpipeError as exc:
        return found, f"could not ask about {batch_id} ({exc}); shown as the run last saw it"
    finally:
        await api.aclose()
    return found, None


async def cancel_batches(ledgers: list[Ledger], api) -> list[str]:
    """Cancel the open batches of ``ledgers``; the ids cancelled."""
    cancelled = []
    try:
        for ledger in ledgers:
            for part in _open_parts(ledger):
                batch = await api.cancel(str(part.batch_id))
                part.batch_status = str(batch.get("status"))
                cancelled.append(str(part.batch_id))
            ledger.save()
    finally:
        await api.aclose()
    return cancelled


#: seconds the listing waits for the provider's answer about one batch before showing the last seen
LIST_TIMEOUT = 10.0


def _endpoints(ledgers: list[Ledger]) -> set[str]:
    """The endpoints the runs of ``ledgers`` sent their batches to (OpenAI's for a run that named none)."""
    urls = set()
    for ledger in ledgers:
        try:
            run = read_run(ledger.directory.parent)
        except RecordError:
            run = None
        if run is not None:
            urls.add(str(run.config.get("base_url") or OPENAI_BASE_URL).rstrip("/"))
    return urls


def batches_command(out: Path, *, cancel: bool, base_url: str | None) -> int:
    """``asyncpipe batches DIR [--cancel]``: list the recorded batches, the open ones as the provider
    reports them now; cancel the open ones. Both ask the endpoint the run used, and only when it is the
    one given (--base-url, $OPENAI_BASE_URL, else OpenAI): an address is never read from the directory,
    since the key goes there."""
    ledgers = _ledgers(out)
    if not ledgers:
        raise UserError(f"{out}: no batches recorded (no {BATCH_DIR}/batches.json)")
    base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
    # where each run (the directory's own, or each pair's of a pairs output) sent its batches
    elsewhere = sorted(url for url in _endpoints(ledgers) if url != base_url)
    saved = elsewhere[0] if elsewhere else None
    key = os.environ.get("OPENAI_API_KEY")

    def api(timeout: float = 60.0) -> BatchAPI:
        return BatchAPI(base_url, {"Authorization": f"Bearer {key}"} if key else {}, timeout=timeout)

    live, note = {}, None
    open_ids = [str(part.batch_id) for ledger in ledgers for part in _open_parts(ledger)]
    if open_ids and elsewhere:
        note = f"open batches as the run last saw them: they went to {saved}; pass --base-url {saved} to ask it now"
    elif open_ids:
        live, note = anyio.run(lambda: live_status(open_ids, api(timeout=LIST_TIMEOUT)))
    print(describe_batches(out, ledgers, live))
    if note:
        print(note)
    if not cancel:
        return 0
    if elsewhere:
        raise UserError(f"{out} sent its batches to {saved}; pass --base-url {saved} to cancel them")
    # read again: the run may have recorded more of its batches since they were listed
    cancelled = anyio.run(lambda: cancel_batches(_ledgers(out), api()))
    print(f"cancelling {len(cancelled)} batch(es): {', '.join(cancelled) or 'none was open'}")
    return 0
