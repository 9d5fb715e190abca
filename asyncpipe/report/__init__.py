"""The HTML report: Plotly figures and tables rendered from a run directory's saved files.

``render_report(out_dir)`` is the only entry point. Inside: :mod:`.read` reads the artifacts,
:mod:`.tables` selects rows, :mod:`.figures` builds Plotly figures, :mod:`.sections` and :mod:`.page`
assemble HTML, and :mod:`.write` writes the files atomically.
"""

from asyncpipe.report.write import render_report

__all__ = ["render_report"]
from asyncpipe.report.pairs_page import render_pairs_summary as render_pairs_summary  # noqa: E402  (asyncpipe pairs)
