"""Batch-level data augmentation with an explicit random generator (Appendix C.1)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["augment_batch"]


def augment_batch(images: Tensor, flip: bool = False, crop_pad: int = 0,
                  generator: torch.Generator | None = None, rows: tuple[int, int, int] | None = None) -> Tensor:
    """Random horizontal flips and reflection-padded random crops of a uint8 batch ``[B, C, H, W]``.

    Drawing from ``generator`` (not the global RNG) makes the augmentation part of the resumable
    training state. With ``rows = (lo, hi, total)``, ``images`` are rows ``lo..hi-1`` of a batch of
    ``total``: the draws are made for the whole batch and these rows get theirs, so data-parallel
    ranks that each read their own rows augment them as one process would the whole batch.
    Returns a new tensor of the same shape and dtype.
    """
    b, _, h, w = images.shape
    lo, hi, total = rows if rows is not None else (0, b, b)
    if hi - lo != b:
        raise ValueError(f"rows {lo}..{hi} do not match a batch of {b} images")
    out = images
    if crop_pad:
        padded = torch.nn.functional.pad(out.float(), (crop_pad,) * 4, mode="reflect").to(images.dtype)
        offs = torch.randint(0, 2 * crop_pad + 1, (total, 2), generator=generator)[lo:hi]
        row_idx = offs[:, 0, None] + torch.arange(h)         # [B, H]
        col_idx = offs[:, 1, None] + torch.arange(w)         # [B, W]
        idx_b = torch.arange(b)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[idx_b, row_idx[:, :, None], col_idx[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if flip:
        mask = torch.rand(total, generator=generator)[lo:hi] < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out
