"""Atomic, checksummed checkpoints and the run-folder layout.

A run folder holds::

    config.yaml          resolved configuration
    environment.json     versions, git commit, hardware
    checkpoints/ckpt-00001000.pt (+ .sha256)   full training state, last N kept
    model.safetensors    final weights (loadable without executing any code)
    metrics.jsonl        one JSON object per evaluation
    samples/*.png        image grids

Checkpoints are written to a temporary file, flushed, fsynced and renamed, so a kill at any
moment leaves either the old or the new file, never half of one. Each has a SHA-256 sidecar;
a file that does not match it is skipped with a warning and the previous checkpoint is used.
Loading uses ``torch.load(weights_only=True)``, which never executes code from the file, after
:func:`flowvae.safe_io.check_torch_archive` has refused an archive whose entries are compressed or
state more bytes than the file holds (which torch would inflate whole into memory).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, TypeGuard

import torch

from .. import safe_io
from ..errors import CheckpointError

__all__ = ["FORMAT_VERSION", "save_checkpoint", "list_checkpoints", "load_latest_checkpoint",
           "checkpoint_model_state", "checkpoint_reported_state", "validate_training_state", "state_dict_mismatch"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt-(\d+)\.pt$")
# Checkpoints are read only as regular files (never symlinks, FIFOs or devices), up to this size.
MAX_CHECKPOINT_BYTES = 16 * 1024**3
_MAX_SIDECAR_BYTES = 4096


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Save ``state`` as ``folder/ckpt-{step:08d}.pt`` with a SHA-256 sidecar; keep the newest ``keep``."""
    import io

    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    data = buf.getvalue()
    path = Path(folder) / f"ckpt-{step:08d}.pt"
    # The run folder is the root: a checkpoints/ folder that is a link out of it is refused.
    safe_io.atomic_write(path, data, root=Path(folder).parent)
    safe_io.atomic_write(path.with_suffix(".pt.sha256"), hashlib.sha256(data).hexdigest().encode(), root=Path(folder).parent)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix(".pt.sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def _load_verified(path: Path) -> dict[str, Any]:
    try:
        data = safe_io.read_bytes(path, MAX_CHECKPOINT_BYTES, root=path.parent)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read: {e.strerror or e}") from None
    sidecar = path.with_suffix(".pt.sha256")
    try:
        expected = safe_io.read_bytes(sidecar, _MAX_SIDECAR_BYTES, root=path.parent).decode("ascii", "replace")
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no checksum file (its writing was interrupted)") from None
    except OSError as e:
        raise CheckpointError(f"{sidecar} cannot be read: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != expected.strip():
        raise CheckpointError(f"{path} does not match its checksum (truncated or corrupted)")
    # A matching checksum says the file is the one written next to it, not that flowvae wrote it:
    # the archive is checked before torch inflates it, and a refusal never advises an unsafe load.
    state = safe_io.load_weights_only(data, path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a flowvae checkpoint (a {type(state).__name__}, not a dict)")
    version = state.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} has no valid checkpoint format version ({version!r}); it was not written "
                              f"by flowvae")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version!r}, newer than this flowvae "
                              f"understands ({FORMAT_VERSION}); upgrade flowvae")
    return state


def load_latest_checkpoint(folder: Path, skipped: list[tuple[Path, str]] | None = None
                           ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that passes its checksum, or ``None`` if there is none.

    Corrupted or truncated files are skipped with a warning naming them (and, given ``skipped``,
    appended to it as ``(path, reason)``).
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, _load_verified(path)
        except CheckpointError as e:
            if "newer than" in str(e):
                raise
            log.warning("skipping checkpoint: %s; trying the previous one", e)
            if skipped is not None:
                skipped.append((path, str(e)))
    return None


def checkpoint_model_state(path: Path, state: Any) -> dict[str, torch.Tensor]:
    """The model weights ``state["model"]`` of a loaded checkpoint, checked to be a mapping of
    parameter names to tensors.

    Raises:
        CheckpointError: ``state`` is not a dict, or its ``model`` entry is missing or not a mapping
            of names to tensors (a file with a valid checksum but other contents).
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a flowvae checkpoint (a {type(state).__name__}, not a dict)")
    weights = state.get("model")
    if weights is None:
        raise CheckpointError(f"{path} has no model weights (no 'model' entry); it is not a complete flowvae checkpoint")
    if not _is_weights(weights):
        raise CheckpointError(f"{path}: its 'model' entry is not a mapping of parameter names to tensors")
    return weights


def checkpoint_reported_state(path: Path, state: Any) -> dict[str, torch.Tensor]:
    """The weights a loaded checkpoint's run reports: its averaged weights (``state["ema"]``, of
    ``train.ema_decay``) when it has them, else its model weights (:func:`checkpoint_model_state`);
    ``model.safetensors`` holds the same ones.

    Raises:
        CheckpointError: as :func:`checkpoint_model_state`, or an ``ema`` entry that does not hold a
            mapping of parameter names to tensors.
    """
    weights = checkpoint_model_state(path, state)
    ema = state.get("ema")
    if ema is None:
        return weights
    averaged = ema.get("weights") if isinstance(ema, dict) else None
    if not _is_weights(averaged):
        raise CheckpointError(f"{path}: its 'ema' entry does not hold averaged weights (a mapping of parameter "
                              f"names to tensors under 'weights')")
    return averaged


def _is_weights(v: Any) -> TypeGuard[dict[str, torch.Tensor]]:
    """Whether ``v`` is a mapping of parameter names to tensors (a state dict)."""
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} cannot be resumed: {what}; it is not a complete flowvae training checkpoint "
                           f"(delete it to resume from an earlier one, or train a new run)")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_training_state(path: Path, state: Any, *, optimizer: torch.optim.Optimizer | None = None,
                            batches: Any = None, generators: dict[str, torch.Generator | None] | None = None) -> None:
    """Check everything ``train --resume`` reads from a loaded checkpoint before any of it is used,
    so that a file with a valid checksum but other contents is refused in one line instead of
    failing inside torch (or, for optimizer moments of the wrong shape, corrupting memory).

    Checked: ``model`` (:func:`checkpoint_model_state`); ``optimizer``, a dict with ``state`` (dict)
    and ``param_groups`` (list of dicts each listing its ``params``); ``scheduler``, a dict;
    ``batches``, a dict of non-negative integers; ``rng``, a dict with ``noise``, ``aug`` and
    ``torch``, each a 1-D uint8 tensor; ``step``, a non-negative integer; ``progress`` (optional),
    a dict. Given the live objects, also:

    * ``optimizer``: the same number of parameter groups and of parameters in each, and every
      per-parameter tensor of the saved state (Adam's moments) of its parameter's shape;
    * ``batches``: the keys of ``batches.state_dict()`` (the data order of this run's kind);
    * ``generators``: ``{"noise": g, "aug": g, "torch": None}``-style generators whose state size
      the saved ``rng`` entries must match (``None``: the global CPU generator).

    Raises:
        CheckpointError: the first missing or ill-typed entry, naming it.
    """
    checkpoint_model_state(path, state)
    opt = state.get("optimizer")
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) \
            or not isinstance(opt.get("param_groups"), list) \
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in opt["param_groups"]):
        raise _bad(path, "its 'optimizer' entry is missing or is not an optimizer state (state, param_groups)")
    if optimizer is not None:
        live = optimizer.param_groups
        saved = opt["param_groups"]
        if len(saved) != len(live) or any(len(s["params"]) != len(g["params"]) for s, g in zip(saved, live)):
            raise _bad(path, f"its optimizer state has {[len(s['params']) for s in saved]} parameters per group, "
                             f"this model {[len(g['params']) for g in live]}")
        for s, g in zip(saved, live):
            for pid, param in zip(s["params"], g["params"]):
                moments = opt["state"].get(pid, {})
                if not isinstance(moments, dict):
                    raise _bad(path, f"the optimizer state of parameter {pid!r} is not a dict")
                for name, t in moments.items():
                    if name != "step" and isinstance(t, torch.Tensor) and t.shape != param.shape:
                        raise _bad(path, f"the optimizer's {name!r} of parameter {pid!r} has shape {list(t.shape)}, "
                                         f"the parameter {list(param.shape)}")
    if not isinstance(state.get("scheduler"), dict):
        raise _bad(path, "its 'scheduler' entry is missing or not a dict")
    b = state.get("batches")
    if not isinstance(b, dict) or not all(_is_count(v) for v in b.values()):
        raise _bad(path, "its 'batches' entry is missing or not a dict of non-negative integers")
    if batches is not None:
        missing = sorted(set(batches.state_dict()) - set(b))
        if missing:
            raise _bad(path, f"its 'batches' entry lacks {', '.join(missing)} (written for another kind of data order)")
    rng = state.get("rng")
    if not isinstance(rng, dict):
        raise _bad(path, "its 'rng' entry is missing or not a dict")
    for name in ("noise", "aug", "torch"):
        t = rng.get(name)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
            raise _bad(path, f"its random-number state rng[{name!r}] is missing or not a uint8 vector")
    for name, gen in (generators or {}).items():
        want = (gen.get_state() if gen is not None else torch.get_rng_state()).numel()
        t = rng.get(name)
        if isinstance(t, torch.Tensor) and t.numel() != want:
            raise _bad(path, f"its random-number state rng[{name!r}] has {t.numel()} bytes, this generator's "
                             f"{want} (written on another device type?)")
    if not _is_count(state.get("step")):
        raise _bad(path, f"its 'step' entry is {state.get('step')!r}, not a non-negative integer")
    prog = state.get("progress", {})
    if not isinstance(prog, dict):
        raise _bad(path, "its 'progress' entry is not a dict")
    for name in ("bad_in_row", "skipped"):
        if name in prog and not _is_count(prog[name]):
            raise _bad(path, f"its progress[{name!r}] is {prog[name]!r}, not a non-negative integer")
    for name in ("run_bpd", "run_elbo_bpd", "elapsed_s"):
        v = prog.get(name)
        if (name == "elapsed_s" and name in prog and v is None) or (v is not None and not _is_number(v)):
            raise _bad(path, f"its progress[{name!r}] is {v!r}, not a number")


def state_dict_mismatch(e: RuntimeError) -> str:
    """The first specific reason in ``load_state_dict``'s error (``size mismatch for decoder.w: ...``,
    ``Missing key(s) in state_dict: ...``), on one line and at most 300 characters."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines or [str(e)])[0]
    return reason if len(reason) <= 300 else reason[:297] + "..."
