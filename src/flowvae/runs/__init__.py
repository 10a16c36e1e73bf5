"""The run folder: one owner of its layout and of every read and write of its files.

:class:`RunFolder` (:mod:`flowvae.runs.folder`) knows where each file is and reads and writes it
safely; :mod:`flowvae.runs.checkpoints` the checksummed training checkpoints, :mod:`flowvae.runs.lock`
the training lock, :mod:`flowvae.runs.data` the record of what a run was trained on and the data
commands read for it. :func:`load_run` loads a run's model in one call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .data import DataRecord, SplitRecord, load_run_split, read_data_record, write_data_record
from .folder import RunFolder, RunReader

if TYPE_CHECKING:
    import torch

    from ..models.base import GenerativeModel

__all__ = ["DataRecord", "RunFolder", "RunReader", "SplitRecord", "load_run", "load_run_split", "read_data_record",
           "write_data_record"]


def load_run(run: str | Path, device: str | torch.device = "cpu", checkpoint: str | None = None) -> GenerativeModel:
    """Load the model of a run folder, in eval mode, with its config attached as ``model.config``
    and the folder as ``model.run_dir`` (whose metrics :meth:`~GenerativeModel.save_pretrained` puts
    on the model card).

    Reads ``run/config.yaml`` and the weights from ``run/model.safetensors`` (or, when training
    has not finished, the newest valid checkpoint): the weights the run reports, which for a run
    with ``train.ema_decay`` are the averaged ones. Loading never executes code from the files
    (safetensors, or ``torch.load(weights_only=True)``).

    Args:
        run: the run folder written by ``flowvae train``.
        device: where to put the model.
        checkpoint: ``"latest"`` to prefer the newest checkpoint over the final weights.

    A run folder from elsewhere is validated before use: the config must parse (unknown fields are
    refused), the weights must carry flowvae's metadata for the same model kind, and every tensor
    must match the architecture in name and shape.

    Raises:
        CheckpointError: not a run folder; a config.yaml or weight file that is a symbolic link,
            FIFO, device or folder; weights that do not fit the config.
        ConfigError: a config.yaml that does not parse or has unknown fields; a device that is not
            available (``"cuda"`` without a GPU) or not known.
    """
    return RunFolder(run).load_model(device, checkpoint)
