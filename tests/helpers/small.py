"""A smaller digits model for the tests of long-run behaviour (faults, interruptions, resumes,
streaming, KL remedies): a few hundred of its steps take seconds on one thread."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flowvae import load_run
from flowvae.config import Config, apply_overrides
from flowvae.models import FlowVAE
from flowvae.presets import get_preset

SMALL = ["model.hidden=[8,16,16]", "model.encoder_widths=[8]", "model.prior_hidden=16",
         "train.batch_size=16", "train.init_batch_size=64", "train.sample_temperatures=[0.8]",
         "train.num_threads=1", "data.test_limit=64"]


def small_config(*overrides: str) -> Config:
    """The ``digits`` preset with :data:`SMALL` and then ``overrides`` applied."""
    return apply_overrides(get_preset("digits"), [*SMALL, *overrides])


def resume_config(*overrides: str) -> Config:
    """:func:`small_config` evaluated on 32 images: the config of the interruption and resume tests."""
    return small_config("train.eval_images=32", *overrides)


def metrics_rows(run: Path) -> list[dict[str, Any]]:
    """The rows of ``run``'s ``metrics.jsonl`` without their wall times (which differ between runs
    that compute the same)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time_s")
    return rows


def assert_same_weights(a: Path, b: Path) -> None:
    """The models of run folders ``a`` and ``b`` have bitwise equal weights."""
    sa, sb = load_run(a).state_dict(), load_run(b).state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def signal_at_step(monkeypatch: Any, signum: int, at: int) -> None:
    """Send ``signum`` to this process during training step ``at`` (loss call ``at + 1``: call 1
    is the data-dependent initialisation)."""
    real = FlowVAE.loss
    calls = {"n": 0}

    def loss(self: FlowVAE, x: torch.Tensor, generator: Any = None, shard: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == at + 1:
            os.kill(os.getpid(), signum)
        return real(self, x, generator, shard)

    monkeypatch.setattr(FlowVAE, "loss", loss)


def full_and_resumed(cfg: Config, tmp_path: Path, monkeypatch: Any, at: int,
                     patch: Callable[[], None] = lambda: None) -> tuple[Path, Path]:
    """Train ``cfg`` into ``tmp_path/full``, and into ``tmp_path/resumed`` stopped by SIGINT after
    step ``at`` and resumed; ``patch`` is applied to both (again after the signal's patch is undone)."""
    from flowvae.errors import TrainingInterrupted
    from flowvae.training import train

    patch()
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(cfg, full, progress=False)
    signal_at_step(monkeypatch, signal.SIGINT, at)
    try:
        train(cfg, resumed, progress=False)
    except TrainingInterrupted:
        pass
    else:
        raise AssertionError(f"the run was not stopped at step {at}")
    monkeypatch.undo()
    patch()
    train(cfg, resumed, resume=True, progress=False)
    return full, resumed
