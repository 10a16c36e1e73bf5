"""Representations of a run's images exported as arrays for downstream work (``flowvae encode``):
posterior means and log-variances of each latent, optionally the exact local code v, the labels
and the index of every image, for the train and test splits.

What each kind exports (names as in :meth:`~flowvae.models.base.GenerativeModel.representations`,
the features ``flowvae probe`` reads):

==========================  =========================================================  ===========
``model.kind``              posterior latents (``NAME_mean``, ``NAME_logvar``)          ``v``
==========================  =========================================================  ===========
``flowvae``, ``z_prior``    ``z``: q(z|x) of the compression encoder (eq. 5)             ``--local``
``multistage``              ``z``: the factors c, stage 1's q(c|x)                       ``--local``
``vae``, ``btcvae``         ``z``: q(z|x) (``btcvae``: the factors)                      --
``ugvae``                   ``z``: local q(z_i|x_i); ``beta``: global q(beta|{x_i}),     --
                            each image a group of its own
``refined_glow``, ``glow``  none                                                         always
==========================  =========================================================  ===========

Everything is deterministic: posterior means and log-variances, no sampling, and v computed at
the centre of each pixel's bin (no dequantisation noise), so ``decode(z_mean, v)`` gives the
images back exactly (the kinds with ``exact_codes``). The UG-VAE's beta is the posterior of a
group of one image, so it does not depend on which images share a batch. Images are read one
batch at a time (from memory, or from a map-style dataset read on access through ``DataLoader``
workers), so memory holds one batch of images and the exported arrays.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import ImageData
from ..data.base import LIMIT_SEED, subset_indices
from ..data.streaming import collate_images, dataset_image_shape, dataset_labels
from ..errors import ConfigError, DataError
from ..models.base import GenerativeModel, check_count
from ..progress import progress

__all__ = ["EXPORT_FORMAT", "Latent", "exported_latents", "posterior_moments", "encode_images", "encode_splits",
           "npz_bytes"]

log = logging.getLogger("flowvae")

#: the ``format`` field of the metadata; raised when a key changes meaning
EXPORT_FORMAT = "flowvae-encode/1"


@dataclass(frozen=True)
class Latent:
    """One exported posterior latent.

    Attributes:
        name: key stem (``z``, ``beta``); arrays ``NAME_mean`` and ``NAME_logvar``, float32 ``[N, dim]``.
        dim: its dimension.
        meaning: what it is, for the metadata.
    """

    name: str
    dim: int
    meaning: str


@torch.no_grad()
def posterior_moments(model: GenerativeModel, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Posterior mean and log-variance of each of the model's latents for uint8 images ``x [B, C, H, W]``.

    Returns:
        ``{name: (mean, logvar)}``, each float ``[B, dim]`` on the model's device (natural log of
        the variance); empty for the kinds without a posterior (``refined_glow``, ``glow``). Names
        and meanings: module docstring.

    Raises:
        DataError: images that are not uint8 of the model's shape.
        ConfigError: a kind that defines no posterior (``GenerativeModel.posterior_moments``).
    """
    return model.posterior_moments(x)


def exported_latents(model: GenerativeModel) -> list[Latent]:
    """The posterior latents :func:`encode_images` exports for ``model`` (none for the kinds without a
    posterior), read from one blank image so the list always matches what is computed; each
    described by the kind (:attr:`~flowvae.models.base.GenerativeModel.latent_meanings`).

    Raises:
        ConfigError: a kind whose posterior this module cannot read.
    """
    c, s = model.cfg.in_channels, model.cfg.image_size
    blank = torch.zeros(1, c, s, s, dtype=torch.uint8, device=model.device)
    meanings = model.latent_meanings
    with torch.inference_mode():
        moments = posterior_moments(model, blank)
    return [Latent(name, int(mu.shape[1]), meanings.get(name, name)) for name, (mu, _) in moments.items()]


def _worker_error(e: BaseException) -> DataError:
    """A DataError re-raised from a DataLoader worker carries the worker's traceback as text; keep its
    last line, the message."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in str(e):
        return DataError(lines[-1].split(": ", 1)[-1])
    return DataError(str(e))


def _batches(data: Any, index: Tensor, batch_size: int, num_workers: int) -> Any:
    """uint8 batches ``[b, C, H, W]`` of the items ``index`` of ``data``, in order."""
    chunks = [index[i:i + batch_size] for i in range(0, len(index), batch_size)]
    if isinstance(data, ImageData):
        return (data.images[c] for c in chunks)
    loader = torch.utils.data.DataLoader(data, batch_sampler=[c.tolist() for c in chunks], collate_fn=collate_images,
                                         num_workers=num_workers)
    return iter(loader)


def encode_images(model: GenerativeModel, data: Any, *, index: Tensor | Sequence[int] | None = None,
                  local: bool = False, batch_size: int = 256, num_workers: int = 0) -> dict[str, np.ndarray]:
    """Representations of the images ``index`` of one dataset, in batches.

    Args:
        model: any model (put in eval mode here).
        data: an :class:`~flowvae.data.ImageData`, or a map-style dataset of uint8 images or
            ``(image, label)`` items with an optional ``labels``/``targets`` attribute
            (:mod:`flowvae.data.streaming`), read on access.
        index: positions into ``data`` (int64 ``[N]``, each in ``0..len(data)-1``); default all, in order.
        local: also export the exact local code v (kinds with ``exact_codes``).
        batch_size: images per batch.
        num_workers: ``DataLoader`` processes that read a dataset that is not in memory (0: this one).

    Returns:
        ``NAME_mean`` and ``NAME_logvar`` float32 ``[N, dim]`` for each of :func:`exported_latents`;
        ``v`` float32 ``[N, C*H*W]`` with ``local`` and always for kinds with no posterior latent;
        ``labels`` int64 ``[N]`` (``-1`` throughout for data without labels); ``index`` int64 ``[N]``.

    Raises:
        ConfigError: ``local`` on a kind without exact codes; a bad ``batch_size`` or ``num_workers``.
        DataError: images that do not fit the model, an index out of range, an empty selection,
            or an item that cannot be read.
    """
    check_count("batch_size", batch_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if local:
        model.require("exact_codes", "flowvae encode --local")
    n_all = len(data)
    idx = (torch.arange(n_all, dtype=torch.int64) if index is None
           else torch.as_tensor(index, dtype=torch.int64).flatten())
    if len(idx) == 0:
        raise DataError("no images to encode: the selection is empty")
    bad = idx[(idx < 0) | (idx >= n_all)]
    if len(bad):
        raise DataError(f"image index {int(bad[0])} is outside 0..{n_all - 1} of {getattr(data, 'name', 'the dataset')}")
    c, h, w = dataset_image_shape(data)
    want = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    if (c, h, w) != want:
        raise DataError(f"{getattr(data, 'name', 'the dataset')}: images are {c}x{h}x{w} but the model takes "
                        f"{want[0]}x{want[1]}x{want[2]}; pass --data with images of the run's kind")
    latents = exported_latents(model)
    with_v = local or not latents  # a kind without a posterior exports its only code, v
    if with_v and not local:
        model.require("exact_codes", "flowvae encode")
        log.info("a %r model has no posterior latent: exporting its exact local code v", model.kind)
    n = len(idx)
    out: dict[str, np.ndarray] = {}
    for lat in latents:
        out[f"{lat.name}_mean"] = np.empty((n, lat.dim), np.float32)
        out[f"{lat.name}_logvar"] = np.empty((n, lat.dim), np.float32)
    if with_v:
        out["v"] = np.empty((n, c * h * w), np.float32)
    labels = dataset_labels(data)
    out["labels"] = (np.full(n, -1, np.int64) if labels is None else labels[idx].numpy().astype(np.int64))
    out["index"] = idx.numpy().copy()
    was_training = model.training
    model.eval()
    try:
        at = 0
        batches = _batches(data, idx, batch_size, num_workers)
        with torch.inference_mode():
            for x in progress(batches, total=-(-n // batch_size), desc="encode"):
                x = x.to(model.device)
                b = x.shape[0]
                for name, (mu, lv) in posterior_moments(model, x).items():
                    out[f"{name}_mean"][at:at + b] = mu.float().cpu().numpy()
                    out[f"{name}_logvar"][at:at + b] = lv.float().cpu().numpy()
                if with_v:
                    out["v"][at:at + b] = model.representations(x)["v"].float().cpu().numpy()
                at += b
    except DataError as e:
        raise _worker_error(e) from None
    finally:
        model.train(was_training)
    if at != n:  # a dataset whose length and items disagree
        raise DataError(f"{getattr(data, 'name', 'the dataset')} gave {at} images for {n} indices")
    return out


def encode_splits(model: GenerativeModel, splits: Mapping[str, Any], *, local: bool = False, batch_size: int = 256,
                  limit: int | None = None, num_workers: int = 0,
                  meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """:func:`encode_images` of each split, as the arrays of one ``.npz`` file.

    Args:
        model: any model.
        splits: ``{"train": data, "test": data}`` (either or both; any names), each as :func:`encode_images` takes.
        local: also export v (kinds with ``exact_codes``).
        batch_size: images per batch.
        limit: per split, a seeded random subset of ``limit`` images, stratified by class where there
            are labels (:func:`~flowvae.data.subset_indices`, seed 0: the images a run with
            ``data.train_limit=limit`` / ``data.test_limit=limit`` reads); ``None``: all.
        num_workers: ``DataLoader`` processes for data read on access.
        meta: extra metadata fields (e.g. the run folder, the config's hash).

    Returns:
        For each split ``S``: ``S_NAME_mean``, ``S_NAME_logvar`` float32 ``[N_S, dim]``, ``S_v``
        float32 ``[N_S, C*H*W]`` (as :func:`encode_images`), ``S_labels`` and ``S_index`` int64
        ``[N_S]``, the index counting the split's images as its data source numbers them without a
        limit. And ``meta``: a 0-d unicode array holding one JSON object ``{"format", "flowvae_version",
        "kind", "latents": [{"name", "dim", "meaning"}], "local", "v_dim" (or null), "image_shape",
        "n_bits", "deterministic", "splits": {S: {"name", "n", "n_split", "limit", "has_labels",
        "classes"}}, "model_config", ...meta}`` (``json.loads(str(npz["meta"]))``).

    Raises:
        ConfigError, DataError: as :func:`encode_images`; a bad ``limit``; no splits.
    """
    from ..version import __version__

    if not splits:
        raise ConfigError("no splits to encode; pass train, test or both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    arrays: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for split, data in splits.items():
        labels = dataset_labels(data)
        index = subset_indices(len(data), limit, labels, LIMIT_SEED)
        res = encode_images(model, data, index=index, local=local, batch_size=batch_size, num_workers=num_workers)
        arrays.update({f"{split}_{k}": a for k, a in res.items()})
        classes = getattr(data, "classes", None)
        info[split] = {"name": getattr(data, "name", split), "n": len(index), "n_split": len(data), "limit": limit,
                       "has_labels": labels is not None, "classes": None if classes is None else list(classes)}
        log.info("encoded %d %s images", len(index), info[split]["name"])
    latents = exported_latents(model)
    v_key = next((k for k in arrays if k.endswith("_v")), None)
    record = {"format": EXPORT_FORMAT, "flowvae_version": __version__, "kind": model.kind,
              "latents": [asdict(lat) for lat in latents], "local": bool(local),
              "v_dim": None if v_key is None else int(arrays[v_key].shape[1]),
              "image_shape": [model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size],
              "n_bits": model.n_bits,
              "deterministic": "posterior means and log-variances; v at the bin centres (no dequantisation noise)",
              "splits": info, "model_config": model.cfg.to_dict(), **(meta or {})}
    arrays["meta"] = np.array(json.dumps(record))
    return arrays


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of an uncompressed ``.npz`` file (``numpy.savez``), readable with
    ``numpy.load(path)`` without ``allow_pickle``."""
    buf = io.BytesIO()
    savez: Any = np.savez  # numpy's stub types **kwds as its own keyword arguments, not as arrays
    savez(buf, **arrays)
    return buf.getvalue()
