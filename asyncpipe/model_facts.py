"""Facts about models from ``config/models.yaml``: logprobs, token parameter, reasoning efforts,
tokenizer and prices (list and Batch API). Model facts are data, not code: a new model is a YAML entry."""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass
from typing import Any

from asyncpipe.config import config_dir, read_yaml
from asyncpipe.errors import UserError


@dataclass(frozen=True)
class Price:
    input: float
    cached_input: float
    output: float

    def scaled(self, factor: float) -> Price:
        return Price(self.input * factor, self.cached_input * factor, self.output * factor)


@dataclass(frozen=True)
class ModelFacts:
    """What asyncpipe knows of one model (``config/models.yaml``): whether it returns logprobs, how it
    takes its token limit and reasoning effort, its tokenizer and its price per million tokens."""

    name: str
    logprobs: bool = True
    token_param: str = "max_tokens"
    tokenizer: str | None = None
    price: Price | None = None
    #: thinks before answering: its token budget must cover hidden reasoning tokens too
    reasoning: bool = False
    #: share of the price the provider's Batch API takes off (0.5: half price); None when unknown
    batch_discount: float | None = None

    #: the ``reasoning_effort`` values it accepts (empty: it takes no such parameter, or unknown)
    efforts: tuple[str, ...] = ()
    #: the effort at which it returns logprobs (sent on classify requests); None: no effort needed
    logprobs_effort: str | None = None
    #: the effort it uses when a request names none
    default_effort: str | None = None
    #: the effort used for sampled classification (the cheapest it accepts)
    sample_effort: str | None = None
    #: accepts ``n`` > 1 (several answers from one request)
    n: bool = True

    @property
    def batch_price(self) -> Price | None:
        """The price of a request sent through the Batch API (the list price when no discount is known)."""
        if self.price is None:
            return None
        return self.price.scaled(1.0 - (self.batch_discount or 0.0))

    def check_effort(self, effort: str | None) -> None:
        """Refuse an effort the model is known not to accept, before anything is sent."""
        if effort is not None and self.efforts and effort not in self.efforts:
            raise UserError(
                f"model '{self.name}' accepts --reasoning-effort {', '.join(self.efforts)} "
                f"(config/models.yaml), not '{effort}'"
            )

    def sends_temperature(self, effort: str | None) -> bool:
        """Whether a request at ``effort`` may carry temperature and seed: reasoning models refuse them,
        except at the effort that also enables logprobs (gpt-5.1's "none")."""
        if not self.reasoning:
            return True
        effective = effort if effort is not None else self.default_effort
        return self.logprobs_effort is not None and effective == self.logprobs_effort

    def reasons(self, effort: str | None) -> bool:
        """Whether a request at ``effort`` may spend hidden reasoning tokens."""
        effective = effort if effort is not None else self.default_effort
        return self.reasoning and effective != "none"


@functools.cache  # models.yaml is package data: read it once per process, not once per use
def model_facts(model: str) -> ModelFacts:
    """Facts for ``model``: an exact entry, else the longest listed prefix (dated snapshots such as
    ``gpt-4o-mini-2024-07-18``), else the defaults. Provider prefixes like ``openai/`` are ignored.

    A variant that is not a dated snapshot (``gpt-5.1-codex-mini``, ``gpt-5.2-pro``) behaves as its
    family (logprobs, efforts, token parameter) but does not take its price: variants are priced
    differently (``-mini`` lower, ``-pro`` far higher), and a cost shown wrong is worse than one shown
    unknown. List the variant to price it."""
    data = read_yaml(config_dir() / "models.yaml", "model facts")
    defaults = data.get("defaults", {})
    models = data.get("models", {})
    bare = model.split("/")[-1]
    key = _family(bare, models)
    entry = {**defaults, **(models.get(key, {}) if key else {})}
    price = entry.get("price") if key is None or _same_price(bare, key) else None
    efforts = entry.get("efforts") or ()
    return ModelFacts(
        name=model,
        logprobs=bool(entry.get("logprobs", True)),
        token_param=str(entry.get("token_param", "max_tokens")),
        tokenizer=entry.get("tokenizer"),
        price=Price(**price) if price else None,
        reasoning=bool(entry.get("reasoning", False)),
        batch_discount=float(entry["batch_discount"]) if entry.get("batch_discount") is not None else None,
        efforts=tuple(str(e) for e in efforts),
        logprobs_effort=entry.get("logprobs_effort"),
        default_effort=entry.get("default_effort"),
        sample_effort=entry.get("sample_effort"),
        n=bool(entry.get("n", True)),
    )


#: what a dated snapshot adds to its family's name: -2024-07-18, -0613
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})")


def _same_price(bare: str, key: str) -> bool:
    """Whether ``bare`` is its entry ``key`` itself or a dated snapshot of it (priced alike)."""
    return bare == key or "*" in key or _SNAPSHOT.fullmatch(bare[len(key) :]) is not None


def _family(bare: str, models: dict[str, Any]) -> str | None:
    """The entry a model name takes its facts from: the exact name, else the listed name or glob that
    matches with the most literal characters. Dated snapshots (gpt-4o-mini-2024-07-18) and variants
    (gpt-5.1-mini) take their family's entry by prefix; "gpt-5.*" catches later point releases (gpt-5.3)
    ahead of "gpt-5", whose prefix is shorter, but behind "gpt-5.1" for gpt-5.1-mini."""
    if bare in models:
        return bare
    best: tuple[int, str] | None = None
    for name in models:
        if "*" in name:
            literal = name.split("*", 1)[0]
            hit = fnmatch.fnmatchcase(bare, name)
        else:
            literal = name
            hit = bare.startswith((name + "-", name + "."))
        if hit and (best is None or len(literal) > best[0]):
            best = (len(literal), name)
    return best[1] if best else None
