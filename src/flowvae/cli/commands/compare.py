"""``flowvae compare RUN... --out FILE``: several runs side by side in one HTML page
(docs/commands/compare.md)."""

from __future__ import annotations

import argparse

from ..common import emit
from ..parser import Subparsers, output_options

__all__ = ["NAME", "add_parser", "execute"]

NAME = "compare"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae compare``: its flags and defaults."""
    p = sub.add_parser(NAME, help="put several runs side by side in one HTML page",
                       description="A table (kind, parameters, steps, final test bits/dim, KL, wall time, probe "
                                   "accuracies) and the test bits/dim curves of several runs.")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    p.add_argument("--out", required=True, help="HTML file to write")
    output_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae compare`` (:func:`flowvae.report.compare_runs`). Returns 0."""
    from ...report import compare_runs

    path = compare_runs(args.runs, args.out)
    emit(args, {"file": str(path), "runs": args.runs}, [f"wrote {path}"])
    return 0
