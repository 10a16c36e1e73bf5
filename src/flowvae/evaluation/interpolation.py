"""Two-dimensional interpolation between two real test images (paper eq. 8), for kinds with a global
and a local code (the ``global_local`` capability)."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from ..data import ImageData
from ..errors import ConfigError
from ..models.base import GenerativeModel, check_count
from ._protocols import GlobalLocal

__all__ = ["weights", "check_index", "interpolation_grid"]


def weights(n: int) -> list[float]:
    """``n`` evenly spaced weights from 0 to 1 (``[0.0]`` for ``n = 1``)."""
    check_count("number of weights", n)
    return [i / (n - 1) for i in range(n)] if n > 1 else [0.0]


def check_index(data: ImageData, i: int, what: str = "index") -> int:
    """``i`` if it indexes an image of ``data``; else a one-line :class:`~flowvae.errors.ConfigError`."""
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(data):
        raise ConfigError(f"{what} {i} is outside the test set {data.name} (0..{len(data) - 1})")
    return i


@torch.no_grad()
def interpolation_grid(model: GenerativeModel, test_data: ImageData, rows: int = 5, cols: int = 11,
                       spherical: bool = False, index: tuple[int, int] | None = None,
                       seed: int = 0) -> tuple[Tensor, dict[str, Any]]:
    """Interpolate the global code over ``rows`` values of alpha and the local code over ``cols``
    values of beta, both from 0 to 1, between two test images.

    Args:
        model: a model with the ``global_local`` capability.
        test_data: the test images.
        rows, cols: numbers of weights (>= 1).
        spherical: spherical instead of linear interpolation of each code.
        index: test indices ``(i, j)`` of the two images; default a seeded random pair.
        seed: seed of the random pair.

    Returns:
        ``(grid, info)``: ``grid`` uint8 ``[rows, cols, C, H, W]`` on the CPU; ``info`` has
        ``images`` ``[i, j]``, ``alphas``, ``betas``, ``spherical`` and ``corners_exact`` (cell
        ``(0, 0)`` is image i and, when both weights reach 1, cell ``(-1, -1)`` is image j, as
        quantised to the model's bits).

    Raises:
        ConfigError: a model without ``global_local``, or an index outside the test set.
    """
    model.require("global_local", "flowvae interpolate")
    if index is None:
        if len(test_data) < 2:
            raise ConfigError(f"interpolation needs two test images, {test_data.name} has {len(test_data)}")
        i, j = torch.randperm(len(test_data), generator=torch.Generator().manual_seed(seed))[:2].tolist()
    else:
        i, j = (check_index(test_data, k) for k in index)
    alphas, betas = weights(rows), weights(cols)
    x1, x2 = (test_data.images[k:k + 1].to(model.device) for k in (i, j))
    grid = cast(GlobalLocal, model).interpolate(x1, x2, alphas, betas, spherical=spherical).cpu()
    q1, q2 = model.quantised(x1).cpu(), model.quantised(x2).cpu()
    # Corners that use the weights 0 (or 1) for both codes must be the real images.
    exact = bool(torch.equal(grid[0, 0], q1[0])
                 and (alphas[-1] != 1.0 or betas[-1] != 1.0 or torch.equal(grid[-1, -1], q2[0])))
    return grid, {"images": [i, j], "alphas": alphas, "betas": betas, "spherical": spherical, "corners_exact": exact}
