"""Samples of any model kind: grids at several temperatures, many samples in batches, and FID/KID
of samples against test images; for the flow kinds, statistics of the continuous samples.

Sample statistics. A flow's sample is its inverse ``x = f^-1(v; z)`` in the continuous pixel
range ``[-0.5, 0.5)``, then quantised to the bin each value falls in; the model's own
:meth:`~flowvae.models.base.GenerativeModel.draw` returns both, so the statistics describe the very
images ``sample`` gives. An undertrained or unstable model puts part of its mass outside that
range, and with the unbounded inverse of the ``alpha = 1`` coupling (:mod:`flowvae.flows.coupling`)
some samples beyond any float range. :func:`draw_samples` returns, beside the uint8 images, how
many pixels were clamped to the end bins (finite values outside the range), how many were
non-finite (NaN/Inf: only a model whose weights or network outputs are themselves non-finite still
yields them; they become black pixels), and how many samples saturated the inverse
(:data:`~flowvae.flows.coupling.INVERSE_LIMIT`). The rule that ``flowvae check`` applies to them
is :func:`sample_health`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..flows.coupling import INVERSE_LIMIT
from ..models.base import GenerativeModel, check_count, check_memory, check_temperature
from ..progress import progress
from ._layout import inference_layout

__all__ = ["sample_grids", "sample_grids_with_stats", "draw_samples", "pixel_stats", "merge_stats", "sample_health",
           "write_sample_stats", "generate", "inception_network", "fid_run", "FAR", "FAR_WARNING_FRACTION",
           "SAMPLE_STATS_FILE"]

SAMPLE_STATS_FILE = "sample_stats.json"
"""Name of the statistics file :func:`write_sample_stats` writes beside the grids."""

FAR_WARNING_FRACTION = 0.01
"""Fraction of *far* pixels (finite, ``|x| > FAR``) above which :func:`sample_health` calls a model
undertrained or unstable. Clamped pixels alone say little: a trained flow clamps many at
temperature 1 too (19% on the digits, where its density spills just past the edge of the
background's bin), but almost none lie far out (0.2%); docs/commands/check.md has the figures."""
FAR = 1.0
"""A pixel is far out of range beyond ``|x| > FAR``: half the pixel range past its edge."""


def pixel_stats(x: Tensor, n_bins: int, saturated: Tensor | None = None) -> dict[str, Any]:
    """Statistics of continuous flow samples ``x [N, C, H, W]`` (pixel range ``[-0.5, 0.5)``).

    A pixel is *clamped* when it is finite and its bin ``floor((x + 0.5) * n_bins)`` lies outside
    ``0..n_bins-1`` (the quantiser clips it to the end bin; exactly the pixels
    :meth:`~flowvae.models.flow_decoder.FlowDecoderModel.continuous_to_uint8` clips), *far* when it is finite and
    ``|x| > FAR`` (half the range past the edge), *non-finite* when NaN/Inf.

    Args:
        x: continuous samples, any float dtype.
        n_bins: quantisation bins (``2 ** n_bits``).
        saturated: bool ``[N]``, the samples whose inverse saturated (:func:`draw_samples`), or ``None``.

    Returns:
        ``samples``, ``pixels``, ``clamped_pixels``, ``clamped_fraction`` (of all pixels),
        ``far_pixels``, ``far_fraction`` (a subset of the clamped ones), ``nonfinite_pixels``,
        ``nonfinite_samples`` (samples with any), ``saturated_samples`` (``None`` when not given) and
        ``max_abs`` (largest finite ``|x|``, pixel-range units where 0.5 is the edge; ``None`` when
        no value is finite). Plain Python numbers (JSON-ready).
    """
    finite = torch.isfinite(x)
    raw = torch.floor((x + 0.5) * n_bins)
    clamped = finite & ((raw < 0) | (raw > n_bins - 1))
    n_pix = x.numel()
    n_clamped, n_far = int(clamped.sum()), int((finite & (x.abs() > FAR)).sum())
    return {"samples": int(x.shape[0]), "pixels": n_pix, "clamped_pixels": n_clamped,
            "clamped_fraction": n_clamped / n_pix if n_pix else 0.0,
            "far_pixels": n_far, "far_fraction": n_far / n_pix if n_pix else 0.0,
            "nonfinite_pixels": int((~finite).sum()),
            "nonfinite_samples": int((~finite).flatten(1).any(1).sum()),
            "saturated_samples": None if saturated is None else int(saturated.sum()),
            "max_abs": float(x[finite].abs().max()) if bool(finite.any()) else None}


def _no_stats(n: int) -> dict[str, Any]:
    # Decoders that end in a distribution draw uint8 pixels directly: nothing is clamped or overflows.
    return {"samples": n, "pixels": None, "clamped_pixels": None, "clamped_fraction": None,
            "far_pixels": None, "far_fraction": None, "nonfinite_pixels": None, "nonfinite_samples": None,
            "saturated_samples": None, "max_abs": None}


@torch.no_grad()
def draw_samples(model: GenerativeModel, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
    """``model.sample(n, temperature, ...)`` and the statistics of its continuous samples.

    The model's :meth:`~flowvae.models.base.GenerativeModel.draw` gives the images ``model.sample``
    returns, bit for bit, and for the flow kinds the continuous inverse behind them and which
    samples saturated it: their clamped, far and non-finite pixels are counted here. Other kinds
    get statistics of ``None`` (their pixels are drawn as uint8).

    Args:
        model: any model, in eval mode.
        n: samples (>= 1).
        temperature: temperature of the local (or only) latent, finite and >= 0.
        global_temperature: temperature of the global code's prior.
        generator: source of the randomness.

    Returns:
        ``(uint8 [n, C, H, W] on the model's device, stats)``; ``stats`` is :func:`pixel_stats`'s
        dict plus ``temperature`` and ``global_temperature``.

    Raises:
        ConfigError: a bad ``n`` or temperature, or a global temperature the kind does not have.
    """
    check_count("n", n)
    check_temperature(temperature)
    check_temperature(global_temperature, "global temperature")
    # Before the model's own bound on draw(), with the command's advice.
    check_memory(f"sample(n={n:,})", n, (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size),
                 model.device, "draw fewer samples (flowvae sample -n)")
    with inference_layout(model):  # channels-last on the CPU: faster convolutions, the same pixels
        drawn = model.draw(n, temperature, global_temperature=global_temperature, generator=generator)
    stats = (_no_stats(n) if drawn.continuous is None
             else pixel_stats(drawn.continuous, 2 ** model.n_bits, drawn.saturated))
    return drawn.images, {"temperature": float(temperature), "global_temperature": float(global_temperature), **stats}


def sample_health(stats: dict[str, Any]) -> tuple[str, str]:
    """The verdict of ``flowvae check`` on :func:`draw_samples`'s statistics: ``(level, detail)``.

    * ``"fail"``: any non-finite pixel. With the saturating inverse only non-finite weights or
      network outputs produce them: a broken model.
    * ``"warn"``: all finite, but some sample saturated the inverse flow, or more than
      :data:`FAR_WARNING_FRACTION` of the pixels lie far out of range (``|x| > FAR``): an
      undertrained or unstable model. Its samples are still drawn (clamped), and its likelihoods,
      weights and round trip are judged by the other checks.
    * ``"ok"``: otherwise. Clamped pixels are reported but do not warn on their own.

    Kinds without continuous samples (statistics of ``None``) are ``"ok"``.
    """
    n, t = stats["samples"], stats.get("temperature", 1.0)
    if stats.get("nonfinite_pixels") is None:
        return "ok", f"{n} samples at temperature {t:g} drawn"
    if stats["nonfinite_pixels"]:
        return "fail", (f"{stats['nonfinite_samples']} of {n} samples at temperature {t:g} hold "
                        f"{stats['nonfinite_pixels']} NaN/Inf pixels (non-finite weights or network outputs: "
                        f"a broken model)")
    sat = stats.get("saturated_samples") or 0
    detail = (f"{n} samples at temperature {t:g} finite; {100 * stats['clamped_fraction']:.1f}% of pixels "
              f"clamped to the pixel range, {100 * stats['far_fraction']:.1f}% far beyond it (|x| > {FAR:g})")
    if sat:
        detail += f"; {sat} of {n} samples saturated the inverse flow (|values| reached {INVERSE_LIMIT:.1e})"
    if sat or stats["far_fraction"] > FAR_WARNING_FRACTION:
        return "warn", detail + " (an undertrained or unstable model)"
    return "ok", detail


def write_sample_stats(folder: str | Path, grids: list[tuple[str | Path, dict[str, Any]]],
                       root: str | Path | None = None) -> Path:
    """Write ``folder/sample_stats.json`` for the grid files just written, for ``flowvae report``.

    ``{"grids": [{"file": name, "sha256": hex digest of the file, "health": level, "detail": text,
    **stats}, ...]}`` with :func:`sample_health`'s verdict; the digest lets the report show the
    statistics only beside the very image they describe (a grid rewritten later, e.g. by
    training, no longer matches). Records of other grids already in the file are kept while
    their files are unchanged.

    Args:
        folder: the folder of the grids (``RUN/samples`` by default).
        grids: ``(path of the written PNG, its draw_samples stats)`` per grid.
        root: refuse a ``folder`` that resolves outside it (:func:`flowvae.safe_io.atomic_write`).

    Returns:
        The path written.

    Raises:
        CheckpointError: the file cannot be written there.
    """
    from .. import safe_io
    from ..errors import CheckpointError

    def digest(path: Path) -> str | None:
        try:
            return hashlib.sha256(safe_io.read_bytes(path, 1 << 30)).hexdigest()
        except (OSError, CheckpointError):
            return None

    folder, records = Path(folder), []
    for path, stats in grids:
        level, detail = sample_health(stats)
        records.append({"file": Path(path).name, "sha256": digest(Path(path)), "health": level, "detail": detail,
                        **stats})
    out = folder / SAMPLE_STATS_FILE
    # Keep the records of grids an earlier call wrote (other temperatures) while their files are unchanged.
    try:
        old = json.loads(safe_io.read_text(out, 1 << 24)).get("grids", []) if out.is_file() else []
    except (OSError, ValueError, AttributeError, CheckpointError):
        old = []  # unreadable: rewritten from this call's grids alone
    names = {r["file"] for r in records}
    kept = [r for r in old if isinstance(r, dict) and isinstance(r.get("file"), str) and r["file"] not in names
            and "/" not in r["file"] and r.get("sha256") == digest(folder / r["file"])]
    safe_io.atomic_write(out, json.dumps({"grids": kept + records}, indent=2).encode(), root=root)
    return out


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
    return [(t, x) for t, x, _ in sample_grids_with_stats(model, temperatures, n, global_temperature, seed)]


@torch.no_grad()
def sample_grids_with_stats(model: GenerativeModel, temperatures: list[float], n: int,
                            global_temperature: float = 1.0, seed: int = 0) -> list[tuple[float, Tensor, dict]]:
    """:func:`sample_grids` with :func:`draw_samples`'s statistics of each grid:
    ``[(temperature, uint8 [n, C, H, W] on the CPU, stats), ...]``; same images, same errors."""
    check_count("n", n)
    check_temperature(global_temperature, "global temperature")
    out = []
    for t in temperatures:
        check_temperature(t)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        x, stats = draw_samples(model, n, t, global_temperature=global_temperature, generator=gen)
        out.append((t, x.cpu(), stats))
    return out


@torch.no_grad()
def generate(model: GenerativeModel, n: int, temperature: float = 1.0, seed: int = 0,
             batch_size: int = 256) -> Tensor:
    """``n`` samples at ``temperature`` drawn ``batch_size`` at a time from one seeded generator:
    uint8 ``[n, C, H, W]`` on the CPU (:func:`draw_samples` of each batch)."""
    return _generate(model, n, temperature, seed, batch_size)[0]


def _generate(model: GenerativeModel, n: int, temperature: float, seed: int,
              batch_size: int) -> tuple[Tensor, dict[str, Any]]:
    """:func:`generate` and the statistics of all its batches together (:func:`merge_stats`)."""
    check_count("n", n)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    batches = progress(range(0, n, batch_size), total=-(-n // batch_size), desc="sampling")
    images, stats = [], []
    for i in batches:
        x, st = draw_samples(model, min(batch_size, n - i), temperature, generator=gen)
        images.append(x.cpu())
        stats.append(st)
    return torch.cat(images), merge_stats(stats)


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`draw_samples` statistics of several batches at one temperature, as one."""
    out = dict(parts[0])
    out["samples"] = sum(p["samples"] for p in parts)
    for key in ("pixels", "clamped_pixels", "far_pixels", "nonfinite_pixels", "nonfinite_samples",
                "saturated_samples"):
        vals = [p[key] for p in parts]
        out[key] = None if any(v is None for v in vals) else sum(vals)
    maxes = [p["max_abs"] for p in parts if p["max_abs"] is not None]
    out["max_abs"] = max(maxes) if maxes else None
    for key in ("clamped", "far"):
        out[f"{key}_fraction"] = (None if out["pixels"] is None else
                                  out[f"{key}_pixels"] / out["pixels"] if out["pixels"] else 0.0)
    return out


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
        ``n_fake``, ``inception_sha256``, ...), ``temperature`` and ``sample_stats`` (the samples'
        :func:`draw_samples` statistics, all batches together).

    Raises:
        FlowVAEError: fewer than 2 images in either set, a missing network file, a bad ``n`` or
            temperature.
    """
    from .fid import fid_kid

    check_temperature(temperature)
    features = inception_network(None, model.device) if features is None else features
    fake, stats = _generate(model, n, temperature, seed, 256)
    res = fid_kid(real, fake, features)
    res["temperature"] = temperature
    res["sample_stats"] = stats  # an FID of clamped, unstable samples says so
    return res
