"""Training callbacks and the ready loggers: which hooks run when, with what, and what a failing one does.

Neither ``wandb`` nor ``tensorboard`` is needed: fake modules stand in for them (``sys.modules``),
recording every call. One test reads a real event file back when ``tensorboard`` is installed.
The training runs are the tiny digits flow of conftest (4 steps, an evaluation and a checkpoint
every 2 steps, samples at two temperatures).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae.config import TrainConfig, apply_overrides, load_config
from flowvae.errors import ConfigError
from flowvae.imaging import make_grid
from flowvae.presets import get_preset
from flowvae.runs.checkpoints import list_checkpoints, load_latest_checkpoint
from flowvae.training import Callback, CallbackError, TensorBoardLogger, TrainState, WandbLogger, train
from flowvae.training.loggers import LOGGERS, loggers_for
from helpers.tiny import FLOW, TRAIN, run_processes, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

TEMPS = [0.7, 1.0]


def _cfg(*extra: str):
    return tiny_config("flowvae", "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2",
                       f"train.sample_temperatures={TEMPS}", "train.loggers=[]", *extra)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Recorder(Callback):
    """Records every call, with what can only be checked while it happens."""

    wants_samples = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, TrainState, Any]] = []

    def on_train_start(self, state):
        self.calls.append(("on_train_start", state, None))

    def on_step(self, state, metrics):
        self.calls.append(("on_step", state, {"metrics": metrics, "training": state.model.training}))

    def on_eval(self, state, metrics, samples):
        self.calls.append(("on_eval", state, {"metrics": metrics, "samples": samples,
                                              "training": state.model.training}))

    def on_checkpoint(self, state, path):
        self.calls.append(("on_checkpoint", state, {"path": path, "complete": path.is_file() and
                                                    path.with_suffix(".pt.sha256").is_file()}))

    def on_train_end(self, state, metrics):
        self.calls.append(("on_train_end", state, {"metrics": metrics}))

    def close(self):
        self.calls.append(("close", None, None))

    def names(self) -> list[tuple[str, int | None]]:
        return [(name, None if state is None else state.step) for name, state, _ in self.calls]

    def of(self, hook: str) -> list[tuple[TrainState, Any]]:
        return [(state, info) for name, state, info in self.calls if name == hook]


# ----------------------------------------------------------------------------------------------
# fake wandb and tensorboard

class FakeWriter:
    """torch.utils.tensorboard.SummaryWriter: records its calls in ``FakeWriter.made``."""

    made: list[FakeWriter] = []

    def __init__(self, log_dir: str, purge_step: int | None = None):
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars: list[tuple[str, float, int]] = []
        self.images: list[tuple[str, np.ndarray, int, str]] = []
        self.flushes = self.closes = 0
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_image(self, tag, img, step, dataformats="CHW"):
        self.images.append((tag, img, step, dataformats))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closes += 1


class FakeWandbRun:
    def __init__(self, kwargs: dict):
        self.kwargs, self.id = kwargs, "fake-id-1"
        self.config_updates: list[tuple[dict, bool]] = []
        self.logged: list[tuple[dict, int]] = []
        self.summary: dict = {}
        self.finished: list[int | None] = []
        run = self

        class Config:
            def update(self, d, allow_val_change=False):
                run.config_updates.append((d, allow_val_change))
        self.config = Config()

    def log(self, data, step=None):
        self.logged.append((data, step))

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


class FakeImage:
    def __init__(self, data, caption=None):
        self.data = data


def fake_wandb() -> types.ModuleType:
    mod = types.ModuleType("wandb")
    mod.runs = []  # type: ignore[attr-defined]

    def init(**kwargs):
        mod.runs.append(FakeWandbRun(kwargs))  # type: ignore[attr-defined]
        return mod.runs[-1]  # type: ignore[attr-defined]
    mod.init, mod.Image = init, FakeImage  # type: ignore[attr-defined]
    return mod


def fake_tensorboard() -> types.ModuleType:
    mod = types.ModuleType("torch.utils.tensorboard")
    mod.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def fakes(monkeypatch):
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake_tensorboard())
    monkeypatch.setattr(FakeWriter, "made", [])
    return wandb


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished 4-step run with a Recorder and both (fake) loggers from ``train.loggers``."""
    run = tmp_path_factory.mktemp("callbacks") / "run"
    rec = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        wandb = fake_wandb()
        mp.setitem(sys.modules, "wandb", wandb)
        mp.setitem(sys.modules, "torch.utils.tensorboard", fake_tensorboard())
        mp.setattr(FakeWriter, "made", [])
        cfg = _cfg("train.loggers=[tensorboard,wandb]")
        last = train(cfg, run, progress=False, callbacks=[rec])
        writers = list(FakeWriter.made)
    # the run's config: the caller's with the speed modes decided (train.channels_last unset -> off in fp32)
    assert cfg.train.channels_last is None and cfg.train.precision == "fp32"
    run_cfg = dataclasses.replace(cfg, train=cfg.train.replace(channels_last=False))
    return types.SimpleNamespace(run=run, rec=rec, last=last, cfg=cfg, run_cfg=run_cfg, wandb=wandb, writers=writers)


# ----------------------------------------------------------------------------------------------
# the hooks in a training run

def test_hooks_are_called_in_order_once_each(recorded):
    assert recorded.rec.names() == [
        ("on_train_start", 0), ("on_eval", 0),
        ("on_step", 1), ("on_step", 2), ("on_eval", 2), ("on_checkpoint", 2),
        ("on_step", 3), ("on_step", 4), ("on_eval", 4), ("on_checkpoint", 4),
        ("on_train_end", 4), ("close", None)]


def test_state_describes_the_run(recorded):
    for name, state, _ in recorded.rec.calls[:-1]:
        # the run's own validated copy: the caller's config with what it left to the run decided,
        # never the caller's object
        assert state.run == recorded.run and state.config == recorded.run_cfg, name
        assert state.config is not recorded.cfg, name
        assert (state.rank, state.world_size, state.resumed, state.epoch) == (0, 1, False, 0), name
        with pytest.raises(AttributeError):  # read-only
            state.step = 99  # type: ignore[misc]
    assert all(info["training"] for _, info in recorded.rec.of("on_step"))
    assert not any(info["training"] for _, info in recorded.rec.of("on_eval"))  # eval mode while looked at


def test_step_metrics_have_the_documented_keys(recorded):
    for _, info in recorded.rec.of("on_step"):
        m = info["metrics"]
        assert set(m) == {"train/bpd", "train/bpd_running", "train/kl_nats", "train/lr", "train/grad_norm"}
        assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
        assert 4 < m["train/bpd"] < 12 and m["train/grad_norm"] > 0  # bits/dim of 8-bit digits, not nats


def test_eval_metrics_are_the_metrics_jsonl_records(recorded):
    written = _records(recorded.run)
    assert [info["metrics"] for _, info in recorded.rec.of("on_eval")] == written
    assert [r["step"] for r in written] == [0, 2, 4]
    (_, end), = recorded.rec.of("on_train_end")
    assert end["metrics"] == recorded.last == written[-1]


def test_sample_grids_are_uint8_at_each_temperature_and_the_last_equal_the_png(recorded):
    for _, info in recorded.rec.of("on_eval"):
        samples = info["samples"]
        assert list(samples) == TEMPS
        for x in samples.values():
            assert x.dtype == torch.uint8 and x.shape == (64, 1, 8, 8) and x.device.type == "cpu"
    last = recorded.rec.of("on_eval")[-1][1]["samples"]
    for t, x in last.items():
        png = np.array(Image.open(recorded.run / "samples" / f"samples_t{t:.2f}.png"))
        grid = make_grid(x, nrow=8)[:, :, 0]
        assert np.array_equal(png, np.kron(grid, np.ones((8, 8), np.uint8)))  # save_grid's 8x nearest scale


def test_on_checkpoint_gets_the_complete_file(recorded):
    calls = recorded.rec.of("on_checkpoint")
    assert [info["path"] for _, info in calls] == [recorded.run / "checkpoints" / f"ckpt-{s:08d}.pt" for s in (2, 4)]
    assert all(info["complete"] for _, info in calls)
    assert load_latest_checkpoint(recorded.run / "checkpoints")[1]["step"] == 4


def test_tensorboard_logger_writes_eval_scalars_and_sample_images(recorded):
    w, = recorded.writers
    assert (w.log_dir, w.purge_step) == (str(recorded.run / "tensorboard"), None)
    written = _records(recorded.run)
    assert sorted(w.scalars) == sorted((f"test/{k}", r[f"test_{k}"], r["step"])
                                       for r in written for k in ("elbo_bpd", "iw_bpd", "kl"))
    assert [(tag, step) for tag, _, step, _ in w.images] == [
        (f"samples/t{t:.2f}", s) for s in (0, 2, 4) for t in TEMPS]
    for _, img, _, fmt in w.images:
        assert fmt == "HWC" and img.dtype == np.uint8 and img.shape == (73, 73, 1)  # 8 x (8 + 1) + 1
    assert (w.flushes, w.closes) == (2, 1)  # at each checkpoint; closed once


def test_wandb_logger_inits_in_the_run_folder_and_logs_evals(recorded):
    r, = recorded.wandb.runs
    assert r.kwargs == {"dir": str(recorded.run), "project": None, "name": "run"}
    assert r.config_updates == [(recorded.run_cfg.to_dict(), True)]
    assert (recorded.run / "wandb" / "flowvae-run-id").read_text() == "fake-id-1"
    written = _records(recorded.run)
    assert [step for _, step in r.logged] == [0, 2, 4]  # every=100: no step metrics in 4 steps
    for (data, _), rec in zip(r.logged, written):
        assert data["test/elbo_bpd"] == rec["test_elbo_bpd"] and data["test/kl"] == rec["test_kl"]
        for t in TEMPS:
            assert data[f"samples/t{t:.2f}"].data.shape == (73, 73)  # grey: 2-D for PIL
    assert r.summary["test/elbo_bpd"] == written[-1]["test_elbo_bpd"]
    assert r.finished == [None]  # finished once, as a success


def test_resume_calls_on_step_only_for_the_new_steps(recorded, tmp_path, fakes):
    run = tmp_path / "resumed"
    shutil.copytree(recorded.run, run)
    cfg = load_config(run / "config.yaml")
    cfg.train.steps = 6
    rec = Recorder()
    train(cfg, run, resume=True, progress=False, callbacks=[rec])
    assert rec.names() == [("on_train_start", 4), ("on_step", 5), ("on_step", 6), ("on_eval", 6),
                           ("on_checkpoint", 6), ("on_train_end", 6), ("close", None)]
    assert all(state.resumed for _, state, _ in rec.calls[:-1])
    assert FakeWriter.made[0].purge_step == 5  # events after the checkpoint's step are hidden
    r, = fakes.runs
    assert (r.kwargs["id"], r.kwargs["resume"]) == ("fake-id-1", "allow")  # the same W&B run


# ----------------------------------------------------------------------------------------------
# a failing callback

class Boom(Callback):
    def __init__(self, hook: str, step: int):
        self.hook, self.step, self.closed = hook, step, False

    def _maybe(self, hook, state):
        if hook == self.hook and state.step == self.step:
            raise RuntimeError("disk full\nsecond line")

    def on_train_start(self, state):
        self._maybe("on_train_start", state)

    def on_step(self, state, metrics):
        self._maybe("on_step", state)

    def close(self):
        self.closed = True


def test_a_failing_callback_stops_with_one_line_and_a_checkpoint_that_resumes_bitwise(recorded, tmp_path):
    run = tmp_path / "boom"
    boom, after = Boom("on_step", 3), Recorder()
    with pytest.raises(CallbackError) as e:
        train(_cfg(), run, progress=False, callbacks=[boom, after])
    msg = str(e.value)
    assert "\n" not in msg and "Boom.on_step failed at step 3: RuntimeError: disk full;" in msg
    assert "checkpoint of step 3" in msg and "--resume" in msg
    assert isinstance(e.value.__cause__, RuntimeError)
    assert "Traceback" in (run / "train.log").read_text()  # the traceback in the log, not the message
    assert boom.closed and after.names()[-2:] == [("on_checkpoint", 2), ("close", None)]  # none after the failure
    path, state = load_latest_checkpoint(run / "checkpoints")
    assert state["step"] == 3 and path.name == "ckpt-00000003.pt"
    # Continued without the callback, the run ends as the uninterrupted one (which also drew sample
    # grids for its loggers at every evaluation): the failure and the logging changed nothing.
    cfg = load_config(run / "config.yaml")
    train(cfg, run, resume=True, progress=False)
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in _records(run)] == \
           [{k: v for k, v in r.items() if k != "time_s"} for r in _records(recorded.run)]
    from safetensors.torch import load_file

    a, b = load_file(run / "model.safetensors"), load_file(recorded.run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failing_on_train_start_trains_nothing_and_the_command_can_be_rerun(tmp_path):
    run = tmp_path / "start"
    with pytest.raises(CallbackError, match=r"Boom.on_train_start failed at step 0: .*nothing was trained"):
        train(_cfg("train.steps=1"), run, progress=False, callbacks=[Boom("on_train_start", 0)])
    assert not list_checkpoints(run / "checkpoints")
    train(_cfg("train.steps=1"), run, progress=False)  # the same command, now without the failure
    assert (run / "model.safetensors").is_file()


def test_callbacks_must_be_callback_objects(tmp_path):
    with pytest.raises(ConfigError, match="flowvae.training.Callback objects, got function"):
        train(_cfg(), tmp_path / "x", progress=False, callbacks=[lambda s: None])  # type: ignore[list-item]
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------
# train.loggers and the loggers on their own

def test_unknown_logger_is_refused_in_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as e:
        apply_overrides(get_preset("digits"), ["train.loggers=[nonexistent]"])
    msg = str(e.value)
    assert "\n" not in msg and "train.loggers" in msg and "'tensorboard'" in msg and "'wandb'" in msg
    literal = typing.get_args(typing.get_args(typing.get_type_hints(TrainConfig)["loggers"])[0])[0]
    assert set(typing.get_args(literal)) == set(LOGGERS)  # the config's names are the loggers'
    assert "loggers" in TrainConfig.resumable


def test_missing_packages_are_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"^the wandb logger needs the wandb package: pip install wandb$"):
        train(_cfg("train.loggers=[wandb]"), tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match=r"pip install tensorboard$"):
        TensorBoardLogger()
    assert loggers_for(None, []) == []  # the default: tensorboard only when installed


def test_default_loggers_are_tensorboard_once(fakes):
    assert [type(cb) for cb in loggers_for(None, [])] == [TensorBoardLogger]
    assert loggers_for(None, [TensorBoardLogger(log_dir="elsewhere")]) == []  # not twice
    assert loggers_for([], []) == []
    assert [type(cb) for cb in loggers_for(["wandb", "tensorboard"], [])] == [WandbLogger, TensorBoardLogger]


def _state(run: Path, step: int = 0) -> TrainState:
    return TrainState(step=step, epoch=0, run=run, config=get_preset("digits"), model=None)  # type: ignore[arg-type]


def test_loggers_write_step_metrics_every_n_steps_and_skip_non_numbers(tmp_path, fakes):
    tb, wb = TensorBoardLogger(every=2), WandbLogger(project="p", every=2, entity="e")
    for cb in (tb, wb):
        cb.on_train_start(_state(tmp_path))
        for step in (1, 2, 3, 4):
            cb.on_step(_state(tmp_path, step), {"train/bpd": float(step), "train/lr": 1e-3})
        cb.on_eval(_state(tmp_path, 4), {"step": 4, "train_bpd": None, "test_elbo_bpd": float("nan"),
                                         "test_kl": 2.0, "test_k": 1}, None)
        cb.close()
    assert tb.writer is None and FakeWriter.made[0].scalars == [
        ("train/bpd", 2.0, 2), ("train/lr", 1e-3, 2), ("train/bpd", 4.0, 4), ("train/lr", 1e-3, 4), ("test/kl", 2.0, 4)]
    r, = fakes.runs
    assert r.kwargs["project"] == "p" and r.kwargs["entity"] == "e"
    assert r.logged == [({"train/bpd": 2.0, "train/lr": 1e-3}, 2), ({"train/bpd": 4.0, "train/lr": 1e-3}, 4),
                        ({"test/kl": 2.0}, 4)]
    assert r.finished == [1]  # closed without on_train_end: marked failed
    with pytest.raises(ConfigError, match="every must be a positive integer"):
        TensorBoardLogger(every=0)


def test_tensorboard_logger_event_file_reads_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = TensorBoardLogger(log_dir=tmp_path / "tb")
    tb.on_train_start(_state(tmp_path))
    samples = {1.0: torch.randint(0, 256, (64, 3, 4, 4), dtype=torch.uint8)}
    tb.on_eval(_state(tmp_path, 2), {"step": 2, "test_elbo_bpd": 5.5, "test_iw_bpd": 5.25, "test_kl": 3.0}, samples)
    tb.close()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert [(e.step, e.value) for e in acc.Scalars("test/elbo_bpd")] == [(2, 5.5)]
    img, = acc.Images("samples/t1.00")
    assert (img.step, img.width, img.height) == (2, 41, 41)  # 8 x (4 + 1) + 1


# ----------------------------------------------------------------------------------------------
# data-parallel: rank 0 only, and a failure there stops every rank

DDP_SCRIPT = '''
import json, os, sys
from flowvae.presets import resolve
from flowvae.training import Callback, train

class Boom(Callback):
    def on_step(self, state, metrics):
        if state.step == 3:
            raise RuntimeError("disk full")

class Recorder(Callback):
    def __init__(self):
        self.calls = []
    def on_train_start(self, state):
        self.calls.append(["on_train_start", state.step, state.rank, state.world_size])
    def on_step(self, state, metrics):
        self.calls.append(["on_step", state.step, state.rank, state.world_size])

run, overrides = sys.argv[1], json.loads(sys.argv[2])
rec = Recorder()
try:
    train(resolve("digits", overrides), run, progress=False, callbacks=[rec, Boom()])
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
with open(os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({"error": error, "calls": rec.calls}, f)
'''


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_under_ddp_callbacks_run_on_rank_0_and_its_failure_stops_every_rank(tmp_path):
    script, out = tmp_path / "ddp_train.py", tmp_path / "out"
    script.write_text(DDP_SCRIPT)
    out.mkdir()
    overrides = [*TRAIN, *FLOW, "model.kind=refined_glow", "train.steps=6", "train.checkpoint_every=100",
                 "train.sample_temperatures=[]", "train.loggers=[]", "train.device=cpu", "train.num_threads=1"]
    run_processes([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                   str(tmp_path / "run"), json.dumps(overrides), str(out)], timeout=300)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["calls"] == [["on_train_start", 0, 0, 2], ["on_step", 1, 0, 2], ["on_step", 2, 0, 2],
                           ["on_step", 3, 0, 2]]
    assert r1["calls"] == []  # never called on other ranks
    assert r0["error"].startswith("CallbackError: callback Boom.on_step failed at step 3: RuntimeError: disk full;")
    assert r1["error"] == "CallbackError: a callback on rank 0 failed; training stopped after step 3"
    assert load_latest_checkpoint(tmp_path / "run" / "checkpoints")[1]["step"] == 3
