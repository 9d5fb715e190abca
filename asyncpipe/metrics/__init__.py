"""Pure metrics over polars frames of predictions (columns ``label`` and ``p_a``): no I/O, no async."""

from asyncpipe.metrics.calibration import apply_bias_offset, correct_probability, fit_bias_offset
from asyncpipe.metrics.scores import (
    SUMMARY_FLOAT_KEYS,
    SUMMARY_INT_KEYS,
    SUMMARY_KEYS,
    binomial_test_p_value,
    reliability_bins,
    summarize,
    wilson_interval,
)

__all__ = [
    "SUMMARY_FLOAT_KEYS",
    "SUMMARY_INT_KEYS",
    "SUMMARY_KEYS",
    "apply_bias_offset",
    "binomial_test_p_value",
    "correct_probability",
    "fit_bias_offset",
    "reliability_bins",
    "summarize",
    "wilson_interval",
]
