"""Write the report pages into the run directory, each file atomically.

The pipeline calls :func:`render_report` after every describe step while a browser may have the page
open, so every file is written atomically (:mod:`asyncpipe.atomic`): a reader sees the old page or the new
one, never half of one.
"""

from __future__ import annotations

from pathlib import Path

from plotly.offline import get_plotlyjs

from asyncpipe.atomic import write_bytes_atomic, write_if_changed
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
    write_bytes_atomic(out_dir / "accuracy.html", single_figure_page(art, "accuracy").encode("utf-8"))
    write_bytes_atomic(out_dir / "confidence.html", single_figure_page(art, "confidence").encode("utf-8"))
    index = out_dir / "index.html"
    write_bytes_atomic(index, index_page(art).encode("utf-8"))
    return index


def render_directory(out_dir: Path) -> Path:
    """``asyncpipe report DIR``: the page of whatever DIR holds, chosen by its record: a ``pairs``
    summary (``pairs.json``), a ``properties`` run, or a ``compare``/``classify`` run."""
    from asyncpipe.records import RecordError, read_run

    if not out_dir.is_dir():
        raise UserError(f"report directory not found: {out_dir}")
    try:
        run = read_run(out_dir)
    except RecordError:  # the page shows what could not be read
        return render_report(out_dir)
    if run is None and (out_dir / "pairs.json").is_file():
        from asyncpipe.report.pairs_page import render_pairs_summary

        return render_pairs_summary(out_dir)
    if run is None:
        raise UserError(f"{out_dir}: not an asyncpipe output directory (no run.json)")
    if run.kind == "properties":
        from asyncpipe.report.properties_page import render_properties_page

        return render_properties_page(out_dir)
    return render_report(out_dir)
