"""Models: the paper's FlowVAE with its Glow baselines, the UG-VAE, the beta-TCVAE, the plain VAE and
the multi-stage model.

Every kind implements the contract of :mod:`flowvae.models.base` and registers itself on import;
a new kind is one module plus one import line here. The kinds whose decoder is an invertible flow
share :class:`~flowvae.models.flow_decoder.FlowDecoderModel`.
"""

from typing import Any

from .base import (
    MODEL_KINDS,
    Capabilities,
    GenerativeModel,
    ModelSettings,
    Samples,
    config_class,
    config_classes,
    create_model,
    model_class,
)
from .btcvae import BTCVAE, BTCVAEConfig
from .flow_decoder import FlowDecoderModel, GlowSettings, InvertibleDecoder
from .flowvae import FlowVAE, FlowVAEConfig, build_model
from .glow import Glow
from .multistage import MultiStage, MultiStageConfig
from .ugvae import UGVAE, UGVAEConfig
from .vae import VAE, VAEConfig

__all__ = ["BTCVAE", "BTCVAEConfig", "Capabilities", "FlowDecoderModel", "FlowVAE", "FlowVAEConfig",
           "GenerativeModel", "Glow", "GlowSettings", "InvertibleDecoder", "MODEL_KINDS", "ModelSettings",
           "MultiStage", "MultiStageConfig", "Samples", "UGVAE", "UGVAEConfig", "VAE", "VAEConfig", "build_model",
           "config_class", "config_classes", "create_model", "model_class"]


def __getattr__(name: str) -> Any:
    # Names of earlier releases: deprecated aliases for one release.
    if name == "ModelConfig":
        import warnings

        warnings.warn("flowvae.models.ModelConfig is FlowVAEConfig: import FlowVAEConfig (this alias goes in the next "
                      "release)", DeprecationWarning, stacklevel=2)
        return FlowVAEConfig
    raise AttributeError(f"module 'flowvae.models' has no attribute {name!r}")
