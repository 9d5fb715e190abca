"""The command line: flags (:mod:`asyncpipe.options`) → one typed configuration per command → the
pipeline. Nothing else happens here: no module under ``pipeline/`` sees the parsed flags.

Expected failures print one line and exit non-zero (2 for bad input or options, 1 for a fatal API
error, 130 for Ctrl-C); finished work is kept in every case.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import anyio

from asyncpipe.config import (
    CHARS_PER_TOKEN,
    BatchOptions,
    ClassifyConfig,
    PoolSettings,
    PropertiesConfig,
    RunConfig,
    Templates,
    load_settings,
)
from asyncpipe.errors import AsyncpipeError, BatchFilesWritten, UserError
from asyncpipe.model_facts import model_facts
from asyncpipe.options import build_parser

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"


def read_dotenv(path: Path = Path(".env")) -> None:
    """Read KEY=VALUE lines from ./.env into the environment, never overriding what is already set."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        key, value = key.strip(), value.strip().strip("'\"")
        if key and key not in os.environ:
            os.environ[key] = value


def resolve_models(args: argparse.Namespace, base_url: str | None, log) -> tuple[str, str]:
    model = args.model
    if model is None and base_url is not None and not (args.describe_model and args.classify_model):
        from asyncpipe.llm.probe import served_models

        served = served_models(base_url, os.environ.get("OPENAI_API_KEY"))
        if len(served) != 1:
            raise UserError(
                f"{base_url} serves {len(served)} models ({', '.join(served[:8]) or 'none'}); pass --model NAME"
            )
        model = served[0]
        log(f"using the model that {base_url} serves: {model}")
    if model is None:
        if os.environ.get("OPENAI_API_KEY"):
            model = DEFAULT_OPENAI_MODEL
            log(f"no --model given: using {model}")
        else:
            model = "local"
            log(
                "no --model and no OPENAI_API_KEY: using the embedded model (--model local); it proves the pipeline, not the finding"
            )
    return args.describe_model or model, args.classify_model or model


#: settings a flag of the same name overrides
FLAG_OR_SETTING = (
    "batch_size",
    "epochs",
    "max_steps",
    "patience",
    "validation_fraction",
    "validation_max",
    "test_fraction",
    "test_max",
    "describe_max_tokens",
    "properties",
    "properties_on",
    "min_label_mass",
)
#: settings only config/default.yaml and --config set
SETTING_ONLY = ("history_size", "wrong_examples", "describe_temperature", "seed")


def _pick(args: argparse.Namespace, settings: dict, name: str):
    """The flag's value when given, else the setting's."""
    value = getattr(args, name, None)
    return settings[name] if value is None else value


def pool_settings(args: argparse.Namespace, settings: dict) -> PoolSettings:
    """Where the models are and how hard to push them, for every command that sends requests."""
    return PoolSettings(
        base_url=args.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        timeout=_pick(args, settings, "timeout"),
        describe_timeout=_pick(args, settings, "describe_timeout"),
        concurrency=_pick(args, settings, "concurrency"),
        max_attempts=_pick(args, settings, "max_attempts"),
        retry_base_delay=settings["retry_base_delay"],
        retry_max_delay=settings["retry_max_delay"],
        rpm=args.rpm,
        tpm=args.tpm,
    )


def batch_options(args: argparse.Namespace, settings: dict, classify_model: str) -> BatchOptions | None:
    """``--batch-api [export|import=FILES]`` and ``--poll-interval``, with the file limits from the settings."""
    value = getattr(args, "batch_api", None)
    if value is None:
        if getattr(args, "poll_interval", None) is not None:
            raise UserError("--poll-interval applies to --batch-api only")
        return None
    from asyncpipe.llm.registry import is_local

    if is_local(classify_model):
        raise UserError(
            "--batch-api needs an API model; the embedded model runs in this process, not in batches"
        )
    files: tuple[str, ...] = ()
    if value.startswith("import="):
        mode, files = "import", tuple(f for f in value.removeprefix("import=").split(",") if f)
        if not files:
            raise UserError("--batch-api import= needs the result files: import=OUT_FILE[,OUT_FILE...]")
    elif value in ("submit", "export"):
        mode = value
    else:
        raise UserError(f"--batch-api takes no value, 'export' or 'import=FILE[,FILE]', not '{value}'")
    return BatchOptions(
        mode=mode,
        import_files=files,
        poll_interval=args.poll_interval or float(settings["batch_poll_interval"]),
        max_requests=settings["batch_max_requests"],
        max_bytes=settings["batch_max_bytes"],
    )


def resolve_classify_mode(flag: str | None, classify_model: str, log) -> str:
    """--classify-mode as given, else logprobs, or sampling (with a note) for a model known to return
    no logprobs."""
    from asyncpipe.llm.registry import default_classify_mode

    if flag is not None:
        return flag
    mode, note = default_classify_mode(classify_model)
    if note:
        log(f"note: {note}")
    return str(mode)


def build_classify_config(args: argparse.Namespace) -> ClassifyConfig:
    """``asyncpipe classify``: its flags, over config/default.yaml and --config."""
    settings = load_settings(args.config)
    pool = pool_settings(args, settings)
    files = (args.file, args.file2) if args.file2 else (args.file,)
    batch = batch_options(
        args, settings, args.model or ""
    )  # the classifier's own local model: refused inside
    return ClassifyConfig(
        args.classifier,
        files,
        args.output,
        pool,
        model=args.model,
        cache_path=args.cache,
        max_rows=args.max_rows,
        force=args.force,
        batch=batch,
        classify_mode=args.classify_mode,
        no_question=args.no_question,
        columns=_columns(args.columns),
        min_label_mass=settings["min_label_mass"],
        text_column_b=args.column_b,
    )


def build_properties_config(args: argparse.Namespace, log) -> PropertiesConfig:
    """``asyncpipe properties``: its flags, over config/default.yaml and --config."""
    settings = load_settings(args.config)
    pool = pool_settings(args, settings)
    _, model = resolve_models(args, pool.base_url, log)
    return PropertiesConfig(
        props=args.props,
        paths=tuple(str(p) for p in args.paths),
        output=args.output,
        model=model,
        templates=Templates.from_settings(settings["prompts"]),
        pool=pool,
        against=args.against,
        by_question=args.by_question,
        max_rows=args.max_rows,
        text_column=args.column,
        columns=_columns(args.columns),
        with_question=not args.no_question,
        max_row_chars=_pick(args, settings, "max_row_chars"),
        min_label_mass=settings["min_label_mass"],
        cache_path=args.cache,
        force=args.force,
        dry_run=args.dry_run,
        batch=batch_options(args, settings, model),
    )


def _columns(text: str | None) -> tuple[str, ...] | None:
    """``--columns a,b,c`` as a tuple; None when the flag was not given."""
    return None if text is None else tuple(c.strip() for c in text.split(",") if c.strip())


def build_config(args: argparse.Namespace, log) -> RunConfig:
    """``asyncpipe compare`` and ``pairs``: their flags, over config/default.yaml and --config."""
    settings = load_settings(args.config)
    pool = pool_settings(args, settings)
    describe_model, classify_model = resolve_models(args, pool.base_url, log)
    columns = _columns(args.columns) or None
    model_facts(describe_model).check_effort(args.reasoning_effort)
    classify_mode = resolve_classify_mode(args.classify_mode, classify_model, log)
    batch = batch_options(args, settings, classify_model)
    if batch is not None and classify_mode != "logprobs":
        raise UserError(
            "--batch-api sends logprobs requests only; classify by sampling (--classify-mode "
            f"{classify_mode}) without --batch-api"
        )
    max_row_chars = (
        args.max_row_tokens * CHARS_PER_TOKEN
        if args.max_row_tokens
        else _pick(args, settings, "max_row_chars")
    )
    return RunConfig(
        file_a=args.file_a,
        file_b=args.file_b,
        output=args.output,
        describe_model=describe_model,
        classify_model=classify_model,
        templates=Templates.from_settings(settings["prompts"]),
        pool=pool,
        extra_prompt=args.extra_prompt,
        text_column=args.column,
        text_column_b=args.column_b,
        context_column=args.context_column,
        context_column_b=args.context_column_b,
        columns=columns,
        with_question=not args.no_question,
        race=settings["race"] if args.race is None else args.race == "on",
        max_rows=args.max_rows,
        max_row_chars=max_row_chars,
        cache_path=args.cache,
        swap_labels=args.swap_labels,
        classify_mode=classify_mode,
        reasoning_effort=args.reasoning_effort,
        force=args.force,
        resume=args.resume,
        dry_run=getattr(args, "dry_run", False),
        batch=batch,
        **{name: _pick(args, settings, name) for name in FLAG_OR_SETTING},
        **{name: settings[name] for name in SETTING_ONLY},
    )


def _run(args: argparse.Namespace) -> int:
    from asyncpipe.llm.interrupt import Stopper, run_interruptible
    from asyncpipe.llm.stats import RunStats
    from asyncpipe.pipeline.progress import Reporter

    reporter = Reporter(RunStats(), quiet=getattr(args, "quiet", False))
    stopper = Stopper()

    def say(message: str) -> None:  # shown even with --quiet: it answers the user's Ctrl-C
        print(f"asyncpipe: {message}", file=sys.stderr, flush=True)

    def interruptible(main):
        """Run ``main`` (an async function) with Ctrl-C in two steps: keep the answers in flight."""
        return anyio.run(lambda: run_interruptible(main, stopper, say))

    if args.command == "report":
        from asyncpipe.report.write import render_directory

        print(render_directory(args.directory))
        return 0
    if args.command == "properties":
        from asyncpipe.pipeline.properties_command import run_properties
        from asyncpipe.prompts.properties import load_properties_file

        load_properties_file(args.props)  # a malformed file stops here, before a model is even looked for
        properties_cfg = build_properties_config(args, reporter.log)
        reporter.price = model_facts(properties_cfg.model).price
        index = interruptible(lambda: run_properties(properties_cfg, reporter, stopper))
        if not args.dry_run:
            print(index)
        return 0
    if args.command == "batches":
        from asyncpipe.pipeline.batch_pass import batches_command

        return batches_command(args.directory, cancel=args.cancel, base_url=args.base_url)
    if args.command == "demo":
        from asyncpipe.demo import demo_arguments

        args = build_parser().parse_args(demo_arguments(args.output, quiet=args.quiet))
        reporter.log(
            "demo: comparing two small shipped datasets (the same advice, written casually and formally) on the "
            "embedded 135M model, offline. It proves the pipeline runs end to end; its figures are no finding. A "
            "model this small writes weak descriptions and leans towards 'A', so its accuracy sits near 50%, while its "
            "pair accuracy (which ignores the lean) can be high on texts this different. Real analyses: --model "
            "gpt-4.1-mini, a vLLM/llama.cpp server (--base-url), or a larger GGUF (--model gguf:PATH)."
        )
    if args.command == "classify":
        from asyncpipe.pipeline.classify_command import classify_saved

        classify_cfg = build_classify_config(args)
        outcome = interruptible(lambda: classify_saved(classify_cfg, reporter, stopper))
        print(outcome)
        return 0
    if args.command == "pairs":
        from asyncpipe.pipeline.pairs import run_pairs
        from asyncpipe.pipeline.pairs_plan import plan_pairs

        plan = plan_pairs(args.paths, output=args.output, against=args.against, by_question=args.by_question)
        cfg = build_config(args, reporter.log)
        pairs = interruptible(
            lambda: run_pairs(cfg, plan, reporter, parallel=args.parallel_pairs, stopper=stopper)
        )
        print(pairs.index_html)
        if pairs.failed:
            print(
                f"asyncpipe: {pairs.failed} of {pairs.total} pairs failed; the reasons are in {pairs.index_html}",
                file=sys.stderr,
            )
        return 1 if pairs.failed else 0
    cfg = build_config(args, reporter.log)
    reporter.price = model_facts(cfg.classify_model).price
    from asyncpipe.pipeline.compare import compare
    from asyncpipe.pipeline.terminal_summary import print_summary

    if cfg.dry_run:
        from asyncpipe.pipeline.estimate import estimate_run

        print(estimate_run(cfg).render())
        return 0
    outcome = interruptible(lambda: compare(cfg, reporter, stopper=stopper))
    if not reporter.quiet:
        print_summary(outcome, reporter.console)
    print(outcome.index_html)
    return 0


def main(argv: list[str] | None = None) -> int:
    read_dotenv()
    args = build_parser().parse_args(argv)
    from asyncpipe.llm.interrupt import Interrupt

    try:
        return _run(args)
    except BatchFilesWritten as exc:  # --batch-api export: stopped on purpose, with what to do next
        print(str(exc))
        return exc.exit_code
    except AsyncpipeError as exc:
        print(f"asyncpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Interrupt):
        print(
            "asyncpipe: interrupted; finished work is saved — run the same command again to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
