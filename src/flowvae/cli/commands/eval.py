"""``flowvae eval RUN``: test-set bits/dim (negative ELBO and importance-weighted bound), the KL, the
exact round trip and the reconstruction quality, written to ``RUN/eval.json`` (docs/commands/eval.md)."""

from __future__ import annotations

import argparse

from ..common import command_data, emit, load_for_eval, write_result
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "eval"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae eval``: its flags and defaults."""
    p = sub.add_parser(NAME, help="test-set bits/dim (ELBO and importance-weighted bound) of a run",
                       description="Evaluate a run: negative ELBO and importance-weighted bound in bits/dim "
                                   "with K posterior samples, the KL in nats, the exact round-trip check (kinds "
                                   "with exact codes) and the reconstruction quality (kinds that reconstruct).")
    run_argument(p)
    number(p, "-k", "--k", ge=1, default=5, help="posterior samples per image [default: 5]")
    number(p, "--limit", ge=1, default=None, help="evaluate a seeded random subset of N test images, stratified by class")
    number(p, "--batch-size", ge=1, default=256, help="images x samples per batch [default: 256]")
    p.add_argument("--recon-fid", action="store_true",
                   help="also FID/KID of the reconstructions from the factors against the test images "
                        "(kinds that reconstruct: btcvae, multistage; needs flowvae[fid])")
    p.add_argument("--inception", default=None, metavar="PATH", help="Inception network file (with --recon-fid)")
    data_options(p)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae eval`` (the ``eval`` metric, :func:`flowvae.evaluation.evaluate_run`); writes
    ``eval.json`` and prints the figures. Returns 0, or 1 when the round trip was not exact."""
    from ...evaluation.metrics import get_metric
    from ...models.base import check_posterior_samples
    from ...runs.records import EvalResult

    check_posterior_samples(args.k)  # before the model and the data cost time and memory
    metric = get_metric("eval")
    model, device, seed = load_for_eval(args, metric.capability)
    features = None
    if args.recon_fid:
        from ...evaluation.sampling import inception_network

        model.require("reconstruction", "--recon-fid (FID of reconstructions from the factors; `flowvae fid` "
                                        "scores samples)")
        features = inception_network(args.inception, device)  # a missing network or package fails first
    test = command_data(args, model, limit=args.limit)
    res: EvalResult = metric.run(model, test.images, args.k, args.batch_size, seed=seed, device=device,
                                 dataset=test.name, recon_features=features)
    write_result(args.run, res)
    lines = [f"{test.name}: {res.n} images, K = {res.k} posterior samples",
             f"bits/dim, negative ELBO (paper's figure): {res.elbo_bpd:.4f}",
             f"bits/dim, importance-weighted bound:      {res.iw_bpd:.4f}",
             f"KL(q(z|x) || p(z)), nats:                 {res.kl:.3f}"]
    mismatched = res.roundtrip_mismatched_pixels or 0
    if res.roundtrip_images is not None:
        lines.append(f"round trip on {res.roundtrip_images} images: "
                     f"{'exact' if mismatched == 0 else f'{mismatched} pixels differ'}")
    if (rq := res.reconstruction) is not None:
        mse = rq.mse if isinstance(rq.mse, dict) else {"mean image": rq.mse}
        lines.append(f"reconstruction from the factors: {rq.recon_bpd:.4f} bits/dim (-log p(x|c)), MSE "
                     + ", ".join(f"{k} {v:.5f}" for k, v in mse.items()))
        if rq.fid is not None:
            fids = rq.fid if "fid" not in rq.fid else {"mean image": rq.fid}
            lines.append("  FID / KID of the reconstructions against the test images: "
                         + ", ".join(f"{k} {f['fid']:.2f} / {f['kid_mean']:.4f}" for k, f in fids.items()))
    emit(args, res, lines)
    return 0 if mismatched == 0 else 1
