"""Data-parallel training: 2 CPU processes with gloo against one process with the same global batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from flowvae import load_run
from helpers.tiny import run_processes

SETS = ["model.hidden=[8,16,16]", "model.encoder_widths=[8]", "model.prior_hidden=16",
        "train.batch_size=16", "train.init_batch_size=64", "train.sample_temperatures=[0.8]",
        "train.num_threads=1", "data.test_limit=64", "train.steps=40", "train.eval_every=20",
        "train.checkpoint_every=20"]


def _train(run: Path, nproc: int, *extra: str) -> str:
    cmd = ["-m", "flowvae.cli.main", "train", "digits", "--run-dir", str(run), "-q", "--device", "cpu",
           "--set", *SETS, *extra]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd]
    return run_processes([sys.executable, *cmd], timeout=600)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("augment,stream", [([], []), (["data.flip=true", "data.crop_pad=1"],
                                                        ["data.in_memory=false", "data.num_workers=1"])],
                         ids=["in-memory", "streamed-augmented"])
def test_two_gloo_processes_match_one_process_of_the_same_global_batch(tmp_path, augment, stream):
    # The refined Glow has no BatchNorm, so the only difference is the order of float reductions.
    # Streamed, each rank reads and augments only its own rows of each global batch (one process
    # reads the whole batch from memory).
    one, two = tmp_path / "one", tmp_path / "two"
    _train(one, 1, "model.kind=refined_glow", *augment)
    out = _train(two, 2, "model.kind=refined_glow", *augment, *stream)
    assert out.count("run folder:") == 1  # only rank 0 prints
    m1, m2 = _metrics(one), _metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [0, 20, 40]
    for a, b in zip(m1, m2):
        for key in ("train_bpd", "test_elbo_bpd"):
            if a[key] is not None:
                assert b[key] == pytest.approx(a[key], abs=1e-4), (key, a, b)
        assert a["test_n"] == b["test_n"] == 64  # evaluation gathered over both ranks
    s1, s2 = load_run(one).state_dict(), load_run(two).state_dict()
    for k in s1:
        assert torch.allclose(s1[k], s2[k], rtol=1e-3, atol=1e-4), k
    assert json.loads((two / "environment.json").read_text())["processes"] == 2
    # only rank 0 wrote: one set of files, no duplicated metrics lines
    assert sorted(p.name for p in (two / "checkpoints").glob("ckpt-*.pt")) == ["ckpt-00000020.pt", "ckpt-00000040.pt"]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_gloo_processes_train_the_paper_model(tmp_path):
    run = tmp_path / "flowvae"
    _train(run, 2)
    m = _metrics(run)
    assert m[-1]["step"] == 40 and m[-1]["test_elbo_bpd"] < m[0]["test_elbo_bpd"]
    load_run(run)  # complete, loadable run folder
