"""Ask an OpenAI-compatible server which models it serves (``GET /models``), for a default --model."""

from __future__ import annotations

import anyio

from asyncpipe.llm.openai_http import OpenAIHTTPProvider
from asyncpipe.model_facts import model_facts


def served_models(base_url: str, api_key: str | None, timeout: float = 10.0) -> list[str]:
    async def ask() -> list[str]:
        provider = OpenAIHTTPProvider(
            "?", base_url=base_url, api_key=api_key, facts=model_facts("?"), timeout=timeout
        )
        try:
            return await provider.list_models()
        finally:
            await provider.aclose()

    return anyio.run(ask)
