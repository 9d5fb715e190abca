"""Configuration: defaults and prompt templates from ``config/default.yaml`` (overridable with
``--config``), model facts from ``config/models.yaml``, and the one frozen :class:`RunConfig` that the
command line builds and passes down."""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asyncpipe.errors import UserError


def config_dir() -> Path:
    """``asyncpipe/config`` in an installed wheel, the repository's ``config/`` in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "config"
    return packaged if packaged.is_dir() else here.parent / "config"


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: expected a mapping of settings at the top level")
    return data


def load_settings(override: Path | None = None) -> dict[str, Any]:
    """Defaults merged with an override file; prompt templates are merged key by key. Every value is
    checked here, so a wrong one is reported with its key and file instead of failing deep in a run."""
    defaults_path = config_dir() / "default.yaml"
    settings = read_yaml(defaults_path, "defaults")
    origin = dict.fromkeys(settings, f"defaults {defaults_path}")
    if override is not None:
        extra = read_yaml(override, "--config")
        where = f"--config {override}"
        unknown = set(extra) - set(settings)
        if unknown:
            raise UserError(f"{where}: unknown setting(s): {', '.join(sorted(unknown))}")
        extra_prompts = extra.pop("prompts", None) or {}
        _check_prompts(extra_prompts, settings.get("prompts"), where)
        prompts = {**settings["prompts"], **extra_prompts}
        settings = {**settings, **extra, "prompts": prompts}
        origin.update(dict.fromkeys(extra, where))
    for key, value in settings.items():
        if key == "prompts":
            _check_prompts(value, None, origin[key])
            continue
        rule = SETTING_RULES.get(key)
        if rule is None:
            raise UserError(f"{origin[key]}: no rule to check setting '{key}'")
        kind, is_valid, wanted = rule
        if not (_is_kind(value, kind) and is_valid(value)):
            raise UserError(f"{origin[key]}: {key} must be {wanted}, got {_show(value)}")
    return settings


# key: (kind, range check, what the error says it must be). "int" takes no bools (YAML reads `yes` as
# true); "float" takes ints too, but no NaN or infinity; "int or null" also takes null.
SETTING_RULES: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "batch_size": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "epochs": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "max_steps": ("int or null", lambda v: v is None or v >= 1, "null or an integer ≥ 1"),
    "patience": ("int", lambda v: v >= 0, "an integer ≥ 0 (0: every step)"),
    "race": ("bool", lambda v: True, "true or false"),
    "validation_fraction": ("float", lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
    "validation_max": ("int", lambda v: v >= 0, "an integer ≥ 0"),
    "test_fraction": ("float", lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
    "test_max": ("int", lambda v: v >= 0, "an integer ≥ 0"),
    "max_row_chars": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "min_label_mass": ("float", lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "history_size": ("int", lambda v: v >= 0, "an integer ≥ 0"),
    "wrong_examples": ("int", lambda v: v >= 0, "an integer ≥ 0"),
    "describe_max_tokens": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "describe_temperature": ("float", lambda v: v >= 0, "a number ≥ 0"),
    "seed": ("int", lambda v: True, "an integer"),
    "concurrency": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "timeout": ("float", lambda v: v > 0, "a number of seconds > 0"),
    "max_attempts": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "retry_base_delay": ("float", lambda v: v >= 0, "a number of seconds ≥ 0"),
    "retry_max_delay": ("float", lambda v: v >= 0, "a number of seconds ≥ 0"),
    "batch_max_requests": ("int", lambda v: v >= 1, "an integer ≥ 1"),
    "batch_max_bytes": ("int", lambda v: v >= 1024, "a number of bytes ≥ 1024"),
    "batch_poll_interval": ("float", lambda v: v > 0, "a number of seconds > 0"),
    "properties": ("int", lambda v: v >= 0, "an integer ≥ 0"),
    "properties_on": ("str", lambda v: v in PROPERTIES_ON, "'held-out' or 'all'"),
}
#: which rows compare checks its properties on
PROPERTIES_ON = ("held-out", "all")


def _is_kind(value: Any, kind: str) -> bool:
    if value is None:
        return kind == "int or null"
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "bool":
        return False
    if kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, int)


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _check_prompts(prompts: Any, known: dict | None, where: str) -> None:
    """A mapping of template name to text; with ``known``, only names that exist there."""
    if not isinstance(prompts, dict):
        raise UserError(f"{where}: prompts must be a mapping of template name to text, got {_show(prompts)}")
    for name, text in prompts.items():
        if known is not None and name not in known:
            raise UserError(
                f"{where}: unknown prompt template '{name}'; the templates are: {', '.join(known)}"
            )
        if not isinstance(text, str):
            raise UserError(f"{where}: prompts.{name} must be text, got {_show(text)}")


@dataclass(frozen=True)
class Price:
    input: float
    cached_input: float
    output: float

    def scaled(self, factor: float) -> Price:
        return Price(self.input * factor, self.cached_input * factor, self.output * factor)


@dataclass(frozen=True)
class ModelFacts:
    name: str
    logprobs: bool = True
    token_param: str = "max_tokens"
    tokenizer: str | None = None
    price: Price | None = None
    #: thinks before answering: its token budget must cover hidden reasoning tokens too
    reasoning: bool = False
    #: share of the price the provider's Batch API takes off (0.5: half price); None when unknown
    batch_discount: float | None = None

    @property
    def batch_price(self) -> Price | None:
        """The price of a request sent through the Batch API (the list price when no discount is known)."""
        if self.price is None:
            return None
        return self.price.scaled(1.0 - (self.batch_discount or 0.0))

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
    ``gpt-4o-mini-2024-07-18``), else the defaults. Provider prefixes like ``openai/`` are ignored."""
    data = read_yaml(config_dir() / "models.yaml", "model facts")
    defaults = data.get("defaults", {})
    models = data.get("models", {})
    key = _family(model.split("/")[-1], models)
    entry = {**defaults, **(models.get(key, {}) if key else {})}
    price = entry.get("price")
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


@dataclass(frozen=True)
class Templates:
    describe_system: str
    describe_user: str
    describe_history: str
    classify_system: str
    classify_user: str
    properties_system: str
    properties_user: str
    property_check_system: str
    property_check_user: str

    @classmethod
    def from_settings(cls, prompts: dict[str, str]) -> Templates:
        try:
            return cls(**{name: str(prompts[name]) for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise UserError(f"prompt template {exc.args[0]} is missing from the configuration") from None


@dataclass(frozen=True)
class BatchOptions:
    """``--batch-api``: how the final classification is sent. ``mode`` is ``submit`` (the provider's Batch
    API), ``export`` (write request files for an offline engine and stop) or ``import`` (read the result
    files ``import_files`` into the cache, then go on)."""

    mode: str = "submit"
    import_files: tuple[str, ...] = ()
    poll_interval: float = 30.0
    max_requests: int = 50_000
    max_bytes: int = 200_000_000


@dataclass(frozen=True)
class RunConfig:
    """Everything a comparison needs, resolved once from flags, files and environment."""

    file_a: Path
    file_b: Path
    output: Path
    describe_model: str
    classify_model: str
    base_url: str | None
    templates: Templates
    extra_prompt: str = ""
    text_column: str | None = None
    #: B's text column when it is named differently from A's (--column-b)
    text_column_b: str | None = None
    #: the column shown before the text as its context (--context-column), and B's name for it
    context_column: str = "question"
    context_column_b: str | None = None
    columns: tuple[str, ...] | None = None
    with_question: bool = True
    batch_size: int = 16
    epochs: int = 1
    max_steps: int | None = None
    #: end the describe loop after this many steps without a lower validation loss (0: never)
    patience: int = 5
    #: score a new description on a quarter of the validation rows first (see metrics/stopping.py)
    race: bool = True
    max_rows: int | None = None
    validation_fraction: float = 0.1
    validation_max: int = 100
    test_fraction: float = 0.1
    test_max: int = 100
    max_row_chars: int = 6000
    min_label_mass: float = 0.5
    history_size: int = 3
    wrong_examples: int = 4
    describe_max_tokens: int = 1024
    describe_temperature: float = 0.7
    seed: int = 0
    concurrency: int = 64
    timeout: float = 60.0
    max_attempts: int = 5
    rpm: float | None = None
    tpm: float | None = None
    cache_path: Path | None = None
    swap_labels: bool = False
    #: yes/no properties listed and checked after the loop (0: none), and on which rows
    properties: int = 8
    properties_on: str = "held-out"
    #: how the classifier's p(A) is obtained: "logprobs" or "sample:N" (see asyncpipe.llm.base.ClassifyMode)
    classify_mode: str = "logprobs"
    #: the describer's reasoning_effort (None: the model's own default)
    reasoning_effort: str | None = None
    force: bool = False
    resume: bool = False
    dry_run: bool = False
    #: the final pass through the Batch API (None: online); not part of the fingerprint, since the
    #: answers are the same either way
    batch: BatchOptions | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def public_dict(self) -> dict[str, Any]:
        """The resolved configuration for run.json: plain values, paths as strings, no secrets."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def fingerprint_dict(self) -> dict[str, Any]:
        """What decides the results: changing any of these makes it a different run."""
        keep = {
            "describe_model",
            "classify_model",
            "base_url",
            "templates",
            "extra_prompt",
            "text_column",
            "columns",
            "with_question",
            "batch_size",
            "epochs",
            "max_steps",
            "patience",
            "race",
            "max_rows",
            "validation_fraction",
            "validation_max",
            "test_fraction",
            "test_max",
            "max_row_chars",
            "min_label_mass",
            "history_size",
            "wrong_examples",
            "describe_max_tokens",
            "describe_temperature",
            "seed",
            "swap_labels",
            "properties",
            "properties_on",
        }
        # settings added later count only when set, so runs made before them keep their fingerprint
        later = {
            "classify_mode": "logprobs",
            "reasoning_effort": None,
            "text_column_b": None,
            "context_column": "question",
            "context_column_b": None,
        }
        return {k: v for k, v in self.public_dict().items() if k in keep or (k in later and v != later[k])}
