"""Evaluation and sampling with the convolutions in channels-last (what the commands do on a CPU)
against the default layout, side by side in one process, on a run folder.

    .venv/bin/flowvae train mnist --run /tmp/mnist1 --steps 1 --device cpu --set train.eval_images=64
    .venv/bin/python benchmarks/eval_speed.py /tmp/mnist1 --images 1000 -k 5

Prints seconds and bits/dim of ``evaluate_bpd`` with ``channels_last=True`` and ``False`` on the
first ``--images`` test images, and images/s of ``draw_samples`` at T = 0.7 in each layout (the
same seed, so the same pixels). Speed does not depend on training, so a one-step run will do.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    from flowvae.api import load_run
    from flowvae.evaluation._layout import inference_layout
    from flowvae.evaluation.bpd import evaluate_bpd
    from flowvae.training.trainer import load_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--samples", type=int, default=64)
    args = p.parse_args(argv)
    model = load_run(args.run, "cpu")
    x = load_data(model.config, "test").images[:args.images]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    for cl in (True, False):
        t = time.perf_counter()
        r = evaluate_bpd(model, x, k=args.k, batch_size=256, channels_last=cl)
        print(f"evaluate_bpd channels_last={cl}: {time.perf_counter() - t:.1f} s for {len(x)} images, K = {args.k}; "
              f"elbo {r['elbo_bpd']:.6f}, iw {r['iw_bpd']:.6f} bits/dim", flush=True)
    model.eval()
    pixels = {}
    for cl in (True, False):
        with torch.no_grad(), inference_layout(model, cl):
            model.draw(8, 0.7, generator=torch.Generator().manual_seed(0))  # warm-up
            t = time.perf_counter()
            pixels[cl] = model.draw(args.samples, 0.7, generator=torch.Generator().manual_seed(1)).images
            dt = time.perf_counter() - t
        print(f"draw_samples channels_last={cl}: {args.samples / dt:.1f} images/s at T = 0.7", flush=True)
    print(f"same pixels: {bool(torch.equal(pixels[True], pixels[False]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
