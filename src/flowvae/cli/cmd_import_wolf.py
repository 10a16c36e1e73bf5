"""flowvae import-wolf (being written)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["COMMANDS", "add_parsers"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_parsers(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    """Add this module's subcommands to the ``flowvae`` parser."""
