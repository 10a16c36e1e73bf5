"""Training: the pipeline and the loop (:func:`train`), callbacks and experiment loggers."""

from .callbacks import Callback, CallbackError, TrainState
from .loggers import TensorBoardLogger, WandbLogger
from .trainer import train

__all__ = ["Callback", "CallbackError", "TensorBoardLogger", "TrainState", "WandbLogger", "train"]
