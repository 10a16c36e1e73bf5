"""Memory layout for inference: channels-last (NHWC) on the CPU.

oneDNN's CPU convolutions run on NHWC natively; handed NCHW tensors they reorder every input and
output. On a ``mnist`` preset run (2-core CPU, 2 threads, K = 5, 1,000 test images) the bound took
41.8 s in channels-last against 66.9 s in the default layout, with the same bits/dim
(``benchmarks/eval_speed.py``). Converting the inputs alone does not help: the weights must be NHWC
too. So evaluation converts the model for its duration and restores it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["inference_layout", "to_layout"]


def _conv_weights(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.dim() == 4]


@contextlib.contextmanager
def inference_layout(model: nn.Module, enabled: bool | None = None) -> Iterator[torch.memory_format]:
    """Run the block with ``model``'s 4-D weights in channels-last; yield the format for the inputs.

    Args:
        model: any module; one without 4-D weights is left alone.
        enabled: ``None`` (default): on when the model is on the CPU; ``True`` / ``False`` force it.

    Yields:
        ``torch.channels_last`` when converted (pass images through :func:`to_layout`), else
        ``torch.contiguous_format``.

    A model already in channels-last (``train.channels_last``) stays so; any other is restored to
    the default layout on exit, also after an exception. Values are unchanged: only strides move.
    """
    weights = _conv_weights(model)
    on_cpu = bool(weights) and weights[0].device.type == "cpu"
    use = (on_cpu if enabled is None else enabled) and bool(weights)
    already = all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    if not use:
        yield torch.contiguous_format
        return
    if not already:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    try:
        yield torch.channels_last
    finally:
        if not already:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def to_layout(x: Tensor, fmt: torch.memory_format) -> Tensor:
    """``x`` in ``fmt`` when it is a batch of images ``[B, C, H, W]``, else ``x`` itself."""
    return x.contiguous(memory_format=fmt) if x.dim() == 4 and fmt is not torch.contiguous_format else x
