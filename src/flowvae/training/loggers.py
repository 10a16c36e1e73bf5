"""Ready experiment loggers: :class:`TensorBoardLogger` and :class:`WandbLogger` (Weights & Biases).

Both are :class:`~flowvae.training.Callback` objects: pass them to
``train(cfg, run, callbacks=[...])``, or name them in ``train.loggers`` (``--set
train.loggers=[wandb]``), which adds them with their defaults. Each imports its package when it
is created, so a missing package stops the run before anything is done, with one line saying what
to install. What both write:

* every ``every`` steps (default 100, as the progress lines), the ``on_step`` metrics:
  ``train/bpd``, ``train/bpd_running`` (bits/dim), ``train/kl_nats`` (nats per image),
  ``train/lr``, ``train/grad_norm``;
* at each evaluation, ``test/elbo_bpd``, ``test/iw_bpd`` (bits/dim) and ``test/kl`` (nats per
  image) of the ``metrics.jsonl`` record (and ``train/kl_weight`` under a KL warm-up; ``train/bpd``
  is then the training objective, not the ELBO), and with ``images=True`` (default) the 64 samples at each
  temperature of ``train.sample_temperatures`` as one grid image, ``samples/t0.70`` ..., tiled as
  in ``samples/*.png`` (8 per row).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..imaging import make_grid
from .callbacks import Callback, TrainState

__all__ = ["TensorBoardLogger", "WandbLogger", "LOGGERS", "loggers_for"]

# The on_eval record's keys that loggers plot, and their names there (those of earlier releases).
_EVAL_TAGS = {"test_elbo_bpd": "test/elbo_bpd", "test_iw_bpd": "test/iw_bpd", "test_kl": "test/kl",
              "kl_weight": "train/kl_weight"}  # kl_weight: only under train.kl_warmup_steps


def _scalars(metrics: dict[str, Any], names: dict[str, str] | None = None) -> dict[str, float]:
    """The finite numbers of ``metrics`` (renamed by ``names``, keeping only those, when given)."""
    items = metrics.items() if names is None else ((names[k], metrics[k]) for k in names if k in metrics)
    return {k: float(v) for k, v in items
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _grids(samples: dict[float, torch.Tensor] | None) -> dict[str, Any]:
    """``{"samples/tT.TT": uint8 array [H, W, C]}``, 8 images per row as ``samples/*.png``."""
    return {f"samples/t{t:.2f}": make_grid(x, nrow=8) for t, x in (samples or {}).items()}


class TensorBoardLogger(Callback):
    """Scalars and sample grids to a TensorBoard log (``RUN/tensorboard`` by default).

    Args:
        log_dir: the event files' folder (default: ``tensorboard`` in the run folder).
        every: write the step metrics every this many steps.
        images: add the sample grids of each evaluation as images.

    On resume the events after the checkpoint's step, which the resumed run writes again, are
    hidden (``SummaryWriter(purge_step=...)``). The log is flushed at every checkpoint.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | Path | None = None, every: int = 100, images: bool = True):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("the tensorboard logger needs the tensorboard package: pip install tensorboard") from None
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"TensorBoardLogger: every must be a positive integer, got {every!r}")
        self._summary_writer = SummaryWriter
        self.log_dir, self.every, self.wants_samples = log_dir, every, images
        self.writer: Any = None

    def on_train_start(self, state: TrainState) -> None:
        folder = self.log_dir if self.log_dir is not None else state.run / "tensorboard"
        self.writer = self._summary_writer(log_dir=str(folder), purge_step=state.step + 1 if state.resumed else None)

    def on_step(self, state: TrainState, metrics: dict[str, float]) -> None:
        if state.step % self.every == 0:
            for tag, v in _scalars(metrics).items():
                self.writer.add_scalar(tag, v, state.step)

    def on_eval(self, state: TrainState, metrics: dict[str, Any], samples: dict[float, torch.Tensor] | None) -> None:
        for tag, v in _scalars(metrics, _EVAL_TAGS).items():
            self.writer.add_scalar(tag, v, state.step)
        if self.wants_samples:
            for tag, grid in _grids(samples).items():
                self.writer.add_image(tag, grid, state.step, dataformats="HWC")

    def on_checkpoint(self, state: TrainState, path: Path) -> None:
        self.writer.flush()  # what a resume keeps is on disk with the checkpoint

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbLogger(Callback):
    """Scalars and sample grids to a Weights & Biases run (``wandb.init(dir=RUN, ...)``).

    Args:
        project: the W&B project (default: ``WANDB_PROJECT``, else W&B's own default).
        name: the W&B run's display name (default: the run folder's name).
        every: log the step metrics every this many steps.
        images: log the sample grids of each evaluation as ``wandb.Image``.
        init_kwargs: more arguments of ``wandb.init`` (``entity``, ``tags``, ``mode="offline"``, ...).

    The flowvae config is the W&B run's config. The W&B run id is kept in
    ``RUN/wandb/flowvae-run-id``, so a resumed run continues the same W&B run
    (``resume="allow"``); W&B ignores the steps it already has. The run is finished at the end
    (``exit_code=1`` when training failed or was stopped).

    Raises:
        ConfigError: the ``wandb`` package is not installed.
    """

    ID_FILE = Path("wandb") / "flowvae-run-id"

    def __init__(self, project: str | None = None, name: str | None = None, every: int = 100,
                 images: bool = True, **init_kwargs: Any):
        try:  # by name: wandb is optional, and type checking then needs neither it nor its stubs
            wandb = importlib.import_module("wandb")
        except ImportError:
            raise ConfigError("the wandb logger needs the wandb package: pip install wandb") from None
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"WandbLogger: every must be a positive integer, got {every!r}")
        self._wandb = wandb
        self.project, self.name, self.every, self.wants_samples = project, name, every, images
        self.init_kwargs = init_kwargs
        self.run: Any = None

    def on_train_start(self, state: TrainState) -> None:
        from .. import safe_io

        id_file = state.run / self.ID_FILE
        resume_id = None
        if state.resumed and id_file.is_file():
            resume_id = safe_io.read_text(id_file, 256, root=state.run).strip() or None
        kwargs: dict[str, Any] = {"dir": str(state.run), "project": self.project, "name": self.name or state.run.name,
                                  **({"id": resume_id, "resume": "allow"} if resume_id else {}), **self.init_kwargs}
        self.run = self._wandb.init(**kwargs)
        # allow_val_change: a resume may change the resumable settings (train.steps, ...).
        self.run.config.update(state.config.to_dict(), allow_val_change=True)
        if resume_id is None:
            safe_io.atomic_write(id_file, str(self.run.id).encode(), root=state.run)

    def on_step(self, state: TrainState, metrics: dict[str, float]) -> None:
        if state.step % self.every == 0:
            self.run.log(_scalars(metrics), step=state.step)

    def on_eval(self, state: TrainState, metrics: dict[str, Any], samples: dict[float, torch.Tensor] | None) -> None:
        record: dict[str, Any] = _scalars(metrics, _EVAL_TAGS)
        if self.wants_samples:
            # PIL, under wandb.Image, reads grey images as [H, W], not [H, W, 1].
            record.update({tag: self._wandb.Image(grid[:, :, 0] if grid.shape[2] == 1 else grid)
                           for tag, grid in _grids(samples).items()})
        self.run.log(record, step=state.step)

    def on_train_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self.run.summary.update(_scalars(metrics, _EVAL_TAGS))
        self.run.finish()
        self.run = None

    def close(self) -> None:
        if self.run is not None:  # on_train_end did not run: training failed or was stopped
            self.run.finish(exit_code=1)
            self.run = None


# The names train.loggers accepts (its type lists the same names).
LOGGERS: dict[str, type[Callback]] = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


def loggers_for(names: Sequence[str] | None, callbacks: Sequence[Callback]) -> list[Callback]:
    """The loggers ``train.loggers`` asks for, with their defaults: ``names`` from :data:`LOGGERS`;
    ``None`` (the default) means TensorBoard when its package is installed and ``callbacks`` hold
    no :class:`TensorBoardLogger` already.

    Raises:
        ConfigError: a named logger's package is not installed.
    """
    if names is not None:
        return [LOGGERS[n]() for n in names]
    if any(isinstance(cb, TensorBoardLogger) for cb in callbacks):
        return []
    try:
        return [TensorBoardLogger()]
    except ConfigError:  # optional when not asked for by name
        return []
