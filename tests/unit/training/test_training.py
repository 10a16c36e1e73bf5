"""End-to-end training on real digits, the run folder, checkpoints, resume and bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from flowvae import load_run
from flowvae.config import apply_overrides, load_config
from flowvae.errors import CheckpointError, ConfigError, DataError
from flowvae.presets import get_preset
from flowvae.runs.checkpoints import list_checkpoints, load_latest_checkpoint, save_checkpoint
from flowvae.training import train
from flowvae.training.schedules import lr_lambda


def _digits(*overrides: str):
    return apply_overrides(get_preset("digits"), [
        "train.steps=150", "train.eval_every=150", "train.checkpoint_every=50", "train.batch_size=32",
        "train.init_batch_size=256", "train.sample_temperatures=[0.8]", "train.num_threads=2", *overrides])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits"
    last = train(_digits(), run, progress=False)
    return run, last


def test_short_training_lowers_test_bpd_on_real_digits(digits_run):
    run, last = digits_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[-1]["step"] == 150
    start, end = records[0]["test_elbo_bpd"], records[-1]["test_elbo_bpd"]
    assert math.isfinite(end)
    assert end < start - 1.0, (start, end)  # 8.4 -> about 6.4 bits/dim in 150 steps


def test_run_folder_contents(digits_run):
    run, _ = digits_run
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "model.safetensors", "samples/samples_t0.80.png"):
        assert (run / name).is_file(), name
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__
    cfg = load_config(run / "config.yaml")
    assert cfg.train.steps == 150 and cfg.model.d_z == get_preset("digits").model.d_z
    ckpts = list_checkpoints(run / "checkpoints")
    assert len(ckpts) == 3  # keep_checkpoints
    _, state = load_latest_checkpoint(run / "checkpoints")
    assert state["step"] == 150 and {"model", "optimizer", "scheduler", "rng", "batches"} <= set(state)


def test_load_run_gives_same_model_and_actnorm_is_not_reinitialised(digits_run):
    run, _ = digits_run
    model = load_run(run)
    _, state = load_latest_checkpoint(run / "checkpoints")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    flags = [b for n, b in model.named_buffers() if n.endswith("initialized")]
    assert flags and all(bool(f) for f in flags)


def test_refuses_to_overwrite_a_run(digits_run):
    run, _ = digits_run
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="--resume"):
        train(_digits(), run, progress=False)
    assert (run / "model.safetensors").read_bytes() == before


def test_resume_continues_to_the_same_weights(tmp_path):
    full = tmp_path / "full"
    train(_digits("train.steps=100", "train.eval_every=1000"), full, progress=False)
    part = tmp_path / "part"
    train(_digits("train.steps=50", "train.eval_every=1000"), part, progress=False)
    # continue the stopped run to 100 steps
    cfg = load_config(part / "config.yaml")
    cfg.train.steps = 100
    (part / "model.safetensors").unlink()
    train(cfg, part, resume=True, progress=False)
    a, b = load_run(full).state_dict(), load_run(part).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise on CPU


def test_corrupted_checkpoint_falls_back_to_previous(tmp_path, caplog):
    folder = tmp_path / "ck"
    save_checkpoint(folder, 1, {"step": 1})
    save_checkpoint(folder, 2, {"step": 2})
    newest = list_checkpoints(folder)[-1]
    newest.write_bytes(newest.read_bytes()[:10])  # truncated
    path, state = load_latest_checkpoint(folder)
    assert state["step"] == 1 and path.name == "ckpt-00000001.pt"
    assert "checksum" in caplog.text


def test_newer_checkpoint_format_is_refused(tmp_path):
    from flowvae.runs import checkpoints as ck

    save_checkpoint(tmp_path, 1, {"step": 1})
    # rewrite with a future version and a matching checksum
    import hashlib
    import io
    buf = io.BytesIO()
    torch.save({"format_version": ck.FORMAT_VERSION + 1, "step": 1}, buf)
    p = list_checkpoints(tmp_path)[-1]
    p.write_bytes(buf.getvalue())
    p.with_suffix(".pt.sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest())
    with pytest.raises(CheckpointError, match="newer"):
        load_latest_checkpoint(tmp_path)


def test_checkpoint_of_another_architecture_is_refused(digits_run, tmp_path):
    run, _ = digits_run
    import shutil
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "model.safetensors").unlink()
    cfg = load_config(other / "config.yaml")
    cfg.model.d_z = cfg.model.d_z + 2
    cfg.train.steps = 200
    saved = (other / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"changed settings \(model.d_z"):
        train(cfg, other, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="another architecture"):  # even when changes are allowed
        train(cfg, other, resume=True, progress=False, allow_changes=True)
    assert (other / "config.yaml").read_text() == saved  # a failed resume changes nothing


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        _digits("train.lrr=1")
    with pytest.raises(ConfigError, match="n_bits"):
        train(_digits("data.n_bits=9"), tmp_path / "a", progress=False)
    with pytest.raises(DataError, match="model expects"):
        train(_digits("model.image_size=16"), tmp_path / "b", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        train(_digits("data.dataset=folder", f"data.root={empty}"), tmp_path / "c", progress=False)
    assert not (tmp_path / "a" / "model.safetensors").exists()


def test_non_finite_steps_stop_the_run_with_a_checkpoint(tmp_path, monkeypatch):
    from flowvae.errors import FlowVAEError
    from flowvae.models import FlowVAE

    real = FlowVAE.loss
    calls = {"n": 0}

    def poisoned(self, x, generator=None, shard=None):
        calls["n"] += 1
        loss, stats = real(self, x, generator, shard)
        if calls["n"] > 12:  # the init pass and the first steps are clean
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(FlowVAE, "loss", poisoned)
    with pytest.raises(FlowVAEError, match="non-finite"):
        train(_digits("train.max_bad_steps=3", "train.checkpoint_every=1000"), tmp_path / "nan", progress=False)
    _, state = load_latest_checkpoint(tmp_path / "nan" / "checkpoints")
    assert state["step"] == 11  # saved at the first bad step, with the last good weights


def test_lr_schedule_warmup_then_decay():
    f = lr_lambda(10, 0.5)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == 1.0 and f(12) == pytest.approx(0.25)


def test_tune_cpu_allocator_applies_once_and_can_be_switched_off():
    from flowvae.training.environment import tune_cpu_allocator

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    assert tune_cpu_allocator() is True
    assert tune_cpu_allocator() is True  # idempotent
    code = "from flowvae.training.environment import tune_cpu_allocator as t; print(t())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "FLOWVAE_TUNE_MALLOC": "0"}, check=True)
    assert out.stdout.strip() == "False"


def _can_compile_cpu() -> bool:
    """Inductor builds CPU kernels with a C++ compiler against Python's headers."""
    return bool(shutil.which("c++") or shutil.which("g++")) and (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


@pytest.mark.skipif(not _can_compile_cpu(), reason="torch.compile on CPU needs a C++ compiler and Python's headers")
def test_compiled_training_matches_eager(tmp_path):
    """train.compile=true trains the same model: after 5 steps the weights are those of the eager
    run to float rounding (inductor reorders float sums), and both moved away from the start."""
    overrides = ("train.eval_every=1000", "train.eval_images=64", "train.sample_temperatures=[]",
                 "train.warmup_steps=1", "train.lr=2e-3")
    train(_digits("train.steps=0", *overrides), tmp_path / "start", progress=False)
    train(_digits("train.steps=5", *overrides), tmp_path / "eager", progress=False)
    train(_digits("train.steps=5", "train.compile=true", *overrides), tmp_path / "compiled", progress=False)
    start, eager = load_run(tmp_path / "start").state_dict(), load_run(tmp_path / "eager").state_dict()
    compiled_model = load_run(tmp_path / "compiled")
    compiled = compiled_model.state_dict()
    assert eager.keys() == compiled.keys()
    moved = max(float((eager[k] - start[k]).abs().max()) for k in eager if eager[k].is_floating_point())
    assert moved > 1e-3  # the five steps changed the weights, so the comparison below means something
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-3, atol=1e-4, msg=k)
    assert compiled_model.config.train.compile is True


# ----------------------------------------------------------------------------------------------
# the run's own config, metrics rows, moved names


def test_train_never_changes_the_callers_config(tmp_path):
    """Training completes its own copy of the config (the beta-TCVAE's dataset size, filled in by a
    fresh run); a resume adopts the filled field from config.yaml, again into its own copy."""
    import copy

    from flowvae.presets import resolve
    from helpers.tiny import one_thread, shared_data_dir

    mnist = shared_data_dir() / "mnist"
    if not (mnist / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found at {mnist} (the shared data folder is absent)")

    def btcvae(steps: int):
        return resolve("dsprites-btcvae", [
            "data.dataset=mnist", f"data.root={mnist.resolve()}", "data.train_limit=128", "data.test_limit=32",
            "model.image_size=28", "model.n_factors=3", "model.conv_channels=[4,4]", "model.hidden=16",
            f"train.steps={steps}", "train.eval_every=2", "train.checkpoint_every=2", "train.batch_size=16",
            "train.init_batch_size=32", "train.eval_images=32", "train.probe_images=0",
            "train.sample_temperatures=[1.0]"])

    run = tmp_path / "btcvae"
    fresh = btcvae(2)
    before = copy.deepcopy(fresh)
    with one_thread():
        train(fresh, run, progress=False)
    assert fresh == before and fresh.model.dataset_size is None
    assert load_config(run / "config.yaml").model.dataset_size == 128  # the run's copy was completed
    resumed = btcvae(4)
    before = copy.deepcopy(resumed)
    with one_thread():  # without the adopted size, the resume would refuse a changed model.dataset_size
        last = train(resumed, run, resume=True, progress=False)
    assert last["step"] == 4
    assert resumed == before and resumed.model.dataset_size is None
    assert load_config(run / "config.yaml").model.dataset_size == 128


def test_metrics_lines_are_metrics_rows(digits_run):
    """Each line of metrics.jsonl reads as a MetricsRow and writes back to the same text."""
    from flowvae.runs.metrics import MetricsRow

    run, last = digits_run
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [MetricsRow.from_dict(json.loads(line)) for line in lines]
    assert [json.dumps(r.to_dict()) for r in rows] == lines
    assert list(rows[0]) == ["step", "train_bpd", "test_elbo_bpd", "test_iw_bpd", "test_kl", "test_k", "test_n", "lr",
                             "skipped_steps", "grad_norm_max", "time_s"]
    assert rows[0].train_bpd is None and rows[0].grad_norm_max is None  # written as null, not left out
    assert rows[-1].to_dict() == last


def test_a_metrics_row_spells_out_its_probes_in_place():
    """The layout of a line with every optional field (a run with KL warm-up and probes of z and v)."""
    from flowvae.runs.metrics import MetricsRow
    from flowvae.runs.records import RecordError

    line = ('{"step": 10, "train_bpd": 8.36, "train_elbo_bpd": 8.37, "test_elbo_bpd": 8.33, "test_iw_bpd": 8.33, '
            '"test_kl": 0.048, "test_k": 1, "test_n": 32, "lr": 0.00044, "skipped_steps": 0, "grad_norm_max": 1.25, '
            '"time_s": 2.5, "kl_weight": 0.91, "probe_z": 0.375, "probe_v": 0.875, "z_collapsed": true}')
    row = MetricsRow.from_dict(json.loads(line))
    assert row.probes == {"z": 0.375, "v": 0.875} and row.z_collapsed is True and row["probe_v"] == 0.875
    assert json.dumps(row.to_dict()) == line
    with pytest.raises(RecordError, match="probes"):
        MetricsRow.from_dict({**json.loads(line), "probe_z": "high"})


def test_load_data_moved_to_the_run_layer_with_a_deprecated_alias():
    import flowvae.training.trainer as trainer
    from flowvae.runs.data import load_data

    with pytest.warns(DeprecationWarning, match="flowvae.runs.data.load_data"):
        alias = trainer.load_data
    assert alias is load_data
    assert load_data(get_preset("digits"), "test").name == "digits/test"
