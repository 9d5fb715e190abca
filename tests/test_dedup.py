"""Identical requests under way at once are paid for once: duplicate rows within a run, and the same
rows in two runs sharing one pool (``asyncpipe pairs``)."""

from __future__ import annotations

import anyio
import pytest

from asyncpipe.config import PoolSettings
from asyncpipe.llm.retry import RetryPolicy
from asyncpipe.llm.stats import RunStats
from asyncpipe.pipeline.fanout import classify_rows
from asyncpipe.prompts.build import ROW_PLACEHOLDER
from tests.fake_openai import FakeOpenAI, ServerThread

MESSAGES = [
    {"role": "system", "content": "Decide A or B."},
    {"role": "user", "content": f"<example>\n{ROW_PLACEHOLDER}\n</example>"},
]


def make_pool(base_url, tmp_path):
    from asyncpipe.llm.pool import ModelPool

    pool = ModelPool(PoolSettings(base_url, timeout=10, concurrency=32), api_key="k", policy=RetryPolicy(3))
    pool.provider("fake-model", "classify")
    pool.open_cache(tmp_path / "cache.sqlite")
    return pool


def test_duplicate_rows_are_sent_once(tmp_path):
    fake = FakeOpenAI(latency=0.05)
    texts = ["I like apple pie"] * 150 + ["bananas are yellow"] * 150
    with ServerThread(fake) as server:

        async def go():
            pool = make_pool(server.base_url, tmp_path)
            try:
                stats = RunStats()
                scores = await classify_rows(pool.client("fake-model", stats), MESSAGES, texts, workers=32)
                return scores, stats
            finally:
                await pool.aclose()

        scores, stats = anyio.run(go)
    assert len(fake.requests) == 2
    assert scores.values() == pytest.approx([0.9] * 150 + [0.15] * 150)
    assert stats.requests == 2 and stats.cache_hits == 298


def test_two_runs_on_one_pool_share_answers_under_way(tmp_path):
    fake = FakeOpenAI(latency=0.05)
    texts = [f"apple {i}" for i in range(40)]
    with ServerThread(fake) as server:

        async def go():
            pool = make_pool(server.base_url, tmp_path)
            try:
                async with anyio.create_task_group() as group:
                    for _ in range(2):
                        group.start_soon(
                            lambda: classify_rows(
                                pool.client("fake-model", RunStats()), MESSAGES, texts, workers=16
                            )
                        )
            finally:
                await pool.aclose()

        anyio.run(go)
    assert len(fake.requests) == 40
