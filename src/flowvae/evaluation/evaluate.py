"""What ``flowvae eval`` computes, for any model kind: bits/dim, and where the kind's capabilities
allow it, the exact round trip and the reconstruction quality.

Everything here takes a model and uint8 images and returns results (:func:`evaluate_run` the typed
record of ``eval.json``, :class:`~flowvae.runs.records.EvalResult`); nothing is printed or written
(the command line does that).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from ..models.base import GenerativeModel
from ..runs.records import EvalResult, ReconstructionResult
from ._protocols import ExactCodes
from .bpd import evaluate_bpd
from .reconstruction import reconstruction_quality

__all__ = ["quantised", "decode_codes", "round_trip", "evaluate_run", "ROUND_TRIP_IMAGES"]

ROUND_TRIP_IMAGES = 256
"""How many test images ``flowvae eval`` encodes and decodes for the round-trip check."""


def quantised(model: GenerativeModel, x: Tensor) -> Tensor:
    """``model.quantised(x)``: the uint8 images ``[B, C, H, W]`` an exact model reproduces from ``x``
    (:meth:`~flowvae.models.base.GenerativeModel.quantised`)."""
    return model.quantised(x)


def decode_codes(model: GenerativeModel, codes: Any) -> Tensor:
    """``model.decode`` of what ``model.encode`` returned: a tuple of codes (``(z, v)`` of the kinds
    with a global and a local code) is passed as separate arguments, one code as it is."""
    m = cast(ExactCodes, model)
    return m.decode(*codes) if isinstance(codes, tuple) else m.decode(codes)


@torch.no_grad()
def round_trip(model: GenerativeModel, images: Tensor) -> dict[str, int]:
    """Encode uint8 ``images [N, C, H, W]`` (posterior mean and exact local code), decode, compare.

    Returns:
        ``{"roundtrip_images": N, "roundtrip_mismatched_pixels": P}``; ``P`` counts the uint8 values
        (pixels x channels) that differ from :func:`quantised` of the input (0 for an exact model).

    Raises:
        ConfigError: a model without the ``exact_codes`` capability (one line).
    """
    model.require("exact_codes", "the round-trip check")
    x = images.to(model.device)
    out = decode_codes(model, cast(ExactCodes, model).encode(x))
    return {"roundtrip_images": len(x), "roundtrip_mismatched_pixels": int((out != model.quantised(x)).sum())}


def evaluate_run(model: GenerativeModel, images: Tensor, k: int = 5, batch_size: int = 256, seed: int = 0,
                 device: torch.device | str = "cpu", dataset: str | None = None,
                 roundtrip_images: int = ROUND_TRIP_IMAGES, recon_features: Any = None) -> EvalResult:
    """Test-set figures of a model of any kind on uint8 ``images [N, C, H, W]``.

    Args:
        model: a model in eval mode.
        images: uint8 test images (on any device; batches are moved to ``device``).
        k: posterior samples per image (1 to 10,000).
        batch_size: images x samples per batch.
        seed: seed of the dequantisation noise and posterior samples.
        device: where the model is.
        dataset: name recorded under ``"dataset"`` (e.g. ``"digits/test"``).
        roundtrip_images: how many of the first images the round-trip check uses.
        recon_features: an Inception network (:func:`~flowvae.evaluation.sampling.inception_network`):
            with the ``reconstruction`` capability, also FID/KID of the reconstructions from the
            factors against ``images``.

    Returns:
        the record of ``eval.json`` (a read-only mapping too): :func:`~flowvae.evaluation.evaluate_bpd`'s
        ``elbo_bpd``, ``iw_bpd`` (bits/dim), ``kl`` (nats), ``k``, ``n``; ``dataset``; with the
        ``exact_codes`` capability :func:`round_trip`'s two figures; with ``reconstruction``,
        ``reconstruction``: :func:`~flowvae.evaluation.reconstruction_quality`'s record.

    Raises:
        ConfigError: ``k`` or ``batch_size`` not a positive integer, ``k`` above
            :data:`~flowvae.models.base.MAX_POSTERIOR_SAMPLES` (10,000); ``recon_features`` for a kind
            without the ``reconstruction`` capability.
    """
    from ..models.base import check_count, check_posterior_samples

    check_posterior_samples(k)  # before the test images are touched: -k 100000000 is refused at once
    check_count("batch_size", batch_size)
    if recon_features is not None:  # refuse before the long bound, not after
        model.require("reconstruction", "FID of reconstructions from the factors (use `flowvae fid` for samples)")
    bpd = evaluate_bpd(model, images, k, batch_size, seed=seed, device=device)
    caps = model.capabilities
    trip = round_trip(model, images[:roundtrip_images]) if caps.exact_codes else {}
    recon: ReconstructionResult | None = None
    if caps.reconstruction:
        recon = reconstruction_quality(model, images, seed=seed, device=device, features=recon_features)
    return EvalResult(elbo_bpd=bpd["elbo_bpd"], iw_bpd=bpd["iw_bpd"], kl=bpd["kl"], k=int(bpd["k"]), n=int(bpd["n"]),
                      dataset=dataset, roundtrip_images=trip.get("roundtrip_images"),
                      roundtrip_mismatched_pixels=trip.get("roundtrip_mismatched_pixels"), reconstruction=recon)
