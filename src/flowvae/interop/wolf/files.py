"""Finding and reading the authors' files (:func:`read_wolf_dir`): ``config.json`` and the weights
(``model.pt`` or a ``checkpoint*.tar``).

Files from elsewhere may be hostile: each is read without following symbolic links, only as a
regular file of bounded size, and the weights with a weights-only ``torch.load`` that never inflates
a compressed archive entry (:func:`flowvae.safe_io.load_weights_only`).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ... import safe_io
from ...errors import CheckpointError, ConfigError

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "MAX_WEIGHT_BYTES", "WolfModelFiles", "load_torch_file",
           "read_wolf_dir"]

MAX_CONFIG_BYTES = 1 << 20  # their config.json is about 2 kB
# Their config.json nests 5 levels (generator.flow.num_steps[1] is a list); deeper values are refused before
# anything (messages, the import record) walks them recursively.
MAX_CONFIG_DEPTH = 16
# model.pt of the paper's largest model is about 0.5 GB and a checkpoint three times that; the same
# bound as flowvae's own checkpoints.
MAX_WEIGHT_BYTES = 16 * 1024**3
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_WHERE = ("MODEL_DIR is the authors' model folder (their train.py's --model_path), holding config.json and model.pt "
          "or checkpoint*.tar")


@dataclass
class WolfModelFiles:
    """What :func:`read_wolf_dir` read from the authors' model folder.

    Attributes:
        folder: the model folder.
        config: their parsed ``config.json``.
        weights: the file the weights came from (``model.pt`` or a ``checkpoint*.tar``).
        layout: ``"model.pt"`` (``{"core": state}``) or ``"checkpoint"`` (``{"model": state}``).
        prefix: what was removed from every key (``""``, ``"core."`` or ``"core.module."``).
        state: their tensors by name, as ``WolfCore.state_dict()`` names them.
        info: numbers a checkpoint records besides the weights (``epoch``, ``step``, ``best_bpd``, ...).
        sha256: SHA-256 of the weights file (hex).
    """

    folder: Path
    config: dict[str, Any]
    weights: Path
    layout: str
    prefix: str
    state: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


# ---------------------------------------------------------------------------------------------- torch files

def _numpy_scalars() -> list[Any]:
    """Globals a weights-only load may use to rebuild numpy scalars (their checkpoints store the best
    NLL/bpd as ``numpy.float64``); plain numbers, no code.

    A pickle names numpy's ``scalar`` by the module it was written under: ``numpy.core.multiarray`` (numpy
    1) or ``numpy._core.multiarray`` (numpy 2). torch looks an allowed global up by its
    ``__module__``/``__name__`` (2.4) or ``__qualname__`` (later), and only releases from 2.6 take an
    explicit ``(global, name)`` pair, so each spelling gets a forwarding function that carries it.
    ``codecs.encode`` turns the pickled text of the scalar's bytes back into bytes.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    real = core.multiarray.scalar

    def spelled(module: str) -> Any:
        def scalar(*args: Any) -> Any:
            return real(*args)

        scalar.__module__ = module
        scalar.__name__ = scalar.__qualname__ = "scalar"
        return scalar

    kinds = {type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")}
    # a scalar's bytes are pickled as _codecs.encode(text, "latin1"); torch >= 2.5 allows it by default
    return [codecs.encode, np.dtype, *sorted(kinds, key=str), spelled("numpy.core.multiarray"), spelled("numpy._core.multiarray")]


@contextlib.contextmanager
def _numpy_scalars_allowed() -> Iterator[None]:
    """Allow :func:`_numpy_scalars` in weights-only loads inside the block, then restore torch's list.

    ``torch.serialization.add_safe_globals`` (torch >= 2.4) rather than the ``safe_globals`` context
    manager (2.5): the list is process-wide either way, and one code path serves the whole range."""
    ser = torch.serialization
    saved = list(ser.get_safe_globals())
    ser.add_safe_globals(_numpy_scalars())
    try:
        yield
    finally:
        ser.clear_safe_globals()
        if saved:
            ser.add_safe_globals(saved)


def _open_regular(path: Path, max_bytes: int) -> tuple[int, int]:
    """An fd of ``path`` opened without following a symlink and its size; refuses non-regular and oversized files."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except OSError as e:
        if os.path.islink(path):
            raise CheckpointError(f"refusing {path}: it is a symbolic link; copy the file itself into the "
                                  f"model folder") from None
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CheckpointError(f"refusing {path}: it is not a regular file")
    if st.st_size > max_bytes:
        os.close(fd)
        raise CheckpointError(f"refusing {path}: {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
    os.set_blocking(fd, True)
    return fd, st.st_size


def load_torch_file(path: Path, max_bytes: int = MAX_WEIGHT_BYTES) -> tuple[Any, str]:
    """``torch.load(path, weights_only=True, map_location="cpu")`` of a regular file (no symlink) of at
    most ``max_bytes``, and its SHA-256 (hex); never executes code from the file, and never inflates a
    compressed archive entry (:func:`flowvae.safe_io.load_weights_only`). numpy scalars (their
    checkpoints' ``best_bpd``, ...) load under numpy 1 and 2; torch's allow list is restored after.

    Raises:
        CheckpointError: no such file, a symlink or non-regular file, more than ``max_bytes``, or
            a file that is not a weights-only torch file.
    """
    fd, _ = _open_regular(path, max_bytes)
    with os.fdopen(fd, "rb") as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
        f.seek(0)
        with _numpy_scalars_allowed():
            obj = safe_io.load_weights_only(f, path, hint="save the state dict alone "
                                            "(torch.save({'core': core.state_dict()}, 'model.pt'))")
    return obj, digest.hexdigest()


# ---------------------------------------------------------------------------------------------- the model folder

def _nesting(value: Any) -> int:
    """How many levels of lists and objects ``value`` (parsed JSON) nests, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _plain(value: Any) -> Any:
    """A checkpoint's bookkeeping value as JSON (numpy scalars and 0-d tensors as numbers), else ``None``."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _checkpoints(folder: Path) -> list[Path]:
    """``checkpoint*.tar`` entries of ``folder`` (symlinks included, to be refused when chosen), newest last."""
    found = [p for p in folder.iterdir() if p.name.startswith("checkpoint") and p.name.endswith(".tar")]
    return sorted(found, key=lambda p: (os.lstat(p).st_mtime_ns, p.name))


def read_wolf_dir(folder: str | Path, checkpoint: str | Path | None = None) -> WolfModelFiles:
    """Read the authors' model folder: ``config.json`` and the weights.

    The weights: ``checkpoint`` if given (a bare file name is looked up in ``folder``), else
    ``model.pt``, else the ``checkpoint*.tar`` written last. Files are read without following
    symbolic links and only as regular files of bounded size (``config.json`` 1 MiB, weights
    16 GiB), the weights with ``torch.load(weights_only=True, map_location="cpu")``.

    Raises:
        ConfigError: no ``config.json``, or one that is not a JSON object or nests more than
            :data:`MAX_CONFIG_DEPTH` levels.
        CheckpointError: no weights file, a symlink or non-regular file, a file that is not a
            weights-only torch file or is an archive with compressed or oversized entries
            (:func:`flowvae.safe_io.check_torch_archive`), or one without a ``core`` / ``model`` state dict of tensors
            whose keys share the prefix ``core.`` or ``core.module.`` (checkpoints).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; {_WHERE}")
    config = _read_config(folder)
    weights = _choose_weights(folder, checkpoint)
    obj, sha = load_torch_file(weights)
    layout, prefix, state, info = _core_state(obj, weights)
    return WolfModelFiles(folder, config, weights, layout, prefix, state, info, sha)


def _read_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json``: a JSON object of at most :data:`MAX_CONFIG_BYTES` and :data:`MAX_CONFIG_DEPTH` levels."""
    cfg_path = folder / "config.json"
    if not os.path.lexists(cfg_path):
        raise ConfigError(f"{folder} has no config.json; {_WHERE}")
    try:
        raw = safe_io.read_bytes(cfg_path, MAX_CONFIG_BYTES)
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{cfg_path} is not JSON ({e})") from None
    except RecursionError:  # json's decoder recurses once per level of [ or {
        raise ConfigError(f"{cfg_path} nests lists or objects too deeply (more than {MAX_CONFIG_DEPTH} levels) to "
                          f"be the authors' config.json, which nests 5; it is not read") from None
    depth = _nesting(config)
    if depth > MAX_CONFIG_DEPTH:
        raise ConfigError(f"{cfg_path} nests lists or objects {depth} levels deep, more than the "
                          f"{MAX_CONFIG_DEPTH} allowed (the authors' config.json nests 5); it is not read")
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg_path} must hold a JSON object with generator, discriminator and dequantizer")
    return config


def _choose_weights(folder: Path, checkpoint: str | Path | None) -> Path:
    """``checkpoint`` (a bare name is in ``folder``), else ``model.pt``, else the newest ``checkpoint*.tar``."""
    if checkpoint is not None:
        chosen = Path(checkpoint)
        weights = folder / chosen if chosen.parent == Path(".") else chosen
        if not os.path.lexists(weights):
            names = ", ".join(p.name for p in _checkpoints(folder)) or "none"
            raise CheckpointError(f"{weights} does not exist (checkpoints in {folder}: {names})")
        return weights
    if os.path.lexists(folder / "model.pt"):  # lexists: a symlinked model.pt is refused, not skipped
        return folder / "model.pt"
    found = _checkpoints(folder)
    if not found:
        raise CheckpointError(f"{folder} has neither model.pt nor a checkpoint*.tar; the authors' train.py writes "
                              f"them into its --model_path")
    return found[-1]


def _core_state(obj: Any, weights: Path) -> tuple[str, str, dict[str, Tensor], dict[str, Any]]:
    """The layout, the key prefix removed, their core's tensors and a checkpoint's numbers, from the
    loaded ``obj`` (``{"core": state}`` of model.pt or ``{"model": state, "epoch", ...}`` of a checkpoint)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{weights} holds a {type(obj).__name__}, not the authors' dict with 'core' (model.pt) "
                              f"or 'model' (checkpoint*.tar)")
    info: dict[str, Any] = {}
    if "core" in obj:
        layout, state = "model.pt", obj["core"]
    elif "model" in obj:
        layout, state = "checkpoint", obj["model"]
        info = {k: v for k in ("epoch", "step", "best_epoch", "best_nll", "best_bpd", "best_kl", "best_nent",
                               "best_nepd") if k in obj and (v := _plain(obj[k])) is not None}
    else:
        raise CheckpointError(f"{weights} has neither a 'core' entry (model.pt) nor a 'model' entry (checkpoint*.tar); "
                              f"entries: {', '.join(map(str, list(obj)[:8]))}")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                           for k, v in state.items()):
        raise CheckpointError(f"{weights}: its {'core' if layout == 'model.pt' else 'model'} entry is not a "
                              f"non-empty mapping of tensor names to tensors")
    if layout == "model.pt":  # WolfModel.save stores the core itself; "module." if someone saved a DDP wrapper
        prefix: str | None = "module." if all(k.startswith("module.") for k in state) else ""
    else:  # WolfModel.state_dict(): its core, wrapped in DistributedDataParallel or not
        prefix = next((p for p in ("core.module.", "core.") if all(k.startswith(p) for k in state)), None)
    if prefix is None:
        odd = next(k for k in state if not k.startswith("core."))
        raise CheckpointError(f"{weights}: key {odd!r} of its 'model' entry does not start with 'core.'; the authors' "
                              f"checkpoints store WolfModel.state_dict() (keys core.* or core.module.*)")
    return layout, prefix, {k[len(prefix):]: v for k, v in state.items()}, info
