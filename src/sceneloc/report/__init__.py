"""Evaluation over a split, metrics, plots, correspondence diagnostics, exports and result tables."""
