"""Plain VAE (flowvae.models.vae, ``model.kind=vae``): config validation, shapes at 8/28/32/64 px,
the normalised pixel likelihood, the bounds of ``bits_per_dim``, sharded noise, the tools and their
errors, the presets, and a short run through the trainer to a loadable run folder. Tiny models; fast."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowvae
from flowvae.config import Config, DataConfig, apply_overrides, config_from_dict
from flowvae.data import load_digits
from flowvae.errors import ConfigError, DataError
from flowvae.maths import discretized_logistic_logprob
from flowvae.models import MODEL_KINDS, VAE, VAEConfig, create_model

D_Z = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from more threads, and on a busy machine spinning threads slow them
    several-fold; the trainer test's ``train.num_threads=1`` is undone afterwards too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_digits("test").images                                  # uint8 [300, 1, 8, 8]


def tiny(**kw) -> VAE:
    cfg = dict(in_channels=1, image_size=8, d_z=D_Z, conv_channels=[8, 16], hidden=32)
    cfg.update(kw)
    torch.manual_seed(0)
    return VAE(VAEConfig(**cfg))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def perturb(model: VAE, scale: float = 0.3) -> VAE:
    """Move the encoder's output layer so that posteriors differ from the prior (a sizeable KL)."""
    g = gen(1)
    for p in model.encoder[-1].parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))
    return model


# ----------------------------------------------------------------------------------------------
# configuration


def test_registered_and_built_from_presets():
    assert MODEL_KINDS["vae"] is VAE
    for name, size in (("digits-vae", 8), ("mnist-vae", 28)):
        cfg = flowvae.get_preset(name)
        model = flowvae.build_model(cfg)
        assert isinstance(model, VAE) and model.cfg.image_size == size and cfg.model.kind == "vae"
    # same data and training fields as the flow presets they are compared with
    for vae, flow in (("digits-vae", "digits"), ("mnist-vae", "mnist")):
        a, b = flowvae.get_preset(vae), flowvae.get_preset(flow)
        assert a.train == b.train and a.data == b.data and a.model.d_z == b.model.d_z
    # the config survives config.yaml, and --set model.kind=vae switches a flow preset to it
    cfg = flowvae.get_preset("digits-vae")
    assert config_from_dict(cfg.to_dict()).model == cfg.model
    switched = apply_overrides(flowvae.get_preset("digits"), ["model.kind=vae", "model.conv_channels=[8]"])
    assert isinstance(switched.model, VAEConfig) and switched.model.image_size == 8


@pytest.mark.parametrize("field,value", [
    ("d_z", 0), ("d_z", 2.5), ("d_z", "8"), ("hidden", 0), ("conv_channels", []), ("conv_channels", [8, 0]),
    ("conv_channels", 8), ("in_channels", 5), ("image_size", 1), ("kind", "flowvae"),
])
def test_bad_config_is_refused_in_one_line(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}") as e:
        VAEConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_too_many_levels_and_other_refusals():
    with pytest.raises(ConfigError, match="model.image_size 8 is too small") as e:
        VAEConfig(image_size=8, conv_channels=[4, 4, 4, 4])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="VAEConfig"):
        VAE({"d_z": 3})                                                # type: ignore[arg-type]
    for bits in (1, 5, 7):
        with pytest.raises(ConfigError, match=f"data.n_bits={bits}") as e:
            VAE(VAEConfig(image_size=8, conv_channels=[4]), n_bits=bits)
        assert "\n" not in str(e.value)
    cfg = Config(model=VAEConfig(image_size=8, conv_channels=[4]), data=DataConfig(dataset="digits", n_bits=5))
    with pytest.raises(ConfigError, match="8-bit"):
        create_model(cfg)


# ----------------------------------------------------------------------------------------------
# shapes and the likelihood


@pytest.mark.parametrize("c,size,levels", [(1, 8, [8, 8]), (1, 28, [8, 8, 8]), (3, 32, [8, 8, 8]), (3, 64, [4, 8])])
def test_shapes_and_dtypes(c, size, levels):
    torch.manual_seed(0)
    m = VAE(VAEConfig(in_channels=c, image_size=size, d_z=3, conv_channels=levels, hidden=16))
    x = torch.randint(0, 256, (5, c, size, size), dtype=torch.uint8)
    loss, stats = m.loss(x, gen())
    loss.backward()
    assert torch.isfinite(loss) and {"bpd", "kl", "recon"} <= set(stats)
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())
    torch.testing.assert_close(stats["bpd"], (stats["recon"] + stats["kl"]) / (c * size * size * math.log(2)))
    b = m.bits_per_dim(x, 3, gen())
    assert set(b) == {"elbo_bpd", "iw_bpd", "kl"} and all(v.shape == (5,) for v in b.values())
    assert m.encode(x).shape == m.latent_mean(x).shape == (5, 3)
    assert m.representations(x)["z"].shape == (5, 3)
    for out in (m.sample(2, generator=gen()), m.reconstruct(x), m.decode(torch.zeros(2, 3))):
        assert out.dtype == torch.uint8 and out.shape[1:] == (c, size, size)
    mean = m.reconstruction_mean(x)
    assert mean.dtype == torch.float32 and mean.shape == x.shape and 0 <= mean.min() and mean.max() <= 1
    assert m.reconstruction_bits(x).shape == (5,) and bool((m.reconstruction_bits(x) > 0).all())
    assert m.traverse(x[0], [-1.0, 0.0, 1.0], [0, 2]).shape == (2, 3, c, size, size)


def test_capabilities():
    m = tiny()
    assert m.capabilities.vector_latent and m.capabilities.reconstruction
    assert not (m.capabilities.global_local or m.capabilities.exact_codes or m.capabilities.groups
                or m.capabilities.bf16 or m.capabilities.recompute)
    assert m.latent_dim == D_Z and m.label_groups is None and m.kind == "vae"
    with pytest.raises(ConfigError, match="no global local capability") as e:
        m.require("global_local", "flowvae switch")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="bf16"):
        m.set_precision("bf16")


def test_pixel_likelihood_sums_to_one_over_256_values(digits):
    m = perturb(tiny())
    with torch.no_grad():
        mean, log_scale = m.decoder_params(m.encode(digits[:3]))
    # also at the extremes: the floor of the log-scale, wide scales, means beyond the pixel range
    mean = torch.cat([mean, torch.full_like(mean, 0.3), torch.full_like(mean, -1.7), torch.full_like(mean, 1.4)])
    log_scale = torch.cat([log_scale, torch.full_like(log_scale, -7.0), torch.full_like(log_scale, 2.0),
                           torch.full_like(log_scale, -3.0)])
    k = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1, 1)
    logp = discretized_logistic_logprob(k, mean.double(), log_scale.double())      # [256, B, C, H, W]
    torch.testing.assert_close(torch.logsumexp(logp, 0), torch.zeros_like(mean, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    # log_px is that likelihood summed over the pixels of each image
    z = torch.randn(2, D_Z, generator=gen(3))
    mu, ls = m.decoder_params(z)
    x = digits[:2]
    torch.testing.assert_close(m.log_px(x, z), discretized_logistic_logprob(x.float(), mu, ls).flatten(1).sum(1))


# ----------------------------------------------------------------------------------------------
# the bounds


def test_loss_is_the_negative_elbo_and_matches_bits_per_dim(digits):
    m = perturb(tiny())
    x = digits[:16]
    loss, stats = m(x, gen(5), None)                                           # as the trainer calls it
    loss2, _ = m.loss(x, gen(5))
    assert torch.equal(loss, loss2)
    b = m.bits_per_dim(x, k=1, generator=gen(5))                                # the same draw of z
    torch.testing.assert_close(b["elbo_bpd"].mean(), stats["bpd"])
    torch.testing.assert_close(b["kl"].mean(), stats["kl"])
    assert bool((b["kl"] > 0).all()) and float(stats["kl"]) > 0.2


def test_importance_weighted_bound(digits):
    """k = 1: iw_bpd is the single-sample Monte Carlo ELBO, equal to elbo_bpd (closed-form KL) only
    in expectation. Larger k: the bound tightens on average and stays below the ELBO."""
    m = perturb(tiny(), scale=0.5)
    x = digits
    one = m.bits_per_dim(x, k=1, generator=gen(2))
    diff = one["iw_bpd"] - one["elbo_bpd"]                                    # MC KL - closed-form KL, per image
    assert not torch.allclose(one["iw_bpd"], one["elbo_bpd"])
    se = diff.std() / math.sqrt(len(diff))
    assert abs(float(diff.mean())) < 5 * float(se) + 1e-6
    means = [float(m.bits_per_dim(x, k=k, generator=gen(2))["iw_bpd"].mean()) for k in (1, 4, 32)]
    assert means[0] > means[1] > means[2], means
    many = m.bits_per_dim(x, k=32, generator=gen(2))
    assert float(many["iw_bpd"].mean()) <= float(many["elbo_bpd"].mean()) + 1e-4
    # elbo_bpd averages the reconstruction over k draws; the KL is exact and does not depend on k
    torch.testing.assert_close(many["kl"], one["kl"])


def test_sharded_noise_matches_one_process(digits):
    m = perturb(tiny())
    x = digits[:8]
    full, _ = m.loss(x, gen(7))
    assert torch.equal(m.loss(x, gen(7), (0, 1))[0], full)
    halves = [m.loss(x[r * 4:(r + 1) * 4], gen(7), (r, 2))[0] for r in range(2)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, full)


# ----------------------------------------------------------------------------------------------
# tools


def test_sample_and_traverse(digits):
    m = perturb(tiny())
    a, b = m.sample(6, 0.8, generator=gen(4)), m.sample(6, 0.8, generator=gen(4))
    assert torch.equal(a, b) and a.shape == (6, 1, 8, 8) and a.dtype == torch.uint8
    cold = m.sample(3, 0.0, generator=gen(4))                                  # z = 0 for every sample
    assert torch.equal(cold, m.decode(torch.zeros(3, D_Z)))
    with pytest.raises(ConfigError, match="no global code"):
        m.sample(2, global_temperature=0.5)
    for bad in ({"n": 0}, {"n": 2.0}, {"n": 2, "temperature": -1.0}, {"n": 2, "temperature": math.nan}):
        with pytest.raises(ConfigError):
            m.sample(**bad)
    x = digits[:1]
    grid = m.traverse(x[0], [-2.0, 0.0, 2.0], dims=[1, 3])
    mu = m.latent_mean(x)[0]
    for a_, d in enumerate([1, 3]):
        for b_, v in enumerate([-2.0, 0.0, 2.0]):
            z = mu.clone()
            z[d] = v
            assert torch.equal(grid[a_, b_], m.decode(z[None])[0])
    assert m.traverse(x, [0.5]).shape == (D_Z, 1, 1, 8, 8)                      # default: every dimension
    torch.testing.assert_close(m.representations(digits[:5])["z"], m.latent_mean(digits[:5]))
    with pytest.raises(ConfigError, match="dims"):
        m.traverse(x, [0.0], dims=[D_Z])
    with pytest.raises(ConfigError, match="dim_values"):
        m.traverse(x, [])
    with pytest.raises(DataError, match="one image"):
        m.traverse(digits[:2], [0.0])


def test_bad_input_is_refused_in_one_line(digits):
    m = tiny()
    cases = [(digits[:4].float(), "uint8"), (digits[:4].repeat(1, 3, 1, 1), "do not fit"), (digits[0], "do not fit"),
             (digits[:0], "empty")]
    for x, msg in cases:
        for call in (m.loss, m.bits_per_dim, m.encode, m.representations, m.reconstruct, m.reconstruction_bits):
            with pytest.raises(DataError, match=msg) as e:
                call(x)
            assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no batch extras"):
        m.loss(digits[:4], groups=torch.zeros(4, dtype=torch.long))
    for z in (torch.zeros(2, D_Z + 1), torch.zeros(D_Z), torch.full((1, D_Z), math.nan), torch.zeros(2, D_Z).long()):
        with pytest.raises(DataError, match="latent codes"):
            m.decode(z)
    with pytest.raises(ConfigError, match="k must be"):
        m.bits_per_dim(digits[:2], k=0)


def test_reconstruction_quality_applies(digits):
    from flowvae.evaluation import reconstruction_quality

    m = perturb(tiny())
    rq = reconstruction_quality(m, digits[:32])
    assert rq["kind"] == "vae" and rq["n"] == 32 and rq["recon_bpd"] > 0 and 0 <= rq["mse"] <= 1
    torch.testing.assert_close(torch.tensor(rq["recon_bpd"]), m.reconstruction_bits(digits[:32]).mean(),
                               check_dtype=False)


# ----------------------------------------------------------------------------------------------
# training


def test_trains_through_the_trainer_to_a_loadable_run(tmp_path):
    from flowvae.training import train

    sets = ["train.steps=60", "train.eval_every=30", "train.checkpoint_every=30", "train.num_threads=1",
            "train.sample_temperatures=[1.0]", "train.warmup_steps=5", "data.test_limit=64",
            "model.conv_channels=[16, 16]", "model.hidden=64"]
    cfg = apply_overrides(flowvae.get_preset("digits-vae"), sets)
    last = train(cfg, tmp_path / "run", progress=False)
    assert last["step"] == 60 and math.isfinite(last["test_elbo_bpd"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[-1]["step"] == 60
    assert records[-1]["test_elbo_bpd"] < records[0]["test_elbo_bpd"] - 0.5, records
    model = flowvae.load_run(tmp_path / "run")
    assert isinstance(model, VAE) and not model.training and model.config.model.kind == "vae"
    x = load_digits("test").images[:64]
    again = model.bits_per_dim(x, 1, gen(cfg.train.seed))["elbo_bpd"]
    assert again.shape == (64,) and torch.isfinite(again).all()
    assert (tmp_path / "run" / "samples" / "samples_t1.00.png").is_file()
