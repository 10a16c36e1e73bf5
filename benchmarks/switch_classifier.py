"""Fit time and accuracy of the switch metric's pixel classifier on 64x64 dSprites (shape labels):
the probe's LinearSVC against logistic regression, on raw and 2x2 / 4x4 average-pooled pixels.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/switch_classifier.py [--svm]

5,000 seeded training images, one fit each at C = 0.01 on standardised features; accuracy on 2,000
test images. ``--svm`` adds LinearSVC on all 4,096 pixels (minutes: the reason for the switch).
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from flowvae.presets import get_preset
    from flowvae.training.trainer import load_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--svm", action="store_true", help="also LinearSVC on all pixels (minutes)")
    args = p.parse_args(argv)
    cfg = get_preset("dsprites-btcvae")
    g = torch.Generator().manual_seed(0)
    train, test = load_data(cfg, "train"), load_data(cfg, "test")
    keep, tkeep = torch.randperm(len(train), generator=g)[:5000], torch.randperm(len(test), generator=g)[:2000]
    x, y = train.images[keep], train.labels[keep].numpy()
    tx, ty = test.images[tkeep], test.labels[tkeep].numpy()
    runs = [(1, "logistic"), (2, "logistic"), (4, "logistic"), (2, "svm"), (4, "svm")] + ([(1, "svm")] if args.svm else [])
    for pool, name in runs:
        f, ft = (torch.nn.functional.avg_pool2d(a.double(), pool).flatten(1).numpy() for a in (x, tx))
        est = LinearSVC(C=0.01, dual=True, max_iter=2000) if name == "svm" else LogisticRegression(C=0.01, max_iter=2000)
        t = time.perf_counter()
        clf = make_pipeline(StandardScaler(), est).fit(f, y)
        print(f"{name} pool {pool} ({f.shape[1]} features): {time.perf_counter() - t:.1f} s, "
              f"test accuracy {float(np.mean(clf.predict(ft) == ty)):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
