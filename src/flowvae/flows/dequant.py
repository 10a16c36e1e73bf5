"""Variational dequantisation (Ho et al. 2019, Flow++ §3.1): a learned noise distribution q(u|x).

Uniform dequantisation adds ``u ~ U[0, 1)^D`` to the bin indices. Variational dequantisation
draws ``u`` from a conditional flow instead, ``u = sigmoid(g(eps; h(x)))`` with
``eps ~ N(0, I)`` and ``h(x)`` features of the discrete image, and the bound on ``log P(x)``
gains the term ``-log q(u|x)`` (zero for the uniform case):

``log P(x) >= E_q[ log p((x + u) / n_bins - 0.5) - D log n_bins - log q(u|x) ]``.

``g`` is a stack of conditional elementwise affine layers and, for images with 2 or more
channels, affine couplings whose networks see ``h(x)`` beside the conditioning channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..maths import LOG_2PI
from ..networks.layers import ZeroWeightNormConv2d
from .base import Flow
from .coupling import AffineCoupling, ChannelSplit

__all__ = ["VariationalDequantizer"]



class _ElementwiseAffine(Flow):
    """``y = x * exp(log_s(h)) + b(h)`` per element, with ``(log_s, b)`` from features ``h``."""

    def __init__(self, channels: int, features: int):
        super().__init__()
        self.net = ZeroWeightNormConv2d(features, 2 * channels, 3)
        self.channels = channels

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, b = self.net(cond).split(self.channels, 1)
        return x * log_s.exp() + b, log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, b = self.net(cond).split(self.channels, 1)
        return (y - b) * torch.exp(-log_s), -log_s.flatten(1).sum(1)


class _FeatureCouplingNet(nn.Module):
    """Coupling network on ``x_a`` concatenated with the image features ``h`` (passed as ``cond``)."""

    def __init__(self, c_a: int, c_out: int, features: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(c_a + features, hidden, 3, padding=1)
        self.out = ZeroWeightNormConv2d(hidden, c_out, 3)

    def forward(self, x_a: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:  # the TypeError torch.cat would raise, with the reason
            raise TypeError("the dequantizer's coupling networks need the image features as cond")
        return self.out(F.elu(self.conv(torch.cat([x_a, cond], 1))))


class VariationalDequantizer(nn.Module):
    """q(u|x): dequantisation noise in ``(0, 1)^D`` given the discrete image.

    Args:
        channels: image channels ``C``.
        hidden: width of the feature network and the coupling networks.
        steps: number of (elementwise affine, two couplings) blocks; couplings need ``C >= 2``.

    ``sample(x_centres [B, C, H, W], eps [B, C, H, W]) -> (u [B, C, H, W], log_q [B])``: ``u`` in
    ``(0, 1)`` and ``log q(u|x)`` in nats (a density on the unit cube, so it can be positive).
    Starts as a logistic-normal with identity layers, and learns with the model's bound.
    """

    def __init__(self, channels: int, hidden: int = 32, steps: int = 2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ELU())
        layers: list[Flow] = []
        for _ in range(steps):
            layers.append(_ElementwiseAffine(channels, hidden))
            if channels >= 2:
                for swap in (False, True):
                    split = ChannelSplit(channels, "continuous", swap)
                    layers.append(AffineCoupling(split, _FeatureCouplingNet(split.size_a, 2 * split.size_b, hidden, hidden)))
        self.layers = nn.ModuleList(layers)

    def sample(self, x_centres: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x_centres)
        log_q = -0.5 * (eps.pow(2) + LOG_2PI).flatten(1).sum(1)
        y = eps
        for layer in self.layers:
            y, ld = layer(y, h)
            log_q = log_q - ld
        # u = sigmoid(y): log |du/dy| = log sigmoid(y) + log sigmoid(-y)
        log_q = log_q - (F.logsigmoid(y) + F.logsigmoid(-y)).flatten(1).sum(1)
        return torch.sigmoid(y), log_q
