"""The schedules of training, functions of the step alone (so a resumed run continues them bitwise).

* :func:`lr_lambda`: the learning rate's multiplier, linear warm-up then per-step exponential
  decay (Appendix C.2), for ``torch.optim.lr_scheduler.LambdaLR``.
* :func:`kl_warmup_weight`: the KL term's weight under KL warm-up (``train.kl_warmup_steps``), a
  departure from the paper that is off by default.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["kl_warmup_weight", "lr_lambda"]


def lr_lambda(warmup: int, decay: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then ``decay ** (step - warmup)``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay ** (step - warmup)
    return f


def kl_warmup_weight(step: int, warmup: int, start: float = 0.0) -> float:
    """Weight of the KL term in the update that follows ``step`` finished updates (KL warm-up,
    ``train.kl_warmup_steps`` and ``train.kl_warmup_start``): ``start + (1 - start) * step / warmup``
    while ``step < warmup``, then exactly 1; always 1 for ``warmup = 0``. A function of the step
    alone, so a resumed run continues the schedule bitwise. Linear warm-up from 0 as in Sønderby et
    al., "Ladder Variational Autoencoders" (NeurIPS 2016), after the KL annealing of Bowman et al.,
    "Generating Sentences from a Continuous Space" (CoNLL 2016)."""
    if step >= warmup:
        return 1.0
    return start + (1.0 - start) * (step / warmup)
