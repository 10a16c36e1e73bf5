"""The options that several ``flowvae`` commands share, for their ``add_parser`` functions
(:mod:`flowvae.cli.commands`): ``--device``/``--seed``/``--json``/``-q`` (:func:`common_options`),
the run folder argument, ``--data``/``--split`` and ``--license``.

The flags, defaults and help texts are those documented in ``docs/commands/*.md``. Numeric options
are declared with :func:`~flowvae.cli.options.number`, so their ranges are checked after parsing
(one-line error, exit status 1; see :mod:`flowvae.cli.main`).
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from .options import number

__all__ = ["Subparsers", "common_options", "output_options", "run_argument", "data_options", "license_option"]


class Subparsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as a command's ``add_parser`` uses it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def common_options(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """``--device`` and (with ``seed``) ``--seed``, then :func:`output_options`."""
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present) [default: auto]")
    if seed:
        number(p, "--seed", ge=0, default=None, help="random seed [default: the config's train.seed, 0]")
    output_options(p)


def output_options(p: argparse.ArgumentParser) -> None:
    """``--json`` (the results as one JSON object on stdout) and ``-q/--quiet``."""
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")


def run_argument(p: argparse.ArgumentParser) -> None:
    """The run folder, ``RUN``, as the first argument (``args.run``)."""
    p.add_argument("run", metavar="RUN", help="run folder")


def data_options(p: argparse.ArgumentParser, split: bool = True) -> None:
    """``--data PATH`` (and ``--split``) of a command that reads images (flowvae.runs.data.load_run_split)."""
    p.add_argument("--data", default=None, metavar="PATH",
                   help="read these images instead of the run's own data set: a folder or .zip of images, IDX "
                        "files, CIFAR-10 batches, ... (recognised as train --data recognises them; a set without "
                        "a test split gets its held-out one) [default: the data in the run's config.yaml]")
    if split:
        p.add_argument("--split", choices=["test", "train"], default="test",
                       help="the split of the data to read [default: test]")


def license_option(p: argparse.ArgumentParser) -> None:
    """``--license`` of the commands that write a model card (``export``, ``push``)."""
    p.add_argument("--license", default="mit", help="license id in the model card's front matter [default: mit]")


# The parser moved to flowvae.cli.main (which assembles it from the command modules, and which this
# module, below them, must not import): a deprecated alias for one release, resolved on first use.
def __getattr__(name: str) -> Any:
    if name == "build_parser":
        import importlib
        import warnings

        warnings.warn("flowvae.cli.parser.build_parser moved to flowvae.cli.main.build_parser; import it from "
                      "there (this alias goes in the next release)", DeprecationWarning, stacklevel=2)
        return importlib.import_module("flowvae.cli.main").build_parser
    raise AttributeError(f"module 'flowvae.cli.parser' has no attribute {name!r}")
