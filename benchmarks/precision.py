"""Do the faster training modes (bfloat16, channels-last, torch.compile) reach float32's bits/dim?

    .venv/bin/python benchmarks/precision.py --preset cifar10 --steps 150 --batch 32 \\
        --set data.dataset=cifar10-jpeg train.init_batch_size=256 --out runs/precision

Trains the preset once per variant with the same seed, initialisation, data order, dequantisation
noise, posterior samples and learning-rate schedule; only the variant's overrides differ. Then
evaluates every run on the same test images (negative ELBO in bits/dim, K posterior samples, same
noise) and prints a markdown table with each variant's training speed and its bits/dim against
the first variant's. Variants are ``NAME=KEY=VALUE,KEY=VALUE`` (``NAME=`` alone: the preset as it
is); the defaults are float32 and bfloat16 + channels-last. A run folder that already holds a
``model.safetensors`` is evaluated again, not retrained.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_VARIANTS = ["fp32=", "bf16+cl=train.precision=bf16,train.channels_last=true"]


def _parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--variant {text!r}: write NAME=KEY=VALUE,KEY=VALUE (or NAME= for the preset as it is)")
    return name, [kv for kv in rest.split(",") if kv]


def main(argv: list[str] | None = None) -> int:
    import torch

    from flowvae import load_run
    from flowvae.config import apply_overrides
    from flowvae.evaluation import evaluate_bpd
    from flowvae.presets import get_preset
    from flowvae.training import train
    from flowvae.training.trainer import load_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--variant", nargs="+", default=DEFAULT_VARIANTS, dest="variants")
    p.add_argument("--set", nargs="*", default=[], dest="overrides", help="config overrides for every variant")
    p.add_argument("--out", default="runs/precision")
    args = p.parse_args(argv)

    out = Path(args.out)
    rows = []
    for name, extra in map(_parse_variant, args.variants):
        run = out / name.replace("+", "_")
        cfg = apply_overrides(get_preset(args.preset), [
            f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"train.eval_every={args.steps}",
            f"train.checkpoint_every={args.steps}", "train.eval_images=64",  # the figures come from the evaluation below
            "train.sample_temperatures=[]", *args.overrides, *extra])
        t = time.time()
        trained = not (run / "model.safetensors").exists()
        if trained:
            train(cfg, run, progress=False)
        train_s = time.time() - t
        model = load_run(run)  # evaluated in float32 whatever it was trained in
        test = load_data(model.config, "test").images[: args.eval_images]
        res = evaluate_bpd(model, test, args.k, seed=0)
        rows.append({"variant": name, "overrides": extra, "steps": args.steps, "batch": args.batch,
                     "train_s": round(train_s, 1) if trained else None,
                     "threads": torch.get_num_threads(), **res})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    (out / "precision.json").write_text(json.dumps({"preset": args.preset, "overrides": args.overrides,
                                                    "rows": rows}, indent=2))
    base = rows[0]["elbo_bpd"]
    print(f"| variant | steps x batch | training s | test bits/dim (neg. ELBO, K={args.k}) "
          f"| against {rows[0]['variant']} |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['steps']} x {r['batch']} | {r['train_s'] if r['train_s'] is not None else '-'} "
              f"| {r['elbo_bpd']:.4f} | {r['elbo_bpd'] - base:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
