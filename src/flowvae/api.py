"""Loading a trained run folder in one call."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from .config import Config, load_config
from .errors import CheckpointError
from .models.base import GenerativeModel, create_model

__all__ = ["load_run"]


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def _refuse_link(path: Path) -> None:
    """Refuse a run-folder file that is a symbolic link or not a regular file (FIFO, device)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(f"refusing {path}: it is a symbolic link, not a file of the run folder")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"refusing {path}: it is {_file_kind(st.st_mode)}, not a regular file; replace it "
                              f"with the file itself")


def load_run(run: str | Path, device: str | torch.device = "cpu", checkpoint: str | None = None) -> GenerativeModel:
    """Load the model of a run folder, in eval mode, with its config attached as ``model.config``
    and the folder as ``model.run_dir`` (whose metrics :meth:`~GenerativeModel.save_pretrained` puts
    on the model card).

    Reads ``run/config.yaml`` and the weights from ``run/model.safetensors`` (or, when training
    has not finished, the newest valid checkpoint). Loading never executes code from the files
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
    from .training.checkpoint import checkpoint_model_state, load_latest_checkpoint
    from .training.environment import resolve_device

    device = resolve_device(str(device))  # "cuda" without a GPU: a one-line ConfigError, before any reading
    run = Path(run)
    # lexists: a FIFO, folder or link named config.yaml is refused as what it is, not reported missing
    if not os.path.lexists(run / "config.yaml"):
        raise CheckpointError(f"{run} is not a flowvae run folder (no config.yaml); pass the folder given to --run")
    cfg, model = _config_and_model(run / "config.yaml")
    weights = run / "model.safetensors"
    if os.path.lexists(weights) and checkpoint != "latest":
        _refuse_link(weights)
    if weights.is_file() and checkpoint != "latest":
        state = _read_weights(weights, cfg.model.kind)
        source = weights
    else:
        found = load_latest_checkpoint(run / "checkpoints")
        if found is None:
            raise CheckpointError(f"{run} has neither model.safetensors nor a valid checkpoint; train it first")
        source, ckpt = found
        state = checkpoint_model_state(source, ckpt)
    _fit(model, state, source, run / "config.yaml")
    model.config = cfg
    model.run_dir = run  # where the run's metrics live, for the model card of save_pretrained
    return model.to(device).eval()


def _config_and_model(path: Path) -> tuple[Config, GenerativeModel]:
    """The config at ``path`` (not a symlink) and its freshly built model."""
    _refuse_link(path)
    cfg = load_config(path)
    return cfg, create_model(cfg)


def _read_weights(weights: Path, kind: str, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``weights``, a safetensors file with flowvae's metadata for a ``kind`` model
    (and, with ``max_bytes``, at most that large, so a planted file cannot fill memory)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if max_bytes is not None and (size := os.stat(weights).st_size) > max_bytes:
        raise CheckpointError(f"refusing {weights}: {size:,} bytes, more than the {max_bytes:,} that the "
                              f"weights of its config's {kind!r} model take; it is not this model's weight file")
    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - any parse failure means an unusable file
        raise CheckpointError(f"{weights} cannot be read ({e}); it is not a safetensors file "
                              f"or was cut short") from None
    if meta.get("format") != "flowvae" or meta.get("kind", kind) != kind:
        raise CheckpointError(f"{weights} was not written by flowvae for a {kind!r} model "
                              f"(metadata {meta}); check that the run folder is complete and unmodified")
    return state


def _fit(model: GenerativeModel, state: dict[str, torch.Tensor], source: Path, config: Path) -> None:
    """Load ``state`` into ``model`` strictly: every tensor present, in name and shape."""
    from .training.checkpoint import state_dict_mismatch

    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit the architecture in {config}: "
                              f"{state_dict_mismatch(e)}") from None
