"""Deprecated: ``flowvae import-wolf`` is :mod:`flowvae.cli.commands.import_wolf` now (``add_parser``,
``execute``); this module, an alias for one release, goes in the next."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

from .commands import import_wolf
from .parser import Subparsers

__all__ = ["COMMANDS", "add_parsers", "cmd_import_wolf"]

warnings.warn("flowvae.cli.cmd_import_wolf is flowvae.cli.commands.import_wolf now; this alias goes in the next "
              "release", DeprecationWarning, stacklevel=2)

cmd_import_wolf = import_wolf.execute


def add_parsers(sub: Subparsers) -> None:
    """Add ``flowvae import-wolf`` to the ``flowvae`` parser (:func:`flowvae.cli.commands.import_wolf.add_parser`)."""
    import_wolf.add_parser(sub)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {import_wolf.NAME: import_wolf.execute}
