"""Configuration: defaults and prompt templates from ``config/default.yaml`` (overridable with
``--config``), and the frozen configuration of each command (:class:`RunConfig` for ``compare`` and
``pairs``, :class:`ClassifyConfig`, :class:`PropertiesConfig`) that the command line builds and passes
down. Facts about models are :mod:`asyncpipe.model_facts`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
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
    "describe_timeout": ("float", lambda v: v > 0, "a number of seconds > 0"),
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


#: characters per token, for rough token counts where no tokenizer is at hand: about four characters of
#: English for the tokenizers in use (o200k_base, Llama, Qwen)
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class PoolSettings:
    """How to reach the models and how hard to push them: what one model pool is built from."""

    #: an OpenAI-compatible endpoint (None: OpenAI itself, or the embedded model)
    base_url: str | None = None
    #: seconds one classify request may take, and one describe request (a long answer, written slowly
    #: by a busy self-hosted server)
    timeout: float = 60.0
    describe_timeout: float = 600.0
    #: the adaptive limiter's ceiling: most requests in flight per model
    concurrency: int = 64
    #: tries per request, the first included; waits between them back off from base to max seconds
    max_attempts: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    #: budgets of the user's own, per minute (None: only the server's limits)
    rpm: float | None = None
    tpm: float | None = None


@dataclass(frozen=True)
class PropertiesConfig:
    """``asyncpipe properties``: the user's own yes/no properties checked on files (no describe step)."""

    props: Path
    #: files, folders (searched below) or globs, as ``pairs`` takes them
    paths: tuple[str, ...]
    output: Path
    model: str
    templates: Templates
    pool: PoolSettings = PoolSettings()
    against: str | None = None
    by_question: bool = False
    max_rows: int | None = None
    text_column: str | None = None
    columns: tuple[str, ...] | None = None
    with_question: bool = True
    max_row_chars: int = 6000
    min_label_mass: float = 0.5
    cache_path: Path | None = None
    force: bool = False
    dry_run: bool = False
    #: --batch-api: the checks as batch jobs first (None: online)
    batch: BatchOptions | None = None


@dataclass(frozen=True)
class ClassifyConfig:
    """``asyncpipe classify``: a saved classifier applied to one file, or to two (A and B, with metrics).
    ``model`` and ``pool.base_url`` are the flags' (None: the classifier's model; no address)."""

    classifier: Path
    files: tuple[Path, ...]
    output: Path
    pool: PoolSettings
    model: str | None = None
    cache_path: Path | None = None
    max_rows: int | None = None
    force: bool = False
    #: --batch-api (None: online)
    batch: BatchOptions | None = None
    #: --classify-mode (None: the classifier's own)
    classify_mode: str | None = None
    #: --no-question / --columns: show rows otherwise than the classifier was chosen on (with a warning)
    no_question: bool = False
    columns: tuple[str, ...] | None = None
    #: the threshold for a classify.yaml written before it kept its own
    min_label_mass: float = 0.5
    #: the second file's text column, when it is named differently (--column-b)
    text_column_b: str | None = None


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

    #: row i of A is compared with row i of B
    file_a: Path
    file_b: Path
    output: Path
    #: the model that writes descriptions and the one that classifies rows (often the same)
    describe_model: str
    classify_model: str
    templates: Templates
    #: where the models are and how hard to push them (``base_url`` is part of the fingerprint)
    pool: PoolSettings = PoolSettings()
    extra_prompt: str = ""
    # what a row is (data/load.py, data/render.py)
    text_column: str | None = None
    #: B's text column when it is named differently from A's (--column-b)
    text_column_b: str | None = None
    #: the column shown before the text as its context (--context-column), and B's name for it
    context_column: str = "question"
    context_column_b: str | None = None
    columns: tuple[str, ...] | None = None
    with_question: bool = True
    max_rows: int | None = None
    max_row_chars: int = 6000
    # the plan (data/pairing.py)
    batch_size: int = 16
    epochs: int = 1
    max_steps: int | None = None
    validation_fraction: float = 0.1
    validation_max: int = 100
    test_fraction: float = 0.1
    test_max: int = 100
    seed: int = 0
    #: end the describe loop after this many steps without a lower validation loss (0: never)
    patience: int = 5
    #: score a new description on a quarter of the validation rows first (see metrics/stopping.py)
    race: bool = True
    #: a row whose 'A'+'B' hold less of the answer than this is unscored (see llm/labels.py)
    min_label_mass: float = 0.5
    # what the describer is shown and how it answers (pipeline/describe.py)
    history_size: int = 3
    wrong_examples: int = 4
    describe_max_tokens: int = 1024
    describe_temperature: float = 0.7
    swap_labels: bool = False
    #: yes/no properties listed and checked after the loop (0: none), and on which rows
    properties: int = 8
    properties_on: str = "held-out"
    #: how the classifier's p(A) is obtained: "logprobs" or "sample:N" (see asyncpipe.llm.base.ClassifyMode)
    classify_mode: str = "logprobs"
    #: the describer's reasoning_effort (None: the model's own default)
    reasoning_effort: str | None = None
    # the output directory
    cache_path: Path | None = None
    force: bool = False
    resume: bool = False
    dry_run: bool = False
    #: the final pass through the Batch API (None: online); not part of the fingerprint, since the
    #: answers are the same either way
    batch: BatchOptions | None = None

    @property
    def base_url(self) -> str | None:
        return self.pool.base_url

    def public_dict(self) -> dict[str, Any]:
        """The resolved configuration for run.json: plain values, paths as strings, no secrets."""
        out: dict[str, Any] = {}
        values = asdict(self)
        for key, value in {**values.pop("pool"), **values}.items():
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
