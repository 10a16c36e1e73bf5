"""Samples of any model kind: grids at several temperatures, many samples in batches, and FID/KID
of samples against test images."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models.base import GenerativeModel, check_count, check_temperature
from ..progress import progress

__all__ = ["sample_grids", "generate", "inception_network", "fid_run"]


@torch.no_grad()
def sample_grids(model: GenerativeModel, temperatures: list[float], n: int, global_temperature: float = 1.0,
                 seed: int = 0) -> list[tuple[float, Tensor]]:
    """``n`` samples at each temperature, from one seed.

    The generator is re-seeded for every temperature, so all grids share the global code and the
    base noise of the local code and differ only by the temperature.

    Args:
        model: any model.
        temperatures: temperatures of the local (or only) latent, each finite and >= 0.
        n: samples per temperature (>= 1).
        global_temperature: temperature of the global code's prior; a kind without a global code
            refuses any value but 1 (one-line :class:`~flowvae.errors.ConfigError` from its ``sample``).
        seed: seed of the sampling generator.

    Returns:
        ``[(temperature, uint8 [n, C, H, W] on the CPU), ...]`` in the order given.

    Raises:
        ConfigError: a bad ``n`` or temperature, or a global temperature the kind does not have.
    """
    check_count("n", n)
    check_temperature(global_temperature, "global temperature")
    out = []
    for t in temperatures:
        check_temperature(t)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        out.append((t, model.sample(n, t, global_temperature=global_temperature, generator=gen).cpu()))
    return out


@torch.no_grad()
def generate(model: GenerativeModel, n: int, temperature: float = 1.0, seed: int = 0,
             batch_size: int = 256) -> Tensor:
    """``n`` samples at ``temperature`` drawn ``batch_size`` at a time from one seeded generator:
    uint8 ``[n, C, H, W]`` on the CPU."""
    check_count("n", n)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    batches = progress(range(0, n, batch_size), total=-(-n // batch_size), desc="sampling")
    return torch.cat([model.sample(min(batch_size, n - i), temperature, generator=gen).cpu() for i in batches])


@functools.lru_cache(maxsize=2)
def _cached_inception(path: str, size: int, mtime_ns: int, device: str) -> Any:
    from .fid import InceptionFeatures

    return InceptionFeatures(path, device)


def inception_network(path: str | Path | None = None, device: torch.device | str = "cpu") -> Any:
    """The Inception-v3 feature network (:class:`~flowvae.evaluation.fid.InceptionFeatures`) of
    ``path`` (default: :func:`~flowvae.evaluation.fid.find_inception`'s search), loaded once per
    file and device in a process: the TorchScript network's first calls are its slowest (the JIT
    profiles and optimises them), so repeated FID runs in one process share one loaded copy. A
    file replaced on disk (other size or modification time) is loaded again.

    Raises:
        FlowVAEError: the network file was not found.
    """
    from .fid import find_inception

    found = find_inception(path).resolve()
    st = found.stat()
    return _cached_inception(str(found), st.st_size, st.st_mtime_ns, str(torch.device(device)))


def fid_run(model: GenerativeModel, real: Tensor, n: int, temperature: float = 1.0, seed: int = 0,
            features: Any = None) -> dict[str, Any]:
    """FID and KID of ``n`` samples at ``temperature`` against uint8 ``real [M, C, H, W]`` images.

    Args:
        model: any model.
        real: test images (all of them are used).
        n: samples to draw (>= 2).
        temperature: temperature of the local (or only) latent.
        seed: seed of the sampling generator.
        features: an :class:`~flowvae.evaluation.fid.InceptionFeatures`; default
            :func:`inception_network` on the model's device.

    Returns:
        :func:`~flowvae.evaluation.fid.fid_kid`'s dict (``fid``, ``kid_mean``, ``kid_std``, ``n_real``,
        ``n_fake``, ``inception_sha256``, ...) and ``temperature``.

    Raises:
        FlowVAEError: fewer than 2 images in either set, a missing network file, a bad ``n`` or
            temperature.
    """
    from .fid import fid_kid

    check_temperature(temperature)
    features = inception_network(None, model.device) if features is None else features
    fake = generate(model, n, temperature, seed)
    res = fid_kid(real, fake, features)
    res["temperature"] = temperature
    return res
