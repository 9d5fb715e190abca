"""Write a file so that no reader, and no crash, ever sees half of it.

Every file asyncpipe writes (the run's records, its parquet frames, the report pages) goes to a
temporary name in the same directory, is flushed to disk, and is renamed into place: a browser with the
report open, a ``pairs`` summary read while it is rewritten, or a run killed mid-write sees the old file
or the new one. New files get the mode ``open()`` would give them (0o666 less the umask), not
``mkstemp``'s 0o600, so colleagues who can read a run's folder can read its report and classifier.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import yaml


def _file_mode() -> int:
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


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it is absent or holds other bytes (plotly.min.js is ~4.8 MB)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_bytes_atomic(path, data)
    return True
