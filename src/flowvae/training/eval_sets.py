"""The images the periodic evaluation and the linear probes of training use: seeded,
class-stratified subsets, fixed for the whole run (so points along the curves are comparable)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..data import subset_indices
from ..data.streaming import dataset_labels, head_images

__all__ = ["ProbeSets", "evaluation_images", "probe_sets"]

log = logging.getLogger("flowvae.train")

ProbeSets = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(train images, train labels, test images, test labels)`` of the linear probes: uint8 ``[N, C, H, W]``
and int64 ``[N]``."""


def evaluation_images(test_data: Any, n: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(index, images)``: ``n`` test images (``None``: all), uint8 ``[n, C, H, W]``, and their
    indices in ``test_data`` (``None`` when all are taken). A seeded, class-stratified subset: the
    first ``n`` of a class-sorted test folder would be one class."""
    n_eval = len(test_data) if n is None else min(n, len(test_data))
    index = None if n_eval == len(test_data) else subset_indices(len(test_data), n_eval, dataset_labels(test_data))
    return index, head_images(test_data, None, index)


def probe_sets(train_data: Any, test_data: Any, eval_index: torch.Tensor | None, eval_images: torch.Tensor,
               n_train: int) -> ProbeSets | None:
    """The linear probes' images (``train.probe_images``): a seeded, class-stratified subset of
    ``n_train`` training images and the periodic evaluation's test images (``eval_images``, the items
    ``eval_index`` of ``test_data``, or all of them when it is None), with their labels.

    ``None``, with a warning, for data without class labels or with one class only: the presets turn
    the probes on, and a folder of unlabelled images must still train under them.
    """
    train_labels, test_labels = dataset_labels(train_data), dataset_labels(test_data)
    for name, d, labels in (("training", train_data, train_labels), ("test", test_data, test_labels)):
        if labels is None or len(torch.unique(labels)) < 2:
            log.warning("train.probe_images: the %s data (%s) has %s, so no linear probes are logged; "
                        "set train.probe_images=0 to silence this", name, getattr(d, "name", type(d).__name__),
                        "no class labels" if labels is None else "one class only")
            return None
    assert train_labels is not None and test_labels is not None  # narrowing only: checked above
    index = subset_indices(len(train_data), min(n_train, len(train_data)), train_labels)
    test_y = test_labels if eval_index is None else test_labels[eval_index]
    return head_images(train_data, None, index), train_labels[index], eval_images, test_y
