"""The flow kinds end to end (the paper's FlowVAE and the Glow baselines, through the shared
FlowDecoderModel): exact encode/decode on real images, bits/dim known answers, the bounds, sampling,
and the errors users can cause; the class each kind gets and the deprecated names."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from flowvae.data import bins_to_uint8, load_dataset, load_digits, quantize, shared_data_dir
from flowvae.errors import ConfigError, DataError
from flowvae.flows import ActNorm, InvertibleConv1x1, data_init
from flowvae.models import FlowDecoderModel, FlowVAE, FlowVAEConfig, Glow, create_model
from flowvae.networks.layers import ZeroWeightNormConv2d, ZeroWeightNormLinear
from flowvae.presets import get_preset

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    images = load_digits("test").images
    assert images.dtype == torch.uint8 and images.shape == (300, 1, 8, 8)
    return images


def digits_cfg(**kw) -> FlowVAEConfig:
    return replace(get_preset("digits").model, **kw)


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0, gain: float = 0.3, scale: float = 0.02) -> None:
    """Move the model away from its identity-like initialisation (zero-gain output layers)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (ZeroWeightNormConv2d, ZeroWeightNormLinear)):
            sign = torch.where(torch.rand(m.weight_g.shape, generator=g) < 0.5, -1.0, 1.0)
            m.weight_g.copy_(sign * gain * (0.5 + torch.rand(m.weight_g.shape, generator=g)))
        for p in m.parameters(recurse=False):
            p.add_(torch.randn(p.shape, generator=g) * scale)


def trained_model(cfg: FlowVAEConfig, images: torch.Tensor, n_bits: int = 8, steps: int = 3,
                  seed: int = 0) -> FlowDecoderModel:
    """Data-initialised, perturbed and briefly trained: far from the identity."""
    torch.manual_seed(seed)
    model = create_model(cfg, n_bits)
    with torch.no_grad(), data_init(model):
        model.loss(images)
    assert all(bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm))
    perturb(model, seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        batch = images[(torch.arange(64) + 64 * i) % len(images)]
        loss, stats = model.loss(batch, generator=gen)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_model(digits) -> FlowDecoderModel:
    return trained_model(get_preset("digits").model, digits)


def assert_exact_round_trip(model: FlowDecoderModel, x: torch.Tensor, expected: torch.Tensor) -> None:
    z, v = model.encode(x)
    assert v.shape == (x.shape[0], model.dim) and v.dtype == torch.float32
    if model.uses_z:
        assert z.shape == (x.shape[0], model.cfg.d_z)
        # the model is far from trivial: codes differ between images ...
        assert z.std(0).min() > 1e-4
    back = model.decode(z, v)
    assert back.dtype == torch.uint8 and back.shape == x.shape
    mismatch = (back != expected).sum().item()
    assert torch.equal(back, expected), f"{mismatch} pixels differ"
    if model.uses_z:
        # ... and the decoder depends on z: the wrong code moves the reconstruction
        with torch.no_grad():
            right = model.decoder.inverse(v, z)[0]
            wrong = model.decoder.inverse(v, z.roll(1, 0))[0]
        assert (right - wrong).abs().max() > 1e-4


# ----------------------------------------------------------------------------------------------
# exact round trip on real images


def test_digits_round_trip_is_exact(digits, digits_model):
    assert_exact_round_trip(digits_model, digits, digits)


def test_digits_round_trip_refined_glow(digits):
    model = trained_model(digits_cfg(kind="refined_glow"), digits)
    z, _ = model.encode(digits)
    assert z is None
    assert_exact_round_trip(model, digits, digits)


@pytest.mark.parametrize("kind,steps", [("z_prior", [0, [2, 2], 2]), ("glow", [2, 2, 2])])
def test_digits_round_trip_and_training_of_the_baselines(digits, kind, steps):
    """The Table 3 baseline (z only in v's Gaussian) and the original Glow: exact round trip,
    and a few steps lower the loss."""
    cfg = digits_cfg(kind=kind, steps=steps, hidden=[8, 16, 16] if kind == "glow" else [8, 64, 64])
    if kind == "glow":
        cfg = replace(cfg, image_size=8)
        with pytest.raises(ConfigError, match="divisible by 2\\^levels"):
            create_model(replace(cfg, steps=[1, 1, 1, 1], hidden=[8] * 4))
    model = trained_model(cfg, digits, steps=3)
    z, _ = model.encode(digits)
    assert (z is None) == (kind == "glow")
    assert_exact_round_trip(model, digits, digits)
    if kind == "z_prior":  # z reaches only the Gaussian of v, not the couplings
        assert not any(n.startswith("decoder.glow") and ".cond." in n for n, _ in model.named_parameters())
    torch.manual_seed(0)
    fresh = create_model(cfg)
    with torch.no_grad(), data_init(fresh):
        fresh.loss(digits)
    opt = torch.optim.Adam(fresh.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(30):
        loss, _ = fresh.loss(digits[:128], gen)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 0.3


def test_digits_round_trip_5_bits(digits):
    model = trained_model(get_preset("digits").model, digits, n_bits=5, seed=1)
    expected = bins_to_uint8(quantize(digits, 5), 5)
    assert not torch.equal(expected, digits)  # 5 bits really loses information on these images
    assert_exact_round_trip(model, digits, expected)


MNIST_CFG = FlowVAEConfig(in_channels=1, image_size=28, steps=[0, [1, 1], 1], hidden=[4, 16, 16],
                        encoder_widths=[8, 8], d_z=4, prior_hidden=16)


def test_mnist_round_trip_is_exact():
    if not (shared_data_dir() / "mnist").is_dir():
        pytest.skip(f"real MNIST not available at {shared_data_dir() / 'mnist'}")
    images = load_dataset("mnist", "test").images[:64]
    assert images.shape == (64, 1, 28, 28)
    model = trained_model(MNIST_CFG, images, steps=2)
    assert_exact_round_trip(model, images, images)


# ----------------------------------------------------------------------------------------------
# bits/dim: known answers


def _expected_identity_bpd(x: torch.Tensor, n_bits: int, seed: int, log_scale=None, bias=None) -> torch.Tensor:
    """-(log p(x + u) - D log n_bins) / (D ln 2) for a flow v = exp(a) * x + b (per channel)
    followed by any rotation, with the same dequantisation noise as the model (same seed)."""
    bins = (x.long() >> (8 - n_bits)).float()
    u = torch.rand(bins.shape, generator=torch.Generator().manual_seed(seed))  # the model's first draw
    n_bins = 2 ** n_bits
    xc = ((bins + u) / n_bins - 0.5).double()
    d = x[0].numel()
    logdet = torch.zeros(x.shape[0], dtype=torch.float64)
    if log_scale is not None:
        a = log_scale.double().view(1, -1, 1, 1)
        xc = xc * a.exp() + bias.double().view(1, -1, 1, 1)
        logdet = logdet + x.shape[2] * x.shape[3] * log_scale.double().sum()
    log_p = (-0.5 * (xc ** 2 + LOG_2PI)).flatten(1).sum(1) + logdet
    return -(log_p - d * math.log(n_bins)) / (d * math.log(2))


@pytest.mark.parametrize("n_bits", [8, 5, 1])
@pytest.mark.parametrize("kind", ["refined_glow", "flowvae"])
def test_bpd_known_answer_volume_preserving_flow(digits, kind, n_bits):
    """A fresh model with every 1x1 convolution set to a signed permutation (lu = 0) is a
    volume-preserving permutation of coordinates: log p(x) = sum log N(x). For the flowvae kind,
    q(z|x) = N(0, I) = p(z) at initialisation, so the KL term is zero too."""
    torch.manual_seed(0)
    model = create_model(digits_cfg(kind=kind), n_bits).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, InvertibleConv1x1):
                m.lu.zero_()
    x = digits[:40]
    seed = 123
    out = model.bits_per_dim(x, 1, torch.Generator().manual_seed(seed))
    expected = _expected_identity_bpd(x, n_bits, seed)
    assert out["elbo_bpd"].shape == (40,)
    assert torch.allclose(out["elbo_bpd"].double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["iw_bpd"], out["elbo_bpd"], atol=1e-6)
    assert torch.allclose(out["kl"], torch.zeros(40), atol=1e-4)


def test_bpd_known_answer_scaled_actnorm():
    """Single-level refined Glow: ActNorm with a known scale and bias, then a random rotation and
    identity couplings: log p(x) = sum log N(exp(a) x + b) + H W sum(a)."""
    torch.manual_seed(0)
    cfg = FlowVAEConfig(kind="refined_glow", in_channels=3, image_size=4, steps=[1], hidden=[4])
    model = create_model(cfg).eval()
    actnorms = [m for m in model.modules() if isinstance(m, ActNorm)]
    a, b = torch.tensor([0.3, -0.5, 1.1]), torch.tensor([0.2, -0.1, 0.4])
    with torch.no_grad():
        actnorms[0].log_scale.copy_(a)
        actnorms[0].bias.copy_(b)
    x = torch.randint(0, 256, (16, 3, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = model.bits_per_dim(x, 1, torch.Generator().manual_seed(7))
    expected = _expected_identity_bpd(x, 8, 7, a, b)
    assert torch.allclose(out["elbo_bpd"].double(), expected, rtol=1e-5, atol=1e-5)
    # the log-determinant enters with the right sign: flipping it would change the answer
    wrong = expected + 2 * 16 * float(a.sum()) / (48 * math.log(2))
    assert not torch.allclose(out["elbo_bpd"].double(), wrong, rtol=1e-4)


def test_iw_bound_tighter_than_elbo(digits, digits_model):
    x = digits[:32]
    out = digits_model.bits_per_dim(x, 4, torch.Generator().manual_seed(3))
    for key in ("elbo_bpd", "iw_bpd", "kl"):
        assert out[key].shape == (32,) and torch.isfinite(out[key]).all()
    assert (out["iw_bpd"] <= out["elbo_bpd"] + 1e-9).all()
    assert (out["iw_bpd"] < out["elbo_bpd"] - 1e-6).any()  # strictly tighter once the samples differ
    # log_prob is the same importance-weighted bound in nats
    log_p = digits_model.log_prob(x, 4, torch.Generator().manual_seed(3))
    assert torch.allclose(-log_p / (digits_model.dim * math.log(2)), out["iw_bpd"], atol=1e-5)


def test_iw_equals_elbo_for_one_sample(digits, digits_model):
    out = digits_model.bits_per_dim(digits[:32], 1, torch.Generator().manual_seed(4))
    assert torch.allclose(out["iw_bpd"], out["elbo_bpd"], atol=1e-6)
    assert (out["kl"] != 0).any()


def test_loss_equals_bits_per_dim(digits, digits_model):
    x = digits[:32]
    assert not digits_model.training
    loss, stats = digits_model.loss(x, torch.Generator().manual_seed(5))
    out = digits_model.bits_per_dim(x, 1, torch.Generator().manual_seed(5))
    assert loss.dim() == 0 and loss.requires_grad
    assert torch.allclose(loss.detach(), out["elbo_bpd"].mean(), atol=1e-5)
    assert torch.allclose(stats["bpd"], loss.detach())
    assert torch.allclose(stats["kl"], out["kl"].mean(), atol=1e-4)
    # the same seed gives the same value, another seed a different one (the noise is used)
    again = digits_model.bits_per_dim(x, 1, torch.Generator().manual_seed(5))["elbo_bpd"]
    other = digits_model.bits_per_dim(x, 1, torch.Generator().manual_seed(6))["elbo_bpd"]
    assert torch.equal(again, out["elbo_bpd"]) and not torch.equal(other, out["elbo_bpd"])


def test_training_reduces_loss(digits):
    torch.manual_seed(0)
    model = create_model(get_preset("digits").model)
    with torch.no_grad(), data_init(model):
        model.loss(digits)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = digits[:64]
    first = None
    for _ in range(15):
        loss, _ = model.loss(x, torch.Generator().manual_seed(0))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.05


# ----------------------------------------------------------------------------------------------
# sampling


@pytest.mark.parametrize("kind", ["flowvae", "refined_glow"])
def test_sample_shapes_and_dtype(digits, kind):
    model = trained_model(digits_cfg(kind=kind), digits, n_bits=5, steps=1)
    for temperature in (0.0, 0.7, 1.0):
        s = model.sample(5, temperature)
        assert s.shape == (5, 1, 8, 8) and s.dtype == torch.uint8
        # 5-bit images: one of the 32 full-range values round(k * 255 / 31)
        allowed = torch.tensor([(k * 510 + 31) // 62 for k in range(32)], dtype=torch.uint8)
        assert torch.isin(s, allowed).all()
    a = model.sample(4, 1.0, generator=torch.Generator().manual_seed(0))
    b = model.sample(4, 1.0, generator=torch.Generator().manual_seed(0))
    c = model.sample(4, 1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_at_zero_temperature_is_deterministic(digits_model):
    a = digits_model.sample(3, temperature=0.0, global_temperature=0.0)
    b = digits_model.sample(3, temperature=0.0, global_temperature=0.0)
    assert torch.equal(a, b)
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])  # v = 0 and z = f^-1(0) for everyone
    # with z at full temperature, the images differ although v = 0: z carries information
    c = digits_model.sample(8, temperature=0.0, global_temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert any(not torch.equal(c[0], c[i]) for i in range(1, 8))


# ----------------------------------------------------------------------------------------------
# errors users can cause


@pytest.mark.parametrize("bad", [
    pytest.param(lambda x: x.repeat(1, 3, 1, 1), id="channels"),
    pytest.param(lambda x: x[:, :, :7, :7], id="size"),
    pytest.param(lambda x: x.float(), id="float"),
    pytest.param(lambda x: x.long(), id="int64"),
    pytest.param(lambda x: x[:, 0], id="3d"),
])
def test_bad_images_raise_data_error(digits, digits_model, bad):
    x = bad(digits[:4])
    with pytest.raises(DataError):
        digits_model.check_input(x)
    with pytest.raises(DataError):
        digits_model.encode(x)
    with pytest.raises(DataError):
        digits_model.loss(x)
    with pytest.raises(DataError):
        digits_model.bits_per_dim(x)
    digits_model.check_input(digits[:4])  # the good images pass


@pytest.mark.parametrize("cfg", [
    pytest.param(FlowVAEConfig(in_channels=1, image_size=6, steps=[0, [1, 1], 1], hidden=[4, 8, 8]), id="decoder"),
    pytest.param(FlowVAEConfig(in_channels=1, image_size=12, steps=[0, [1, 1], 1], hidden=[4, 8, 8],
                             encoder_widths=[4, 4, 4], d_z=4, prior_hidden=8), id="encoder"),
])
def test_image_size_not_divisible_raises_config_error(cfg):
    with pytest.raises(ConfigError, match="divisible"):
        create_model(cfg)


@pytest.mark.parametrize("n_bits", [0, 9, -1, 5.0, "8"])
def test_bad_n_bits_raises_config_error(n_bits):
    with pytest.raises(ConfigError, match="n_bits"):
        create_model(digits_cfg(), n_bits)


@pytest.mark.parametrize("n_bits", [1, 8])
def test_extreme_valid_n_bits(n_bits):
    assert create_model(digits_cfg(), n_bits).n_bins == 2 ** n_bits


def test_grey_images_need_zero_steps_at_full_resolution():
    with pytest.raises(ConfigError, match="channel"):
        create_model(digits_cfg(steps=[1, [1, 1], 1]))


@pytest.mark.parametrize("field,value,match", [
    ("kind", "maf", "kind"),
    ("coupling", "spline", "coupling"),
    ("steps", [0, [1, 1], [1, 1]], "plain step count"),
    ("hidden", [8, 64], "hidden"),
])
def test_other_bad_configs_raise_config_error(field, value, match):
    with pytest.raises(ConfigError, match=match):
        create_model(digits_cfg(**{field: value}))


def test_recompute_gives_the_same_model_gradients(digits, digits_model):
    """The memory-saving backward of the decoder, through the whole model (encoder via z too)."""
    x = digits[:16]

    def grads(recompute: bool):
        digits_model.decoder.recompute = recompute
        digits_model.zero_grad()
        loss, _ = digits_model.loss(x, torch.Generator().manual_seed(3))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in digits_model.named_parameters() if p.grad is not None}

    was = digits_model.training
    digits_model.eval()  # fixed BatchNorm statistics: both passes see the same encoder
    try:
        l0, g0 = grads(False)
        l1, g1 = grads(True)
    finally:
        digits_model.decoder.recompute = False
        digits_model.train(was)
    assert torch.equal(l0, l1) and g0.keys() == g1.keys()
    assert any(n.startswith("encoder") for n in g1)
    for n in g0:
        assert torch.allclose(g0[n], g1[n], rtol=1e-3, atol=1e-5), n


def test_variational_dequantization_bound_trains_and_keeps_round_trip(digits):
    cfg = digits_cfg(dequantization="variational", dequant_hidden=8)
    model = trained_model(cfg, digits, steps=3)
    assert_exact_round_trip(model, digits, digits)
    assert any(n.startswith("dequantizer") for n, _ in model.named_parameters())
    # every dequantizer parameter gets a gradient from the bound
    model.train()
    loss, _ = model.loss(digits[:32], torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("dequantizer")]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ConfigError, match="dequantization"):
        create_model(digits_cfg(dequantization="gaussian"))


def test_non_finite_decodes_become_black_pixels_with_a_warning(digits_model, caplog):
    """A sample far in the tails of v can overflow the inverse flow: one bad image must not fail a batch."""
    x = torch.zeros(3, 1, 8, 8)
    x[1, 0, 2, 3] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    out = digits_model.continuous_to_uint8(x)
    assert out.dtype == torch.uint8 and out[1, 0, 2, 3] == 0 and out[2, 0, 0, 0] == 0
    assert out[0, 0, 0, 0] == 128  # 0.0 is the middle bin
    assert "2 non-finite pixel values in 2 image(s)" in caplog.text


# ----------------------------------------------------------------------------------------------
# one base class for the flow kinds, one sampler, the names of earlier releases


@pytest.mark.parametrize("kind,cls", [("flowvae", FlowVAE), ("z_prior", FlowVAE), ("refined_glow", Glow),
                                      ("glow", Glow)])
def test_each_flow_kind_gets_its_class(kind, cls):
    model = create_model(digits_cfg(kind=kind, steps=[2, 2, 2] if kind == "glow" else [0, [2, 2], 2]))
    assert type(model) is cls and isinstance(model, FlowDecoderModel) and model.kind == kind
    assert (model.prior is None) == (kind in ("refined_glow", "glow"))


def test_flowvae_of_a_glow_config_is_the_same_model_with_a_warning():
    cfg = digits_cfg(kind="refined_glow")
    torch.manual_seed(0)
    glow = Glow(cfg)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="Glow"):
        old = FlowVAE(cfg)
    assert list(old.state_dict()) == list(glow.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), glow.state_dict().values()))
    assert old.capabilities == glow.capabilities and old.parameter_count() == glow.parameter_count()
    with pytest.raises(ConfigError, match="not 'flowvae'"):
        Glow(digits_cfg())


def test_the_names_of_earlier_releases_warn_and_still_work():
    import flowvae.models
    import flowvae.models.flowvae

    for module in (flowvae.models, flowvae.models.flowvae):
        with pytest.warns(DeprecationWarning, match="FlowVAEConfig"):
            assert module.ModelConfig is FlowVAEConfig


@pytest.mark.parametrize("kind", ["flowvae", "z_prior", "refined_glow", "glow"])
def test_draw_is_sample_with_the_continuous_values_behind_it(kind, digits):
    model = trained_model(digits_cfg(kind=kind, steps=[2, 2, 2] if kind == "glow" else [0, [2, 2], 2]), digits,
                          steps=1).eval()
    for t in (0.0, 0.7):
        drawn = model.draw(6, t, generator=torch.Generator().manual_seed(3))
        assert torch.equal(drawn.images, model.sample(6, t, generator=torch.Generator().manual_seed(3)))
        assert drawn.continuous is not None and drawn.saturated is not None
        assert drawn.continuous.shape == (6, 1, 8, 8) and drawn.saturated.shape == (6,)
        assert torch.equal(model.continuous_to_uint8(drawn.continuous), drawn.images)
    z, v = model.encode(digits[:4])
    decoded = model.decode_samples(z, v)
    assert torch.equal(decoded.images, model.decode(z, v)) and torch.equal(decoded.images, digits[:4])
    assert not decoded.saturated.any()
    assert model.inverse_error(digits[:16]) < 0.25
    if model.capabilities.global_local:
        pairs = model.switch_samples(digits[:3], digits[3:6])
        assert torch.equal(pairs.images, model.switch(digits[:3], digits[3:6]))
        assert pairs.saturated is not None and pairs.saturated.shape == (3, 4)
        assert pairs.continuous is not None and pairs.continuous.shape == (3, 4, 1, 8, 8)
    else:
        with pytest.raises(ConfigError, match="no global code"):
            model.draw(2, global_temperature=0.5)
