"""flowvae: generative models that split an image into a global code z and a local code v.

Core model: Ma, Kong, Zhang, Hovy, "Decoupling Global and Local Representations via Invertible
Generative Flows", ICLR 2021.
"""

from .config import Config, DataConfig, ModelConfig, TrainConfig
from .models import (
    MODEL_KINDS,
    Capabilities,
    FlowVAE,
    FlowVAEConfig,
    GenerativeModel,
    build_model,
    create_model,
)
from .presets import get_preset
from .runs import load_run
from .version import __version__

__all__ = ["Capabilities", "Config", "DataConfig", "FlowVAE", "FlowVAEConfig", "GenerativeModel", "MODEL_KINDS",
           "ModelConfig", "TrainConfig", "__version__", "build_model", "create_model", "from_pretrained",
           "get_preset", "load_run", "push_to_hub", "save_pretrained", "train"]


def __getattr__(name: str):
    # flowvae.train (flowvae.training.train) without importing the trainer with the package
    if name == "train":
        from .training import train

        return train
    # flowvae.from_pretrained / save_pretrained / push_to_hub (flowvae.hub), imported on first use like
    # train; models call these for their save_pretrained / push_to_hub methods
    if name in ("from_pretrained", "save_pretrained", "push_to_hub"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'flowvae' has no attribute {name!r}")
