"""Compression encoder q(z|x) (paper §2.1 eq. (5), Appendix B.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ZeroWeightNormLinear

__all__ = ["ResNetBlock", "CompressionEncoder", "SubsampledPointwiseConv"]


class SubsampledPointwiseConv(nn.Conv2d):
    """A 1x1 convolution with a stride, computed as every ``stride``-th pixel followed by a 1x1
    convolution of stride 1: the same function and the same parameters (``weight`` ``[C_out, C_in,
    1, 1]``) as ``nn.Conv2d(C_in, C_out, 1, stride=stride, bias=False)``.

    Why not ``nn.Conv2d`` itself: on CPUs oneDNN's weight gradient of a strided 1x1 convolution of
    channels-last tensors with fewer input channels than its block writes past its workspace
    (uxlfoundation/oneDNN issue 6035): in torch 2.4 to 2.13 on the project's CPU, 8 channels at
    64x64 and stride 2 abort the process (``double free or corruption``), and elsewhere the gradient
    can be wrong without a crash. ``train.channels_last`` and ``train.precision=auto`` reach it for
    grey 64x64 images. With stride 1 that code path is not taken.
    ``[B, C_in, H, W] -> [B, C_out, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, 1, bias=False)
        self.subsample = stride

    def forward(self, x: Tensor) -> Tensor:
        s = self.subsample
        return F.conv2d(x[:, :, ::s, ::s], self.weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, subsample={self.subsample}"


class ResNetBlock(nn.Module):
    """Basic ResNet block (He et al. 2016) with batch normalisation and ELU.

    ``conv3x3(stride) -> BN -> ELU -> conv3x3 -> BN``, plus a shortcut (1x1 convolution with BN
    when the stride or width changes), then ELU. ``[B, C_in, H, W] -> [B, C_out, H/stride, W/stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                SubsampledPointwiseConv(in_channels, out_channels, stride),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn2(self.conv2(F.elu(self.bn1(self.conv1(x)))))
        return F.elu(h + (x if self.shortcut is None else self.shortcut(x)))


class CompressionEncoder(nn.Module):
    """Maps an image to the mean and log-variance of the diagonal Gaussian q(z|x) (eq. 5).

    Each level is two ResNet blocks (stride 1, then stride 2), halving the resolution; then a 1x1
    convolution to ``out_channels`` maps, ELU, flatten, and one fully-connected layer to
    ``2 * d_z`` outputs. That layer starts at zero, so q(z|x) starts as N(0, I) (§2.1).

    Args:
        in_channels: image channels ``C``.
        image_size: ``H = W``; must be divisible by ``2 ** len(widths)``.
        widths: channels of each level (``[48, 96, 96]`` for CIFAR-10: 32 -> 4).
        d_z: dimension of z.
        out_channels: maps before the fully-connected layer (8 in the authors' code).

    Shapes: ``x [B, C, H, W]`` (pixels scaled to ``[-0.5, 0.5]``) -> ``(mu [B, d_z], logvar [B, d_z])``.
    """

    def __init__(self, in_channels: int, image_size: int, widths: list[int], d_z: int, out_channels: int = 8):
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_channels
        for w in widths:
            blocks += [ResNetBlock(c, w, 1), ResNetBlock(w, w, 2)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.top = nn.Conv2d(c, out_channels, 1)
        final = image_size // 2 ** len(widths)
        self.fc = ZeroWeightNormLinear(out_channels * final * final, 2 * d_z)
        self.d_z = d_z

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.elu(self.top(self.blocks(x))).flatten(1)
        out = self.fc(h)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar
