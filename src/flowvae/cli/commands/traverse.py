"""``flowvae traverse RUN``: latent traversal grids, one latent dimension changed per row
(docs/commands/traverse.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common import command_data, emit, grid_scale, load_for_eval, output_root
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "traverse"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae traverse``: its flags and defaults."""
    p = sub.add_parser(NAME, help="latent traversal grid: one latent dimension changed at a time",
                       description="From the posterior mean of one test image, set one dimension of the vector "
                                   "latent (z of the flow models and the VAE, c of the beta-TCVAE and multi-stage "
                                   "models) to evenly spaced values, one row per dimension.")
    run_argument(p)
    number(p, "--index", ge=0, nargs="+", default=[0], help="image indices (of --split), one grid each [default: 0]")
    number(p, "--dims", ge=0, nargs="+", default=None, help="latent dimensions [default: all]")
    number(p, "--range", integer=False, gt=0, default=2.0, dest="span", metavar="R",
           help="values run from -R to R [default: 2, in prior standard deviations for N(0, I) latents]")
    number(p, "--steps", ge=2, default=9, help="values per dimension, at least 2 [default: 9]")
    p.add_argument("--local", choices=["keep", "zero"], default="keep",
                   help="kinds with a local code v: decode with the image's own v (keep) or v = 0 (zero) "
                        "[default: keep]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/traverse.png; RUN/traverse_I.png for several]")
    data_options(p)
    common_options(p, seed=False)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae traverse`` (:func:`flowvae.evaluation.traversal_grids`): one PNG per image index.
    Returns 0."""
    from ...evaluation.traversal import traversal_grids, traversal_values
    from ...imaging import save_grid

    model, _, _ = load_for_eval(args, "vector_latent")
    values = traversal_values(args.span, args.steps)
    grids, info = traversal_grids(model, command_data(args, model), args.index, values, args.dims, args.local)
    files = []
    for i, grid in zip(args.index, grids):
        if args.out and len(args.index) == 1:
            out = Path(args.out)
        else:
            base = Path(args.out) if args.out else Path(args.run) / "traverse.png"
            out = base if len(args.index) == 1 else base.with_name(f"{base.stem}_{i}{base.suffix}")
        save_grid(grid.flatten(0, 1), out, nrow=len(values), scale=grid_scale(model), root=output_root(args))
        files.append(str(out))
    emit(args, {"files": files, **info},
         [f"wrote {f}: rows = latent dimensions {info['dims']}, columns = values {values[0]:g}..{values[-1]:g}"
          for f in files])
    return 0
