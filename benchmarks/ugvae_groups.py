"""UG-VAE on MNIST: does the global space tell groups with shared structure apart?

    .venv/bin/python benchmarks/ugvae_groups.py --steps 1500 --out runs/ugvae

Trains two UG-VAEs with the same budget: one whose training groups are single digit classes
(``model.group_by=label``, 4 classes of 16 images per batch of 64) and one whose groups are random
batches (``model.group_by=batch``). Then, on test images, forms groups of ``--group-size`` images
of one class, encodes each group to its global posterior mean, and fits a linear probe (the
library's protocol: standardised features, LinearSVC, C by cross-validation) that predicts the
group's class from beta, on held-out groups. Chance is 10%. Also writes sample grids from the betas
of several class groups and a beta interpolation grid for each model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def class_groups(images: torch.Tensor, labels: torch.Tensor, size: int, per_class: int, seed: int):
    """``per_class`` groups of ``size`` images for every class: ``[G, size, C, H, W]`` and labels ``[G]``."""
    g = torch.Generator().manual_seed(seed)
    groups, ys = [], []
    for c in torch.unique(labels).tolist():
        pool = torch.nonzero(labels == c).flatten()
        for _ in range(per_class):
            groups.append(images[pool[torch.randperm(len(pool), generator=g)[:size]]])
            ys.append(c)
    return torch.stack(groups), torch.tensor(ys)


def main(argv: list[str] | None = None) -> int:
    from flowvae import load_run
    from flowvae.config import apply_overrides
    from flowvae.evaluation.probe import linear_probe
    from flowvae.imaging import save_grid
    from flowvae.presets import get_preset
    from flowvae.training import train
    from flowvae.training.trainer import load_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--groups-per-class", type=int, default=60)
    p.add_argument("--out", default="runs/ugvae")
    args = p.parse_args(argv)
    out = Path(args.out)
    common = ["model.kind=ugvae", "model.d_local=16", "model.d_global=16", "model.n_components=10",
              f"train.steps={args.steps}",
              "train.batch_size=64", "train.lr=1e-3", f"train.eval_every={args.steps}", "train.eval_images=1000",
              "train.sample_temperatures=[1.0]"]
    rows = {}
    for mode in ("label", "batch"):
        run = out / f"groups-{mode}"
        if not (run / "model.safetensors").exists():
            cfg = apply_overrides(get_preset("mnist"), [*common, f"model.group_by={mode}", "model.groups_per_batch=4"])
            train(cfg, run, progress=False)
        model = load_run(run)
        test = load_data(model.config, "test")
        half = len(test) // 2  # probe train groups from the first half of the test set, test groups from the second
        gtr, ytr = class_groups(test.images[:half], test.labels[:half], args.group_size, args.groups_per_class, 0)
        gte, yte = class_groups(test.images[half:], test.labels[half:], args.group_size, args.groups_per_class, 1)
        with torch.no_grad():
            btr = torch.stack([model.encode_group(x)[0] for x in gtr])
            bte = torch.stack([model.encode_group(x)[0] for x in gte])
        probe = linear_probe(btr, ytr, bte, yte, seed=0)
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rows[mode] = {"probe_accuracy": probe["accuracy"], "C": probe["C"], "groups_train": len(ytr),
                      "groups_test": len(yte), "group_size": args.group_size,
                      "test_bpd": metrics[-1]["test_elbo_bpd"], "steps": metrics[-1]["step"]}
        gen = torch.Generator().manual_seed(0)
        betas = bte[[int(torch.nonzero(yte == c)[0]) for c in range(0, 10, 2)]]
        grid = torch.cat([model.sample_group(8, beta=b, generator=gen) for b in betas])
        save_grid(grid, run / "samples_per_beta.png", nrow=8, scale=2)
        inter = model.interpolate_beta(betas[0], betas[1], steps=7, n_per_step=8, generator=gen)
        save_grid(inter.flatten(0, 1), run / "beta_interpolation.png", nrow=8, scale=2)
        print(json.dumps({mode: rows[mode]}), file=sys.stderr, flush=True)
    (out / "groups.json").write_text(json.dumps(rows, indent=2))
    print("| training groups | steps | test bits/dim | probe accuracy of the group's class from beta (chance 10%) |")
    print("| --- | --- | --- | --- |")
    for mode, r in rows.items():
        print(f"| {'one digit class' if mode == 'label' else 'random batch'} | {r['steps']} | {r['test_bpd']:.4f} | "
              f"{100 * r['probe_accuracy']:.1f}% ({r['groups_test']} test groups of {r['group_size']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
