"""Self-contained HTML reports of run folders.

:func:`write_report` turns one run folder into one HTML page; :func:`compare_runs` puts several
runs side by side. The pages embed everything they show (images as base64 ``data:`` URIs, plots as
inline SVG drawn by flowvae rather than with matplotlib, so no plotting dependency), so a page can be
mailed or attached to an issue on its own and still shows everything.

Only ``config.yaml`` is required. Every other file of the run folder is optional: a missing file
leaves its section out, and a file that is present but cannot be read is listed under "Notes"
instead of failing the whole report, because reports are most wanted for runs that went wrong.

This module is the public home of the two functions; they are built in :mod:`flowvae.reporting`
(reading the folder in :mod:`~flowvae.reporting.read`, the page in :mod:`~flowvae.reporting.html`,
the plots in :mod:`~flowvae.reporting.plot`, the comparison in :mod:`~flowvae.reporting.compare`).
"""

from __future__ import annotations

from .reporting.compare import compare_runs
from .reporting.html import write_report

__all__ = ["compare_runs", "write_report"]
