"""``flowvae interpolate RUN``: the 2-D interpolation over z and v between two real images (the paper's
eq. 8) as one PNG grid (docs/commands/interpolate.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common import command_data, emit, grid_scale, load_for_eval, output_root
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "interpolate"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae interpolate``: its flags and defaults."""
    p = sub.add_parser(NAME, help="2-D interpolation over z and v between two real images (eq. 8)",
                       description="Rows interpolate z (alpha), columns v (beta); corners are the real images.")
    run_argument(p)
    number(p, "--rows", ge=1, default=5, help="values of alpha in [0, 1] [default: 5]")
    number(p, "--cols", ge=1, default=11, help="values of beta in [0, 1] [default: 11]")
    p.add_argument("--spherical", action="store_true", help="spherical instead of linear interpolation")
    number(p, "--index", ge=0, nargs=2, default=None, metavar=("I", "J"),
           help="test-image indices of the two images [default: random]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/interpolation.png]")
    data_options(p)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae interpolate`` (:func:`flowvae.evaluation.interpolation_grid`). Returns 0, or 1 when
    the corners did not reproduce the real images exactly."""
    from ...evaluation.interpolation import interpolation_grid
    from ...imaging import save_grid

    model, _, seed = load_for_eval(args, "global_local")
    grid, info = interpolation_grid(model, command_data(args, model), args.rows, args.cols, args.spherical,
                                    None if args.index is None else tuple(args.index), seed)
    out = Path(args.out) if args.out else Path(args.run) / "interpolation.png"
    save_grid(grid.flatten(0, 1), out, nrow=len(info["betas"]), scale=grid_scale(model), root=output_root(args))
    (i, j), exact = info["images"], info["corners_exact"]
    emit(args, {"file": str(out), **info},
         [f"wrote {out}: rows alpha (z) {info['alphas']}, columns beta (v) {len(info['betas'])} values; "
          f"corners are the real test images {i} and {j}: {exact}"])
    return 0 if exact else 1
