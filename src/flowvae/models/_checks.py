"""Input checks shared by the VAE-family models."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from ..errors import ConfigError, DataError


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
