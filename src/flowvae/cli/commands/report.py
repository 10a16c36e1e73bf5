"""``flowvae report RUN``: one self-contained HTML page of a run (docs/commands/report.md)."""

from __future__ import annotations

import argparse

from ..common import emit
from ..parser import Subparsers, output_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "report"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae report``: its flags and defaults."""
    p = sub.add_parser(NAME, help="write a self-contained HTML report of a run",
                       description="One HTML page per run: config, bits/dim and KL curves, sample/switch/"
                                   "interpolation grids, probe and FID/KID tables, parameters, hardware, wall time.")
    run_argument(p)
    p.add_argument("--out", default=None, help="HTML file [default: RUN/report.html]")
    output_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae report`` (:func:`flowvae.report.write_report`). Returns 0."""
    from ...report import write_report

    path = write_report(args.run, args.out)
    emit(args, {"file": str(path)}, [f"wrote {path}"])
    return 0
