"""Training: the loop, checkpoints and the run folder."""

from .trainer import train

__all__ = ["train"]
