"""``flowvae check RUN``: verify a trained model (finite weights, initialised ActNorms, consistent
inverses, exact round trip, finite bounds and samples), written to ``RUN/check.json``
(docs/commands/check.md)."""

from __future__ import annotations

import argparse

from ..common import command_data, emit, load_for_eval, write_result
from ..options import number
from ..parser import Subparsers, common_options, data_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "check"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae check``: its flags and defaults."""
    p = sub.add_parser(NAME, help="verify a trained model: round trip, finite bounds, consistent inverses",
                       description="Check a run: finite weights, ActNorm initialised, every 1x1 convolution's "
                                   "inverse consistent with its weight, exact uint8 round trip and finite bits/dim "
                                   "on test images, finite samples. Exit status 1 if any check fails.")
    run_argument(p)
    number(p, "--limit", ge=1, default=64, help="test images to check [default: 64]")
    data_options(p)
    common_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae check`` (the ``check`` metric, :func:`flowvae.evaluation.check.check_model`);
    writes ``check.json``. Returns 0, or 1 when a check failed."""
    from ...evaluation.metrics import get_metric
    from ...runs.records import CheckResult

    metric = get_metric("check")
    model, device, seed = load_for_eval(args, metric.capability)
    res: CheckResult = metric.run(model, command_data(args, model, limit=args.limit, whole=True).images.to(device),
                                  seed=seed)
    write_result(args.run, res)
    lines = [f"{'FAIL' if not c.ok else 'warn' if c.warning else 'ok  '}  {c.name}: {c.detail}" for c in res.checks]
    lines.append("some checks FAILED" if not res.ok else
                 f"all checks passed, with warnings: {', '.join(res.warnings)}" if res.warnings else "all checks passed")
    emit(args, res, lines)
    return 0 if res.ok else 1
