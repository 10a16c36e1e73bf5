"""Polyak averaging (``train.ema_decay``): the average's arithmetic, and a run that evaluates, saves,
loads and resumes the averaged weights."""

from __future__ import annotations

import json

import pytest
import torch

from flowvae import load_run
from flowvae.config import apply_overrides, load_config
from flowvae.errors import CheckpointError, ConfigError
from flowvae.presets import get_preset
from flowvae.runs.checkpoints import load_latest_checkpoint
from flowvae.training import Callback, train
from flowvae.training.averaging import WARMUP, WeightAverage


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))


def test_update_follows_the_warmed_up_decay_and_copies_integer_state():
    net = _Net()
    avg = WeightAverage(net, decay=0.9)
    start = net.lin.weight.detach().clone()
    expected = start.clone()
    for t in range(300):
        with torch.no_grad():
            net.lin.weight.add_(1.0)
            net.count.add_(1)
        avg.update(net)
        d = min(0.9, (1 + t) / (WARMUP + t))
        expected = d * expected + (1 - d) * net.lin.weight.detach()
        assert torch.allclose(avg.avg["lin.weight"], expected, atol=1e-5), t
    assert int(avg.avg["count"]) == 300 and avg.updates == 300
    # once the warm-up is over the average lags the weights by decay / (1 - decay) = 9 updates
    assert 8.9 < float((net.lin.weight.detach() - avg.avg["lin.weight"]).mean()) < 9.01


def test_applied_swaps_the_average_in_and_back_even_on_error():
    net = _Net()
    avg = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.lin.weight.add_(4.0)
    own = net.lin.weight.detach().clone()
    param = net.lin.weight
    with pytest.raises(RuntimeError), avg.applied(net):
        assert torch.equal(net.lin.weight, avg.avg["lin.weight"]) and not torch.equal(net.lin.weight, own)
        raise RuntimeError("inside")
    assert torch.equal(net.lin.weight, own) and net.lin.weight is param  # same tensor: optimisers stay valid


def test_a_checkpoint_entry_that_does_not_fit_is_refused():
    net = _Net()
    avg = WeightAverage(net, decay=0.9)
    good = {"updates": 3, "weights": {k: v.clone() for k, v in avg.avg.items()}}
    avg.load_state_dict(good, "ckpt.pt")
    assert avg.updates == 3
    wrong_shape = {"updates": 3, "weights": {**good["weights"], "lin.weight": torch.zeros(5)}}
    for bad in ({"updates": -1, "weights": good["weights"]}, {"updates": True, "weights": good["weights"]},
                {"updates": 1}, wrong_shape, {"updates": 1, "weights": {"lin.weight": torch.zeros(2, 3)}}, [1]):
        with pytest.raises(CheckpointError, match="ckpt.pt cannot be resumed: its 'ema' entry"):
            avg.load_state_dict(bad, "ckpt.pt")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(net, decay=1.0)
    with pytest.raises(ConfigError, match="ema_decay"):
        apply_overrides(get_preset("digits"), ["train.ema_decay=1.5"])


def _digits(*overrides: str):
    return apply_overrides(get_preset("digits"), [
        "train.eval_every=1000", "train.checkpoint_every=20", "train.batch_size=32", "train.init_batch_size=128",
        "train.sample_temperatures=[0.8]", "train.num_threads=2", "train.eval_images=64", "train.ema_decay=0.9",
        *overrides])


class _Watch(Callback):
    """Whether the model held the averaged weights at each on_eval, and the last update's at each on_step."""

    def __init__(self) -> None:
        self.eval_is_average: list[bool] = []
        self.step_is_average: list[bool] = []

    @staticmethod
    def _same(state) -> bool:
        return all(torch.equal(v, state.averaged[k]) for k, v in state.model.state_dict().items())

    def on_step(self, state, metrics) -> None:
        self.step_is_average.append(self._same(state))

    def on_eval(self, state, metrics, samples) -> None:
        self.eval_is_average.append(self._same(state))


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "ema"
    watch = _Watch()
    train(_digits("train.steps=40"), run, progress=False, callbacks=[watch])
    return run, watch


def test_a_run_evaluates_and_saves_the_averaged_weights(averaged_run):
    run, watch = averaged_run
    assert watch.eval_is_average == [True, True]  # step 0 and step 40
    assert not any(watch.step_is_average[5:])  # training moves the weights themselves
    _, state = load_latest_checkpoint(run / "checkpoints")
    assert state["ema"]["updates"] == 40
    saved = load_run(run).state_dict()
    assert all(torch.equal(v, state["ema"]["weights"][k]) for k, v in saved.items())
    assert not all(torch.equal(v, state["model"][k]) for k, v in saved.items())
    # an unfinished run is loaded from its checkpoint with the same, averaged, weights
    latest = load_run(run, checkpoint="latest").state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in latest.items())


def test_resume_continues_the_average_bitwise(averaged_run, tmp_path):
    full, _ = averaged_run
    part = tmp_path / "part"
    train(_digits("train.steps=20"), part, progress=False)
    cfg = load_config(part / "config.yaml")
    cfg.train.steps = 40
    (part / "model.safetensors").unlink()
    train(cfg, part, resume=True, progress=False)
    a, b = load_run(full).state_dict(), load_run(part).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise on the CPU
    last = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()][-1]
    first = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["test_elbo_bpd"] == first["test_elbo_bpd"]


def test_averaging_turned_on_at_a_resume_starts_from_the_checkpoint(tmp_path, caplog):
    caplog.set_level("INFO", logger="flowvae")
    run = tmp_path / "plain"
    train(_digits("train.steps=20", "train.ema_decay=null"), run, progress=False)
    cfg = load_config(run / "config.yaml")
    cfg.train.steps, cfg.train.ema_decay = 30, 0.9
    (run / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="ema_decay"):  # it changes the numbers the run reports
        train(cfg, run, resume=True, progress=False)
    train(cfg, run, resume=True, progress=False, allow_changes=True)
    assert "holds no averaged weights" in caplog.text
    assert "use the weights averaged with decay 0.9 (train.ema_decay" in caplog.text  # the plan says so
    _, state = load_latest_checkpoint(run / "checkpoints")
    assert state["ema"]["updates"] == 10
