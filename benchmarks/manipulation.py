"""Edits along factor directions on dSprites, judged on the ground-truth factors (issue 31):
hit rate and leakage per factor for each run given, against the same edits in pixel space, with
each run's MIG beside them.

    .venv/bin/python benchmarks/manipulation.py --runs flowvae=runs/ds-flowvae btcvae=runs/ds-stage1 \\
        multistage=runs/ds-stage2 --out benchmarks/manipulation_dsprites.json

Each run is a dSprites run folder of a kind with a vector latent (``flowvae train`` with
``data.dataset=dsprites``). The protocol is :mod:`flowvae.evaluation.factor_edits`' (a small CNN
reads every factor of real and edited images; directions from 5,000 training images, towards the
upper half of an ordinal factor's values or towards one shape; 200 test images edited at
``--alpha`` and ``-alpha``). MIG is :func:`flowvae.evaluation.disentangle_codes`' on the 46,080-image
factor grid. Prints a markdown table per run and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN", help="dSprites run folders")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--images", type=int, default=200, help="test images edited per direction")
    p.add_argument("--method", default="mean-difference", choices=["mean-difference", "classifier"])
    p.add_argument("--reader-images", type=int, default=20000)
    p.add_argument("--reader-epochs", type=int, default=4)
    p.add_argument("--mig-images", type=int, default=10000)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from flowvae.api import load_run
    from flowvae.data import shared_data_dir
    from flowvae.data.dsprites import load_dsprites
    from flowvae.evaluation import disentangle_codes
    from flowvae.evaluation.factor_edits import FactorReaders, factor_edits
    from flowvae.training.environment import cpu_model

    root = shared_data_dir() / "dsprites"
    train, test = load_dsprites(root, "train"), load_dsprites(root, "test")
    grid = load_dsprites(root, "all")
    t = time.time()
    readers = FactorReaders(train, args.reader_images, args.reader_epochs)
    scores = readers.scores(test)
    print(f"factor readers trained in {time.time() - t:.0f} s; accuracy on 2,000 test images: "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items()))
    results: dict = {"hardware": f"{cpu_model()}, {torch.get_num_threads()} threads", "platform": platform.platform(),
                     "alpha": args.alpha, "images": args.images, "method": args.method, "readers": scores, "runs": {}}
    baseline = None
    for spec in args.runs:
        name, run = spec.split("=", 1)
        model = load_run(run, "cpu")
        t = time.time()
        res = factor_edits(model, train, test, args.alpha, args.images, method=args.method, readers=readers)
        mig = disentangle_codes(model, grid, ["mig"], num_train=args.mig_images)["mig"]
        baseline = res["pixels"]
        results["runs"][name] = {"run": run, "kind": model.kind, "edits": res["model"], "mig": mig,
                                 "seconds": round(time.time() - t, 1)}
        print(f"\n{name} ({model.kind}, {run}): MIG {mig['discrete_mig']:.3f}")
        _table(res["model"], res["factors"])
    if baseline is not None:
        results["pixels"] = baseline
        print("\npixel-space edits (baseline)")
        _table(baseline, list(scores))
    if args.out:
        results["command"] = "python benchmarks/manipulation.py " + " ".join(
            f"--runs {' '.join(args.runs)}".split() + [f"--alpha {args.alpha:g}", f"--images {args.images}"])
        args.out.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")


def _table(rows: dict, factors: list[str]) -> None:
    print("| edited factor | hit rate | " + " | ".join(f"leakage to {f}" for f in factors) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in factors) + " |")
    for f, row in rows.items():
        cells = [f"{100 * row['leakage'][o]:.0f}%" if o in row["leakage"] else "-" for o in factors]
        print(f"| {f} | {100 * row['hit']:.0f}% | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
