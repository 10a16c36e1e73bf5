"""The ``flowvae`` command line.

Conventions shared by every command: ``flowvae train PRESET_OR_CONFIG --run DIR [--steps N]
[--seed S] [--device cpu|cuda|auto] [--set key=value ...]``; commands that read a run folder take
it as their first argument (``flowvae eval RUN``); ``--json`` prints the results as one JSON
object on standard output.

Exit status: 0 success; 1 failure, printed as one line ``flowvae COMMAND: error: MESSAGE`` without a
traceback for every error caused by input; 2 usage error (argparse: an unknown option, a missing
argument, text where a number belongs); 128 + N when signal N stopped the command (130 SIGINT,
143 SIGTERM, 129 SIGHUP): ``train`` then finished its step and wrote a checkpoint of it first, and
``train --resume`` continues from there. Numeric options are range-checked after parsing
(:mod:`flowvae.cli.options`), so a number out of range (``eval -k 0``, ``sample -t nan``,
``fid -n 1``) is an error caused by input: exit status 1 with one line naming the option and its
range. Limits that depend on the run's data (``switch --pairs`` against the test-set size,
``interpolate --index`` / ``traverse --index`` against its indices) are checked once the data is
loaded, the same way. A command that does not apply to the run's model kind (``switch`` on a
model without a global and a local code) exits 1 with the model's one-line refusal
(:meth:`~flowvae.models.base.GenerativeModel.require`, "... does not apply to a 'KIND' model ...").

Layout: one module per command in :mod:`flowvae.cli.commands` (its flags in ``add_parser``, its
work in ``execute``; :data:`~flowvae.cli.commands.COMMAND_MODULES` lists them in the order of
``flowvae --help``); :mod:`~flowvae.cli.parser` the options several commands share,
:mod:`~flowvae.cli.options` the range checks, :mod:`~flowvae.cli.common` what the commands share
when they run (loading the run and its data, writing a result record, printing),
:mod:`~flowvae.cli.folders` the preset chosen for ``train --data FOLDER``. This module assembles the
parser, dispatches, and turns errors into one line and an exit status. Commands decide by the
model's declared capabilities, never by its class.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from ..errors import FlowVAEError, TrainingInterrupted
from ..version import __version__
from . import common
from .commands import command_modules
from .options import check_ranges

__all__ = ["main", "build_parser", "COMMANDS"]

log = logging.getLogger("flowvae")

#: each command's function, by name, in the order of ``flowvae --help``
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {m.NAME: m.execute for m in command_modules()}


def build_parser() -> argparse.ArgumentParser:
    """The ``flowvae`` parser, one subcommand per command module (``flowvae COMMAND --help``)."""
    parser = argparse.ArgumentParser(prog="flowvae", description="Global/local generative flows "
                                     "(Ma et al., ICLR 2021): train, evaluate, sample.")
    parser.add_argument("--version", action="version", version=f"flowvae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``flowvae`` command line; returns the exit status (0 success, 1 failure). Usage
    errors exit through argparse's ``SystemExit(2)``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    from ..progress import set_bars

    set_bars(sys.stderr.isatty() and not getattr(args, "quiet", False))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    from ..devices import tune_cpu_allocator

    tune_cpu_allocator()  # fewer page faults per step on CPUs; a no-op off glibc
    try:
        check_ranges(args)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as e:  # the checkpoint is written; 128 + N is the shell's "killed by signal N"
        print(f"flowvae {args.command}: {_one_line(e)}", file=sys.stderr)
        return 128 + e.signum
    except FlowVAEError as e:
        print(f"flowvae {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed the pipe (`flowvae presets | head`): not an error of ours
        # Python would complain again when it flushes stdout at exit; point it at nothing instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as the shell reports a command the pipe ended
    except OSError as e:  # an output file or folder that cannot be written: a user problem, one line
        print(f"flowvae {args.command}: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    """The error's message on one line (a message with line breaks would break the one-line promise)."""
    return " ".join(str(e).split("\n")).strip()


# Names of earlier releases: the command functions (cmd_eval, ...) and the helpers the command
# modules imported from here. Deprecated aliases for one release.
_MOVED_HELPERS = ("emit", "load_for_eval", "command_data")


def __getattr__(name: str) -> Any:
    import warnings

    command = name[4:].replace("_", "-") if name.startswith("cmd_") else None
    if command in COMMANDS or name in _MOVED_HELPERS:
        where = (f"flowvae.cli.commands.{name[4:]}.execute" if command in COMMANDS
                 else f"flowvae.cli.common.{name}")
        warnings.warn(f"flowvae.cli.main.{name} is {where} now; use that (this alias goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return COMMANDS[command] if command in COMMANDS else getattr(common, name)
    raise AttributeError(f"module 'flowvae.cli.main' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
