"""The commands of the ``flowvae`` command line, one module each.

A command module ``flowvae.cli.commands.NAME`` has:

* ``NAME``: the command's name on the command line (``"import-wolf"`` for ``import_wolf.py``);
* ``add_parser(sub)``: adds the command's parser to the subcommands ``sub`` (its flags and defaults,
  with the shared options of :mod:`flowvae.cli.parser`: ``common_options``, ``run_argument``,
  ``output_options``, ``data_options``) and returns it;
* ``execute(args)``: runs the command on the parsed arguments and returns its exit status. It loads
  (:mod:`flowvae.cli.common`), calls :mod:`flowvae.evaluation` (a metric of
  :mod:`flowvae.evaluation.metrics` for one that writes a result file), writes and prints; an error
  caused by input is a :class:`~flowvae.errors.FlowVAEError`, which :func:`flowvae.cli.main.main`
  prints as one line (exit status 1).

Adding a command is its module, one line in :data:`COMMAND_MODULES` (the order of ``flowvae --help``)
and its page ``docs/commands/NAME.md``.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    check,
    compare,
    disentangle,
    encode,
    eval,
    export,
    fid,
    import_wolf,
    interpolate,
    manipulate,
    presets,
    probe,
    push,
    report,
    sample,
    switch,
    train,
    traverse,
)

__all__ = ["COMMAND_MODULES", "command_modules"]

#: the command modules, in the order their commands appear in ``flowvae --help``
COMMAND_MODULES: tuple[ModuleType, ...] = (
    train,
    eval,
    sample,
    switch,
    interpolate,
    probe,
    fid,
    check,
    report,
    compare,
    traverse,
    manipulate,
    disentangle,
    presets,
    encode,
    export,
    push,
    import_wolf,
)


def command_modules() -> list[ModuleType]:
    """The command modules, in the order of ``flowvae --help`` (:data:`COMMAND_MODULES`)."""
    return list(COMMAND_MODULES)
