"""What a user sees while set-up, evaluation and probes run (issue 32): progress lines without a
terminal, set-up parts and the plan in the log, one wall time, time-based evaluations under a time
limit, the KL beside every probe of z, the cached pixel probe, and messages printed once."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from flowvae.config import apply_overrides
from flowvae.data import load_digits
from flowvae.presets import get_preset

# A smaller digits model, so that a run takes seconds (tests/integration/test_reliability.py's SMALL).
SMALL = ["model.hidden=[8,16,16]", "model.encoder_widths=[8]", "model.prior_hidden=16",
         "train.batch_size=16", "train.init_batch_size=64", "train.sample_temperatures=[0.8]",
         "train.num_threads=1", "data.test_limit=64", "train.eval_images=32"]


def _cfg(*overrides: str):
    return apply_overrides(get_preset("digits"), [*SMALL, *overrides])


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def no_bars():
    from flowvae import progress

    before = progress.bars_enabled()
    progress.set_bars(False)
    yield
    progress.set_bars(before)


# ----------------------------------------------------------------------------------------------
# progress lines


def test_without_a_bar_a_loop_logs_done_total_and_elapsed(no_bars, monkeypatch, caplog):
    from flowvae import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a line after every item
    with caplog.at_level(logging.INFO, logger="flowvae"):
        assert list(progress.progress(range(3), total=3, desc="features")) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("features: 1/3 batches, 0 s elapsed, about 0 s left") and "3/3 batches" in lines[-1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flowvae"):  # -q: nothing, and the iterable itself
        it = range(3)
        assert progress.progress(it, total=3) is it
    assert not caplog.records


def test_a_ticker_logs_while_one_long_unit_runs(no_bars, monkeypatch, caplog):
    from flowvae import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.02)
    with caplog.at_level(logging.INFO, logger="flowvae"):
        with progress.ticker(2, "probe pixels") as t:
            time.sleep(0.15)  # one fit that takes long: lines still come
            t.update()
    assert any(r.getMessage().startswith("probe pixels: 0/2 fits, 0 s elapsed") for r in caplog.records)


# ----------------------------------------------------------------------------------------------
# the probe: cross-validation as GridSearchCV, pixels cached


def _digit_features(n: int = 300):
    d = load_digits("train")
    return d.images[:n].flatten(1).float().numpy(), d.labels[:n].numpy()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_cross_validation_chooses_what_grid_search_chooses(n_jobs):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from flowvae.evaluation.probe import fit_linear

    x, y = _digit_features()
    Cs = (0.0001, 0.001, 0.01, 1.0)  # a range where the folds disagree, so the choice means something
    clf, info = fit_linear(x, y, Cs=Cs, seed=3, n_jobs=n_jobs)
    pipe = make_pipeline(StandardScaler(), LinearSVC(max_iter=2000, dual="auto", random_state=3))
    ref = GridSearchCV(pipe, {"linearsvc__C": list(Cs)}, cv=StratifiedKFold(3, shuffle=True, random_state=3),
                       n_jobs=1).fit(x.astype(np.float64), y)
    assert info["C"] == ref.best_params_["linearsvc__C"] and info["cv_accuracy"] == float(ref.best_score_)
    assert np.array_equal(clf.predict(x), ref.best_estimator_.predict(x))


def test_a_failing_fit_counts_as_nan_and_all_failing_raise():
    from sklearn.base import BaseEstimator

    from flowvae.evaluation.probe import _cross_validate

    class Picky(BaseEstimator):
        def __init__(self, C=1.0):
            self.C = C

        def fit(self, x, y):
            if self.C == 2.0:
                raise ValueError("no fit")
            return self

        def score(self, x, y):
            return 0.5

    x, y = _digit_features(90)
    assert _cross_validate(Picky(), "C", [2.0, 1.0], x, y, 0, "probe", 1) == (1.0, 0.5)  # as GridSearchCV
    with pytest.raises(ValueError, match="all 3 cross-validation fits failed: ValueError: no fit"):
        _cross_validate(Picky(), "C", [2.0], x, y, 0, "probe", 1)


@pytest.fixture
def probe_data():
    from flowvae.data.base import ImageData

    tr, te = load_digits("train"), load_digits("test")
    return (ImageData(tr.images[:150], tr.labels[:150], "digits/train"),
            ImageData(te.images[:40], te.labels[:40], "digits/test"))


def test_the_pixel_probe_is_cached_and_a_bad_entry_is_recomputed(tiny_runs, probe_data, tmp_path, monkeypatch, caplog):
    import flowvae.evaluation.probe as probe_mod
    from flowvae import load_run
    from flowvae.evaluation.representations import pixel_probe_cache_path, probe_run

    monkeypatch.setenv("FLOWVAE_CACHE", str(tmp_path / "cache"))
    fits: list[str] = []
    real = probe_mod.linear_probe

    def counted(*a, **kw):
        fits.append(kw["desc"])
        return real(*a, **kw)

    monkeypatch.setattr(probe_mod, "linear_probe", counted)
    model = load_run(tiny_runs["flowvae"])
    train_d, test_d = probe_data
    with caplog.at_level(logging.INFO, logger="flowvae"):
        first = probe_run(model, train_d, test_d, C=0.01)
    assert fits == ["probe z", "probe v", "probe pixels"]
    # 40 test images: accuracies move in steps of 2.5 points, and the log says so
    assert "move in steps of 2.5 points" in caplog.text
    path = pixel_probe_cache_path(train_d, test_d, 0.01, "standard", 0)
    assert path.is_file() and path.parent == tmp_path / "cache" / "probes"

    fits.clear()
    assert probe_run(model, train_d, test_d, C=0.01)["results"]["pixels"] == first["results"]["pixels"]
    assert fits == ["probe z", "probe v"]  # the pixels came from the cache
    # other settings or other images: another entry
    assert pixel_probe_cache_path(train_d, test_d, 0.03, "standard", 0) != path
    other = type(test_d)(test_d.images.flip(0), test_d.labels.flip(0), test_d.name)
    assert pixel_probe_cache_path(train_d, other, 0.01, "standard", 0) != path

    good = json.loads(path.read_text())
    lied = {**good, "result": {**good["result"], "n_test": 41}}
    huge = {**good, "pad": "x" * 100_000}
    for bad in (b"not json", json.dumps(lied).encode(), json.dumps({**good, "key": "other"}).encode(),
                json.dumps(huge).encode(), b"[" * 30_000 + b"]" * 30_000, b"\xff\xfe"):
        path.write_bytes(bad)
        fits.clear()
        res = probe_run(model, train_d, test_d, C=0.01)
        assert fits[-1] == "probe pixels" and res["results"]["pixels"] == first["results"]["pixels"]
        assert json.loads(path.read_text()) == good  # rewritten
    # a link planted where the entry goes is neither read nor written through
    path.unlink()
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(good))
    path.symlink_to(outside)
    fits.clear()
    probe_run(model, train_d, test_d, C=0.01)
    assert fits[-1] == "probe pixels" and path.is_symlink()


# ----------------------------------------------------------------------------------------------
# training: set-up parts, plan, one wall time, the KL beside the probes


def test_training_logs_its_set_up_plan_and_one_wall_time(tmp_path, caplog):
    from flowvae.training import train

    run = tmp_path / "r"
    with caplog.at_level(logging.INFO, logger="flowvae"):
        train(_cfg("train.steps=4", "train.eval_every=2", "train.probe_images=100"), run, progress=False)
    text = caplog.text
    for part in ("set-up: data in", "set-up: flowvae model of", "set-up: data-dependent initialisation (ActNorm) "
                 "on 64 training images", "plan: 4 steps of batch 16, 0.0428 epochs of the 1,497 training images; "
                 "evaluation on 32 test images every 2 steps"):
        assert part in text, part
    # step 0 of a run that trains: bits/dim only, the probes and the switch score from the next point on
    assert "step 0: linear probes" not in text and "step 0: switch score" not in text
    assert "step 2: linear probes z " in text and " nats" in text.split("step 2: linear probes z ")[1].split("\n")[0]
    assert "step 2: switch score, 16 pairs: low frequencies follow z " in text
    setup = re.search(r"set-up took ([\d.]+) s \(data [\d.]+ s, model [\d.]+ s, initialisation [\d.]+ s, "
                      r"step-0 evaluation [\d.]+ s\)", text)
    assert setup, text
    recs = _records(run)
    assert [r["step"] for r in recs] == [0, 2, 4]
    # time_s: since train() started, so step 0's figure includes the set-up before it
    times = [r["time_s"] for r in recs]
    assert times == sorted(times) and times[0] > 0
    assert "probe_z" not in recs[0] and "switch_high_follows_v" not in recs[0]
    assert all(isinstance(r["z_collapsed"], bool) and r["z_collapsed"] == (r["test_kl"] < 1.0) for r in recs[1:])
    assert all(0 <= r[f"switch_{k}"] <= 1 for r in recs[1:] for k in ("low_follows_z", "colour_follows_z",
                                                                      "high_follows_v"))
    done = re.search(r"done: 4 steps in ([\d.]+) s of wall time", text)
    assert done and float(done.group(1)) == pytest.approx(times[-1], abs=0.05)  # the report's and the card's
    assert float(setup.group(1)) <= times[-1]
    html = (run / "report.html").read_text()
    assert 'id="probe-trend-table"' in html and html.count("<tr><td class=\"num\">") >= 2  # steps 2 and 4
    assert 'id="switch-trend"' in html and 'id="switch-plot"' in html  # the switch score over time


def test_the_wall_time_is_summed_over_resumed_sessions(tmp_path):
    from flowvae.runs.checkpoints import load_latest_checkpoint
    from flowvae.training import train

    run = tmp_path / "r"
    train(_cfg("train.steps=2", "train.eval_every=2"), run, progress=False)
    _, first = load_latest_checkpoint(run / "checkpoints")
    before = first["progress"]["elapsed_s"]
    assert before >= _records(run)[-1]["time_s"] - 0.005 and first["progress"]["eval_s"] > 0  # time_s is rounded
    time.sleep(0.3)  # time between sessions is not the run's
    start = time.time()
    train(_cfg("train.steps=4", "train.eval_every=2"), run, resume=True, progress=False)
    took = time.time() - start
    last = _records(run)[-1]
    assert last["step"] == 4 and before < last["time_s"] <= before + took


def test_a_collapsed_code_is_marked_in_the_report():
    from flowvae.evaluation.representations import collapse_note
    from flowvae.reporting.html import curves_section as _curves

    assert collapse_note(0.07).startswith("KL 0.07 nats: collapsed (below 1 nat)")
    assert collapse_note(7.4) == "KL 7.40 nats"
    assert collapse_note(0.997).startswith("KL 0.99 nats: collapsed (below 1 nat)")
    metrics = [{"step": s, "test_kl": kl, "probe_z": 0.61, "probe_v": 0.8, "z_collapsed": kl < 1}
               for s, kl in ((0, 0.1), (16, 0.07))]
    html = _curves(metrics)
    assert 'id="probe-trend-collapsed"' in html and "61.00%" in html and "0.070" in html
    metrics[-1].update(test_kl=3.0, z_collapsed=False)
    assert 'id="probe-trend-collapsed"' not in _curves(metrics)


def test_the_plan_warns_about_very_many_epochs(caplog):
    from flowvae.training.trainer import _log_plan

    cfg = _cfg("train.steps=20000", "train.batch_size=32", "train.time_limit_s=1200")
    with caplog.at_level(logging.INFO, logger="flowvae"):
        _log_plan(cfg, 360, 40, 120.0)
    assert "20,000 steps of batch 32, 1.78e+03 epochs of the 360 training images" in caplog.text
    assert ("every 120 s of wall time (train.eval_every_s: train.time_limit_s / 10; at most 10% of the time, "
            "train.eval_share)") in caplog.text
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 1 and "pass over the 360 training images 1,778 times" in warn[0]


def test_under_a_time_limit_evaluations_and_checkpoints_come_in_time(tmp_path):
    from flowvae.runs.checkpoints import list_checkpoints
    from flowvae.training import train

    run = tmp_path / "t"
    start = time.time()
    train(_cfg("train.steps=1000000", "train.eval_every=1000000", "train.checkpoint_every=1000000",
               "train.time_limit_s=4", "train.eval_every_s=0.5", "train.eval_share=0.5", "train.keep_checkpoints=100"),
          run, progress=False)
    took = time.time() - start
    recs = _records(run)
    assert len(recs) >= 4, recs  # step 0, then every 0.5 s (at most half the time evaluating), and the last
    # one checkpoint per time-based evaluation and the final one
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [f"ckpt-{r['step']:08d}.pt" for r in recs[1:]]
    assert recs[-1]["time_s"] <= 4.0 + 2.0 and took < 4.0 + 15  # the limit holds the run, set-up included


# ----------------------------------------------------------------------------------------------
# messages printed once


def test_a_held_out_split_is_logged_once(tmp_path, caplog):
    from PIL import Image

    from flowvae.config import DataConfig
    from flowvae.data.registry import open_split

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "f" / f"c{c}").mkdir(parents=True)
        for i in range(10):
            Image.fromarray((rng.random((8, 8)) * 255).astype("uint8")).save(tmp_path / "f" / f"c{c}" / f"{i}.png")
    with caplog.at_level(logging.INFO, logger="flowvae"):
        data = open_split(DataConfig(dataset="folder", root=str(tmp_path / "f")), "train")
    assert len(data) == 18
    assert sum("holding out 2 of 20 images" in r.getMessage() for r in caplog.records) == 1


def test_the_signal_message_goes_to_train_log_not_twice_to_the_terminal(tmp_path, monkeypatch, caplog):
    from flowvae.errors import TrainingInterrupted
    from flowvae.models import FlowVAE
    from flowvae.training import train

    real, calls = FlowVAE.loss, {"n": 0}

    def loss(self, x, generator=None, shard=None):
        calls["n"] += 1
        if calls["n"] == 3:  # during step 2 (call 1 is the data-dependent initialisation)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, x, generator, shard)

    monkeypatch.setattr(FlowVAE, "loss", loss)
    run = tmp_path / "s"
    with caplog.at_level(logging.INFO), pytest.raises(TrainingInterrupted, match="stopped by SIGINT after step 2"):
        train(_cfg("train.steps=10"), run, progress=False)
    # The command line prints the exception's message; the log keeps it for train.log only: on the
    # file-only logger, which does not pass it on to the terminal's handlers (pytest's capture
    # attaches to it directly, so it is seen here).
    assert {r.name for r in caplog.records if "stopped by SIGINT" in r.getMessage()} == {"flowvae.progress"}
    assert logging.getLogger("flowvae.progress").propagate is False
    assert "stopped by SIGINT after step 2" in (run / "train.log").read_text()



# ----------------------------------------------------------------------------------------------
# parameter counts: what gives densities and samples


def test_the_training_only_auxiliary_decoder_is_not_counted(tmp_path):
    import torch
    from safetensors.torch import save_file

    from flowvae.report import compare_runs, write_report

    run = tmp_path / "aux"
    run.mkdir()
    (run / "config.yaml").write_text("name: t\nmodel: {kind: flowvae, aux_decoder_weight: 1.0}\ndata: {}\ntrain: {}\n")
    save_file({"decoder.w": torch.zeros(10), "aux_decoder.net.w": torch.zeros(5), "decoder.initialized": torch.ones(1)},
              str(run / "model.safetensors"))
    html = compare_runs([run], tmp_path / "cmp.html").read_text()
    assert "<th>parameters (densities and samples)</th>" in html and '<td class="num">10</td>' in html
    page = write_report(run).read_text()
    assert re.search(r'id="param-count">10<', page) and "5 in the auxiliary decoder that only the training loss uses" in page
