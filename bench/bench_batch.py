"""``--batch-api``'s memory at scale: the final pass of 1,000,000 rows as batch jobs, beside online.

Run ``python -m bench.bench_batch`` (``make bench-batch``). Two child processes, each measured by its
own peak resident memory (``ru_maxrss``):

- *online*: scenario (6) of :mod:`bench.bench_engine` (``classify_rows`` over every row, the provider's
  socket replaced by a canned answer);
- *batch*: the same rows through :func:`~asyncpipe.pipeline.batch_pass.batch_final_pass` (request files
  written, split at 50,000 lines, "uploaded", "polled", result lines imported into a fresh SQLite cache),
  then ``classify_rows`` as ``compare`` runs it, finding every answer in the cache. Only the Batch API's
  HTTP is replaced (:class:`CannedBatchAPI`): it reads the uploaded request file back, streaming, and
  answers each line with the stub's canned completion, in the real result-line format. Everything else
  (key and body encoding, the ledger, the import's parsing, the cache) is the real code.

It prints figures and a verdict (batch peak under 1 GB); it never asserts. ``--rows 100000`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from asyncpipe.config import BatchOptions
from asyncpipe.llm.batch.requests import custom_id_of
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.llm.client import LLMClient
from asyncpipe.llm.limiter import AdaptiveLimiter
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats
from asyncpipe.pipeline.batch_pass import batch_final_pass, final_requests
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.pipeline.progress import Reporter
from bench.bench_engine import CONCURRENCY, ROOT, TARGET_MB, _CannedProvider, classify_prompt, make_rows

ROWS = 1_000_000


class CannedBatchAPI:
    """The Batch API's endpoints without a network: every batch is complete when first retrieved."""

    def __init__(self, canned: bytes) -> None:
        self._canned = canned
        self._inputs: dict[str, Path] = {}
        self._batches: dict[str, dict] = {}

    async def upload(self, path: Path) -> str:
        file_id = f"file-{len(self._inputs) + 1}"
        self._inputs[file_id] = path
        return file_id

    async def create(self, input_file_id: str, metadata: dict) -> dict:
        with self._inputs[input_file_id].open("rb") as handle:
            total = sum(1 for _ in handle)
        batch_id = f"batch-{len(self._batches) + 1}"
        self._batches[batch_id] = {
            "id": batch_id,
            "status": "completed",
            "input_file_id": input_file_id,
            "output_file_id": "out-" + input_file_id,
            "error_file_id": None,
            "request_counts": {"total": total, "completed": total, "failed": 0},
        }
        return {**self._batches[batch_id], "status": "validating"}

    async def retrieve(self, batch_id: str) -> dict:
        return self._batches[batch_id]

    async def find(self, input_file_id: str) -> dict | None:
        return None

    async def lines(self, file_id: str):
        with self._inputs[file_id.removeprefix("out-")].open("rb") as handle:
            for n, line in enumerate(handle):
                custom_id = custom_id_of(line).encode()
                yield (
                    b'{"id":"batch_req_%d","custom_id":"%s","response":{"status_code":200,"request_id":"r",'
                    b'"body":%s},"error":null}' % (n, custom_id, self._canned)
                )
                if n % 1000 == 0:
                    await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        pass


class _BatchProvider(_CannedProvider):
    def batch_api(self) -> CannedBatchAPI:
        return CannedBatchAPI(self._canned)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def batch_child_run(n: int) -> dict:
    messages = classify_prompt()
    start_mb = rss_mb()
    rows = make_rows(n, seed=5)
    with_rows_mb = rss_mb()
    provider = _BatchProvider()
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "cache.sqlite")
        stats, batch_stats = RunStats(), RunStats()
        limiter = AdaptiveLimiter(CONCURRENCY, initial=16)
        client = LLMClient(provider, cache=cache, policy=RetryPolicy(), limiter=limiter, stats=stats)
        started = time.perf_counter()
        await batch_final_pass(
            client,
            BatchOptions(poll_interval=0.001),
            Path(tmp),
            [final_requests(client, messages, None, rows)],
            Reporter(stats, quiet=True),
            batch_stats,
            lambda _summary: None,
        )
        batch_seconds = time.perf_counter() - started
        parts = len(json.loads((Path(tmp) / "batches" / "batches.json").read_text())["parts"])
        started = time.perf_counter()
        scores = await classify_rows(client, messages, rows, workers=CONCURRENCY)
        final_seconds = time.perf_counter() - started
        cache.close()
    return {
        "rows": n,
        "peak_mb": rss_mb(),
        "start_mb": start_mb,
        "with_rows_mb": with_rows_mb,
        "batch_seconds": batch_seconds,
        "final_seconds": final_seconds,
        "batches": parts,
        "imported": batch_stats.requests,
        "sent_online": stats.requests,
        "from_cache": stats.cache_hits,
        "unscored": len(scores.errors),
    }


def child(module: str, flag: str, rows: int) -> dict:
    command = [sys.executable, "-m", module, flag, str(rows)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{module} child failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--batch-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_child:
        print(json.dumps(anyio.run(batch_child_run, args.batch_child)))
        return
    print(f"--batch-api memory: {args.rows:,} rows, online and batch in separate child processes", flush=True)
    online = child("bench.bench_engine", "--memory-child", args.rows)
    print(f"  online: peak {online['peak_mb']:,.0f} MB in {online['seconds']:.0f} s", flush=True)
    batch = child("bench.bench_batch", "--batch-child", args.rows)
    ok = batch["peak_mb"] < TARGET_MB
    print(
        f"  batch:  peak {batch['peak_mb']:,.0f} MB ({batch['with_rows_mb']:,.0f} MB with the rows loaded): "
        f"{batch['batches']} request files, {batch['imported']:,} lines imported in {batch['batch_seconds']:.0f} s, "
        f"then the final pass in {batch['final_seconds']:.0f} s ({batch['from_cache']:,} from the cache, "
        f"{batch['sent_online']:,} sent online, {batch['unscored']:,} unscored)"
    )
    print(f"batch peak < 1 GB: {'met' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
