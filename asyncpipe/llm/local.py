"""The embedded model: llama.cpp in-process, exact label probabilities, shared-prefix reuse.

Classification prompts share a long prefix (instructions and the difference description) and differ only
in the row at the end. llama.cpp keeps the keys and values of every evaluated token in its KV cache, so a
row need only cost its own few dozen tokens instead of a few hundred.

Every prompt is evaluated the same way, whatever came before it: the *prefix* (everything before the
content of the last message: the system message with the description, and the chat template's header of
the last turn) is evaluated from an empty cache in one call, then the *row part* (the last message and the
template's closing) in a second call. When the next prompt has the same prefix, the first call is skipped
and only the row part is evaluated again. The prefix is reused whole or not at all, never into the row
part: llama.cpp computes a one-token batch with other SIMD kernels than a longer one, so a prompt that
replayed only its last token (an exact repeat) or part of its row would get slightly different
probabilities depending on which prompts came before it. This way the same messages always give
bit-identical p(A) on a given machine, whether the prefix was in the cache or not.

Against evaluating the whole prompt in one call (:meth:`LocalProvider.score_labels_whole`, the reference
``make bench-local`` compares with), the split changes the batch shapes and so the floating-point rounding:
p(A) agrees to about 1e-2 (the benchmark prints the figure), not bit for bit.

p(A) is exact: it is read from the full-vocabulary logits at the last position, summing every token that
reads as a label ("A" and " A" are different tokens), never from a top-k list.

One ``Llama`` instance is not thread-safe, and its calls block for up to seconds. Every call runs in a
worker thread (``anyio.to_thread.run_sync``) under one ``threading.Lock``; ``max_concurrency`` is 1.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from asyncpipe.errors import UserError
from asyncpipe.llm.base import Generation, LabelScore, Message, Provider, Sampling, Usage
from asyncpipe.llm.chat_template import ChatTemplate
from asyncpipe.llm.labels import AB, LabelSet, label_mass_from_logits, p_a_from_logits
from asyncpipe.llm.model_file import check_gguf, shipped_model_path

if TYPE_CHECKING:
    import llama_cpp

#: tokens the cut marker may cost, reserved up front so one re-render usually fits
_MARKER_ALLOWANCE = 24
#: extra re-renders allowed: retokenising at a cut can shift the count by a token or two
_MAX_CUT_ROUNDS = 8


def resolve_model(spec: str, *, n_ctx: int = 4096, n_threads: int | None = None) -> LocalProvider:
    """Build the provider for ``"local"`` (the shipped SmolLM2) or ``"gguf:/path/to/file.gguf"``."""
    if spec == "local":
        return LocalProvider(shipped_model_path(), n_ctx=n_ctx, n_threads=n_threads, model_name="local")
    if spec.startswith("gguf:"):
        raw = spec.removeprefix("gguf:").strip()
        if not raw:
            raise UserError("model 'gguf:' needs a path, e.g. gguf:/path/to/model.gguf")
        path = Path(raw).expanduser()
        return LocalProvider(path, n_ctx=n_ctx, n_threads=n_threads, model_name=f"gguf:{path}")
    raise UserError(f"unknown embedded model {spec!r}: use 'local' or 'gguf:/path/to/model.gguf'")


class LocalProvider(Provider):
    """A GGUF model run in-process by llama.cpp (see the module docstring)."""

    max_concurrency = 1

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        model_name: str = "local",
    ) -> None:
        self.model_path = check_gguf(Path(model_path))
        self.n_ctx = n_ctx
        #: the context window; the pipeline fits describe prompts into it (optional provider attribute)
        self.context_tokens = n_ctx
        self.n_threads = n_threads
        self.model = model_name
        # n_ctx is part of the identity: it decides where over-long rows are cut. So is the way a prompt is
        # evaluated (prefix, then row part): answers cached under another way differ in the last digits.
        size = self.model_path.stat().st_size
        self.cache_identity = f"llama.cpp:{self.model_path}:{size}:n_ctx={n_ctx}:eval=prefix+row"
        self._lock = threading.Lock()
        self._llm: llama_cpp.Llama | None = None
        self._template: ChatTemplate | None = None
        # token ids that read as each label, per label set (A/B checked at load, others on first use)
        self._label_ids: dict[LabelSet, tuple[list[int], list[int]]] = {}
        # the prefix whose keys and values sit in the KV cache (evaluated from an empty cache in one call),
        # or None when the cache holds anything else
        self._kv_prefix: list[int] | None = None
        # the last probe rendering (see _prefix_length): the messages before the last turn, and its tokens
        self._probe: tuple[str, list[int]] | None = None

    # --- the Provider protocol -------------------------------------------------------------------

    async def score_labels(self, messages: list[Message], labels: LabelSet = AB) -> LabelScore:
        return await anyio.to_thread.run_sync(lambda: self._score_labels_sync(messages, labels))

    async def sample_labels(self, messages: list[Message], n: int) -> LabelScore:
        raise UserError(
            "the embedded model reads exact label probabilities from its logits; "
            "--classify-mode sample:N is for API models without logprobs"
        )

    async def generate(self, messages: list[Message], sampling: Sampling) -> Generation:
        # a small local model does not reason: sampling.reasoning_effort does not apply
        return await anyio.to_thread.run_sync(
            lambda: self._generate_sync(
                messages, max_tokens=sampling.max_tokens, temperature=sampling.temperature, seed=sampling.seed
            )
        )

    async def score_labels_whole(self, messages: list[Message]) -> LabelScore:
        """Score the whole prompt in one evaluation from an empty cache: the reference the benchmark and
        the tests compare prefix reuse with (a different batch shape, so equal only up to rounding)."""
        return await anyio.to_thread.run_sync(lambda: self._score_labels_sync(messages, whole=True))

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close_sync)

    # --- helpers the tests and the benchmark use -------------------------------------------------

    def reset_prefix_cache(self) -> None:
        """Forget the KV cache contents: the next prompt is evaluated in full."""
        with self._lock:
            self._kv_prefix = None

    def render_prompt(
        self, messages: Sequence[Message], *, budget: int | None = None
    ) -> tuple[str, list[int]]:
        """The chat-templated prompt text and its tokens, cut to fit ``budget`` (default: n_ctx)."""
        with self._lock:
            self._ensure_loaded()
            _, text, tokens = self._fit_prompt(messages, self.n_ctx if budget is None else budget)
            return text, tokens

    # --- blocking work, always under the lock ----------------------------------------------------

    def _score_labels_sync(
        self, messages: list[Message], labels: LabelSet = AB, *, whole: bool = False
    ) -> LabelScore:
        import llama_cpp

        with self._lock:
            llm = self._ensure_loaded()
            fitted, _, tokens = self._fit_prompt(messages, self.n_ctx)
            if whole:
                self._kv_prefix = None
                llm.reset()
                llm.eval(tokens)
                reused = 0
            else:
                reused = self._evaluate(tokens, self._prefix_length(fitted, tokens))
            logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            ids_a, ids_b = self._ids_for(llm, labels)
            label_a, label_b = [logits[i] for i in ids_a], [logits[i] for i in ids_b]
            p_a = p_a_from_logits(label_a, label_b)
            mass = label_mass_from_logits(label_a + label_b, _log_normaliser(logits, llm.n_vocab()))
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=reused)
        return LabelScore(p_a=p_a, error=None, usage=usage, method="logits", label_mass=mass)

    def _generate_sync(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Generation:
        with self._lock:
            llm = self._ensure_loaded()
            # leave room for the answer; a prompt may still take most of a small context
            reserve = max(1, min(max_tokens, self.n_ctx // 2))
            _, _, tokens = self._fit_prompt(messages, self.n_ctx - reserve)
            # create_completion does its own prefix bookkeeping on the same KV cache: start it clean
            # and forget ours, so the two never disagree about what the cache holds.
            self._kv_prefix = None
            llm.reset()
            out = llm.create_completion(
                prompt=tokens,
                max_tokens=min(max_tokens, self.n_ctx - len(tokens)),
                temperature=temperature,
                seed=seed,
                stop=[self._template.eos_text] if self._template and self._template.eos_text else None,
            )
            llm.reset()
        text = out["choices"][0]["text"]
        completion_tokens = out["usage"]["completion_tokens"]
        return Generation(
            text=text, usage=Usage(prompt_tokens=len(tokens), completion_tokens=completion_tokens)
        )

    def _close_sync(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
            self._llm = None
            self._kv_prefix = None

    def _ensure_loaded(self) -> llama_cpp.Llama:
        if self._llm is not None:
            return self._llm
        import llama_cpp

        try:
            # verbose=False routes llama.cpp's log through a callback that drops it and silences the
            # C-level chatter while loading.
            llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                logits_all=False,
                verbose=False,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
            )
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"llama.cpp cannot load {self.model_path}: {exc}") from None
        try:
            self._template = ChatTemplate.of(llm, self.model_path)
        except UserError:
            llm.close()
            raise
        self._label_ids = {}
        try:
            self._ids_for(llm, AB)
        except UserError:
            llm.close()
            raise
        self._llm = llm
        self._kv_prefix = None
        return llm

    def _ids_for(self, llm: llama_cpp.Llama, labels: LabelSet) -> tuple[list[int], list[int]]:
        if labels not in self._label_ids:
            ids = (_label_token_ids(llm, labels, labels.first), _label_token_ids(llm, labels, labels.second))
            if not ids[0] or not ids[1]:
                raise UserError(
                    f"model's vocabulary has no single token for '{labels.first}' and '{labels.second}': {self.model_path}"
                )
            self._label_ids[labels] = ids
        return self._label_ids[labels]

    def _render(self, messages: Sequence[Message]) -> str:
        assert self._template is not None
        return self._template.render(messages)

    def _tokenize(self, text: str) -> list[int]:
        # The template writes BOS itself where the model wants one (llama_cpp does the same: add_bos=False).
        assert self._llm is not None
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _fit_prompt(self, messages: Sequence[Message], budget: int) -> tuple[list[Message], str, list[int]]:
        """Render and tokenize; if longer than ``budget``, cut the longest user contents in the middle.
        Returns the messages as cut, their text and their tokens.

        The head of a cut message is kept (three quarters of what remains) and its tail too (the last
        quarter), since instructions often close a user message; a marker says how much went.
        """
        text = self._render(messages)
        tokens = self._tokenize(text)
        if len(tokens) <= budget:
            return list(messages), text, tokens
        assert self._llm is not None
        llm = self._llm
        originals = {
            i: llm.tokenize(m["content"].encode("utf-8"), add_bos=False, special=False)
            for i, m in enumerate(messages)
            if m["role"] == "user"
        }
        cut = dict.fromkeys(originals, 0)
        current = list(messages)
        # one round per user message (each may be cut to nothing) plus a few for retokenising slack
        for _ in range(len(originals) + _MAX_CUT_ROUNDS):
            excess = len(tokens) - budget
            if excess <= 0:
                return current, text, tokens
            # cut from the user message with the most content left
            left = {i: len(originals[i]) - cut[i] for i in originals}
            target = max(left, key=lambda i: left[i], default=None)
            if target is None or left[target] <= 0:
                break
            cut[target] = min(len(originals[target]), cut[target] + excess + _MARKER_ALLOWANCE)
            current[target] = Message(role="user", content=_cut_content(llm, originals[target], cut[target]))
            text = self._render(current)
            tokens = self._tokenize(text)
        if len(tokens) <= budget:
            return current, text, tokens
        raise UserError(
            f"the model's context of {self.n_ctx} tokens is too small for the instructions alone "
            f"({len(tokens)} tokens after cutting the rows, {budget} available): raise n_ctx or shorten them"
        )

    def _prefix_length(self, messages: Sequence[Message], tokens: list[int]) -> int:
        """How many leading ``tokens`` come before the content of the last message.

        The prompt is rendered once more with the last message emptied (the *probe*); the tokens both
        renderings share are the prefix. It depends on the messages alone, never on earlier prompts. If a
        row's first characters merge with the template's last header token, the prefix is one token
        shorter for that row: it is then evaluated afresh, which costs time but not exactness. At least one
        token is always left to evaluate, since logits exist only for evaluated positions.
        """
        *head, last = messages
        key = json.dumps([[dict(m) for m in head], last["role"]])
        if self._probe is None or self._probe[0] != key:
            probe = self._render([*head, Message(role=last["role"], content="")])
            self._probe = (key, self._tokenize(probe))
        shared = 0
        for ours, probe_token in zip(tokens, self._probe[1], strict=False):
            if ours != probe_token:
                break
            shared += 1
        return min(shared, len(tokens) - 1)

    def _evaluate(self, tokens: list[int], prefix_length: int) -> int:
        """Put ``tokens`` in the KV cache as two evaluations, the prefix (skipped when the cache already
        holds exactly that prefix) and the rest; return how many tokens were reused."""
        import llama_cpp

        llm = self._llm
        assert llm is not None
        prefix = tokens[:prefix_length]
        reuse = 0
        if prefix and self._kv_prefix == prefix:
            memory = llama_cpp.llama_get_memory(llm.ctx)
            # Partial removal can fail (recurrent models); then evaluate everything, as Llama.generate does.
            if memory is not None and llama_cpp.llama_memory_seq_rm(memory, 0, prefix_length, -1):
                reuse = prefix_length
        # Forget first: if eval fails half-way, the cache holds an unknown state.
        self._kv_prefix = None
        if reuse == 0:
            llm.reset()
            if prefix:
                llm.eval(prefix)
        llm.n_tokens = prefix_length
        llm.eval(tokens[prefix_length:])
        self._kv_prefix = prefix
        return reuse


def _cut_content(llm: llama_cpp.Llama, content_tokens: list[int], n_cut: int) -> str:
    keep = len(content_tokens) - n_cut
    head = keep - keep // 4
    tail = keep - head
    marker = f"\n[… cut {n_cut} tokens to fit the model's context …]\n"
    head_text = llm.detokenize(content_tokens[:head]).decode("utf-8", errors="ignore")
    tail_text = (
        llm.detokenize(content_tokens[len(content_tokens) - tail :]).decode("utf-8", errors="ignore")
        if tail
        else ""
    )
    return head_text + marker + tail_text


def _label_token_ids(llm: llama_cpp.Llama, labels: LabelSet, label: str) -> list[int]:
    """Ids of the single tokens spelling ``label`` and `` label`` (and their capitalisations when the
    label set ignores case), deduplicated, in order."""
    ids: list[int] = []
    for text in labels.spellings(label):
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(tokens) == 1 and tokens[0] not in ids:
            ids.append(tokens[0])
    return ids


def _log_normaliser(logits: Any, n_vocab: int) -> float:
    """logsumexp over the whole vocabulary's logits (a C float array), for the label mass."""
    import numpy as np

    values = np.ctypeslib.as_array(logits, shape=(n_vocab,)).astype(np.float64)
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))
