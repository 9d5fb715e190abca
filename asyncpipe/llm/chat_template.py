"""A GGUF model's chat template (``tokenizer.chat_template``), rendered as llama_cpp's
Jinja2ChatFormatter and Transformers render it, so the embedded model sees the prompt a server would
build from the same messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncpipe.errors import UserError
from asyncpipe.llm.base import Message

if TYPE_CHECKING:
    import llama_cpp


@dataclass(frozen=True)
class ChatTemplate:
    template: Any  # a compiled jinja2 template
    bos_text: str
    eos_text: str

    @classmethod
    def of(cls, llm: llama_cpp.Llama, model_path: Path) -> ChatTemplate:
        """The template a loaded model carries; UserError when it has none."""
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = llm.metadata.get("tokenizer.chat_template")
        if not source:
            raise UserError(f"model has no chat template (tokenizer.chat_template): {model_path}")
        # The same environment llama_cpp's Jinja2ChatFormatter builds (and Transformers before it).
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        eos, bos = llm.token_eos(), llm.token_bos()
        return cls(
            env.from_string(source),
            llm._model.token_get_text(bos) if bos != -1 else "",
            llm._model.token_get_text(eos) if eos != -1 else "",
        )

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text for ``messages``, ending with the assistant turn's header."""

        def raise_exception(message: str) -> None:
            raise UserError(f"the model's chat template refused the messages: {message}")

        return self.template.render(
            messages=[dict(m) for m in messages],
            eos_token=self.eos_text,
            bos_token=self.bos_text,
            raise_exception=raise_exception,
            add_generation_prompt=True,
            strftime_now=lambda fmt: datetime.now().strftime(fmt),
        )


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Transformers' chat-template ``tojson`` (non-ASCII kept as is), which templates are written against.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
