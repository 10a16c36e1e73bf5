"""Shared maths of every model kind: Gaussian log-densities and KLs, discretised pixel likelihoods,
and the sharded noise that keeps data-parallel training equal to one process.

All log-densities are in nats. Gaussians are diagonal and parametrised by mean and log-variance;
densities and KLs are summed over the last dimension unless stated otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOG_2PI", "gaussian_logprob", "standard_normal_logprob", "gaussian_kl",
           "discretized_logistic_logprob", "discretized_gaussian_logprob", "to_unit_range", "sharded_noise",
           "soft_clamp"]

LOG_2PI = math.log(2 * math.pi)


def gaussian_logprob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; mu, diag exp(logvar))`` summed over the last dimension: ``[..., d] -> [...]``."""
    return -0.5 * (logvar + (z - mu).pow(2) * torch.exp(-logvar) + LOG_2PI).sum(-1)


def standard_normal_logprob(v: Tensor) -> Tensor:
    """``log N(v; 0, I)`` summed over all non-batch dimensions: ``[B, ...] -> [B]``."""
    return -0.5 * (v.pow(2) + LOG_2PI).flatten(1).sum(1)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor | float = 0.0, logvar_p: Tensor | float = 0.0) -> Tensor:
    """``KL(N(mu_q, diag e^logvar_q) || N(mu_p, diag e^logvar_p))`` in closed form, summed over the last dim."""
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logvar_p = torch.as_tensor(logvar_p, dtype=mu_q.dtype, device=mu_q.device)
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p)
                  - 1).sum(-1)


def soft_clamp(v: Tensor, bound: float) -> Tensor:
    """``bound * tanh(v / bound)``: a smooth clamp to ``(-bound, bound)`` (encoder log-variances)."""
    return bound * torch.tanh(v / bound)


def to_unit_range(k: Tensor) -> Tensor:
    """8-bit pixel values 0..255 -> ``[-1, 1]``; bin ``k`` covers ``k / 127.5 - 1 ± 1/255``."""
    return k / 127.5 - 1.0


def discretized_logistic_logprob(k: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(k) in nats, elementwise, for 8-bit pixel values ``k`` in ``0..255`` (float or int).

    A logistic with ``mean`` and ``log_scale`` on the ``[-1, 1]`` scale, integrated over the bin
    ``[k / 127.5 - 1 - 1/255, k / 127.5 - 1 + 1/255]``; bin 0 takes the lower tail and bin 255 the
    upper one, so the 256 probabilities sum to 1 (Salimans et al. 2017, PixelCNN++, one component).
    """
    c = to_unit_range(k.to(mean.dtype)) - mean
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (c + 1 / 255), inv_s * (c - 1 / 255)
    log_cdf_plus = plus - F.softplus(plus)                      # log sigmoid(plus)
    log_sf_minus = -F.softplus(minus)                           # log (1 - sigmoid(minus))
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * c
    log_pdf_mid = mid - log_scale - 2 * F.softplus(mid) - math.log(127.5)   # density x bin width
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(k < 0.5, log_cdf_plus, torch.where(k > 254.5, log_sf_minus, inner))


def discretized_gaussian_logprob(k: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """As :func:`discretized_logistic_logprob` with a Gaussian CDF (``mean``, std ``exp(log_scale)``)."""
    c = to_unit_range(k.to(mean.dtype)) - mean
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (c + 1 / 255), inv_s * (c - 1 / 255)
    ndtr, log_ndtr = torch.special.ndtr, torch.special.log_ndtr
    # difference of CDFs taken on the side of the nearer tail, where it keeps its precision
    delta = torch.where(minus > 0, ndtr(-minus) - ndtr(-plus), ndtr(plus) - ndtr(minus))
    mid = inv_s * c
    log_pdf_mid = -0.5 * mid.pow(2) - 0.5 * LOG_2PI - log_scale - math.log(127.5)
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(k < 0.5, log_ndtr(plus), torch.where(k > 254.5, log_ndtr(-minus), inner))


def sharded_noise(draw: Callable[..., Tensor], shape: tuple[int, ...], like: Tensor,
                  generator: torch.Generator | None, shard: tuple[int, int] | None) -> Tensor:
    """``draw`` (``torch.rand`` or ``torch.randn``) of ``shape`` on ``like``'s device and dtype.

    With ``shard = (rank, world)`` the draw is made for the ``world``-times larger global batch and
    slice ``rank`` is kept, so each data-parallel rank sees exactly the noise one process would
    give its part of the global batch.
    """
    if shard is None:
        return draw(shape, generator=generator, device=like.device, dtype=like.dtype)
    rank, world = shard
    n = shape[0]
    full = draw((n * world, *shape[1:]), generator=generator, device=like.device, dtype=like.dtype)
    return full[rank * n:(rank + 1) * n]
