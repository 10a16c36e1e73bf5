"""Input checks and helpers shared by the VAE-family models."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
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


def traverse_mean_code(encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor],
                       check_input: Callable[[Tensor], None], x_single: Tensor, dim_values: Any,
                       dims: Any, d: int) -> Tensor:
    """Traversal of a VAE's latent: from the posterior mean ``encode(x) [1, d]`` of one image, set one
    dimension at a time to each of ``dim_values`` and ``decode`` every code.

    Returns:
        uint8 ``[len(dims), len(dim_values), C, H, W]``: entry ``[a, b]`` decodes the mean code with
        ``z[dims[a]] = dim_values[b]``.

    Raises:
        DataError, ConfigError: as :func:`check_traverse_args`.
    """
    x_single, vals, dims = check_traverse_args(x_single, dim_values, dims, d, check_input)
    mu = encode(x_single)[0]
    z = mu.repeat(len(dims), len(vals), 1)                                     # [len(dims), len(vals), d]
    v = torch.tensor(vals, dtype=mu.dtype, device=mu.device)
    for a, dim in enumerate(dims):
        z[a, :, dim] = v
    img = decode(z.view(-1, d))
    return img.view(len(dims), len(vals), *img.shape[1:])
