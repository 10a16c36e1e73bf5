"""Faults a long run must survive: SIGKILL and resume, non-finite batches and gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowvae import load_run
from flowvae.errors import FlowVAEError
from flowvae.models import FlowVAE
from flowvae.runs.checkpoints import list_checkpoints, load_latest_checkpoint
from flowvae.training import train
from helpers.small import metrics_rows, small_config

# SIGKILL at random moments and resume: tests/integration/test_interruptions.py (benchmarks/kill_trials.py).


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
    run = tmp_path / "r"
    train(small_config("train.steps=60", "train.eval_every=20", "train.checkpoint_every=40"), run, progress=False)
    # Pretend the run died at step 60 before its last checkpoint: remove the step-60 checkpoint.
    for p in list_checkpoints(run / "checkpoints"):
        if p.name.endswith("00000060.pt"):
            p.unlink()
            p.with_suffix(".pt.sha256").unlink()
    (run / "model.safetensors").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 61, "cut off')  # a line half-written by the kill
    train(small_config("train.steps=60", "train.eval_every=20", "train.checkpoint_every=40"), run, resume=True, progress=False)
    steps = [r["step"] for r in metrics_rows(run)]
    assert steps == [0, 20, 40, 60]


def _poison_encoder_input(monkeypatch, bad_calls: set[int]):
    """NaN in the batch as the network sees it, on the given calls of the encoder."""
    real = FlowVAE.loss
    calls = {"n": 0}

    def loss(self, x, generator=None, shard=None):
        calls["n"] += 1
        if calls["n"] in bad_calls:
            handle = self.encoder.register_forward_pre_hook(lambda m, args: (args[0] * float("nan"),))
            try:
                return real(self, x, generator, shard)
            finally:
                handle.remove()
        return real(self, x, generator, shard)

    monkeypatch.setattr(FlowVAE, "loss", loss)


def test_isolated_nan_batches_are_skipped_and_counted(tmp_path, monkeypatch, caplog):
    # call 1 is the data-dependent initialisation; calls 6 and 9 are training steps 5 and 8
    _poison_encoder_input(monkeypatch, {6, 9})
    run = tmp_path / "nanbatch"
    last = train(small_config("train.steps=20", "train.eval_every=20", "train.max_bad_steps=2"), run, progress=False)
    assert last["skipped_steps"] == 2 and last["step"] == 20
    assert "step 5: step skipped" in caplog.text and "step 8: step skipped" in caplog.text
    assert "step 5" in (run / "train.log").read_text()  # the human-readable log in the run folder
    assert torch.isfinite(torch.tensor(last["test_elbo_bpd"]))
    # parameters and buffers (BatchNorm running statistics see the bad batch in the forward pass)
    assert all(torch.isfinite(v).all() for v in load_run(run).state_dict().values() if v.is_floating_point())


def test_nan_gradient_is_skipped_and_weights_stay_finite(tmp_path, monkeypatch):
    real = FlowVAE.loss
    calls = {"n": 0}

    def loss(self, x, generator=None, shard=None):
        calls["n"] += 1
        out = real(self, x, generator, shard)
        if calls["n"] in (4, 5):  # training steps 3 and 4: the loss is finite, one gradient is not
            p = next(self.decoder.parameters())
            handle = {}

            def once(g):  # a hook on a parameter persists, so it removes itself
                handle["h"].remove()
                return g * float("inf")
            handle["h"] = p.register_hook(once)
        return out

    monkeypatch.setattr(FlowVAE, "loss", loss)
    last = train(small_config("train.steps=10", "train.eval_every=10"), tmp_path / "nangrad", progress=False)
    assert last["skipped_steps"] == 2
    assert all(torch.isfinite(p).all() for p in load_run(tmp_path / "nangrad").parameters())


def test_nan_batches_in_a_row_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison_encoder_input(monkeypatch, set(range(8, 100)))
    run = tmp_path / "stop"
    with pytest.raises(FlowVAEError, match="3 non-finite steps in a row at step 9"):
        train(small_config("train.steps=30", "train.max_bad_steps=3", "train.checkpoint_every=1000"), run, progress=False)
    _, state = load_latest_checkpoint(run / "checkpoints")
    assert state["step"] == 6  # the last good step; its weights are finite
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------------------------
# flowvae check, and run folders from elsewhere


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("check") / "run"
    train(small_config("train.steps=30", "train.eval_every=30"), run, progress=False)
    return run


def _copy_with_weights(run: Path, dest: Path, edit) -> Path:
    """A copy of ``run`` whose model.safetensors went through ``edit(state) -> metadata``."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(run, dest)
    state = load_file(str(dest / "model.safetensors"))
    meta = edit(state)
    save_file(state, str(dest / "model.safetensors"), metadata=meta)
    return dest


def test_check_passes_on_a_trained_run(small_run, capsys):
    from flowvae.cli.main import main

    assert main(["check", str(small_run), "--limit", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in res["checks"]}
    assert res["ok"] and {"exact round trip", "1x1 convolution inverses", "finite log-likelihoods"} <= names
    assert (small_run / "check.json").is_file()


def test_check_reports_nan_weights_and_uninitialised_actnorm(small_run, tmp_path, capsys):
    from flowvae.cli.main import main

    def nan_weight(state):
        key = next(k for k in state if k.endswith("lu"))
        state[key][0, 0] = float("nan")
        return {"format": "flowvae", "kind": "flowvae"}

    bad = _copy_with_weights(small_run, tmp_path / "nan", nan_weight)
    assert main(["check", str(bad), "--limit", "8"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  finite weights" in out and "some checks FAILED" in out

    def forget_init(state):
        key = next(k for k in state if k.endswith("initialized"))
        state[key].zero_()
        return {"format": "flowvae", "kind": "flowvae"}

    bad = _copy_with_weights(small_run, tmp_path / "noinit", forget_init)
    assert main(["check", str(bad), "--limit", "8"]) == 1
    assert "FAIL  ActNorm initialised" in capsys.readouterr().out


def test_run_folders_from_elsewhere_are_validated(small_run, tmp_path, capsys):
    from flowvae.cli.main import main
    from flowvae.errors import CheckpointError, ConfigError

    foreign = _copy_with_weights(small_run, tmp_path / "foreign", lambda state: {"format": "other"})
    with pytest.raises(CheckpointError, match="not written by flowvae"):
        load_run(foreign)
    import shutil

    garbage = tmp_path / "garbage"
    shutil.copytree(small_run, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_run(garbage)
    edited = tmp_path / "edited"
    shutil.copytree(small_run, edited)
    (edited / "config.yaml").write_text((edited / "config.yaml").read_text().replace("d_z:", "dz:"))
    with pytest.raises(ConfigError, match="did you mean 'model.d_z'"):
        load_run(edited)
    # the command line gives one line, exit 1, no traceback
    assert main(["check", str(garbage)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_channels_last_and_recompute_train_like_the_default(tmp_path):
    """Speed and memory options change how, not what: the same losses to float rounding."""
    base = train(small_config("train.steps=8", "train.eval_every=8"), tmp_path / "base", progress=False)
    for opt in ("train.channels_last=true", "train.recompute=true"):
        other = train(small_config("train.steps=8", "train.eval_every=8", opt), tmp_path / opt.split(".")[1].split("=")[0],
                      progress=False)
        assert other["train_bpd"] == pytest.approx(base["train_bpd"], abs=2e-4), opt
        assert other["test_elbo_bpd"] == pytest.approx(base["test_elbo_bpd"], abs=2e-4), opt
