"""Polyak averaging (``train.ema_decay``): an exponential moving average of the weights, which a run
evaluates, samples from and saves in place of the last update's weights.

Averaging the iterates of a stochastic optimiser (Polyak and Juditsky, "Acceleration of Stochastic
Approximation by Averaging", SIAM J. Control Optim. 1992) removes much of the noise of the last
updates; Glow's reference code evaluates averaged weights too (its ``polyak_epochs``). The paper
(Appendix C.2) names no averaging, so the paper's presets leave it off; the CPU presets, whose runs
are short and whose batches are small, turn it on (docs/speed.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["WeightAverage"]

# The warm-up of the decay, (1 + t) / (WARMUP + t): the first, untrained weights must not linger in
# the average of a short run (the schedule of TensorFlow's ExponentialMovingAverage with num_updates).
WARMUP = 10


class WeightAverage:
    """An exponential moving average of a model's floating-point state (parameters and float buffers
    such as BatchNorm statistics; counters and other integer buffers are copied), updated after
    each good optimiser update:

        avg <- d_t * avg + (1 - d_t) * w,    d_t = min(decay, (1 + t) / (10 + t)),

    with ``t`` the updates averaged before this one. Costs one copy of the model's state and one
    fused interpolation per update.

    Args:
        model: the model whose state is averaged; the average starts as a copy of its state now.
        decay: the decay of the average, in (0, 1): about ``1 / (1 - decay)`` of the last updates
            carry its weight (0.99: the last hundred).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the decay of a weight average must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.floats = [k for k, v in self.avg.items() if v.is_floating_point()]
        self.others = [k for k, v in self.avg.items() if not v.is_floating_point()]

    @torch.no_grad()
    def reset(self, model: torch.nn.Module) -> None:
        """Start the average again from ``model``'s state now (after the data-dependent initialisation)."""
        for k, v in model.state_dict().items():
            self.avg[k].copy_(v)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Average in ``model``'s state after an optimiser update."""
        live = model.state_dict()
        d = min(self.decay, (1 + self.updates) / (WARMUP + self.updates))
        if self.floats:
            torch._foreach_lerp_([self.avg[k] for k in self.floats], [live[k] for k in self.floats], 1.0 - d)
        for k in self.others:
            self.avg[k].copy_(live[k])
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the averaged state into ``model`` (its tensors keep their identity: optimisers and
        compiled graphs that hold them stay valid)."""
        for k, v in model.state_dict().items():
            v.copy_(self.avg[k])

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """``model`` holds the averaged state inside the block and its own state again after it,
        also when the block raises."""
        with torch.no_grad():
            kept = {k: v.clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(kept[k])

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint carries: ``{"updates": int, "weights": {name: tensor}}``."""
        return {"updates": self.updates, "weights": self.avg}

    def load_state_dict(self, state: Any, path: Any) -> None:
        """Continue the average of a checkpoint (``path``: named in errors), checked before use.

        Raises:
            CheckpointError: ``state`` is not :meth:`state_dict`'s form, or its weights do not match
                the model's names, shapes and dtypes.
        """
        ok = (isinstance(state, dict) and isinstance(state.get("updates"), int) and not isinstance(state["updates"], bool)
              and state["updates"] >= 0 and isinstance(state.get("weights"), dict))
        weights = state.get("weights") if ok else None
        if not ok or weights is None or set(weights) != set(self.avg) or not all(
                isinstance(weights[k], torch.Tensor) and weights[k].shape == v.shape and weights[k].dtype == v.dtype
                for k, v in self.avg.items()):
            raise CheckpointError(f"{path} cannot be resumed: its 'ema' entry (the averaged weights of train.ema_decay) "
                                  f"does not fit this model; delete the checkpoint to resume from an earlier one")
        with torch.no_grad():
            for k, v in self.avg.items():
                v.copy_(weights[k])
        self.updates = int(state["updates"])
