"""Models: the paper's FlowVAE and the refined Glow baseline."""

from .flowvae import FlowVAE, build_model

__all__ = ["FlowVAE", "build_model"]
