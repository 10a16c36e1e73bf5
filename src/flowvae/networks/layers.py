"""Weight-normalised output layers (Salimans & Kingma 2016), initialised to output zero.

The authors' code ends every coupling network and the encoder with such a layer and sets its
gain ``g`` and bias to zero, so each coupling starts as the identity and q(z|x) starts as
N(0, I) (paper §2.1 "Zero initialization"). We keep the parametrisation so parameter counts
match theirs exactly (``g`` adds one parameter per output unit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ZeroWeightNormConv2d", "ZeroWeightNormLinear"]


def _weight(v: Tensor, g: Tensor) -> Tensor:
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)


class ZeroWeightNormConv2d(nn.Module):
    """``Conv2d`` with weight ``g * v / ||v||`` (norm per output channel), zero-initialised output.

    Input ``[B, C_in, H, W]``, output ``[B, C_out, H, W]`` (``padding = kernel_size // 2``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.padding = kernel_size // 2
        self.weight_v = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * 0.05)
        self.weight_g = nn.Parameter(torch.zeros(out_channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        w = _weight(self.weight_v, self.weight_g).to(x.dtype)
        return F.conv2d(x, w, self.bias.to(x.dtype), padding=self.padding)


class ZeroWeightNormLinear(nn.Module):
    """``Linear`` with weight ``g * v / ||v||`` (norm per output unit), zero-initialised output.

    Input ``[B, in_features]``, output ``[B, out_features]``.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.randn(out_features, in_features) * 0.05)
        self.weight_g = nn.Parameter(torch.zeros(out_features, 1))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, _weight(self.weight_v, self.weight_g).to(x.dtype), self.bias.to(x.dtype))
