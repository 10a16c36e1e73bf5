"""``flowvae presets``: every preset's model kind, parameter count and data set (docs/commands/presets.md)."""

from __future__ import annotations

import argparse

from ..common import emit
from ..parser import Subparsers

__all__ = ["NAME", "add_parser", "execute"]

NAME = "presets"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae presets``: its flags and defaults."""
    p = sub.add_parser(NAME, help="list the presets and their parameter counts")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae presets`` (:func:`flowvae.cli.listing.preset_rows`): one line per preset. Returns 0."""
    from .. import listing

    rows = listing.preset_rows()
    lines = [f"{'preset':20s} {'kind':11s} {'parameters':>12s} {'refined Glow':>13s}  dataset"]
    lines += [f"{k:20s} {v['kind']:11s} {v['parameters']:>12,d} "
              f"{format(v['refined_glow_parameters'], ',d') if v['refined_glow_parameters'] else '-':>13s}  {v['dataset']}"
              for k, v in rows.items()]
    emit(args, rows, lines)
    return 0
