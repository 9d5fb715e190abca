"""Model name → provider. ``local`` and ``gguf:PATH`` run in-process with llama.cpp; every other name goes
to an OpenAI-compatible endpoint (``--base-url``, else ``OPENAI_BASE_URL``, else OpenAI)."""

from __future__ import annotations

from asyncpipe.config import model_facts
from asyncpipe.errors import UserError
from asyncpipe.llm.base import Provider


def is_local(model: str) -> bool:
    return model == "local" or model.startswith("gguf:")


def check_can_classify(model: str) -> None:
    """Classification reads label logprobs: refuse a model known not to return them."""
    if not is_local(model) and not model_facts(model).logprobs:
        raise UserError(
            f"model '{model}' does not return logprobs (config/models.yaml), so it cannot classify; "
            "pass --classify-model with one that does (e.g. gpt-4.1-mini)"
        )


def make_provider(
    model: str,
    *,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    connections: int,
) -> Provider:
    if is_local(model):
        from asyncpipe.llm.local import resolve_model  # llama.cpp loads only when asked for

        return resolve_model(model)
    from asyncpipe.llm.openai_http import OpenAIHTTPProvider

    facts = model_facts(model)
    if base_url is None and not api_key:
        raise UserError(
            f"model '{model}' needs OPENAI_API_KEY (or a .env file holding it), or --base-url for a local "
            "server; for an offline run use --model local"
        )
    return OpenAIHTTPProvider(
        model, base_url=base_url, api_key=api_key, facts=facts, timeout=timeout, connections=connections
    )
