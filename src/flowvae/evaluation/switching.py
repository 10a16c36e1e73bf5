"""The switch operation on real test images (paper §3.2, Figure 1), for kinds with a global and a
local code (the ``global_local`` capability): which pairs, the decoded 2x2 grids, whether the real
images came back exactly, and a number for what the switch does (:func:`switch_metric`: whose
class the decode of (v1, z2) has, image 2's, which gave z, or image 1's, which gave v)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import ImageData
from ..errors import ConfigError, DataError
from ..models.base import GenerativeModel, check_count
from ._protocols import GlobalLocal
from .probe import fit_linear

__all__ = ["MAX_CLASSIFIER_FEATURES", "classifier_pool", "pick_pairs", "pick_different_class_pairs",
           "different_class_pair_count", "switch_pairs", "switch_metric", "METRIC_PAIRS",
           "pixel_classifier"]

METRIC_PAIRS = 500
"""Default number of pairs of :func:`switch_metric`: a fraction from 500 pairs has a standard
error of at most 2.2 percentage points."""


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
    exact = bool(torch.equal(grid[:, 0], model.quantised(x1).cpu())
                 and torch.equal(grid[:, 2], model.quantised(x2).cpu()))
    return grid, {"pairs": pairs, "same_class": same_class, "diagonal_exact": exact,
                  "first": first.tolist(), "second": second.tolist()}


def different_class_pair_count(data: ImageData) -> int:
    """The number of ordered pairs ``(i, j)`` of images of ``data`` of different classes (0
    without labels)."""
    if data.labels is None:
        return 0
    counts = torch.unique(data.labels, return_counts=True)[1]
    return int(counts.sum()) ** 2 - int((counts * counts).sum())


def pick_different_class_pairs(data: ImageData, pairs: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices of ``pairs`` distinct seeded pairs ``(i, j)`` of images of ``data`` of different classes.

    Balanced over the ordered class pairs ``(a, b)``, ``a != b``: each gets ``pairs / (K (K - 1))``
    pairs, rounded up or down at random, except a class pair with fewer possible image pairs
    (``n_a * n_b``), which gets all of them while the others share the rest. Within ``(a, b)`` the
    ``k``-th pair is ``(A[k mod n_a], B[(k mod n_a + k // n_a) mod n_b])`` for seeded permutations
    ``A``, ``B`` of the two classes' images: no pair repeats, and every image of a class is used
    before any is used twice as the first image. An image may appear in several pairs. The pairs
    are returned in a seeded random order.

    Returns:
        ``(first, second)``, int64 ``[pairs]`` each, ``labels[first] != labels[second]``.

    Raises:
        ConfigError: ``pairs`` not a positive integer, or more than the distinct ordered pairs of
            different classes (the message says how many there are).
        DataError: data without labels, or with one class only.
    """
    if data.labels is None:
        raise DataError(f"{data.name} has no labels, so the switch metric cannot pair images of different classes")
    labels = data.labels
    classes = torch.unique(labels)
    if len(classes) < 2:
        raise DataError(f"{data.name} holds one class only (label {int(classes[0])}); the switch metric needs two")
    check_count("pairs", pairs)  # after the classes, so one class is reported as such, not as 0 pairs
    g = torch.Generator().manual_seed(seed)
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    cells = [(a, b) for a in range(len(classes)) for b in range(len(classes)) if a != b]
    caps = [len(members[a]) * len(members[b]) for a, b in cells]
    if pairs > sum(caps):
        raise ConfigError(f"pairs={pairs} but {data.name} has only {sum(caps)} ordered pairs of images of "
                          f"different classes; ask for at most {sum(caps)}")
    # Water-filling: small class pairs first, each taking at most an equal share of what is left, so
    # the rounding remainder falls on class pairs chosen at random (stable sort of a random order).
    order = sorted(torch.randperm(len(cells), generator=g).tolist(), key=lambda c: caps[c])
    left, first, second = pairs, [], []
    for rank, c in enumerate(order):
        k = min(caps[c], -(-left // (len(cells) - rank)))
        left -= k
        if k == 0:
            continue
        ma, mb = (members[i][torch.randperm(len(members[i]), generator=g)] for i in cells[c])
        t = torch.arange(k)
        r, q = t % len(ma), t // len(ma)
        first.append(ma[r])
        second.append(mb[(r + q) % len(mb)])
    perm = torch.randperm(pairs, generator=g)
    return torch.cat(first)[perm], torch.cat(second)[perm]


def _fractions(pred: np.ndarray, z_label: np.ndarray, v_label: np.ndarray) -> dict[str, float]:
    """Fractions of predictions equal to the class of the image that gave z, of the one that gave
    v, and of neither (the two classes differ, so the three are exclusive and sum to 1)."""
    n = len(pred)
    fz, fv = int((pred == z_label).sum()), int((pred == v_label).sum())
    return {"follow_z": fz / n, "follow_v": fv / n, "neither": (n - fz - fv) / n}


MAX_CLASSIFIER_FEATURES = 1024
"""Most features the switch metric's pixel classifier takes (larger images are average-pooled)."""


def classifier_pool(shape: tuple[int, ...]) -> int:
    """The smallest integer pooling factor ``s`` with ``C * ceil(H/s) * ceil(W/s) <=``
    :data:`MAX_CLASSIFIER_FEATURES` for images of ``shape = (C, H, W)`` (1: no pooling)."""
    c, h, w = shape
    s = 1
    while c * -(-h // s) * -(-w // s) > MAX_CLASSIFIER_FEATURES and s < max(h, w):
        s += 1
    return s



def pixel_classifier(model: GenerativeModel, train_data: ImageData, train_images: int = 5000,
                     C: float | None = None, seed: int = 0,
                     desc: str = "pixel classifier") -> tuple[Any, dict[str, Any], Callable[[Tensor], np.ndarray]]:
    """A linear classifier of the pixels of labelled images as ``model`` reproduces them, to judge the
    class of decoded images (the switch metric, :func:`flowvae.evaluation.manipulation.class_curves`).

    Multinomial logistic regression on standardised pixels (:func:`~flowvae.evaluation.probe.fit_linear`,
    ``protocol="logistic"``, ``C`` cross-validated unless given), trained on at most ``train_images``
    training images (a seeded subset) quantised to the model's bits; images of more than
    :data:`MAX_CLASSIFIER_FEATURES` values are average-pooled first (:func:`classifier_pool`).

    Returns:
        ``(classifier, info, features)``: ``classifier.predict`` takes ``features(images)``, where
        ``images`` are uint8 ``[N, C, H, W]`` already on the model's bins (decodes; pass real images
        through ``model.quantised`` first); ``info`` is :func:`fit_linear`'s plus ``"pool"``.

    Raises:
        DataError: data without labels, or a class too small for the cross-validation.
    """
    if train_data.labels is None:
        raise DataError(f"{train_data.name} has no labels: a pixel classifier needs class labels")
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(train_data), generator=g)[:train_images]
    train_x, train_y = train_data.images[keep], train_data.labels[keep]
    pool = classifier_pool(tuple(train_data.images.shape[1:]))

    def features(decoded: Tensor) -> np.ndarray:
        f = decoded.double()
        if pool > 1:
            f = F.avg_pool2d(f, pool, ceil_mode=True)
        return f.flatten(1).numpy()

    try:
        clf, info = fit_linear(features(model.quantised(train_x)), train_y.numpy(), C=C, protocol="logistic",
                               seed=seed, desc=desc)
    except ValueError as e:
        if isinstance(e, (ConfigError, DataError)):
            raise
        raise DataError(f"{desc}: {str(e).splitlines()[0]}") from None
    return clf, {**info, "pool": pool}, features


@torch.no_grad()
def switch_metric(model: GenerativeModel, train_data: ImageData, test_data: ImageData, pairs: int | None = None,
                  seed: int = 0, train_images: int = 5000, C: float | None = None,
                  batch_size: int = 64) -> dict[str, Any]:
    """Whose class survives the switch: a linear classifier of pixels applied to switched decodes.

    A linear classifier (:func:`flowvae.evaluation.probe.fit_linear` with ``protocol="logistic"``:
    multinomial logistic regression on standardised pixels, ``C`` cross-validated over the probe's
    grid unless given) is trained on the pixels of at most ``train_images`` training images (a seeded
    subset), as the model reproduces them (:func:`~flowvae.evaluation.evaluate.quantised`, so its
    bits match the decodes'). Images of more than :data:`MAX_CLASSIFIER_FEATURES` values are first
    average-pooled by the smallest integer factor that brings them within it (64x64 dSprites: 2x2,
    1,024 features; 32x32 RGB: 2x2, 768), the same for real images and decodes: on 4,096 pixels the
    fit took minutes. For
    ``pairs`` pairs of test images of different classes (:func:`pick_different_class_pairs`) it
    classifies the decode of (v1, z2): ``follow_z`` is the fraction predicted as image 2's class
    (the class went with the global code), ``follow_v`` as image 1's (it stayed with the local
    code), ``neither`` the rest. ``swapped`` is the same for the decode of (v2, z1) (z from image
    1). The classifier's accuracy on the real test images (quantised likewise) is the ceiling of
    ``follow_z`` for a decoder that switched the class perfectly. ``saturated`` is the fraction of
    those decodes whose inverse flow saturated (``model.switch_samples``, :class:`~flowvae.models.base.Samples`):
    a global code the flow was never trained with beside that v can drive some coupling's scale
    towards 0, and the decode becomes clamped noise, which the classifier mostly counts as
    ``neither``. The pairs are not those of :func:`switch_pairs`' grid.

    Args:
        model: a model with the ``global_local`` capability.
        train_data, test_data: labelled uint8 images ``[N, C, H, W]`` of the model's shape.
        pairs: pairs of test images to switch; ``None``: :data:`METRIC_PAIRS`, or every distinct
            pair of different classes when the test set has fewer.
        seed: seed of the training subset, the pairs, the folds and the SVM.
        train_images: most training images the classifier sees (the probe's default, 5000).
        C: the SVM's regularisation; ``None`` cross-validates it like the probe.
        batch_size: pairs decoded per call of ``model.switch``.

    Returns:
        ``{"dataset", "pairs", "classes" (test classes), "seed", "follow_z", "follow_v", "neither",
        "saturated", "swapped": {"follow_z", "follow_v", "neither", "saturated"}, "test_accuracy"
        (fraction of real test images classified correctly), "classifier": {"features": "pixels",
        "C", "cv_accuracy", "n_train", "n_test", "dim", "protocol"}}``; fractions in [0, 1]
        (``saturated`` is ``None`` for kinds whose decodes are not a flow's inverse).

    Raises:
        ConfigError: a model without the ``global_local`` capability, ``pairs`` / ``train_images`` /
            ``batch_size`` not positive integers, or more pairs than the test set allows.
        DataError: data without labels, fewer than two classes, or a class too small for the
            classifier's 3-fold cross-validation.
    """
    model.require("global_local", "the switch metric")
    for name, n in (("train_images", train_images), ("batch_size", batch_size)):
        check_count(name, n)
    for d in (train_data, test_data):
        if d.labels is None:
            raise DataError(f"{d.name} has no labels: the switch metric needs class labels")
    if pairs is None:
        pairs = min(METRIC_PAIRS, different_class_pair_count(test_data))
    first, second = pick_different_class_pairs(test_data, pairs, seed)
    test_y = cast(Tensor, test_data.labels)
    clf, info, features = pixel_classifier(model, train_data, train_images, C, seed, "switch metric classifier")
    pool = info["pool"]

    def pixels(x: Tensor) -> np.ndarray:
        return features(model.quantised(x))

    test_acc = float((clf.predict(pixels(test_data.images)) == test_y.numpy()).mean())
    m = cast(GlobalLocal, model)
    v1z2, v2z1, sat12, sat21 = [], [], [], []
    for i in range(0, pairs, batch_size):
        a, b = first[i: i + batch_size], second[i: i + batch_size]
        out = m.switch_samples(test_data.images[a].to(model.device), test_data.images[b].to(model.device))
        grid = out.images.cpu()
        v1z2.append(grid[:, 1])
        v2z1.append(grid[:, 3])
        if out.saturated is not None:  # only a flow's inverse can saturate
            sat12.append(out.saturated[:, 1])
            sat21.append(out.saturated[:, 3])
    y1, y2 = test_y[first].numpy(), test_y[second].numpy()
    # The decodes are already on the model's bins, so no further quantisation.
    p12 = clf.predict(features(torch.cat(v1z2)))
    p21 = clf.predict(features(torch.cat(v2z1)))
    s12, s21 = (int(torch.cat(s).sum()) / pairs if s else None for s in (sat12, sat21))
    return {"dataset": test_data.name, "pairs": pairs, "classes": int(len(torch.unique(test_y))), "seed": seed,
            **_fractions(p12, y2, y1), "saturated": s12, "swapped": {**_fractions(p21, y1, y2), "saturated": s21},
            "test_accuracy": test_acc,
            "classifier": {"features": "pixels", "pool": pool, "C": info["C"], "cv_accuracy": info["cv_accuracy"],
                           "n_train": info["n_train"], "n_test": len(test_data), "dim": info["dim"],
                           "protocol": info["protocol"]}}
