"""One place that turns a :class:`~flowvae.config.Config` into a model, whatever its kind."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .flowvae import FlowVAE

__all__ = ["create_model", "btcvae_config"]


def btcvae_config(cfg: Config) -> "BTCVAEConfig":
    """The :class:`~flowvae.models.btcvae.BTCVAEConfig` of ``cfg`` (section ``btcvae`` with
    ``model.in_channels``, ``model.image_size`` and ``model.d_z``)."""
    from .btcvae import BTCVAEConfig

    b, m = cfg.btcvae, cfg.model
    return BTCVAEConfig(in_channels=m.in_channels, image_size=m.image_size, d_z=m.d_z,
                        conv_channels=list(b.conv_channels), hidden=b.hidden, likelihood=b.likelihood,
                        alpha=b.alpha, beta=b.beta, gamma=b.gamma, estimator=b.estimator,
                        dataset_size=b.dataset_size)


def create_model(cfg: Config) -> nn.Module:
    """The model named by ``cfg.model.kind``: :class:`FlowVAE` (``flowvae``, ``z_prior``,
    ``refined_glow``, ``glow``), :class:`~flowvae.models.ugvae.UGVAE` (``ugvae``, settings in
    ``cfg.ugvae``), :class:`~flowvae.models.btcvae.BTCVAE` (``btcvae``, settings in ``cfg.btcvae``)
    or :class:`~flowvae.models.multistage.MultiStage` (``multistage``: stage 1 from ``cfg.btcvae``,
    untrained until its weights are loaded; the trainer does that from ``multistage.stage1``).

    Raises:
        ConfigError: an architecture that cannot be built, with the reason.
    """
    kind = cfg.model.kind
    if kind == "btcvae":
        from .btcvae import BTCVAE

        if cfg.btcvae.likelihood == "discretized_logistic" and cfg.data.n_bits != 8:
            raise ConfigError(f"the discretized logistic likelihood models 8-bit images; got data.n_bits={cfg.data.n_bits}")
        return BTCVAE(btcvae_config(cfg))
    if kind == "multistage":
        from .multistage import MultiStage

        return MultiStage(cfg.model, btcvae_config(cfg), cfg.data.n_bits, cfg.multistage.recon_input)
    if kind != "ugvae":
        return FlowVAE(cfg.model, cfg.data.n_bits)
    from .ugvae import UGVAE, UGVAEConfig

    if cfg.data.n_bits != 8:
        raise ConfigError(f"the UG-VAE models 8-bit images; got data.n_bits={cfg.data.n_bits}")
    u = cfg.ugvae
    return UGVAE(UGVAEConfig(
        in_channels=cfg.model.in_channels, image_size=cfg.model.image_size, d_z=cfg.model.d_z,
        d_beta=u.d_beta, K=u.K, hidden=list(u.hidden), conv_channels=list(u.conv_channels),
        encoder=u.encoder, decoder=u.decoder, likelihood=u.likelihood, d_posterior=u.d_posterior,
        decoder_beta=u.decoder_beta, beta_prior_in_product=u.beta_prior_in_product))
