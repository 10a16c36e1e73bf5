"""Where one training step's time goes, and evaluation with and without autograd.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_step.py --preset cifar10 --mode bf16+cl --batch 8

Prints the torch.profiler table (self CPU time by operator) of one forward + backward of the
preset's model on random uint8 images, the time of one AdamW update (default and fused), then the
time of one forward pass (``log_weights``) of the
``--nograd-preset`` model under ``torch.no_grad()`` and with autograd on.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.profiler import ProfilerActivity, profile

from flowvae.flows import data_init
from flowvae.models import FlowVAE
from flowvae.presets import get_preset


def _model(preset: str, flags: set[str], batch: int) -> tuple[FlowVAE, torch.Tensor]:
    cfg = get_preset(preset)
    model = FlowVAE(cfg.model, cfg.data.n_bits).set_precision("bf16" if "bf16" in flags else "fp32")
    x = torch.randint(0, 256, (batch, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
                      dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), data_init(model):
        model.loss(x)
    return model, x


def _time(f, reps: int = 3) -> float:
    f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--mode", default="bf16+cl", help="+-joined flags: bf16, cl")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--nograd-preset", default="mnist")
    args = p.parse_args()
    from flowvae.training.environment import tune_cpu_allocator

    tune_cpu_allocator()  # as `flowvae train` does
    print(f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    model, x = _model(args.preset, set(args.mode.split("+")), args.batch)

    def step() -> None:
        loss, _ = model.loss(x)
        loss.backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"## one training step of {args.preset} ({args.mode}), batch {args.batch}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))

    # AdamW over the preset's parameters (gradients already there): the default (foreach) update
    # against the fused kernel the trainer uses.
    for name, kw in (("foreach", {}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6, **kw)
        print(f"## AdamW step ({name}) over {sum(p.numel() for p in model.parameters()):,} parameters: "
              f"{_time(opt.step, reps=5) * 1e3:.0f} ms")

    model, x = _model(args.nograd_preset, set(), 64)
    model.eval()
    bins = model.to_bins(x)
    with torch.no_grad():
        t_nograd = _time(lambda: model.log_weights(bins, 1))
    t_grad = _time(lambda: model.log_weights(bins, 1))
    print(f"## forward of {args.nograd_preset} (batch 64, eval mode): no_grad {t_nograd:.3f} s, autograd {t_grad:.3f} s")


if __name__ == "__main__":
    main()
