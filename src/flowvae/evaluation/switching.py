"""The switch operation on real test images (paper §3.2, Figure 1), for kinds with a global and a
local code (the ``global_local`` capability): which pairs, the decoded 2x2 grids, and whether the
real images came back exactly."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from ..data import ImageData
from ..errors import ConfigError, DataError
from ..models.base import GenerativeModel, check_count
from ._protocols import GlobalLocal
from .evaluate import quantised

__all__ = ["pick_pairs", "switch_pairs"]


def pick_pairs(data: ImageData, pairs: int, same_class: bool = False, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices of ``pairs`` seeded random pairs of distinct images of ``data``.

    Without ``same_class`` the ``2 * pairs`` images are all distinct (one random permutation). With
    ``same_class`` the first images are distinct and each second image is drawn from the other
    images of the first one's class; only classes with at least two images can contribute.

    Returns:
        ``(first, second)``, int64 ``[pairs]`` each.

    Raises:
        ConfigError: ``pairs`` not a positive integer, or more pairs than the data allows (the
            message says how many it allows).
        DataError: ``same_class`` on data without labels.
    """
    check_count("pairs", pairs)
    n = len(data)
    g = torch.Generator().manual_seed(seed)
    if not same_class:
        if 2 * pairs > n:
            raise ConfigError(f"pairs={pairs} needs {2 * pairs} test images but {data.name} has {n}; "
                              f"at most {n // 2} pairs")
        perm = torch.randperm(n, generator=g)
        return perm[:pairs], perm[pairs: 2 * pairs]
    if data.labels is None:
        raise DataError(f"{data.name} has no labels, so --same-class cannot pair images")
    labels = data.labels
    counts = torch.bincount(labels - labels.min())
    # An image alone in its class has no partner; leave such images out of the first draw.
    eligible = torch.nonzero(counts[labels - labels.min()] >= 2).flatten()
    if pairs > len(eligible):
        raise ConfigError(f"pairs={pairs} with --same-class needs {pairs} test images with a partner of the same "
                          f"class, but {data.name} has {len(eligible)}")
    first = eligible[torch.randperm(len(eligible), generator=g)[:pairs]]
    second = []
    for i in first.tolist():
        same = torch.nonzero(labels == labels[i]).flatten()
        same = same[same != i]
        second.append(int(same[torch.randint(len(same), (1,), generator=g)]))
    return first, torch.tensor(second, dtype=torch.int64)


@torch.no_grad()
def switch_pairs(model: GenerativeModel, test_data: ImageData, pairs: int, same_class: bool = False,
                 seed: int = 0) -> tuple[Tensor, dict[str, Any]]:
    """Swap the global codes of ``pairs`` pairs of test images (:func:`pick_pairs`).

    Returns:
        ``(grid, info)``: ``grid`` uint8 ``[pairs, 4, C, H, W]`` on the CPU, the decodes of
        ``(v1,z1) (v1,z2) (v2,z2) (v2,z1)`` per pair; ``info`` has ``pairs``, ``same_class``,
        ``diagonal_exact`` (cells 0 and 2 equal the real images, as quantised to the model's bits)
        and the test indices ``first``, ``second`` (lists).

    Raises:
        ConfigError: a model without the ``global_local`` capability, or too many pairs.
        DataError: ``same_class`` on data without labels.
    """
    model.require("global_local", "flowvae switch")
    first, second = pick_pairs(test_data, pairs, same_class, seed)
    x1, x2 = (test_data.images[i].to(model.device) for i in (first, second))
    grid = cast(GlobalLocal, model).switch(x1, x2).cpu()
    exact = bool(torch.equal(grid[:, 0], quantised(model, x1).cpu())
                 and torch.equal(grid[:, 2], quantised(model, x2).cpu()))
    return grid, {"pairs": pairs, "same_class": same_class, "diagonal_exact": exact,
                  "first": first.tolist(), "second": second.tolist()}
