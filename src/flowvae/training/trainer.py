"""The training loop: :func:`train` composes the pipeline (:mod:`flowvae.training.pipeline`: data,
config, model, lock, processes, log) and a :class:`Trainer`, whose :meth:`Trainer.fit` is the loop.

Objective: the negative ELBO of eq. (2) in bits/dim with one posterior sample and uniform
dequantisation, the KL to the flow prior estimated by Monte Carlo. Optimiser: AdamW with linear
warm-up then per-step exponential decay (Appendix C.2, :func:`lr_lambda`). Before the first step every
ActNorm is initialised from a batch of training images (data-dependent initialisation, stored in the
state dict so it is never redone after loading or resuming). With ``train.ema_decay`` the run
evaluates, samples from and saves an exponential moving average of the weights (Polyak averaging,
:mod:`flowvae.training.averaging`); the training loss is that of the last update's weights.

Remedies for posterior collapse, departures from the paper and off by default: KL warm-up
(``train.kl_warmup_steps``: the KL term's weight rises linearly to 1, :func:`kl_warmup_weight`,
passed to the model's ``loss`` as ``kl_weight``) and free bits (``model.free_bits``, applied in the
model's ``loss``). Evaluation always reports the true ELBO (``bits_per_dim``, weight 1).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import ImageData
from ..data.augment import augment_batch
from ..data.streaming import GroupedOrder, ShuffledOrder, dataset_labels, head_images, training_source
from ..errors import CheckpointError, FlowVAEError, TrainingInterrupted
from ..evaluation.bpd import evaluate_bpd
from ..evaluation.frequencies import switch_frequencies
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
from ..models.base import GenerativeModel
from ..report import write_report
from ..runs.checkpoints import checkpoint_model_state, state_dict_mismatch, validate_training_state
from ..runs.data import DataRecord, SplitRecord
from ..runs.folder import RunFolder
from ..runs.metrics import PROBE_PREFIX, MetricsRow
from .averaging import WeightAverage
from .callbacks import Callback, TrainState
from .distributed import DistContext
from .environment import environment_record
from .eval_sets import evaluation_images, probe_sets
from .guard import BatchNormStatistics, UpdateGuard
from .pipeline import PreparedRun, prepare
from .resume import apply_optimiser_settings, check_resumed_config
from .schedules import CosineAnneal, kl_warmup_weight, lr_lambda, lr_multiplier

__all__ = ["Trainer", "kl_warmup_weight", "lr_lambda", "train"]

log = logging.getLogger("flowvae.train")
progress_log = logging.getLogger("flowvae.progress")  # to train.log only while a progress bar owns the terminal
SAMPLES_PER_GRID = 64  # samples/*.png and the grids callbacks get: 8 rows of 8
MANY_EPOCHS = 200  # planned passes over the training images above which the plan line warns


def train(cfg: Config, run: str | Path, resume: bool = False, progress: bool | None = None,
          allow_changes: bool = False, train_data: Any = None, test_data: Any = None,
          callbacks: Sequence[Callback] | None = None) -> dict:
    """Train the model of ``cfg`` and write everything into the run folder ``run``.

    Args:
        cfg: the resolved configuration (saved as ``run/config.yaml``). Checked once more and copied:
            training completes its own copy (e.g. the beta-TCVAE's dataset size) and never changes
            ``cfg``.
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
        The last evaluation record (``step``, ``test_elbo_bpd``, ...: a line of ``metrics.jsonl``,
        :class:`~flowvae.runs.metrics.MetricsRow`, as a dict).

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
    with prepare(cfg, run, resume=resume, train_data=train_data, test_data=test_data,
                 callbacks=callbacks) as prepared:
        return Trainer(prepared, progress=progress, allow_changes=allow_changes).fit()


STEP0_IMAGES = 256
"""Test images of the step-0 evaluation of a run that trains (:meth:`Trainer.evaluate`)."""
# Seconds of a session's training timed before a cosine anneal's horizon is first set from a time
# limit: long enough for a steady speed (the first steps are slower), short against a CPU budget.
ANNEAL_CALIBRATION_S = 30.0


@dataclass
class EvalClock:
    """When the last evaluation started and ended (the run's wall time, s) and what it cost (s, also
    of an earlier session): the schedule of time-based evaluations, and the final evaluation that
    the time limit keeps time for. ``bpd``, ``probes`` and ``switch``: seconds of its parts."""

    start: float
    end: float
    cost: float
    bpd: float = 0.0
    probes: float = 0.0
    switch: float = 0.0


class Trainer:
    """The training of one prepared run: optimiser, data order and random streams, counters,
    evaluation, checkpoints and the end of training around one loop (:meth:`fit`).

    Args:
        prepared: what :func:`~flowvae.training.pipeline.prepare` made (config, model, data, folder, ...).
        progress: show a progress bar (default: when standard error is a terminal).
        allow_changes: on resume, continue although settings that change what the run computes
            differ from the checkpoint's.

    What a step moves on besides weights, optimiser and schedule (and so what checkpoints carry,
    :meth:`counters`): ``batches`` (the data order), the generators ``noise`` (dequantisation and z
    samples) and ``aug`` (augmentation), torch's global RNG, and the counters ``step``,
    ``bad_in_row``, ``skipped``, ``run_bpd``, ``run_elbo`` and ``grad_norm_max``.
    """

    def __init__(self, prepared: PreparedRun, progress: bool | None = None, allow_changes: bool = False):
        self.prepared, self.progress, self.allow_changes = prepared, progress, allow_changes
        self.cfg, self.tc, self.model, self.device = prepared.cfg, prepared.cfg.train, prepared.model, prepared.device
        self.ctx: DistContext = prepared.ctx
        self.folder: RunFolder = prepared.folder
        self.hooks, self.main = prepared.hooks, prepared.ctx.is_main
        tc, model, device = self.tc, self.model, self.device
        self.departures = _departures(self.cfg)
        for what in self.departures:
            log.info("departure from the paper: %s", what)

        # Frozen parts (stage 1 of the multi-stage model) are left out of the optimiser.
        # fused=True: one kernel over all parameters, about 3 times faster than the default on the CPU
        # for the cifar10 preset (benchmarks/profile_step.py); same update rule.
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=tc.lr, betas=(tc.betas[0], tc.betas[1]), eps=tc.eps,
                                     weight_decay=tc.weight_decay, fused=device.type in ("cpu", "cuda"))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_multiplier(tc.lr_schedule, tc.warmup_steps, tc.lr_decay, tc.steps))
        self.guard = UpdateGuard(self.params, self.opt) if tc.check_updates else None
        # Polyak averaging: the weights the run evaluates, samples from and saves (train.ema_decay).
        self.ema = WeightAverage(model, tc.ema_decay) if tc.ema_decay else None
        # Which images form each global batch (the order, checkpointed) and how this process reads its
        # rows of it (the source: indexed in memory, or streamed by DataLoader workers). Batches drawn
        # by class, each class one group, for the kinds that want them (UG-VAE).
        groups = model.label_groups
        self.batches: ShuffledOrder | GroupedOrder = (
            GroupedOrder(dataset_labels(prepared.train_data), tc.batch_size, groups, tc.seed) if groups is not None
            else ShuffledOrder(len(prepared.train_data), tc.batch_size, tc.seed))
        local_batch = tc.batch_size // self.ctx.world
        self.rows = (self.ctx.rank * local_batch, (self.ctx.rank + 1) * local_batch)
        self.source = training_source(prepared.train_data, self.cfg.data.in_memory, self.cfg.data.num_workers, device)
        self.noise = torch.Generator(device=device).manual_seed(tc.seed + 1)  # dequantisation and z samples
        self.aug = torch.Generator().manual_seed(tc.seed + 2)

        self.step, self.bad_in_row, self.skipped = 0, 0, 0
        self.run_bpd: float | None = None
        self.run_elbo: float | None = None  # the plain negative ELBO, when the loss departs from it (stats' elbo_bpd)
        self.grad_norm_max = 0.0
        self.elapsed = 0.0  # wall time of the earlier sessions of a resumed run
        self.trained, self.t_loop = 0.0, 0.0  # trained: time in the training loop of earlier sessions
        self.last: dict = {}  # the last evaluation record
        self.clock = EvalClock(0.0, 0.0, 0.0)
        # This session's first step and seconds spent on evaluations and checkpoints in its loop: its
        # training speed, from which a cosine anneal's horizon is set under a time limit.
        self.step0, self.aside = 0, 0.0
        self.anneal_timed = False  # whether the anneal's horizon has been set from this session's speed
        self.saved_step: int | None = None  # the step of the last checkpoint written, and when
        self.saved_time = time.time()

        self.eval_index, self.eval_images = evaluation_images(prepared.test_data, tc.eval_images)
        self.probe_sets = (probe_sets(prepared.train_data, prepared.test_data, self.eval_index, self.eval_images,
                                      tc.probe_images) if self.main and tc.probe_images else None)
        if self.probe_sets is not None and (note := accuracy_step_note(len(self.probe_sets[2]))) is not None:
            log.info("train.probe_images: %s", note)
        self.switch_set = self._switch_set(prepared.test_data) if self.main else None
        # With a time limit the curves get points in time too, not only every eval_every steps, which
        # a CPU run may never reach (train.eval_every_s).
        self.eval_every_s = tc.eval_every_s if tc.eval_every_s is not None else (
            tc.time_limit_s / 10 if tc.time_limit_s is not None else None)
        if self.main:
            _log_plan(self.cfg, len(prepared.train_data), len(self.eval_images), self.eval_every_s)

    def _switch_set(self, test_data: Any) -> ImageData | None:
        """The evaluation's test images for the label-free switch score (``train.switch_pairs``; two per
        pair), or ``None`` when it is off (the pipeline refused it for kinds it does not apply to)."""
        wanted, capable = self.tc.switch_pairs, self.model.capabilities.global_local
        pairs = min(64 if wanted is None else wanted, len(self.eval_images) // 2) if capable else 0
        if not pairs:
            return None
        return ImageData(self.eval_images[: 2 * pairs], None, getattr(test_data, "name", "test"))

    # ---------------------------------------------------------------------------------------- the loop

    def fit(self) -> dict:
        """Train to ``train.steps`` (or the time limit), evaluating and checkpointing on the way, then
        write the run's final files (:meth:`finish`).

        Returns:
            The last evaluation record (:func:`train`).

        Raises:
            TrainingInterrupted, CallbackError, FlowVAEError: as :func:`train` says.
        """
        cfg, tc, model, ctx, device = self.cfg, self.tc, self.model, self.ctx, self.device
        self.begin()
        net: Any = model  # the module the training forward runs through: model, DDP(model) or compiled
        if ctx.enabled:  # after the data-dependent init: DDP's constructor broadcasts rank 0's state
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if tc.compile:  # the training forward only; evaluation, sampling and checkpoints use `model` itself
            net = torch.compile(net)
        bar = self._progress_bar()
        model.train()
        batch_norm = BatchNormStatistics(model)
        lo, hi = self.rows
        self.source.start(self.batches, lo, hi)  # streaming: DataLoader workers prefetch from here on
        self.t_loop, self.step0 = time.time(), self.step
        log.info("set-up took %.1f s (%s); training from step %d", self.t_loop - self.prepared.t_start,
                 ", ".join(f"{k} {v:.1f} s" for k, v in self.prepared.parts.items()), self.step)
        try:
            while self.step < tc.steps:
                if self._stop_before_step(bar):
                    break
                pre = self.counters()  # the state a checkpoint of this step's start carries, if the step goes bad
                idx, groups = self.batches.next()
                # This process's rows of the global batch, augmented with the draws for the whole batch.
                x = augment_batch(self.source.fetch(idx[lo:hi]), cfg.data.flip, cfg.data.crop_pad, self.aug,
                                  rows=(lo, hi, len(idx)))
                x = x.to(device, non_blocking=True)
                if tc.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                batch_norm.save()  # the forward pass moves them; a bad batch must not leave NaN there
                extras: dict[str, Any] = {} if groups is None else {"groups": groups[lo:hi].to(device)}
                kl_weight = kl_warmup_weight(self.step, tc.kl_warmup_steps, tc.kl_warmup_start)
                if kl_weight != 1.0:  # a tensor: a compiled forward takes each new value without recompiling
                    extras["kl_weight"] = torch.tensor(kl_weight, dtype=torch.float32, device=device)

                loss, stats = net(x, self.noise, ctx.shard, **extras)
                self.opt.zero_grad(set_to_none=True)
                bad = None if ctx.all_true(bool(torch.isfinite(loss)), device) else "loss"
                if bad is None:
                    loss.backward()
                    grads = [p.grad for p in model.parameters() if p.grad is not None]
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf")))
                    bad = None if math.isfinite(grad_norm) and len(grads) > 0 else "gradient"
                if bad is None:
                    # The largest gradient norm since the last evaluation: spikes show here first.
                    self.grad_norm_max = max(self.grad_norm_max, grad_norm)
                    if self.guard is not None:
                        self.guard.save()
                    self.opt.step()
                    if self.guard is not None and not ctx.all_true(self.guard.weights_finite(), device):
                        self.guard.restore()
                        bad = "weights after the update"
                if bad is not None:  # the update is skipped: weights and statistics stay the last good step's
                    batch_norm.restore()
                    self._count_bad_step(bad, pre)
                    self.sched.step()
                    self.step += 1
                    continue
                self.bad_in_row = 0
                if self.ema is not None:
                    self.ema.update(model)
                self.sched.step()
                self.step += 1

                batch_bpd = _batch_mean(ctx, stats["bpd"], device)
                self.run_bpd = batch_bpd if self.run_bpd is None else 0.98 * self.run_bpd + 0.02 * batch_bpd
                batch_elbo = _batch_mean(ctx, stats["elbo_bpd"], device) if "elbo_bpd" in stats else None
                if batch_elbo is not None:
                    self.run_elbo = batch_elbo if self.run_elbo is None else 0.98 * self.run_elbo + 0.02 * batch_elbo
                self._report_step(bar, stats, batch_bpd, batch_elbo, grad_norm)

                # Every rank evaluates at the same steps (evaluate gathers sums): the time-based ones
                # when any rank's clock says so. A checkpoint goes with each, so its point survives a kill.
                t_aside = time.time()
                timed = self.eval_every_s is not None and not ctx.all_true(not self._evaluation_due(), device)
                evaluated = self.step % tc.eval_every == 0 or self.step == tc.steps or timed
                if evaluated:
                    self.last = self.evaluate()
                if self.step % tc.checkpoint_every == 0 or timed or (
                        tc.checkpoint_every_s is not None and time.time() - self.saved_time >= tc.checkpoint_every_s):
                    self.checkpoint(self.step, self.counters())
                self.aside += time.time() - t_aside
                if evaluated or not self.anneal_timed:
                    self._anneal_to_time_limit()
        finally:
            self.source.close()
        return self.finish(bar)

    # ---------------------------------------------------------------------------------------- before the loop

    def begin(self) -> None:
        """Continue from the checkpoint, or start afresh; write the run's config, environment and data
        record (only once the checkpoint is known to fit, so a failed resume changes nothing); call
        ``on_train_start``; on a fresh run, initialise ActNorm from data and evaluate step 0.

        Raises:
            CheckpointError: a checkpoint that does not fit. ConfigError: a resume with changed
                settings. CallbackError: ``on_train_start`` failed.
        """
        found = self.prepared.found
        eval_s = self._resume(*found) if found is not None else 0.0
        if self.main:  # the records an uninterrupted run has at this step, no more (none on a fresh start)
            kept = self.folder.truncate_metrics(self.step if found is not None else -1)
            if kept and kept[-1]["step"] == self.step:
                self.last = kept[-1]  # resuming a finished run evaluates nothing twice
            self._write_run_files()
        self.clock = EvalClock(start=self.wall(), end=self.wall(), cost=eval_s)
        self.saved_step, self.saved_time = (self.step if found is not None else None), time.time()
        self.hooks("on_train_start", self.state())
        if not self.ctx.all_true(self.hooks.ok, self.device):  # before anything is trained: nothing to save
            raise self.hooks.error(self.folder.path, None)
        if found is None:
            self._initialise()

    def _resume(self, path: Path, state: dict) -> float:
        """Load the checkpoint ``state`` read from ``path`` (everything checked before any of it is
        used: a file with a valid checksum may hold anything); returns the seconds of the last
        evaluation of the earlier session."""
        changed = check_resumed_config(state.get("config"), self.cfg, path, self.allow_changes)
        try:
            self.model.load_state_dict(checkpoint_model_state(path, state))
        except RuntimeError as e:
            raise CheckpointError(f"{path} was written for another architecture ({state_dict_mismatch(e)}); "
                                  f"resume with the run's own config.yaml") from None
        validate_training_state(path, state, optimizer=self.opt, batches=self.batches,
                                generators={"noise": self.noise, "aug": self.aug, "torch": None})
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"], path)
            else:  # only with --allow-changes: train.ema_decay is not a resumable setting
                self.ema.reset(self.model)
                log.warning("%s holds no averaged weights (written without train.ema_decay): the average starts "
                            "from its weights at step %s", path.name, state.get("step"))
        self.opt.load_state_dict(state["optimizer"])
        # LambdaLR copies each saved entry onto its live multiplier, unchecked: a list of another
        # length fails inside torch, a cosine anneal's fields must be numbers.
        saved = state["scheduler"].get("lr_lambdas")
        if not isinstance(saved, list) or len(saved) != len(self.sched.lr_lambdas):
            raise CheckpointError(f"{path} cannot be resumed: its scheduler's 'lr_lambdas' is not a list of "
                                  f"{len(self.sched.lr_lambdas)} entries")
        if isinstance(self.sched.lr_lambdas[0], CosineAnneal) and saved[0] is not None \
                and (why := CosineAnneal.invalid(saved[0])) is not None:
            raise CheckpointError(f"{path} cannot be resumed: {why}")
        self.sched.load_state_dict(state["scheduler"])
        if changed:
            apply_optimiser_settings(self.opt, self.sched, self.tc)
            log.warning("resuming with changed settings (--allow-changes): %s", "; ".join(changed))
        self.batches.load_state_dict(state["batches"])
        self.noise.set_state(state["rng"]["noise"])
        self.aug.set_state(state["rng"]["aug"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step = int(state["step"])
        anneal = self.anneal
        if anneal is not None and self.tc.time_limit_s is None and anneal.end != max(self.tc.steps, anneal.start + 1):
            anneal.retarget(self.step, self.tc.steps)  # train.steps changed: the anneal ends there now
        prog = state.get("progress", {})
        self.bad_in_row, self.skipped = int(prog.get("bad_in_row", 0)), int(prog.get("skipped", 0))
        self.run_bpd, self.elapsed = prog.get("run_bpd"), float(prog.get("elapsed_s", 0.0))
        self.run_elbo = prog.get("run_elbo_bpd")
        self.trained = float(prog.get("train_s", self.elapsed))
        self.grad_norm_max = float(prog.get("grad_norm_max", 0.0))
        log.info("resumed from %s at step %d", path.name, self.step)
        v = prog.get("eval_s")
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else 0.0

    def _write_run_files(self) -> None:
        """``config.yaml`` (the completed config), ``environment.json`` and ``data.json`` (what was read,
        beside how to read it: commands check it before they read the run's data again)."""
        p, folder = self.prepared, self.folder
        folder.write_config(self.cfg)
        env = environment_record(self.device)
        env["processes"] = self.ctx.world
        env["train_data"] = f"{getattr(p.train_data, 'name', type(p.train_data).__name__)}: {len(p.train_data)} images"
        env["test_data"] = f"{getattr(p.test_data, 'name', type(p.test_data).__name__)}: {len(p.test_data)} images"
        if self.departures:
            env["departures_from_paper"] = self.departures
        folder.write_environment(env)
        folder.write_data_record(DataRecord(p.data_origin, self.cfg.data.dataset, SplitRecord.of(p.train_data),
                                            SplitRecord.of(p.test_data)))

    def _initialise(self) -> None:
        """A fresh run's data-dependent initialisation (ActNorm) and step-0 evaluation, timed as parts
        of the set-up; a warning when one evaluation takes much of the time between two time-based ones."""
        tc, parts, train_data = self.tc, self.prepared.parts, self.prepared.train_data
        t_part = time.time()
        pick = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(tc.seed))[:tc.init_batch_size]
        init = head_images(train_data, None, pick) if self.source.streaming else self.source.fetch(pick)
        with torch.no_grad(), data_init(self.model):
            self.model.loss(init.to(self.device), self.noise)
        if self.ema is not None:
            self.ema.reset(self.model)
        parts["initialisation"] = time.time() - t_part
        # A run that trains gets a cheap first point: an untrained model's bits/dim on a few images; its
        # probes and switch score say nothing yet. On a CPU the full step-0 evaluation and probes were
        # 10-15% of a 20-minute run (issue 33). A run of 0 steps evaluates in full: it is its result.
        light = tc.steps > 0
        n_eval = min(len(self.eval_images), STEP0_IMAGES) if light else len(self.eval_images)
        log.info("set-up: data-dependent initialisation (ActNorm) on %d training images in %.1f s; step-0 evaluation "
                 "on %d test images%s", len(init), parts["initialisation"], n_eval,
                 f", then linear probes on {len(self.probe_sets[0])} training images"
                 if self.probe_sets is not None and not light else "")
        self.last = self.evaluate(first=light)
        parts["step-0 evaluation"] = self.clock.bpd
        if self.probe_sets is not None and not light:
            parts["step-0 probes"] = self.clock.probes
        if self.switch_set is not None and not light:
            parts["step-0 switch score"] = self.clock.switch
        every = self.eval_every_s
        share = tc.eval_share
        if self.main and every is not None and self.clock.cost > share * every:
            cost = self.clock.cost
            log.warning("an evaluation takes %s%.0f s (step 0%s), %.0f%% of the %.0f s between two time-based ones "
                        "(train.eval_every_s%s); at most %.0f%% of the time goes to them (train.eval_share), so two "
                        "are at least %.0f s apart: lower train.eval_images (%d) or train.probe_images (%d) for more "
                        "points", "at least " if light else "", cost,
                        f", its bits/dim on {n_eval} images scaled to {len(self.eval_images)}" if light else "",
                        100 * cost / every, every,
                        "" if tc.eval_every_s is not None else " unset: train.time_limit_s / 10", 100 * share,
                        cost / share, len(self.eval_images), tc.probe_images)

    def _progress_bar(self) -> Any:
        """A tqdm bar on rank 0 when progress is shown, else ``None``."""
        if not ((sys.stderr.isatty() if self.progress is None else self.progress) and self.main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.tc.steps, initial=self.step, unit="step", dynamic_ncols=True)

    # ---------------------------------------------------------------------------------------- in the loop

    def _stop_before_step(self, bar: Any) -> bool:
        """Whether the loop ends before the next step, decided alike on every rank: ``True`` at the time
        limit (``train.time_limit_s`` bounds the run's wall time, set-up included; the final
        evaluation, as long as the last one, is to fit in it too: a step right after an evaluation
        is taken only if its own final evaluation would still fit, else the run ends on that
        evaluation). After a signal or a failed callback it writes the checkpoint of the last
        finished step and raises.

        Raises:
            CallbackError: a callback failed (rank 0's). TrainingInterrupted: a signal arrived.
        """
        tc, ctx, device, step = self.tc, self.ctx, self.device, self.step
        evaluated = self.last.get("step") == step
        # Another step would need its own final evaluation, so the reserve holds even right after an
        # evaluation (stopping there ends the run on it); only the set-up's step 0 trains regardless.
        reserve = 0.0 if evaluated and step == 0 else self.clock.cost
        in_time = tc.time_limit_s is None or self.wall() + reserve <= tc.time_limit_s
        signals = self.prepared.signals
        if ctx.all_true(in_time and signals.signum is None and self.hooks.ok, device):
            return False
        if not ctx.all_true(self.hooks.ok, device):
            if bar is not None:
                bar.close()
            self.checkpoint(step, self.counters())
            raise self.hooks.error(self.folder.path, step)
        if not ctx.all_true(signals.signum is None, device):
            if bar is not None:
                bar.close()
            self.checkpoint(step, self.counters())
            signum = signals.signum
            name = signal.Signals(signum or signal.SIGTERM).name
            msg = (f"stopped by {name} after step {step}; its checkpoint is in {self.folder.file(RunFolder.CHECKPOINTS)}: "
                   f"continue with flowvae train --resume --run {self.folder.path}")
            # In train.log, where a scheduler's user looks; not on the terminal, where the command
            # prints the exception's message (it was printed twice).
            progress_log.info("%s", msg)
            raise TrainingInterrupted(msg, int(signum or signal.SIGTERM), step)
        log.info("time limit of %.0f s reached at step %d: wall time %.1f s (set-up included)%s", tc.time_limit_s,
                 step, self.wall(), f" and {reserve:.1f} s for the final evaluation" if reserve and not evaluated
                 else " (this step's evaluation is the final one)" if evaluated else "")
        if step == 0:
            log.warning("train.time_limit_s=%g was spent before the first step (set-up took %.1f s): nothing "
                        "was trained; raise the limit", tc.time_limit_s, self.t_loop - self.prepared.t_start)
        return True

    @property
    def anneal(self) -> CosineAnneal | None:
        """The cosine anneal of the learning rate (``train.lr_schedule=cosine``), else ``None``."""
        f = self.sched.lr_lambdas[0]
        return f if isinstance(f, CosineAnneal) else None

    def _anneal_to_time_limit(self) -> None:
        """Under a time limit, end the cosine anneal at the step the limit is estimated to allow: the
        time left, less the final evaluation's reserve and the periodic evaluations still to come
        (time-based ones take ``min(cost / train.eval_every_s, train.eval_share)`` of it, step-based
        ones their cost each), times this session's training speed (steps per second outside
        evaluations and checkpoints). Done once :data:`ANNEAL_CALIBRATION_S` of training have been
        timed, and again after every evaluation; every rank takes the mean estimate."""
        anneal, tc, ctx, device = self.anneal, self.tc, self.ctx, self.device
        if anneal is None or tc.time_limit_s is None:
            self.anneal_timed = True
            return
        training = time.time() - self.t_loop - self.aside
        if not self.anneal_timed and ctx.all_true(training < ANNEAL_CALIBRATION_S, device):
            return
        speed = (self.step - self.step0) / max(training, 1e-9)
        cost = self.clock.cost
        left_s = max(0.0, tc.time_limit_s - self.wall() - cost)
        if self.eval_every_s is not None:
            left_s *= 1.0 - min(cost / self.eval_every_s, tc.eval_share)
        steps = speed * left_s
        periodic = (self.step + steps) // tc.eval_every - self.step // tc.eval_every
        steps = max(0.0, steps - periodic * cost * speed)
        if ctx.enabled:
            steps = ctx.sum([steps], device)[0] / ctx.world
        end = min(tc.steps, self.step + int(steps))
        if end != anneal.end:
            log.info("cosine learning-rate schedule: it ends at step %d now, where train.time_limit_s=%g s is "
                     "estimated to stop the run (%.2f steps/s of training, %.0f s left)", end, tc.time_limit_s, speed,
                     tc.time_limit_s - self.wall())
            anneal.retarget(self.step, end)
        self.anneal_timed = True

    def _count_bad_step(self, what: str, pre: dict) -> None:
        """Count a skipped step (``what`` was not finite); the first of a series writes the checkpoint
        of the last good step, with ``pre``, its data order and RNG.

        Raises:
            FlowVAEError: ``train.max_bad_steps`` of them in a row.
        """
        self.skipped += 1
        self.bad_in_row += 1
        log.warning("non-finite %s at step %d: step skipped (%d in a row)", what, self.step + 1, self.bad_in_row)
        if self.bad_in_row == 1:
            self.checkpoint(self.step, pre)
        if self.bad_in_row >= self.tc.max_bad_steps:
            raise FlowVAEError(f"{self.bad_in_row} non-finite steps in a row at step {self.step + 1}; the run stopped. "
                               f"The checkpoint from before the first bad step is in "
                               f"{self.folder.file(RunFolder.CHECKPOINTS)}; lower train.lr or set train.grad_clip, "
                               f"then --resume --allow-changes")

    def _report_step(self, bar: Any, stats: dict, batch_bpd: float, batch_elbo: float | None,
                     grad_norm: float) -> None:
        """The progress bar, a log line every 100 steps, and the callbacks' ``on_step``."""
        if bar is not None:
            bar.update(1)
            bar.set_postfix(bpd=f"{self.run_bpd:.3f}", kl=f"{float(stats['kl']):.1f}")
        if self.step % 100 == 0:
            # With a departure the loss is not the ELBO (the auxiliary decoder's term alone is
            # thousands of nats), so the line gives both, lest the loss read as the bound.
            elbo = f" of the loss; negative ELBO {self.run_elbo:.4f}" if self.run_elbo is not None else ""
            aux = f", auxiliary decoder {float(stats['aux']):.1f} nats" if "aux" in stats else ""
            (progress_log if bar is not None else log).info(
                "step %d: train %.4f bits/dim (running mean%s), kl %.2f nats%s, max grad norm %.3g", self.step,
                self.run_bpd, elbo, float(stats["kl"]), aux, self.grad_norm_max)
        if self.hooks.callbacks:
            self.hooks("on_step", self.state(), {
                "train/bpd": batch_bpd, "train/bpd_running": self.run_bpd, "train/kl_nats": float(stats["kl"]),
                "train/lr": self.opt.param_groups[0]["lr"], "train/grad_norm": grad_norm,
                **({"train/elbo_bpd": batch_elbo} if batch_elbo is not None else {}),
                **({"train/aux_nats": float(stats["aux"])} if "aux" in stats else {})})

    def _evaluation_due(self) -> bool:
        """Whether ``eval_every_s`` of wall time have passed since the last evaluation started, and
        the training since it ended took at least ``(1 - eval_share) / eval_share`` times as long as
        it did: time-based evaluations take at most ``train.eval_share`` of the run. (Under a
        20-minute limit the ``mnist`` preset on 2 cores evaluates 2,000 test images, probes on 2,000
        more and the switch score in about 35 s: every 120 s, as before this share, is 30% of the run.)"""
        if self.eval_every_s is None:
            return False
        now, c, share = self.wall(), self.clock, self.tc.eval_share
        return now - c.start >= self.eval_every_s and now - c.end >= (c.end - c.start) * (1 - share) / share

    # ---------------------------------------------------------------------------------------- evaluation

    def evaluate(self, first: bool = False) -> dict:
        """Test bits/dim now, then the linear probes of ``train.probe_images`` and the switch score of
        ``train.switch_pairs``, appended to ``metrics.jsonl`` as a :class:`~flowvae.runs.metrics.MetricsRow`
        (fixed noise seed, so points are comparable; ``time_s`` is the run's wall time when the record
        is complete) and given to the callbacks' ``on_eval``. Under DDP each rank evaluates every
        world-th image and the sums are gathered. None of it draws from the training's random streams,
        and all of it runs in float32 whatever ``train.precision`` is.

        Args:
            first: the step-0 point of a run that trains: bits/dim on the first :data:`STEP0_IMAGES`
                evaluation images only, no probes and no switch score.

        Returns:
            The record, as a dict.
        """
        with self.model.full_precision(), self.reported_weights():
            return self._evaluate(first)

    def reported_weights(self) -> contextlib.AbstractContextManager[None]:
        """A block in which the model holds the weights the run reports: the average of
        ``train.ema_decay`` when it is set (:class:`~flowvae.training.averaging.WeightAverage`), else
        its own."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def _evaluate(self, first: bool) -> dict:
        tc, ctx, device, model, step = self.tc, self.ctx, self.device, self.model, self.step
        t_eval = time.time()
        self.clock.start = self.wall()
        images = self.eval_images[:STEP0_IMAGES] if first else self.eval_images
        mine = images[ctx.rank::ctx.world]
        part = evaluate_bpd(model, mine, tc.eval_k, device=device, seed=tc.seed + ctx.rank)
        n = len(images)
        elbo, iw, kl = (t / n for t in ctx.sum([part[k] * len(mine) for k in ("elbo_bpd", "iw_bpd", "kl")], device))
        self.clock.bpd = time.time() - t_eval
        log.info("step %d: test %.4f bits/dim (ELBO, k=%d), KL %.3f nats, %d images in %.1f s", step, elbo, tc.eval_k,
                 kl, n, self.clock.bpd)
        probes: dict[str, float] = {}
        z_collapsed = None
        if self.probe_sets is not None and not first:  # rank 0 only; the others wait at the next collective
            t_probe = time.time()
            trend = probe_trend(model, *self.probe_sets, seed=tc.seed)
            probes = {k[len(PROBE_PREFIX):]: v for k, v in trend.items()}
            # The KL of z beside its probe: a probe of a collapsed code measures the encoder only.
            z_kl = kl if "z" in probes and model.capabilities.code_prior else None
            if z_kl is not None:
                z_collapsed = is_collapsed(z_kl)
            self.clock.probes = time.time() - t_probe
            log.info("step %d: linear probes %s; %d training / %d test images in %.1f s", step,
                     ", ".join(f"{name} {100 * v:.2f}%" + (f" ({collapse_note(z_kl)})" if name == "z" and
                                                           z_kl is not None else "") for name, v in probes.items()),
                     len(self.probe_sets[0]), len(self.probe_sets[2]), self.clock.probes)
        switch: dict[str, Any] = self._switch_score() if self.switch_set is not None and not first else {}
        row = MetricsRow(
            step=step, train_bpd=self.run_bpd, train_elbo_bpd=self.run_elbo, test_elbo_bpd=elbo, test_iw_bpd=iw,
            test_kl=kl, test_k=tc.eval_k, test_n=n, lr=self.opt.param_groups[0]["lr"], skipped_steps=self.skipped,
            grad_norm_max=self.grad_norm_max or None, time_s=round(self.wall(), 2),
            # the weight of the update that led here (at step 0: of the first one)
            kl_weight=kl_warmup_weight(max(step - 1, 0), tc.kl_warmup_steps, tc.kl_warmup_start)
            if tc.kl_warmup_steps else None,
            probes=probes, z_collapsed=z_collapsed, **switch)
        self.clock.end, self.clock.cost = self.wall(), time.time() - t_eval
        if first:  # what a full evaluation will cost, for the time limit and the spacing of timed ones, as
            # far as it is known: the bits/dim part grows with the images; the probes are not known yet
            self.clock.cost *= len(self.eval_images) / max(n, 1)
        self.grad_norm_max = 0.0
        rec = row.to_dict()
        if self.main:
            self.folder.append_metrics(rec)
        if self.hooks.callbacks:
            was_training = model.training
            model.eval()  # no BatchNorm statistics move while callbacks look at the model
            samples = (_draw_samples(model, tc.sample_temperatures, tc.seed, device) if self.hooks.wants_samples
                       else None)
            self.hooks("on_eval", self.state(), dict(rec), samples)
            model.train(was_training)
        return rec

    def _switch_score(self) -> dict[str, float]:
        """The label-free switch score on :attr:`switch_set` (rank 0), as :class:`MetricsRow` fields. In
        eval mode and under a forked CPU random state, like the probes: it moves no training stream."""
        assert self.switch_set is not None
        t_switch, model, was_training = time.time(), self.model, self.model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                f = switch_frequencies(model, self.switch_set, len(self.switch_set) // 2, seed=self.tc.seed)
        finally:
            model.train(was_training)
        self.clock.switch = time.time() - t_switch
        log.info("step %d: switch score, %d pairs: low frequencies follow z %.1f%%, mean colour %.1f%%, high "
                 "frequencies follow v %.1f%% (flowvae switch) in %.1f s", self.step, f["pairs"],
                 100 * f["low_follows_z"], 100 * f["colour_follows_z"], 100 * f["high_follows_v"], self.clock.switch)
        return {f"switch_{k}": f[k] for k in ("low_follows_z", "colour_follows_z", "high_follows_v")}

    # ---------------------------------------------------------------------------------------- checkpoints

    def counters(self) -> dict:
        """Everything besides weights, optimiser and schedule that a step moves on (class docstring)."""
        return {"batches": self.batches.state_dict(),
                "rng": {"noise": self.noise.get_state(), "aug": self.aug.get_state(), "torch": torch.get_rng_state()},
                "progress": {"bad_in_row": self.bad_in_row, "skipped": self.skipped, "run_bpd": self.run_bpd,
                             **({"run_elbo_bpd": self.run_elbo} if self.run_elbo is not None else {}),
                             "grad_norm_max": self.grad_norm_max}}

    def checkpoint(self, label: int, moved: dict) -> None:
        """Everything a resumed run needs to continue bitwise, as of the end of step ``label``:
        weights, optimiser, schedule, and ``moved`` (:meth:`counters`: data order, every RNG stream,
        the counters), plus the run's clock; then ``on_checkpoint``. Rank 0 only, once per step."""
        self.saved_time = time.time()
        if self.saved_step == label or not self.main:
            return
        moved["progress"]["elapsed_s"] = self.wall()
        moved["progress"]["eval_s"] = self.clock.cost
        moved["progress"]["train_s"] = self.trained + (time.time() - self.t_loop if self.t_loop else 0.0)
        path = self.folder.save_checkpoint(label, {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "step": label, "config": self.cfg.to_dict(), **moved}, keep=self.tc.keep_checkpoints)
        self.saved_step = label
        self.hooks("on_checkpoint", self.state(label), path)

    # ---------------------------------------------------------------------------------------- the end

    def finish(self, bar: Any) -> dict:
        """The end of training: the final evaluation (unless this step has one) and checkpoint, then on
        rank 0 ``model.safetensors``, the sample grids, ``report.html`` and ``on_train_end``.

        Returns:
            The last evaluation record.

        Raises:
            CallbackError: a callback failed at the last step or in ``on_train_end``.
        """
        if bar is not None:
            bar.close()
        if not self.last or self.last.get("step") != self.step:
            self.last = self.evaluate()
        last = self.last
        if self.main and last.get("z_collapsed") and isinstance(last.get("probe_z"), float):
            log.warning("the code z ends collapsed: KL(q(z|x) || p(z)) %.3f nats per image, below %g, so its probe "
                        "(%.2f%%) reads the encoder's features of x, not information the decoder takes from z; "
                        "`flowvae switch` and `flowvae probe --protocol authors` tell the two apart",
                        last["test_kl"], COLLAPSED_KL_NATS, 100 * last["probe_z"])
        self.checkpoint(self.step, self.counters())
        if not self.hooks.ok:  # on_eval or on_checkpoint of the last step failed; its checkpoint is written
            raise self.hooks.error(self.folder.path, self.step)
        if self.ema is not None:  # training is over: from here on the model is the one the run reports
            self.ema.copy_to(self.model)
        self.model.eval()
        if not self.main:
            return last
        self._write_outputs()
        # The figure of the report and the model card (the last record's time_s), then what followed it.
        done_at = float(last["time_s"]) if isinstance(last.get("time_s"), (int, float)) else self.wall()
        log.info("done: %d steps in %.1f s of wall time (set-up included, summed over resumed sessions; time_s of the "
                 "last evaluation), then %.1f s for the final checkpoint, samples and report; run folder %s",
                 self.step, done_at, max(0.0, self.wall() - done_at), self.folder.path)
        self.hooks("on_train_end", self.state(), dict(last))
        if not self.hooks.ok:
            raise self.hooks.error(self.folder.path, None)
        return last

    def _write_outputs(self) -> None:
        """``model.safetensors``, ``samples/`` (the grids ``flowvae sample RUN`` draws, and which of them
        saturated, for the report and the model card's choice of grid) and ``report.html``."""
        model, run, tc = self.model, self.folder.path, self.tc
        _save_final(model, run)
        with model.full_precision():  # as `flowvae sample RUN` draws them
            grids = _draw_grids(model, tc.sample_temperatures, tc.seed, self.device)
        samples = self.folder.file(RunFolder.SAMPLES)
        paths = [save_grid(images, samples / f"samples_t{t:.2f}.png", nrow=8,
                           scale=max(1, 64 // self.cfg.model.image_size), root=run) for t, images, _ in grids]
        write_sample_stats(samples, [(p, st) for p, (_, _, st) in zip(paths, grids)], root=run)
        try:
            write_report(run)
        except Exception as e:  # noqa: BLE001 - a report problem must not fail a finished training run
            log.warning("could not write report.html: %s", e)

    # ---------------------------------------------------------------------------------------- the run's state

    def wall(self) -> float:
        """The run's wall time in seconds (see :func:`train`): since ``train`` was called in this
        session, set-up included, plus the earlier sessions' up to their last checkpoint."""
        return self.elapsed + time.time() - self.prepared.t_start

    def state(self, at: int | None = None) -> TrainState:
        """What callbacks see: the run as of step ``at`` (default: now)."""
        return TrainState(step=self.step if at is None else at, epoch=getattr(self.batches, "epoch", None),
                          run=self.folder.path, config=self.cfg, model=self.model, rank=self.ctx.rank,
                          world_size=self.ctx.world, resumed=self.prepared.found is not None,
                          averaged=self.ema.avg if self.ema is not None else None)


# -------------------------------------------------------------------------------------------------- helpers

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
    if tc.lr_schedule != "exponential":
        out.append(f"{tc.lr_schedule} learning-rate schedule (the paper's decays exponentially)")
    return [*out, *cfg.model.departures()]  # the model's own: the kind knows them


def _log_plan(cfg: Config, n_train: int, n_eval: int, eval_every_s: float | None) -> None:
    """Log what the run is set to do: steps, batch and the epochs they make (warning when there are
    more than :data:`MANY_EPOCHS`: a small image set is then seen so often that the model learns
    it by heart), and when it evaluates."""
    tc = cfg.train
    epochs = tc.steps * tc.batch_size / max(1, n_train)
    limit = f"; train.time_limit_s={tc.time_limit_s:g} s of wall time may stop it earlier" if tc.time_limit_s else ""
    timed = (f" and every {eval_every_s:.0f} s of wall time (train.eval_every_s"
             f"{'' if tc.eval_every_s is not None else ': train.time_limit_s / 10'}; at most "
             f"{100 * tc.eval_share:.0f}% of the time, train.eval_share), with a checkpoint"
             if eval_every_s is not None else "")
    averaged = (f"; evaluation, samples and model.safetensors use the weights averaged with decay {tc.ema_decay:g} "
                f"(train.ema_decay; null: the last update's)" if tc.ema_decay else "")
    log.info("plan: %s steps of batch %d, %s epochs of the %s training images%s; evaluation on %s test images "
             "every %s steps%s%s", f"{tc.steps:,}", tc.batch_size, f"{epochs:,.3g}", f"{n_train:,}", limit,
             f"{n_eval:,}", f"{tc.eval_every:,}", timed, averaged)
    if epochs > MANY_EPOCHS:
        log.warning("%s steps of batch %d pass over the %s training images %s times: expect the model to overfit "
                    "them (test bits/dim rising while train bits/dim falls); lower --steps or train on more images",
                    f"{tc.steps:,}", tc.batch_size, f"{n_train:,}", f"{epochs:,.0f}")


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


def _save_final(model: GenerativeModel, run: str | Path) -> None:
    """``model.safetensors`` of ``run`` (:meth:`flowvae.runs.RunFolder.write_weights`).

    Raises:
        CheckpointError: a link in its place.
    """
    RunFolder(run).write_weights(model)


def __getattr__(name: str) -> Any:
    # load_data moved below the training layer (flowvae.runs.data): a deprecated alias for one release.
    if name == "load_data":
        from ..runs.data import load_data

        warnings.warn("flowvae.training.trainer.load_data moved to flowvae.runs.data.load_data; import it from there "
                      "(this alias goes in the next release)", DeprecationWarning, stacklevel=2)
        return load_data
    raise AttributeError(f"module 'flowvae.training.trainer' has no attribute {name!r}")
