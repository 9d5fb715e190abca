"""The flags of every command (argparse). Usage errors exit 2 with one line; :mod:`asyncpipe.cli` turns
the parsed flags into one typed configuration per command."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from asyncpipe import __version__
from asyncpipe.llm.base import ClassifyMode


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line rather than the whole usage text, no flag is
    taken by an abbreviation (a mistyped or newer flag is never read as another one: ``--classify-mode``
    as ``--classify-model``), and an unknown flag is reported by its command's parser with the closest
    flag that command has."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"asyncpipe: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(getattr(parsed, "command", None))
            command.error(f"unrecognized arguments: {' '.join(extras)}{command.closest_flag(extras)}")
        return parsed

    def _command_parser(self, command: str | None) -> _Parser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self

    def closest_flag(self, extras: list[str]) -> str:
        # every spelling is matched (the seed's --batch_size too), the first one is suggested
        canonical = {
            flag: action.option_strings[0]
            for action in self._actions
            for flag in action.option_strings
            if flag.startswith("--")
        }
        for word in extras:
            if word.startswith("-"):
                match = difflib.get_close_matches(word.split("=", 1)[0], list(canonical), n=1, cutoff=0.6)
                if match:
                    return f"; did you mean {canonical[match[0]]}?"
        return ""


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``, else one line saying what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number ≥ {minimum}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1)
_count = _whole_number(0)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got '{text}'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _classify_mode(text: str) -> str:
    try:
        return str(ClassifyMode.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_options(p: argparse.ArgumentParser, *, describes: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="model for "
        + ("both roles" if describes else "classifying")
        + ": an API model name, 'local' (embedded SmolLM2), or gguf:PATH",
    )
    if describes:
        g.add_argument("--describe-model", help="model that writes descriptions (default: --model)")
        g.add_argument("--classify-model", help="model that classifies rows (default: --model)")
        g.add_argument(
            "--reasoning-effort",
            help="reasoning_effort of the describe requests, for models that take one (default: the model's "
            "own; config/models.yaml lists each family's values)",
        )
    g.add_argument(
        "--classify-mode",
        type=_classify_mode,
        metavar="MODE",
        help="'logprobs' (p(A) from label logprobs) or 'sample:N' (ask N times at temperature 1, for models "
        "without logprobs: coarse, N× the output tokens). Default: logprobs, or sample:8 for a model known "
        "to return none",
    )
    g.add_argument("--base-url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL, else OpenAI)")
    g.add_argument("--concurrency", type=_positive_int, help="most classify requests in flight (default 64)")
    g.add_argument(
        "--timeout", type=_positive_float, help="seconds one classify request may take (default 60)"
    )
    g.add_argument(
        "--describe-timeout",
        type=_positive_float,
        help="seconds one describe request may take (default 600: a long answer from a busy server)",
    )
    g.add_argument(
        "--max-attempts", type=_positive_int, help="tries per request, the first included (default 5)"
    )
    g.add_argument("--rpm", type=_positive_float, help="requests-per-minute budget")
    g.add_argument("--tpm", type=_positive_float, help="tokens-per-minute budget (estimated tokens)")
    g.add_argument(
        "--cache", type=Path, help="response cache file (default: OUTPUT/cache.sqlite); share one across runs"
    )
    g.add_argument("--config", type=Path, help="YAML file overriding config/default.yaml (prompts, defaults)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.add_argument(
        "--batch-api",
        nargs="?",
        const="submit",
        metavar="export|import=FILE[,FILE]",
        help="final classification as Batch API jobs at the batch price (within 24 h); 'export' writes request "
        "files for vllm run-batch and stops, 'import=FILES' reads its result files and continues",
    )
    g.add_argument(
        "--poll-interval",
        type=_positive_float,
        help="seconds between polls of a batch at first, stretched while nothing changes (default 30)",
    )


def add_compare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--extra-prompt", "--extra_prompt", default="", help="extra instructions for the describer"
    )
    p.add_argument(
        "--output",
        "--outout",
        dest="output",
        type=Path,
        default=Path("report"),
        help="output directory (default: report/)",
    )
    p.add_argument(
        "--batch-size",
        "--batch_size",
        dest="batch_size",
        type=_positive_int,
        help="rows shown from EACH dataset per step (default 16)",
    )
    p.add_argument("--epochs", type=_positive_int, help="passes over the batches (default 1)")
    p.add_argument("--max-steps", type=_positive_int, help="stop after this many describe steps")
    p.add_argument(
        "--patience",
        type=_count,
        help="stop after this many steps in a row without a lower validation loss; 0 runs every step (default 5)",
    )
    p.add_argument(
        "--race",
        choices=("on", "off"),
        help="score each new description on a quarter of the validation rows first, the rest only if it "
        "could still beat the best (default on)",
    )
    p.add_argument("--max-rows", type=_positive_int, help="use only the first N rows of each file")
    p.add_argument(
        "--column", help="the text column (default: first of answer, response, completion, output, text)"
    )
    p.add_argument("--column-b", help="B's text column, when B names it differently from A (--column)")
    p.add_argument(
        "--context-column",
        default="question",
        help="the column shown before the text as its context (default: question)",
    )
    p.add_argument("--context-column-b", help="B's context column, when B names it differently")
    p.add_argument("--columns", help="several columns per row, comma-separated (e.g. system,question,answer)")
    p.add_argument("--no-question", action="store_true", help="do not show the 'question' column as context")
    p.add_argument(
        "--validation-fraction", type=float, help="share of pairs held out from the describer (default 0.1)"
    )
    p.add_argument("--validation-max", type=int, help="most held-out rows per file (default 100)")
    p.add_argument(
        "--test-fraction",
        type=float,
        help="share of pairs kept for the final, reported accuracy only (default 0.1)",
    )
    p.add_argument("--test-max", type=int, help="most test rows per file (default 100)")
    p.add_argument(
        "--min-label-mass",
        type=_share,
        help="leave a row unscored when 'A' and 'B' together hold less than this share of the answer "
        "(default 0.5)",
    )
    p.add_argument(
        "--max-row-chars",
        type=_positive_int,
        help="cut rows longer than this many characters, visibly (default 6000)",
    )
    p.add_argument(
        "--max-row-tokens", type=_positive_int, help="the same budget in tokens (about 4 characters each)"
    )
    p.add_argument(
        "--describe-max-tokens", type=_positive_int, help="longest description, in tokens (default 1024)"
    )
    p.add_argument(
        "--swap-labels",
        action="store_true",
        help="also classify with A and B swapped and average (twice the cost)",
    )
    p.add_argument(
        "--properties",
        type=_count,
        metavar="K",
        help="after the loop, list up to K yes/no properties and test each pair by pair (default 8; 0: off)",
    )
    p.add_argument(
        "--properties-on",
        choices=("held-out", "all"),
        help="check the properties on the held-out rows (default) or on every row of both files",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in OUTPUT even if its settings differ"
    )
    p.add_argument("--force", action="store_true", help="replace an earlier, different run in OUTPUT")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="count requests and tokens, print the estimated cost; send and write nothing",
    )
    add_model_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="asyncpipe", description="Find qualitative differences between two datasets with LLMs."
    )
    parser.add_argument("--version", action="version", version=f"asyncpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "compare", help="describe how A differs from B, and measure how well that separates them"
    )
    p.add_argument("file_a", type=Path, metavar="A_FILE")
    p.add_argument("file_b", type=Path, metavar="B_FILE")
    add_compare_options(p)

    p = sub.add_parser(
        "pairs", help="compare every pair of files (or each against a base), with one summary page"
    )
    p.add_argument("paths", nargs="+", metavar="DIR_OR_GLOB", help="folders (searched below), globs or files")
    p.add_argument(
        "--against",
        metavar="BASE",
        help="compare each file (as A) against this base (as B): a path or a file name",
    )
    p.add_argument("--by-question", action="store_true", help="pair files only within their question folder")
    p.add_argument(
        "--parallel-pairs", type=_positive_int, default=4, help="most pairs running at once (default 4)"
    )
    add_compare_options(p)
    p.set_defaults(file_a=None, file_b=None)

    p = sub.add_parser("classify", help="classify rows with a saved classify.yaml")
    p.add_argument("classifier", type=Path, metavar="CLASSIFY_YAML")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "file2",
        type=Path,
        nargs="?",
        metavar="FILE2",
        help="with a second file: FILE is A, FILE2 is B, and metrics are computed",
    )
    p.add_argument("--output", type=Path, required=True, help="output directory")
    p.add_argument(
        "--force", action="store_true", help="replace an earlier, different classification in OUTPUT"
    )
    p.add_argument("--max-rows", type=_positive_int)
    p.add_argument(
        "--no-question",
        action="store_true",
        help="show rows without the classifier's context column (for files that lack it; with a warning)",
    )
    p.add_argument(
        "--columns",
        help="show these columns instead of the classifier's (comma-separated; with a warning)",
    )
    p.add_argument(
        "--column-b",
        help="FILE2's text column, when it names it differently from the classifier's text column",
    )
    add_model_options(p, describes=False)

    p = sub.add_parser("batches", help="list the Batch API jobs of an output directory (--cancel: stop them)")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--cancel", action="store_true", help="cancel the batches that have not finished")
    p.add_argument(
        "--base-url", help="the endpoint the batches were sent to (default: $OPENAI_BASE_URL, else OpenAI)"
    )

    p = sub.add_parser(
        "properties",
        help="test your own yes/no properties on files: prevalence per file, paired differences against a base",
    )
    p.add_argument(
        "props", type=Path, metavar="PROPS_YAML", help="a list of questions, or of {name, question}"
    )
    p.add_argument(
        "paths", nargs="+", metavar="FILE_DIR_OR_GLOB", help="files, folders (searched below) or globs"
    )
    p.add_argument("--output", type=Path, required=True, help="output directory")
    p.add_argument(
        "--against",
        metavar="BASE",
        help="compare each file with this base, pair by pair (a path or a file name)",
    )
    p.add_argument("--by-question", action="store_true", help="group files by question folder, as pairs does")
    p.add_argument("--max-rows", type=_positive_int, help="check only the first N rows of each file")
    p.add_argument(
        "--column", help="the text column (default: first of answer, response, completion, output, text)"
    )
    p.add_argument("--columns", help="several columns per row, comma-separated")
    p.add_argument("--no-question", action="store_true", help="do not show the 'question' column as context")
    p.add_argument("--max-row-chars", type=_positive_int, help="cut rows longer than this (default 6000)")
    p.add_argument("--force", action="store_true", help="replace an earlier, different run in OUTPUT")
    p.add_argument("--dry-run", action="store_true", help="count the requests and their cost; send nothing")
    add_model_options(p)

    p = sub.add_parser("report", help="re-render the HTML report of an output directory (no API calls)")
    p.add_argument("directory", type=Path, metavar="DIR")

    p = sub.add_parser(
        "demo", help="run the whole job offline on the embedded model and shipped example data"
    )
    p.add_argument("--output", type=Path, default=Path("demo-report"))
    p.add_argument("--quiet", action="store_true")
    return parser
