"""The paper's ordering at CPU scale: our model vs "z only in the prior of v" vs refined Glow.

    .venv/bin/python benchmarks/ordering.py --preset mnist --steps 600 --out runs/ordering-mnist
    .venv/bin/python benchmarks/ordering.py --preset cifar10-small --steps 400 --out runs/ordering-c10
    .venv/bin/python benchmarks/ordering.py --preset mnist --steps 600 --z-set model.aux_decoder_weight=1 \
        --kinds flowvae z_prior --out runs/ordering-mnist-aux

Trains the three kinds with the same preset, seed, data order, number of steps and learning-rate
schedule, then evaluates each on the same test images (negative ELBO in bits/dim with K
importance samples, and the IW bound), and prints a markdown table. The paper (CIFAR-10, Table 3
and Table 1): 3.27 (ours) < 3.31 (z in the prior of v) < 3.33 (refined Glow).

``--z-set`` gives overrides for the two kinds with a global code z only (the remedies against
posterior collapse: ``model.free_bits``, ``model.aux_decoder_weight``, ``train.kl_warmup_steps``,
all departures from the paper); refined Glow has no z, so its run is the same with or without them
and the third row can be taken from the run without remedies.

``--init-only 0 1 2 3`` trains nothing and prints the kinds' test bits/dim at initialisation for
those seeds: the random invertible 1x1 convolutions set the starting density (every coupling
starts as the identity), and our model builds FC(z) layers among them, so one seed starts the
kinds at different points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KINDS = ("flowvae", "z_prior", "refined_glow")
WITH_Z = ("flowvae", "z_prior")


def main(argv: list[str] | None = None) -> int:
    from flowvae import load_run
    from flowvae.config import apply_overrides
    from flowvae.evaluation import evaluate_bpd
    from flowvae.presets import get_preset
    from flowvae.runs.data import load_data
    from flowvae.training import train

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--kinds", nargs="+", default=list(KINDS))
    p.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra config overrides for all runs")
    p.add_argument("--z-set", nargs="*", default=[], dest="z_overrides",
                   help="config overrides for the kinds with a global code z only (flowvae, z_prior)")
    p.add_argument("--out", default="runs/ordering")
    p.add_argument("--init-only", nargs="+", type=int, metavar="SEED", default=None,
                   help="train nothing: print each kind's test bits/dim at initialisation (after ActNorm's "
                        "data-dependent start, as training begins) for these values of train.seed")
    args = p.parse_args(argv)

    if args.init_only is not None:
        return initial_bits(args)
    out = Path(args.out)
    rows = []
    for kind in args.kinds:
        run = out / kind
        cfg = apply_overrides(get_preset(args.preset), [
            f"model.kind={kind}", f"train.steps={args.steps}", f"train.eval_every={args.steps}",
            f"train.eval_images={args.eval_images}", "train.sample_temperatures=[0.7]", *args.overrides,
            *(args.z_overrides if kind in WITH_Z else [])])
        t = time.time()
        if not (run / "model.safetensors").exists():
            train(cfg, run, progress=False)
        train_s = time.time() - t
        model = load_run(run)
        test = load_data(model.config, "test").images[: args.eval_images]
        res = evaluate_bpd(model, test, args.k, seed=0)
        rows.append({"kind": kind, "steps": args.steps, "train_s": round(train_s, 1),
                     "parameters": sum(q.numel() for q in model.parameters()), **res})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    (out / "ordering.json").write_text(json.dumps(rows, indent=2))
    print(f"| model | parameters | steps | test bits/dim (neg. ELBO, K={args.k}) | IW bound | KL (nats) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['kind']} | {r['parameters']:,} | {r['steps']} | {r['elbo_bpd']:.4f} | {r['iw_bpd']:.4f} | {r['kl']:.2f} |")
    return 0


def initial_bits(args: argparse.Namespace) -> int:
    """The kinds' test bits/dim at step 0, per seed: how far apart the random weights start them.

    The model is built and its ActNorm layers initialised from data as :func:`flowvae.training.train`
    does (``torch.manual_seed(train.seed)``, then the training images the trainer picks), so the
    figures are those a run's ``metrics.jsonl`` records at step 0 up to the dequantisation noise.
    """
    import torch

    from flowvae.config import apply_overrides
    from flowvae.evaluation import evaluate_bpd
    from flowvae.flows.base import data_init
    from flowvae.models.base import create_model
    from flowvae.presets import get_preset
    from flowvae.runs import RunReader
    from flowvae.runs.data import load_data

    # The kind and the seed do not change which images the preset reads: load them once.
    data_cfg = apply_overrides(get_preset(args.preset), args.overrides)
    train_data, test = load_data(data_cfg, "train"), load_data(data_cfg, "test").images[: args.eval_images]
    table: dict[int, dict[str, float]] = {}
    for seed in args.init_only:
        for kind in args.kinds:
            cfg = apply_overrides(get_preset(args.preset), [f"model.kind={kind}", f"train.seed={seed}",
                                                            *args.overrides, *(args.z_overrides if kind in WITH_Z else [])])
            torch.manual_seed(seed)
            cfg.model = cfg.model.for_training(len(train_data), RunReader())
            model = create_model(cfg)
            pick = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(seed))
            with torch.no_grad(), data_init(model):
                model.loss(train_data.images[pick[: cfg.train.init_batch_size]], torch.Generator().manual_seed(seed + 1))
            table.setdefault(seed, {})[kind] = evaluate_bpd(model, test, args.k, seed=0)["elbo_bpd"]
            print(json.dumps({"seed": seed, "kind": kind, "elbo_bpd": table[seed][kind]}), file=sys.stderr, flush=True)
    print(f"| train.seed | {' | '.join(args.kinds)} |")
    print("| --- |" + " --- |" * len(args.kinds))
    for seed, row in table.items():
        print(f"| {seed} | {' | '.join(f'{row[k]:.3f}' for k in args.kinds)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
