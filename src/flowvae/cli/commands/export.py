"""``flowvae export RUN --out DIR``: a run's model as a shareable folder with a model card, which
:func:`flowvae.from_pretrained` loads (:mod:`flowvae.hub`; docs/commands/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common import emit
from ..parser import Subparsers, license_option, output_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "export"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae export``: its flags and defaults."""
    p = sub.add_parser(NAME, help="write a run's model as a shareable folder with a model card",
                       description="Write config.yaml, model.safetensors, a README.md model card (metrics, "
                                   "probe accuracies, samples, hardware) and samples.png into a folder that "
                                   "flowvae.from_pretrained loads; no network.")
    run_argument(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (new, empty or a previous export)")
    p.add_argument("--repo-id", default=None, metavar="USER/NAME",
                   help="repository id named in the card's loading example [default: USER/NAME]")
    license_option(p)
    output_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae export`` (:meth:`~flowvae.models.base.GenerativeModel.save_pretrained`). Returns 0."""
    from ...runs import load_run

    model = load_run(args.run)
    files = model.save_pretrained(args.out, repo_id=args.repo_id, license=args.license)
    emit(args, {"out": str(args.out), "files": [p.name for p in files]},
         [f"wrote {args.out}: {', '.join(p.name for p in files)}",
          f"load it with flowvae.from_pretrained({str(Path(args.out))!r})"])
    return 0
