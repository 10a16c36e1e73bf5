"""Data-parallel training with ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node N -m flowvae.cli.main train ...`` (or the ``flowvae`` script) sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on
GPUs, gloo on CPUs). How training splits the work:

* every rank builds the same global batch (same data order, same augmentation generator) and
  keeps its contiguous slice, so ``train.batch_size`` is the **global** batch size;
* dequantisation noise and posterior samples are drawn for the global batch and sliced likewise
  (``FlowVAE.loss(..., shard=(rank, world))``), so N processes see exactly the noise of one;
* ActNorm's data-dependent initialisation runs before wrapping in DDP, whose constructor then
  broadcasts rank 0's parameters and buffers: every rank starts identical;
* only rank 0 writes to the run folder and prints;
* decisions that end or skip a step (non-finite loss, the time limit) are agreed by all ranks.

BatchNorm in the encoder normalises per rank on CPUs; on GPUs it is converted to SyncBatchNorm
so statistics cover the global batch as in a single process.
"""

from __future__ import annotations

import gc
import os
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["DistContext", "abandon", "cleanup", "setup"]


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes; ``world == 1`` when not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world) if self.enabled else None

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """``flag`` AND-ed over every rank (each rank must call this at the same point)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0.5)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over every rank, in float64."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()


def setup(device_name: str) -> tuple[DistContext, str]:
    """Join the process group when launched by ``torchrun``; returns the context and the device name.

    Raises:
        ConfigError: ``--device cuda`` with fewer GPUs than local processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); "
                              f"lower --nproc_per_node")
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    else:
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(rank, world, local), device_name


def abandon(ctx: DistContext, error: BaseException) -> None:
    """Leave the process group after ``error`` stopped training on this rank, without a barrier
    (another rank may never reach one).

    The DistributedDataParallel wrapper, referenced from the frames of ``error``'s traceback, holds
    the process group. Freed only after the group is destroyed, its C++ destructor would join gloo's
    worker threads while holding the GIL that a worker may be waiting for to free a tensor: a
    deadlock, seen with torch 2.4.1 (pytorch/pytorch#154976 releases the GIL there). So the frames'
    local variables are cleared and collected first; the traceback keeps every file and line.
    """
    if not (ctx.enabled and dist.is_initialized()):
        return
    traceback.clear_frames(error.__traceback__)
    gc.collect()
    dist.destroy_process_group()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier so no rank exits while others still write)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
