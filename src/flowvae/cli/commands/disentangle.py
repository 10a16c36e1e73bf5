"""``flowvae disentangle RUN``: MIG, DCI, SAP, FactorVAE and BetaVAE scores of the vector latent on the
dSprites grid, written to ``RUN/disentanglement.json`` (docs/commands/disentangle.md)."""

from __future__ import annotations

import argparse

from ..common import emit, load_for_eval, write_result
from ..options import number
from ..parser import Subparsers, common_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "disentangle"

# flowvae.evaluation.representations.DISENTANGLEMENT_METRICS, spelt out so that building the parser
# does not import the evaluation package (tests/unit/evaluation/test_disentanglement.py checks they agree)
_METRICS = ["mig", "dci", "sap", "factorvae", "betavae"]


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae disentangle``: its flags and defaults."""
    p = sub.add_parser(NAME, help="MIG, DCI, SAP, FactorVAE and BetaVAE scores on the dSprites grid",
                       description="Disentanglement metrics of a run's vector latent (posterior means) against "
                                   "dSprites' ground-truth factors, on the full factor grid (46,080 images), "
                                   "with disentanglement_lib's settings. Writes RUN/disentanglement.json.")
    run_argument(p)
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dSprites folder or dsprites_downsampled.npz [default: the run's data.root or ../shared/data/dsprites]")
    p.add_argument("--metrics", nargs="+", default=list(_METRICS), choices=_METRICS,
                   help="metrics to compute [default: all]")
    number(p, "--num-train", ge=1, default=10000, help="training points of each metric [default: 10000]")
    number(p, "--num-test", ge=1, default=5000, help="evaluation points of each metric [default: 5000]")
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae disentangle`` (the ``disentanglement`` metric,
    :func:`flowvae.evaluation.disentangle_codes`); writes ``disentanglement.json``. Returns 0."""
    from ...data import load_dsprites
    from ...evaluation.metrics import get_metric
    from ...runs.records import DisentanglementResult

    metric = get_metric("disentanglement")
    model, _, seed = load_for_eval(args, metric.capability)
    cfg = model.config
    root = args.data or (cfg.data.root if cfg.data.dataset == "dsprites" else None)
    data = load_dsprites(root, split="all", variant="grid")
    res: DisentanglementResult = metric.run(model, data, args.metrics, args.num_train, args.num_test, seed)
    write_result(args.run, res)
    lines = [f"{data.name}: {res.n} images, {res.d_z} latent dimensions"]
    for name in args.metrics:
        scalars = {k: v for k, v in res[name].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    emit(args, res, lines)
    return 0
