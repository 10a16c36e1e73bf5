"""The whole import (:func:`import_wolf`): read the authors' folder, translate its config, convert
its weights, and write a flowvae run folder through :class:`~flowvae.runs.RunFolder`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import CheckpointError, ConfigError
from ...models.flow_decoder import FlowDecoderModel
from .config import EncoderInput, translate_config
from .files import WolfModelFiles, read_wolf_dir
from .tensors import TensorRow, convert_state, tensor_map

if TYPE_CHECKING:
    from ...config import Config, DataConfig
    from ...runs import RunFolder

__all__ = ["IMPORT_RECORD", "WOLF_COMMIT", "import_wolf"]

WOLF_COMMIT = "1d23ca2"
"""The commit of github.com/XuezheMax/wolf whose module layout this importer follows."""
IMPORT_RECORD = "import.json"
"""The run folder's provenance record of an import."""
# Image shapes of the data sets the authors trained on, and flowvae's source of each (their
# train.py --dataset cifar10 | imagenet | lsun | celeba); others become a folder data set.
_DATASETS = {(3, 32): "cifar10", (3, 64): "imagenet64", (3, 128): "lsun", (3, 256): "celebahq", (1, 28): "mnist"}


def import_wolf(model_dir: str | Path, run: str | Path, *, checkpoint: str | Path | None = None,
                encoder_input: EncoderInput = "lower-edge", image_size: int | None = None, n_bits: int = 8,
                dataset: str | None = None, data_root: str | None = None, force: bool = False) -> dict[str, Any]:
    """Convert the authors' model folder into a flowvae run folder that every command can use.

    Writes, through :class:`~flowvae.runs.RunFolder` and under its lock, ``run/model.safetensors``
    (flowvae's metadata ``format=flowvae``, ``kind``, ``flowvae_version``, as training writes it),
    ``run/import.json`` (provenance: the source folder and file with its SHA-256, their
    ``config.json``, the options and every tensor's mapping) and, last, ``run/config.yaml``, each
    atomically, then loads the folder back as :func:`flowvae.load_run` does to check it.

    The imported model computes the authors' function: same bits/dim on the same images and noise
    (with ``encoder_input="lower-edge"``, the default; ``"centre"`` gives flowvae's convention, and
    q(z|x) then sees pixels half a bin higher than in training).

    Args:
        model_dir: the authors' model folder (``config.json`` + ``model.pt`` / ``checkpoint*.tar``).
        run: the run folder to create; an existing non-empty one is refused unless ``force``
            (which never replaces a folder holding training checkpoints or metrics).
        checkpoint: which weights file (see :func:`~flowvae.interop.wolf.files.read_wolf_dir`).
        encoder_input: ``model.encoder_input`` of the imported model.
        image_size: image side in pixels (read from the encoder when ``None``; required without one).
        n_bits: bits per pixel the model was trained on (their train.py's ``--n_bits``, default 8).
        dataset: flowvae data source for later commands (default from the image shape: 3x32
            ``cifar10``, 3x64 ``imagenet64``, 3x128 ``lsun``, 3x256 ``celebahq``, 1x28 ``mnist``,
            else ``folder``).
        data_root: ``data.root`` of the run (where that data set's files are).
        force: replace the config and weights of an earlier import in ``run``.

    Returns:
        ``{"run", "kind", "parameters", "weights", "layout", "tensors", "encoder_input", "image_size",
        "n_bits", "dataset"}``.

    Raises:
        ConfigError: see :func:`~flowvae.interop.wolf.config.translate_config`; a bad ``n_bits`` or
            ``encoder_input``.
        CheckpointError: see :func:`~flowvae.interop.wolf.files.read_wolf_dir` and
            :func:`~flowvae.interop.wolf.tensors.convert_state`; an unusable ``run``.
        DataError: an unknown ``dataset``.
    """
    from ...config import Config, TrainConfig
    from ...models.base import create_model
    from ...runs import RunFolder

    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise ConfigError(f"n_bits must be an integer in 1..8 (their train.py's --n_bits), got {n_bits!r}")
    folder = RunFolder(run)
    _check_target(folder, force)
    files = read_wolf_dir(model_dir, checkpoint)
    mcfg = translate_config(files.config, image_size=image_size, encoder_input=encoder_input)
    data = _data_config((mcfg.in_channels, mcfg.image_size), n_bits, dataset, data_root)
    cfg = Config(name=f"wolf-{files.folder.resolve().name}", model=mcfg, data=data, train=TrainConfig())
    model = create_model(cfg)
    assert isinstance(model, FlowDecoderModel)  # narrowing only: translate_config gives flow kinds
    rows = tensor_map(files.config, model)
    state = convert_state(rows, files.state, model.state_dict(), files.weights)
    model.load_state_dict(state)  # strict: convert_state produced exactly model's names and shapes
    params = sum(p.numel() for p in model.parameters())
    options = {"encoder_input": encoder_input, "image_size": mcfg.image_size, "n_bits": n_bits,
               "dataset": data.dataset, "data_root": data_root}
    _write_run(folder, cfg, model, _record(files, mcfg.kind, options, rows, params))
    return {"run": str(folder.path), "kind": mcfg.kind, "parameters": params, "weights": str(files.weights),
            "layout": files.layout, "tensors": len(model.state_dict()), "encoder_input": encoder_input,
            "image_size": mcfg.image_size, "n_bits": n_bits, "dataset": data.dataset}


def _check_target(folder: RunFolder, force: bool) -> None:
    """Refuse a run folder that is a link or not a folder, a non-empty one without ``force``, and
    with ``force`` one that holds a training history."""
    run = folder.path
    if os.path.islink(run):
        raise CheckpointError(f"refusing --run {run}: it is a symbolic link; name the folder itself")
    if not run.exists():
        return
    if not run.is_dir():
        raise CheckpointError(f"--run {run} exists and is not a folder")
    entries = [p.name for p in run.iterdir()]
    if not entries:
        return
    if not force:
        raise CheckpointError(f"--run {run} exists and is not empty ({', '.join(sorted(entries)[:4])}"
                              f"{', ...' if len(entries) > 4 else ''}); choose a new folder, or add --force to "
                              f"replace its config and weights")
    history = [n for n in (folder.METRICS, folder.CHECKPOINTS) if n in entries]
    if history:
        raise CheckpointError(f"--run {run} holds the training history of another run ({', '.join(history)}); "
                              f"--force replaces an imported model only: choose a new folder")


def _data_config(image_shape: tuple[int, int], n_bits: int, dataset: str | None, data_root: str | None
                 ) -> DataConfig:
    from ...config import DataConfig
    from ...data.registry import get_source

    name = dataset or _DATASETS.get(image_shape, "folder")
    get_source(name)  # an unknown name: one-line DataError listing the known ones
    return DataConfig(dataset=name, root=data_root, n_bits=n_bits,
                      image_size=image_shape[1] if name == "folder" else None)


def _record(files: WolfModelFiles, kind: str, options: dict[str, Any], rows: list[TensorRow], params: int
            ) -> dict[str, Any]:
    """The provenance record (``import.json``) of an import of ``files`` as a ``kind`` model of
    ``params`` parameters, with ``import_wolf``'s ``options``."""
    from ...version import __version__

    return {
        "format": "flowvae-import", "source": "github.com/XuezheMax/wolf", "wolf_commit": WOLF_COMMIT,
        "model_dir": str(files.folder.resolve()), "weights": str(files.weights.resolve()),
        "weights_sha256": files.sha256, "weights_layout": files.layout, "key_prefix": files.prefix,
        "checkpoint": files.info, "wolf_config": files.config,
        "options": options, "kind": kind, "parameters": params, "flowvae_version": __version__,
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tensor_map": [[r.flowvae, r.wolf, r.op] for r in rows],
    }


def _write_run(folder: RunFolder, cfg: Config, model: FlowDecoderModel, record: dict[str, Any]) -> None:
    """Write the weights, the import record and, last, the config (a folder with config.yaml is
    complete), under the folder's lock; then load it back as every command will."""
    with folder.lock():
        folder.write_weights(model)
        folder.write_json(IMPORT_RECORD, record)
        folder.write_config(cfg)
    loaded = folder.load_model("cpu")
    if sum(p.numel() for p in loaded.parameters()) != sum(p.numel() for p in model.parameters()):
        raise CheckpointError(f"{folder.path} does not load back as written; delete it and import again")
