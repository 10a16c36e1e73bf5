"""The training pipeline: what :func:`flowvae.training.train` does around the
:class:`~flowvae.training.trainer.Trainer`, one small function a step.

:func:`prepare` composes them, in this order, and hands the trainer a :class:`PreparedRun`:

1. :func:`own_config`: the run's own, validated copy of the caller's config (never changed behind
   the caller's back);
2. :func:`join_processes`: the process group under ``torchrun``;
3. :func:`locked`: the run folder's lock (a folder that a failed set-up created is removed again);
4. :func:`configure_torch`: device, threads, determinism, the seed;
5. :func:`find_checkpoint`: on ``resume``, the checkpoint to continue from, read before the model is
   built, and :func:`adopt_filled_fields` from the run's ``config.yaml``;
6. :func:`open_data`: the training and test images, checked against the model;
7. :func:`complete_config` (a fresh run: ``ModelSettings.for_training``) and :func:`build_model`;
8. :func:`check_run_folder`, then :func:`train_log` (``train.log``), the callbacks' ``close``, the
   process group's clean-up and the signal handlers (:class:`~flowvae.training.signals.StopSignals`)
   for as long as the trainer runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .. import safe_io
from ..config import Config, TrainConfig, config_from_dict
from ..data import ImageData
from ..data.registry import open_split
from ..devices import native_bf16, resolve_device, tune_cpu_allocator
from ..errors import CheckpointError, ConfigError
from ..models.base import GenerativeModel, create_model
from ..presets import cpu_size_warning
from ..runs.data import check_data_fits, load_data
from ..runs.folder import RunFolder, RunReader
from .callbacks import Callback, Hooks
from .distributed import DistContext, abandon, cleanup, setup
from .loggers import loggers_for
from .signals import StopSignals

__all__ = ["PreparedRun", "adopt_filled_fields", "build_model", "check_run_folder", "complete_config",
           "configure_torch", "find_checkpoint", "join_processes", "locked", "open_data", "own_config", "prepare",
           "speed_modes", "train_log"]

log = logging.getLogger("flowvae.train")


@dataclass
class PreparedRun:
    """Everything the trainer needs, made by :func:`prepare`.

    Attributes:
        cfg: the run's config: a validated copy of the caller's, completed for training.
        folder: the run folder (locked by this process, rank 0).
        model: the model on ``device``, not yet trained (or initialised) on a fresh run.
        train_data, test_data: the images (:class:`~flowvae.data.ImageData` or map-style datasets).
        data_origin: ``"config"`` (read as ``cfg.data`` says) or ``"python"`` (passed to ``train``).
        device: where the model runs.
        ctx: this process's place in a data-parallel run.
        hooks: the callbacks (rank 0's; none on other ranks).
        signals: the installed signal handlers.
        found: ``(path, state)`` of the checkpoint a resume continues from, or ``None``.
        t_start: when ``train`` was called (``time.time()``): the run's wall time counts from there.
        parts: seconds each part of the set-up took so far, by name, for its log line.
    """

    cfg: Config
    folder: RunFolder
    model: GenerativeModel
    train_data: Any
    test_data: Any
    data_origin: Literal["config", "python"]
    device: torch.device
    ctx: DistContext
    hooks: Hooks
    signals: StopSignals
    found: tuple[Path, dict] | None
    t_start: float
    parts: dict[str, float]


@contextlib.contextmanager
def prepare(cfg: Config, run: str | Path, *, resume: bool = False, train_data: Any = None, test_data: Any = None,
            callbacks: Sequence[Callback] | None = None) -> Iterator[PreparedRun]:
    """The run set up for training, for the duration of the ``with`` block (the arguments are
    :func:`~flowvae.training.train`'s, whose docstring says what each does and raises). On the way
    out the signal handlers are put back, the process group left (at once after an error), the
    callbacks closed, ``train.log`` closed and the lock released."""
    t_start = time.time()  # the run's wall time counts from here (train's docstring)
    folder = RunFolder(run)
    user = check_callbacks(callbacks)
    cfg = own_config(cfg)
    ctx, device_name = join_processes(cfg)
    hooks = Hooks([*loggers_for(cfg.train.loggers, user), *user] if ctx.is_main else [])
    if not ctx.is_main:
        logging.getLogger("flowvae").setLevel(logging.WARNING)
    with locked(folder, ctx):
        if ctx.is_main:
            folder.remove_temporary_files()
        device = configure_torch(cfg, device_name)
        found = find_checkpoint(folder, resume)
        if found is not None:
            cfg = adopt_filled_fields(cfg, folder)
        parts: dict[str, float] = {}
        with _timed(parts, "data"):
            train_data, test_data, origin = open_data(cfg, train_data, test_data)
        log.info("set-up: data in %.1f s: %d training and %d test images", parts["data"], len(train_data),
                 len(test_data))
        with _timed(parts, "model"):
            if found is None:
                cfg = complete_config(cfg, len(train_data))
            cfg, model = build_model(cfg, device, ctx, fresh=found is None,
                                     saved=found[1].get("config") if found is not None else None)
        log.info("set-up: %s model of %s parameters built in %.1f s, on %s%s", model.kind,
                 f"{sum(p.numel() for p in model.parameters()):,}", parts["model"], device,
                 f" with {torch.get_num_threads()} threads" if device.type == "cpu" else "")
        check_run_folder(folder, resume)
        # Left in reverse order: the signal handlers, the process group after an error, the
        # callbacks, train.log, then the process group after success (its barrier comes last).
        with (_left_at_the_end(ctx), train_log(folder, ctx), contextlib.closing(hooks), _abandoned_on_error(ctx),
              StopSignals() as signals):
            yield PreparedRun(cfg, folder, model, train_data, test_data, origin, device, ctx, hooks, signals, found,
                              t_start, parts)


# ---------------------------------------------------------------------------------------------- the steps

def check_callbacks(callbacks: Sequence[Callback] | None) -> list[Callback]:
    """``callbacks`` as a list.

    Raises:
        ConfigError: one that is not a :class:`~flowvae.training.Callback`.
    """
    user = list(callbacks or [])
    for cb in user:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be flowvae.training.Callback objects, got {type(cb).__name__}")
    return user


def own_config(cfg: Config) -> Config:
    """The run's own copy of ``cfg``, every field checked once more (the caller may have set fields
    by assignment since it was made): later steps complete the copy, never the caller's object.

    Raises:
        ConfigError: a field of ``cfg`` that is not valid.
    """
    return config_from_dict(cfg.to_dict())


def join_processes(cfg: Config) -> tuple[DistContext, str]:
    """Join the process group under ``torchrun`` (:func:`~flowvae.training.distributed.setup`);
    returns the context and the device name.

    Raises:
        ConfigError: a global batch that does not divide over the processes; too few GPUs.
    """
    ctx, device_name = setup(cfg.train.device)
    if ctx.enabled and cfg.train.batch_size % ctx.world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is the global batch and must divide evenly "
                          f"over {ctx.world} processes")
    return ctx, device_name


@contextlib.contextmanager
def locked(folder: RunFolder, ctx: DistContext) -> Iterator[None]:
    """Hold the run folder's lock (rank 0) for the ``with`` block; a folder the block created is
    removed again when it fails before writing anything (``rmdir``: only an empty one).

    Raises:
        CheckpointError: another process trains in the folder.
    """
    created = not folder.path.exists()
    lock = folder.lock().acquire() if ctx.is_main else None
    try:
        yield
    except BaseException:
        if lock is not None and created:
            lock.release()
            with contextlib.suppress(OSError):
                folder.path.rmdir()
        raise
    finally:
        if lock is not None:
            lock.release()


def configure_torch(cfg: Config, device_name: str) -> torch.device:
    """The device, with torch set as ``cfg.train`` says (CPU threads and allocator, deterministic
    algorithms) and seeded with ``train.seed``.

    Raises:
        ConfigError: a device that is not available.
    """
    tc = cfg.train
    device = resolve_device(device_name)
    if device.type == "cpu":
        tune_cpu_allocator()
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(tc.seed)
    return device


def find_checkpoint(folder: RunFolder, resume: bool) -> tuple[Path, dict] | None:
    """With ``resume``, the newest checkpoint that passes its checksum (``None``, with a warning, when
    a kill left only checkpoints without their checksum file: the run starts over). Read before the
    model is built: a fresh start must complete the config and load stage 1 of the multi-stage
    model; a resume must not.

    Raises:
        CheckpointError: every checkpoint is damaged (it may be all that is left of a long run, so it
            is not silently replaced).
    """
    if not resume:
        return None
    skipped: list[tuple[Path, str]] = []
    found = folder.latest_checkpoint(skipped)
    if found is None:
        damaged = [(p, why) for p, why in skipped if "has no checksum file" not in why]
        if damaged:
            raise CheckpointError(f"--resume found no usable checkpoint: {damaged[0][1]}. Restore the file, or "
                                  f"delete the damaged checkpoints to train {folder.path} again from step 0")
        log.warning("no usable checkpoint in %s: starting from step 0", folder.path)
    return found


def adopt_filled_fields(cfg: Config, folder: RunFolder) -> Config:
    """``cfg`` with the model fields a fresh run filled in (:func:`complete_config`: the beta-TCVAE's
    dataset size, the multi-stage model's stage-1 config) taken from the run's ``config.yaml`` where
    ``cfg`` leaves them unset, so that resuming with the preset the run started from rebuilds the
    same model. A new object; ``cfg`` is left as it is.

    Raises:
        CheckpointError: a ``config.yaml`` that is a link or not a regular file. ConfigError: one
            that does not parse.
    """
    if not folder.is_run():
        return cfg
    saved = folder.read_config().model.to_dict()
    now = cfg.model.to_dict()
    if saved.get("kind") != now.get("kind"):
        return cfg
    filled = {k: v for k, v in saved.items() if now.get(k) is None and v is not None}
    if not filled:
        return cfg
    d = cfg.to_dict()
    d["model"].update(filled)
    return dataclasses.replace(cfg, model=config_from_dict(d).model)


def open_data(cfg: Config, train_data: Any = None, test_data: Any = None) -> tuple[Any, Any, Literal["config", "python"]]:
    """``(train, test, origin)``: the datasets passed to ``train`` (origin ``"python"``), or those
    ``cfg.data`` names (``"config"``; a large image folder is read from disk as training needs it).

    Raises:
        ConfigError: only one of the two passed, or one that is not a map-style dataset.
        DataError: missing or unreadable data, or images that do not fit ``cfg.model``.
    """
    if (train_data is None) != (test_data is None):
        raise ConfigError("pass both train_data and test_data, or neither (then cfg.data names them)")
    if train_data is None:
        train_data = open_split(cfg.data, "train")
        check_data_fits(getattr(train_data, "name", "train"), train_data, cfg)
        return train_data, load_data(cfg, "test"), "config"
    for name, d in (("train_data", train_data), ("test_data", test_data)):
        if not isinstance(d, ImageData) and (not hasattr(d, "__getitem__") or not hasattr(d, "__len__")):
            raise ConfigError(f"{name} must be a map-style dataset (with __len__ and __getitem__) or "
                              f"flowvae ImageData, got {type(d).__name__}")
        check_data_fits(f"{name} ({type(d).__name__})", d, cfg)
    return train_data, test_data, "python"


def complete_config(cfg: Config, n_train: int) -> Config:
    """``cfg`` with its model config completed for a fresh run on ``n_train`` images
    (``ModelSettings.for_training``, reading other run folders through :class:`~flowvae.runs.RunReader`).

    Raises:
        ConfigError: what the kind's ``for_training`` raises (e.g. no stage-1 run).
    """
    return dataclasses.replace(cfg, model=cfg.model.for_training(n_train, RunReader()))


def build_model(cfg: Config, device: torch.device, ctx: DistContext, fresh: bool,
                saved: Any = None) -> tuple[Config, GenerativeModel]:
    """The model of ``cfg`` on ``device``, with the training's precision, recomputation and memory
    format (and SyncBatchNorm for data-parallel GPU runs); on a ``fresh`` run its frozen parts loaded
    (``prepare_training``). Returned with ``cfg``, whose ``train.precision=auto`` and
    ``train.channels_last=None`` are decided (:func:`speed_modes`; ``saved``, the config mapping of
    the checkpoint a resume continues from, keeps the earlier session's choice).

    Raises:
        ConfigError: an architecture that cannot be built, KL warm-up for a model without a KL term,
            or a switch score for a model without a global and a local code.
    """
    tc = cfg.train
    model = create_model(cfg)
    if tc.kl_warmup_steps and not model.kl_term:
        raise ConfigError(f"train.kl_warmup_steps applies to models with a KL term; a {model.kind!r} model "
                          f"has none: leave it at 0")
    if tc.switch_pairs and not model.capabilities.global_local:
        raise ConfigError(f"train.switch_pairs applies to the kinds with a global and a local code; a "
                          f"{model.kind!r} model has none: leave it unset or 0")
    if fresh:
        model.prepare_training(RunReader())
    tc = speed_modes(tc, model, device, saved, announce=ctx.is_main)
    cfg = dataclasses.replace(cfg, train=tc)
    model = model.to(device).set_precision(str(tc.precision)).set_recompute(tc.recompute)
    if ctx.is_main and (warning := cpu_size_warning(model, device)):
        log.warning("%s", warning)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    if ctx.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return cfg, model


def speed_modes(tc: TrainConfig, model: GenerativeModel, device: torch.device, saved: Any = None,
                announce: bool = True) -> TrainConfig:
    """``tc`` with ``precision="auto"`` and ``channels_last=None`` decided for ``model`` on ``device``.

    ``auto`` is ``bf16`` where the device has bfloat16 in hardware (:func:`~flowvae.devices.native_bf16`)
    and the kind has the ``bf16`` capability, else ``fp32``; on a resume (``saved``: the checkpoint's
    config mapping) it is what the run chose when it started, so that it continues bit for bit on
    another machine. ``channels_last=None`` follows the precision: bf16 convolutions are fast in
    channels-last on CPUs (``docs/speed.md``: 1.5-1.7 times float32 NCHW on the project's CPU, same
    bits/dim), and float32 ones are left as they are. Evaluation runs in float32 whatever is chosen
    (:meth:`~flowvae.models.base.GenerativeModel.full_precision`). Logs the choice and how to change it.
    """
    precision, channels_last = tc.precision, tc.channels_last
    before = saved.get("train", {}) if isinstance(saved, dict) else {}
    before = before if isinstance(before, dict) else {}
    if precision == "auto":
        advice = "train.precision=fp32 trains in float32"
        if before.get("precision") in ("fp32", "bf16"):
            precision, why = before["precision"], "as when the run started"
        elif not model.capabilities.bf16:
            precision, why, advice = "fp32", f"a {model.kind!r} model has no bfloat16 mode", ""
        elif (hardware := native_bf16(device)) is not None:
            precision, why = "bf16", hardware
        else:
            precision, why = "fp32", f"this {device.type} has no bfloat16 in hardware"
            advice = "train.precision=bf16 forces bfloat16, emulated and slower here"
        if announce:
            log.info("train.precision=auto: %s (%s)%s; evaluation stays float32%s",
                     "bfloat16" if precision == "bf16" else "float32", why,
                     " with channels-last" if channels_last is None and precision == "bf16" else "",
                     f". {advice}" if advice else "")
    if channels_last is None:
        before_cl = before.get("channels_last")
        channels_last = before_cl if isinstance(before_cl, bool) else precision == "bf16"
    return tc.replace(precision=precision, channels_last=channels_last)


def check_run_folder(folder: RunFolder, resume: bool) -> None:
    """Refuse to start a fresh run in a folder that already holds one.

    Raises:
        CheckpointError: the folder holds final weights or a checkpoint and ``resume`` is false.
    """
    if not resume and folder.has_training():
        raise CheckpointError(f"run folder {folder.path} already holds a training run; pass --resume to continue "
                              f"it or choose another --run folder (nothing was changed)")


class _LogFileHandler(logging.StreamHandler):
    """A StreamHandler on a file opened with O_NOFOLLOW (:func:`flowvae.safe_io.open_for_log`)
    that closes the file when closed, as :class:`logging.FileHandler` does."""

    def close(self) -> None:
        try:
            self.flush()
            self.stream.close()
        finally:
            super().close()


@contextlib.contextmanager
def train_log(folder: RunFolder, ctx: DistContext) -> Iterator[None]:
    """On rank 0, ``checkpoints/`` made and what the ``flowvae`` logger lets through appended to
    ``train.log`` for the ``with`` block; the periodic progress lines (logger ``flowvae.progress``)
    go to the file only while a progress bar owns the terminal."""
    if not ctx.is_main:
        yield
        return
    folder.file(RunFolder.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    handler = _LogFileHandler(safe_io.open_for_log(folder.file(RunFolder.LOG), root=folder.path))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("flowvae").addHandler(handler)
    file_only = logging.getLogger("flowvae.progress")
    file_only.propagate = False
    file_only.setLevel(logging.INFO)
    file_only.addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("flowvae").removeHandler(handler)
        file_only.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _abandoned_on_error(ctx: DistContext) -> Iterator[None]:
    """Leave the process group at once when the block fails (another rank may never reach a barrier)."""
    try:
        yield
    except BaseException as e:
        abandon(ctx, e)
        raise


@contextlib.contextmanager
def _left_at_the_end(ctx: DistContext) -> Iterator[None]:
    """Leave the process group, after a final barrier, when the block succeeds."""
    yield
    cleanup(ctx)


@contextlib.contextmanager
def _timed(parts: dict[str, float], name: str) -> Iterator[None]:
    """Seconds the block took, as ``parts[name]``."""
    t = time.time()
    yield
    parts[name] = time.time() - t
