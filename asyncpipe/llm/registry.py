"""Model name → provider. ``local`` and ``gguf:PATH`` run in-process with llama.cpp; every other name goes
to an OpenAI-compatible endpoint (``--base-url``, else ``OPENAI_BASE_URL``, else OpenAI)."""

from __future__ import annotations

from asyncpipe.errors import UserError
from asyncpipe.llm.base import LOGPROBS, ClassifyMode, Provider
from asyncpipe.model_facts import model_facts

#: samples per row when a model known to return no logprobs classifies and no --classify-mode is given
AUTO_SAMPLES = 8


def is_local(model: str) -> bool:
    return model == "local" or model.startswith("gguf:")


def default_classify_mode(model: str) -> tuple[ClassifyMode, str | None]:
    """The mode a model classifies in when none is asked for, and a note when it is not logprobs."""
    if is_local(model) or model_facts(model).logprobs:
        return ClassifyMode(), None
    mode = ClassifyMode("sample", AUTO_SAMPLES)
    return mode, (
        f"model '{model}' returns no logprobs (config/models.yaml): classifying by sampling the label "
        f"{AUTO_SAMPLES} times per row (--classify-mode {mode}); probabilities are coarse and it costs "
        f"{AUTO_SAMPLES}× the output tokens"
    )


def check_can_classify(model: str, mode: ClassifyMode = LOGPROBS) -> None:
    """Logprobs mode reads label logprobs: refuse a model known not to return them; the embedded model
    has exact logits and does not sample."""
    if mode.sampled:
        if is_local(model):
            raise UserError(
                "the embedded model reads exact label probabilities from its logits; "
                "--classify-mode sample:N is for API models without logprobs"
            )
        return
    if not is_local(model) and not model_facts(model).logprobs:
        raise UserError(
            f"model '{model}' does not return logprobs (config/models.yaml); classify by sampling with "
            f"--classify-mode sample:{AUTO_SAMPLES}, or pass --classify-model with one that returns them "
            "(e.g. gpt-4.1-mini)"
        )


def make_provider(
    model: str,
    *,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    connections: int,
    describe_timeout: float | None = None,
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
        model,
        base_url=base_url,
        api_key=api_key,
        facts=facts,
        timeout=timeout,
        connections=connections,
        describe_timeout=describe_timeout,
    )
