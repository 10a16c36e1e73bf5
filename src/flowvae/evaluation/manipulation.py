"""Controllable manipulation along directions of the vector latent (issue 31; the paper's closing
remark, §6: the 2-D interpolation "is an important step towards controllable image manipulation").

A direction per class comes from labelled images (:func:`label_directions`), in one of two ways:

* ``"mean-difference"``: the mean posterior mean of the class's images minus that of the other
  images, as Glow's attribute manipulation (Kingma & Dhariwal 2018, §5.3) takes its ``z_pos - z_neg``;
* ``"classifier"``: the normal of a linear classifier (multinomial logistic regression) of the
  standardised posterior means, taken back to the latent's units (``w = coef * std``), as Diffusion
  Autoencoders (Preechakul et al. 2022, §4.2) move along a linear classifier's normal in their
  normalised semantic code; scaled so that strength 1 moves by the mean
  difference's component along the normal, ``d = w (w . delta) / |w|^2``, which makes the two
  methods' strengths comparable (1: an average image of the other classes is moved as far as
  the class means are apart, along the direction).

An edit is the model's own ``manipulate(x, d, alphas)``: for the paper's model and the multi-stage
model ``f^-1(v; z + alpha d)`` with the image's exact local code v, so strength 0 is the image
itself; for the VAE and the beta-TCVAE ``decode(mu + alpha d)``, so strength 0 is a reconstruction.

:func:`class_curves` measures where the edits take the class: a pixel classifier
(:func:`flowvae.evaluation.switching.pixel_classifier`) classifies test images of other classes
edited towards each class, strength by strength.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..data import ImageData
from ..errors import ConfigError, DataError
from ..models.base import GenerativeModel, check_count
from ..runs.records import ClassCurve, DirectionSet
from ._protocols import ExactCodes, GlobalLocal, VectorLatent
from .interpolation import check_index
from .probe import fit_linear
from .representations import latent_codes
from .switching import pixel_classifier

__all__ = ["METHODS", "DIRECTION_IMAGES", "label_directions", "directions_from_codes", "find_direction",
           "manipulation_grid", "class_curves", "edit_batches"]

METHODS = ("mean-difference", "classifier")
"""How :func:`label_directions` finds a direction (module docstring)."""

DIRECTION_IMAGES = 5000
"""Labelled images the directions come from by default (a seeded subset), as the probe's training images."""

CLASSIFIER_C = 1.0
"""Regularisation of the direction classifier: fixed, since the posterior means have tens of
standardised dimensions against thousands of images (no cross-validation needed to keep it linear)."""


def _subset(data: ImageData, images: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded subset of at most ``images`` labelled images: ``(images, labels)``."""
    if data.labels is None:
        raise DataError(f"{data.name} has no labels: directions from labels need class labels")
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:images]
    return data.images[keep], data.labels[keep]


@torch.no_grad()
def label_directions(model: GenerativeModel, data: ImageData, method: str = "mean-difference",
                     images: int = DIRECTION_IMAGES, seed: int = 0) -> DirectionSet:
    """One direction of the vector latent per class of ``data`` (module docstring).

    Args:
        model: a model with the ``vector_latent`` capability.
        data: labelled uint8 images ``[N, C, H, W]`` of the model's shape (training images).
        method: ``"mean-difference"`` or ``"classifier"`` (:data:`METHODS`).
        images: at most this many images (a seeded subset).
        seed: seed of the subset and the classifier.

    Returns:
        a :class:`~flowvae.runs.records.DirectionSet` (``vectors[c]`` is class ``c``'s direction, in
        the latent's units).

    Raises:
        ConfigError: a model without ``vector_latent``, an unknown method, ``images`` not a positive integer.
        DataError: data without labels, or with one class only among the images drawn.
    """
    model.require("vector_latent", "directions of the latent")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    check_count("images", images)
    x, y = _subset(data, images, seed)
    return directions_from_codes(torch.from_numpy(latent_codes(model, x)), y, method, data.name, data.classes, seed)


def directions_from_codes(codes: Tensor, labels: Tensor, method: str = "mean-difference", dataset: str = "codes",
                          class_names: list[str] | None = None, seed: int = 0) -> DirectionSet:
    """:func:`label_directions` from codes already computed: ``codes [N, d]`` (any float vectors: posterior
    means, or flattened pixels for a pixel-space baseline) with integer ``labels [N]``.

    Raises:
        ConfigError: an unknown method.
        DataError: codes and labels of different lengths, non-finite codes, or fewer than two classes.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if codes.dim() != 2 or labels.shape != (codes.shape[0],):
        raise DataError(f"codes must be [N, d] with labels [N], got {list(codes.shape)} and {list(labels.shape)}")
    codes = codes.double()
    if not bool(torch.isfinite(codes).all()):
        raise DataError("codes contain NaN or infinite values; check the model")
    # The classes present, whatever their label numbers (a label of 10**9 must not size an array).
    present, y = torch.unique(labels, return_inverse=True)
    if len(present) < 2:
        raise DataError(f"{dataset}: directions from labels need images of at least two classes")
    counts = torch.bincount(y, minlength=len(present))
    deltas = torch.stack([codes[y == c].mean(0) - codes[y != c].mean(0) for c in range(len(present))])
    accuracy = None
    if method == "mean-difference":
        vectors = deltas
    else:
        clf, _ = fit_linear(codes.numpy(), y.numpy(), C=CLASSIFIER_C, protocol="logistic", seed=seed,
                            desc="direction classifier")
        scaler, logistic = clf[0], clf[-1]
        # The normal in the standardised codes, where the classifier works, mapped back to the latent's
        # units (a step of w in standardised units is w * std in raw ones), as DiffAE moves in its
        # normalised code. Not coef / std, the raw normal, which points along dimensions of tiny
        # variance that no image moves along.
        w = torch.from_numpy(logistic.coef_ * scaler.scale_)
        if w.shape[0] == 1:  # two classes: scikit-learn keeps one row, class 1's
            w = torch.cat([-w, w])
        vectors = w * ((w * deltas).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True).clamp_min(1e-30))
        accuracy = float((clf.predict(codes.numpy()) == y.numpy()).mean())
    names = [class_names[lab] if class_names and 0 <= lab < len(class_names) else str(lab)
             for lab in present.tolist()]
    return DirectionSet(dataset=dataset, method=method, images=int(len(y)), seed=seed,
                        latent_dim=int(codes.shape[1]), classes=names, labels=present.tolist(),
                        counts=[int(c) for c in counts], vectors=vectors.float().tolist(),
                        norms=vectors.norm(dim=1).float().tolist(), classifier_accuracy=accuracy)


def find_direction(directions: DirectionSet, attribute: str) -> tuple[int, Tensor]:
    """The position in ``directions.classes`` and the direction ``[latent_dim]`` (float32) of
    ``attribute``: a class name of ``directions.classes`` or a label number of ``directions.labels``.

    Raises:
        ConfigError: no such class (the message lists them).
    """
    names = directions.classes
    if attribute in names:
        c = names.index(attribute)
    elif attribute.lstrip("-").isdigit() and int(attribute) in directions.labels:
        c = directions.labels.index(int(attribute))
    else:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise ConfigError(f"no class {attribute!r} in {directions.dataset}: name one of {shown} "
                          f"(or a label number)")
    return c, torch.tensor(directions.vectors[c], dtype=torch.float32)


def edit_batches(model: GenerativeModel, images: Tensor, direction: Tensor, alphas: list[float],
                 batch_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """``model.manipulate`` over ``images`` in batches: uint8 ``[N, len(alphas), C, H, W]`` on the CPU,
    and which edits saturated a flow's inverse (bool ``[N, len(alphas)]``; ``None`` for other kinds)."""
    out, sat = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(model.device)
        if model.capabilities.global_local:  # a flow's inverse: also which decodes saturated
            s = cast(GlobalLocal, model).manipulate_samples(x, direction, alphas)
            out.append(s.images.cpu())
            if s.saturated is not None:
                sat.append(s.saturated.cpu())
        else:
            out.append(cast(VectorLatent, model).manipulate(x, direction, alphas).cpu())
    return torch.cat(out), (torch.cat(sat) if sat else None)


@torch.no_grad()
def manipulation_grid(model: GenerativeModel, test_data: ImageData, indices: list[int], direction: Tensor,
                      alphas: list[float]) -> tuple[Tensor, dict[str, Any]]:
    """Test images edited along ``direction``: one row per image, one column per strength.

    Returns:
        ``(grid, info)``: ``grid`` uint8 ``[len(indices), len(alphas), C, H, W]`` on the CPU; ``info``
        has ``images`` (the indices), ``keeps_local`` (edits keep the exact local code: kinds with
        ``global_local``) and ``exact_at_zero`` (the strength-0 column equals the images as
        quantised, for kinds with ``exact_codes`` and a strength 0; else ``None``).

    Raises:
        ConfigError: a model without ``vector_latent``, or bad strengths.
        DataError: no index, an index outside the test set, or a bad direction.
    """
    model.require("vector_latent", "flowvae manipulate")
    if not indices:
        raise DataError(f"no test image of {test_data.name} to edit: name some with --images")
    for i in indices:
        check_index(test_data, i)
    x = test_data.images[list(indices)]
    grid, _ = edit_batches(model, x, direction, alphas)
    exact = None
    if model.capabilities.exact_codes and 0.0 in alphas:
        exact = bool((grid[:, alphas.index(0.0)] == model.quantised(x)).all())
    return grid, {"images": list(indices), "keeps_local": model.capabilities.global_local, "exact_at_zero": exact}


@torch.no_grad()
def class_curves(model: GenerativeModel, train_data: ImageData, test_data: ImageData, directions: DirectionSet,
                 alphas: list[float], images_per_class: int = 20, seed: int = 0, train_images: int = 5000,
                 C: float | None = None) -> ClassCurve:
    """Where edits along each class's direction take the class of test images of other classes.

    For every class ``c`` of ``directions``, ``images_per_class`` seeded test images not of class
    ``c`` are edited along ``c``'s direction at each strength; a pixel classifier trained on
    ``train_images`` real training images (:func:`~flowvae.evaluation.switching.pixel_classifier`)
    classifies the edits. A direction that controls the class moves ``to_target`` from about 0 at
    strength 0 towards the classifier's test accuracy; where the class stays with the local code
    (the paper's model on digits, whose shape v keeps), ``keeps_source`` stays high.

    The style measure, for kinds with a local code: a logistic regression of the local codes
    ``v = f(x; z)`` of the same training images classifies the re-encoded local code of every edit;
    ``v_keeps_class`` is the share classified as the unedited image's v was. The edit decodes with
    the image's own v, so a decoder that keeps local content in v keeps it near 1.

    Returns:
        a :class:`~flowvae.runs.records.ClassCurve`.

    Raises:
        ConfigError: a model without ``vector_latent``, bad counts or strengths.
        DataError: data without labels, or class names that differ from the directions'.
    """
    model.require("vector_latent", "class curves of edits")
    check_count("images_per_class", images_per_class)
    if test_data.labels is None:
        raise DataError(f"{test_data.name} has no labels: class curves need class labels")
    if test_data.classes and any(0 <= lab < len(test_data.classes) and test_data.classes[lab] != name
                                 for lab, name in zip(directions.labels, directions.classes)):
        raise DataError(f"{test_data.name}'s class names ({', '.join(test_data.classes[:10])}) are not those of "
                        f"the directions ({', '.join(directions.classes[:10])}, from {directions.dataset})")
    clf, info, features = pixel_classifier(model, train_data, train_images, C, seed, "class-curve classifier")
    labels = test_data.labels
    test_acc = float((clf.predict(features(model.quantised(test_data.images))) == labels.numpy()).mean())
    local = _local_reader(model, train_data, train_images, seed) if model.capabilities.global_local else None
    g = torch.Generator().manual_seed(seed)
    to_target = np.zeros(len(alphas))
    keeps = np.zeros(len(alphas))
    v_keeps = np.zeros(len(alphas))
    saturated: np.ndarray | None = np.zeros(len(alphas))
    per_class: dict[str, list[float]] = {}
    edits = 0
    for c, (name, label) in enumerate(zip(directions.classes, directions.labels)):
        others = torch.nonzero(labels != label).flatten()
        if len(others) == 0:
            continue
        pick = others[torch.randperm(len(others), generator=g)[:images_per_class]]
        direction = torch.tensor(directions.vectors[c], dtype=torch.float32)
        grid, sat = edit_batches(model, test_data.images[pick], direction, alphas)
        pred = clf.predict(features(grid.flatten(0, 1))).reshape(len(pick), len(alphas))
        hit = (pred == label).sum(0)
        to_target += hit
        keeps += (pred == labels[pick].numpy()[:, None]).sum(0)
        if sat is None or saturated is None:
            saturated = None
        else:
            saturated += sat.sum(0).numpy()
        if local is not None:
            v_before = local(test_data.images[pick])
            v_after = local(grid.flatten(0, 1)).reshape(len(pick), len(alphas))
            v_keeps += (v_after == v_before[:, None]).sum(0)
        per_class[name] = (hit / len(pick)).tolist()
        edits += len(pick)
    if edits == 0:
        raise DataError(f"{test_data.name}: no test image outside a class to edit towards it")
    return ClassCurve(alphas=[float(a) for a in alphas], to_target=(to_target / edits).tolist(),
                      keeps_source=(keeps / edits).tolist(),
                      saturated=None if saturated is None else (saturated / edits).tolist(),
                      v_keeps_class=None if local is None else (v_keeps / edits).tolist(),
                      per_class=per_class, edits=edits,
                      classifier={"features": "pixels", "pool": info["pool"], "C": info["C"],
                                  "n_train": info["n_train"], "dim": info["dim"], "protocol": info["protocol"],
                                  "test_accuracy": test_acc})



LOCAL_READER_C = 0.01
"""Regularisation of the style measure's classifier of local codes (standardised, hundreds to
thousands of dimensions: fixed, as the probe's grid would choose on MNIST)."""


def _local_reader(model: GenerativeModel, train_data: ImageData, train_images: int,
                  seed: int) -> Callable[[Tensor], np.ndarray]:
    """The style measure's reader (:func:`class_curves`): a logistic regression of the local code
    ``v = f(x; z)`` of labelled training images, returned as a function of uint8 images that
    re-encodes them and predicts a class from their v."""
    exact = cast(ExactCodes, model)

    def codes(images: Tensor) -> np.ndarray:
        return torch.cat([exact.encode(images[i:i + 256].to(model.device))[1].double().cpu()
                          for i in range(0, len(images), 256)]).numpy()

    x, y = _subset(train_data, train_images, seed)
    clf, _ = fit_linear(codes(x), y.numpy(), C=LOCAL_READER_C, protocol="logistic", seed=seed,
                        desc="local-code classifier")
    return lambda images: clf.predict(codes(images))
