"""``flowvae import-wolf MODEL_DIR --run RUN``: a model trained with the authors' implementation
(github.com/XuezheMax/wolf) as a flowvae run folder (:func:`flowvae.interop.wolf.import_wolf`;
docs/commands/import-wolf.md)."""

from __future__ import annotations

import argparse

from ..common import emit
from ..options import number
from ..parser import Subparsers, output_options

__all__ = ["NAME", "add_parser", "execute"]

NAME = "import-wolf"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae import-wolf``: its flags and defaults."""
    p = sub.add_parser(NAME, help="convert a model trained with the authors' code (wolf) into a run folder",
                       description="Convert the authors' model folder (config.json with model.pt or "
                                   "checkpoint*.tar, from github.com/XuezheMax/wolf) into a flowvae run folder "
                                   "that computes the same function: same bits/dim on the same images and noise. "
                                   "Every flowvae command then works on it.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the authors' model folder (their train.py's --model_path)")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder to create (must be new or empty)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="weights file: a checkpoint*.tar (a bare name is looked up in MODEL_DIR) or model.pt "
                        "[default: MODEL_DIR/model.pt, else the checkpoint written last]")
    p.add_argument("--encoder-input", choices=["centre", "lower-edge"], default="lower-edge",
                   help="pixels the encoder q(z|x) sees: lower-edge as the authors' code (the same function), or "
                        "centre, flowvae's convention (half a bin off from training) [default: lower-edge]")
    number(p, "--image-size", ge=2, default=None, metavar="N",
           help="image side in pixels (their train.py's --image_size) [default: read from the encoder; "
                "required for a model without one]")
    number(p, "--n-bits", ge=1, default=8, metavar="N", help="bits per pixel the model was trained on (their --n_bits) "
                                                      "[default: 8]")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="flowvae data source for eval/sample/switch/... [default: from the image shape: 3x32 cifar10, "
                        "3x64 imagenet64, 3x128 lsun, 3x256 celebahq, 1x28 mnist, else folder]")
    p.add_argument("--data", default=None, metavar="PATH", help="where that data set's files are (sets data.root)")
    p.add_argument("--force", action="store_true",
                   help="replace the config and weights of an earlier import in --run (never a trained run's)")
    output_options(p)
    return p


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae import-wolf``; prints the parameter count and the run folder (or ``--json``). Returns 0."""
    from ...interop.wolf import import_wolf

    res = import_wolf(args.model_dir, args.run, checkpoint=args.checkpoint, encoder_input=args.encoder_input,
                      image_size=args.image_size, n_bits=args.n_bits, dataset=args.dataset, data_root=args.data,
                      force=args.force)
    emit(args, res, [f"imported {res['weights']} ({res['layout']}): a {res['kind']!r} model with "
                     f"{res['parameters']:,} parameters, {res['image_size']}x{res['image_size']} images, "
                     f"{res['n_bits']} bits, encoder input {res['encoder_input']}",
                     f"run folder: {res['run']} (data set {res['dataset']}; provenance in import.json)"])
    return 0
