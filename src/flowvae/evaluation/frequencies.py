"""A label-free score of what the switch moves (paper §3.2, Figure 1 and Appendix E): the global
code z is meant to carry the global style of an image (colour, brightness, lighting, background)
and the local code v its local content (edges, shape), "like style and content in neural style
transfer". A class probe measures this only where the class is global; this score needs no labels.

For pairs of test images (1, 2) and the switched decodes of (v1, z2) and of (v2, z1), each decode
is compared with the image that gave it z and the image that gave it v, on two parts of the image:

* the **low frequencies**: the image average-pooled to ``4 x 4`` (:data:`LOW_PASS_SIZE`), and its
  mean colour (one value per channel);
* the **high frequencies**: the image minus its low-pass (the pooled image upsampled back by
  repetition), the edges and texture the pooling removed.

``low_follows_z`` is the fraction of decodes whose low frequencies are closer (Euclidean distance)
to the z image's than to the v image's, ``colour_follows_z`` the same for the mean colour, and
``high_follows_v`` the fraction whose high frequencies are closer to the v image's. A model whose
z is a global style code and v its local content has all three near 1; a collapsed z (the decoder
ignores it) has the decode equal to the v image, so ``high_follows_v`` is 1 and the other two are 0.
Ties (equal distances) count as not closer.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import ImageData
from ..models.base import GenerativeModel, check_count
from ._protocols import GlobalLocal
from .switching import METRIC_PAIRS, pick_pairs

__all__ = ["LOW_PASS_SIZE", "frequency_parts", "switch_frequencies"]

LOW_PASS_SIZE = 4
"""Side of the low-pass image (``4 x 4``, average pooling) of :func:`switch_frequencies`."""


def frequency_parts(images: Tensor, size: int = LOW_PASS_SIZE) -> tuple[Tensor, Tensor, Tensor]:
    """The low-pass, mean colour and high-pass parts of images (module docstring).

    Args:
        images: ``[N, C, H, W]``, any real dtype (uint8 pixels are taken as they are).
        size: side of the low-pass image (at most ``H`` and ``W``).

    Returns:
        ``(low, colour, high)``: float64 ``[N, C * size * size]``, ``[N, C]`` and ``[N, C * H * W]``,
        in the pixel units of ``images``.
    """
    x = images.double()
    size = min(size, x.shape[-2], x.shape[-1])
    low = F.adaptive_avg_pool2d(x, size)
    high = x - F.interpolate(low, size=x.shape[-2:], mode="nearest")
    return low.flatten(1), x.mean(dim=(2, 3)), high.flatten(1)


def _closer(d: Tensor, to: Tensor, other: Tensor) -> Tensor:
    """Per row: whether ``d`` is strictly closer to ``to`` than to ``other`` (Euclidean)."""
    return (d - to).norm(dim=1) < (d - other).norm(dim=1)


@torch.no_grad()
def switch_frequencies(model: GenerativeModel, test_data: ImageData, pairs: int | None = None, seed: int = 0,
                       batch_size: int = 64) -> dict[str, Any]:
    """Whether the switched decodes take their low frequencies from z and their high frequencies
    from v (module docstring), over both decodes of each pair.

    Args:
        model: a model with the ``global_local`` capability.
        test_data: uint8 images ``[N, C, H, W]`` of the model's shape; labels are not used.
        pairs: pairs of distinct test images (:func:`~flowvae.evaluation.switching.pick_pairs`);
            ``None``: :data:`~flowvae.evaluation.switching.METRIC_PAIRS`, or ``N // 2`` if fewer.
        seed: seed of the pairs.
        batch_size: pairs decoded per call of ``model.switch_samples``.

    Returns:
        ``{"dataset", "pairs", "seed", "low_pass", "low_follows_z", "colour_follows_z",
        "high_follows_v", "saturated"}``: fractions in [0, 1] of the ``2 * pairs`` decodes
        (``saturated``: those whose inverse flow saturated, ``None`` for kinds whose decodes are
        not a flow's inverse); ``low_pass`` is the side of the low-pass image.

    Raises:
        ConfigError: a model without the ``global_local`` capability, ``pairs`` or ``batch_size``
            not a positive integer, or more pairs than the test set allows.
    """
    model.require("global_local", "the switch frequency score")
    check_count("batch_size", batch_size)
    if pairs is None:
        pairs = max(1, min(METRIC_PAIRS, len(test_data) // 2))
    first, second = pick_pairs(test_data, pairs, seed=seed)
    m = cast(GlobalLocal, model)
    low_z, colour_z, high_v, saturated = [], [], [], []
    for i in range(0, pairs, batch_size):
        x1 = test_data.images[first[i: i + batch_size]].to(model.device)
        x2 = test_data.images[second[i: i + batch_size]].to(model.device)
        out = m.switch_samples(x1, x2)
        grid = out.images.cpu()  # per pair: (v1,z1) (v1,z2) (v2,z2) (v2,z1)
        # the real images on the decodes' bins, split once for both switched cells
        parts1, parts2 = (frequency_parts(model.quantised(x).cpu()) for x in (x1, x2))
        # (decode, image that gave z, image that gave v), for both switched cells
        for cell, (zl, zc, zh), (vl, vc, vh) in ((1, parts2, parts1), (3, parts1, parts2)):
            dl, dc, dh = frequency_parts(grid[:, cell])
            low_z.append(_closer(dl, zl, vl))
            colour_z.append(_closer(dc, zc, vc))
            high_v.append(_closer(dh, vh, zh))
            if out.saturated is not None:
                saturated.append(out.saturated[:, cell])

    def fraction(parts: list[Tensor]) -> float:
        return float(torch.cat(parts).double().mean())

    return {"dataset": test_data.name, "pairs": pairs, "seed": seed, "low_pass": LOW_PASS_SIZE,
            "low_follows_z": fraction(low_z), "colour_follows_z": fraction(colour_z),
            "high_follows_v": fraction(high_v), "saturated": fraction(saturated) if saturated else None}
