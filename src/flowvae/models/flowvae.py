"""The model of the paper: a VAE with a compression encoder q(z|x), a flow prior p(z) and a
conditional Glow decoder v = f(x; z) (Ma et al., ICLR 2021, §2), and its baselines: the refined
Glow (§3.1, no z), "z only in the prior of v" (Table 3) and the original Glow (Kingma & Dhariwal
2018, no z).

``ModelConfig.kind`` selects one:

==================  ==========================================================================
``flowvae``         the paper's model: z enters every coupling of the refined Glow (eq. 7)
``z_prior``         refined Glow without z in the couplings; z sets v's Gaussian N(mu(z), sigma(z))
``refined_glow``    the refined Glow alone (v ~ N(0, I)), no encoder, no z
``glow``            the original Glow: one coupling per step, halves factored out under learned
                    Gaussians; ``steps`` per level (an ``[a, b]`` entry counts as ``a + b``)
==================  ==========================================================================

Units and conventions used throughout:

* Images enter and leave the public API as ``uint8`` tensors ``[B, C, H, W]`` with values
  0..255. Internally they are quantised to ``n_bins = 2**n_bits`` bins and scaled to
  ``[-0.5, 0.5)``: bin ``k`` covers ``[k / n_bins - 0.5, (k + 1) / n_bins - 0.5)``.
* Uniform dequantisation (Uria et al. 2013): ``x = (k + u) / n_bins - 0.5`` with
  ``u ~ U[0, 1)^D``. The probability of a discrete image is the density integrated over its bin,
  so ``log P(k) >= E_u[log p(x)] - D log n_bins``: the ``-D log n_bins`` discretisation term.
* The encoder sees the bin centres ``(k + 0.5) / n_bins - 0.5`` (no noise), so q(z|x) depends
  on the discrete image only and the bound is a valid bound on ``log P(k)``. With
  ``model.encoder_input=lower-edge`` it sees the lower bin edges ``k / n_bins - 0.5`` instead, as
  the authors' code does (``wolf/data/image.py::preprocess`` without noise); still a function of
  the discrete image, so the bound stays valid. Models imported with ``flowvae import-wolf`` use it.
* Log-likelihoods are in nats per image; bits/dim divides the negative bound by ``D ln 2``
  with ``D = C * H * W``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..data import bins_to_uint8, quantize
from ..errors import ConfigError, DataError
from ..flows.base import Flow
from ..flows.dequant import VariationalDequantizer
from ..flows.glow import ConditionalGaussian, ConditionalGlow, FlowPrior
from ..maths import gaussian_logprob, sharded_noise, standard_normal_logprob
from ..networks.encoder import CompressionEncoder
from ..networks.pixel_decoder import PixelDecoder
from ..settings import setting
from ._checks import check_traverse_args
from .base import Capabilities, GenerativeModel, ModelSettings, check_codes, check_count, check_temperature, register

__all__ = ["FlowVAE", "FlowVAEConfig", "GlowSettings", "ModelConfig", "build_model"]

log = logging.getLogger(__name__)


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


@dataclass
class FlowVAEConfig(GlowSettings):
    """Architecture of :class:`FlowVAE` and its baselines (``kind``: module docstring).

    ``d_z`` is the dimension of the global code z; the compression encoder q(z|x) has one
    residual level per ``encoder_widths`` entry (eq. 5) and the prior p(z) is a flow of
    ``prior_steps`` steps of width ``prior_hidden``.
    """

    kind: Literal["flowvae", "z_prior", "refined_glow", "glow"] = "flowvae"
    d_z: int = setting(64, ge=1, le=8192, help="dimension of the global code z")
    encoder_widths: list[int] = setting(factory=lambda: [48, 96, 96], ge=1, le=8192,
                                        help="channels of the encoder's residual levels")
    encoder_maps: int = setting(8, ge=1, le=1024, help="maps of the encoder's last 1x1 conv")
    prior_steps: int = setting(2, ge=0, le=64, help="steps of the flow prior p(z)")
    prior_hidden: int = setting(256, ge=1, le=8192, help="width of the flow prior's networks")
    encoder_input: Literal["centre", "lower-edge"] = setting(
        "centre", help="pixel values q(z|x) sees: bin centres, or lower bin edges as in the authors' code")
    free_bits: float = setting(0.0, ge=0, le=1e6, help="free bits, nats: the training loss uses max(free_bits, "
                               "batch mean of the KL) (0: off, the paper's objective; a departure from the paper)")
    aux_decoder_weight: float = setting(
        0.0, ge=0, le=1e6, help="weight of an auxiliary decoder's -log p_aux(x|z) in the training loss (Lucas & "
        "Verbeek 2018; 0: off, the paper's objective; a departure from the paper)")
    aux_decoder_hidden: int = setting(256, ge=1, le=65536, help="width of the auxiliary decoder's linear layer")

    def departures(self) -> list[str]:
        out = []
        if self.free_bits:
            out.append(f"free bits of {self.free_bits:g} nats")
        if self.aux_decoder_weight:
            out.append(f"an auxiliary decoder's -log p(x|z) at weight {self.aux_decoder_weight:g} in the loss")
        return [*out, *super().departures()]

    def validate(self) -> None:
        super().validate()
        for name in ("free_bits", "aux_decoder_weight"):
            if getattr(self, name) > 0 and self.kind not in ("flowvae", "z_prior"):
                raise ConfigError(f"model.{name} applies to the kinds with a global code z (flowvae, z_prior); "
                                  f"a {self.kind!r} model has no code z, leave it at 0")


ModelConfig = FlowVAEConfig  # the name of earlier releases


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


def _noise(draw: Any, like: Tensor, generator: torch.Generator | None, shard: tuple[int, int] | None) -> Tensor:
    return sharded_noise(draw, tuple(like.shape), like, generator, shard)


class WrappedGlow(Flow):
    """Base of decoders built around a :class:`ConditionalGlow` ``self.glow``: ``dim`` and the
    ``recompute`` switch (``train.recompute``) are the wrapped flow's."""

    def __init__(self, glow: ConditionalGlow):
        super().__init__()
        self.glow = glow
        self.dim = glow.dim

    @property
    def recompute(self) -> bool:
        return self.glow.recompute

    @recompute.setter
    def recompute(self, value: bool) -> None:
        self.glow.recompute = value


class _PriorConditionedDecoder(WrappedGlow):
    """Unconditional refined Glow followed by v's z-conditioned Gaussian (the ``z_prior`` baseline)."""

    def __init__(self, glow: ConditionalGlow, d_z: int):
        super().__init__(glow)
        self.gaussian = ConditionalGaussian(glow.dim, d_z)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v, ld = self.glow(x)
        eps, ld2 = self.gaussian(v, cond)
        return eps, ld + ld2

    def inverse(self, eps: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v, ld2 = self.gaussian.inverse(eps, cond)
        x, ld = self.glow.inverse(v)
        return x, ld + ld2


@register
class FlowVAE(GenerativeModel):
    """The paper's model (``kind="flowvae"``) and its baselines (``z_prior``, ``refined_glow``, ``glow``).

    Args:
        cfg: architecture (:class:`FlowVAEConfig`).
        n_bits: bits per pixel of the modelled data (1..8).

    Raises:
        ConfigError: an architecture that cannot be built (message says why).
    """

    config_class: ClassVar[type[ModelSettings]] = FlowVAEConfig
    cfg: FlowVAEConfig

    training_only = ("aux_decoder",)

    def __init__(self, cfg: FlowVAEConfig, n_bits: int = 8):
        super().__init__(cfg, n_bits)
        self.n_bins = 2 ** n_bits
        self.uses_z = cfg.kind in ("flowvae", "z_prior")
        try:
            self.decoder: ConditionalGlow | WrappedGlow = ConditionalGlow(
                cfg.in_channels, cfg.image_size, cfg.steps, cfg.hidden,
                cond_dim=cfg.d_z if cfg.kind == "flowvae" else 0, factor_out=cfg.factor_out, alpha=cfg.alpha,
                additive=cfg.coupling == "additive", conv1x1=cfg.conv1x1,
                architecture="glow" if cfg.kind == "glow" else "refined", kernel_size=cfg.coupling_kernel)
            if cfg.kind == "z_prior":
                self.decoder = _PriorConditionedDecoder(self.decoder, cfg.d_z)
            if self.uses_z:
                if cfg.image_size % 2 ** len(cfg.encoder_widths):
                    raise ValueError(f"image size {cfg.image_size} is not divisible by 2^{len(cfg.encoder_widths)} "
                                     f"for {len(cfg.encoder_widths)} encoder levels; change model.encoder_widths")
                self.encoder = CompressionEncoder(cfg.in_channels, cfg.image_size, cfg.encoder_widths, cfg.d_z,
                                                  cfg.encoder_maps)
                self.prior: FlowPrior | StandardNormalPrior = FlowPrior(cfg.d_z, cfg.prior_steps, cfg.prior_hidden,
                                                                        cfg.alpha, cfg.conv1x1)
        except ValueError as e:
            raise ConfigError(f"cannot build the model: {e}") from None
        self.dim = self.decoder.dim
        # Built only when used, so that runs of the paper's objective keep their exact set of weights.
        self.aux_decoder = (PixelDecoder(cfg.d_z, cfg.in_channels, cfg.image_size, cfg.encoder_widths,
                                         cfg.aux_decoder_hidden)
                            if self.uses_z and getattr(cfg, "aux_decoder_weight", 0.0) > 0 else None)
        self.dequantizer = (VariationalDequantizer(cfg.in_channels, cfg.dequant_hidden, cfg.dequant_steps)
                            if cfg.dequantization == "variational" else None)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(global_local=self.uses_z, exact_codes=True, vector_latent=self.uses_z,
                            code_prior=self.uses_z, bf16=True, recompute=True)

    def code_log_prior(self, z: Tensor) -> Tensor:
        """``log p(z)`` in nats ``[B]`` under the flow prior of eq. 2 (the standard normal with
        ``model.prior_steps=0``), for codes ``z [B, d_z]`` (:meth:`GenerativeModel.code_log_prior`)."""
        self.require("code_prior", "the KL of the code z")
        return self.prior.log_prob(z)

    @property
    def latent_dim(self) -> int:
        """Dimension of the per-image vector latent z (0 for the kinds without z)."""
        return self.cfg.d_z if self.uses_z else 0

    def set_recompute(self, enabled: bool) -> FlowVAE:
        """Recompute the decoder's activations by inversion in the backward pass (``train.recompute``)."""
        self.decoder.recompute = bool(enabled)
        return self

    def set_precision(self, precision: str) -> FlowVAE:
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
            u = _noise(torch.rand, bins, generator, shard)
            return (bins + u) / self.n_bins - 0.5, bins.new_zeros(bins.shape[0])
        eps = _noise(torch.randn, bins, generator, shard)
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

    def encoder_pixels(self, bins: Tensor) -> Tensor:
        """What the encoder q(z|x) sees of bin indices ``bins [B, C, H, W]``, in ``[-0.5, 0.5)``: the bin
        centres ``(k + 0.5) / n_bins - 0.5`` (``model.encoder_input=centre``, default) or the lower
        bin edges ``k / n_bins - 0.5`` (``lower-edge``, the authors' ``preprocess`` without noise)."""
        if getattr(self.cfg, "encoder_input", "centre") == "lower-edge":  # subclasses' configs may lack the field
            return bins / self.n_bins - 0.5
        return self.centres(bins)

    # ------------------------------------------------------------------ likelihood terms
    def posterior(self, bins: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x) (eq. 5), each ``[B, d_z]``; the encoder sees
        :meth:`encoder_pixels` (``model.encoder_input``)."""
        return self.encoder(self.encoder_pixels(bins))

    def log_weights(self, bins: Tensor, k: int = 1, generator: torch.Generator | None = None,
                    shard: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Per-sample terms of the bound, each ``[B, k]`` in nats.

        For each image, ``k`` independent pairs (dequantisation noise ``u``, ``z ~ q(z|x)``) give
        ``log_w = log p(x + u | z) + log p(z) - log q(z|x) - D log n_bins``, a term whose mean is
        the ELBO (eq. 2) on the discrete image and whose log-mean-exp over ``k`` is the
        importance-weighted bound. Also returned: ``kl = log q(z|x) - log p(z)`` (the Monte Carlo
        KL estimate) and ``log_px_z``. For the refined Glow, ``kl = 0``. The kinds with z also
        return the draws themselves, ``z [B, k, d_z]``.

        ``shard = (rank, world)``: ``bins`` is slice ``rank`` of ``world`` equal slices of a global
        batch; the noise is drawn for the whole global batch and sliced the same way, so data-parallel
        training sees exactly the noise of a single process.
        """
        b = bins.shape[0]
        rep = bins.repeat_interleave(k, 0) if k > 1 else bins
        x, log_q_u = self.dequantize(rep, generator, shard)
        disc = self.dim * math.log(self.n_bins)
        if self.uses_z:
            mu, logvar = self.posterior(bins)
            if k > 1:
                mu, logvar = mu.repeat_interleave(k, 0), logvar.repeat_interleave(k, 0)
            eps = _noise(torch.randn, mu, generator, shard)
            z = mu + torch.exp(0.5 * logvar) * eps
            log_q = gaussian_logprob(z, mu, logvar)
            log_pz = self.prior.log_prob(z)
            kl = log_q - log_pz
        else:
            z = None
            kl = x.new_zeros(x.shape[0])
        v, logdet = self.decoder(x, z)
        log_px_z = standard_normal_logprob(v) + logdet
        log_w = log_px_z - kl - disc - log_q_u
        out = {k_: t.view(b, k) for k_, t in (("log_w", log_w), ("kl", kl), ("log_px_z", log_px_z))}
        if z is not None:
            out["z"] = z.view(b, k, -1)
        return out

    @property
    def kl_term(self) -> bool:
        """Whether the objective has a KL term for ``kl_weight`` and ``model.free_bits`` to act on:
        the kinds with a global code z (not the refined Glow, the Glow, nor the multi-stage model,
        whose code is a deterministic function of x)."""
        return self.cfg.kind in ("flowvae", "z_prior")

    def loss(self, x: Tensor, generator: torch.Generator | None = None,
             shard: tuple[int, int] | None = None, *, kl_weight: float | Tensor = 1.0,
             **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss: the negative ELBO (eq. 2) in bits/dim, averaged over the batch.

        With ``kl_weight`` w other than 1, ``model.free_bits`` F above 0 or ``model.aux_decoder_weight``
        a above 0 (departures from the paper, for posterior collapse) it is
        ``(mean_i recon_i + w * max(F, mean_i kl_i) + a * mean_i aux_i) / (D ln 2)`` with
        ``recon_i = -log_w_i - kl_i`` (nats), ``kl_i = log q(z|x) - log p(z)`` the one-sample
        Monte Carlo KL (:meth:`log_weights`) and ``aux_i = -log p_aux(x_i | z_i)`` (nats) of an
        auxiliary feed-forward decoder (:class:`~flowvae.networks.pixel_decoder.PixelDecoder`) on
        the same draw of z. The auxiliary term is the remedy of Lucas & Verbeek (2018,
        arXiv:1711.11479) for a decoder strong enough to ignore z: it rewards a z from which the
        image can be drawn without the flow. It is a training term only: every reported bits/dim is
        the flow's own bound, and the auxiliary decoder is not used at evaluation or sampling.

        F applies to the batch mean of the whole KL, one group of latents (free bits, Kingma et al. 2016, arXiv:1606.04934, Appendix C.8):
        the KL to a flow prior does not split into per-dimension terms, so per-dimension free bits
        do not apply. Under data parallelism the mean is over this process's rows.

        Args:
            x: uint8 images ``[B, C, H, W]``.
            generator: source of the dequantisation noise and the posterior samples.
            shard: ``(rank, world)`` under data parallelism (see :meth:`log_weights`).
            kl_weight: keyword only: weight of the KL term (KL warm-up, ``train.kl_warmup_steps``);
                a float or a 0-dim tensor (the trainer passes a tensor, so that a compiled forward
                is not recompiled for every value).

        Returns:
            ``(loss, stats)``; ``stats`` holds detached per-batch means: ``bpd`` (the loss: the
            training objective, bits/dim), ``kl`` (nats) and, with the auxiliary decoder, ``aux``
            (nats). When the objective departs from the paper's (a KL weight other than 1, free
            bits, the auxiliary decoder) also ``elbo_bpd``: the plain one-sample negative ELBO in
            bits/dim, which the trainer logs beside the loss.

        Raises:
            ConfigError: ``kl_weight`` other than 1 for a kind without a KL term (:attr:`kl_term`).
        """
        terms = self.log_weights(self.to_bins(x), 1, generator, shard)
        free_bits = float(getattr(self.cfg, "free_bits", 0.0))  # the multi-stage config has no such field
        if isinstance(kl_weight, Tensor) or kl_weight != 1 or free_bits > 0 or self.aux_decoder is not None:
            if not self.kl_term:
                raise ConfigError(f"a {self.kind!r} model has no KL term to weight (kl_weight={float(kl_weight)!r}); "
                                  f"KL warm-up applies to the kinds with a global code z")
            kl = terms["kl"][:, 0]
            recon = -(terms["log_w"][:, 0] + kl).mean()
            kl_mean = kl.mean()
            # The clamp passes no gradient below F: the KL is not pushed down while under it.
            kl_part = kl_mean.clamp(min=free_bits) if free_bits > 0 else kl_mean
            total = recon + kl_weight * kl_part
            stats = {"kl": kl_mean.detach()}
            if self.aux_decoder is not None:
                aux = -self.aux_decoder.log_prob(x, terms["z"][:, 0]).mean()
                total = total + self.cfg.aux_decoder_weight * aux
                stats["aux"] = aux.detach()
            scale = self.dim * math.log(2)
            loss = total / scale
            return loss, {"bpd": loss.detach(), "elbo_bpd": ((recon + kl_mean) / scale).detach(), **stats}
        # The paper's objective, computed as it always was (bitwise the same numbers as before).
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

    # ------------------------------------------------------------------ representations
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """Global and local codes of uint8 images ``[B, C, H, W]``.

        ``z`` is the posterior mean ``[B, d_z]`` (``None`` for the refined Glow); ``v = f(x; z)``
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

    @torch.no_grad()
    def decode(self, z: Tensor | None, v: Tensor) -> Tensor:
        """uint8 images ``[B, C, H, W]`` from ``z [B, d_z]`` and ``v [B, C*H*W]``: ``x = f^{-1}(v; z)``.

        ``z`` is ``None`` for the kinds without a global code (``refined_glow``, ``glow``).

        Raises:
            DataError: ``v`` or ``z`` not a finite float tensor of that shape, batches of different
                sizes, or a ``z`` given to a kind without one (or missing for a kind with one).
        """
        v = check_codes(v, self.dim, "local codes v")
        if not self.uses_z:
            if z is not None:
                raise DataError(f"a {self.kind!r} model has no global code z: pass z=None")
        elif z is None:
            raise DataError(f"a {self.kind!r} model decodes from a global code z [B, {self.latent_dim}] and v; got z=None")
        else:
            z = check_codes(z, self.latent_dim, "global codes z", batch=v.shape[0]).to(self.device, self.dtype)
        x, _ = self.decoder.inverse(v.to(self.device, self.dtype), z)
        return self.continuous_to_uint8(x)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` uint8 samples ``[n, C, H, W]``.

        ``v ~ N(0, temperature^2 I)``; z is drawn from the flow prior with its base Gaussian at
        ``global_temperature`` (default 1: temperature acts on the local code only, as in Glow's
        reduced-temperature sampling applied to v).

        Raises:
            ConfigError: ``n`` not a positive integer, a temperature not finite and >= 0, or a
                global temperature other than 1 for a kind without z.
        """
        check_count("n", n)
        check_temperature(temperature)
        check_temperature(global_temperature, "global_temperature")
        if not self.uses_z and global_temperature != 1.0:
            raise ConfigError(f"a {self.kind!r} model has no global code; leave the global temperature at 1")
        z = self.prior.sample(n, global_temperature, generator) if self.uses_z else None
        v = torch.randn(n, self.dim, generator=generator, device=self.device) * temperature
        return self.decode(z, v)

    @torch.no_grad()
    def latent_mean(self, x: Tensor) -> Tensor:
        """Posterior mean of the global code, ``[B, d_z]``, for uint8 images ``[B, C, H, W]``.

        Raises:
            ConfigError: a kind without z.
        """
        self.require("vector_latent", "latent_mean")
        return self.posterior(self.to_bins(x))[0]

    @torch.no_grad()
    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": (mean, logvar)}`` of q(z|x) (eq. 5), each ``[B, d_z]``; ``{}`` for the refined Glow
        and Glow, whose only code v is exact (:meth:`GenerativeModel.posterior_moments`)."""
        if not self.uses_z:
            self.check_input(x)
            return {}
        return {"z": self.posterior(self.to_bins(x))}

    @torch.no_grad()
    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """``z`` (posterior mean ``[B, d_z]``, kinds with z only) and ``v = f(x; z)`` ``[B, C*H*W]``."""
        z, v = self.encode(x)
        return {"v": v} if z is None else {"z": z, "v": v}

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
            ConfigError: for the refined Glow, which has no global code.
        """
        self.require("global_local", "switch")
        self.check_input(x1)
        self.check_input(x2)
        if x1.shape[0] != x2.shape[0]:
            raise DataError(f"switch pairs x1[i] with x2[i]: got {x1.shape[0]} and {x2.shape[0]} images")
        z1, v1 = self._codes(x1)
        z2, v2 = self._codes(x2)
        z = torch.cat([z1, z2, z2, z1])
        v = torch.cat([v1, v1, v2, v2])
        out = self.decode(z, v).view(4, *x1.shape)
        return out.transpose(0, 1).contiguous()

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
    def traverse(self, x_single: Tensor, dim_values: list[float], dims: list[int] | None = None,
                 local: str = "keep") -> Tensor:
        """Latent traversals of the global code: from the posterior mean z of one image, set one
        dimension of z at a time to each of ``dim_values`` and decode.

        Args:
            x_single: one uint8 image ``[C, H, W]`` or ``[1, C, H, W]``.
            dim_values: values given to the traversed dimension (absolute values of z).
            dims: dimensions of z to traverse; default all ``range(d_z)``.
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


def build_model(cfg: Any, n_bits: int | None = None) -> GenerativeModel:
    """The model of a run config (:class:`~flowvae.config.Config`, e.g. ``get_preset("digits")``) or
    of any kind's model config; see :func:`flowvae.models.base.create_model`."""
    from .base import create_model

    return create_model(cfg, n_bits)
