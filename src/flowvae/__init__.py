"""flowvae: generative models that split an image into a global code z and a local code v.

Core model: Ma, Kong, Zhang, Hovy, "Decoupling Global and Local Representations via Invertible
Generative Flows", ICLR 2021.
"""

__version__ = "0.1.0"

from .api import load_run  # noqa: E402
from .config import Config, DataConfig, ModelConfig, TrainConfig, get_preset  # noqa: E402
from .models import (  # noqa: E402
    MODEL_KINDS,
    Capabilities,
    FlowVAE,
    FlowVAEConfig,
    GenerativeModel,
    build_model,
    create_model,
)

__all__ = ["Capabilities", "Config", "DataConfig", "FlowVAE", "FlowVAEConfig", "GenerativeModel", "MODEL_KINDS",
           "ModelConfig", "TrainConfig", "__version__", "build_model", "create_model", "from_pretrained",
           "get_preset", "load_run", "push_to_hub", "train"]


def __getattr__(name: str):
    # flowvae.train (flowvae.training.train) without importing the trainer with the package
    if name == "train":
        from .training import train

        return train
    # flowvae.from_pretrained / flowvae.push_to_hub (flowvae.hub), imported on first use like train
    if name in ("from_pretrained", "push_to_hub"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'flowvae' has no attribute {name!r}")
