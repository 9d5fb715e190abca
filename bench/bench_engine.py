"""The classification engine against a local stub: throughput, latency, rate limits, a queueing
server and memory.

Run ``python -m bench.bench_engine`` (``make bench``). The stub (:mod:`bench.stub`) runs in its own
process on 127.0.0.1, so client and server do not share one event loop or one GIL (this machine has
two cores: one is the server's, one the client's). Every figure in the table is measured in the same
run:

1. a bare aiohttp client's ceiling: pre-encoded body, ``await response.read()``, nothing else;
2. the openai SDK (``AsyncOpenAI(max_retries=0)``) with ``asyncio.gather`` under a semaphore;
3. asyncpipe's engine: :func:`~asyncpipe.pipeline.fanout.classify_rows` through a real
   :class:`~asyncpipe.llm.client.LLMClient` (fresh SQLite cache, adaptive limiter starting at 16 as in
   ``compare``, retry policy) on distinct rows, against (1) and (2). (1) and (3) are run three times,
   alternating, and the best of each is kept: other processes on a shared machine add noise to both;
4. latency regime (stub latency uniform 0.1-0.3 s, concurrency 256): asyncpipe against the bare client
   under the same latency, and against the ideal concurrency / mean latency;
5. rate-limited regime (the stub caps requests per minute in one-second windows, answering 429 with
   ``retry-after``): achieved / allowed and the share of requests answered 429. asyncpipe is given no
   ``--rpm``. In (5) the stub announces its limit in ``x-ratelimit-limit-requests`` as OpenAI does on
   every answer; in (5b) it does not, and only 429s and their hints tell the client to slow down;
6. peak resident memory (``ru_maxrss`` of a child process) for a 1,000,000-row classification. HTTP at
   a few thousand requests/s would take minutes, so this one replaces only the socket: the provider is
   the real one with its HTTP exchange swapped for the stub's canned answer, and everything above it
   (body encoding, answer parsing, cache, retry, limiter, workers) is real;
7. queueing server (the stub serves one request at a time, ``SERIAL`` seconds each, as llama.cpp's
   server does; ``--timeout`` ``SERIAL_TIMEOUT``): answers per second as a share of the service rate
   and the share of requests sent again, for asyncpipe's limiter beside today's behaviour (a fixed
   limit at compare's default ``--concurrency`` of 64, where the old limiter ended up too: no 429 ever
   comes, so it grew to its maximum). Today's run is stopped after ``SERIAL_BASELINE_CAP`` seconds.

It prints figures and verdicts; it never asserts. ``--scale 0.2`` for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio

from asyncpipe.config import Templates, load_settings
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.openai_http import OpenAIHTTPProvider
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats
from asyncpipe.model_facts import model_facts
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.prompts.build import classify_messages, with_row

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4.1-mini"  # model facts only (token parameter); the stub answers any name
CONCURRENCY = 128
LATENCY_CONCURRENCY = 256
LATENCY = (0.1, 0.3)
RPM = 60_000  # 1,000 requests in each one-second window

TARGET_VS_BARE = 0.35
TARGET_VS_SDK = 5.0
TARGET_LATENCY = 0.90
TARGET_ALLOWED = 0.90
TARGET_429 = 0.05
TARGET_MB = 1024.0
SERIAL = 0.02  # seconds of service per request: 50 answers per second
SERIAL_TIMEOUT = 1.0
SERIAL_CONCURRENCY = 64  # compare's default --concurrency
SERIAL_BASELINE_CAP = 30.0
TARGET_SERVICE = 0.90
TARGET_RESENT = 0.01

DESCRIPTION = (
    "Dataset A answers in short, informal sentences: contractions, first person, exclamation marks, and "
    "often a personal anecdote about how the writer used the product. Dataset B answers in long, formal "
    "paragraphs: third person, no contractions, hedged claims with words such as 'generally' and "
    "'typically', and a closing sentence that summarises the answer. Length is the most reliable cue "
    "(dataset B is about three times longer), then formality; when an example shows neither, lean on the "
    "point of view: first person points to dataset A, impersonal text to dataset B."
)
_TEXT = (
    "the kettle boils fast and the lid clicks shut with a solid sound while the handle stays cool even "
    "after a long morning of tea for the whole family and it looks good on the counter next to the toaster"
)
_WORDS = tuple(_TEXT.split(" "))


def make_rows(n: int, seed: int = 0) -> list[str]:
    """Distinct rows of about 200 characters (a short product answer)."""
    rng = random.Random(seed)
    return [f"Row {i}: " + " ".join(rng.choices(_WORDS, k=36)) for i in range(n)]


def classify_prompt() -> list:
    templates = Templates.from_settings(load_settings()["prompts"])
    return classify_messages(templates, DESCRIPTION)


def request_body(messages: list, row: str) -> dict:
    facts = model_facts(MODEL)
    return {
        "model": MODEL,
        "messages": with_row(messages, row),
        facts.token_param: 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 20,
    }


# -- the stub process --------------------------------------------------------------------------------
@contextmanager
def stub(
    *,
    latency: tuple[float, float] = (0.0, 0.0),
    rpm: float | None = None,
    announce: bool = True,
    serial: float = 0.0,
):
    args = [
        sys.executable,
        "-m",
        "bench.stub",
        "--latency-min",
        str(latency[0]),
        "--latency-max",
        str(latency[1]),
    ]
    if rpm:
        args += ["--rpm", str(rpm)] + ([] if announce else ["--no-limit-header"])
    if serial:
        args += ["--serial", str(serial)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"the stub did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def stub_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())


# -- clients -----------------------------------------------------------------------------------------
async def bare_aiohttp(base_url: str, body: bytes, n: int, concurrency: int) -> float:
    """Requests/s of the thinnest aiohttp loop: one pre-encoded body, read the answer, nothing else."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    url = base_url + "/chat/completions"
    remaining = iter(range(n))
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for _ in remaining:
                async with session.post(url, data=body) as response:
                    await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)


async def openai_sdk(base_url: str, messages: list, rows: Sequence[str], concurrency: int) -> float:
    """Requests/s of the usual SDK pattern: one task per row, gathered, bounded by a semaphore."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)
    facts = model_facts(MODEL)

    async def one(row: str) -> None:
        async with semaphore:
            await client.chat.completions.create(
                model=MODEL,
                messages=with_row(messages, row),
                temperature=0,
                logprobs=True,
                top_logprobs=20,
                **{facts.token_param: 1},
            )

    start = time.perf_counter()
    await asyncio.gather(*(one(r) for r in rows))
    elapsed = time.perf_counter() - start
    await client.close()
    return len(rows) / elapsed


@dataclass
class EngineRun:
    rows_per_s: float
    seconds: float
    stats: RunStats
    unscored: int
    peak_limit: int
    started: float  # time.monotonic(), the clock the stub's rate windows use
    ended: float
    rpm_source: str | None = None
    limiter: AdaptiveLimiter | None = None
    finished: bool = True  # False: stopped at the deadline


async def engine(
    base_url: str,
    messages: list,
    rows: Sequence[str],
    concurrency: int,
    *,
    provider=None,
    align: bool = False,
    timeout: float = 60.0,
    limiter: AdaptiveLimiter | None = None,
    deadline: float | None = None,
) -> EngineRun:
    """asyncpipe as ``compare`` wires it: provider → limiter → retry → cache, fed by classify_rows.
    ``align`` starts at a whole second of time.monotonic(), the start of one of the stub's rate windows.
    ``limiter`` replaces compare's (a baseline); ``deadline`` stops the run after that many seconds."""
    if provider is None:
        facts = model_facts(MODEL)
        provider = OpenAIHTTPProvider(
            MODEL,
            base_url=base_url,
            api_key="sk-bench",
            facts=facts,
            connections=concurrency,
            timeout=timeout,
        )
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "cache.sqlite")
        stats = RunStats()
        if limiter is None:
            limiter = AdaptiveLimiter(concurrency, initial=min(concurrency, 16), timeout=timeout)
        client = LLMClient(provider, cache=cache, policy=RetryPolicy(), limiter=limiter, stats=stats)
        if align:
            await anyio.sleep(int(time.monotonic()) + 1.001 - time.monotonic())
        started = time.monotonic()
        start = time.perf_counter()
        scores = None
        answered = [0]

        def count(n: int = 1) -> None:
            answered[0] += n

        with anyio.move_on_after(deadline):
            scores = await classify_rows(client, messages, rows, workers=concurrency, on_done=count)
        elapsed = time.perf_counter() - start
        ended = time.monotonic()
        await client.aclose()
        cache.close()
    done = len(rows) if scores is not None else answered[0]
    return EngineRun(
        done / elapsed,
        elapsed,
        stats,
        len(scores.errors) if scores is not None else stats.failed,
        limiter.peak_limit,
        started,
        ended,
        f"{limiter.rpm_source} rpm {limiter.rpm:,.0f}" if limiter.rpm else "nothing",
        limiter,
        scores is not None,
    )


# -- sections ----------------------------------------------------------------------------------------
def run(coro_fn, *args, **kwargs):
    return anyio.run(lambda: coro_fn(*args, **kwargs))


def section_throughput(scale: float, messages: list, rounds: int = 3) -> dict:
    n_bare, n_sdk, n_engine = int(20_000 * scale), int(3_000 * scale), int(20_000 * scale)
    body = json.dumps(request_body(messages, make_rows(1)[0])).encode()
    bare: list[float] = []
    mine: list[EngineRun] = []
    with stub() as url:
        run(bare_aiohttp, url, body, 1000, CONCURRENCY)  # warm up both processes
        for r in range(rounds):
            bare.append(run(bare_aiohttp, url, body, n_bare, CONCURRENCY))
            mine.append(run(engine, url, messages, make_rows(n_engine, seed=100 + r), CONCURRENCY))
        sdk = run(openai_sdk, url, messages, make_rows(n_sdk, seed=1), CONCURRENCY)
    best = max(mine, key=lambda e: e.rows_per_s)
    return {
        "bare": max(bare),
        "bare_all": bare,
        "sdk": sdk,
        "engine": best,
        "engine_all": mine,
        "n": (n_bare, n_sdk, n_engine),
    }


def section_latency(scale: float, messages: list) -> dict:
    n = int(12_000 * scale)
    body = json.dumps(request_body(messages, make_rows(1)[0])).encode()
    with stub(latency=LATENCY) as url:
        bare = run(bare_aiohttp, url, body, n, LATENCY_CONCURRENCY)
        mine = run(engine, url, messages, make_rows(n, seed=3), LATENCY_CONCURRENCY)
    ideal = LATENCY_CONCURRENCY / (sum(LATENCY) / 2)
    return {"bare": bare, "engine": mine, "ideal": ideal, "n": n}


def section_rate_limited(scale: float, messages: list, *, announce: bool) -> dict:
    """The stub allows RPM/60 requests in each one-second window of time.monotonic() (one clock for
    every process on Linux). The run starts at the start of a window, so what was allowed is RPM/60 for
    each window the run touched (a run that started mid-window would get that window's whole budget
    in a fraction of a second and seem to beat the cap)."""
    per_window = int(RPM / 60.0)
    n = int(per_window * 10 * scale)  # about ten seconds at the allowed rate
    with stub(rpm=RPM, announce=announce) as url:
        mine = run(engine, url, messages, make_rows(n, seed=4), CONCURRENCY, align=True)
        server = stub_stats(url)
    scored = n - mine.unscored
    return {
        "engine": mine,
        "per_window": per_window,
        "windows": math.ceil(mine.ended - mine.started),
        "ratio": scored / (per_window * math.ceil(mine.ended - mine.started)),
        "share_429": server["answered_429"] / max(1, server["requests"]),
        "rpm_source": mine.rpm_source,
        "server": server,
        "scored": scored,
    }


def section_queueing(scale: float, messages: list) -> dict:
    """asyncpipe's limiter, then a fixed limit of 64 (today's behaviour), against one queueing stub
    each; answers per second as a share of the service rate, and requests sent again (the stub's
    count beyond the rows asked for, over what it received)."""
    n = int(600 * scale)
    rate = 1.0 / SERIAL
    out = {}
    for name in ("asyncpipe", "fixed 64"):
        fixed = AdaptiveLimiter(SERIAL_CONCURRENCY, initial=SERIAL_CONCURRENCY, minimum=SERIAL_CONCURRENCY)
        with stub(serial=SERIAL) as url:
            mine = run(
                engine,
                url,
                messages,
                make_rows(n, seed=6 if name == "asyncpipe" else 7),
                SERIAL_CONCURRENCY,
                timeout=SERIAL_TIMEOUT,
                limiter=None if name == "asyncpipe" else fixed,
                deadline=None if name == "asyncpipe" else SERIAL_BASELINE_CAP,
            )
            server = stub_stats(url)
        scored = mine.rows_per_s * mine.seconds - mine.unscored
        out[name] = {
            "engine": mine,
            "share": scored / mine.seconds / rate,
            "resent": mine.stats.retries / max(1, mine.stats.requests),
            "server": server,
            "state": mine.limiter.state() if mine.limiter is not None else None,
        }
    return {"n": n, "rate": rate, "runs": out}


def section_memory(rows: int) -> dict:
    command = [sys.executable, "-m", "bench.bench_engine", "--memory-child", str(rows)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class _CannedProvider(OpenAIHTTPProvider):
    """The real provider with its HTTP exchange replaced by the stub's canned answer (no socket)."""

    def __init__(self) -> None:
        super().__init__(MODEL, base_url="http://canned.invalid/v1", api_key=None, facts=model_facts(MODEL))
        from bench.stub import _CLASSIFY

        self._canned = json.dumps(_CLASSIFY).encode()
        self.bytes_sent = 0

    async def _exchange(
        self, data: bytes, *, describe: bool = False
    ):  # the one method that touches the network
        self.bytes_sent += len(data)
        await anyio.lowlevel.checkpoint()
        return 200, {}, self._canned


def memory_child(n: int) -> None:
    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    messages = classify_prompt()
    before_rows = rss_mb()
    rows = make_rows(n, seed=5)
    with_rows = rss_mb()
    result = run(engine, "", messages, rows, CONCURRENCY, provider=_CannedProvider())
    summary = {
        "rows": n,
        "peak_mb": rss_mb(),
        "start_mb": before_rows,
        "with_rows_mb": with_rows,
        "seconds": result.seconds,
        "unscored": result.unscored,
        "sent": result.stats.requests,
    }
    print(json.dumps(summary))


# -- the table ---------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def print_table(lines: list[tuple[str, str, str, str]]) -> None:
    header = ("measure", "figure", "ratio / target", "notes")
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every request count (0.2: a quick look)"
    )
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--only", choices=("throughput", "latency", "ratelimit", "queueing", "memory"), action="append"
    )
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    only = set(args.only or ("throughput", "latency", "ratelimit", "queueing", "memory"))
    messages = classify_prompt()
    print(
        f"asyncpipe engine benchmark: {os.cpu_count()} CPUs, stub in its own process on 127.0.0.1", flush=True
    )
    lines: list[tuple[str, str, str, str]] = []
    verdicts: list[tuple[str, bool]] = []

    if "throughput" in only:
        t = section_throughput(args.scale, messages)
        e = t["engine"]
        r1, r2 = e.rows_per_s / t["bare"], e.rows_per_s / t["sdk"]
        nb, ns, ne = t["n"]
        bare_all = ", ".join(f"{x:,.0f}" for x in t["bare_all"])
        engine_all = ", ".join(f"{x.rows_per_s:,.0f}" for x in t["engine_all"])
        lines += [
            (
                "1 bare aiohttp, c=128",
                f"{t['bare']:,.0f} req/s",
                "",
                f"{nb:,} requests, no latency; rounds {bare_all}",
            ),
            ("2 openai SDK + gather, c=128", f"{t['sdk']:,.0f} req/s", "", f"{ns:,} requests, max_retries=0"),
            (
                "3 asyncpipe engine, c=128",
                f"{e.rows_per_s:,.0f} rows/s",
                "",
                f"{ne:,} rows, cache+limiter+retry, {e.stats.requests:,} sent; rounds {engine_all}",
            ),
            ("  (3)/(1)", f"{r1:.2f}", f"≥ {TARGET_VS_BARE:.2f}: {verdict(r1 >= TARGET_VS_BARE)}", ""),
            ("  (3)/(2)", f"{r2:.1f}", f"≥ {TARGET_VS_SDK:.0f}: {verdict(r2 >= TARGET_VS_SDK)}", ""),
        ]
        verdicts += [("(3)/(1) ≥ 0.35", r1 >= TARGET_VS_BARE), ("(3)/(2) ≥ 5", r2 >= TARGET_VS_SDK)]
        print("  throughput measured", flush=True)

    if "latency" in only:
        lat = section_latency(args.scale, messages)
        e = lat["engine"]
        vs_bare, vs_ideal = e.rows_per_s / lat["bare"], e.rows_per_s / lat["ideal"]
        lines += [
            (
                "4 latency 0.1-0.3 s, c=256: bare",
                f"{lat['bare']:,.0f} req/s",
                f"{lat['bare'] / lat['ideal']:.2f} of ideal",
                f"{lat['n']:,} requests each; ideal 256 / 0.2 s = {lat['ideal']:,.0f}/s",
            ),
            (
                "  asyncpipe",
                f"{e.rows_per_s:,.0f} rows/s",
                f"{vs_ideal:.2f} of ideal",
                f"limit grew from 16 to {e.peak_limit}",
            ),
            (
                "  asyncpipe / bare",
                f"{vs_bare:.2f}",
                f"≥ {TARGET_LATENCY:.2f}: {verdict(vs_bare >= TARGET_LATENCY)}",
                "",
            ),
        ]
        verdicts.append(("(4) ≥ 0.90 of bare", vs_bare >= TARGET_LATENCY))
        print("  latency measured", flush=True)

    if "ratelimit" in only:
        for announce in (True, False):
            rl = section_rate_limited(args.scale, messages, announce=announce)
            e = rl["engine"]
            ok = rl["ratio"] >= TARGET_ALLOWED and rl["share_429"] <= TARGET_429
            tag = "5 " if announce else "5b"
            how = "limit announced" if announce else "limit NOT announced"
            lines += [
                (
                    f"{tag} rate-limited, {how}",
                    f"{rl['scored'] / e.seconds:,.0f} rows/s",
                    f"{rl['ratio']:.2f} of allowed",
                    f"cap {RPM:,} rpm = {rl['per_window']:,} per 1-s window; {rl['scored']:,} rows scored in "
                    f"{rl['windows']} windows ({e.seconds:.1f} s), {e.unscored} unscored; paced by {rl['rpm_source']}",
                ),
                (
                    "   answered 429",
                    f"{rl['share_429']:.1%}",
                    f"≥ 0.90, ≤ 5%: {verdict(ok)}",
                    f"{rl['server']['answered_429']:,} of {rl['server']['requests']:,} requests (server count)",
                ),
            ]
            verdicts.append((f"({tag.strip()}) ≥ 0.90 of allowed with ≤ 5% 429", ok))
        print("  rate limits measured", flush=True)

    if "queueing" in only:
        q = section_queueing(args.scale, messages)
        for name, r in q["runs"].items():
            e, state = r["engine"], r["state"]
            ok = r["share"] >= TARGET_SERVICE and r["resent"] <= TARGET_RESENT
            stopped = "" if e.finished else f", stopped after {SERIAL_BASELINE_CAP:.0f} s"
            mine = name == "asyncpipe"
            lines += [
                (
                    f"7 queueing server, {name}" if mine else f"  today: {name}",
                    f"{r['share'] * q['rate']:,.1f} answers/s",
                    f"{r['share']:.2f} of service rate",
                    f"one at a time, {SERIAL * 1000:.0f} ms each = {q['rate']:.0f}/s; --timeout {SERIAL_TIMEOUT:g}; "
                    f"{q['n']:,} rows, {e.unscored} unscored, {e.stats.timeouts:,} timeouts{stopped}",
                ),
                (
                    "   sent again",
                    f"{r['resent']:.1%}",
                    f"≥ 0.90, ≤ 1%: {verdict(ok)}" if mine else "",
                    f"{e.stats.retries:,} of {e.stats.requests:,} sent (server received {r['server']['requests']:,}); "
                    f"limit {state.limit} (peak {state.peak_limit}), latency {state.latency_s or 0:.2f} s, "
                    f"base {state.base_latency_s or 0:.3f} s",
                ),
            ]
            if mine:
                verdicts.append(("(7) ≥ 0.90 of service rate with ≤ 1% sent again", ok))
        print("  queueing server measured", flush=True)

    if "memory" in only:
        m = section_memory(args.memory_rows)
        ok = m["peak_mb"] < TARGET_MB
        lines.append(
            (
                f"6 peak RSS, {m['rows']:,} rows",
                f"{m['peak_mb']:,.0f} MB",
                f"< 1 GB: {verdict(ok)}",
                f"{m['start_mb']:,.0f} MB after imports, {m['with_rows_mb']:,.0f} MB with the rows loaded; "
                f"{m['seconds']:.0f} s; socket replaced by a canned answer",
            )
        )
        verdicts.append(("(6) < 1 GB", ok))

    print()
    print_table(lines)
    print()
    print("targets met:     " + (", ".join(name for name, ok in verdicts if ok) or "none"))
    print("targets NOT met: " + (", ".join(name for name, ok in verdicts if not ok) or "none"))


if __name__ == "__main__":
    main()
