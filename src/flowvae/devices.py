"""Where a model runs: the device a ``--device`` / ``train.device`` name means, and the CPU allocator
setting every command applies. The core layer: nothing here imports the rest of flowvae but errors."""

from __future__ import annotations

import os
import sys

import torch

from .errors import ConfigError

__all__ = ["native_bf16", "resolve_device", "tune_cpu_allocator"]


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


def native_bf16(device: torch.device) -> str | None:
    """What gives ``device`` bfloat16 arithmetic in hardware, in a few words, or ``None`` without it.

    CUDA GPUs of compute capability 8.0 or more (Ampere and later); x86 CPUs with the AVX512-BF16
    or AMX-BF16 instructions, read from torch where it says (2.5 and later) and from
    ``/proc/cpuinfo`` otherwise; Arm CPUs with the BF16 extension (``/proc/cpuinfo``). On other
    CPUs oneDNN emulates bfloat16 and a convolution is not faster than in float32, so the answer is
    ``None`` there. Never raises.
    """
    if device.type == "cuda":
        try:
            major, _ = torch.cuda.get_device_capability(device)
        except (RuntimeError, AssertionError):
            return None
        return f"a CUDA GPU of compute capability {major}.x" if major >= 8 else None
    if device.type != "cpu":
        return None
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        if probe is not None and probe():
            return "a CPU with AVX512-BF16"
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        if amx is not None and amx():
            return "a CPU with AMX"
    except RuntimeError:
        pass
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = set(f.read(1 << 20).split())
    except OSError:
        return None
    if "avx512_bf16" in flags:
        return "a CPU with AVX512-BF16"
    if "amx_bf16" in flags:
        return "a CPU with AMX"
    if "bf16" in flags:  # the Features line of an Arm CPU with the BF16 extension (Graviton 3, Neoverse V1)
        return "an Arm CPU with BF16"
    return None
