"""``flowvae fid RUN``: FID and KID of samples at one temperature against the test images, with the
Inception-v3 network of 2015-12-05, written to ``RUN/fid_tT.TT.json`` (docs/commands/fid.md)."""

from __future__ import annotations

import argparse
import dataclasses

from ..common import command_data, emit, load_for_eval, write_result
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "fid"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae fid``: its flags and defaults."""
    p = sub.add_parser(NAME, help="FID and KID of samples against the test set",
                       description="FID/KID of model samples at --temperature against test images, with the "
                                   "Inception-v3 network of 2015-12-05 (pool3 features).")
    run_argument(p)
    number(p, "-n", "--num", ge=2, default=1000, help="generated and real images, at least 2 [default: 1000]")
    number(p, "-t", "--temperature", integer=False, ge=0, default=1.0,
           help="temperature of the local code [default: 1]")
    p.add_argument("--inception", default=None, metavar="PATH", help="Inception network file")
    data_options(p)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae fid`` (the ``fid`` metric, :func:`flowvae.evaluation.fid_run`); writes
    ``fid_tT.TT.json``. Returns 0."""
    from ...evaluation.metrics import get_metric
    from ...evaluation.sampling import inception_network
    from ...runs.records import FidResult

    metric = get_metric("fid")
    model, device, seed = load_for_eval(args, metric.capability)
    features = inception_network(args.inception, device)  # a missing network file fails before sampling
    real = command_data(args, model, limit=args.num, whole=True)
    res: FidResult = dataclasses.replace(metric.run(model, real.images, args.num, args.temperature, seed, features),
                                         dataset=real.name)
    write_result(args.run, res)
    emit(args, res, [f"FID {res.fid:.2f}, KID {res.kid_mean:.4f} +- {res.kid_std:.4f} "
                     f"({res.n_fake} samples at temperature {args.temperature} vs {res.n_real} test images; "
                     f"Inception sha256 {res.inception_sha256[:12]}, resize {res.resize})"])
    return 0
