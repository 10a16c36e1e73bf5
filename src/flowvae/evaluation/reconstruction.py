"""Reconstruction quality of the beta-TCVAE (stage 1) and of the multi-stage model, measured the same
way for both, as the multi-stage paper compares them (``../shared/papers/multi-stage-disentangled-
reconstruction.txt``: "much higher reconstruction quality ... with equivalent disentanglement").

Two figures per model on a set of images x (uint8 ``[N, C, H, W]``):

* ``recon_bpd``: ``-log p(x | c(x)) / (D ln 2)``, bits per dimension of the image given its
  factors ``c(x)`` (the stage-1 posterior mean). Stage 1: the decoder's likelihood at ``z = mu(x)``
  (exact; for binary images under the Bernoulli decoder, bits per binary pixel). Multi-stage: the
  conditional Glow's ``-log p(x | c)``, a bound through uniform dequantisation with
  ``data.n_bits`` bits (1 for binary images, so the two figures are in the same unit).
* ``mse``: mean squared error per pixel on the [0, 1] scale between x and a reconstruction made
  from the factors alone. Stage 1: its mean image. Multi-stage: ``x = f^{-1}(v; c)`` with a fresh
  local code ``v ~ N(0, T^2 I)``, one figure per temperature T (``T = 0`` is ``v = 0``).
* ``fid`` (when an Inception network is given): FID and KID of those same reconstructions from the
  factors against the test images themselves, quantised to the model's bits (what the model can
  produce). MSE is minimised by the blurry conditional mean, so it cannot tell a sharp plausible image
  from a grey average; FID/KID compare the distributions of Inception features, which is how
  sharpness is judged (Heusel et al. 2017; Binkowski et al. 2018). Stage 1's figure is of its mean
  image (rounded to uint8), the one its MSE is of. The multi-stage model's factors are stage 1's,
  so the two are compared at the same disentanglement (MIG) by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch

from ..models.base import GenerativeModel
from ..progress import progress
from ..runs.records import ReconstructionResult
from ._protocols import Reconstructing

if TYPE_CHECKING:
    from .fid import InceptionFeatures

__all__ = ["reconstruction_quality"]


@torch.no_grad()
def reconstruction_quality(model: GenerativeModel, images: torch.Tensor, temperatures: tuple[float, ...] = (0.0, 0.5, 1.0),
                           batch_size: int = 128, seed: int = 0, device: torch.device | str = "cpu",
                           features: InceptionFeatures | None = None) -> ReconstructionResult:
    """``recon_bpd``, ``mse`` and optionally ``fid`` (module docstring) of a model with the
    ``reconstruction`` capability (the beta-TCVAE, the multi-stage model) on uint8 ``images [N, C, H, W]``.

    Args:
        features: an :class:`~flowvae.evaluation.fid.InceptionFeatures` (e.g.
            :func:`~flowvae.evaluation.sampling.inception_network`): also compute FID/KID of the
            reconstructions against ``images``; ``None`` (default) skips it.

    Returns:
        the record ``{"kind", "n", "recon_bpd", "mse"}`` (:class:`~flowvae.runs.records.ReconstructionResult`)
        for the beta-TCVAE; for the multi-stage model ``mse`` is ``{"T=0.0": ..., ...}``, one entry per
        temperature. With ``features``, ``fid``:
        :func:`~flowvae.evaluation.fid.fid_kid`'s dict (beta-TCVAE), or one such dict per temperature
        (multi-stage).

    Raises:
        ConfigError: a model without the ``reconstruction`` capability.
        FlowVAEError: ``features`` given and fewer than 2 images.
    """
    if not isinstance(model, GenerativeModel):
        from ..errors import ConfigError

        raise ConfigError(f"reconstruction quality needs a flowvae model, got {type(model).__name__}")
    model.require("reconstruction", "reconstruction quality")
    flow = model.capabilities.exact_codes  # a flow stage 2: its own -log p(x|c), reconstructions at temperatures
    rec_model = cast(Reconstructing, model)
    was = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n, bits = len(images), 0.0
    sq: dict[float | None, float] = {t: 0.0 for t in temperatures} if flow else {None: 0.0}
    recs: dict[float | None, list[torch.Tensor]] = {t: [] for t in sq}  # uint8, kept only for the FID
    try:
        for i in progress(range(0, n, batch_size), total=-(-n // batch_size), desc="reconstruction"):
            x = images[i:i + batch_size].to(device)
            target = x.float() / 255.0
            if not flow:
                bits += float(rec_model.reconstruction_bits(x).double().sum())
                mean = rec_model.reconstruction_mean(x)
                sq[None] += float(((mean - target) ** 2).double().sum())
                if features is not None:
                    recs[None].append((mean * 255).round().clamp(0, 255).to(torch.uint8).cpu())
            else:
                bits += float(model.bits_per_dim(x, 1, gen)["elbo_bpd"].double().sum())
                for t in temperatures:
                    rec8 = rec_model.reconstruct(x, t, gen)
                    sq[t] += float(((rec8.float() / 255.0 - target) ** 2).double().sum())
                    if features is not None:
                        recs[t].append(rec8.cpu())
    finally:
        model.train(was)
    per_pixel = n * images[0].numel()
    mse: float | dict[str, float] = (sq[None] / per_pixel if not flow
                                     else {f"T={t}": v / per_pixel for t, v in sq.items()})
    fid: dict[str, Any] | None = None
    if features is not None:
        from .fid import fid_kid, inception_features

        real = model.quantised(images.to(model.device)).cpu()
        real_f = inception_features(real, features, desc="test images")  # once for every temperature
        scores = {t: fid_kid(real, torch.cat(r), features, real_features=real_f) for t, r in recs.items()}
        fid = scores[None] if not flow else {f"T={t}": v for t, v in scores.items()}
    return ReconstructionResult(kind=model.kind, n=n, recon_bpd=bits / n, mse=mse, fid=fid)
