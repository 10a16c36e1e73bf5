"""What a model's representations are worth: linear probes of the class (paper Table 4) for every
kind, and disentanglement metrics of the vector latent against dSprites' factors for the kinds with
the ``vector_latent`` capability."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..data import DSpritesData, ImageData
from ..errors import DataError
from ..models.base import GenerativeModel
from ..progress import progress
from ..runs.records import DisentanglementResult, ProbeResult, ProbeRow
from ._protocols import VectorLatent

__all__ = ["COLLAPSED_KL_NATS", "TREND_C", "accuracy_step_note", "check_probe_data", "code_kl", "is_collapsed",
           "collapse_note", "probe_run", "probe_trend", "latent_codes", "disentangle_codes", "DISENTANGLEMENT_METRICS",
           "pixel_probe_cache_path"]

log = logging.getLogger("flowvae")

DISENTANGLEMENT_METRICS = ("mig", "dci", "sap", "factorvae", "betavae")

COLLAPSED_KL_NATS = 1.0
"""Below this KL(q(z|x) || p(z)) (nats per image) :func:`probe_run` calls the code z collapsed."""


def is_collapsed(kl_nats: float | None) -> bool:
    """Whether a code z with KL(q(z|x) || p(z)) of ``kl_nats`` per image is collapsed (below
    :data:`COLLAPSED_KL_NATS`); ``False`` for ``None`` (a kind whose z has no prior of its own)
    and for NaN."""
    return kl_nats is not None and math.isfinite(kl_nats) and kl_nats < COLLAPSED_KL_NATS


def collapse_note(kl_nats: float) -> str:
    """What a probe of z beside a KL of ``kl_nats`` nats means, for log lines: ``"KL 7.41 nats"``,
    or for a collapsed code ``"KL 0.07 nats: collapsed (below 1 nat), so the probe reads the
    encoder's features of x, not what the decoder takes from z"``."""
    if not is_collapsed(kl_nats):
        return f"KL {kl_nats:.2f} nats"
    # rounded down: 0.997 shown as "1.00 nats: collapsed (below 1 nat)" reads as a contradiction
    shown = f"{math.floor(max(kl_nats, 0.0) * 100) / 100:.2f}"
    return (f"KL {shown} nats: collapsed (below {COLLAPSED_KL_NATS:g} nat), so the probe reads the "
            f"encoder's features of x, not what the decoder takes from z")


FEW_TEST_IMAGES = 1000
"""Below this many test images :func:`accuracy_step_note` has something to say."""


def accuracy_step_note(n_test: int) -> str | None:
    """For fewer than :data:`FEW_TEST_IMAGES` test images, a sentence saying that an accuracy on them
    moves in steps of ``100 / n_test`` points (2.5 for 40 images), else ``None``."""
    if n_test >= FEW_TEST_IMAGES or n_test <= 0:
        return None
    return (f"the probes are tested on {n_test} images, so their accuracies move in steps of "
            f"{100 / n_test:.3g} points: differences of a few steps are noise")


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
              protocol: str = "standard", seed: int = 0, cache: bool = True) -> ProbeResult:
    """Linear-probe test accuracy of each of the model's representations and of the raw pixels.

    Features are :meth:`~flowvae.models.base.GenerativeModel.features` of the training and test
    images (e.g. ``z`` and ``v`` of the flow models, ``z`` of the VAEs); each is probed with
    :func:`~flowvae.evaluation.probe.linear_probe`. The pixel probe does not depend on the model: its
    result is cached per data set (:func:`pixel_probe_cache_path`, keyed by a hash of the exact
    images, labels and probe settings), so a second call on the same data reads it back instead of
    fitting again. A missing, unreadable or invalid cache entry is recomputed and rewritten.

    Args:
        model: any model.
        train_data, test_data: labelled images (uint8 ``[N, C, H, W]``).
        C: the SVM's regularisation; ``None`` cross-validates it.
        protocol: ``"standard"`` or ``"authors"`` (:mod:`flowvae.evaluation.probe`).
        seed: seed of the cross-validation folds and the SVM.
        cache: read and write the pixel probe's cache entry.

    Returns:
        the record of ``probe.json`` (:class:`~flowvae.runs.records.ProbeResult`, a read-only mapping
        too): ``{"dataset": test name, "protocol", "results": {feature name: linear_probe's row}}``;
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
    log.info("probe: features of %d training and %d test images (%s protocol)", len(train_data), len(test_data),
             protocol)
    if (note := accuracy_step_note(len(test_data))) is not None:
        log.info("probe: %s", note)
    t = time.monotonic()
    ftr, fte = model.features(train_data.images), model.features(test_data.images)
    log.info("probe: features computed in %.1f s", time.monotonic() - t)
    feats: dict[str, tuple[Tensor, Tensor]] = {k: (ftr[k], fte[k]) for k in ftr}
    rows = {}
    for name in [*feats, "pixels"]:
        t = time.monotonic()
        cached = None
        if name == "pixels":
            path = pixel_probe_cache_path(train_data, test_data, C, protocol, seed) if cache else None
            cached = _read_pixel_probe(path, train_data, test_data, protocol) if path is not None else None
            a, b = train_data.images.flatten(1).float(), test_data.images.flatten(1).float()
        else:
            a, b = feats[name]
        if cached is not None:
            rows[name] = cached
            log.info("probe %s: %.2f%% test accuracy (cached in %s)", name, 100 * cached["accuracy"], path)
            continue
        log.info("probe %s: fitting on %d features of %d training images", name, a.shape[1], len(a))
        try:
            rows[name] = linear_probe(a, train_data.labels, b, test_data.labels, C=C, protocol=protocol, seed=seed,
                                      desc=f"probe {name}")
        except ValueError as e:  # e.g. too few images of a class for 3-fold cross-validation
            raise DataError(f"probe of {name}: {str(e).splitlines()[0]}") from None
        log.info("probe %s: %.2f%% test accuracy (%.1f s)", name, 100 * rows[name]["accuracy"], time.monotonic() - t)
        if name == "pixels" and path is not None:
            _write_pixel_probe(path, rows[name])
    kl = code_kl(model, test_data.images, seed=seed) if "z" in rows else None
    results = {name: ProbeRow.from_dict(row, f"the probe of {name}") for name, row in rows.items()}
    out = ProbeResult(dataset=test_data.name, protocol=protocol, results=results, z_kl_nats=kl,
                      z_collapsed=None if kl is None else is_collapsed(kl))
    if out.z_collapsed:
        log.warning("z carries %.3f nats (KL(q(z|x) || p(z)) on the test images): a collapsed code; its probe "
                    "reads the encoder's features of x, not what z gives the decoder. `flowvae switch` "
                    "and --protocol authors tell the two apart", kl)
    return out


PIXEL_CACHE_VERSION = 1
"""Part of every pixel-probe cache key: raised when the probe's protocol changes what it computes."""
MAX_PIXEL_CACHE_BYTES = 64 * 1024  # an entry is one small JSON object; anything larger is not one


def pixel_probe_cache_path(train_data: ImageData, test_data: ImageData, C: float | None, protocol: str,
                           seed: int) -> Path:
    """Where :func:`probe_run` caches the pixel probe of these data and settings:
    ``cache_dir()/probes/pixels-<sha256>.json`` (:func:`flowvae.data.cache_dir`), the hash over the
    exact bytes, shapes and dtypes of the training and test images and labels, ``C``, the grid of
    C, ``protocol``, ``seed``, the SVM's iteration limit and scikit-learn's version."""
    import sklearn

    from ..data import cache_dir
    from .probe import DEFAULT_CS

    h = hashlib.sha256()
    h.update(json.dumps({"version": PIXEL_CACHE_VERSION, "C": C, "Cs": list(DEFAULT_CS), "protocol": protocol,
                         "seed": seed, "max_iter": 2000, "sklearn": sklearn.__version__}, sort_keys=True).encode())
    for t in (train_data.images, train_data.labels, test_data.images, test_data.labels):
        assert t is not None  # narrowing only: check_probe_data refused data without labels
        t = t.contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().data)  # the bytes themselves, without a copy
    return cache_dir() / "probes" / f"pixels-{h.hexdigest()}.json"


def _read_pixel_probe(path: Path, train_data: ImageData, test_data: ImageData, protocol: str) -> dict | None:
    """The cached :func:`~flowvae.evaluation.probe.linear_probe` result at ``path``, or ``None`` when
    there is none or it is not a valid one (read as a bounded regular file, never through a link:
    the cache folder is writable by whatever else runs as the user)."""
    from .. import safe_io
    from ..data import cache_dir
    from ..errors import CheckpointError

    try:
        entry = json.loads(safe_io.read_text(path, MAX_PIXEL_CACHE_BYTES, root=cache_dir()))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, CheckpointError) as e:  # deep nesting: RecursionError
        log.info("pixel probe cache %s unusable (%s); computing it again", path, " ".join(str(e).split()) or type(e).__name__)
        return None
    res = entry.get("result") if isinstance(entry, dict) else None
    want = {"n_train": len(train_data), "n_test": len(test_data), "dim": math.prod(train_data.images.shape[1:]),
            "protocol": protocol}

    def share(v: Any, none_ok: bool = False) -> bool:
        return (v is None and none_ok) or (isinstance(v, float) and 0.0 <= v <= 1.0)

    ok = (isinstance(res, dict) and set(res) == {"accuracy", "C", "cv_accuracy", "n_train", "n_test", "dim", "protocol"}
          and entry.get("key") == path.stem and share(res["accuracy"]) and share(res["cv_accuracy"], none_ok=True)
          and isinstance(res["C"], float) and math.isfinite(res["C"]) and res["C"] > 0
          and all(res[k] == v and type(res[k]) is type(v) for k, v in want.items()))
    if not ok or not isinstance(res, dict):  # (the second test narrows the type only)
        log.info("pixel probe cache %s is not a valid entry for these data; computing it again", path)
        return None
    return dict(res)


def _write_pixel_probe(path: Path, result: dict) -> None:
    """Write the cache entry atomically; a cache that cannot be written costs only the next call's fit."""
    from .. import safe_io
    from ..data import cache_dir
    from ..errors import CheckpointError

    data = json.dumps({"key": path.stem, "result": result}, indent=1).encode()
    try:
        safe_io.atomic_write(path, data, root=cache_dir())
    except (OSError, CheckpointError) as e:
        log.warning("could not cache the pixel probe in %s (%s); the next probe of these data fits it again",
                    path, " ".join(str(e).split()))


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
                      num_train: int = 10000, num_test: int = 5000, seed: int = 0) -> DisentanglementResult:
    """Disentanglement metrics (:mod:`flowvae.evaluation.disentanglement`) of the model's latent codes
    of every image of ``data`` (the dSprites grid) against its ground-truth factors.

    Args:
        model: a model with the ``vector_latent`` capability, of dSprites' image shape.
        data: dSprites images and factors (``load_dsprites(split="all", variant="grid")``).
        metrics: any of ``mig``, ``dci``, ``sap``, ``factorvae``, ``betavae``.
        num_train, num_test: training and evaluation points of each metric.
        seed: seed of every metric.

    Returns:
        the record of ``disentanglement.json`` (:class:`~flowvae.runs.records.DisentanglementResult`,
        a read-only mapping too): ``{"dataset", "n", "d_z", "seed", "factor_names", <metric>: {...},
        ...}``, JSON-ready.

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
    plain = json.loads(json.dumps(res, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return DisentanglementResult.from_dict(plain, "the disentanglement metrics")
