"""The output directory: atomic writes, and the identity of the run that owns it.

Every file is written to a temporary name in the same directory and renamed into place, so no reader
(and no crash) ever sees half a ``classify.yaml``. ``run.json`` carries a fingerprint of the inputs and
of every setting that decides the results; a directory holding a different run is refused unless the
user says ``--resume`` (continue anyway) or ``--force`` (start over).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from asyncpipe.errors import UserError

ARTIFACTS = (
    "classify.yaml",
    "predictions.parquet",
    "properties.parquet",
    "property_scores.parquet",
    "metrics.parquet",
    "steps.jsonl",
    "run.json",
    "index.html",
    "accuracy.html",
    "confidence.html",
)


def _file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp's own 0o600 would hide a
    run's classifier and predictions from colleagues who can read its report)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_yaml_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))


def write_parquet_atomic(path: Path, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    # statistics off and a fixed compression: identical frames give identical bytes
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    write_bytes_atomic(path, buffer.getvalue())


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _what_differs(earlier: dict[str, Any], settings: dict[str, Any] | None) -> str:
    """Which settings differ from the earlier run's run.json ("config"), for the refusal message."""
    before = earlier.get("config")
    if settings is None or not isinstance(before, dict):
        return "its settings or input files differ"
    now = json.loads(json.dumps(settings, default=str))  # as run.json holds them: lists, not tuples
    changed = [key for key in now if key != "templates" and before.get(key) != now[key]]
    if now.get("templates") != before.get("templates") and "templates" in before:
        changed.append("prompt templates (--config)")
    if not changed:
        return "the input files' contents differ"
    shown = ", ".join(
        f"{key}: {before.get(key)!r} then, {now[key]!r} now" if key in now else key for key in changed[:3]
    )
    return shown + (f", and {len(changed) - 3} more" if len(changed) > 3 else "")


def run_fingerprint(settings: dict[str, Any], inputs: list[Path]) -> str:
    blob = json.dumps(
        {"settings": settings, "inputs": [file_digest(p) for p in inputs]}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_output_dir(
    out: Path,
    fingerprint: str,
    *,
    command: str,
    force: bool,
    resume: bool,
    settings: dict[str, Any] | None = None,
) -> bool:
    """Create ``out`` (or check it), and refuse to mix two different runs in one directory.

    Returns True when ``out`` holds this very run (same command, inputs and settings) to continue.
    ``--force`` replaces an earlier run of the same command; a directory that holds another command's
    work (a compare run's classifier and report, a pairs summary) is never overwritten.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out}: exists and is not a directory")
    if (out / "pairs.json").exists():
        raise UserError(f"--output {out}: holds an 'asyncpipe pairs' summary; choose another --output")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".asyncpipe-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--output {out}: cannot write there ({exc.strerror})") from None
    previous = out / "run.json"
    if not previous.exists():
        return False
    try:
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        earlier = earlier if isinstance(earlier, dict) else {}
    except (ValueError, OSError):
        earlier = {}
    earlier_command = earlier.get("command", "compare")
    if earlier_command != command:
        raise UserError(
            f"--output {out}: holds the results of 'asyncpipe {earlier_command}'; choose another --output"
        )
    if earlier.get("fingerprint") == fingerprint:
        return True
    if resume:
        return False
    if not force:
        raise UserError(
            f"--output {out}: holds a different earlier run ({_what_differs(earlier, settings)}); pass --resume "
            "to continue it with these settings, --force to replace it, or choose another --output"
        )
    for name in ARTIFACTS:
        (out / name).unlink(missing_ok=True)
    return False
