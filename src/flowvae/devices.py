"""Where a model runs: the device a ``--device`` / ``train.device`` name means, and the CPU allocator
setting every command applies. The core layer: nothing here imports the rest of flowvae but errors."""

from __future__ import annotations

import os
import sys

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "tune_cpu_allocator"]


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in the process instead of handing them back to the kernel.

    glibc serves allocations above its mmap threshold with fresh ``mmap`` pages and returns them on
    ``free``, so the activations of a training step (8-16 MB each for the cifar10 preset) are
    page-faulted and zeroed again by the kernel on later steps. Raising the mmap threshold to its
    maximum (32 MB) and the trim threshold to 1 GB keeps those buffers on the heap for reuse.
    Measured on the project's 2-core CPU (``benchmarks/bench.py``, mode ``bf16+cl`` against
    ``bf16+cl+stockmalloc``, cifar10 preset, batch 32): about 1,700 instead of 12,000-17,000 page
    faults per step, and a step 5-8% shorter. Memory is then not returned to the system until the
    process ends, which suits a training process.

    Returns True when the settings were applied (Linux with glibc), False elsewhere; never raises.
    Idempotent. Set ``FLOWVAE_TUNE_MALLOC=0`` to leave the allocator alone.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("FLOWVAE_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
        ok = (libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1
              and libc.mallopt(m_trim_threshold, 2**30) == 1
              and libc.mallopt(m_top_pad, 64 * 2**20) == 1)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or auto") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name} was requested but this machine has {torch.cuda.device_count()} CUDA "
                          f"GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device
