"""The kinds whose decoder is an invertible flow: what they share, written once.

A flow-decoder model maps an image to a local code through a conditional Glow, ``v = f(x; z)``,
given an optional global code ``z`` (paper §2.2, eq. 3); the image is exactly ``x = f^-1(v; z)``.
:class:`FlowDecoderModel` is the base of the three families that have one:

=================================================  ================================  ==================
class                                              kinds                             the code z
=================================================  ================================  ==================
:class:`~flowvae.models.flowvae.FlowVAE`           ``flowvae``, ``z_prior``          q(z|x), flow prior
:class:`~flowvae.models.glow.Glow`                 ``refined_glow``, ``glow``        none
:class:`~flowvae.models.multistage.MultiStage`     ``multistage``                    stage 1's factors
=================================================  ================================  ==================

It owns the pixel conventions, the bound and every tool built on the decoder: a subclass builds
``decoder`` (a :class:`~flowvae.flows.base.Flow` whose ``forward(x, z)`` gives ``(v, logdet)``),
``prior`` (a :class:`CodePrior`, kinds with a code), ``dequantizer`` and sets ``uses_z``; with a
code it also defines :meth:`FlowDecoderModel.posterior` and :meth:`FlowDecoderModel.draw_code`.
What evaluation may ask of such a model is the protocol :class:`InvertibleDecoder`.

Units and conventions used throughout:

* Images enter and leave the public API as ``uint8`` tensors ``[B, C, H, W]`` with values
  0..255. Internally they are quantised to ``n_bins = 2**n_bits`` bins and scaled to
  ``[-0.5, 0.5)``: bin ``k`` covers ``[k / n_bins - 0.5, (k + 1) / n_bins - 0.5)``.
* Uniform dequantisation (Uria et al. 2013): ``x = (k + u) / n_bins - 0.5`` with
  ``u ~ U[0, 1)^D``. The probability of a discrete image is the density integrated over its bin,
  so ``log P(k) >= E_u[log p(x)] - D log n_bins``: the ``-D log n_bins`` discretisation term.
* Log-likelihoods are in nats per image; bits/dim divides the negative bound by ``D ln 2``
  with ``D = C * H * W``.
* Every sample is drawn in one order from the caller's generator: the code from its prior (at
  ``global_temperature``), then ``v ~ N(0, temperature^2 I)`` (:meth:`FlowDecoderModel.draw`, which
  :meth:`~FlowDecoderModel.sample` and every sample grid and statistic go through).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..data import bins_to_uint8, quantize
from ..errors import ConfigError, DataError
from ..flows.base import Flow
from ..flows.coupling import saturated_samples, track_saturation
from ..flows.dequant import VariationalDequantizer
from ..flows.glow import ConditionalGlow
from ..maths import sharded_noise, standard_normal_logprob
from ..settings import setting
from ._checks import check_manipulation_args, check_traverse_args, edited_codes
from .base import (
    Capabilities,
    GenerativeModel,
    ModelSettings,
    Samples,
    check_codes,
    check_count,
    check_temperature,
)

__all__ = ["CodePrior", "FlowDecoderModel", "GlowSettings", "InvertibleDecoder", "StandardNormalPrior",
           "WrappedGlow"]

log = logging.getLogger("flowvae.models.flowvae")  # the logger of earlier releases, which users may filter


@dataclass
class GlowSettings(ModelSettings):
    """The conditional refined Glow v = f(x; z) shared by the flow kinds (paper §2.2, Appendix B).

    ``steps`` has one entry per level of the decoder: an ``int`` is a plain level of that many
    flow steps; a pair ``[a, b]`` is a fine-grained level (Figure 3c): ``a`` steps, factor out
    ``1/factor_out`` of the channels, ``b`` steps, factor out again. ``hidden`` gives the
    coupling-network width per level. Defaults: the published CIFAR-10 model.
    """

    steps: list[int | list[int]] = setting(factory=lambda: [2, [6, 6], [6, 6], 4], ge=0, le=512,
                                           help="flow steps per level; [a, b] = fine-grained level")
    hidden: list[int] = setting(factory=lambda: [24, 512, 512, 512], ge=1, le=8192,
                                help="coupling-network width per level")
    factor_out: int = setting(4, ge=2, le=64, help="M of the fine-grained multi-scale architecture")
    coupling: Literal["affine", "additive"] = "affine"
    alpha: float = setting(1.0, gt=0, le=100, help="scale bound of Appendix B.2")
    conv1x1: Literal["lu", "plain"] = "lu"
    coupling_kernel: int = setting(3, ge=1, le=7, help="side of the coupling networks' outer convolutions (3: eq. 7; "
                                   "1: a local decoder that leaves global structure to z, a departure from the paper)")
    dequantization: Literal["uniform", "variational"] = "uniform"
    dequant_hidden: int = setting(32, ge=1, le=4096, help="width of q(u|x)'s networks (variational only)")
    dequant_steps: int = setting(2, ge=1, le=64, help="blocks of q(u|x)'s flow (variational only)")

    @property
    def levels(self) -> int:
        """Levels of the decoder (entries of ``steps``)."""
        return len(self.steps)

    def validate(self) -> None:
        if not self.steps:
            raise ConfigError("model.steps must list at least one level")
        for s in self.steps:
            if isinstance(s, list) and len(s) != 2:
                raise ConfigError(f"model.steps entries are an int or a pair [a, b]; got {s!r}")
        if self.coupling_kernel % 2 == 0:
            raise ConfigError(f"model.coupling_kernel must be odd (the output keeps the input's size), "
                              f"got {self.coupling_kernel}; use 1 or 3")
        if len(self.hidden) != len(self.steps):
            raise ConfigError(f"model.hidden needs one width per level: {len(self.steps)} levels in model.steps, "
                              f"{len(self.hidden)} widths in model.hidden")

    def departures(self) -> list[str]:
        k = self.coupling_kernel
        return [f"{k}x{k} coupling-network convolutions instead of eq. (7)'s 3x3"] if k != 3 else []


class CodePrior(Protocol):
    """The prior of a flow-decoder model's code: :class:`~flowvae.flows.glow.FlowPrior` (eq. 2) or
    :class:`StandardNormalPrior`."""

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)`` in nats ``[B]`` of codes ``z [B, d]``."""

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``[n, d]`` draws, the base Gaussian's standard deviation scaled by ``temperature``."""


class StandardNormalPrior(nn.Module):
    """N(0, I) over ``dim`` dimensions, with :class:`~flowvae.flows.glow.FlowPrior`'s interface
    (the multi-stage model's prior of the factors)."""

    _device_anchor: Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        # Follows the model to its device, so that samples are drawn there; not part of the weights.
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) in nats ``[B]`` for ``z [B, d]``."""
        return standard_normal_logprob(z)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``[n, d]`` draws of N(0, temperature^2 I)."""
        device = self._device_anchor.device
        return torch.randn(n, self.dim, generator=generator, device=device) * temperature


class WrappedGlow(Flow):
    """Base of decoders built around a :class:`ConditionalGlow` ``self.glow``: ``dim`` and the
    ``recompute`` switch (``train.recompute``) are the wrapped flow's. Subclasses define
    ``forward(x, cond)`` and ``inverse(v, cond)`` (:mod:`flowvae.flows.base`)."""

    def __init__(self, glow: ConditionalGlow):
        super().__init__()
        self.glow = glow
        self.dim = glow.dim

    @property
    def recompute(self) -> bool:
        """Whether the wrapped flow recomputes its activations by inversion in the backward pass."""
        return self.glow.recompute

    @recompute.setter
    def recompute(self, value: bool) -> None:
        self.glow.recompute = value


@runtime_checkable
class InvertibleDecoder(Protocol):
    """What evaluation may ask of a model whose decoder is an invertible flow (every
    :class:`FlowDecoderModel`; the kinds with the ``exact_codes`` capability).

    Attributes:
        n_bits: bits per pixel modelled; ``n_bins = 2 ** n_bits`` quantisation bins.
        dim: values per image, ``C * H * W`` (the dimension of the local code v).
        uses_z: whether the decoder is conditioned on a per-image code z.
        decoder: the flow ``v = f(x; z)`` (data to latent, :mod:`flowvae.flows.base`).
        prior: the code's prior (:class:`CodePrior`), ``None`` without a code.
    """

    n_bits: int
    n_bins: int
    dim: int
    uses_z: bool
    decoder: Flow
    prior: Any

    def to_bins(self, x: Tensor) -> Tensor:
        """uint8 images -> float bin indices."""

    def centres(self, bins: Tensor) -> Tensor:
        """Bin indices -> bin centres in ``[-0.5, 0.5)``."""

    def dequantize(self, bins: Tensor, generator: torch.Generator | None = None,
                   shard: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Dequantised images and ``log q(u|k)``."""

    def continuous_to_uint8(self, x: Tensor) -> Tensor:
        """Continuous images in the pixel range -> uint8."""

    def encode(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """``(z, v)`` of uint8 images."""

    def decode(self, z: Tensor | None, v: Tensor) -> Tensor:
        """uint8 images of codes."""

    def decode_samples(self, z: Tensor | None, v: Tensor) -> Samples:
        """:meth:`decode` with the continuous images and the saturation mask."""

    def draw(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
             generator: torch.Generator | None = None) -> Samples:
        """``n`` samples with their continuous values and saturation mask."""

    def inverse_error(self, x: Tensor) -> float:
        """Largest ``|f^-1(f(x)) - x|`` of uint8 images at their bin centres, in bins."""


def _weights(name: str, values: Any) -> list[float]:
    """``values`` as a list of floats if it is a non-empty list of finite numbers; else :class:`ConfigError`."""
    vals = list(values) if isinstance(values, (list, tuple)) else None
    if not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
        raise ConfigError(f"{name} must be a non-empty list of finite numbers, got {values!r}")
    return [float(v) for v in vals]


def _lerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    # exact at the ends, so the corner cells decode to the real images bit for bit
    if t == 0:
        return a
    if t == 1:
        return b
    return (1 - t) * a + t * b


def _slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    if t == 0:
        return a
    if t == 1:
        return b
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / na) * (b / nb)).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return torch.where(so.abs() < 1e-6, _lerp(a, b, t), out)


def noise_like(draw: Any, like: Tensor, generator: torch.Generator | None, shard: tuple[int, int] | None) -> Tensor:
    """``draw`` (``torch.rand`` / ``torch.randn``) of ``like``'s shape, device and dtype, sharded under
    data parallelism (:func:`~flowvae.maths.sharded_noise`)."""
    return sharded_noise(draw, tuple(like.shape), like, generator, shard)


class FlowDecoderModel(GenerativeModel):
    """Base of the kinds whose decoder is an invertible flow (module docstring).

    A subclass's constructor calls ``super().__init__(cfg, n_bits)`` first, then builds, in the
    order its state dict and optimiser state keep, ``decoder`` (with :meth:`build_glow`), the
    code's ``encoder``/``prior`` where it has one, and ``dequantizer`` (:meth:`build_dequantizer`),
    sets ``uses_z`` and ``dim``. Kinds with a code also define :meth:`posterior`,
    :meth:`draw_code` and :attr:`latent_dim`.

    Args:
        cfg: the kind's config (a :class:`GlowSettings`).
        n_bits: bits per pixel of the modelled data (1..8).
    """

    uses_z: bool
    decoder: ConditionalGlow | WrappedGlow
    prior: Any
    dequantizer: VariationalDequantizer | None

    def __init__(self, cfg: ModelSettings, n_bits: int = 8):
        super().__init__(cfg, n_bits)
        self.n_bins = 2 ** n_bits
        self.uses_z = False
        self.prior = None

    # ------------------------------------------------------------------ construction
    @staticmethod
    def build_glow(cfg: GlowSettings, cond_dim: int, architecture: str = "refined",
                   cond_image: tuple[int, int] | None = None) -> ConditionalGlow:
        """The conditional Glow of ``cfg``'s fields with ``cond_dim`` values of conditioning.

        Raises:
            ValueError: an architecture that cannot be built for this image shape.
        """
        return ConditionalGlow(cfg.in_channels, cfg.image_size, cfg.steps, cfg.hidden, cond_dim=cond_dim,
                               factor_out=cfg.factor_out, alpha=cfg.alpha, additive=cfg.coupling == "additive",
                               conv1x1=cfg.conv1x1, architecture=architecture, cond_image=cond_image,
                               kernel_size=cfg.coupling_kernel)

    @staticmethod
    def build_dequantizer(cfg: GlowSettings) -> VariationalDequantizer | None:
        """q(u|x) of ``model.dequantization=variational`` (Flow++), ``None`` for uniform noise."""
        if cfg.dequantization != "variational":
            return None
        return VariationalDequantizer(cfg.in_channels, cfg.dequant_hidden, cfg.dequant_steps)

    # ------------------------------------------------------------------ declared
    @property
    def capabilities(self) -> Capabilities:
        """Exact codes, bf16 networks and recomputation; with a code z also the global/local
        split, a vector latent and the code's own prior."""
        return Capabilities(global_local=self.uses_z, exact_codes=True, vector_latent=self.uses_z,
                            code_prior=self.uses_z, bf16=True, recompute=True)

    def code_log_prior(self, z: Tensor) -> Tensor:
        """``log p(z)`` in nats ``[B]`` under the code's prior (the flow prior of eq. 2 for the paper's
        model), for codes ``z [B, d]`` (:meth:`GenerativeModel.code_log_prior`).

        Raises:
            ConfigError: a kind without the ``code_prior`` capability.
        """
        self.require("code_prior", "the KL of the code z")
        return self.prior.log_prob(z)

    def set_recompute(self, enabled: bool) -> FlowDecoderModel:
        """Recompute the decoder's activations by inversion in the backward pass (``train.recompute``)."""
        self.decoder.recompute = bool(enabled)
        return self

    def set_precision(self, precision: str) -> FlowDecoderModel:
        """``"fp32"`` (default) or ``"bf16"``: run the decoder's coupling networks under bfloat16
        autocast. Everything invertible (ActNorm, 1x1 convolutions, the affine transforms and their
        log-determinants), the encoder, the prior and the loss stay in float32, so exact
        invertibility is unaffected: the networks only choose the scale and bias.

        Raises:
            ConfigError: unknown precision.
        """
        super().set_precision(precision)
        dtypes = {"fp32": None, "bf16": torch.bfloat16}
        from ..networks.coupling_nets import ConvCouplingNet

        for m in self.modules():
            if isinstance(m, ConvCouplingNet):
                m.compute_dtype = dtypes[precision]
        return self

    # ------------------------------------------------------------------ preprocessing
    def to_bins(self, x: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` (0..255) -> float bin indices ``0..n_bins-1`` (floor of ``x / 2**(8-n_bits)``).

        Raises:
            DataError: ``x`` is not uint8 of this model's image shape.
        """
        self.check_input(x)
        return quantize(x, self.n_bits).float()

    def from_bins(self, bins: Tensor) -> Tensor:
        """Bin indices -> uint8 pixel values (:func:`~flowvae.data.bins_to_uint8`: full 0..255 range, inside
        each bin; exact inverse for 8 bits)."""
        return bins_to_uint8(bins.long(), self.n_bits)

    def centres(self, bins: Tensor) -> Tensor:
        """Bin centres in ``[-0.5, 0.5)``."""
        return (bins + 0.5) / self.n_bins - 0.5

    def dequantize(self, bins: Tensor, generator: torch.Generator | None = None,
                   shard: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Dequantised images ``(k + u) / n_bins - 0.5`` and ``log q(u|k)`` ``[B]`` in nats.

        Uniform: ``u ~ U[0, 1)``, ``log q = 0``. Variational (``model.dequantization=variational``,
        Flow++): ``u ~ q(u|k)``, a conditional flow (:class:`~flowvae.flows.dequant.VariationalDequantizer`).
        """
        if self.dequantizer is None:
            u = noise_like(torch.rand, bins, generator, shard)
            return (bins + u) / self.n_bins - 0.5, bins.new_zeros(bins.shape[0])
        eps = noise_like(torch.randn, bins, generator, shard)
        u, log_q = self.dequantizer.sample(self.centres(bins), eps)
        return (bins + u) / self.n_bins - 0.5, log_q

    def continuous_to_uint8(self, x: Tensor) -> Tensor:
        """Continuous images in ``[-0.5, 0.5)`` -> uint8, by the bin each value falls in.

        Values outside the range are clipped to the end bins. The inverse of an affine coupling
        divides by its scale, so a sample far out in the tails of v can overflow; its non-finite
        pixels become 0 with a warning instead of failing the whole batch.
        """
        bad = ~torch.isfinite(x)
        if bad.any():
            log.warning("%d non-finite pixel values in %d image(s) (inverse flow overflowed); set to 0",
                        int(bad.sum()), int(bad.flatten(1).any(1).sum()))
            x = torch.where(bad, torch.full_like(x, -0.5), x)
        bins = torch.floor((x + 0.5) * self.n_bins).clamp(0, self.n_bins - 1)
        return self.from_bins(bins)

    # ------------------------------------------------------------------ the code
    def posterior(self, bins: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance ``[B, d]`` of the code given bin indices ``bins [B, C, H, W]``
        (kinds with a code define it).

        Raises:
            ConfigError: a kind without a code.
        """
        raise ConfigError(f"a {self.kind!r} model has no global code z")

    def draw_code(self, bins: Tensor, k: int, generator: torch.Generator | None,
                  shard: tuple[int, int] | None) -> tuple[Tensor | None, Tensor | None]:
        """The codes the bound conditions on, ``k`` per image ``[B * k, d]`` (images repeated in place),
        and their KL term ``log q(z|x) - log p(z)`` in nats ``[B * k]`` (``None``: 0, a code that is
        a function of x). Drawn after the dequantisation noise, from the same ``generator`` and
        ``shard`` (:meth:`log_weights`). ``(None, None)`` for kinds without a code."""
        return None, None

    # ------------------------------------------------------------------ likelihood terms
    def log_weights(self, bins: Tensor, k: int = 1, generator: torch.Generator | None = None,
                    shard: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Per-sample terms of the bound, each ``[B, k]`` in nats.

        For each image, ``k`` independent pairs (dequantisation noise ``u``, code ``z``, see
        :meth:`draw_code`) give ``log_w = log p(x + u | z) + log p(z) - log q(z|x) - D log n_bins
        - log q(u|x)``, a term whose mean is the ELBO (eq. 2) on the discrete image and whose
        log-mean-exp over ``k`` is the importance-weighted bound. Also returned: ``kl = log q(z|x)
        - log p(z)`` (the Monte Carlo KL estimate; 0 without a code, or with a code that is a
        function of x) and ``log_px_z``; and, with a code, the codes themselves, ``z [B, k, d]``.

        ``shard = (rank, world)``: ``bins`` is slice ``rank`` of ``world`` equal slices of a global
        batch; the noise is drawn for the whole global batch and sliced the same way, so data-parallel
        training sees exactly the noise of a single process.
        """
        b = bins.shape[0]
        rep = bins.repeat_interleave(k, 0) if k > 1 else bins
        x, log_q_u = self.dequantize(rep, generator, shard)
        disc = self.dim * math.log(self.n_bins)
        z, kl = self.draw_code(bins, k, generator, shard)
        if kl is None:
            kl = x.new_zeros(x.shape[0])
        v, logdet = self.decoder(x, z)
        log_px_z = standard_normal_logprob(v) + logdet
        log_w = log_px_z - kl - disc - log_q_u
        out = {k_: t.view(b, k) for k_, t in (("log_w", log_w), ("kl", kl), ("log_px_z", log_px_z))}
        if z is not None:
            out["z"] = z.view(b, k, -1)
        return out

    def loss(self, x: Tensor, generator: torch.Generator | None = None,
             shard: tuple[int, int] | None = None, *, kl_weight: float | Tensor = 1.0,
             **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss: the negative bound of :meth:`log_weights` (one sample) in bits/dim,
        averaged over the batch; ``stats``: ``bpd`` (the loss) and ``kl`` (nats).

        Raises:
            DataError: ``x`` is not uint8 of this model's image shape.
            ConfigError: a ``kl_weight`` other than 1 (this objective has no KL term to weight).
        """
        if isinstance(kl_weight, Tensor) or kl_weight != 1:
            raise ConfigError(f"a {self.kind!r} model has no KL term to weight (kl_weight={float(kl_weight)!r}); "
                              f"KL warm-up applies to the kinds with a global code z")
        terms = self.log_weights(self.to_bins(x), 1, generator, shard)
        bpd = -terms["log_w"][:, 0] / (self.dim * math.log(2))
        loss = bpd.mean()
        return loss, {"bpd": loss.detach(), "kl": terms["kl"].mean().detach()}

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Bits/dim of uint8 images ``[B, C, H, W]`` with ``k`` posterior samples, each ``[B]``.

        Returns ``elbo_bpd`` (negative ELBO averaged over the ``k`` samples, as the paper reports),
        ``iw_bpd`` (negative importance-weighted bound, ``-log mean_k exp(log_w)``; tighter, equal
        to ``elbo_bpd`` when ``k == 1``) and ``kl`` (nats, averaged over samples).

        Raises:
            DataError: ``x`` is not uint8 of this model's image shape.
            ConfigError: ``k`` is not a positive integer.
        """
        check_count("k", k)
        terms = self.log_weights(self.to_bins(x), k, generator)
        scale = self.dim * math.log(2)
        iw = torch.logsumexp(terms["log_w"], 1) - math.log(k)
        return {"elbo_bpd": -terms["log_w"].mean(1) / scale, "iw_bpd": -iw / scale,
                "kl": terms["kl"].mean(1)}

    def log_prob(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Lower bound on ``log P(x)`` in nats per image ``[B]``: the importance-weighted bound with ``k`` samples."""
        check_count("k", k)
        terms = self.log_weights(self.to_bins(x), k, generator)
        return torch.logsumexp(terms["log_w"], 1) - math.log(k)

    # ------------------------------------------------------------------ codes
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """Global and local codes of uint8 images ``[B, C, H, W]``.

        ``z`` is the posterior mean ``[B, d]`` (``None`` for the kinds without a code); ``v = f(x; z)``
        ``[B, C*H*W]`` with x at the bin centres, so :meth:`decode` returns the images exactly.
        """
        bins = self.to_bins(x)
        z = self.posterior(bins)[0] if self.uses_z else None
        v, _ = self.decoder(self.centres(bins), z)
        return z, v

    def _one_image(self, x: Any, name: str) -> Tensor:
        """``x`` as ``[1, C, H, W]`` (from ``[C, H, W]`` or ``[1, C, H, W]``), checked."""
        if isinstance(x, Tensor) and x.dim() == 3:
            x = x.unsqueeze(0)
        self.check_input(x)
        if x.shape[0] != 1:
            raise DataError(f"{name} must be one image [C, H, W] or [1, C, H, W], got a batch of {x.shape[0]}")
        return x

    def _codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`encode` for the kinds with z (callers have checked the capability)."""
        z, v = self.encode(x)
        if z is None:
            raise ConfigError(f"a {self.kind!r} model has no global code z")
        return z, v

    def _checked_codes(self, z: Tensor | None, v: Tensor) -> tuple[Tensor | None, Tensor]:
        """``(z, v)`` checked against this model and moved to its device and dtype."""
        v = check_codes(v, self.dim, "local codes v")
        if not self.uses_z:
            if z is not None:
                raise DataError(f"a {self.kind!r} model has no global code z: pass z=None")
        elif z is None:
            raise DataError(f"a {self.kind!r} model decodes from a global code z [B, {self.latent_dim}] and v; got z=None")
        else:
            z = check_codes(z, self.latent_dim, "global codes z", batch=v.shape[0]).to(self.device, self.dtype)
        return z, v.to(self.device, self.dtype)

    @torch.no_grad()
    def decode(self, z: Tensor | None, v: Tensor) -> Tensor:
        """uint8 images ``[B, C, H, W]`` from ``z [B, d]`` and ``v [B, C*H*W]``: ``x = f^{-1}(v; z)``.

        ``z`` is ``None`` for the kinds without a global code (``refined_glow``, ``glow``).

        Raises:
            DataError: ``v`` or ``z`` not a finite float tensor of that shape, batches of different
                sizes, or a ``z`` given to a kind without one (or missing for a kind with one).
        """
        z, v = self._checked_codes(z, v)
        x, _ = self.decoder.inverse(v, z)
        return self.continuous_to_uint8(x)

    @torch.no_grad()
    def decode_samples(self, z: Tensor | None, v: Tensor) -> Samples:
        """:meth:`decode` as :class:`~flowvae.models.base.Samples`: the images, the continuous inverse
        behind them and which samples saturated it. Same images and errors as :meth:`decode`."""
        z, v = self._checked_codes(z, v)
        with track_saturation() as masks:
            x, _ = self.decoder.inverse(v, z)
        return Samples(self.continuous_to_uint8(x), x, saturated_samples(masks, v.shape[0]))

    @torch.no_grad()
    def draw(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
             generator: torch.Generator | None = None) -> Samples:
        """``n`` samples as :class:`~flowvae.models.base.Samples` (images ``[n, C, H, W]``, the
        continuous inverse, which samples saturated it, the prior's inverse included).

        The one sampler of the flow kinds (:meth:`sample` returns its images): from ``generator``,
        first the code (kinds with one) from its prior with the base Gaussian at
        ``global_temperature``, then ``v ~ N(0, temperature^2 I)``; ``x = f^-1(v; z)``, quantised.
        The defaults (global temperature 1) reduce the temperature of the local code only, as
        Glow's reduced-temperature sampling applied to v.

        Raises:
            ConfigError: ``n`` not a positive integer, a temperature not finite and >= 0, a global
                temperature other than 1 for a kind without a code, or ``n`` samples that cannot fit
                in memory.
        """
        check_count("n", n)
        check_temperature(temperature)
        check_temperature(global_temperature, "global_temperature")
        if not self.uses_z and global_temperature != 1.0:
            raise ConfigError(f"a {self.kind!r} model has no global code; leave the global temperature at 1")
        # One block for the prior's inverse and the decoder's: a saturated z counts for its sample too.
        with track_saturation() as masks:
            z = self.prior.sample(n, global_temperature, generator) if self.uses_z else None
            v = torch.randn(n, self.dim, generator=generator, device=self.device) * temperature
            x, _ = self.decoder.inverse(v.to(self.device, self.dtype), z)
        return Samples(self.continuous_to_uint8(x), x, saturated_samples(masks, n))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` uint8 samples ``[n, C, H, W]``: the images of :meth:`draw` (its arguments, draws and errors)."""
        return self.draw(n, temperature, global_temperature=global_temperature, generator=generator).images

    @torch.no_grad()
    def inverse_error(self, x: Tensor) -> float:
        """How far the decoder's inverse is from exact on uint8 images ``x [B, C, H, W]``: the largest
        ``|f^-1(f(c; z); z) - c|`` over their bin centres ``c``, with ``z`` their posterior mean (kinds
        with a code), in bins (1 = one quantisation bin; exact uint8 round trips need well below 0.5).

        Raises:
            DataError: images that are not uint8 of the model's shape.
        """
        bins = self.to_bins(x)
        z = self.posterior(bins)[0] if self.uses_z else None
        c = self.centres(bins)
        v, _ = self.decoder(c, z)
        back, _ = self.decoder.inverse(v, z)
        return float((back - c).abs().max()) * self.n_bins

    @torch.no_grad()
    def latent_mean(self, x: Tensor) -> Tensor:
        """Posterior mean of the global code, ``[B, d]``, for uint8 images ``[B, C, H, W]``.

        Raises:
            ConfigError: a kind without z.
        """
        self.require("vector_latent", "latent_mean")
        return self.posterior(self.to_bins(x))[0]

    @torch.no_grad()
    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": (mean, logvar)}`` of the code's posterior, each ``[B, d]``; ``{}`` for the kinds
        without a code, whose only code v is exact (:meth:`GenerativeModel.posterior_moments`)."""
        if not self.uses_z:
            self.check_input(x)
            return {}
        return {"z": self.posterior(self.to_bins(x))}

    @torch.no_grad()
    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """``z`` (posterior mean ``[B, d]``, kinds with a code only) and ``v = f(x; z)`` ``[B, C*H*W]``."""
        z, v = self.encode(x)
        return {"v": v} if z is None else {"z": z, "v": v}

    # ------------------------------------------------------------------ tools of the global/local split
    @torch.no_grad()
    def switch_samples(self, x1: Tensor, x2: Tensor) -> Samples:
        """:meth:`switch` as :class:`~flowvae.models.base.Samples`: images ``[P, 4, C, H, W]``, their
        continuous inverse, and which of the ``4 P`` decodes saturated it (bool ``[P, 4]``)."""
        self.require("global_local", "switch")
        self.check_input(x1)
        self.check_input(x2)
        if x1.shape[0] != x2.shape[0]:
            raise DataError(f"switch pairs x1[i] with x2[i]: got {x1.shape[0]} and {x2.shape[0]} images")
        z1, v1 = self._codes(x1)
        z2, v2 = self._codes(x2)
        out = self.decode_samples(torch.cat([z1, z2, z2, z1]), torch.cat([v1, v1, v2, v2]))
        p = x1.shape[0]

        def pairs_first(t: Tensor) -> Tensor:
            return t.view(4, p, *t.shape[1:]).transpose(0, 1).contiguous()

        continuous = None if out.continuous is None else pairs_first(out.continuous)
        saturated = None if out.saturated is None else pairs_first(out.saturated)
        return Samples(pairs_first(out.images), continuous, saturated)

    @torch.no_grad()
    def switch(self, x1: Tensor, x2: Tensor) -> Tensor:
        """The switch operation (§3.2, Figure 1): swap the global codes of two sets of images.

        Args:
            x1, x2: uint8 images ``[P, C, H, W]`` (pairs ``(x1[i], x2[i])``).

        Returns:
            uint8 ``[P, 4, C, H, W]``: decodes of ``(v1, z1)``, ``(v1, z2)``, ``(v2, z2)``, ``(v2, z1)``.
            The first and third are ``x1`` and ``x2`` exactly (z is the posterior mean and v the
            exact local code of each image).

        Raises:
            ConfigError: for a kind without a global code.
            DataError: images that are not uint8 of the model's shape, or sets of different sizes.
        """
        return self.switch_samples(x1, x2).images

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, alphas: list[float] | None = None,
                    betas: list[float] | None = None, spherical: bool = False) -> Tensor:
        """Two-dimensional interpolation of eq. (8) between two images.

        ``h(z) = (1 - alpha) z1 + alpha z2`` and ``h(v) = (1 - beta) v1 + beta v2`` (or spherical
        interpolation of each code with ``spherical=True``).

        Args:
            x1, x2: uint8 images ``[C, H, W]`` or ``[1, C, H, W]``.
            alphas: weights over z, one grid row each (default ``[0, .25, .5, .75, 1]``, footnote 3).
            betas: weights over v, one grid column each (default ``[0, .1, ..., 1]``).

        Returns:
            uint8 ``[len(alphas), len(betas), C, H, W]``; cell ``(0, 0)`` is ``x1`` and cell
            ``(-1, -1)`` is ``x2`` exactly when the weights start at 0 and end at 1.

        Raises:
            DataError: ``x1`` or ``x2`` not one image of this model's shape.
            ConfigError: empty or non-finite weights, or a kind without z.
        """
        self.require("global_local", "interpolate")
        alphas = [0.0, 0.25, 0.5, 0.75, 1.0] if alphas is None else _weights("alphas", alphas)
        betas = [i / 10 for i in range(11)] if betas is None else _weights("betas", betas)
        x1, x2 = (self._one_image(x, name) for x, name in ((x1, "x1"), (x2, "x2")))
        z1, v1 = self._codes(x1)
        z2, v2 = self._codes(x2)
        mix = _slerp if spherical else _lerp
        za = torch.cat([mix(z1, z2, a) for a in alphas])
        vb = torch.cat([mix(v1, v2, b) for b in betas])
        z = za.repeat_interleave(len(betas), 0)
        v = vb.repeat(len(alphas), 1)
        return self.decode(z, v).view(len(alphas), len(betas), *x1.shape[1:])

    @torch.no_grad()
    def manipulate_samples(self, x: Tensor, direction: Tensor, alphas: list[float]) -> Samples:
        """:meth:`manipulate` as :class:`~flowvae.models.base.Samples`: images ``[B, len(alphas), C, H, W]``,
        their continuous inverse and which decodes saturated it (bool ``[B, len(alphas)]``). Same
        arguments and errors as :meth:`manipulate`."""
        self.require("vector_latent", "manipulate")
        x, direction, vals = check_manipulation_args(x, direction, alphas, self.latent_dim, self.check_input)
        z, v = self._codes(x)
        out = self.decode_samples(edited_codes(z, direction, vals), v.repeat_interleave(len(vals), 0))
        shape = (x.shape[0], len(vals))
        continuous = None if out.continuous is None else out.continuous.view(*shape, *out.continuous.shape[1:])
        saturated = None if out.saturated is None else out.saturated.view(*shape)
        return Samples(out.images.view(*shape, *out.images.shape[1:]), continuous, saturated)

    @torch.no_grad()
    def manipulate(self, x: Tensor, direction: Tensor, alphas: list[float]) -> Tensor:
        """Edits of the global code that keep the local code (issue 31): ``x' = f^-1(v; z + alpha d)``
        with ``z`` the posterior mean and ``v = f(x; z)`` the exact local code of each image, so only
        what the global code carries changes (the 2-D interpolation of eq. 8 moved along a direction
        instead of towards a second image).

        Args:
            x: uint8 images ``[B, C, H, W]`` (or one ``[C, H, W]``).
            direction: float ``[latent_dim]`` in the units of z (e.g.
                :func:`flowvae.evaluation.manipulation.label_directions`).
            alphas: edit strengths (multiples of ``direction``).

        Returns:
            uint8 ``[B, len(alphas), C, H, W]``; at strength 0 exactly ``x`` (as quantised to the model's bits).

        Raises:
            ConfigError: a kind without a global code, bad strengths, or more decodes than fit in memory.
            DataError: bad images, or a direction that is not a finite float vector ``[latent_dim]``.
        """
        return self.manipulate_samples(x, direction, alphas).images

    @torch.no_grad()
    def traverse(self, x_single: Tensor, dim_values: list[float], dims: list[int] | None = None,
                 local: str = "keep") -> Tensor:
        """Latent traversals of the global code: from the posterior mean z of one image, set one
        dimension of z at a time to each of ``dim_values`` and decode.

        Args:
            x_single: one uint8 image ``[C, H, W]`` or ``[1, C, H, W]``.
            dim_values: values given to the traversed dimension (absolute values of z).
            dims: dimensions of z to traverse; default all ``range(latent_dim)``.
            local: ``"keep"`` decodes with the image's own local code v (exact at the image's own
                value of z); ``"zero"`` with ``v = 0``, the most likely local code.

        Returns:
            uint8 ``[len(dims), len(dim_values), C, H, W]``.

        Raises:
            ConfigError: a model without z, bad values, dims or ``local``.
            DataError: not one image of this model's shape.
        """
        self.require("vector_latent", "traverse")
        if local not in ("keep", "zero"):
            raise ConfigError(f"local must be 'keep' or 'zero', got {local!r}")
        d_z = self.latent_dim
        x_single, vals, dims = check_traverse_args(x_single, dim_values, dims, d_z, self.check_input)
        z0, v0 = self._codes(x_single)
        z = z0.expand(len(dims), len(vals), d_z).clone()
        values = torch.tensor(vals, dtype=z.dtype, device=z.device)
        for a, d in enumerate(dims):
            z[a, :, d] = values
        n = len(dims) * len(vals)
        v = v0.expand(n, -1) if local == "keep" else torch.zeros(n, self.dim, device=v0.device, dtype=v0.dtype)
        img = self.decode(z.view(n, d_z), v.contiguous())
        return img.view(len(dims), len(vals), *img.shape[1:])
