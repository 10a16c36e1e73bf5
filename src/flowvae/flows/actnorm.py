"""ActNorm: per-channel affine layer with data-dependent initialisation (Glow, Kingma & Dhariwal 2018).

Paper: Appendix A, eq. (1) ``y = s * x + b`` with one scale and bias per channel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Flow

__all__ = ["ActNorm"]


class ActNorm(Flow):
    """Per-channel affine flow ``y = x * exp(log_scale) + bias``.

    Works on images ``[B, C, H, W]`` and vectors ``[B, C]``; the channel axis is 1.
    ``logdet = H * W * sum(log_scale)`` (``H = W = 1`` for vectors), shape ``[B]``.

    The parameters are set from the first batch seen inside :class:`~flowvae.flows.base.data_init`
    so that the output has zero mean and unit variance per channel. The ``initialized`` buffer is
    part of the state dict, so loading a trained model never re-runs the initialisation.

    Args:
        num_channels: number of channels ``C``.
        eps: added to the standard deviation at initialisation to avoid division by zero.
    """

    initialized: Tensor  # buffer (registered in __init__)

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._data_init = False

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.dim() - 2)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        std = x.std(dim=dims, unbiased=False)
        log_scale = -torch.log(std + self.eps)
        self.log_scale.copy_(log_scale)
        self.bias.copy_(-mean * log_scale.exp())
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        spatial = 1
        for s in x.shape[2:]:
            spatial *= s
        return (spatial * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self._data_init and not bool(self.initialized):
            self._initialize(x)
        shape = self._shape(x)
        y = x * self.log_scale.view(shape).exp() + self.bias.view(shape)
        return y, self._logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shape = self._shape(y)
        x = (y - self.bias.view(shape)) * torch.exp(-self.log_scale.view(shape))
        return x, -self._logdet(y)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"
