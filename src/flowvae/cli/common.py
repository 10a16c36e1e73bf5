"""What the commands of :mod:`flowvae.cli.commands` share when they run: loading the run and its data,
writing a result record into the run folder, and printing the result (``--json`` or lines).

Heavy modules (torch, the models) are imported inside the functions, so that ``flowvae --help``
stays quick.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..data import ImageData
    from ..models.base import GenerativeModel
    from ..runs.records import Record

__all__ = ["emit", "load_for_eval", "command_data", "write_result", "grid_scale", "output_root"]


def emit(args: argparse.Namespace, result: Mapping[str, Any], lines: list[str]) -> None:
    """Print ``result`` as one JSON object with ``--json``, else ``lines``. Records (anywhere in
    ``result``) are printed as their files hold them (``to_dict()``)."""
    if getattr(args, "json", False):
        print(json.dumps(_plain(result), default=_record_dict))
    else:
        print("\n".join(lines))


def _plain(result: Mapping[str, Any]) -> Any:
    return result if isinstance(result, dict) else _record_dict(result)


def _record_dict(obj: Any) -> Any:
    """``json.dumps``' fallback: a record's mapping."""
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
    return to_dict()


def load_for_eval(args: argparse.Namespace,
                  capability: str | None = None) -> tuple[GenerativeModel, torch.device, int]:
    """The run's model (eval mode, ``model.config`` attached), its device and the seed (``--seed``,
    else the run's ``train.seed``; commands without ``--seed`` get the run's).

    With ``capability``, a model without it is refused in one line before any data is read.

    Raises:
        CheckpointError, ConfigError: as :func:`flowvae.runs.load_run`; the model lacks ``capability``.
    """
    from ..devices import resolve_device
    from ..runs import load_run

    device = resolve_device(args.device)
    model = load_run(args.run, device)
    if capability is not None:
        model.require(capability, f"flowvae {args.command}")
    seed = getattr(args, "seed", None)
    return model, device, int(model.config.train.seed if seed is None else seed)


def command_data(args: argparse.Namespace, model: GenerativeModel, split: str | None = None, limit: int | None = None,
                 whole: bool = False) -> ImageData:
    """The images a command reads: ``--data`` (else the run's own data, checked against its data
    record), split ``split`` (else ``--split``, else test), ``limit`` images (else the config's
    limit; ``whole``: all); see :func:`flowvae.runs.data.load_run_split`."""
    from ..runs.data import load_run_split

    split = split or getattr(args, "split", None) or "test"
    return load_run_split(model.config, args.run, split, getattr(args, "data", None), limit, whole=whole)


def write_result(run: str | Path, record: Record) -> Path:
    """Save a result record in the run folder as its file (``record.filename``: ``eval.json``, ...),
    atomically: ``RunFolder(run).write_json(record.filename, record.to_dict())``.

    Raises:
        CheckpointError: the file is a link or not a regular file, or cannot be written.
    """
    from ..runs import RunFolder

    name = record.filename
    if name is None:  # a record class without FILE: a programming error, not the user's
        raise TypeError(f"{type(record).__name__} names no run-folder file")
    return RunFolder(run).write_json(name, record.to_dict())


def grid_scale(model: GenerativeModel) -> int:
    """Nearest-neighbour enlargement of saved grids, so small images stay visible (8x for 8 px)."""
    return max(1, 64 // model.cfg.image_size)


def output_root(args: argparse.Namespace) -> Path | None:
    """The run folder as the root of a default output path (a link out of it is refused); a path
    the user named with ``--out`` is theirs and written as given."""
    return None if getattr(args, "out", None) else Path(args.run)
