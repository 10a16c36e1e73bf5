"""Where an undertrained flow's samples saturate, and whether the prior of v is the cause (issue 33, item 6).

For a run folder (or the weights ``benchmarks/time_to_quality.py`` copies at each budget, with the
run folder of the same job for the config), prints one JSON line:

* :func:`flowvae.evaluation.saturation.saturation_origin` on ``--samples`` samples at temperature 1
  against ``--images`` test images: how many saturate, at which level each first leaves twice the
  range real images reach, the spread of v over dequantised test images, and how many saturate
  at 0.9, 0.8 and 0.7;
* ``learned_prior_gain_bpd``: how much lower the test bits/dim of v would be under a diagonal
  Gaussian fitted per dimension to v of ``--images`` training images than under the model's
  N(0, I), the flow held fixed: what a learned prior scale (Glow's "learn top") could gain at most.

    python benchmarks/saturation_origin.py RUN
    python benchmarks/saturation_origin.py /tmp/ttq-XXXX/job0/run --weights /tmp/ttq-XXXX/job0/weights_300.pt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from flowvae.config import load_config
from flowvae.data.streaming import head_images
from flowvae.evaluation.saturation import dequantised_codes, saturation_origin
from flowvae.models import create_model
from flowvae.runs import load_run
from flowvae.runs.data import load_data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--weights", type=Path, help="a state dict to load instead of the run's own weights")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights:
        cfg = load_config(args.run / "config.yaml")
        model = create_model(cfg)
        model.load_state_dict(torch.load(args.weights, weights_only=True))
    else:
        model = load_run(args.run)
        cfg = model.config
    model.eval()
    train = head_images(load_data(cfg, "train"), args.images)
    test = head_images(load_data(cfg, "test"), args.images)
    found = saturation_origin(model, test, n=args.samples)
    gen = torch.Generator().manual_seed(0)
    v_train, v_test = dequantised_codes(model, train, gen), dequantised_codes(model, test, gen)
    mean, std = v_train.mean(0), v_train.std(0)
    fitted = (0.5 * ((v_test - mean) / std) ** 2 + std.log()).sum(1).mean()
    standard = (0.5 * v_test ** 2).sum(1).mean()
    gain = float(standard - fitted) / v_test.shape[1] / math.log(2)
    json.dump({"run": str(args.run), "weights": str(args.weights) if args.weights else None, **found,
               "learned_prior_gain_bpd": round(gain, 4)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
