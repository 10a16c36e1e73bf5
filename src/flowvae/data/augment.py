"""Batch-level data augmentation with an explicit random generator (Appendix C.1)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["augment_batch"]


def augment_batch(images: Tensor, flip: bool = False, crop_pad: int = 0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Random horizontal flips and reflection-padded random crops of a uint8 batch ``[B, C, H, W]``.

    Drawing from ``generator`` (not the global RNG) makes the augmentation part of the resumable
    training state. Returns a new tensor of the same shape and dtype.
    """
    b, _, h, w = images.shape
    out = images
    if crop_pad:
        padded = torch.nn.functional.pad(out.float(), (crop_pad,) * 4, mode="reflect").to(images.dtype)
        offs = torch.randint(0, 2 * crop_pad + 1, (b, 2), generator=generator)
        rows = offs[:, 0, None] + torch.arange(h)            # [B, H]
        cols = offs[:, 1, None] + torch.arange(w)            # [B, W]
        idx_b = torch.arange(b)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out
