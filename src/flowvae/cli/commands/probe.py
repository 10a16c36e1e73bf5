"""``flowvae probe RUN``: linear-probe accuracy of the class from each of the model's representations and
from the raw pixels (the paper's Table 4), written to ``RUN/probe.json`` and ``RUN/probe.md``
(docs/commands/probe.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common import command_data, emit, load_for_eval, write_result
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "probe"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae probe``: its flags and defaults."""
    p = sub.add_parser(NAME, help="linear-probe accuracy from z, v and raw pixels (Table 4)",
                       description="Linear SVM accuracy on the test set from the model's representations "
                                   "(z posterior mean, v, ...) and raw pixels. Features standardised; C by 3-fold "
                                   "CV on the training features.")
    run_argument(p)
    number(p, "--train-limit", ge=1, default=5000, help="training images for the probe [default: 5000]")
    number(p, "--test-limit", ge=1, default=None, help="test images [default: all]")
    number(p, "--C", integer=False, gt=0, default=None, help="fix the SVM's C instead of cross-validating it")
    p.add_argument("--protocol", choices=["standard", "authors"], default="standard",
                   help="standard (scaled LinearSVC, CV over C) or authors (SVC linear kernel, C=1, no scaling)")
    data_options(p, split=False)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae probe`` (the ``probe`` metric, :func:`flowvae.evaluation.probe_run`); writes
    ``probe.json`` and the table as ``probe.md``. Returns 0."""
    from ...evaluation.metrics import get_metric
    from ...runs.records import ProbeResult
    from ...safe_io import atomic_write

    metric = get_metric("probe")
    model, _, seed = load_for_eval(args, metric.capability)
    train_d = command_data(args, model, "train", args.train_limit)
    test_d = command_data(args, model, "test", args.test_limit, whole=True)
    res: ProbeResult = metric.run(model, train_d, test_d, C=args.C, protocol=args.protocol, seed=seed)
    rows = res.results
    write_result(args.run, res)
    lines = [f"linear probe on {test_d.name} ({args.protocol} protocol; {rows['pixels'].n_train} train / "
             f"{rows['pixels'].n_test} test images)", "| features | dim | C | test accuracy |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {r.dim} | {r.C:g} | {100 * r.accuracy:.2f}% |" for k, r in rows.items()]
    if res.z_kl_nats is not None:
        lines.append(f"\nKL(q(z|x) || p(z)) on these test images: {res.z_kl_nats:.3f} nats"
                     + (" (collapsed: z's probe reads the encoder, not the code the decoder uses)"
                        if res.z_collapsed else ""))
    atomic_write(Path(args.run) / "probe.md", ("\n".join(lines) + "\n").encode(), root=args.run)
    emit(args, res, lines)
    return 0
