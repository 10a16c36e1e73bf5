"""Callbacks: code of your own that :func:`flowvae.training.train` calls as training goes.

Subclass :class:`Callback`, override the hooks you need and pass instances as
``train(cfg, run, callbacks=[...])``. The ready loggers (:class:`~flowvae.training.TensorBoardLogger`,
:class:`~flowvae.training.WandbLogger`) are callbacks too, and ``train.loggers`` names those the
trainer adds by itself.

Order of the calls in one run::

    on_train_start                              once, before the step-0 evaluation of a fresh run
    on_eval (step 0, fresh runs only)
    on_step, on_step, ...                       after every optimiser update
    on_eval                                     every train.eval_every steps and at the last step
    on_checkpoint                               after each checkpoint file is complete
    on_train_end                                once, after model.safetensors, the samples and the report
    close                                       last, also after an error or a signal

Within one step the order is ``on_step``, then ``on_eval`` (an evaluation step), then
``on_checkpoint`` (a checkpoint step). A resumed run calls ``on_step`` and ``on_eval`` only for
the steps it trains (from the checkpoint's step + 1 on). A step skipped for a non-finite loss or
gradient gets no ``on_step``. ``close`` runs once training has been set up (model built, data
read), whatever happens next.

**Metric keys and their units.** ``on_step``'s ``metrics``:

* ``train/bpd``: this step's negative ELBO of eq. (2), bits/dim (batch mean; averaged over the
  ranks under DDP);
* ``train/bpd_running``: its exponential moving average (weight 0.02), bits/dim: the figure of
  the progress bar and the log;
* ``train/kl_nats``: the KL term of this step, nats per image (rank 0's rows under DDP);
* ``train/lr``: the learning rate after this step's schedule update (that of the next step), as
  ``metrics.jsonl``'s ``lr``;
* ``train/grad_norm``: the global L2 norm of the gradient before clipping.

``on_eval``'s and ``on_train_end``'s ``metrics`` are the record written to ``metrics.jsonl``:
``step``; ``train_bpd`` (the running mean, bits/dim; ``None`` at step 0); ``test_elbo_bpd``
(negative ELBO, bits/dim) and ``test_iw_bpd`` (negative importance-weighted bound with ``test_k``
samples, bits/dim) on ``test_n`` test images; ``test_kl`` (nats per image); ``lr``;
``skipped_steps`` (non-finite steps so far); ``grad_norm_max`` (the largest gradient norm since
the previous evaluation; ``None`` before the first step); ``time_s`` (wall seconds since the run
started, over all its sessions).

**Samples.** ``on_eval``'s ``samples`` is ``None`` unless a callback of the run sets
``wants_samples = True``: then each evaluation draws 64 samples at each temperature of
``train.sample_temperatures``, ``{temperature: uint8 tensor [64, C, H, W]}`` on the CPU, drawn as
``flowvae sample RUN`` draws them (a generator seeded by ``train.seed`` for each temperature), so the
last grids equal the final ``samples/*.png`` and ``flowvae sample``'s. Drawing them neither touches
the training's random streams nor the BatchNorm statistics: a run with loggers computes the same
weights as one without.

**Errors.** An exception raised by a hook stops training: the remaining hooks of that call and all
later hooks are skipped (``close`` still runs), the trainer writes the checkpoint of the last
finished step (the one a signal would write) and raises :class:`CallbackError`, one line naming
the callback, the hook and the step; ``--resume`` then continues the run bitwise. The original
exception is the error's ``__cause__`` and its traceback goes to ``train.log``. A failure in
``on_train_start`` stops before anything is trained (nothing to resume: run the same command
again); one in ``on_train_end`` comes after every file of the finished run is written.
``KeyboardInterrupt`` and ``SystemExit`` raised in a hook pass through as they are. When a
signal stops the run at the same time, :class:`~flowvae.errors.TrainingInterrupted` is raised and
the callback's error only logged.

**Distributed training.** Under ``torchrun`` callbacks run on rank 0 only: other ranks never call
any hook. ``state.rank`` and ``state.world_size`` say where the run stands; a failure on rank 0
stops every rank at the same step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlowVAEError

if TYPE_CHECKING:
    import torch

    from ..config import Config
    from ..models.base import GenerativeModel

__all__ = ["Callback", "CallbackError", "TrainState"]


class CallbackError(FlowVAEError):
    """A callback raised an exception; training stopped with a checkpoint (see the module docstring)."""


@dataclass(frozen=True)
class TrainState:
    """Where training stands when a hook is called (a new object per call; do not keep it).

    Attributes:
        step: optimiser steps done (the step a metric or checkpoint belongs to; at
            ``on_train_start`` the step training starts from: 0, or the checkpoint's on resume).
        epoch: passes over the training set started, counting from 0 (``None`` for class-grouped
            batches, ``model.group_by=label``, which have no epochs).
        run: the run folder.
        config: the run's configuration; read it, do not change it.
        model: the model being trained, for evaluation only: in eval mode during ``on_eval``,
            train mode otherwise. Run it under ``torch.no_grad()`` and leave its weights, buffers
            and mode as they are (a forward pass in train mode moves BatchNorm statistics and so
            changes the run). With ``train.ema_decay`` set it holds the averaged weights during
            ``on_eval`` and ``on_train_end`` (those the run reports), the last update's otherwise.
        rank: this process's rank (always 0: callbacks run on rank 0 only).
        world_size: the number of processes of the run (1 without ``torchrun``).
        resumed: the run continues from a checkpoint.
        averaged: with ``train.ema_decay`` set, the exponential moving average of the model's
            state (``{name: tensor}``, the keys of ``model.state_dict()``), which the run evaluates,
            samples from and saves; ``None`` without it. Read it, do not change it.
    """

    step: int
    epoch: int | None
    run: Path
    config: Config
    model: GenerativeModel
    rank: int = 0
    world_size: int = 1
    resumed: bool = False
    averaged: dict[str, torch.Tensor] | None = None


class Callback:
    """Base class of training callbacks: every hook does nothing; override those you need.

    Set the class (or instance) attribute ``wants_samples = True`` to receive sample grids in
    :meth:`on_eval`. Hook arguments are described in the module docstring
    (:mod:`flowvae.training.callbacks`), with the metric keys and their units.
    """

    wants_samples: bool = False

    def on_train_start(self, state: TrainState) -> None:
        """Once, before training (after ``config.yaml`` is written; ``state.step`` is the start step)."""

    def on_step(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After each optimiser update (``train/bpd`` in bits/dim, ``train/kl_nats`` in nats, ...)."""

    def on_eval(self, state: TrainState, metrics: dict[str, Any],
                samples: dict[float, torch.Tensor] | None) -> None:
        """After each periodic evaluation: ``metrics`` is the record appended to ``metrics.jsonl``
        (bits/dim and nats); ``samples`` the uint8 grids ``{temperature: [64, C, H, W]}`` when a
        callback wants them, else ``None``."""

    def on_checkpoint(self, state: TrainState, path: Path) -> None:
        """After the checkpoint ``path`` and its checksum file are written. Older checkpoints are
        deleted as ``train.keep_checkpoints`` says: copy the file, do not link it, to keep it."""

    def on_train_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        """Once, after a run finished (all steps or the time limit) and wrote its files;
        ``metrics`` is the last evaluation record (what :func:`~flowvae.training.train` returns)."""

    def close(self) -> None:
        """Always called last, whether training finished, failed or was stopped by a signal:
        release files and connections here. An exception here is logged as a warning."""


class Hooks:
    """The trainer's side: calls every callback's hook in order and remembers the first failure
    (the trainer then stops at a point where a checkpoint is safe and raises :meth:`error`)."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks
        self.wants_samples = any(cb.wants_samples for cb in callbacks)
        self.failure: tuple[str, str, int, BaseException] | None = None  # callback, hook, step, error

    def __call__(self, hook: str, state: TrainState, *args: Any) -> None:
        if self.failure is not None:  # nothing runs after a failure: the run is stopping
            return
        for cb in self.callbacks:
            try:
                getattr(cb, hook)(state, *args)
            except Exception as e:  # noqa: BLE001 - any bug in user code stops the run cleanly
                self.failure = (type(cb).__name__, hook, state.step, e)
                # The traceback goes to train.log only: on the terminal the error stays one line.
                logging.getLogger("flowvae.progress").error("%s.%s failed at step %d", type(cb).__name__, hook,
                                                            state.step, exc_info=e)
                return

    @property
    def ok(self) -> bool:
        return self.failure is None

    def error(self, run: Path, checkpoint_step: int | None) -> CallbackError:
        """The one-line error for the failure; ``checkpoint_step``: the step whose checkpoint was
        written on the way out (``None``: nothing trained, or the run had already finished)."""
        if self.failure is None:  # another rank of a distributed run: rank 0's callback failed
            return CallbackError(f"a callback on rank 0 failed; training stopped after step {checkpoint_step}")
        name, hook, step, e = self.failure
        what = f"callback {name}.{hook} failed at step {step}: {type(e).__name__}: {_first_line(e)}"
        if hook == "on_train_start":
            err = CallbackError(f"{what}; nothing was trained, fix it and run the same command again")
        elif checkpoint_step is None:
            err = CallbackError(f"{what}; the run had finished and its files in {run} are complete")
        else:
            err = CallbackError(f"{what}; training stopped with the checkpoint of step {checkpoint_step} in "
                                f"{run / 'checkpoints'}: fix it and continue with flowvae train --resume --run {run}")
        err.__cause__ = e  # raised later, away from the except block: chain it by hand
        return err

    def close(self) -> None:
        for cb in self.callbacks:
            try:
                cb.close()
            except Exception as e:  # noqa: BLE001 - closing must not hide the run's own outcome
                logging.getLogger("flowvae.train").warning("%s.close failed: %s: %s", type(cb).__name__,
                                                           type(e).__name__, _first_line(e))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"
