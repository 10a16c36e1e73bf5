"""Models: the paper's FlowVAE with its baselines, the UG-VAE, the beta-TCVAE and the multi-stage model.

Every kind implements the contract of :mod:`flowvae.models.base` and registers itself on import;
a new kind is one module plus one import line here.
"""

from .base import MODEL_KINDS, Capabilities, GenerativeModel, ModelSettings, config_class, create_model, model_class
from .btcvae import BTCVAE, BTCVAEConfig
from .flowvae import FlowVAE, FlowVAEConfig, GlowSettings, ModelConfig, build_model
from .multistage import MultiStage, MultiStageConfig
from .ugvae import UGVAE, UGVAEConfig
from .vae import VAE, VAEConfig

__all__ = ["BTCVAE", "BTCVAEConfig", "Capabilities", "FlowVAE", "FlowVAEConfig", "GenerativeModel", "GlowSettings",
           "MODEL_KINDS", "ModelConfig", "ModelSettings", "MultiStage", "MultiStageConfig", "UGVAE", "UGVAEConfig",
           "VAE", "VAEConfig", "build_model", "config_class", "create_model", "model_class"]
