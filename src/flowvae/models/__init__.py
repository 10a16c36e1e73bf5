"""Models: the paper's FlowVAE with its baselines, the UG-VAE, the beta-TCVAE and the multi-stage model."""

from .btcvae import BTCVAE, BTCVAEConfig
from .factory import create_model
from .flowvae import FlowVAE, build_model
from .multistage import MultiStage
from .ugvae import UGVAE, UGVAEConfig

__all__ = ["BTCVAE", "BTCVAEConfig", "FlowVAE", "MultiStage", "UGVAE", "UGVAEConfig", "build_model", "create_model"]
