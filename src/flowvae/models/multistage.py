"""The multi-stage model of Srivastava et al., "Improving the Reconstruction of Disentangled
Representation Learners via Multi-Stage Modelling" (``../shared/papers/multi-stage-disentangled-
reconstruction.txt``): a disentangling VAE learns the factors c, then a second generative model
p(x | c), trained with stage 1 frozen, models the correlated detail that stage 1's decoder loses.

Here stage 1 is a :class:`~flowvae.models.btcvae.BTCVAE` and stage 2 is this project's conditional
Glow (the refined Glow of Ma et al. 2021, §2.2), with the stage-1 posterior mean as its code::

    c = mu_1(x)                          (stage-1 encoder, frozen; the disentangled factors)
    v = f(x; c)                          (conditional Glow, eq. 7 with z := c; the local code)
    log p(x | c) = log N(v; 0, I) + log |det df/dx|                        (eq. 3, exact)

With ``recon_input`` every coupling network also sees the stage-1 reconstruction ``x_1(c)`` (the
mean image of stage 1's decoder, on [0, 1]). Generation follows the model's graph c -> x:
``c ~ N(0, I)`` (stage 1's prior), ``v ~ N(0, T^2 I)``, ``x = f^{-1}(v; c)``.

Figures. Stage 2 is trained and evaluated on ``-log p(x | c(x))``; with uniform dequantisation this
is a bound on the discrete conditional likelihood, in bits/dim (``bits_per_dim``'s ``elbo_bpd``; the
``kl`` it reports is 0, since c is a deterministic function of x). It is the figure to compare with
stage 1's reconstruction term ``-log p_1(x | mu_1(x))`` (see
:func:`flowvae.evaluation.reconstruction.reconstruction_quality`). It is *not* a bound on ``log p(x)``
of the whole model, which would need an expectation over c.

The disentanglement of the combined model is stage 1's by construction: its factors are stage 1's
posterior means, unchanged.

Images enter and leave as uint8 ``[B, C, H, W]`` (0..255), as in :class:`~flowvae.models.flowvae.FlowVAE`,
whose preprocessing (bins, dequantisation), encode/decode, switch and interpolation this model inherits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..flows.glow import ConditionalGlow, standard_normal_logprob
from .btcvae import BTCVAE, BTCVAEConfig
from .flowvae import FlowVAE, WrappedGlow

__all__ = ["MultiStage", "StandardNormalPrior"]


class StandardNormalPrior(nn.Module):
    """N(0, I) over ``d`` dimensions, with the ``sample``/``log_prob`` interface of
    :class:`~flowvae.flows.glow.FlowPrior` (stage 1's prior of the factors)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) in nats ``[B]`` for ``z [B, d]``."""
        return standard_normal_logprob(z)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> Tensor:
        """``[n, d]`` draws of N(0, temperature^2 I)."""
        return torch.randn(n, self.dim, generator=generator, device=device) * temperature


class _StageTwoDecoder(WrappedGlow):
    """The conditional Glow with its conditioning built from the factors c: ``c`` alone, or ``c``
    followed by stage 1's flattened reconstruction (``recon_input``)."""

    def __init__(self, glow: ConditionalGlow, stage1: BTCVAE, recon_input: bool):
        super().__init__(glow)
        self.recon_input = recon_input
        # A plain attribute, not a submodule: stage 1 is registered once, on MultiStage.
        self.__dict__["_stage1"] = stage1

    def condition(self, c: Tensor) -> Tensor:
        """Conditioning of the coupling networks for factors ``c [B, d_z]``: ``c`` or
        ``[c, x_1(c)]`` with the stage-1 mean image on [0, 1], flattened (``[B, d_z + D]``)."""
        if not self.recon_input:
            return c
        with torch.no_grad():
            params = self._stage1._decode_params(c)
            mean = self._stage1.pixel_mean(params)
        return torch.cat([c, mean.flatten(1).to(c.dtype)], 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.glow(x, self.condition(cond))

    def inverse(self, v: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.glow.inverse(v, self.condition(cond))


class MultiStage(FlowVAE):
    """Multi-stage model: a frozen beta-TCVAE (``stage1``) and a conditional Glow on its factors.

    Args:
        cfg: the flow's architecture (``steps``, ``hidden``, ``factor_out``, ``coupling``, ``alpha``,
            ``conv1x1``, ``dequantization``; ``kind`` must be ``"multistage"`` and ``d_z`` must equal
            stage 1's).
        stage1_cfg: stage 1's architecture (its weights are loaded separately, e.g. by
            :meth:`load_stage1`, and are part of this model's state dict).
        n_bits: bits per pixel of the modelled data (1 for binary images such as dSprites).
        recon_input: also condition every coupling network on stage 1's reconstruction.

    Methods (uint8 images ``[B, C, H, W]`` throughout): ``encode(x) -> (c [B, d_z], v [B, D])``
    (disentangled factors, exact local code), ``decode(c, v)`` (exact inverse), ``sample``,
    :meth:`reconstruct` (from the factors alone, fresh local detail), :meth:`traverse` (one factor
    at a time), ``bits_per_dim`` (``-log p(x | c)``, see the module docstring), ``switch``,
    ``interpolate``.

    Raises:
        ConfigError: an architecture that cannot be built, or mismatched stages.
    """

    def __init__(self, cfg: ModelConfig, stage1_cfg: BTCVAEConfig, n_bits: int = 8, recon_input: bool = False):
        nn.Module.__init__(self)
        if cfg.kind != "multistage":
            raise ConfigError(f"MultiStage needs model.kind='multistage', got {cfg.kind!r}")
        if not (isinstance(n_bits, int) and 1 <= n_bits <= 8):
            raise ConfigError(f"data.n_bits must be an integer in 1..8, got {n_bits!r}")
        if cfg.coupling not in ("affine", "additive"):
            raise ConfigError(f"model.coupling must be 'affine' or 'additive', got {cfg.coupling!r}")
        if (stage1_cfg.in_channels, stage1_cfg.image_size, stage1_cfg.d_z) != (cfg.in_channels, cfg.image_size, cfg.d_z):
            raise ConfigError(
                f"stage 1 models {stage1_cfg.in_channels}x{stage1_cfg.image_size}x{stage1_cfg.image_size} images with "
                f"d_z={stage1_cfg.d_z}, but the flow is configured for {cfg.in_channels}x{cfg.image_size}x"
                f"{cfg.image_size} with d_z={cfg.d_z}; set model.in_channels/image_size/d_z to stage 1's")
        self.cfg = cfg
        self.n_bits, self.n_bins = n_bits, 2 ** n_bits
        self.uses_z = True
        self.stage1 = BTCVAE(stage1_cfg)
        self.stage1.requires_grad_(False)
        try:
            glow = ConditionalGlow(cfg.in_channels, cfg.image_size, cfg.steps, cfg.hidden, cond_dim=cfg.d_z,
                                   factor_out=cfg.factor_out, alpha=cfg.alpha, additive=cfg.coupling == "additive",
                                   conv1x1=cfg.conv1x1,
                                   cond_image=(cfg.in_channels, cfg.image_size) if recon_input else None)
        except ValueError as e:
            raise ConfigError(f"cannot build the model: {e}") from None
        self.decoder = _StageTwoDecoder(glow, self.stage1, recon_input)
        self.prior = StandardNormalPrior(cfg.d_z)
        self.dim = glow.dim
        if cfg.dequantization not in ("uniform", "variational"):
            raise ConfigError(f"model.dequantization must be 'uniform' or 'variational', got {cfg.dequantization!r}")
        from ..flows.dequant import VariationalDequantizer

        self.dequantizer = (VariationalDequantizer(cfg.in_channels, cfg.dequant_hidden, cfg.dequant_steps)
                            if cfg.dequantization == "variational" else None)

    def train(self, mode: bool = True) -> "MultiStage":
        super().train(mode)
        self.stage1.eval()  # frozen: always in evaluation mode
        return self

    def load_stage1(self, stage1: BTCVAE) -> "MultiStage":
        """Copy the weights of a trained :class:`BTCVAE` into ``self.stage1`` (same architecture).

        Raises:
            ConfigError: a model of another kind or architecture.
        """
        if not isinstance(stage1, BTCVAE):
            raise ConfigError(f"stage 1 must be a trained btcvae model, got {type(stage1).__name__}")
        try:
            self.stage1.load_state_dict(stage1.state_dict())
        except RuntimeError as e:
            raise ConfigError(f"stage 1's weights do not fit the configured stage 1: {str(e).splitlines()[0]}") from None
        return self

    # ------------------------------------------------------------------ likelihood
    def posterior(self, bins: Tensor) -> tuple[Tensor, Tensor]:
        """Stage 1's posterior mean and log-variance ``[B, d_z]`` for bin indices ``bins``."""
        with torch.no_grad():  # stage 1 saw 8-bit images; from_bins maps the top bin to 255
            return self.stage1._q(self.from_bins(bins))

    def log_weights(self, bins: Tensor, k: int = 1, generator: torch.Generator | None = None,
                    shard: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Per-sample ``log p(x + u | c) - D log n_bins - log q(u|x)`` in nats ``[B, k]`` with c the
        stage-1 posterior mean (``kl`` is 0: c is a function of x); see :meth:`FlowVAE.log_weights`."""
        b = bins.shape[0]
        rep = bins.repeat_interleave(k, 0) if k > 1 else bins
        x, log_q_u = self.dequantize(rep, generator, shard)
        c = self.posterior(bins)[0]
        if k > 1:
            c = c.repeat_interleave(k, 0)
        v, logdet = self.decoder(x, c)
        log_px_c = standard_normal_logprob(v) + logdet
        log_w = log_px_c - self.dim * math.log(self.n_bins) - log_q_u
        kl = torch.zeros_like(log_w)
        return {k_: t.view(b, k) for k_, t in (("log_w", log_w), ("kl", kl), ("log_px_z", log_px_c))}

    # ------------------------------------------------------------------ tools
    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, z_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` uint8 samples ``[n, C, H, W]``: ``c ~ N(0, z_temperature^2 I)``, ``v ~ N(0, temperature^2 I)``."""
        device = next(self.parameters()).device
        c = self.prior.sample(n, z_temperature, generator, device)
        v = torch.randn(n, self.dim, generator=generator, device=device) * temperature
        return self.decode(c, v)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Reconstruction from the factors alone: ``c = encode(x)``, a fresh local code
        ``v ~ N(0, temperature^2 I)`` (``0``: ``v = 0``), decoded. uint8 ``[B, C, H, W]``."""
        c, _ = self.encode(x)
        v = torch.randn(c.shape[0], self.dim, generator=generator, device=c.device) * temperature
        return self.decode(c, v)

    def describe(self) -> dict:
        """Architecture and parameter counts (total, flow, stage 1)."""
        from dataclasses import asdict

        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"kind": "multistage", "parameters": count(self), "decoder_parameters": count(self.decoder),
                "stage1_parameters": count(self.stage1), "recon_input": self.decoder.recon_input,
                "config": asdict(self.cfg)}
