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

Images enter and leave as uint8 ``[B, C, H, W]`` (0..255). The preprocessing (bins, dequantisation),
the bound, encode/decode, sampling, switch, interpolation and traversal are those of every
flow-decoder model (:class:`~flowvae.models.flow_decoder.FlowDecoderModel`); this model supplies its
code (stage 1's factors) and their prior.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from ..flows.glow import ConditionalGlow
from ..settings import setting
from .base import Capabilities, ModelSettings, OtherRuns, register
from .btcvae import BTCVAE, BTCVAEConfig
from .flow_decoder import FlowDecoderModel, GlowSettings, StandardNormalPrior, WrappedGlow

__all__ = ["MultiStage", "MultiStageConfig", "StandardNormalPrior"]


@dataclass
class MultiStageConfig(GlowSettings):
    """Architecture of :class:`MultiStage` (``model.kind=multistage``): the conditional Glow's fields,
    stage 1's config and where stage 1 comes from.

    ``stage1_run`` is the run folder of a trained ``btcvae`` run. When training starts, its model
    config is copied into ``stage1`` (and its image shape into ``in_channels``/``image_size``) and
    its weights into this model, so the finished run folder stands alone. ``recon_input`` also feeds
    the stage-1 reconstruction to every coupling network of the flow.
    """

    kind: Literal["multistage"] = "multistage"
    in_channels: int = setting(1, ge=1, le=4)
    image_size: int = setting(64, ge=28, le=64)
    stage1_run: str | None = setting(None, local=True, help="run folder of the trained btcvae stage 1")
    recon_input: bool = False
    stage1: BTCVAEConfig = setting(factory=BTCVAEConfig, help="stage 1's model config (copied from stage1_run)")

    @property
    def n_factors(self) -> int:
        """Dimension of the factors c (stage 1's latent)."""
        return self.stage1.n_factors

    renamed = {"d_z": "stage1.n_factors", "stage1": "stage1_run"}
    legacy_sections = ("multistage", "btcvae")

    @classmethod
    def migrate(cls, model: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """From an earlier release's file: the Glow's fields of its ``model`` section, stage 1's config
        from the image shape, ``model.d_z`` and the ``btcvae`` section (:meth:`BTCVAEConfig.migrate`),
        and ``stage1_run`` and ``recon_input`` from the ``multistage`` section."""
        glow = {f.name for f in fields(GlowSettings)}
        section = sections.get("multistage", {})
        new = {k: v for k, v in model.items() if k in glow}
        new.update(stage1=BTCVAEConfig.migrate({**model, "kind": "btcvae"}, sections),
                   stage1_run=section.get("stage1"), recon_input=section.get("recon_input", False))
        return new

    def for_training(self, n_train: int, runs: OtherRuns | None = None) -> MultiStageConfig:
        """With ``stage1`` and the image shape copied from the ``stage1_run`` folder's config, read
        through ``runs`` (the training pipeline's :class:`flowvae.runs.RunReader`).

        Raises:
            ConfigError: no stage-1 run given, or one that is not a beta-TCVAE run.
        """
        runs = _runs_given(runs)
        if not self.stage1_run:
            raise ConfigError("model.kind=multistage needs the stage-1 run: --set model.stage1_run=RUN, the run "
                              "folder of a trained btcvae (e.g. flowvae train dsprites-btcvae --run RUN)")
        path = Path(self.stage1_run)
        if not runs.is_run(str(path)):
            raise ConfigError(f"model.stage1_run={path} is not a run folder (no config.yaml); train stage 1 first")
        s1 = runs.model_config(str(path))
        if not isinstance(s1, BTCVAEConfig):
            raise ConfigError(f"model.stage1_run={path} holds a {s1.kind!r} model; stage 1 must be a btcvae run")
        return self.replace(stage1=s1, in_channels=s1.in_channels, image_size=s1.image_size)


def _runs_given(runs: OtherRuns | None) -> OtherRuns:
    if runs is None:  # the training pipeline passes them; a model never opens run folders itself
        raise ConfigError("preparing a multi-stage model for training needs the reader of its stage-1 run: pass "
                          "runs=flowvae.runs.RunReader()")
    return runs


class _StageTwoDecoder(WrappedGlow):
    """The conditional Glow with its conditioning built from the factors c: ``c`` alone, or ``c``
    followed by stage 1's flattened reconstruction (``recon_input``)."""

    _stage1: BTCVAE

    def __init__(self, glow: ConditionalGlow, stage1: BTCVAE, recon_input: bool):
        super().__init__(glow)
        self.recon_input = recon_input
        # A plain attribute, not a submodule: stage 1 is registered once, on MultiStage.
        self.__dict__["_stage1"] = stage1

    def condition(self, c: Tensor) -> Tensor:
        """Conditioning of the coupling networks for factors ``c [B, n_factors]``: ``c`` or
        ``[c, x_1(c)]`` with the stage-1 mean image on [0, 1], flattened (``[B, n_factors + D]``)."""
        if not self.recon_input:
            return c
        with torch.no_grad():
            params = self._stage1._decode_params(c)
            mean = self._stage1.pixel_mean(params)
        return torch.cat([c, mean.flatten(1).to(c.dtype)], 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ConfigError("the multi-stage flow needs the factors c as its condition")
        return self.glow(x, self.condition(cond))

    def inverse(self, v: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ConfigError("the multi-stage flow needs the factors c as its condition")
        return self.glow.inverse(v, self.condition(cond))


@register
class MultiStage(FlowDecoderModel):
    """Multi-stage model: a frozen beta-TCVAE (``stage1``) and a conditional Glow on its factors.

    Args:
        cfg: the flow's architecture and stage 1's config (:class:`MultiStageConfig`; stage 1's
            weights are loaded separately, by :meth:`prepare_training` or :meth:`load_stage1`, and
            are part of this model's state dict).
        n_bits: bits per pixel of the modelled data (1 for binary images such as dSprites).

    Methods (uint8 images ``[B, C, H, W]`` throughout): ``encode(x) -> (c [B, n_factors], v [B, D])``
    (disentangled factors, exact local code), ``decode(c, v)`` (exact inverse), ``sample``,
    :meth:`reconstruct` (from the factors alone, fresh local detail), :meth:`traverse` (one factor
    at a time), ``bits_per_dim`` (``-log p(x | c)``, see the module docstring), ``switch``,
    ``interpolate``.

    Raises:
        ConfigError: an architecture that cannot be built, or mismatched stages.
    """

    config_class: ClassVar[type[ModelSettings]] = MultiStageConfig
    kinds: ClassVar[dict[str, str]] = {
        "multistage": "a multi-stage model: a frozen β-TCVAE (stage 1) and a Glow conditioned on its factors"}
    cfg: MultiStageConfig

    def __init__(self, cfg: MultiStageConfig, n_bits: int = 8):
        super().__init__(cfg, n_bits)
        s1 = cfg.stage1
        if (s1.in_channels, s1.image_size) != (cfg.in_channels, cfg.image_size):
            raise ConfigError(
                f"stage 1 models {s1.in_channels}x{s1.image_size}x{s1.image_size} images but the flow is configured "
                f"for {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}; set model.in_channels/image_size to "
                f"stage 1's (the trainer copies them from model.stage1_run)")
        self.uses_z = True
        self.stage1 = BTCVAE(cfg.stage1, 8)
        self.stage1.requires_grad_(False)
        recon_input = cfg.recon_input
        try:
            glow = self.build_glow(cfg, cfg.n_factors,
                                   cond_image=(cfg.in_channels, cfg.image_size) if recon_input else None)
        except ValueError as e:
            raise ConfigError(f"cannot build the model: {e}") from None
        self.decoder = _StageTwoDecoder(glow, self.stage1, recon_input)
        self.prior = StandardNormalPrior(cfg.n_factors)
        self.dim = glow.dim
        self.dequantizer = self.build_dequantizer(cfg)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(global_local=True, exact_codes=True, vector_latent=True, reconstruction=True,
                            bf16=True, recompute=True)

    @property
    def latent_dim(self) -> int:
        """Dimension of the factors c."""
        return self.cfg.n_factors

    @property
    def latent_meanings(self) -> dict[str, str]:
        """``z``: the factors c."""
        return {"z": "factors c: stage 1's (beta-TCVAE) q(c|x), the flow's condition"}

    def prepare_training(self, runs: OtherRuns | None = None) -> None:
        """Load stage 1's weights from ``cfg.stage1_run`` through ``runs`` (a fresh run; on resume
        they are in the checkpoint)."""
        runs = _runs_given(runs)
        if not self.cfg.stage1_run:
            raise ConfigError("model.kind=multistage needs the stage-1 run: --set model.stage1_run=RUN")
        stage1 = runs.model(self.cfg.stage1_run)
        if not isinstance(stage1, BTCVAE):
            raise ConfigError(f"model.stage1_run={self.cfg.stage1_run} holds a {stage1.kind!r} model; stage 1 must "
                              f"be a btcvae run")
        self.load_stage1(stage1)

    def train(self, mode: bool = True) -> MultiStage:
        super().train(mode)
        self.stage1.eval()  # frozen: always in evaluation mode
        return self

    def load_stage1(self, stage1: BTCVAE) -> MultiStage:
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

    def draw_code(self, bins: Tensor, k: int, generator: torch.Generator | None,
                  shard: tuple[int, int] | None) -> tuple[Tensor | None, Tensor | None]:
        """The factors ``c``, stage 1's posterior mean, ``k`` times per image ``[B * k, n_factors]``; no KL
        term (``None``: c is a function of x, so ``log p(x + u | c) - D log n_bins - log q(u|x)`` is
        the whole weight; see :meth:`FlowDecoderModel.log_weights`)."""
        c = self.posterior(bins)[0]
        return (c.repeat_interleave(k, 0) if k > 1 else c), None

    # ------------------------------------------------------------------ tools
    @torch.no_grad()
    def reconstruct(self, x: Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Reconstruction from the factors alone: ``c = encode(x)``, a fresh local code
        ``v ~ N(0, temperature^2 I)`` (``0``: ``v = 0``), decoded. uint8 ``[B, C, H, W]``."""
        c, _ = self._codes(x)
        v = torch.randn(c.shape[0], self.dim, generator=generator, device=c.device) * temperature
        return self.decode(c, v)

    def describe(self) -> dict[str, Any]:
        """Architecture and parameter counts (total, flow, stage 1)."""
        d = super().describe()
        d["recon_input"] = self.cfg.recon_input
        return d
