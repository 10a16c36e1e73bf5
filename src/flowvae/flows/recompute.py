"""Memory-saving backward pass for invertible networks (activations recomputed from outputs).

A normal backward pass stores every intermediate activation of every flow step, so memory grows
with depth. Because each step is invertible, its input can be reconstructed from its output
during the backward pass (Gomez et al. 2017, "The reversible residual network"): only the final
output is kept, and the backward pass walks the steps from last to first, inverting each one and
re-running its forward pass with autograd on to get local gradients. Peak memory is then the
activations of one step plus the outputs, whatever the depth.

The reconstructed inputs differ from the true ones by float rounding (relative ~1e-6 in float32),
so gradients agree with the ordinary backward pass to that accuracy, not bitwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Op", "run_ops", "invert_ops", "recomputed_ops"]

# An op of a multi-scale flow: ("flow", layer), ("squeeze", squeeze layer) or ("split", n_channels).
# The payload's type follows from the tag, which mypy cannot narrow through tuple unpacking: Any.
Op = tuple[str, Any]


def run_ops(ops: Sequence[Op], x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Data-to-latent pass over ``ops``: ``(x_final, logdet [B], factored-out pieces)``."""
    logdet = x.new_zeros(x.shape[0])
    outs: list[Tensor] = []
    for kind, arg in ops:
        if kind == "flow":
            x, ld = arg(x, cond)
            logdet = logdet + ld
        elif kind == "squeeze":
            x, _ = arg(x)
        else:
            outs.append(x[:, -arg:])
            x = x[:, :-arg]
    return x, logdet, outs


def invert_ops(ops: Sequence[Op], x: Tensor, pieces: list[Tensor], cond: Tensor | None) -> tuple[Tensor, Tensor]:
    """Latent-to-data pass: the inverse of :func:`run_ops` (``pieces`` is consumed from the end)."""
    logdet = x.new_zeros(x.shape[0])
    for kind, arg in reversed(ops):
        if kind == "flow":
            x, ld = arg.inverse(x, cond)
            logdet = logdet + ld
        elif kind == "squeeze":
            x, _ = arg.inverse(x)
        else:
            x = torch.cat([x, pieces.pop()], 1)
    return x, logdet


class _Recompute(torch.autograd.Function):
    """``run_ops`` whose backward reconstructs activations by inversion instead of storing them."""

    @staticmethod
    def forward(ctx, ops, flatten: Callable, x: Tensor, cond: Tensor | None, *params: Tensor):
        with torch.no_grad():
            last, logdet, outs = run_ops(ops, x, cond)
        ctx.ops, ctx.params = ops, params
        ctx.shapes = [o.shape for o in outs] + [last.shape]
        v = flatten(outs + [last])
        ctx.save_for_backward(v.detach(), cond)
        return v, logdet

    @staticmethod
    def backward(ctx, grad_v: Tensor, grad_logdet: Tensor):
        v, cond = ctx.saved_tensors
        sizes = [s[1:].numel() for s in ctx.shapes]
        pieces = [p.reshape(s) for p, s in zip(v.split(sizes, 1), ctx.shapes)]
        grads = [g.reshape(s) for g, s in zip(grad_v.split(sizes, 1), ctx.shapes)]
        y, gy = pieces.pop(), grads.pop()
        index = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads: list[Tensor | None] = [None] * len(ctx.params)
        grad_cond = None
        need_cond = cond is not None and ctx.needs_input_grad[3]
        for kind, arg in reversed(ctx.ops):
            if kind == "squeeze":  # a fixed permutation: gradients move with the values
                y, _ = arg.inverse(y)
                gy, _ = arg.inverse(gy)
            elif kind == "split":
                y = torch.cat([y, pieces.pop()], 1)
                gy = torch.cat([gy, grads.pop()], 1)
            else:
                with torch.no_grad():
                    x, _ = arg.inverse(y, cond)
                own = [p for p in arg.parameters() if p.requires_grad]
                with torch.enable_grad():
                    xi = x.detach().requires_grad_(True)
                    ci = cond.detach().requires_grad_(True) if need_cond else cond
                    out, ld = arg(xi, ci)
                    inputs = [xi, *([ci] if need_cond else []), *own]
                    g = torch.autograd.grad((out, ld), inputs, (gy, grad_logdet), allow_unused=True)
                gy = g[0]
                if need_cond:
                    grad_cond = g[1] if grad_cond is None else grad_cond + (g[1] if g[1] is not None else 0)
                for p, gp in zip(own, g[1 + need_cond:]):
                    if gp is not None:
                        i = index[id(p)]
                        prev = param_grads[i]
                        param_grads[i] = gp if prev is None else prev + gp
                y = x
        return (None, None, gy, grad_cond, *param_grads)


def recomputed_ops(module: nn.Module, ops: Sequence[Op], flatten: Callable, x: Tensor,
                   cond: Tensor | None) -> tuple[Tensor, Tensor]:
    """``flatten(run_ops(...))`` and its logdet, with the memory-saving backward pass.

    Args:
        module: owner of every parameter used by ``ops`` (their gradients are returned).
        ops: the multi-scale program (see :data:`Op`); every flow in it must be exactly invertible
            and free of side effects (no BatchNorm statistics, no data-dependent initialisation).
        flatten: joins the factored-out pieces and the final tensor into ``v [B, D]``.
        x: input ``[B, C, H, W]``; cond: ``[B, d_z]`` or ``None``.
    """
    params = tuple(p for p in module.parameters() if p.requires_grad)
    return _Recompute.apply(ops, flatten, x, cond, *params)
