"""How much a test figure depends on which test images score it: one set of weights scored (negative
ELBO, K = 1, bits/dim, uniform dequantisation with a fixed seed) on the first and the last ``--n``
test images, on the seeded class-stratified ``--n`` that ``flowvae train`` evaluates
(``train.eval_images``) and on the whole test split.

Written because the first 2,000 MNIST test images (digits written by Census Bureau employees, the
cleaner half of the test set) score lower than the rest, and ``time_to_quality.py`` scored them until
2026-12-07 (docs/speed.md).

Usage::

    python benchmarks/test_subsets.py WEIGHTS.pt --preset mnist [--set train.lr=2e-3 ...] [--n 2000]

``WEIGHTS.pt`` is a state dict of the preset's model (``time_to_quality.py`` keeps its copies in its
temporary folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flowvae.data import load_dataset, shared_data_dir
from flowvae.data.base import subset_indices
from flowvae.evaluation.bpd import evaluate_bpd
from flowvae.models import create_model
from flowvae.presets import resolve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--preset", default="mnist")
    p.add_argument("--set", nargs="*", default=[], dest="overrides")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = resolve(args.preset, args.overrides)
    model = create_model(cfg)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    model.eval()
    name = cfg.data.dataset
    test = load_dataset(name, "test", root=shared_data_dir() / name)
    images, n = test.images, args.n
    subsets = {f"first {n:,}": images[:n], f"last {n:,}": images[-n:],
               f"class-stratified {n:,} (flowvae train's)": images[subset_indices(len(images), n, test.labels)],
               f"all {len(images):,}": images}
    print(f"| {name} test images | test bits/dim |\n| --- | --- |")
    for label, x in subsets.items():
        print(f"| {label} | {evaluate_bpd(model, x, 1, seed=0)['elbo_bpd']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
