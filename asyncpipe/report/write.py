"""Write the report pages into the run directory, each file atomically.

The pipeline calls :func:`render_report` after every describe step while a browser may have the page
open, so every file is written to a temporary file in the same directory and moved into place with
``os.replace``: a reader sees the old page or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from plotly.offline import get_plotlyjs

from asyncpipe.errors import UserError
from asyncpipe.report.page import PLOTLY_JS, index_page, single_figure_page
from asyncpipe.report.read import load_artifacts


def render_report(out_dir: Path) -> Path:
    """Render ``index.html``, ``accuracy.html`` and ``confidence.html`` from the artifacts in ``out_dir``.

    Works on a partial directory (a run still going, interrupted, or only ``run.json``) and shows what
    is missing. Ships Plotly's JavaScript once as ``plotly.min.js`` beside the pages. Returns the path
    of ``index.html``. Raises :class:`~asyncpipe.errors.UserError` if ``out_dir`` is not a directory.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"report directory not found: {out_dir}")
    art = load_artifacts(out_dir)
    write_if_changed(out_dir / PLOTLY_JS, get_plotlyjs().encode("utf-8"))
    write_atomic(out_dir / "accuracy.html", single_figure_page(art, "accuracy").encode("utf-8"))
    write_atomic(out_dir / "confidence.html", single_figure_page(art, "confidence").encode("utf-8"))
    index = out_dir / "index.html"
    write_atomic(index, index_page(art).encode("utf-8"))
    return index


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then move it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it is absent or holds other bytes (plotly.min.js is ~4.8 MB)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return True
