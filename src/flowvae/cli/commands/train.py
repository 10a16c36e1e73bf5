"""``flowvae train PRESET_OR_CONFIG --run DIR``: train a model into a run folder (docs/commands/train.md).

The command's own flags (``--steps``, ``--seed``, ``--device``, ``--data``) set their config fields as
typed values (:func:`config_fields`), after the ``--set`` overrides, which they win over.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..common import emit
from ..options import number
from ..parser import Subparsers, common_options

__all__ = ["NAME", "add_parser", "execute", "config_fields"]

NAME = "train"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae train``: its flags and defaults."""
    from ...presets import PRESETS

    p = sub.add_parser(NAME, help="train a model from a preset or a config file",
                       description="Train a model. Presets: " + ", ".join(PRESETS))
    p.add_argument("config", metavar="PRESET_OR_CONFIG", nargs="?", default=None,
                   help=f"preset ({', '.join(PRESETS)}) or a YAML/JSON config file; leave out with --data "
                        f"FOLDER to pick a preset from the images' size")
    p.add_argument("--run", "--run-dir", dest="run", required=True, metavar="DIR",
                   help="run folder to write (created if needed); under torchrun spell it --run-dir, "
                        "since torchrun reads --run as its own --run-path")
    number(p, "--steps", ge=0, default=None, help="number of optimizer steps [default: the preset's]")
    p.add_argument("--data", default=None, metavar="PATH", help="dataset files or image folder (sets data.root)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override config fields, e.g. --set train.lr=5e-4 model.d_z=32")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its newest valid checkpoint")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue with changed settings (e.g. --set train.grad_clip=1 after a "
                        "loss spike); the run is then no longer the same as an uninterrupted one")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar [default: when stderr is a terminal]")
    common_options(p)
    return p


def config_fields(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The config fields that ``flowvae train``'s own flags set, as ``(section.field, value)`` pairs of
    typed values: ``--steps`` (``train.steps``), ``--seed`` (``train.seed``), ``--device``
    (``train.device``, always: its default is ``auto``) and ``--data`` (``data.root``)."""
    fields: list[tuple[str, Any]] = []
    if args.steps is not None:
        fields.append(("train.steps", args.steps))
    if args.seed is not None:
        fields.append(("train.seed", args.seed))
    if args.device:
        fields.append(("train.device", args.device))
    if args.data is not None:
        fields.append(("data.root", args.data))
    return fields


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae train``: the config (the run's own with ``--resume``, a preset or file, or one
    chosen for ``--data FOLDER``), then :func:`flowvae.training.train`; prints the run folder, the
    steps and the final test bits/dim (only rank 0 under torchrun). Returns 0.

    Raises:
        ConfigError: no preset, config file or ``--data``; ``--allow-changes`` without ``--resume``;
            a bad override or flag value.
    """
    from ...config import apply_overrides, load_config, set_field
    from ...errors import ConfigError
    from ...presets import resolve
    from ...training import train
    from ..folders import preset_for_folder

    fields = config_fields(args)
    run = Path(args.run)
    if args.resume and (run / "config.yaml").is_file():
        cfg = apply_overrides(load_config(run / "config.yaml"), args.overrides)
    elif args.config is None:
        if args.data is None:
            raise ConfigError("give a preset or config file, or --data FOLDER to train on your own images "
                              "(see flowvae presets)")
        cfg = preset_for_folder(Path(args.data), args.overrides, fields)
        fields = []  # set there, before the batch sizes were chosen
    else:
        cfg = resolve(args.config, args.overrides)
    for key, value in fields:
        set_field(cfg, key, value)
    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes applies to --resume only")
    res = train(cfg, run, resume=args.resume, progress=args.progress, allow_changes=args.allow_changes)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    emit(args, {"run": str(run), **res},
         [f"run folder: {run}", f"steps: {res['step']}",
          f"test bits/dim (negative ELBO, k={res['test_k']}, {res['test_n']} images): {res['test_elbo_bpd']:.4f}"])
    return 0
