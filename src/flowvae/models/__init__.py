"""Models: the paper's FlowVAE with its baselines, and the UG-VAE."""

from .factory import create_model
from .flowvae import FlowVAE, build_model
from .ugvae import UGVAE, UGVAEConfig

__all__ = ["FlowVAE", "UGVAE", "UGVAEConfig", "build_model", "create_model"]
