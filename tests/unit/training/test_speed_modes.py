"""``train.precision=auto`` and ``train.channels_last=None`` (issue 33, item 2): decided once, when a
run starts, from the device and the kind, written to ``config.yaml``, kept by a resume; and every
evaluation of a bf16 run in float32."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from flowvae.api import load_run
from flowvae.config import TrainConfig
from flowvae.devices import native_bf16
from flowvae.evaluation import evaluate_bpd
from flowvae.models import create_model
from flowvae.networks.coupling_nets import ConvCouplingNet
from flowvae.runs.data import load_run_split
from flowvae.training import pipeline, train
from flowvae.training.eval_sets import evaluation_images
from flowvae.training.pipeline import speed_modes
from helpers.tiny import one_thread, tiny_config

CPU = torch.device("cpu")


def _model(kind: str = "flowvae"):
    return create_model(tiny_config(kind))


@pytest.fixture
def bf16_hardware(monkeypatch):
    monkeypatch.setattr(pipeline, "native_bf16", lambda device: "a CPU with AVX512-BF16")


@pytest.fixture
def no_bf16_hardware(monkeypatch):
    monkeypatch.setattr(pipeline, "native_bf16", lambda device: None)


def test_auto_is_bf16_with_channels_last_where_the_hardware_has_bfloat16(bf16_hardware, caplog):
    with caplog.at_level("INFO", logger="flowvae.train"):
        tc = speed_modes(TrainConfig(precision="auto"), _model(), CPU)
    assert (tc.precision, tc.channels_last) == ("bf16", True)
    assert "train.precision=auto: bfloat16 (a CPU with AVX512-BF16) with channels-last" in caplog.text
    assert "train.precision=fp32 trains in float32" in caplog.text


def test_auto_is_float32_in_its_own_layout_without_bfloat16_hardware(no_bf16_hardware):
    tc = speed_modes(TrainConfig(precision="auto"), _model(), CPU)
    assert (tc.precision, tc.channels_last) == ("fp32", False)


def test_auto_is_float32_for_a_kind_without_a_bf16_mode(bf16_hardware, caplog):
    model = _model("vae")
    if model.capabilities.bf16:
        pytest.skip("the vae kind has a bf16 mode")
    with caplog.at_level("INFO", logger="flowvae.train"):
        assert speed_modes(TrainConfig(precision="auto"), model, CPU).precision == "fp32"
    assert "a 'vae' model has no bfloat16 mode" in caplog.text


def test_a_resume_keeps_the_choice_the_run_made_when_it_started(bf16_hardware):
    saved = {"train": {"precision": "fp32", "channels_last": False}}
    tc = speed_modes(TrainConfig(precision="auto"), _model(), CPU, saved=saved)
    assert (tc.precision, tc.channels_last) == ("fp32", False)
    hostile = {"train": ["not", "a", "mapping"]}  # a checkpoint's config is read, not trusted
    assert speed_modes(TrainConfig(precision="auto"), _model(), CPU, saved=hostile).precision == "bf16"


def test_explicit_settings_are_kept(bf16_hardware):
    tc = speed_modes(TrainConfig(precision="fp32", channels_last=True), _model(), CPU)
    assert (tc.precision, tc.channels_last) == ("fp32", True)
    tc = speed_modes(TrainConfig(precision="bf16", channels_last=False), _model(), CPU)
    assert (tc.precision, tc.channels_last) == ("bf16", False)
    assert speed_modes(TrainConfig(), _model(), CPU).channels_last is False  # the default: fp32, NCHW


def test_native_bf16_answers_on_this_machine_without_raising():
    answer = native_bf16(CPU)
    assert answer is None or "BF16" in answer or "AMX" in answer
    assert native_bf16(torch.device("meta")) is None


def test_native_bf16_reads_torch_where_it_says(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert native_bf16(CPU) == "a CPU with AVX512-BF16"


def _compute_dtypes(model) -> set:
    return {m.compute_dtype for m in model.modules() if isinstance(m, ConvCouplingNet)}


def test_full_precision_is_float32_inside_and_puts_bf16_back_after_an_error():
    model = _model().set_precision("bf16")
    assert _compute_dtypes(model) == {torch.bfloat16}
    with pytest.raises(RuntimeError, match="inside"), model.full_precision():
        assert _compute_dtypes(model) == {None} and model.precision == "fp32"
        raise RuntimeError("inside")
    assert _compute_dtypes(model) == {torch.bfloat16} and model.precision == "bf16"


def test_a_bf16_run_writes_its_choice_and_evaluates_in_float32(bf16_hardware, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config("flowvae", "train.precision=auto")  # 2 steps: zero-initialised last layers give bf16 nothing to round
    with one_thread():
        last = train(cfg, run, progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (saved["precision"], saved["channels_last"]) == ("bf16", True)
    model = load_run(run)
    _, images = evaluation_images(load_run_split(model.config, run, "test", None, None), cfg.train.eval_images)
    fp32 = evaluate_bpd(model, images, cfg.train.eval_k, seed=cfg.train.seed)["elbo_bpd"]
    bf16 = evaluate_bpd(model.set_precision("bf16"), images, cfg.train.eval_k, seed=cfg.train.seed)["elbo_bpd"]
    assert last["test_elbo_bpd"] == pytest.approx(fp32, abs=1e-9)
    assert bf16 != pytest.approx(fp32, abs=1e-9), "the test cannot tell float32 from bf16"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_elbo_bpd"] == last["test_elbo_bpd"]


# ---------------------------------------------------------------------------------------------- evaluation share


@pytest.mark.parametrize("share, since_end, due", [
    (0.1, 89.0, False), (0.1, 91.0, True),    # a 10 s evaluation: the next after 90 s of training
    (0.5, 9.0, False), (0.5, 11.0, True),     # the old rule: as long training as evaluating
    (1.0, 0.0, True),
])
def test_time_based_evaluations_take_at_most_their_share_of_the_run(share, since_end, due):
    from types import SimpleNamespace

    from flowvae.training.trainer import EvalClock, Trainer

    end = 130.0
    fake = SimpleNamespace(eval_every_s=5.0, tc=SimpleNamespace(eval_share=share),
                           clock=EvalClock(start=end - 10.0, end=end, cost=10.0), wall=lambda: end + since_end)
    assert Trainer._evaluation_due(fake) is due  # type: ignore[arg-type]
    fake.eval_every_s = None
    assert Trainer._evaluation_due(fake) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("step, evaluated_at, wall, stops", [
    (2000, 2000, 95.0, True),    # just evaluated, and a further step's final evaluation would not fit: end on it
    (2000, 2000, 85.0, False),   # it still fits: train on
    (2001, 2000, 95.0, True),    # not evaluated: stop, keeping the time of the final evaluation
    (0, 0, 95.0, False),         # the set-up's step 0 trains one step regardless
])
def test_the_time_limit_does_not_repeat_an_evaluation_one_step_later(step, evaluated_at, wall, stops):
    from types import SimpleNamespace

    from flowvae.training.trainer import EvalClock, Trainer

    fake = SimpleNamespace(tc=SimpleNamespace(time_limit_s=100.0), step=step, device="cpu",
                           ctx=SimpleNamespace(all_true=lambda ok, device: ok), last={"step": evaluated_at},
                           clock=EvalClock(start=0.0, end=0.0, cost=10.0), wall=lambda: wall,
                           prepared=SimpleNamespace(signals=SimpleNamespace(signum=None), t_start=0.0),
                           hooks=SimpleNamespace(ok=True), t_loop=0.0)
    assert Trainer._stop_before_step(fake, None) is stops  # type: ignore[arg-type]
