"""Import a model trained with the authors' implementation (github.com/XuezheMax/wolf, commit 1d23ca2).

The authors' ``experiments/train.py`` leaves in its model folder (``--model_path``):

* ``config.json``: the architecture (sections ``generator``, ``discriminator``, ``dequantizer``);
* ``model.pt``: ``torch.save({"core": WolfCore.state_dict()})`` (``WolfModel.save`` in
  ``wolf/wolf.py``), written whenever the validation NLL improves;
* ``checkpoint{step}.tar``: ``{"epoch", "step", "model": WolfModel.state_dict(), "optimizer", ...}``
  every 1,000 steps, plus ``checkpoint0.tar`` next to each new ``model.pt``. The ``model`` keys
  start with ``core.`` (``core.module.`` when trained with DistributedDataParallel). ``step``
  counts within an epoch, so the newest checkpoint is the one written last (modification time).

Their image size, bit depth and data set are command-line arguments of ``train.py``, not part of
``config.json``: the image size is read off the encoder (``discriminator.in_dim``) where there is
one, else it must be given; the bit depth defaults to 8.

The stages, one module each: :mod:`~flowvae.interop.wolf.files` reads the folder
(:func:`read_wolf_dir`); then the conversion, each step derived from ``config.json`` alone:

1. :func:`translate_config` (:mod:`~flowvae.interop.wolf.config`): their configuration -> a :class:`~flowvae.models.FlowVAEConfig`
   (kind ``flowvae`` for their ``gaussian`` discriminator, ``refined_glow`` for ``base``: their
   ``glow`` flow type is the refined Glow of §2.2, so flowvae's original-Glow kind ``glow`` has no
   counterpart there). Every key is read; a key or value without a flowvae counterpart is refused
   in one line naming it.
2. :func:`tensor_map` (:mod:`~flowvae.interop.wolf.tensors`): their modules, in the order their constructors build them (``Glow`` ->
   ``MultiScaleArchitecture`` -> ``GlowStep``/``MultiScalePrior``; ``GlobalResNetEncoderBatchNorm``;
   ``FlowPrior``), are walked side by side with flowvae's modules in order of operation, giving one
   :class:`TensorRow` per tensor with the operation that maps theirs onto ours.
3. :func:`convert_state` (the same module) applies the operations; :func:`import_wolf`
   (:mod:`~flowvae.interop.wolf.importer`) writes the run folder.

The operations are layout only (each leaves the computed function unchanged; verified against the
authors' outputs in ``../shared/golden/wolf-cifar-reduced``):

* pixels: theirs are on ``[-1, 1)``, ours on ``[-0.5, 0.5)``: the factor 2 is folded into the first
  decoder ActNorm (``log_scale + log 2``) and into the encoder's first convolution and first
  shortcut convolution (weights times 2). Bits/dim are the same in both; their ``logdet`` and
  ``log p(x+u|z)`` are ours minus ``D log 2``.
* affine couplings: their networks emit ``[bias ; scale pre-activation]``, ours
  ``[scale pre-activation ; bias]``: the halves of the last layer's rows are swapped (additive
  couplings emit the bias alone and are copied).
* ActNorm parameters are ``[C, 1, 1]`` there and ``[C]`` here, and flowvae's ``initialized`` flag
  is set; their cached inverses of the 1x1 convolutions (``weight_inv``) are dropped (flowvae
  inverts from the weight at each call).
* their encoder sees the lower edge of each pixel's bin: the imported model sets
  ``model.encoder_input=lower-edge`` unless told otherwise.
"""

from __future__ import annotations

from .config import ENCODER_INPUTS, EncoderInput, translate_config
from .files import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from .files import MAX_CONFIG_DEPTH as MAX_CONFIG_DEPTH
from .files import MAX_WEIGHT_BYTES as MAX_WEIGHT_BYTES
from .files import WolfModelFiles, read_wolf_dir
from .importer import WOLF_COMMIT, import_wolf
from .tensors import OPS as OPS
from .tensors import TensorRow, convert_state, tensor_map

__all__ = ["WOLF_COMMIT", "ENCODER_INPUTS", "EncoderInput", "TensorRow", "WolfModelFiles", "read_wolf_dir",
           "translate_config", "tensor_map", "convert_state", "import_wolf"]
