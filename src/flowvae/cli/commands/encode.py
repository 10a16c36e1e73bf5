"""``flowvae encode RUN --out FILE.npz``: export a run's representations of the train and test images
(posterior means and log-variances, optionally the exact local code v, labels and indices) as one
``.npz`` file for downstream work; see :mod:`flowvae.evaluation.encoding` and ``docs/commands/encode.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from ..common import emit, load_for_eval
from ..options import number
from ..parser import Subparsers, common_options, run_argument

__all__ = ["NAME", "add_parser", "execute"]

NAME = "encode"

# config.yaml is a few kilobytes; anything far larger is not a config written by flowvae train
_MAX_CONFIG_BYTES = 16 * 1024**2


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    """The parser of ``flowvae encode``: its flags and defaults."""
    p = sub.add_parser(NAME, help="export z (posterior mean, log-variance), v, labels and indices as .npz",
                       description="Write the run's representations of its train and test images into one .npz "
                                   "file: the posterior mean and log-variance of each latent, with --local the "
                                   "exact local code v, the labels and each image's index in its split. "
                                   "Deterministic: no sampling, v at the bin centres.")
    run_argument(p)
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the .npz file to write, in an existing folder")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="encode these images instead of the run's own data set: a folder or .zip of images, dataset "
                        "files, ... (recognised as train --data recognises them) [default: the data in the run's "
                        "config.yaml]")
    p.add_argument("--split", nargs="+", choices=["train", "test"], default=["train", "test"],
                   help="splits to encode [default: train test]")
    number(p, "--limit", ge=1, default=None,
           help="per split, a seeded random subset of N images, stratified by class [default: all]")
    p.add_argument("--local", action="store_true", help="also export the exact local code v (kinds with exact codes)")
    number(p, "--batch-size", ge=1, default=256, help="images per batch [default: 256]")
    common_options(p, seed=False)
    return p


def _check_out(out: Path) -> None:
    """Refuse an output path before any encoding, so a typo costs nothing."""
    from ...errors import CheckpointError, ConfigError

    if out.suffix != ".npz":
        raise ConfigError(f"--out {out}: name a .npz file, e.g. --out {out.with_suffix('.npz').name}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if os.path.islink(out):
        raise CheckpointError(f"refusing to write {out}: it is a symbolic link")
    if out.exists() and not out.is_file():
        raise CheckpointError(f"refusing to write {out}: it is not a regular file")


def execute(args: argparse.Namespace) -> int:
    """Run ``flowvae encode`` (:func:`flowvae.evaluation.encoding.encode_splits`); writes the ``.npz``
    file. Returns 0."""
    from ... import safe_io
    from ...data.base import ImageData
    from ...data.streaming import default_workers
    from ...evaluation.encoding import encode_splits, npz_bytes
    from ...runs.data import load_run_split

    out = Path(args.out)
    _check_out(out)
    splits = list(dict.fromkeys(args.split))  # --split test test: once
    model, _, _ = load_for_eval(args)
    if args.local:
        model.require("exact_codes", "flowvae encode --local")  # before any data is read
    config_bytes = safe_io.read_bytes(Path(args.run) / "config.yaml", _MAX_CONFIG_BYTES)
    cfg = model.config
    # The whole split, so indices count its images as the data source numbers them; --limit picks
    # the subset afterwards. Read on access where the source can, so memory holds one batch.
    data = {s: load_run_split(cfg, args.run, s, args.data, lazy=True, whole=True) for s in splits}
    lazy = any(not isinstance(d, ImageData) for d in data.values())
    workers = cfg.data.num_workers if cfg.data.num_workers is not None else (default_workers() if lazy else 0)
    meta = {"run": str(args.run), "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
            "dataset": next(getattr(d, "name", s) for s, d in data.items()).rsplit("/", 1)[0],
            "data_root": str(args.data) if args.data is not None else cfg.data.root}
    arrays = encode_splits(model, data, local=args.local, batch_size=args.batch_size, limit=args.limit,
                           num_workers=workers, meta=meta)
    safe_io.atomic_write(out, npz_bytes(arrays))

    record = json.loads(str(arrays["meta"]))
    shapes = {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items() if k != "meta"}
    res = {"file": str(out), "kind": model.kind, "splits": record["splits"], "latents": record["latents"],
           "local": args.local, "v_dim": record["v_dim"], "config_sha256": meta["config_sha256"], "arrays": shapes}
    codes = [f"{lat['name']} ({lat['dim']} dims: mean, log-variance)" for lat in record["latents"]]
    if record["v_dim"] is not None:
        codes.append(f"v ({record['v_dim']} dims)")
    lines = [f"wrote {out}: {model.kind!r} model, " + ", ".join(codes)]
    lines += [f"{s}: {r['n']} of {r['n_split']} images of {r['name']}"
              + ("" if r["has_labels"] else " (no labels: -1)") for s, r in record["splits"].items()]
    emit(args, res, lines)
    return 0
