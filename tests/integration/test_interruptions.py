"""Interrupted runs lose no work and resume bitwise: signals, SIGKILL at random moments, a second
process in the same folder, leftovers of a kill, bad updates, and resumes with changed settings."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowvae import load_run
from flowvae.errors import CheckpointError, ConfigError, TrainingInterrupted
from flowvae.models import FlowVAE
from flowvae.runs.checkpoints import list_checkpoints, load_latest_checkpoint
from flowvae.runs.lock import RunLock
from flowvae.training import train
from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from helpers.small import SMALL as _SMALL  # noqa: E402
from helpers.small import assert_same_weights, full_and_resumed, metrics_rows, signal_at_step  # noqa: E402
from helpers.small import resume_config as _cfg  # noqa: E402
from kill_trials import kill_chain  # noqa: E402

SMALL = [*_SMALL, "train.eval_images=32"]  # as resume_config


# ----------------------------------------------------------------------------------------------
# signals


def test_a_signal_finishes_the_step_checkpoints_it_and_the_resume_is_bitwise(tmp_path, monkeypatch):
    sets = ("train.steps=40", "train.eval_every=20", "train.checkpoint_every=1000")
    full = tmp_path / "full"
    train(_cfg(*sets), full, progress=False)
    stopped = tmp_path / "stopped"
    signal_at_step(monkeypatch, signal.SIGINT, 27)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT after step 27") as e:
        train(_cfg(*sets), stopped, progress=False)
    assert e.value.step == 27 and e.value.signum == signal.SIGINT
    _, state = load_latest_checkpoint(stopped / "checkpoints")
    assert state["step"] == 27  # the step the signal arrived in, finished; nothing after it
    assert [r["step"] for r in metrics_rows(stopped)] == [0, 20]
    assert not (stopped / ".lock").exists()
    monkeypatch.undo()
    train(_cfg(*sets), stopped, resume=True, progress=False)
    assert_same_weights(full, stopped)
    # grad_norm_max at step 40 spans steps 21-40, across the interruption
    assert metrics_rows(full) == metrics_rows(stopped)


def test_the_signal_handlers_are_restored_and_a_second_signal_stops_at_once():
    from flowvae.training.signals import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        with StopSignals() as s:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert s.signum == signal.SIGTERM  # the first only asks the loop to stop
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    assert e.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_sighup_on_the_command_line_exits_129_with_one_line(tmp_path, monkeypatch, capsys):
    from flowvae.cli.main import main

    signal_at_step(monkeypatch, signal.SIGHUP, 3)
    run = tmp_path / "hup"
    rc = main(["train", "digits", "--run", str(run), "-q", "--set", *SMALL, "train.steps=10"])
    err = capsys.readouterr().err.strip()
    assert rc == 128 + signal.SIGHUP
    assert len(err.splitlines()) == 1 and "stopped by SIGHUP after step 3" in err and "--resume" in err
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt-00000003.pt"]


def test_sigterm_to_a_training_process_checkpoints_the_step_at_the_signal(tmp_path):
    sets = [*SMALL, "train.steps=5000", "train.eval_every=100000", "train.checkpoint_every=100000"]
    run = tmp_path / "term"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flowvae.cli.main", "train", "digits", "--run", str(run),
                             "-q", "--set", *sets], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # the step-0 evaluation is written just before the first step
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    m = re.search(r"stopped by SIGTERM after step (\d+)", err)
    assert m, err
    step = int(m.group(1))
    assert 0 < step < 5000
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [f"ckpt-{step:08d}.pt"]
    assert not (run / ".lock").exists() and not (run / "model.safetensors").exists()


def test_time_based_checkpoints(tmp_path, monkeypatch):
    clock = {"t": 1000.0}
    real_time = time.time

    def fake_time():  # every call advances 0.2 s: a checkpoint every few steps with checkpoint_every_s=1
        clock["t"] += 0.2
        return clock["t"]

    monkeypatch.setattr("flowvae.training.trainer.time.time", fake_time)
    run = tmp_path / "timed"
    train(_cfg("train.steps=12", "train.eval_every=100", "train.checkpoint_every=1000",
               "train.checkpoint_every_s=1", "train.keep_checkpoints=100"), run, progress=False)
    monkeypatch.setattr("flowvae.training.trainer.time.time", real_time)
    steps = [int(p.name[5:13]) for p in list_checkpoints(run / "checkpoints")]
    assert len(steps) >= 3 and steps[-1] == 12 and all(0 < s < 12 for s in steps[:-1])


# ----------------------------------------------------------------------------------------------
# SIGKILL at random moments


def test_twenty_random_sigkills_and_resumes_equal_an_uninterrupted_run(tmp_path):
    res = kill_chain("flowvae", tmp_path, kills=20, steps=160, seed=1)
    assert res["ok"], res["problems"]
    assert res["kills"] >= 20 and res["aimed"] >= 4  # some of them inside checkpoint writes


def test_a_run_killed_before_its_first_checkpoint_starts_over_with_cleanmetrics_rows(tmp_path):
    sets = ("train.steps=30", "train.eval_every=10", "train.checkpoint_every=1000")
    full = tmp_path / "full"
    train(_cfg(*sets), full, progress=False)
    killed = tmp_path / "killed"
    killed.mkdir()
    # what a kill at step 15 leaves: evaluations at 0 and 10, no checkpoint
    (killed / "metrics.jsonl").write_text("".join(json.dumps({**r, "time_s": 1.0}) + "\n"
                                                  for r in metrics_rows(full)[:2]))
    train(_cfg(*sets), killed, resume=True, progress=False)
    assert [r["step"] for r in metrics_rows(killed)] == [0, 10, 20, 30]
    assert metrics_rows(full) == metrics_rows(killed)


def test_resuming_a_finished_run_adds_nothing(tmp_path):
    run = tmp_path / "done"
    train(_cfg("train.steps=10", "train.eval_every=5"), run, progress=False)
    before = (run / "metrics.jsonl").read_text()
    ckpts = list_checkpoints(run / "checkpoints")
    weights = load_run(run).state_dict()
    train(_cfg("train.steps=10", "train.eval_every=5"), run, resume=True, progress=False)
    assert (run / "metrics.jsonl").read_text() == before  # no second record of step 10
    assert list_checkpoints(run / "checkpoints") == ckpts
    after = load_run(run).state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)


# ----------------------------------------------------------------------------------------------
# skipped steps and bad updates


def _poison_batch(monkeypatch, bad: set[float]):
    """NaN loss for the batches whose pixel sum is in ``bad`` (a property of the data, so a
    resumed run meets the same bad batch at the same step); records every sum seen."""
    real = FlowVAE.loss
    seen: list[float] = []

    def loss(self, x, generator=None, shard=None):
        key = float(x.double().sum())
        seen.append(key)
        out, stats = real(self, x, generator, shard)
        return (out * float("nan"), stats) if key in bad else (out, stats)

    monkeypatch.setattr(FlowVAE, "loss", loss)
    return seen


def test_resume_from_the_checkpoint_of_a_skipped_step_is_bitwise(tmp_path, monkeypatch):
    sets = ("train.steps=16", "train.eval_every=8", "train.checkpoint_every=1000")
    seen = _poison_batch(monkeypatch, set())
    train(_cfg(*sets), tmp_path / "probe", progress=False)
    bad = {seen[6]}  # the batch of training step 6
    monkeypatch.undo()
    _poison_batch(monkeypatch, bad)
    full = tmp_path / "full"
    last = train(_cfg(*sets), full, progress=False)
    assert last["skipped_steps"] == 1
    cut = tmp_path / "cut"
    train(_cfg(*sets), cut, progress=False)
    # keep only the checkpoint written at the bad step: labelled 5, the last good step
    for p in list_checkpoints(cut / "checkpoints"):
        if not p.name.endswith("00000005.pt"):
            p.unlink()
            p.with_suffix(".pt.sha256").unlink()
    (cut / "model.safetensors").unlink()
    train(_cfg(*sets), cut, resume=True, progress=False)
    assert_same_weights(full, cut)
    assert metrics_rows(full) == metrics_rows(cut)


def test_an_update_that_makes_weights_non_finite_is_rolled_back(tmp_path, monkeypatch, caplog):
    sets = ("train.steps=10", "train.eval_every=10")
    # reference: the loss of step 4 is NaN, so that step is skipped before any update
    seen = _poison_batch(monkeypatch, set())
    train(_cfg(*sets), tmp_path / "probe", progress=False)
    monkeypatch.undo()
    _poison_batch(monkeypatch, {seen[4]})
    train(_cfg(*sets), tmp_path / "skipped", progress=False)
    monkeypatch.undo()
    # the update of step 4 writes a NaN into a weight (finite loss and gradients)
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    last = train(_cfg(*sets), tmp_path / "rolled", progress=False)
    assert last["skipped_steps"] == 1
    assert "non-finite weights after the update at step 4" in caplog.text
    # rolled back exactly: the same weights as skipping that step (Adam's moments and step count too)
    assert_same_weights(tmp_path / "skipped", tmp_path / "rolled")


# ----------------------------------------------------------------------------------------------
# one process per run folder, leftovers, changed settings


def test_a_second_training_process_in_the_same_folder_is_refused(tmp_path):
    run = tmp_path / "busy"
    with RunLock(run):
        with pytest.raises(CheckpointError, match=f"being trained by process {os.getpid()}"):
            train(_cfg("train.steps=2"), run, progress=False)
        assert not (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()
    train(_cfg("train.steps=2"), run, progress=False)  # free again once the holder is gone
    assert not (run / ".lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "stale"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    train(_cfg("train.steps=2"), run, progress=False)
    assert (run / "model.safetensors").exists()


def test_a_symlinked_lock_file_is_refused(tmp_path):
    run = tmp_path / "linked"
    run.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (run / ".lock").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        train(_cfg("train.steps=2"), run, progress=False)
    assert outside.read_text() == "keep"


def test_temporary_files_left_by_a_kill_are_removed_and_links_not_followed(tmp_path):
    run = tmp_path / "leftovers"
    train(_cfg("train.steps=4", "train.eval_every=4"), run, progress=False)
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    planted = [run / "checkpoints" / ".ckpt-00000004.pt.k2j4h1x9.tmp", run / "checkpoints" / ".ckpt-00000002.pt.tmp4242",
               run / ".model.safetensors.abcdefgh.tmp"]
    for p in planted:
        p.write_bytes(b"x" * 1000)
    (run / ".config.yaml.zzzzzzzz.tmp").symlink_to(outside)
    train(_cfg("train.steps=6", "train.eval_every=4"), run, resume=True, progress=False)
    assert not any(os.path.lexists(p) for p in [*planted, run / ".config.yaml.zzzzzzzz.tmp"])
    assert outside.read_bytes() == b"keep"


@pytest.fixture(scope="module")
def ten_steps(tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "run"
    train(_cfg("train.steps=10", "train.eval_every=5", "train.checkpoint_every=5"), run, progress=False)
    return run


@pytest.mark.parametrize("change,field", [("train.batch_size=8", "train.batch_size"), ("data.n_bits=5", "data.n_bits"),
                                          ("train.seed=3", "train.seed"), ("train.lr=0.01", "train.lr"),
                                          ("model.d_z=6", "model.d_z")])
def test_resume_refuses_settings_that_change_the_computation(ten_steps, change, field):
    before = {p.name: p.read_bytes() for p in ten_steps.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=rf"--resume with changed settings \({re.escape(field)} "):
        train(_cfg("train.steps=10", "train.eval_every=5", "train.checkpoint_every=5", change), ten_steps,
              resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in ten_steps.iterdir() if p.is_file()} == before  # nothing changed


def test_resume_accepts_more_steps_and_bookkeeping_changes(ten_steps, tmp_path):
    import shutil

    run = Path(shutil.copytree(ten_steps, tmp_path / "more"))
    last = train(_cfg("train.steps=14", "train.eval_every=2", "train.checkpoint_every=7", "train.keep_checkpoints=5",
                      "train.sample_temperatures=[1.0]"), run, resume=True, progress=False)
    assert last["step"] == 14


def test_allow_changes_resumes_with_a_new_learning_rate_and_clip(ten_steps, tmp_path, caplog):
    import shutil

    from flowvae.training.schedules import lr_lambda

    run = Path(shutil.copytree(ten_steps, tmp_path / "changed"))
    cfg = _cfg("train.steps=14", "train.eval_every=5", "train.checkpoint_every=5", "train.lr=5e-4",
               "train.grad_clip=1")
    last = train(cfg, run, resume=True, progress=False, allow_changes=True)
    assert "train.lr 0.002 -> 0.0005" in caplog.text and "train.grad_clip None -> 1.0" in caplog.text
    # the optimiser restored from the checkpoint takes the new rate at once, on the same schedule
    assert last["lr"] == pytest.approx(5e-4 * lr_lambda(cfg.train.warmup_steps, cfg.train.lr_decay)(14))


@pytest.mark.parametrize("kind", ["flowvae", "ugvae", "btcvae", "multistage"])
def test_a_resume_with_only_unusable_checkpoints_is_a_fresh_start(kind, tiny_runs, tmp_path):
    """A kill between a checkpoint and its checksum file leaves a checkpoint that is skipped; with
    nothing older the resume starts over, and must do everything a fresh start does (the
    multi-stage model's stage 1 loaded, the beta-TCVAE's dataset size set)."""
    import shutil

    from flowvae.config import load_config
    from helpers.tiny import one_thread

    run = Path(shutil.copytree(tiny_runs[kind], tmp_path / "run"))
    (run / "model.safetensors").unlink()
    for p in (run / "checkpoints").glob("*.sha256"):
        p.unlink()
    with one_thread():
        train(load_config(run / "config.yaml"), run, resume=True, progress=False)
    a, b = load_run(tiny_runs[kind]).state_dict(), load_run(run).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run again, bitwise


def test_the_time_limit_counts_the_set_up(tmp_path, monkeypatch, caplog):
    import logging

    import flowvae.training.trainer as trainer

    caplog.set_level(logging.INFO, logger="flowvae")
    real_init = trainer.data_init

    def slow_init(model):  # setup (the data-dependent initialisation) takes 1 s
        time.sleep(1.0)
        return real_init(model)

    monkeypatch.setattr(trainer, "data_init", slow_init)
    last = train(_cfg("train.steps=100000", "train.eval_every=100000", "train.time_limit_s=0.5"), tmp_path / "t",
                 progress=False)
    assert last["step"] == 0  # the run's wall time includes the set-up, which spent the limit
    assert "set-up took" in caplog.text and "time limit of 0 s reached at step 0" in caplog.text
    assert "was spent before the first step" in caplog.text


def test_resume_refuses_to_start_over_when_every_checkpoint_is_damaged(ten_steps, tmp_path):
    import shutil

    run = Path(shutil.copytree(ten_steps, tmp_path / "damaged"))
    for p in list_checkpoints(run / "checkpoints"):
        p.write_bytes(p.read_bytes()[:-10])  # its checksum no longer matches
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="no usable checkpoint: .* does not match its checksum"):
        train(_cfg("train.steps=10", "train.eval_every=5", "train.checkpoint_every=5"), run, resume=True,
              progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # a long run is not replaced


def test_a_bad_first_update_is_rolled_back_too():
    from flowvae.training.guard import UpdateGuard

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    guard = UpdateGuard([w], opt)
    w.grad = torch.ones(3)
    guard.save()  # before the first update: no Adam state yet
    opt.step()
    with torch.no_grad():
        w[0] = float("nan")
    assert not guard.weights_finite()
    guard.restore()
    assert torch.equal(w.detach(), torch.ones(3)) and w not in opt.state  # as if the update never ran


# ----------------------------------------------------------------------------------------------
# the cosine anneal of the learning rate (train.lr_schedule=cosine)

COSINE = ("train.steps=40", "train.eval_every=20", "train.checkpoint_every=1000", "train.lr_schedule=cosine", "train.warmup_steps=2",
          "train.time_limit_s=3600")


def _horizon_at_step_5(self):
    """A stand-in for the time limit's estimate, made deterministic: the anneal ends at step 30."""
    if self.step == 5:
        self.anneal.retarget(5, 30)


def test_a_cosine_anneal_moved_by_the_time_limit_resumes_bitwise(tmp_path, monkeypatch):
    import flowvae.training.trainer as trainer

    def patch():  # the resumed session's anneal ends at step 30 only if the checkpoint said so
        monkeypatch.setattr(trainer.Trainer, "_anneal_to_time_limit", _horizon_at_step_5)

    full, stopped = full_and_resumed(_cfg(*COSINE), tmp_path, monkeypatch, 27, patch)
    assert_same_weights(full, stopped)
    rows = metrics_rows(full)
    assert rows == metrics_rows(stopped)
    assert rows[1]["step"] == 20 and 0 < rows[1]["lr"] < _cfg().train.lr and rows[-1]["lr"] == 0.0


@pytest.mark.parametrize("schedule,entry,why", [
    ("cosine", {"warmup": 50, "start": 50, "start_progress": 0.0, "end": "soon"}, "its cosine anneal's steps"),
    ("cosine", "two", "its scheduler's 'lr_lambdas' is not a list of 1 entries"),
    ("exponential", "two", "its scheduler's 'lr_lambdas' is not a list of 1 entries"),
])
def test_a_checkpoint_whose_schedule_does_not_fit_is_refused(tmp_path, schedule, entry, why):
    import shutil

    from flowvae.runs.checkpoints import save_checkpoint

    sets = ("train.steps=6", "train.eval_every=3", "train.checkpoint_every=3", f"train.lr_schedule={schedule}")
    run = tmp_path / "run"
    train(_cfg(*sets), run, progress=False)
    _, state = load_latest_checkpoint(run / "checkpoints")
    state.pop("format_version", None)
    state["scheduler"]["lr_lambdas"] = [None, None] if entry == "two" else [entry]
    save_checkpoint(run / "checkpoints", 7, state)
    before = shutil.copytree(run, tmp_path / "before")
    with pytest.raises(CheckpointError, match=rf"ckpt-00000007.pt cannot be resumed: {re.escape(why)}"):
        train(_cfg(*sets[1:], "train.steps=9"), run, resume=True, progress=False)
    assert (run / "config.yaml").read_bytes() == (before / "config.yaml").read_bytes()  # nothing changed


def test_under_a_time_limit_the_cosine_anneal_comes_down_by_the_end(tmp_path, monkeypatch, caplog):
    import logging

    import flowvae.training.trainer as trainer

    caplog.set_level(logging.INFO, logger="flowvae")
    monkeypatch.setattr(trainer, "ANNEAL_CALIBRATION_S", 1.0)
    cfg = _cfg("train.steps=100000", "train.eval_every=100000", "train.time_limit_s=8", "train.lr_schedule=cosine")
    last = train(cfg, tmp_path / "run", progress=False)
    assert "cosine learning-rate schedule: it ends at step" in caplog.text
    # Without the estimate the rate would still be at its peak, 100,000 steps from the anneal's end.
    assert last["step"] > 20 and last["lr"] < 0.25 * cfg.train.lr
