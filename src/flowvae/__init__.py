"""flowvae: generative models that split an image into a global code z and a local code v.

Core model: Ma, Kong, Zhang, Hovy, "Decoupling Global and Local Representations via Invertible
Generative Flows", ICLR 2021.
"""

__version__ = "0.1.0"

from .api import load_run  # noqa: E402
from .config import Config, DataConfig, ModelConfig, TrainConfig, get_preset  # noqa: E402
from .models import FlowVAE, build_model  # noqa: E402

__all__ = ["Config", "DataConfig", "FlowVAE", "ModelConfig", "TrainConfig", "__version__", "build_model",
           "get_preset", "load_run"]
