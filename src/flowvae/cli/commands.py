"""Commands that live in their own module: ``flowvae.cli.cmd_<name>``.

Each such module defines ``add_parsers(sub)``, which adds its subcommands to the ``flowvae``
parser, and ``COMMANDS``, a mapping from each subcommand's name to its function
``(argparse.Namespace) -> int`` (the exit status). Their errors go through the same one-line
handling as every other command (:func:`flowvae.cli.main.main`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["COMMAND_MODULES", "command_modules"]

#: module names under :mod:`flowvae.cli`, in the order their commands appear in ``flowvae --help``
COMMAND_MODULES = ("cmd_encode", "cmd_hub", "cmd_import_wolf")


def command_modules() -> list[ModuleType]:
    """The command modules, imported (each import is cheap: heavy imports happen inside commands)."""
    return [importlib.import_module(f"{__package__}.{name}") for name in COMMAND_MODULES]
