"""One place that turns a :class:`~flowvae.config.Config` into a model, whatever its kind."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .flowvae import FlowVAE

__all__ = ["create_model"]


def create_model(cfg: Config) -> nn.Module:
    """The model named by ``cfg.model.kind``: :class:`FlowVAE` (``flowvae``, ``z_prior``,
    ``refined_glow``, ``glow``) or :class:`~flowvae.models.ugvae.UGVAE` (``ugvae``, settings in
    ``cfg.ugvae``).

    Raises:
        ConfigError: an architecture that cannot be built, with the reason.
    """
    if cfg.model.kind != "ugvae":
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
