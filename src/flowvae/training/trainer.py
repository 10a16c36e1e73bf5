"""The training loop (nanoGPT-style: everything a step does is in :func:`train`).

Objective: the negative ELBO of eq. (2) in bits/dim with one posterior sample and uniform
dequantisation, the KL to the flow prior estimated by Monte Carlo. Optimiser: AdamW with linear
warm-up then per-step exponential decay (Appendix C.2). Before the first step every ActNorm is
initialised from a batch of training images (data-dependent initialisation, stored in the
state dict so it is never redone after loading or resuming).

Remedies for posterior collapse, departures from the paper and off by default: KL warm-up
(``train.kl_warmup_steps``: the KL term's weight rises linearly to 1, :func:`kl_warmup_weight`,
passed to the model's ``loss`` as ``kl_weight``) and free bits (``model.free_bits``, applied in the
model's ``loss``). Evaluation always reports the true ELBO (``bits_per_dim``, weight 1).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save as save_safetensors

from .. import safe_io
from ..config import Config, save_config
from ..data import ImageData, load_split, subset_indices
from ..data.augment import augment_batch
from ..data.registry import open_split
from ..data.streaming import (
    GroupedOrder,
    ShuffledOrder,
    dataset_image_shape,
    dataset_labels,
    head_images,
    training_source,
)
from ..devices import resolve_device, tune_cpu_allocator
from ..errors import CheckpointError, ConfigError, FlowVAEError, TrainingInterrupted
from ..evaluation.bpd import evaluate_bpd
from ..evaluation.representations import (
    COLLAPSED_KL_NATS,
    accuracy_step_note,
    collapse_note,
    is_collapsed,
    probe_trend,
)
from ..evaluation.sampling import sample_grids_with_stats, write_sample_stats
from ..flows.base import data_init
from ..imaging import save_grid
from ..models.base import GenerativeModel, create_model
from ..presets import cpu_size_warning
from ..runs.checkpoints import (
    checkpoint_model_state,
    load_latest_checkpoint,
    save_checkpoint,
    state_dict_mismatch,
    validate_training_state,
)
from ..runs.data import DataRecord, SplitRecord, check_fits, write_data_record
from ..runs.folder import RunReader
from ..runs.lock import RunLock, remove_temporary_files
from ..safe_io import atomic_write as atomic_write_bytes
from .callbacks import Callback, Hooks, TrainState
from .distributed import DistContext, abandon, cleanup, setup
from .environment import environment_record
from .loggers import loggers_for

__all__ = ["train", "load_data", "lr_lambda", "kl_warmup_weight"]

log = logging.getLogger("flowvae.train")
# metrics.jsonl is re-read on resume only as a regular file, up to this size.
MAX_METRICS_BYTES = 1024**3
SAMPLES_PER_GRID = 64  # samples/*.png and the grids callbacks get: 8 rows of 8
MANY_EPOCHS = 200  # planned passes over the training images above which the plan line warns


def lr_lambda(warmup: int, decay: float):
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


def _batch_mean(ctx: DistContext, value: torch.Tensor, device: torch.device) -> float:
    """A per-process batch mean as a float, averaged over the processes under data parallelism."""
    return float(value) if not ctx.enabled else float(ctx.sum([float(value)], device)[0]) / ctx.world


def _departures(cfg: Config) -> list[str]:
    """The departures from the paper (objective or architecture) that this config turns on, one phrase each."""
    out = []
    tc = cfg.train
    if tc.kl_warmup_steps:
        start = f" from a weight of {tc.kl_warmup_start:g}" if tc.kl_warmup_start else ""
        out.append(f"KL warm-up over {tc.kl_warmup_steps} steps{start}")
    return [*out, *cfg.model.departures()]  # the model's own: the kind knows them


def _log_plan(cfg: Config, n_train: int, n_eval: int, eval_every_s: float | None) -> None:
    """Log what the run is set to do: steps, batch and the epochs they make (warning when there are
    more than :data:`MANY_EPOCHS`: a small image set is then seen so often that the model learns
    it by heart), and when it evaluates."""
    tc = cfg.train
    epochs = tc.steps * tc.batch_size / max(1, n_train)
    limit = f"; train.time_limit_s={tc.time_limit_s:g} s of wall time may stop it earlier" if tc.time_limit_s else ""
    timed = (f" and every {eval_every_s:.0f} s of wall time (train.eval_every_s"
             f"{'' if tc.eval_every_s is not None else ': train.time_limit_s / 10'}), with a checkpoint"
             if eval_every_s is not None else "")
    log.info("plan: %s steps of batch %d, %s epochs of the %s training images%s; evaluation on %s test images "
             "every %s steps%s", f"{tc.steps:,}", tc.batch_size, f"{epochs:,.3g}", f"{n_train:,}", limit,
             f"{n_eval:,}", f"{tc.eval_every:,}", timed)
    if epochs > MANY_EPOCHS:
        log.warning("%s steps of batch %d pass over the %s training images %s times: expect the model to overfit "
                    "them (test bits/dim rising while train bits/dim falls); lower --steps or train on more images",
                    f"{tc.steps:,}", tc.batch_size, f"{n_train:,}", f"{epochs:,.0f}")


def _probe_sets(train_data: Any, test_data: Any, eval_index: torch.Tensor | None, eval_images: torch.Tensor,
                n_train: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(train images, train labels, test images, test labels)`` of ``train.probe_images``: a seeded,
    class-stratified subset of ``n_train`` training images and the periodic evaluation's test images
    (``eval_images``, the items ``eval_index`` of ``test_data``, or all of them when it is None).

    ``None``, with a warning, for data without class labels or with one class only: the presets turn
    the probes on, and a folder of unlabelled images must still train under them.
    """
    train_labels, test_labels = dataset_labels(train_data), dataset_labels(test_data)
    for name, d, labels in (("training", train_data, train_labels), ("test", test_data, test_labels)):
        if labels is None or len(torch.unique(labels)) < 2:
            log.warning("train.probe_images: the %s data (%s) has %s, so no linear probes are logged; "
                        "set train.probe_images=0 to silence this", name, getattr(d, "name", type(d).__name__),
                        "no class labels" if labels is None else "one class only")
            return None
    assert train_labels is not None and test_labels is not None  # narrowing only: checked above
    index = subset_indices(len(train_data), min(n_train, len(train_data)), train_labels)
    test_y = test_labels if eval_index is None else test_labels[eval_index]
    return head_images(train_data, None, index), train_labels[index], eval_images, test_y


def load_data(cfg: Config, split: str) -> ImageData:
    """The train or test split named by ``cfg.data`` (:func:`flowvae.data.load_split`: the data
    source's own options, limits as seeded class-stratified subsets), checked against the model's
    input shape.

    Raises:
        DataError: missing or unreadable data, or images that do not fit ``cfg.model``.
    """
    data = load_split(cfg.data, split)
    _check_fits(data.name, dataset_image_shape(data), cfg)
    return data


def _check_fits(name: str, shape: tuple[int, int, int], cfg: Config) -> None:
    check_fits(name, shape, cfg.model.in_channels, cfg.model.image_size,
               f"use --set model.in_channels={shape[0]} model.image_size={shape[1]} or another preset")


def _write_metrics(run: Path, record: dict) -> None:
    safe_io.append_line(run / "metrics.jsonl", json.dumps(record), root=run)


def _truncate_metrics(run: Path, step: int) -> list[dict]:
    """Keep only the records of steps up to ``step`` (those an uninterrupted run has at that point),
    atomically: a run killed after its last checkpoint wrote records the resumed run writes again.
    ``step=-1`` empties the file (a fresh start). Returns the kept records."""
    path = run / "metrics.jsonl"
    if not os.path.lexists(path):
        return []
    keep, records = [], []
    for line in safe_io.read_text(path, MAX_METRICS_BYTES, root=run).splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(line)
            records.append(rec)
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode(), root=run)
    return records


class _Signals:
    """SIGINT, SIGTERM and SIGHUP (what schedulers send before a kill) ask the loop to stop after the
    current step and write a checkpoint; a second signal stops at once (KeyboardInterrupt for
    SIGINT, else ``SystemExit(128 + signal)``). Installed only in the main thread; the previous
    handlers come back on exit."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        self.__exit__()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class _UpdateGuard:
    """A copy of the weights and optimiser state taken before each update, put back when the
    update left a weight non-finite (finite gradients can still do that: an overflow in Adam's
    moments, a learning rate of 1e30). Costs one copy of the parameters and optimiser moments."""

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
        if not self.saved or len(self.opt.state) != len(self.had_state):  # Adam's state appears at the first update
            self.live = [t.detach() for t in self._tensors()]
            self.saved = [t.clone() for t in self.live]
            self.had_state = {id(p) for p in self.params if p in self.opt.state}
        else:
            torch._foreach_copy_(self.saved, self.live)

    @torch.no_grad()
    def weights_finite(self) -> bool:
        norms = torch._foreach_norm([p.detach() for p in self.params])
        return bool(torch.isfinite(torch.stack(norms)).all())

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_(self.live, self.saved)
        for p in self.params:  # the first update creates Adam's moments; un-create them
            if id(p) not in self.had_state and p in self.opt.state:
                del self.opt.state[p]


def _check_resumed_config(saved: Any, cfg: Config, path: Path, allow_changes: bool) -> list[str]:
    """Refuse to resume with settings that change what the run computes (see ``TrainConfig.resumable``),
    unless ``allow_changes``; returns the changes.

    Raises:
        CheckpointError: the checkpoint's config does not parse; ConfigError: a changed setting.
    """
    from ..config import DataConfig, TrainConfig, config_from_dict

    if saved is None:
        return []
    try:
        then = config_from_dict(saved).to_dict()
    except FlowVAEError as e:
        raise CheckpointError(f"{path} holds a config this flowvae cannot read ({e})") from None
    now = cfg.to_dict()
    changed = []
    for section in ("model", "data", "train"):
        a, b = then[section], now[section]
        for key in sorted(set(a) | set(b)):
            if (section == "train" and key in TrainConfig.resumable) or (section == "data" and key in DataConfig.resumable):
                continue
            if a.get(key) != b.get(key):
                changed.append(f"{section}.{key} {a.get(key)!r} -> {b.get(key)!r}")
    if changed and not allow_changes:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ConfigError(f"--resume with changed settings ({'; '.join(changed[:3])}{more}): {path.name} "
                          f"would not continue the same run. Undo the change, start a new --run folder, or "
                          f"pass --allow-changes to change it on purpose; a plain resume may change only "
                          f"train.{{{','.join(sorted(TrainConfig.resumable))}}} and "
                          f"data.{{{','.join(sorted(DataConfig.resumable))}}}")
    return changed


def _apply_optimiser_settings(opt: torch.optim.Optimizer, sched: Any, tc: Any) -> None:
    """Put the config's learning rate, schedule, betas, eps and weight decay into an optimiser and
    schedule loaded from a checkpoint (which restores the old ones), after ``--allow-changes``."""
    sched.base_lrs = [tc.lr for _ in opt.param_groups]
    sched.lr_lambdas = [lr_lambda(tc.warmup_steps, tc.lr_decay) for _ in opt.param_groups]
    for g in opt.param_groups:
        g.update(initial_lr=tc.lr, lr=tc.lr * sched.lr_lambdas[0](sched.last_epoch), betas=tuple(tc.betas),
                 eps=tc.eps, weight_decay=tc.weight_decay)


def _adopt_filled_fields(cfg: Config, run: Path) -> None:
    """Model fields a fresh run filled in (``for_training``: the beta-TCVAE's dataset size, the
    multi-stage model's stage-1 config) taken from the run's config.yaml where ``cfg`` leaves them
    unset, so that resuming with the preset the run started from rebuilds the same model."""
    from ..config import config_from_dict, load_config

    if not (run / "config.yaml").is_file():
        return
    saved = load_config(run / "config.yaml").model.to_dict()
    now = cfg.model.to_dict()
    if saved.get("kind") != now.get("kind"):
        return
    filled = {k: v for k, v in saved.items() if now.get(k) is None and v is not None}
    if filled:
        d = cfg.to_dict()
        d["model"].update(filled)
        cfg.model = config_from_dict(d).model


class _LogFileHandler(logging.StreamHandler):
    """A StreamHandler on a file opened with O_NOFOLLOW (:func:`flowvae.safe_io.open_for_log`)
    that closes the file when closed, as :class:`logging.FileHandler` does."""

    def close(self) -> None:
        try:
            self.flush()
            self.stream.close()
        finally:
            super().close()


def _log_to_file(run: Path) -> logging.Handler:
    handler = _LogFileHandler(safe_io.open_for_log(run / "train.log", root=run))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("flowvae").addHandler(handler)
    # Periodic progress lines go to the file only while a progress bar owns the terminal.
    file_only = logging.getLogger("flowvae.progress")
    file_only.propagate = False
    file_only.setLevel(logging.INFO)
    file_only.addHandler(handler)
    return handler


def _check_run_folder(run: Path, resume: bool) -> None:
    ckpts = run / "checkpoints"
    if run.exists() and not resume and (any(ckpts.glob("ckpt-*.pt")) or (run / "model.safetensors").exists()):
        raise CheckpointError(f"run folder {run} already holds a training run; pass --resume to continue it "
                              f"or choose another --run folder (nothing was changed)")


def train(cfg: Config, run: str | Path, resume: bool = False, progress: bool | None = None,
          allow_changes: bool = False, train_data: Any = None, test_data: Any = None,
          callbacks: Sequence[Callback] | None = None) -> dict:
    """Train the model of ``cfg`` and write everything into the run folder ``run``.

    Args:
        cfg: the resolved configuration (saved as ``run/config.yaml``).
        run: run folder; created if needed.
        resume: continue from the newest valid checkpoint in ``run``, bitwise as if never
            stopped. Only ``TrainConfig.resumable`` settings and ``data.root`` may differ from the
            checkpoint's config.
        progress: show a progress bar (default: when standard error is a terminal).
        allow_changes: with ``resume``, continue although other settings changed (e.g. a gradient
            clip or a lower learning rate after a loss spike); they are logged and take effect at once.
        train_data, test_data: datasets to use instead of ``cfg.data``'s (both, or neither): an
            :class:`~flowvae.data.ImageData` or any map-style ``torch.utils.data.Dataset`` whose items
            are uint8 images ``[C, H, W]``, PIL images or ``(image, label)`` pairs
            (:func:`flowvae.data.streaming.to_uint8_chw`; torchvision datasets as they are). Labels,
            for class-grouped batches, come from a ``targets`` or ``labels`` attribute. A dataset
            larger than 2 GB decoded (or any, with ``data.in_memory=false``) is streamed by
            ``data.num_workers`` DataLoader workers. ``config.yaml`` keeps ``cfg.data``, so commands
            that read the run's data later (``flowvae eval RUN``) read that.
        callbacks: :class:`~flowvae.training.Callback` objects called as training goes, after the
            loggers of ``train.loggers`` (:mod:`flowvae.training.callbacks`: the hooks, their
            order, metric units, and what an exception in one does). Rank 0 only under DDP.

    Returns:
        The last evaluation record (``step``, ``test_elbo_bpd``, ...).

    Under ``torchrun`` the run is data-parallel (see :mod:`flowvae.training.distributed`);
    ``train.batch_size`` is then the global batch. ``run/train.log`` receives what the ``flowvae``
    logger lets through: INFO under the command line; in library use call
    ``logging.getLogger("flowvae").setLevel(logging.INFO)`` for the same log.

    While it runs, ``run/.lock`` keeps a second training process out of the folder. SIGINT, SIGTERM
    and SIGHUP finish the current step, write its checkpoint and raise
    :class:`~flowvae.errors.TrainingInterrupted`; a second signal stops at once.

    The run's wall time, one definition for ``time_s`` of ``metrics.jsonl``, ``train.log``,
    ``train.time_limit_s``, the report and the model card: seconds since this function was called,
    set-up (data, model, initialisation, step-0 evaluation) included, summed over the sessions of
    a resumed run (each up to its last checkpoint).

    Raises:
        TrainingInterrupted: stopped by a signal (a checkpoint of the last finished step is saved).
        CallbackError: a callback raised (a checkpoint of the last finished step is saved).
        FlowVAEError: bad data, config, run folder (another process training in it), a resume
            with changed settings, too many non-finite steps in a row, or a logger of
            ``train.loggers`` whose package is not installed.
    """
    t_start = time.time()  # the run's wall time counts from here (docstring)
    run = Path(run)
    tc = cfg.train
    user = list(callbacks or [])
    for cb in user:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be flowvae.training.Callback objects, got {type(cb).__name__}")
    ctx, device_name = setup(tc.device)
    if ctx.enabled and tc.batch_size % ctx.world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch and must divide evenly "
                          f"over {ctx.world} processes")
    hooks = Hooks([*loggers_for(tc.loggers, user), *user] if ctx.is_main else [])
    if not ctx.is_main:
        logging.getLogger("flowvae").setLevel(logging.WARNING)
    created = not run.exists()
    lock = RunLock(run).acquire() if ctx.is_main else None
    try:
        return _locked_train(cfg, run, resume, progress, ctx, device_name, allow_changes, train_data, test_data, hooks,
                             t_start)
    except BaseException:
        if lock is not None and created:  # a run that failed before writing anything leaves no folder
            lock.release()
            try:
                run.rmdir()
            except OSError:
                pass
        raise
    finally:
        if lock is not None:
            lock.release()


def _locked_train(cfg: Config, run: Path, resume: bool, progress: bool | None, ctx: DistContext,
                  device_name: str, allow_changes: bool, train_data: Any, test_data: Any, hooks: Hooks,
                  t_setup: float = 0.0) -> dict:
    t_setup = t_setup or time.time()  # when train() was called: the run's wall time counts from there
    parts: dict[str, float] = {}  # seconds of each part of the set-up, for its log line
    tc = cfg.train
    if ctx.is_main:
        remove_temporary_files(run)
    device = resolve_device(device_name)
    if device.type == "cpu":
        tune_cpu_allocator()
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(tc.seed)
    # The checkpoint a resume continues from, read (and checksummed) before the model is built: a
    # fresh start, also after a kill left only unusable checkpoints, must complete the config and
    # load stage 1 of the multi-stage model; a resume must not.
    skipped: list[tuple[Path, str]] = []
    found = load_latest_checkpoint(run / "checkpoints", skipped) if resume else None
    if resume and found is None:
        # Only checkpoints whose writing a kill interrupted (no checksum file yet) mean "start over";
        # a damaged one may be all that is left of a long run, so it is not silently replaced.
        damaged = [(p, why) for p, why in skipped if "has no checksum file" not in why]
        if damaged:
            raise CheckpointError(f"--resume found no usable checkpoint: {damaged[0][1]}. Restore the file, or "
                                  f"delete the damaged checkpoints to train {run} again from step 0")
        log.warning("no usable checkpoint in %s: starting from step 0", run)
    has_checkpoint = found is not None
    if has_checkpoint:
        _adopt_filled_fields(cfg, run)
    if (train_data is None) != (test_data is None):
        raise ConfigError("pass both train_data and test_data, or neither (then cfg.data names them)")
    data_origin: Literal["config", "python"] = "config" if train_data is None else "python"
    t_part = time.time()
    if train_data is None:  # a large image folder is read from disk as training needs it (open_split)
        train_data = open_split(cfg.data, "train")
        _check_fits(getattr(train_data, "name", "train"), dataset_image_shape(train_data), cfg)
        test_data = load_data(cfg, "test")
    else:
        for name, d in (("train_data", train_data), ("test_data", test_data)):
            if not isinstance(d, ImageData) and (not hasattr(d, "__getitem__") or not hasattr(d, "__len__")):
                raise ConfigError(f"{name} must be a map-style dataset (with __len__ and __getitem__) or "
                                  f"flowvae ImageData, got {type(d).__name__}")
            _check_fits(f"{name} ({type(d).__name__})", dataset_image_shape(d), cfg)
    parts["data"] = time.time() - t_part
    log.info("set-up: data in %.1f s: %d training and %d test images", parts["data"], len(train_data), len(test_data))
    t_part = time.time()
    if not has_checkpoint:  # e.g. the beta-TCVAE's dataset size, the multi-stage model's stage-1 config
        cfg.model = cfg.model.for_training(len(train_data), RunReader())
    model = create_model(cfg)
    if tc.kl_warmup_steps and not model.kl_term:
        raise ConfigError(f"train.kl_warmup_steps applies to models with a KL term; a {model.kind!r} model "
                          f"has none: leave it at 0")
    if not has_checkpoint:
        model.prepare_training(RunReader())
    model = model.to(device).set_precision(tc.precision).set_recompute(tc.recompute)
    if ctx.is_main and (warning := cpu_size_warning(model, device)):
        log.warning("%s", warning)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    if ctx.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    parts["model"] = time.time() - t_part
    log.info("set-up: %s model of %s parameters built in %.1f s, on %s%s", model.kind,
             f"{sum(p.numel() for p in model.parameters()):,}", parts["model"], device,
             f" with {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    _check_run_folder(run, resume)
    handler = None
    if ctx.is_main:
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        handler = _log_to_file(run)
    try:
        with _Signals() as signals:
            last = _train(cfg, model, train_data, test_data, run, device, found, progress, ctx, signals,
                          hooks, allow_changes, t_setup, data_origin, parts)
    except BaseException as e:
        abandon(ctx, e)
        raise
    finally:
        hooks.close()
        if handler is not None:
            logging.getLogger("flowvae").removeHandler(handler)
            logging.getLogger("flowvae.progress").removeHandler(handler)
            handler.close()
    cleanup(ctx)
    return last


def _train(cfg: Config, model: GenerativeModel, train_data: Any, test_data: Any, run: Path,
           device: torch.device, found: tuple[Path, dict] | None, progress: bool | None, ctx: DistContext,
           signals: _Signals, hooks: Hooks, allow_changes: bool = False, t_setup: float = 0.0,
           data_origin: Literal["config", "python"] = "config", parts: dict[str, float] | None = None) -> dict:
    """The training of :func:`train` once data and model are ready. ``t_setup``: when ``train`` was
    called (the run's wall time counts from there); ``parts``: seconds of the set-up so far by part."""
    t0 = time.time()
    t_setup = t_setup or t0
    parts = dict(parts or {})
    tc = cfg.train
    main = ctx.is_main
    local_batch = tc.batch_size // ctx.world
    progress_log = logging.getLogger("flowvae.progress")
    departures = _departures(cfg)
    for what in departures:
        log.info("departure from the paper: %s", what)

    # Frozen parts (stage 1 of the multi-stage model) are left out of the optimiser.
    # fused=True: one kernel over all parameters, about 3 times faster than the default on the CPU
    # for the cifar10 preset (benchmarks/profile_step.py); same update rule.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=(tc.betas[0], tc.betas[1]), eps=tc.eps,
                            weight_decay=tc.weight_decay, fused=device.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tc.warmup_steps, tc.lr_decay))
    guard = _UpdateGuard(params, opt) if tc.check_updates else None
    groups_per_batch = model.label_groups  # batches drawn by class, each class one group (UG-VAE)
    # Which images form each global batch (the order, checkpointed) and how this process reads its
    # rows of it (the source: indexed in memory, or streamed by DataLoader workers).
    batches: ShuffledOrder | GroupedOrder = (
        GroupedOrder(dataset_labels(train_data), tc.batch_size, groups_per_batch, tc.seed)
        if groups_per_batch is not None else ShuffledOrder(len(train_data), tc.batch_size, tc.seed))
    lo, hi = ctx.rank * local_batch, (ctx.rank + 1) * local_batch
    source = training_source(train_data, cfg.data.in_memory, cfg.data.num_workers, device)
    noise = torch.Generator(device=device).manual_seed(tc.seed + 1)  # dequantisation and z samples
    aug = torch.Generator().manual_seed(tc.seed + 2)
    step, elapsed = 0, 0.0  # elapsed: wall time of the earlier sessions of a resumed run
    trained, t_loop = 0.0, 0.0  # trained: time in the training loop of earlier sessions (kept in checkpoints)
    bad_in_row, skipped = 0, 0
    run_bpd: float | None = None
    run_elbo: float | None = None  # the plain negative ELBO, when the loss departs from it (model stats' elbo_bpd)
    grad_norm_max = 0.0
    # A seeded, class-stratified subset: the first N of a class-sorted test folder would be one class.
    n_eval = len(test_data) if tc.eval_images is None else min(tc.eval_images, len(test_data))
    eval_index = None if n_eval == len(test_data) else subset_indices(len(test_data), n_eval, dataset_labels(test_data))
    eval_images = head_images(test_data, None, eval_index)
    probe_sets = (_probe_sets(train_data, test_data, eval_index, eval_images, tc.probe_images)
                  if main and tc.probe_images else None)
    if probe_sets is not None and (note := accuracy_step_note(len(probe_sets[2]))) is not None:
        log.info("train.probe_images: %s", note)
    # With a time limit the curves get points in time too, not only every eval_every steps, which
    # a CPU run may never reach (train.eval_every_s).
    eval_every_s = tc.eval_every_s if tc.eval_every_s is not None else (
        tc.time_limit_s / 10 if tc.time_limit_s is not None else None)
    if main:
        _log_plan(cfg, len(train_data), len(eval_images), eval_every_s)

    last: dict = {}
    eval_s = 0.0  # seconds of the last evaluation, also of an earlier session (the time limit's reserve)
    if found is not None:
        path, state = found
        changed = _check_resumed_config(state.get("config"), cfg, path, allow_changes)
        try:
            model.load_state_dict(checkpoint_model_state(path, state))
        except RuntimeError as e:
            raise CheckpointError(f"{path} was written for another architecture ({state_dict_mismatch(e)}); "
                                  f"resume with the run's own config.yaml") from None
        # The rest checked before any of it is used: a file with a valid checksum may hold anything.
        validate_training_state(path, state, optimizer=opt, batches=batches,
                                generators={"noise": noise, "aug": aug, "torch": None})
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if changed:
            _apply_optimiser_settings(opt, sched, tc)
            log.warning("resuming with changed settings (--allow-changes): %s", "; ".join(changed))
        batches.load_state_dict(state["batches"])
        noise.set_state(state["rng"]["noise"])
        aug.set_state(state["rng"]["aug"])
        torch.set_rng_state(state["rng"]["torch"])
        step = int(state["step"])
        prog = state.get("progress", {})
        bad_in_row, skipped = int(prog.get("bad_in_row", 0)), int(prog.get("skipped", 0))
        run_bpd, elapsed = prog.get("run_bpd"), float(prog.get("elapsed_s", 0.0))
        run_elbo = prog.get("run_elbo_bpd")
        trained = float(prog.get("train_s", elapsed))
        grad_norm_max = float(prog.get("grad_norm_max", 0.0))
        v = prog.get("eval_s")
        eval_s = float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else 0.0
        log.info("resumed from %s at step %d", path.name, step)
    if main:  # the records an uninterrupted run has at this step, no more (none on a fresh start)
        kept = _truncate_metrics(run, step if found is not None else -1)
        if kept and kept[-1]["step"] == step:
            last = kept[-1]  # resuming a finished run evaluates nothing twice
    # Written only once the checkpoint (if any) is known to fit, so a failed resume changes nothing.
    if main:
        save_config(cfg, run / "config.yaml")
        env = environment_record(device)
        env["processes"] = ctx.world
        env["train_data"] = f"{getattr(train_data, 'name', type(train_data).__name__)}: {len(train_data)} images"
        env["test_data"] = f"{getattr(test_data, 'name', type(test_data).__name__)}: {len(test_data)} images"
        if departures:
            env["departures_from_paper"] = departures
        atomic_write_bytes(run / "environment.json", json.dumps(env, indent=2).encode(), root=run)
        # What was read, beside how to read it: commands check it before they read the run's data again.
        write_data_record(run, DataRecord(data_origin, cfg.data.dataset, SplitRecord.of(train_data),
                                          SplitRecord.of(test_data)))

    def snapshot(at: int | None = None) -> TrainState:
        """What callbacks see: the run as of step ``at`` (default: now)."""
        return TrainState(step=step if at is None else at, epoch=getattr(batches, "epoch", None), run=run,
                          config=cfg, model=model, rank=ctx.rank, world_size=ctx.world, resumed=found is not None)

    def wall() -> float:
        """The run's wall time in seconds (see :func:`train`): since ``train`` was called in this
        session, set-up included, plus the earlier sessions' up to their last checkpoint."""
        return elapsed + time.time() - t_setup

    # When the last evaluation started and ended (wall time) and what it cost (s): the schedule of
    # time-based evaluations and the final evaluation that the time limit keeps time for.
    timing = {"start": wall(), "end": wall(), "cost": eval_s, "bpd": 0.0, "probes": 0.0}

    def evaluate(train_bpd: float | None, skipped: int) -> dict:
        """Test bits/dim now, then the linear probes of ``train.probe_images``, appended to
        metrics.jsonl (fixed noise seed, so points are comparable); ``time_s`` is the run's wall time
        when the record is complete. Under DDP each rank evaluates every world-th image and the sums
        are gathered. Neither draws from the training's random streams."""
        t_eval = time.time()
        timing["start"] = wall()
        mine = eval_images[ctx.rank::ctx.world]
        part = evaluate_bpd(model, mine, tc.eval_k, device=device, seed=tc.seed + ctx.rank)
        keys = ("elbo_bpd", "iw_bpd", "kl")
        total = ctx.sum([part[k_] * len(mine) for k_ in keys], device)
        res = {**{k_: t / len(eval_images) for k_, t in zip(keys, total)}, "k": tc.eval_k, "n": len(eval_images)}
        nonlocal grad_norm_max
        rec = {"step": step, "train_bpd": train_bpd,
               **({"train_elbo_bpd": run_elbo} if run_elbo is not None else {}),
               **{f"test_{k}": v for k, v in res.items()},
               "lr": opt.param_groups[0]["lr"], "skipped_steps": skipped, "grad_norm_max": grad_norm_max or None,
               "time_s": None}  # set once the record is complete
        if tc.kl_warmup_steps:  # the weight of the update that led here (at step 0: of the first one)
            rec["kl_weight"] = kl_warmup_weight(max(step - 1, 0), tc.kl_warmup_steps, tc.kl_warmup_start)
        timing["bpd"] = time.time() - t_eval
        log.info("step %d: test %.4f bits/dim (ELBO, k=%d), KL %.3f nats, %d images in %.1f s", step, res["elbo_bpd"],
                 tc.eval_k, res["kl"], len(eval_images), timing["bpd"])
        if probe_sets is not None:  # rank 0 only; the other ranks wait at the next collective
            t_probe = time.time()
            rec.update(probe_trend(model, *probe_sets, seed=tc.seed))
            # The KL of z beside its probe: a probe of a collapsed code measures the encoder only.
            z_kl = rec["test_kl"] if "probe_z" in rec and model.capabilities.code_prior else None
            if z_kl is not None:
                rec["z_collapsed"] = is_collapsed(z_kl)
            timing["probes"] = time.time() - t_probe
            log.info("step %d: linear probes %s; %d training / %d test images in %.1f s", step,
                     ", ".join(f"{k[6:]} {100 * v:.2f}%" + (f" ({collapse_note(z_kl)})" if k == "probe_z" and
                                                            z_kl is not None else "")
                               for k, v in rec.items() if k.startswith("probe_")),
                     len(probe_sets[0]), len(probe_sets[2]), timing["probes"])
        rec["time_s"] = round(wall(), 2)
        timing["end"], timing["cost"] = wall(), time.time() - t_eval
        grad_norm_max = 0.0
        if main:
            _write_metrics(run, rec)
        if hooks.callbacks:
            was_training = model.training
            model.eval()  # no BatchNorm statistics move while callbacks look at the model
            samples = _draw_samples(model, tc.sample_temperatures, tc.seed, device) if hooks.wants_samples else None
            hooks("on_eval", snapshot(), dict(rec), samples)
            model.train(was_training)
        return rec

    def evaluation_due() -> bool:
        """Whether ``eval_every_s`` of wall time have passed since the last evaluation started, and
        the training since it ended took at least as long as it did (so that evaluations slower
        than the interval take at most half of the run)."""
        if eval_every_s is None:
            return False
        now = wall()
        return now - timing["start"] >= eval_every_s and now - timing["end"] >= timing["end"] - timing["start"]

    def counters() -> dict:
        """Everything besides weights, optimiser and schedule that a step moves on."""
        return {"batches": batches.state_dict(),
                "rng": {"noise": noise.get_state(), "aug": aug.get_state(), "torch": torch.get_rng_state()},
                "progress": {"bad_in_row": bad_in_row, "skipped": skipped, "run_bpd": run_bpd,
                             **({"run_elbo_bpd": run_elbo} if run_elbo is not None else {}),
                             "grad_norm_max": grad_norm_max}}

    saved_at: dict[str, Any] = {"step": step if found is not None else None, "time": time.time()}

    def checkpoint(label: int, moved: dict) -> None:
        """Everything a resumed run needs to continue bitwise, as of the end of step ``label``:
        weights, optimiser, schedule, and ``moved`` (data order, every RNG stream, the counters)."""
        saved_at["time"] = time.time()
        if saved_at["step"] == label or not main:
            return
        moved["progress"]["elapsed_s"] = wall()
        moved["progress"]["eval_s"] = timing["cost"]
        moved["progress"]["train_s"] = trained + (time.time() - t_loop if t_loop else 0.0)
        path = save_checkpoint(run / "checkpoints", label, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": label, "config": cfg.to_dict(), **moved}, keep=tc.keep_checkpoints)
        saved_at["step"] = label
        hooks("on_checkpoint", snapshot(label), path)

    hooks("on_train_start", snapshot())
    if not ctx.all_true(hooks.ok, device):  # before anything is trained: nothing to save
        raise hooks.error(run, None)

    if found is None:
        t_part = time.time()
        pick = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(tc.seed))[:tc.init_batch_size]
        init = head_images(train_data, None, pick) if source.streaming else source.fetch(pick)
        with torch.no_grad(), data_init(model):
            model.loss(init.to(device), noise)
        parts["initialisation"] = time.time() - t_part
        log.info("set-up: data-dependent initialisation (ActNorm) on %d training images in %.1f s; step-0 evaluation "
                 "on %d test images%s", len(init), parts["initialisation"], len(eval_images),
                 f", then linear probes on {len(probe_sets[0])} training images" if probe_sets is not None else "")
        last = evaluate(None, 0)
        parts["step-0 evaluation"] = timing["bpd"]
        if probe_sets is not None:
            parts["step-0 probes"] = timing["probes"]
        if main and eval_every_s is not None and timing["cost"] > 0.25 * eval_every_s:
            cost, every = timing["cost"], eval_every_s
            log.warning("an evaluation takes %.0f s (step 0), %s the %.0f s between two time-based ones "
                        "(train.eval_every_s%s)%s: lower train.eval_images (%d) or train.probe_images (%d) for more "
                        "points and more training in the time", cost,
                        f"{100 * cost / every:.0f}% of" if cost <= every else "longer than", every,
                        "" if tc.eval_every_s is not None else " unset: train.time_limit_s / 10",
                        "" if cost <= every else f", so two are at least {2 * cost:.0f} s apart (as long training "
                        f"as evaluating)", len(eval_images), tc.probe_images)

    net: Any = model  # the module the training forward runs through: model, DDP(model) or compiled
    if ctx.enabled:  # after the data-dependent init: DDP's constructor broadcasts rank 0's state
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:  # the training forward only; evaluation, sampling and checkpoints use `model` itself
        net = torch.compile(net)
    show = (sys.stderr.isatty() if progress is None else progress) and main
    bar = None
    if show:
        from tqdm import tqdm
        bar = tqdm(total=tc.steps, initial=step, unit="step", dynamic_ncols=True)
    model.train()
    # Only BatchNorm statistics (and their batch counters) change in a forward pass; other buffers
    # (1x1 conv permutations) are constant.
    bn_buffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                  for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    source.start(batches, lo, hi)  # streaming: DataLoader workers prefetch from here on
    t_loop = time.time()
    log.info("set-up took %.1f s (%s); training from step %d", t_loop - t_setup,
             ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()), step)
    try:
        while step < tc.steps:
            # train.time_limit_s bounds the run's wall time, set-up included; the final evaluation
            # (as long as the last one) is to fit in it too, unless this step was just evaluated.
            reserve = timing["cost"] if last.get("step") != step else 0.0
            in_time = tc.time_limit_s is None or wall() + reserve <= tc.time_limit_s
            # Every rank stops at the same step: for the time limit, a signal, or a failed callback (rank 0's).
            if not ctx.all_true(in_time and signals.signum is None and hooks.ok, device):
                if not ctx.all_true(hooks.ok, device):
                    if bar is not None:
                        bar.close()
                    checkpoint(step, counters())
                    raise hooks.error(run, step)
                if not ctx.all_true(signals.signum is None, device):
                    if bar is not None:
                        bar.close()
                    checkpoint(step, counters())
                    name = signal.Signals(signals.signum or signal.SIGTERM).name
                    msg = (f"stopped by {name} after step {step}; its checkpoint is in {run / 'checkpoints'}: "
                           f"continue with flowvae train --resume --run {run}")
                    # In train.log, where a scheduler's user looks; not on the terminal, where the
                    # command prints the exception's message (it was printed twice).
                    progress_log.info("%s", msg)
                    raise TrainingInterrupted(msg, int(signals.signum or signal.SIGTERM), step)
                log.info("time limit of %.0f s reached at step %d: wall time %.1f s (set-up included)%s", tc.time_limit_s,
                         step, wall(), f" and {reserve:.1f} s for the final evaluation" if reserve else "")
                if step == 0:
                    log.warning("train.time_limit_s=%g was spent before the first step (set-up took %.1f s): nothing "
                                "was trained; raise the limit", tc.time_limit_s, t_loop - t_setup)
                break
            pre = counters()  # the state a checkpoint of this step's start carries, if the step goes bad
            idx, groups = batches.next()
            # This process's rows of the global batch, augmented with the draws for the whole batch.
            x = augment_batch(source.fetch(idx[lo:hi]), cfg.data.flip, cfg.data.crop_pad, aug, rows=(lo, hi, len(idx)))
            groups = None if groups is None else groups[lo:hi]
            x = x.to(device, non_blocking=True)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            # The forward pass updates BatchNorm running statistics; a bad batch must not leave NaN there.
            saved_buffers = [b.clone() for b in bn_buffers]
            extras: dict[str, Any] = {} if groups is None else {"groups": groups.to(device)}
            kl_weight = kl_warmup_weight(step, tc.kl_warmup_steps, tc.kl_warmup_start)
            if kl_weight != 1.0:  # a tensor: a compiled forward takes each new value without recompiling
                extras["kl_weight"] = torch.tensor(kl_weight, dtype=torch.float32, device=device)
            loss, stats = net(x, noise, ctx.shard, **extras)
            opt.zero_grad(set_to_none=True)
            finite = ctx.all_true(bool(torch.isfinite(loss)), device)
            what = "loss"
            if finite:
                loss.backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf"))
                grad_norm = float(norm)
                finite, what = math.isfinite(grad_norm) and len(grads) > 0, "gradient"
                if finite:  # the largest gradient norm since the last evaluation: spikes show here first
                    grad_norm_max = max(grad_norm_max, grad_norm)
            if finite:
                if guard is not None:
                    guard.save()
                opt.step()
                if guard is not None and not ctx.all_true(guard.weights_finite(), device):
                    guard.restore()
                    finite, what = False, "weights after the update"
            if not finite:
                # Skip the update; parameters and buffers stay those of the last good step.
                with torch.no_grad():
                    for b, saved in zip(bn_buffers, saved_buffers):
                        b.copy_(saved)
                skipped += 1
                bad_in_row += 1
                log.warning("non-finite %s at step %d: step skipped (%d in a row)", what, step + 1, bad_in_row)
                if bad_in_row == 1:  # labelled with the last good step, and carrying its data order and RNG
                    checkpoint(step, pre)
                if bad_in_row >= tc.max_bad_steps:
                    raise FlowVAEError(f"{bad_in_row} non-finite steps in a row at step {step + 1}; the run stopped. "
                                       f"The checkpoint from before the first bad step is in {run / 'checkpoints'}; "
                                       f"lower train.lr or set train.grad_clip, then --resume --allow-changes")
                sched.step()
                step += 1
                continue
            bad_in_row = 0
            sched.step()
            step += 1
            batch_bpd = _batch_mean(ctx, stats["bpd"], device)
            run_bpd = batch_bpd if run_bpd is None else 0.98 * run_bpd + 0.02 * batch_bpd
            batch_elbo = _batch_mean(ctx, stats["elbo_bpd"], device) if "elbo_bpd" in stats else None
            if batch_elbo is not None:
                run_elbo = batch_elbo if run_elbo is None else 0.98 * run_elbo + 0.02 * batch_elbo
            if bar is not None:
                bar.update(1)
                bar.set_postfix(bpd=f"{run_bpd:.3f}", kl=f"{float(stats['kl']):.1f}")
            if step % 100 == 0:
                # With a departure the loss is not the ELBO (the auxiliary decoder's term alone is
                # thousands of nats), so the line gives both, lest the loss read as the bound.
                elbo = f" of the loss; negative ELBO {run_elbo:.4f}" if run_elbo is not None else ""
                aux = f", auxiliary decoder {float(stats['aux']):.1f} nats" if "aux" in stats else ""
                (progress_log if bar is not None else log).info(
                    "step %d: train %.4f bits/dim (running mean%s), kl %.2f nats%s, max grad norm %.3g", step,
                    run_bpd, elbo, float(stats["kl"]), aux, grad_norm_max)
            if hooks.callbacks:
                hooks("on_step", snapshot(), {
                    "train/bpd": batch_bpd, "train/bpd_running": run_bpd, "train/kl_nats": float(stats["kl"]),
                    "train/lr": opt.param_groups[0]["lr"], "train/grad_norm": grad_norm,
                    **({"train/elbo_bpd": batch_elbo} if batch_elbo is not None else {}),
                    **({"train/aux_nats": float(stats["aux"])} if "aux" in stats else {})})
            # Every rank evaluates at the same steps (evaluate gathers sums): the time-based ones
            # when any rank's clock says so. A checkpoint goes with each, so its point survives a kill.
            timed = eval_every_s is not None and not ctx.all_true(not evaluation_due(), device)
            if step % tc.eval_every == 0 or step == tc.steps or timed:
                last = evaluate(run_bpd, skipped)
            if step % tc.checkpoint_every == 0 or timed or (
                    tc.checkpoint_every_s is not None and time.time() - saved_at["time"] >= tc.checkpoint_every_s):
                checkpoint(step, counters())
    finally:
        source.close()
    if bar is not None:
        bar.close()
    if not last or last.get("step") != step:
        last = evaluate(run_bpd, skipped)
    if main and last.get("z_collapsed") and isinstance(last.get("probe_z"), float):
        log.warning("the code z ends collapsed: KL(q(z|x) || p(z)) %.3f nats per image, below %g, so its probe "
                    "(%.2f%%) reads the encoder's features of x, not information the decoder takes from z; "
                    "`flowvae switch` and `flowvae probe --protocol authors` tell the two apart",
                    last["test_kl"], COLLAPSED_KL_NATS, 100 * last["probe_z"])
    checkpoint(step, counters())
    if not hooks.ok:  # on_eval or on_checkpoint of the last step failed; its checkpoint is written
        raise hooks.error(run, step)
    model.eval()
    if not main:
        return last
    _save_final(model, run)
    grids = _draw_grids(model, tc.sample_temperatures, tc.seed, device)
    paths = [save_grid(images, run / "samples" / f"samples_t{t:.2f}.png", nrow=8,
                       scale=max(1, 64 // cfg.model.image_size), root=run) for t, images, _ in grids]
    # Which grids saturated, for the report and for the model card's choice of grid.
    write_sample_stats(run / "samples", [(p, st) for p, (_, _, st) in zip(paths, grids)], root=run)
    try:
        from ..report import write_report

        write_report(run)
    except Exception as e:  # noqa: BLE001 - a report problem must not fail a finished training run
        log.warning("could not write report.html: %s", e)
    # The figure of the report and the model card (the last record's time_s), then what followed it.
    done_at = float(last["time_s"]) if isinstance(last.get("time_s"), (int, float)) else wall()
    log.info("done: %d steps in %.1f s of wall time (set-up included, summed over resumed sessions; time_s of the "
             "last evaluation), then %.1f s for the final checkpoint, samples and report; run folder %s",
             step, done_at, max(0.0, wall() - done_at), run)
    hooks("on_train_end", snapshot(), dict(last))
    if not hooks.ok:
        raise hooks.error(run, None)
    return last


@torch.no_grad()
def _draw_grids(model: GenerativeModel, temperatures: list[float], seed: int,
                device: torch.device) -> list[tuple[float, torch.Tensor, dict]]:
    """``SAMPLES_PER_GRID`` uint8 samples ``[N, C, H, W]`` (on the CPU) at each temperature and their
    statistics, drawn as ``flowvae sample RUN --seed SEED`` draws them
    (:func:`~flowvae.evaluation.sampling.sample_grids_with_stats`: the same images). The global RNG
    streams are forked, so drawing them (for a callback, during training) leaves the run's numbers
    as they would be without."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return sample_grids_with_stats(model, temperatures, SAMPLES_PER_GRID, seed=seed)


def _draw_samples(model: GenerativeModel, temperatures: list[float], seed: int,
                  device: torch.device) -> dict[float, torch.Tensor]:
    """:func:`_draw_grids`' images by temperature (what callbacks get)."""
    return {t: images for t, images, _ in _draw_grids(model, temperatures, seed, device)}


def _save_final(model: GenerativeModel, run: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(state, metadata={"format": "flowvae", "kind": model.kind})
    safe_io.atomic_write(run / "model.safetensors", data, root=run)
