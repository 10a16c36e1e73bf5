"""Input checks shared by the VAE-family models."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError


def check_images(x: Tensor, channels: int, size: int, section: str) -> None:
    """Raise :class:`~flowvae.errors.DataError` unless ``x`` is a non-empty uint8 ``[B, channels,
    size, size]``; ``section`` names the config section to fix in the message."""
    want = (channels, size, size)
    if not isinstance(x, Tensor):
        raise DataError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise DataError(f"images of shape {list(x.shape)} do not fit this model, which takes "
                        f"[B, {want[0]}, {want[1]}, {want[2]}]; check {section}.in_channels / {section}.image_size")
    if x.dtype != torch.uint8:
        raise DataError(f"images must be uint8 with values 0..255, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise DataError("got an empty batch of images")
