"""``flowvae sample RUN``: PNG grids of samples at several temperatures, and the statistics of their
pixels in ``samples/sample_stats.json`` (docs/commands/sample.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common import emit, grid_scale, load_for_eval, output_root
from ..options import number
from ..parser import Subparsers, common_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "sample"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae sample``: its flags and defaults."""
    p = sub.add_parser(NAME, help="PNG grids of samples at several temperatures",
                       description="Sample images. The temperature scales the standard deviation of the "
                                   "local (or only) latent; the global code (z of the flow models, beta of the "
                                   "UG-VAE, c of the multi-stage model) is drawn at --global-temperature "
                                   "(default 1), which kinds without a global code refuse.")
    run_argument(p)
    number(p, "-t", "--temperature", integer=False, ge=0, nargs="+", default=[0.7, 0.8, 0.9, 1.0],
           help="temperatures of the local code [default: 0.7 0.8 0.9 1.0]")
    number(p, "--z-temperature", "--global-temperature", dest="z_temperature", integer=False, ge=0, default=1.0,
           help="temperature of the global code's prior [default: 1]")
    number(p, "-n", "--num", ge=1, default=64, help="images per grid [default: 64]")
    p.add_argument("--out", default=None, help="output folder [default: RUN/samples]")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the coupling networks in bfloat16 (faster; the inverse transforms stay float32, "
                        "the pixels differ slightly from fp32's) [default: fp32]")
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae sample`` (:func:`flowvae.evaluation.sampling.sample_grids_with_stats`); writes one
    grid per temperature and their statistics. Returns 0, or 1 when some samples are not finite."""
    from ...evaluation.sampling import sample_grids_with_stats, sample_health, write_sample_stats
    from ...imaging import save_grid

    model, _, seed = load_for_eval(args)
    if args.precision != "fp32":
        model.require("bf16", "sampling with --precision bf16")
        model.set_precision(args.precision)
    out = Path(args.out) if args.out else Path(args.run) / "samples"
    grids = sample_grids_with_stats(model, args.temperature, args.num, global_temperature=args.z_temperature, seed=seed)
    paths = [str(save_grid(imgs, out / f"samples_t{t:.2f}.png", nrow=8, scale=grid_scale(model),
                           root=output_root(args)))
             for t, imgs, _ in grids]
    stats = [st for _, _, st in grids]
    write_sample_stats(out, list(zip(paths, stats)), root=output_root(args))
    lines, failed = [], False
    for p, st in zip(paths, stats):
        lines.append(f"wrote {p}")
        level, detail = sample_health(st)
        failed |= level == "fail"
        if level != "ok":  # clamped or saturated samples of an unstable model, NaN of a broken one
            lines.append(f"  {'warning' if level == 'warn' else 'FAIL'}: {detail}")
    if failed:  # the grids are written to be looked at, but a script must not take them for samples
        lines.append("some samples are not finite: the model is broken (flowvae check RUN says where)")
    emit(args, {"files": paths, "temperatures": args.temperature, "z_temperature": args.z_temperature,
                "stats": stats, "ok": not failed}, lines)
    return 1 if failed else 0
