"""What keeps a bad step from damaging a run: the weights and optimiser state before each update
(:class:`UpdateGuard`) and the BatchNorm statistics before each forward pass
(:class:`BatchNormStatistics`), put back when the step turns out non-finite."""

from __future__ import annotations

import torch

__all__ = ["BatchNormStatistics", "UpdateGuard"]


class UpdateGuard:
    """A copy of the weights and optimiser state taken before each update, put back when the
    update left a weight non-finite (finite gradients can still do that: an overflow in Adam's
    moments, a learning rate of 1e30). Costs one copy of the parameters and optimiser moments.

    Args:
        params: the parameters ``opt`` updates.
        opt: the optimiser (Adam's moments appear in its state at the first update).
    """

    def __init__(self, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer):
        self.params, self.opt = params, opt
        self.live: list[torch.Tensor] = []
        self.saved: list[torch.Tensor] = []
        self.had_state: set[int] = set()

    def _tensors(self) -> list[torch.Tensor]:
        state = [v for p in self.params for v in self.opt.state.get(p, {}).values() if torch.is_tensor(v)]
        return [*self.params, *state]

    @torch.no_grad()
    def save(self) -> None:
        """Copy the weights and optimiser state (call before ``opt.step()``)."""
        if not self.saved or len(self.opt.state) != len(self.had_state):  # Adam's state appears at the first update
            self.live = [t.detach() for t in self._tensors()]
            self.saved = [t.clone() for t in self.live]
            self.had_state = {id(p) for p in self.params if p in self.opt.state}
        else:
            torch._foreach_copy_(self.saved, self.live)

    @torch.no_grad()
    def weights_finite(self) -> bool:
        """Whether every weight is finite."""
        norms = torch._foreach_norm([p.detach() for p in self.params])
        return bool(torch.isfinite(torch.stack(norms)).all())

    @torch.no_grad()
    def restore(self) -> None:
        """Put back what :meth:`save` copied, as if the update never ran."""
        torch._foreach_copy_(self.live, self.saved)
        for p in self.params:  # the first update creates Adam's moments; un-create them
            if id(p) not in self.had_state and p in self.opt.state:
                del self.opt.state[p]


class BatchNormStatistics:
    """The running statistics (and batch counters) of a model's BatchNorm layers, copied before each
    training forward pass and put back when the step is skipped: a bad batch must not leave NaN
    there. Only these buffers move in a forward pass; the others (1x1 convolutions' permutations)
    are constant."""

    def __init__(self, model: torch.nn.Module):
        self.buffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                        for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
        self.saved: list[torch.Tensor] = []

    def save(self) -> None:
        """Copy the statistics."""
        self.saved = [b.clone() for b in self.buffers]

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the statistics :meth:`save` copied."""
        for b, saved in zip(self.buffers, self.saved):
            b.copy_(saved)
