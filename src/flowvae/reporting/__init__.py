"""Reporting: what the HTML report, the comparison page and the model card show of a run, and how.

:mod:`~flowvae.reporting.read` reads a run folder (bounded, never through a link),
:mod:`~flowvae.reporting.format` writes the cells all three share, :mod:`~flowvae.reporting.plot`
draws the SVG curves, :mod:`~flowvae.reporting.html` the single-run page (:func:`flowvae.report.write_report`),
:mod:`~flowvae.reporting.compare` the comparison page (:func:`flowvae.report.compare_runs`) and
:mod:`~flowvae.reporting.card` the model card that :mod:`flowvae.hub` writes beside a shared model.
"""

from .format import finite, fmt_duration, fmt_pct, one_line

__all__ = ["finite", "fmt_duration", "fmt_pct", "one_line"]
