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
Loading uses ``torch.load(weights_only=True)``, which never executes code from the file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import torch

from .. import safe_io
from ..errors import CheckpointError

__all__ = ["FORMAT_VERSION", "atomic_write_bytes", "save_checkpoint", "list_checkpoints", "load_latest_checkpoint"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt-(\d+)\.pt$")
# Checkpoints are read only as regular files (never symlinks, FIFOs or devices), up to this size.
MAX_CHECKPOINT_BYTES = 16 * 1024**3
_MAX_SIDECAR_BYTES = 4096


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (never in place).

    The temporary file has a random name and is created with ``O_EXCL``; a target that is a
    symbolic link or not a regular file is refused (:func:`flowvae.safe_io.atomic_write`).
    """
    safe_io.atomic_write(path, data)


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Save ``state`` as ``folder/ckpt-{step:08d}.pt`` with a SHA-256 sidecar; keep the newest ``keep``."""
    import io

    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    data = buf.getvalue()
    path = Path(folder) / f"ckpt-{step:08d}.pt"
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".pt.sha256"), hashlib.sha256(data).hexdigest().encode())
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
        raise CheckpointError(f"{path} has no checksum file") from None
    except OSError as e:
        raise CheckpointError(f"{sidecar} cannot be read: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != expected.strip():
        raise CheckpointError(f"{path} does not match its checksum (truncated or corrupted)")
    import io

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(f"{path} cannot be read: {e}") from None
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version!r}, newer than this flowvae "
                              f"understands ({FORMAT_VERSION}); upgrade flowvae")
    return state


def load_latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that passes its checksum, or ``None`` if there is none.

    Corrupted or truncated files are skipped with a warning naming them.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, _load_verified(path)
        except CheckpointError as e:
            if "newer than" in str(e):
                raise
            log.warning("skipping checkpoint: %s; trying the previous one", e)
    return None
