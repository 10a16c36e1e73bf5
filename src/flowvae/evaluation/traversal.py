"""Latent traversals of test images, for kinds with a per-image vector latent (the
``vector_latent`` capability): one latent dimension set to evenly spaced values at a time."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from ..data import ImageData
from ..errors import ConfigError
from ..models.base import GenerativeModel
from ._protocols import VectorLatent
from .interpolation import check_index

__all__ = ["traversal_values", "traversal_grids"]


def traversal_values(span: float, steps: int) -> list[float]:
    """``steps`` evenly spaced values from ``-span`` to ``span``.

    Raises:
        ConfigError: ``steps`` below 2 or ``span`` not a finite number > 0.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps must be an integer >= 2, got {steps}")
    if not math.isfinite(span) or span <= 0:
        raise ConfigError(f"span must be a finite number > 0, got {span}")
    return [-span + 2 * span * i / (steps - 1) for i in range(steps)]


@torch.no_grad()
def traversal_grids(model: GenerativeModel, test_data: ImageData, indices: list[int], values: list[float],
                    dims: list[int] | None = None, local: str = "keep") -> tuple[list[Tensor], dict[str, Any]]:
    """One traversal grid per test image in ``indices``.

    Args:
        model: a model with the ``vector_latent`` capability.
        test_data: the test images.
        indices: test-image indices, one grid each.
        values: values given to the traversed dimension (:func:`traversal_values`).
        dims: latent dimensions, one row each; default all ``range(model.latent_dim)``.
        local: for kinds with a local code too (``global_local``): decode with the image's own
            local code (``"keep"``) or with 0 (``"zero"``); ignored by the others.

    Returns:
        ``(grids, info)``: ``grids[a]`` uint8 ``[len(dims), len(values), C, H, W]`` on the CPU for
        ``indices[a]``; ``info`` has ``index``, ``dims``, ``values`` and ``local`` (``None`` for kinds
        without a local code).

    Raises:
        ConfigError: a model without ``vector_latent``, an index outside the test set, bad dims.
    """
    model.require("vector_latent", "flowvae traverse")
    has_local = model.capabilities.global_local
    m = cast(VectorLatent, model)
    for i in indices:
        check_index(test_data, i)
    grids = []
    for i in indices:
        x = test_data.images[i:i + 1].to(model.device)
        grid = m.traverse(x, values, dims, local=local) if has_local else m.traverse(x, values, dims)
        grids.append(grid.cpu())
    info = {"index": list(indices), "dims": list(dims) if dims else list(range(model.latent_dim)),
            "values": list(values), "local": local if has_local else None}
    return grids, info
