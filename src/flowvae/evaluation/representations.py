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

__all__ = ["COLLAPSED_KL_NATS", "TREND_C", "check_probe_data", "code_kl", "probe_run", "probe_trend", "latent_codes",
           "disentangle_codes", "DISENTANGLEMENT_METRICS"]

log = logging.getLogger("flowvae")

DISENTANGLEMENT_METRICS = ("mig", "dci", "sap", "factorvae", "betavae")

COLLAPSED_KL_NATS = 1.0
"""Below this KL(q(z|x) || p(z)) (nats per image) :func:`probe_run` calls the code z collapsed."""


@torch.no_grad()
def code_kl(model: GenerativeModel, images: Tensor, batch_size: int = 512, seed: int = 0) -> float | None:
    """KL(q(z|x) || p(z)) of the code z in nats per image, the mean over uint8 ``images [N, C, H, W]``:
    a one-sample Monte Carlo estimate ``log q(z|x) - log p(z)`` per image (the flow prior of eq. 2
    has no closed form), with a seeded generator. ``None`` for kinds whose z has no prior of its
    own (no ``code_prior`` capability): the refined Glow and Glow (no z), the UG-VAE (z's prior
    depends on the group's code) and the multi-stage model (its factors are stage 1's).

    Raises:
        DataError: images that are not uint8 of the model's shape.
    """
    from ..maths import gaussian_logprob

    if not model.capabilities.code_prior:
        model.check_input(images)
        return None
    gen = torch.Generator(device=model.device).manual_seed(seed)
    total = 0.0
    for i in range(0, len(images), batch_size):
        mu, logvar = model.posterior_moments(images[i:i + batch_size].to(model.device))["z"]
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        total += float((gaussian_logprob(z, mu, logvar) - model.code_log_prior(z)).sum())
    return total / len(images)


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
        the feature names are the model's representation names, then ``"pixels"``. Kinds with a
        prior of z add ``"z_kl_nats"`` (:func:`code_kl` on the test images) and ``"z_collapsed"``
        (that KL below :data:`COLLAPSED_KL_NATS`): a standardised probe of a collapsed code reads
        the encoder's random features of x, not information that z gives the decoder (on the
        digits it scored 92% at a KL of 0.2 nats, where the authors' unscaled protocol gave 10%
        and no switched decode followed z).

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
    out: dict[str, Any] = {"dataset": test_data.name, "protocol": protocol, "results": rows}
    if "z" in rows and (kl := code_kl(model, test_data.images, seed=seed)) is not None:
        out["z_kl_nats"], out["z_collapsed"] = kl, kl < COLLAPSED_KL_NATS
        if out["z_collapsed"]:
            log.warning("z carries %.3f nats (KL(q(z|x) || p(z)) on the test images): a collapsed code; its probe "
                        "reads the encoder's features of x, not what z gives the decoder. `flowvae switch` "
                        "and --protocol authors tell the two apart", kl)
    return out


TREND_C = 0.01
"""The fixed C of :func:`probe_trend`'s SVMs: the middle of the standard probe's grid (cross-validating
it at every evaluation would triple the cost and let the probe's own choice move the curve)."""


def probe_trend(model: GenerativeModel, train_images: Tensor, train_labels: Tensor, test_images: Tensor,
                test_labels: Tensor, seed: int = 0) -> dict[str, float]:
    """Test accuracy of a linear probe of each representation, for watching it move during training.

    The standard protocol of :func:`~flowvae.evaluation.probe.linear_probe` (standardised features,
    ``LinearSVC``) at the fixed ``C`` :data:`TREND_C`, without the pixels (they do not change).
    The model is evaluated in eval mode and restored, under a forked CPU random state, so a
    training run that calls this draws the same noise as one that does not.

    Args:
        model: any kind.
        train_images, test_images: uint8 ``[N, C, H, W]``.
        train_labels, test_labels: int64 ``[N]``; the training labels must hold two classes or more.

    Returns:
        ``{"probe_<name>": accuracy in [0, 1]}`` per :meth:`~flowvae.models.base.GenerativeModel.representations`
        name (``probe_z`` and ``probe_v`` for the flow models with z).

    Raises:
        DataError: one class in the training labels, or too few images for the SVM.
    """
    from .probe import linear_probe

    if len(torch.unique(train_labels)) < 2:
        raise DataError(f"the probe's {len(train_labels)} training images hold one class; a linear probe needs two")
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            ftr, fte = model.features(train_images), model.features(test_images)
    finally:
        model.train(was_training)
    out = {}
    for name in ftr:
        try:
            res = linear_probe(ftr[name], train_labels, fte[name], test_labels, C=TREND_C, seed=seed)
        except ValueError as e:
            raise DataError(f"probe of {name}: {str(e).splitlines()[0]}") from None
        out[f"probe_{name}"] = float(res["accuracy"])
    return out


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
