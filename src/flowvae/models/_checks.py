"""Input checks shared by the VAE-family models."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, DataError


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


def check_traverse_args(x_single: Tensor, dim_values, dims, d_z: int,
                        check_input: Callable[[Tensor], None]) -> tuple[Tensor, list[float], list[int]]:
    """Validate the arguments of a latent traversal; returns ``(x [1, C, H, W], values, dims)``.

    Raises:
        DataError: not one image of the model's shape (``check_input`` decides the shape).
        ConfigError: empty or non-finite ``dim_values``; ``dims`` not a non-empty list of indices in ``0..d_z-1``.
    """
    if isinstance(x_single, Tensor) and x_single.dim() == 3:
        x_single = x_single.unsqueeze(0)
    check_input(x_single)
    if x_single.shape[0] != 1:
        raise DataError(f"traverse takes one image, got a batch of {x_single.shape[0]}")
    vals = list(dim_values) if isinstance(dim_values, (list, tuple)) else None
    if not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in vals):
        raise ConfigError(f"dim_values must be a non-empty list of finite numbers, got {dim_values!r}")
    dims = list(range(d_z)) if dims is None else dims
    if not isinstance(dims, (list, tuple)) or not dims or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < d_z for d in dims):
        raise ConfigError(f"dims must be a non-empty list of latent indices in 0..{d_z - 1}, got {dims!r}")
    return x_single, vals, list(dims)
