"""Bringing models trained elsewhere into flowvae run folders.

* :mod:`flowvae.interop.wolf`: models of the authors' implementation
  (github.com/XuezheMax/wolf), ``flowvae import-wolf``.
"""

from .wolf import TensorRow, WolfModelFiles, import_wolf, read_wolf_dir, tensor_map, translate_config

__all__ = ["TensorRow", "WolfModelFiles", "import_wolf", "read_wolf_dir", "tensor_map", "translate_config"]
