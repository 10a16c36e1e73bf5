"""Squeeze: space-to-depth reshaping (Real NVP, Dinh et al. 2016), a volume-preserving flow."""

from __future__ import annotations

from torch import Tensor

from .base import Flow

__all__ = ["Squeeze"]


class Squeeze(Flow):
    """``[B, C, H, W] -> [B, 4C, H/2, W/2]``: each 2x2 spatial block becomes 4 channels.

    Output channel ``(2 * i + j) * C + c`` holds input channel ``c`` at offset ``(i, j)`` of the
    block (the ordering of Glow and of the authors' code). A permutation of coordinates, so ``logdet = 0``.

    Raises:
        ValueError: if ``H`` or ``W`` is odd.
    """

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = y.shape
        x = y.view(b, 2, 2, c // 4, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c // 4, h * 2, w * 2)
        return x, y.new_zeros(b)
