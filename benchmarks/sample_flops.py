"""FLOPs of one sample of a preset (``draw_samples``: the prior, the inverse decoder), counted by
``torch.utils.flop_counter``; the figure the README divides sampling rates by.

    python benchmarks/sample_flops.py --preset cifar10
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flowvae.evaluation.sampling import draw_samples
    from flowvae.models import create_model
    from flowvae.presets import get_preset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cifar10")
    p.add_argument("-n", type=int, default=4, help="samples counted")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = create_model(get_preset(args.preset)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        draw_samples(model, args.n, 0.7, generator=torch.Generator().manual_seed(0))
    print(f"{args.preset}: {counter.get_total_flops() / args.n / 1e9:.2f} GFLOP per sample at T = 0.7")
    return 0


if __name__ == "__main__":
    sys.exit(main())
