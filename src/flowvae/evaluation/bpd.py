"""Test-set bits/dim, as the paper reports it and as the tighter importance-weighted bound."""

from __future__ import annotations

import math

import torch

from ..models.base import GenerativeModel, check_count, check_posterior_samples
from ..progress import progress
from ._layout import inference_layout, to_layout

__all__ = ["evaluate_bpd"]


@torch.no_grad()
def evaluate_bpd(model: GenerativeModel, images: torch.Tensor, k: int = 1, batch_size: int = 256,
                 seed: int = 0, device: torch.device | str = "cpu", channels_last: bool | None = None) -> dict[str, float]:
    """Average bits/dim of uint8 images ``[N, C, H, W]`` with ``k`` posterior samples per image.

    Returns ``elbo_bpd`` (negative ELBO with uniform dequantisation, averaged over the ``k``
    samples, including the ``-D log n_bins`` discretisation term: the paper's figure),
    ``iw_bpd`` (negative importance-weighted bound with ``k`` samples), ``kl`` (nats, mean of
    the Monte Carlo estimate), ``k`` and ``n``. The noise comes from a generator seeded with
    ``seed``, so repeated calls give the same figures. The model is put in eval mode and
    restored afterwards; on the CPU its convolutions run in channels-last for the call
    (:func:`~flowvae.evaluation._layout.inference_layout`: about twice as fast, same figures;
    ``channels_last=False`` keeps the model's own layout, ``True`` forces channels-last).

    Raises:
        ConfigError: ``k`` not an integer in 1..:data:`~flowvae.models.base.MAX_POSTERIOR_SAMPLES`
            (10,000), or ``batch_size`` not a positive integer; both before anything is allocated.
    """
    check_posterior_samples(k)
    check_count("batch_size", batch_size)
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    per = max(1, batch_size // k)
    sums = {"elbo_bpd": 0.0, "iw_bpd": 0.0, "kl": 0.0}
    try:
        with inference_layout(model, channels_last) as fmt:
            steps = progress(range(0, len(images), per), total=-(-len(images) // per), desc=f"bits/dim (K={k})")
            for i in steps:
                x = to_layout(images[i:i + per].to(device), fmt)
                out = model.bits_per_dim(x, k, gen)
                for key in sums:
                    sums[key] += float(out[key].double().sum())
                if hasattr(steps, "set_postfix"):
                    steps.set_postfix(elbo_bpd=f"{sums['elbo_bpd'] / min(len(images), i + per):.4f}")
    finally:
        model.train(was_training)
    n = len(images)
    res = {key: v / n for key, v in sums.items()}
    res.update(k=k, n=n)
    for key in ("elbo_bpd", "iw_bpd", "kl"):
        if not math.isfinite(res[key]):
            res[key] = float("nan")
    return res
