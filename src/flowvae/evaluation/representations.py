"""What a model's representations are worth: linear probes of the class (paper Table 4) for every
kind, and disentanglement metrics of the vector latent against dSprites' factors for the kinds with
the ``vector_latent`` capability."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..data import DSpritesData, ImageData
from ..errors import DataError
from ..models.base import GenerativeModel
from ..progress import progress
from ._protocols import VectorLatent

__all__ = ["check_probe_data", "probe_run", "latent_codes", "disentangle_codes", "DISENTANGLEMENT_METRICS"]

log = logging.getLogger("flowvae")

DISENTANGLEMENT_METRICS = ("mig", "dci", "sap", "factorvae", "betavae")


def check_probe_data(train_data: ImageData, test_data: ImageData) -> None:
    """Raise a one-line :class:`~flowvae.errors.DataError` unless both sets have labels and the
    training set has at least two classes (a classifier needs two to tell apart)."""
    for d in (train_data, test_data):
        if d.labels is None:
            raise DataError(f"{d.name} has no labels: a linear probe needs class labels")
    classes = torch.unique(train_data.labels)
    if len(classes) < 2:
        raise DataError(f"the probe's training set ({len(train_data)} images of {train_data.name}) holds one class "
                        f"only (label {int(classes[0])}); a linear probe needs at least two: raise --train-limit")


def probe_run(model: GenerativeModel, train_data: ImageData, test_data: ImageData, C: float | None = None,
              protocol: str = "standard", seed: int = 0) -> dict[str, Any]:
    """Linear-probe test accuracy of each of the model's representations and of the raw pixels.

    Features are :meth:`~flowvae.models.base.GenerativeModel.features` of the training and test
    images (e.g. ``z`` and ``v`` of the flow models, ``z`` of the VAEs); each is probed with
    :func:`~flowvae.evaluation.probe.linear_probe`.

    Args:
        model: any model.
        train_data, test_data: labelled images (uint8 ``[N, C, H, W]``).
        C: the SVM's regularisation; ``None`` cross-validates it.
        protocol: ``"standard"`` or ``"authors"`` (:mod:`flowvae.evaluation.probe`).
        seed: seed of the cross-validation folds and the SVM.

    Returns:
        ``{"dataset": test name, "protocol", "results": {feature name: linear_probe's dict}}``;
        the feature names are the model's representation names, then ``"pixels"``.

    Raises:
        DataError: data without labels, or a training set with one class (:func:`check_probe_data`).
    """
    from .probe import linear_probe

    check_probe_data(train_data, test_data)
    ftr, fte = model.features(train_data.images), model.features(test_data.images)
    feats: dict[str, tuple[Tensor, Tensor]] = {k: (ftr[k], fte[k]) for k in ftr}
    feats["pixels"] = (train_data.images.flatten(1).float(), test_data.images.flatten(1).float())
    rows = {}
    for name, (a, b) in feats.items():
        try:
            rows[name] = linear_probe(a, train_data.labels, b, test_data.labels, C=C, protocol=protocol, seed=seed)
        except ValueError as e:  # e.g. too few images of a class for 3-fold cross-validation
            raise DataError(f"probe of {name}: {str(e).splitlines()[0]}") from None
        log.info("probe %s: %.2f%% test accuracy", name, 100 * rows[name]["accuracy"])
    return {"dataset": test_data.name, "protocol": protocol, "results": rows}


@torch.no_grad()
def latent_codes(model: GenerativeModel, images: Tensor, batch_size: int = 512) -> np.ndarray:
    """Posterior means of the vector latent of uint8 ``images [N, C, H, W]``: float64 ``[N, latent_dim]``.

    Raises:
        ConfigError: a model without the ``vector_latent`` capability.
    """
    model.require("vector_latent", "latent codes")
    m, codes = cast(VectorLatent, model), []
    for i in progress(range(0, len(images), batch_size), total=-(-len(images) // batch_size), desc="codes"):
        codes.append(m.latent_mean(images[i:i + batch_size].to(model.device)).float().cpu())
    return torch.cat(codes).numpy().astype(np.float64)


def disentangle_codes(model: GenerativeModel, data: DSpritesData, metrics: Sequence[str] = DISENTANGLEMENT_METRICS,
                      num_train: int = 10000, num_test: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Disentanglement metrics (:mod:`flowvae.evaluation.disentanglement`) of the model's latent codes
    of every image of ``data`` (the dSprites grid) against its ground-truth factors.

    Args:
        model: a model with the ``vector_latent`` capability, of dSprites' image shape.
        data: dSprites images and factors (``load_dsprites(split="all", variant="grid")``).
        metrics: any of ``mig``, ``dci``, ``sap``, ``factorvae``, ``betavae``.
        num_train, num_test: training and evaluation points of each metric.
        seed: seed of every metric.

    Returns:
        JSON-ready ``{"dataset", "n", "d_z", "seed", "factor_names", <metric>: {...}, ...}``.

    Raises:
        ConfigError: a model without ``vector_latent``; an unknown metric.
        DataError: images of another shape than the model's, or inputs that make a metric undefined.
    """
    import json

    from ..errors import ConfigError
    from . import disentanglement as D

    model.require("vector_latent", "flowvae disentangle")
    unknown = [m for m in metrics if m not in DISENTANGLEMENT_METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; use any of {', '.join(DISENTANGLEMENT_METRICS)}")
    images = data.to_image_data().images
    cfg = model.cfg
    want = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if tuple(images.shape[1:]) != want:
        raise DataError(f"dSprites images are {list(images.shape[1:])}, this model takes [{want[0]}, {want[1]}, {want[2]}]")
    codes = latent_codes(model, images)
    factors = data.factors.numpy()
    res: dict[str, Any] = {"dataset": data.name, "n": len(codes), "d_z": codes.shape[1], "seed": seed,
                           "factor_names": list(data.factor_names)}
    nt, ne = num_train, num_test
    compute = {
        "mig": lambda: D.mig(codes, factors, num_train=nt, seed=seed),
        "dci": lambda: D.dci(codes, factors, num_train=nt, num_test=ne, seed=seed),
        "sap": lambda: D.sap_score(codes, factors, num_train=nt, num_test=ne, seed=seed),
        "factorvae": lambda: D.factor_vae_score_from_codes(codes, factors, seed=seed, num_train=nt, num_eval=ne),
        "betavae": lambda: D.beta_vae_score_from_codes(codes, factors, seed=seed, num_train=nt, num_eval=ne),
    }
    for name in metrics:
        log.info("computing %s", name)
        try:
            res[name] = compute[name]()
        except ValueError as e:  # a degenerate input that makes the metric undefined (module docstring there)
            raise DataError(f"{name}: {str(e).splitlines()[0]}") from None
    # numpy scalars and arrays as plain JSON values
    return json.loads(json.dumps(res, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
