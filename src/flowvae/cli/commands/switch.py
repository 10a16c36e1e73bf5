"""``flowvae switch RUN``: swap the global codes of pairs of real test images (the paper's Figure 1),
the label-free frequency score in ``RUN/switch_frequencies.json`` and, on labelled data, the switch
metric in ``RUN/switch.json`` (docs/commands/switch.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..common import command_data, emit, grid_scale, load_for_eval, output_root, write_result
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "switch"

log = logging.getLogger("flowvae")


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae switch``: its flags and defaults."""
    p = sub.add_parser(NAME, help="swap the global codes of pairs of real test images (Figure 1)",
                       description="For pairs of test images, a 2x2 grid per pair of the decodes (v1,z1) (v1,z2) "
                                   "(v2,z2) (v2,z1): z is the posterior mean, v the exact local code, so the "
                                   "diagonal cells are the real images.")
    run_argument(p)
    number(p, "--pairs", ge=1, default=8, help="number of image pairs [default: 8]")
    p.add_argument("--same-class", action="store_true", help="pair images of the same class")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/switch.png]")
    number(p, "--metric-pairs", ge=1, default=None,
           help="pairs of test images for the frequency score, and of different classes for the switch metric "
                "[default: 500, or all if fewer]")
    p.add_argument("--no-metric", action="store_true",
                   help="skip both scores: the frequency score (do low frequencies follow z and high ones v?) and "
                        "the switch metric (a linear classifier of pixels applied to the (v1,z2) decodes)")
    data_options(p, split=False)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae switch``: the grid (:func:`flowvae.evaluation.switching.switch_pairs`), the
    ``switch-frequencies`` score (``switch_frequencies.json``) and, on labelled data, the ``switch``
    metric (``switch.json``). Returns 0, or 1 when the diagonal cells did not reproduce the real
    images exactly."""
    from ...evaluation.metrics import get_metric
    from ...evaluation.switching import switch_pairs
    from ...imaging import save_grid
    from ...runs.records import SwitchFrequencies, SwitchResult

    metric_spec = get_metric("switch")
    model, _, seed = load_for_eval(args, metric_spec.capability)  # the grid needs it as much as the metric
    test = command_data(args, model, "test")
    grid, info = switch_pairs(model, test, args.pairs, args.same_class, seed)
    out = Path(args.out) if args.out else Path(args.run) / "switch.png"
    save_grid(grid.flatten(0, 1), out, nrow=8 if args.pairs % 2 == 0 else 4, scale=grid_scale(model),
              root=output_root(args))
    exact = info["diagonal_exact"]
    metric: SwitchResult | None = None
    frequencies: SwitchFrequencies | None = None
    lines = [f"wrote {out}: {args.pairs} pairs, each (v1,z1) (v1,z2) (v2,z2) (v2,z1); real images reproduced exactly: {exact}"]
    if not args.no_metric:  # needs no labels
        frequencies = get_metric("switch-frequencies").run(model, test, args.metric_pairs, seed)
        path = write_result(args.run, frequencies)
        lines.append(f"frequency score, {2 * frequencies.pairs} switched decodes of {frequencies.pairs} pairs: low "
                     f"frequencies ({frequencies.low_pass}x{frequencies.low_pass} average) closer to z's image "
                     f"{100 * frequencies.low_follows_z:.1f}%, mean colour {100 * frequencies.colour_follows_z:.1f}%; "
                     f"high frequencies closer to v's image {100 * frequencies.high_follows_v:.1f}%"
                     f"{_saturated_text(frequencies.saturated)}; wrote {path}")
    if not args.no_metric and test.labels is None:  # the grid needs no labels; only the metric is left out
        log.warning("%s has no labels, so there is no switch metric (--no-metric skips it quietly)", test.name)
    elif not args.no_metric:
        train = command_data(args, model, "train", 5000)  # the classifier's training images, as for flowvae probe
        metric = metric_spec.run(model, train, test, args.metric_pairs, seed)
        path = write_result(args.run, metric)
        lines.append(f"switch metric, {metric.pairs} pairs of different classes: the decode of (v1,z2) is classified "
                     f"as z's class (image 2) {100 * metric.follow_z:.1f}%, v's class (image 1) "
                     f"{100 * metric.follow_v:.1f}%, neither {100 * metric.neither:.1f}%"
                     f"{_saturated_text(metric.saturated)}; linear classifier of "
                     f"pixels {100 * metric.test_accuracy:.1f}% on real test images; wrote {path}")
    emit(args, {"file": str(out), **info, "frequencies": frequencies, "metric": metric}, lines)
    return 0 if exact else 1


def _saturated_text(fraction: float | None) -> str:
    """The share of switched decodes whose inverse saturated (clamped noise), when there are any."""
    return f" (inverse saturated in {100 * fraction:.1f}%)" if fraction else ""
