"""Pure metrics over polars frames of predictions (columns ``label``, ``row`` and ``p_a``): no I/O,
no async. The tests and intervals themselves live in :mod:`asyncpipe.metrics.significance`."""

from asyncpipe.metrics.calibration import apply_bias_offset, fit_bias_offset
from asyncpipe.metrics.paired import PairCounts, pair_counts, pair_summary
from asyncpipe.metrics.scores import (
    SUMMARY_FLOAT_KEYS,
    SUMMARY_INT_KEYS,
    SUMMARY_KEYS,
    SUMMARY_TEXT_KEYS,
    reliability_bins,
    summarize,
    unscored_reasons,
)
from asyncpipe.metrics.significance import (
    benjamini_hochberg,
    binomial_p_greater,
    exact_mcnemar_p,
    holm_adjust,
    pairs_needed,
    rank_auc_p_greater,
    sign_test_p_greater,
    smallest_sign_test_p,
    wilson_interval,
)

__all__ = [
    "SUMMARY_FLOAT_KEYS",
    "SUMMARY_INT_KEYS",
    "SUMMARY_KEYS",
    "SUMMARY_TEXT_KEYS",
    "PairCounts",
    "apply_bias_offset",
    "benjamini_hochberg",
    "binomial_p_greater",
    "exact_mcnemar_p",
    "fit_bias_offset",
    "holm_adjust",
    "pair_counts",
    "pair_summary",
    "pairs_needed",
    "rank_auc_p_greater",
    "reliability_bins",
    "sign_test_p_greater",
    "smallest_sign_test_p",
    "summarize",
    "unscored_reasons",
    "wilson_interval",
]
