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


MAX_EDIT_STRENGTHS = 64
"""Most edit strengths (``alphas``) one call of ``manipulate`` takes: one decode per image and strength."""


def check_manipulation_args(x: Any, direction: Any, alphas: Any, d: int,
                            check_input: Callable[[Tensor], None]) -> tuple[Tensor, Tensor, list[float]]:
    """Validate the arguments of ``manipulate``; returns ``(x [B, C, H, W], direction [d] float, alphas)``.

    Raises:
        DataError: images not of the model's shape (``check_input`` decides; one image ``[C, H, W]``
            is taken as a batch of one), or a direction that is not a finite float vector ``[d]``.
        ConfigError: ``alphas`` not a non-empty list of at most :data:`MAX_EDIT_STRENGTHS` finite numbers.
    """
    if isinstance(x, Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    check_input(x)
    if not isinstance(direction, Tensor) or not direction.is_floating_point() or tuple(direction.shape) != (d,):
        what = f"{direction.dtype} {list(direction.shape)}" if isinstance(direction, Tensor) else type(direction).__name__
        raise DataError(f"direction must be a float tensor [{d}] (one vector of the latent space), got {what}")
    if not bool(torch.isfinite(direction).all()):
        raise DataError("direction contains NaN or infinite values")
    vals = list(alphas) if isinstance(alphas, (list, tuple)) else None
    if not vals or len(vals) > MAX_EDIT_STRENGTHS or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in vals):
        raise ConfigError(f"alphas must be a non-empty list of at most {MAX_EDIT_STRENGTHS} finite numbers, "
                          f"got {alphas!r}")
    return x, direction, [float(a) for a in vals]


def edited_codes(z: Tensor, direction: Tensor, alphas: list[float]) -> Tensor:
    """``z + alpha * direction`` for every code and strength: ``[B * len(alphas), d]``, image-major
    (the strengths of image 0 first), from codes ``z [B, d]``."""
    a = torch.tensor(alphas, dtype=z.dtype, device=z.device)
    return (z[:, None, :] + a[None, :, None] * direction.to(z.device, z.dtype)).flatten(0, 1)


def manipulate_mean_code(encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor],
                         check_input: Callable[[Tensor], None], x: Any, direction: Any, alphas: Any,
                         d: int) -> Tensor:
    """Edits of a VAE's images along a direction of its latent: ``decode(mu(x) + alpha * direction)``.

    Returns:
        uint8 ``[B, len(alphas), C, H, W]``; strength 0 is the reconstruction ``decode(mu(x))``.

    Raises:
        DataError, ConfigError: as :func:`check_manipulation_args`.
    """
    x, direction, vals = check_manipulation_args(x, direction, alphas, d, check_input)
    img = decode(edited_codes(encode(x), direction, vals))
    return img.view(x.shape[0], len(vals), *img.shape[1:])


class MeanCodeEdits:
    """``manipulate`` for the kinds whose vector latent is decoded alone (the VAE, the beta-TCVAE):
    a mixin over their ``encode`` (posterior mean), ``decode`` (mean image), ``check_input`` and
    ``latent_dim``."""

    encode: Callable[[Tensor], Tensor]
    decode: Callable[[Tensor], Tensor]
    check_input: Callable[[Tensor], None]

    @property
    def latent_dim(self) -> int:
        raise NotImplementedError  # the kind's own

    @torch.no_grad()
    def manipulate(self, x: Tensor, direction: Tensor, alphas: list[float]) -> Tensor:
        """Edits along a direction of the latent (issue 31): ``decode(mu(x) + alpha * direction)``
        for each strength; with no local code, the whole image follows the edited code.

        Args:
            x: uint8 images ``[B, C, H, W]`` (or one ``[C, H, W]``).
            direction: float ``[latent_dim]`` (e.g. :func:`flowvae.evaluation.manipulation.label_directions`).
            alphas: edit strengths (multiples of ``direction``).

        Returns:
            uint8 ``[B, len(alphas), C, H, W]``; strength 0 is the reconstruction ``decode(mu(x))``.

        Raises:
            DataError: bad images or direction.
            ConfigError: bad strengths, or more decodes than fit in memory.
        """
        return manipulate_mean_code(self.encode, self.decode, self.check_input, x, direction, alphas,
                                    self.latent_dim)
