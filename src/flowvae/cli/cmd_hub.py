"""Deprecated: ``flowvae export`` and ``flowvae push`` are :mod:`flowvae.cli.commands.export` and
:mod:`flowvae.cli.commands.push` now; this module, an alias for one release, goes in the next."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

from .commands import export, push
from .parser import Subparsers

__all__ = ["COMMANDS", "add_parsers"]

warnings.warn("flowvae.cli.cmd_hub is flowvae.cli.commands.export and .push now; this alias goes in the next "
              "release", DeprecationWarning, stacklevel=2)

cmd_export = export.execute
cmd_push = push.execute


def add_parsers(sub: Subparsers) -> None:
    """Add ``flowvae export`` and ``flowvae push`` to the ``flowvae`` parser."""
    export.add_parser(sub)
    push.add_parser(sub)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {export.NAME: export.execute, push.NAME: push.execute}
