"""Reporting: what the HTML report, the comparison page and the model card show of a run, and how
(the cells both write, :mod:`flowvae.reporting.format`)."""

from .format import finite, fmt_duration, fmt_pct, one_line

__all__ = ["finite", "fmt_duration", "fmt_pct", "one_line"]
