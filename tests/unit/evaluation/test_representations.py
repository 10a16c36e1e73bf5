"""Switch, 2-D interpolation, linear probes and FID/KID (paper §3.2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowvae.cli.main import main
from flowvae.config import apply_overrides
from flowvae.data import load_digits, shared_data_dir
from flowvae.errors import DataError
from flowvae.evaluation.probe import linear_probe
from flowvae.flows import data_init
from flowvae.models import FlowVAE, create_model
from flowvae.presets import get_preset
from flowvae.runs.records import ProbeResult


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    cfg = get_preset("digits")
    model = FlowVAE(cfg.model)
    x = load_digits("test").images[:64]
    with torch.no_grad(), data_init(model):
        model.loss(x)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(20):  # move away from the identity initialisation
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x


def test_switch_diagonal_is_exact_and_off_diagonal_uses_other_code(model_and_images):
    model, x = model_and_images
    grid = model.switch(x[:8], x[8:16])
    assert grid.shape == (8, 4, 1, 8, 8) and grid.dtype == torch.uint8
    assert torch.equal(grid[:, 0], x[:8]) and torch.equal(grid[:, 2], x[8:16])
    z1, v1 = model.encode(x[:8])
    z2, _ = model.encode(x[8:16])
    assert torch.equal(grid[:, 1], model.decode(z2, v1))


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolation_corners_are_the_real_images(model_and_images, spherical):
    model, x = model_and_images
    grid = model.interpolate(x[0], x[1], spherical=spherical)
    assert grid.shape == (5, 11, 1, 8, 8)
    assert torch.equal(grid[0, 0], x[0]) and torch.equal(grid[-1, -1], x[1])
    # the switch operation is two corners of the interpolation (alpha=1, beta=0) and (0, 1)
    sw = model.switch(x[0:1], x[1:2])[0]
    assert torch.equal(grid[-1, 0], sw[1]) and torch.equal(grid[0, -1], sw[3])


def test_features_shapes(model_and_images):
    model, x = model_and_images
    f = model.features(x, batch_size=16)
    z, v = f["z"], f["v"]
    assert z.shape == (64, model.cfg.d_z) and v.shape == (64, 64)
    assert torch.allclose(z, model.encode(x)[0])


def test_probe_separable_data_scores_perfectly():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(size=(600, 5)) + 6 * np.eye(3, 5)[y]
    res = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert res["accuracy"] == 1.0 and res["n_train"] == 400 and res["dim"] == 5


def test_probe_noise_is_near_chance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 20)), rng.integers(0, 2, 2000)
    res = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:])
    assert 0.44 < res["accuracy"] < 0.56


def test_probe_authors_protocol_and_errors():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    x = rng.normal(size=(200, 3)) + 5 * y[:, None]
    assert linear_probe(x[:100], y[:100], x[100:], y[100:], protocol="authors")["accuracy"] > 0.95
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, np.zeros(200), x, y)


inception = shared_data_dir() / "inception" / "inception-2015-12-05.pt"
cifar_zip = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"


@pytest.mark.skipif(not (inception.is_file() and cifar_zip.is_file()),
                    reason="needs ../shared/data/inception and ../shared/data/cifar10-jpeg")
def test_fid_of_a_set_with_itself_is_zero_and_grows_under_corruption():
    from flowvae.data import load_cifar10_jpeg_zip
    from flowvae.evaluation.fid import InceptionFeatures, fid_kid

    real = load_cifar10_jpeg_zip(cifar_zip, "test", limit=24).images
    feats = InceptionFeatures(inception)
    assert feats.known
    same = fid_kid(real, real, feats, batch_size=12, kid_subset_size=12)
    g = torch.Generator().manual_seed(0)
    noisy = (real.float() + 60 * torch.randn(real.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    worse = fid_kid(real, noisy, feats, batch_size=12, kid_subset_size=12)
    assert abs(same["fid"]) < 1e-2
    # KID draws different random subsets of the two sets, so with 12-image subsets its value for
    # identical sets is only near zero; the corrupted set must be far above it.
    assert abs(same["kid_mean"]) < 0.1 and worse["kid_mean"] > same["kid_mean"] + 0.1
    assert worse["fid"] > 50
    assert same["n_real"] == 24 and same["inception_sha256"].startswith("7ff4a85c")


def test_cli_switch_interpolate_probe(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits", "--run", str(run), "--steps", "20", "-q", "--device", "cpu", "--set",
                 "train.eval_every=1000", "train.batch_size=32", "train.init_batch_size=128",
                 "train.sample_temperatures=[1.0]"]) == 0
    capsys.readouterr()
    assert main(["switch", str(run), "--pairs", "4", "--same-class", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["diagonal_exact"] and (run / "switch.png").is_file()
    assert main(["interpolate", str(run), "--json", "-q", "--index", "0", "5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["corners_exact"] and len(res["betas"]) == 11 and len(res["alphas"]) == 5
    assert main(["probe", str(run), "--train-limit", "500", "--C", "1", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["results"]) == {"z", "v", "pixels"}
    assert res["results"]["pixels"]["accuracy"] > 0.8  # digits are easy from pixels
    assert (run / "probe.json").is_file() and (run / "probe.md").is_file()
    probe = ProbeResult.from_dict(json.loads((run / "probe.json").read_text()), "probe.json")
    assert probe.to_dict() == res and probe.results["pixels"].n_train == 500


def test_code_kl_matches_the_closed_form_and_flags_a_collapsed_code(model_and_images):
    from flowvae.evaluation.representations import COLLAPSED_KL_NATS, code_kl
    from flowvae.maths import gaussian_kl
    from flowvae.models.vae import VAE

    torch.manual_seed(0)
    vae = VAE(get_preset("digits-vae").model).eval()
    with torch.no_grad():
        for p in vae.parameters():  # a posterior far from the prior, so the KL is large
            p.add_(torch.randn_like(p) * 0.2)
    x = load_digits("test").images[:256]
    mu, logvar = vae.posterior_moments(x)["z"]
    exact = float(gaussian_kl(mu, logvar).mean())
    assert exact > 5
    # one Monte Carlo sample per image: within a few standard errors of the closed form
    assert code_kl(vae, x, batch_size=100) == pytest.approx(exact, rel=0.1)
    # the flow model a few steps from its initialisation: KL near 0, below the collapse threshold
    model, xs = model_and_images
    assert 0 <= code_kl(model, xs) < COLLAPSED_KL_NATS
    glow = create_model(apply_overrides(get_preset("digits"), ["model.kind=refined_glow"]).model)
    assert code_kl(glow, xs) is None  # no z


# ----------------------------------------------------------------------------------------------
# probes during training (train.probe_images)


def test_probe_trend_scores_each_representation_without_touching_the_random_state(model_and_images):
    from flowvae.evaluation.representations import probe_trend  # noqa: PLC0415

    model, _ = model_and_images
    train_d, test_d = load_digits("train"), load_digits("test")
    model.train()
    state = torch.get_rng_state()
    res = probe_trend(model, train_d.images[:400], train_d.labels[:400], test_d.images[:200], test_d.labels[:200])
    assert set(res) == {"probe_z", "probe_v"}
    assert all(0.3 < v <= 1.0 for v in res.values()), res  # 10 classes: chance is 0.1
    assert torch.equal(torch.get_rng_state(), state) and model.training
    model.eval()
    with pytest.raises(DataError, match="one class"):
        probe_trend(model, train_d.images[:10], torch.zeros(10, dtype=torch.int64), test_d.images[:5], test_d.labels[:5])


def test_probes_during_training_are_logged_plotted_and_change_no_weight(tmp_path):
    from flowvae.training import train  # noqa: PLC0415
    from helpers.small import small_config as _cfg  # noqa: PLC0415

    runs = {}
    for probe in (0, 300):  # without probes or the switch score, and with both (switch_pairs: 64 by default)
        runs[probe] = tmp_path / f"p{probe}"
        train(_cfg("train.steps=20", "train.eval_every=10", f"train.probe_images={probe}",
                   *(["train.switch_pairs=0"] if probe == 0 else [])), runs[probe], progress=False)
    recs = [json.loads(line) for line in (runs[300] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 10, 20]
    assert "probe_z" not in recs[0]  # step 0 of a run that trains: bits/dim only
    assert all(0.0 <= r["probe_z"] <= 1.0 and 0.0 <= r["probe_v"] <= 1.0 for r in recs[1:])
    assert all(0.0 <= r["switch_high_follows_v"] <= 1.0 for r in recs[1:])
    assert "switch_" not in (runs[0] / "metrics.jsonl").read_text()
    assert "probe_z" not in (runs[0] / "metrics.jsonl").read_text()
    html = (runs[300] / "report.html").read_text()
    assert 'id="probe-plot"' in html and 'data-name="z"' in html and 'data-name="v"' in html
    assert 'id="probe-plot"' not in (runs[0] / "report.html").read_text()
    # the probes and the switch score draw no training noise: both runs end with the same weights, bit for bit
    from safetensors.torch import load_file  # noqa: PLC0415

    a, b = load_file(runs[0] / "model.safetensors"), load_file(runs[300] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_probes_during_training_are_skipped_with_a_warning_on_unlabelled_data(tmp_path, caplog):
    from flowvae.data import ImageData  # noqa: PLC0415
    from flowvae.training import train  # noqa: PLC0415
    from helpers.small import small_config as _cfg  # noqa: PLC0415

    digits = load_digits("train")
    unlabelled = ImageData(digits.images, None, "digits/unlabelled")
    with caplog.at_level("WARNING", logger="flowvae"):
        rec = train(_cfg("train.steps=1", "train.probe_images=50"), tmp_path / "r", progress=False,
                    train_data=unlabelled, test_data=load_digits("test"))
    assert not any(k.startswith("probe_") for k in rec)
    assert "train.probe_images: the training data (digits/unlabelled) has no class labels" in caplog.text
    # labelled ImageData, which train() takes as it is (it was refused as "not a map-style dataset")
    rec = train(_cfg("train.steps=1", "train.probe_images=50"), tmp_path / "ok", progress=False,
                train_data=digits, test_data=load_digits("test"))
    assert {"probe_z", "probe_v"} <= set(rec)


def test_the_report_plots_only_probe_keys_that_are_short_identifiers():
    from flowvae.reporting.html import curves_section as _curves  # noqa: PLC0415

    metrics = [{"step": s, "train_bpd": 5.0, "test_elbo_bpd": 5.0, "test_kl": 1.0, "probe_z": 0.5 + s / 100,
                "probe_<script>": 0.1, "probe_v": "not a number"} for s in (0, 10)]
    html = _curves(metrics)
    assert 'data-name="z"' in html and "<script>" not in html and 'data-name="v"' in html
