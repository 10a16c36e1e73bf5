"""The schedules of training, functions of the step alone (so a resumed run continues them bitwise).

* :func:`lr_lambda`: the learning rate's multiplier, linear warm-up then per-step exponential
  decay (Appendix C.2), for ``torch.optim.lr_scheduler.LambdaLR``.
* :class:`CosineAnneal`: linear warm-up then half a cosine down to 0 at a horizon step
  (``train.lr_schedule=cosine``); under a time limit the trainer moves the horizon to the step the
  limit is estimated to allow, so a schedule of steps ends with the wall time.
* :func:`kl_warmup_weight`: the KL term's weight under KL warm-up (``train.kl_warmup_steps``), a
  departure from the paper that is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["CosineAnneal", "kl_warmup_weight", "lr_lambda", "lr_multiplier"]


def lr_lambda(warmup: int, decay: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then ``decay ** (step - warmup)``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay ** (step - warmup)
    return f


def lr_multiplier(schedule: str, warmup: int, decay: float, steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier of ``train.lr_schedule`` for ``LambdaLR``: ``"exponential"``,
    :func:`lr_lambda` with ``decay``; ``"cosine"``, a :class:`CosineAnneal` ending at step ``steps``.

    Raises:
        ValueError: another schedule name.
    """
    if schedule == "exponential":
        return lr_lambda(warmup, decay)
    if schedule == "cosine":
        return CosineAnneal(warmup, steps)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}: exponential or cosine")


class CosineAnneal:
    """Learning-rate multiplier for ``torch.optim.lr_scheduler.LambdaLR``: linear warm-up over
    ``warmup`` steps, then half a cosine from 1 to 0 over the progress ``p`` in [0, 1] of the anneal,
    ``(1 + cos(pi * p)) / 2``, and 0 after its end (SGDR without restarts: Loshchilov and Hutter,
    "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017). A departure from the
    paper's exponential decay (Appendix C.2), for short runs: a run that stops when its learning
    rate has come down is better at that moment than one stopped at its peak rate.

    The progress rises linearly from ``start_progress`` at step ``start`` to 1 at step ``end``;
    :meth:`retarget` moves ``end`` and keeps the progress reached, so the rate changes continuously.
    Between two retargets the multiplier is a function of the step alone, and the four numbers go
    into the scheduler's ``state_dict`` (LambdaLR saves a callable object's attributes), so a
    resumed run continues the schedule bitwise.

    Args:
        warmup: steps of linear warm-up (the multiplier of step ``s < warmup`` is ``(s + 1) / warmup``).
        end: the step at which the rate reaches 0 (raised to ``warmup + 1`` at least).
    """

    FIELDS = ("warmup", "start", "start_progress", "end")

    def __init__(self, warmup: int, end: int):
        self.warmup, self.start, self.start_progress = warmup, warmup, 0.0
        self.end = max(end, warmup + 1)

    def progress(self, step: int) -> float:
        """The fraction of the anneal done after ``step`` steps, in [0, 1] (0 during the warm-up)."""
        if step <= self.start:
            return self.start_progress
        done = (step - self.start) / (self.end - self.start)
        return min(1.0, self.start_progress + (1.0 - self.start_progress) * done)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def retarget(self, step: int, end: int) -> None:
        """From ``step`` on, end the anneal at step ``end`` (at least ``step + 1``) instead."""
        if step < self.warmup:
            self.end = max(end, self.warmup + 1)
            return
        self.start_progress, self.start, self.end = self.progress(step), step, max(end, step + 1)

    @classmethod
    def invalid(cls, state: Any) -> str | None:
        """Why ``state`` (a scheduler state's ``lr_lambdas[0]``, read from a checkpoint) cannot be this
        schedule's, or ``None`` when it can: the four fields as non-negative integers (the
        progress a float in [0, 1]) with ``start < end``."""
        if not isinstance(state, dict) or set(state) != set(cls.FIELDS):
            return f"its learning-rate schedule is not a cosine anneal's ({', '.join(cls.FIELDS)})"
        counts = [state[k] for k in ("warmup", "start", "end")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return f"its cosine anneal's steps {counts} are not non-negative integers"
        p = state["start_progress"]
        if not isinstance(p, float) or not 0.0 <= p <= 1.0:
            return f"its cosine anneal's progress {p!r} is not a number in [0, 1]"
        if state["start"] >= state["end"]:
            return f"its cosine anneal starts at step {state['start']}, not before its end {state['end']}"
        return None


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
