"""The model of the paper: a VAE with a compression encoder q(z|x), a flow prior p(z) and a
conditional Glow decoder v = f(x; z) (Ma et al., ICLR 2021, §2), and the config it shares with its
baselines. ``FlowVAEConfig.kind`` selects one:

==================  =================================  ===========================================
``kind``            class                              model
==================  =================================  ===========================================
``flowvae``         :class:`FlowVAE`                   the paper's model: z enters every coupling of
                                                       the refined Glow (eq. 7)
``z_prior``         :class:`FlowVAE`                   refined Glow without z in the couplings; z
                                                       sets v's Gaussian N(mu(z), sigma(z)) (Table 3)
``refined_glow``    :class:`~flowvae.models.glow.Glow` the refined Glow alone (v ~ N(0, I)), no z
``glow``            :class:`~flowvae.models.glow.Glow` the original Glow (Kingma & Dhariwal 2018)
==================  =================================  ===========================================

The pixel conventions, the bound and the tools (encode/decode, sample, switch, interpolate,
traverse) are those of every flow-decoder model (:mod:`flowvae.models.flow_decoder`). What this
model adds is the code z:

* The encoder sees the bin centres ``(k + 0.5) / n_bins - 0.5`` (no noise), so q(z|x) depends
  on the discrete image only and the bound is a valid bound on ``log P(k)``. With
  ``model.encoder_input=lower-edge`` it sees the lower bin edges ``k / n_bins - 0.5`` instead, as
  the authors' code does (``wolf/data/image.py::preprocess`` without noise); still a function of
  the discrete image, so the bound stays valid. Models imported with ``flowvae import-wolf`` use it.
* ``z ~ q(z|x)`` is drawn after the dequantisation noise (:meth:`FlowVAE.draw_code`); its KL to the
  flow prior is the one-sample Monte Carlo estimate ``log q(z|x) - log p(z)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from ..flows.glow import ConditionalGaussian, ConditionalGlow, FlowPrior
from ..maths import gaussian_logprob
from ..networks.encoder import CompressionEncoder
from ..networks.pixel_decoder import LowPassDecoder, PixelDecoder
from ..settings import setting
from .base import GenerativeModel, ModelSettings, register
from .flow_decoder import FlowDecoderModel, GlowSettings, WrappedGlow, noise_like

__all__ = ["FlowVAE", "FlowVAEConfig", "build_model"]

#: the kinds of :class:`FlowVAEConfig` that have a global code z (the others are the Glow's)
CODE_KINDS = ("flowvae", "z_prior")


@dataclass
class FlowVAEConfig(GlowSettings):
    """Architecture of the paper's model and of its baselines (``kind``: module docstring): the
    config of :class:`FlowVAE` (``flowvae``, ``z_prior``) and of :class:`~flowvae.models.glow.Glow`
    (``refined_glow``, ``glow``, which use the Glow's fields only).

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
    aux_low_pass: int = setting(
        0, ge=0, le=64, help="side s of the image average-pooled to s x s that the auxiliary decoder models "
        "(0: the whole image, Lucas & Verbeek; s > 0: a Gaussian over the s x s low-pass image, so z carries "
        "the global layout and colour and v the detail)")

    low_pass_shift: int = setting(
        0, ge=0, le=64, help="side s of the low-pass image m(z) (s x s, upsampled bilinearly) that the decoder "
        "subtracts from x before the flow, v = f(x - m(z); z): the mean of the low-pass auxiliary decoder, which "
        "model.aux_decoder_weight trains to predict the image average-pooled to s x s; a shift with unit Jacobian, "
        "so the bound stays exact (0: off, the paper's decoder; a departure from the paper, for the flowvae kind)")

    def departures(self) -> list[str]:
        out = []
        if self.low_pass_shift:
            out.append(f"a decoder that subtracts the {self.low_pass_shift}x{self.low_pass_shift} low-pass image "
                       f"the auxiliary decoder predicts from z before the flow")
        if self.free_bits:
            out.append(f"free bits of {self.free_bits:g} nats")
        if self.dequantization == "variational":
            out.append("variational dequantisation (Flow++, Ho et al. 2019) instead of §5's uniform dequantisation")
        if self.aux_decoder_weight:
            side = self.aux_low_pass or self.low_pass_shift
            target = f"-log p(x_low|z) of the image average-pooled to {side}x{side}" if side else "-log p(x|z)"
            out.append(f"an auxiliary decoder's {target} at weight {self.aux_decoder_weight:g} in the loss")
        return [*out, *super().departures()]

    def validate(self) -> None:
        super().validate()
        for name in ("free_bits", "aux_decoder_weight"):
            if getattr(self, name) > 0 and self.kind not in ("flowvae", "z_prior"):
                raise ConfigError(f"model.{name} applies to the kinds with a global code z (flowvae, z_prior); "
                                  f"a {self.kind!r} model has no code z, leave it at 0")
        if self.low_pass_shift and self.kind != "flowvae":
            raise ConfigError(f"model.low_pass_shift applies to the flowvae kind (z in the decoder); a {self.kind!r} "
                              f"model keeps z out of its flow, leave it at 0")
        if self.low_pass_shift > self.image_size:
            raise ConfigError(f"model.low_pass_shift={self.low_pass_shift} is above the image side {self.image_size}; "
                              f"use a side from 1 to {self.image_size}")
        if self.low_pass_shift and not self.aux_decoder_weight:
            raise ConfigError("model.low_pass_shift subtracts the low-pass auxiliary decoder's prediction, which only "
                              "its term trains: set model.aux_decoder_weight above 0 too (the -global presets use 30)")
        if self.low_pass_shift and self.aux_low_pass not in (0, self.low_pass_shift):
            raise ConfigError(f"model.aux_low_pass={self.aux_low_pass} differs from model.low_pass_shift="
                              f"{self.low_pass_shift}: the shift is the auxiliary decoder's prediction, so they share "
                              f"one side; leave model.aux_low_pass at 0 or set both alike")
        if self.aux_low_pass > self.image_size:
            raise ConfigError(f"model.aux_low_pass={self.aux_low_pass} is above the image side {self.image_size}; "
                              f"use a side from 1 to {self.image_size} (4 is the switch score's low-pass)")


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


class _LowPassShiftDecoder(WrappedGlow):
    """``v = f(x - m(z); z)``: the conditional Glow of ``x`` minus the low-pass image that the low-pass
    auxiliary decoder ``low`` predicts from z (``model.low_pass_shift``), upsampled bilinearly to the
    image's size (:meth:`LowPassDecoder.image`: smooth, yet with the fitted block means; a repeated
    ``s x s`` grid would print its blocks on every switched decode) and halved to the flow's pixel
    scale (``[-0.5, 0.5]`` against the decoder's ``[-1, 1]``). A
    shift has unit Jacobian: the log-determinant is the Glow's, and the bound is exact whatever m is.
    The shift passes the likelihood no gradient: only the auxiliary term trains ``low``. ``low``'s
    last layer starts at zero, so an untrained model is the paper's. Switching z replaces the
    predicted layout; v keeps the image's residual, its detail."""

    def __init__(self, glow: ConditionalGlow, low: LowPassDecoder):
        super().__init__(glow)
        self.low = low
        low.zero_output()

    def low_pass(self, cond: Tensor) -> Tensor:
        """``m(z)`` on the flow's scale, upsampled to the image: ``[B, C, H, W]`` of codes ``[B, d_z]``."""
        return 0.5 * self.low.image(cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        assert cond is not None  # the flowvae kind always conditions on z
        # Only the auxiliary term trains m: the likelihood's pull on it (all C*H*W values against the
        # s*s of the low-pass image) moves m off the layout, and the flow then keeps the layout in v.
        shift = self.low_pass(cond).detach().to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):
            shift = shift.contiguous(memory_format=torch.channels_last)
        return self.glow(x - shift, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        assert cond is not None
        x, ld = self.glow.inverse(y, cond)
        return x + self.low_pass(cond).to(x.dtype), ld


@register
class FlowVAE(FlowDecoderModel):
    """The paper's model (``kind="flowvae"``) and its ``z_prior`` baseline (Table 3): a compression
    encoder q(z|x) (eq. 5), a flow prior p(z) and a conditional Glow decoder (module docstring).

    Built with a ``refined_glow`` or ``glow`` config it is still the flow without a code that it was
    in earlier releases, with a :class:`DeprecationWarning`: those kinds are
    :class:`~flowvae.models.glow.Glow`'s (``create_model`` picks it).

    Args:
        cfg: architecture (:class:`FlowVAEConfig`).
        n_bits: bits per pixel of the modelled data (1..8).

    Raises:
        ConfigError: an architecture that cannot be built (message says why).
    """

    config_class: ClassVar[type[ModelSettings]] = FlowVAEConfig
    kinds: ClassVar[dict[str, str]] = {
        "flowvae": "the model of Ma et al. (ICLR 2021): a VAE whose decoder is a refined-Glow flow conditioned "
                   "on the global code z in every coupling, so that an image splits into a global code z and a "
                   "local code v",
        "z_prior": "the paper's baseline with z in the prior of v only (Table 3): a refined Glow whose local code v "
                   "has a Gaussian set by the global code z",
    }
    cfg: FlowVAEConfig

    training_only = ("aux_decoder",)

    def __init__(self, cfg: FlowVAEConfig, n_bits: int = 8):
        super().__init__(cfg, n_bits)
        if type(self) is FlowVAE and isinstance(cfg, FlowVAEConfig) and cfg.kind not in CODE_KINDS:
            warnings.warn(f"FlowVAE of a {cfg.kind!r} config: that kind is flowvae.models.Glow's now; build it with "
                          f"flowvae.create_model(cfg) or Glow(cfg) (FlowVAE stops taking it in the next release)",
                          DeprecationWarning, stacklevel=2)
        self.uses_z = cfg.kind in CODE_KINDS
        try:
            self.decoder: ConditionalGlow | WrappedGlow = self.build_glow(
                cfg, cfg.d_z if cfg.kind == "flowvae" else 0, "glow" if cfg.kind == "glow" else "refined")
            if cfg.kind == "z_prior":
                self.decoder = _PriorConditionedDecoder(self.decoder, cfg.d_z)
            elif cfg.low_pass_shift:
                self.decoder = _LowPassShiftDecoder(
                    self.decoder, LowPassDecoder(cfg.d_z, cfg.in_channels, cfg.low_pass_shift, cfg.aux_decoder_hidden,
                                                 cfg.image_size))
            if self.uses_z:
                if cfg.image_size % 2 ** len(cfg.encoder_widths):
                    raise ValueError(f"image size {cfg.image_size} is not divisible by 2^{len(cfg.encoder_widths)} "
                                     f"for {len(cfg.encoder_widths)} encoder levels; change model.encoder_widths")
                self.encoder = CompressionEncoder(cfg.in_channels, cfg.image_size, cfg.encoder_widths, cfg.d_z,
                                                  cfg.encoder_maps)
                self.prior = FlowPrior(cfg.d_z, cfg.prior_steps, cfg.prior_hidden, cfg.alpha, cfg.conv1x1)
        except ValueError as e:
            raise ConfigError(f"cannot build the model: {e}") from None
        self.dim = self.decoder.dim
        # Built only when used, so that runs of the paper's objective keep their exact set of weights.
        self.aux_decoder: PixelDecoder | LowPassDecoder | None = None
        if self.uses_z and cfg.aux_decoder_weight > 0 and not cfg.low_pass_shift:
            self.aux_decoder = (LowPassDecoder(cfg.d_z, cfg.in_channels, cfg.aux_low_pass, cfg.aux_decoder_hidden)
                                if cfg.aux_low_pass else
                                PixelDecoder(cfg.d_z, cfg.in_channels, cfg.image_size, cfg.encoder_widths,
                                             cfg.aux_decoder_hidden))
        self.dequantizer = self.build_dequantizer(cfg)

    @property
    def latent_dim(self) -> int:
        """Dimension of the per-image vector latent z (0 for the kinds without z)."""
        return self.cfg.d_z if self.uses_z else 0

    @property
    def latent_meanings(self) -> dict[str, str]:
        """``z``: the global code's posterior q(z|x) (eq. 5)."""
        if self.kind == "flowvae":
            return {"z": "global code z: q(z|x) of the compression encoder (eq. 5)"}
        return {"z": "global code z: q(z|x) of the compression encoder"} if self.uses_z else {}

    @property
    def kl_term(self) -> bool:
        """Whether the objective has a KL term for ``kl_weight`` and ``model.free_bits`` to act on:
        the kinds with a global code z."""
        return self.cfg.kind in CODE_KINDS

    # ------------------------------------------------------------------ the code z
    def encoder_pixels(self, bins: Tensor) -> Tensor:
        """What the encoder q(z|x) sees of bin indices ``bins [B, C, H, W]``, in ``[-0.5, 0.5)``: the bin
        centres ``(k + 0.5) / n_bins - 0.5`` (``model.encoder_input=centre``, default) or the lower
        bin edges ``k / n_bins - 0.5`` (``lower-edge``, the authors' ``preprocess`` without noise)."""
        if self.cfg.encoder_input == "lower-edge":
            return bins / self.n_bins - 0.5
        return self.centres(bins)

    def posterior(self, bins: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x) (eq. 5), each ``[B, d_z]``; the encoder sees
        :meth:`encoder_pixels` (``model.encoder_input``).

        Raises:
            ConfigError: a kind without z.
        """
        if not self.uses_z:
            return super().posterior(bins)
        return self.encoder(self.encoder_pixels(bins))

    def draw_code(self, bins: Tensor, k: int, generator: torch.Generator | None,
                  shard: tuple[int, int] | None) -> tuple[Tensor | None, Tensor | None]:
        """``z ~ q(z|x)``, ``k`` per image ``[B * k, d_z]``, and ``kl = log q(z|x) - log p(z)`` ``[B * k]``
        (nats; the one-sample Monte Carlo KL to the flow prior); ``(None, None)`` without z."""
        if not self.uses_z:
            return None, None
        mu, logvar = self.posterior(bins)
        if k > 1:
            mu, logvar = mu.repeat_interleave(k, 0), logvar.repeat_interleave(k, 0)
        eps = noise_like(torch.randn, mu, generator, shard)
        z = mu + torch.exp(0.5 * logvar) * eps
        return z, gaussian_logprob(z, mu, logvar) - self.prior.log_prob(z)

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
        image can be drawn without the flow. With ``model.aux_low_pass`` s above 0 the auxiliary
        decoder is a :class:`~flowvae.networks.pixel_decoder.LowPassDecoder` and ``aux_i =
        -log p_aux(x_low_i | z_i)`` (nats, a Gaussian density) of the image average-pooled to
        ``s x s``: it rewards a z that carries the global layout and colour and nothing finer. With
        ``model.low_pass_shift`` the low-pass decoder is the decoder's own (its mean is the shift of
        ``v = f(x - m(z); z)``); otherwise it is a training term only. Every reported bits/dim is
        the flow's own bound.

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
        free_bits = float(self.cfg.free_bits)
        aux_decoder = self.decoder.low if isinstance(self.decoder, _LowPassShiftDecoder) else self.aux_decoder
        if isinstance(kl_weight, Tensor) or kl_weight != 1 or free_bits > 0 or aux_decoder is not None:
            if not self.kl_term:
                raise ConfigError(f"a {self.kind!r} model has no KL term to weight (kl_weight={float(kl_weight)!r}); "
                                  f"KL warm-up applies to the kinds with a global code z")
            terms = self.log_weights(self.to_bins(x), 1, generator, shard)
            kl = terms["kl"][:, 0]
            recon = -(terms["log_w"][:, 0] + kl).mean()
            kl_mean = kl.mean()
            # The clamp passes no gradient below F: the KL is not pushed down while under it.
            kl_part = kl_mean.clamp(min=free_bits) if free_bits > 0 else kl_mean
            total = recon + kl_weight * kl_part
            stats = {"kl": kl_mean.detach()}
            if aux_decoder is not None:
                aux = -aux_decoder.log_prob(x, terms["z"][:, 0]).mean()
                total = total + self.cfg.aux_decoder_weight * aux
                stats["aux"] = aux.detach()
            scale = self.dim * math.log(2)
            loss = total / scale
            return loss, {"bpd": loss.detach(), "elbo_bpd": ((recon + kl_mean) / scale).detach(), **stats}
        # The paper's objective, computed as it always was (bitwise the same numbers as before).
        return super().loss(x, generator, shard)


def build_model(cfg: Any, n_bits: int | None = None) -> GenerativeModel:
    """The model of a run config (:class:`~flowvae.config.Config`, e.g. ``get_preset("digits")``) or
    of any kind's model config; see :func:`flowvae.models.base.create_model`."""
    from .base import create_model

    return create_model(cfg, n_bits)


def __getattr__(name: str) -> Any:
    # Names of earlier releases: deprecated aliases for one release.
    if name == "ModelConfig":
        warnings.warn("flowvae.models.flowvae.ModelConfig is FlowVAEConfig: import FlowVAEConfig (this alias goes "
                      "in the next release)", DeprecationWarning, stacklevel=2)
        return FlowVAEConfig
    if name == "StandardNormalPrior":  # moved to flow_decoder, without a warning: it was never exported
        from .flow_decoder import StandardNormalPrior

        return StandardNormalPrior
    raise AttributeError(f"module 'flowvae.models.flowvae' has no attribute {name!r}")
