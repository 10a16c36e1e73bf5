"""Deprecated: ``flowvae encode`` is :mod:`flowvae.cli.commands.encode` now (``add_parser``, ``execute``);
this module, an alias for one release, goes in the next."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

from .commands import encode
from .parser import Subparsers

__all__ = ["COMMANDS", "add_parsers", "cmd_encode"]

warnings.warn("flowvae.cli.cmd_encode is flowvae.cli.commands.encode now; this alias goes in the next release",
              DeprecationWarning, stacklevel=2)

cmd_encode = encode.execute


def add_parsers(sub: Subparsers) -> None:
    """Add ``flowvae encode`` to the ``flowvae`` parser (:func:`flowvae.cli.commands.encode.add_parser`)."""
    encode.add_parser(sub)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {encode.NAME: encode.execute}
