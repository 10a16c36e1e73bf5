"""UG-VAE (flowvae.models.ugvae): the product of Gaussians against its closed form, every KL
term against Monte Carlo, the pixel likelihoods' normalisation, shapes and dtypes of the tools,
groups, training on the 8x8 digits, and the errors users can cause. Tiny MLP models; fast."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Normal

from flowvae.data import load_digits
from flowvae.errors import ConfigError, DataError
from flowvae.models.ugvae import (
    LIKELIHOODS,
    UGVAE,
    UGVAEConfig,
    discretized_gaussian_logprob,
    discretized_logistic_logprob,
    product_of_gaussians,
)

D_Z, D_BETA, K = 3, 2, 4


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    images = load_digits("test").images
    assert images.dtype == torch.uint8 and images.shape == (300, 1, 8, 8)
    return images


def tiny(**kw) -> UGVAE:
    cfg = dict(in_channels=1, image_size=8, d_local=D_Z, d_global=D_BETA, n_components=K, hidden=[32], encoder="mlp",
               decoder="mlp")
    cfg.update(kw)
    torch.manual_seed(0)
    return UGVAE(UGVAEConfig(**cfg))


@torch.no_grad()
def perturb(model: UGVAE, seed: int = 1, scale: float = 0.4) -> UGVAE:
    """Move the inference and prior heads away from their near-uniform start so the KLs are sizeable."""
    g = torch.Generator().manual_seed(seed)
    for head in (model.q_z, model.q_d, model.q_beta, model.p_z):
        for p in head.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_mc_close(samples: torch.Tensor, value: torch.Tensor, what: str) -> None:
    """``value`` within 5 standard errors (plus a hair) of the mean of ``samples``."""
    mean, se = samples.mean(), samples.std() / math.sqrt(samples.numel())
    assert abs(float(mean - value)) < 5 * float(se) + 1e-4, \
        f"{what}: closed form {float(value):.5f}, MC {float(mean):.5f} ± {float(se):.5f}"


# ----------------------------------------------------------------------------------------------
# product of Gaussians


def closed_form_product(mu: torch.Tensor, logvar: torch.Tensor, prior: bool) -> tuple[torch.Tensor, torch.Tensor]:
    prec = 1.0 / logvar.exp()                       # [N, d]
    total = prec.sum(0) + (1.0 if prior else 0.0)
    mean = (prec * mu).sum(0) / total               # the prior's mean is 0
    return mean, torch.log(1.0 / total)


@pytest.mark.parametrize("prior", [True, False])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_product_of_gaussians_closed_form(prior, n):
    g = gen(n)
    mu = torch.randn(n, 5, generator=g, dtype=torch.float64) * 3
    logvar = torch.randn(n, 5, generator=g, dtype=torch.float64) * 2
    m, lv = product_of_gaussians(mu, logvar, prior=prior)
    em, elv = closed_form_product(mu, logvar, prior)
    assert m.shape == (5,) and lv.shape == (5,)
    torch.testing.assert_close(m, em, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lv, elv, rtol=1e-10, atol=1e-10)
    if n == 1 and not prior:  # one factor and no prior: the factor itself
        torch.testing.assert_close(m, mu[0])
        torch.testing.assert_close(lv, logvar[0])
    if n == 1 and prior:  # N(mu, v) N(0, 1): variance v / (1 + v), mean mu / (1 + v)
        v = logvar[0].exp()
        torch.testing.assert_close(lv.exp(), v / (1 + v))
        torch.testing.assert_close(m, mu[0] / (1 + v))


def test_product_of_gaussians_extreme_and_edge_cases():
    # precisions spanning e^-30 .. e^30 stay finite (log-space accumulation)
    mu = torch.tensor([[1.0], [2.0], [-4.0]])
    logvar = torch.tensor([[30.0], [-30.0], [0.0]])
    m, lv = product_of_gaussians(mu, logvar, prior=True)
    assert torch.isfinite(m).all() and torch.isfinite(lv).all()
    assert abs(float(m) - 2.0) < 1e-5 and abs(float(lv) + 30.0) < 1e-5
    # no factors: the prior itself
    m0, lv0 = product_of_gaussians(torch.zeros(0, 3), torch.zeros(0, 3), prior=True)
    assert torch.equal(m0, torch.zeros(3)) and torch.equal(lv0, torch.zeros(3))
    # gradients flow to every input
    mu = torch.randn(4, 2, requires_grad=True)
    logvar = torch.randn(4, 2, requires_grad=True)
    m, lv = product_of_gaussians(mu, logvar)
    (m.sum() + lv.sum()).backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    with pytest.raises(DataError, match="same shape|one shape"):
        product_of_gaussians(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(DataError, match="zero factors"):
        product_of_gaussians(torch.zeros(0, 2), torch.zeros(0, 2), prior=False)


# ----------------------------------------------------------------------------------------------
# every KL term against Monte Carlo (20k samples)

N_MC = 20_000


@pytest.fixture(scope="module")
def kl_setup(digits):
    model = perturb(tiny()).double()
    x = digits[:6]
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    with torch.no_grad():
        t = model.elbo_terms(x, groups, gen(3))
    return model, t


def test_kl_beta_matches_monte_carlo(kl_setup):
    _, t = kl_setup
    g = gen(10)
    for j in range(t["beta_mu"].shape[0]):
        q = Normal(t["beta_mu"][j], (0.5 * t["beta_logvar"][j]).exp())
        p = Normal(torch.zeros(D_BETA, dtype=torch.float64), torch.ones(D_BETA, dtype=torch.float64))
        eps = torch.randn(N_MC, D_BETA, generator=g, dtype=torch.float64)
        b = t["beta_mu"][j] + (0.5 * t["beta_logvar"][j]).exp() * eps
        assert_mc_close(q.log_prob(b).sum(-1) - p.log_prob(b).sum(-1), t["kl_beta"][j], f"kl_beta[{j}]")
        assert t["kl_beta"][j] > 0


def test_kl_d_matches_monte_carlo(kl_setup):
    _, t = kl_setup
    torch.manual_seed(11)
    for i in range(t["log_pi"].shape[0]):
        q = Categorical(logits=t["log_pi"][i])
        d = q.sample((N_MC,))
        assert_mc_close(q.log_prob(d) + math.log(K), t["kl_d"][i], f"kl_d[{i}]")
    assert (t["kl_d"] > 1e-3).all()   # the perturbed q(d|x) is far from uniform


def test_kl_z_matches_monte_carlo(kl_setup):
    """kl_z_i = E_{d ~ q(d|x_i), z ~ q(z|x_i)} [log q(z|x_i) - log p(z | d, beta_{g(i)})] at the drawn beta."""
    _, t = kl_setup
    torch.manual_seed(12)
    for i in range(t["mu_z"].shape[0]):
        g_i = int(t["index"][i])
        qz = Normal(t["mu_z"][i], (0.5 * t["logvar_z"][i]).exp())
        d = Categorical(logits=t["log_pi"][i]).sample((N_MC,))
        z = qz.sample((N_MC,))
        pz = Normal(t["prior_mu"][g_i][d], (0.5 * t["prior_logvar"][g_i][d]).exp())
        assert_mc_close(qz.log_prob(z).sum(-1) - pz.log_prob(z).sum(-1), t["kl_z"][i], f"kl_z[{i}]")
        assert t["kl_z"][i] > 0


def test_kl_z_estimator_with_q_d_given_z(digits):
    """d_posterior="z" (the authors' q(d|z)): kl_z is -H[q(z|x)] - sum_k q(k|z) log p(z|k, beta) at the sampled z."""
    model = perturb(tiny(d_posterior="z")).double()
    with torch.no_grad():
        t = model.elbo_terms(digits[:5], generator=gen(4))
        expected = []
        for i in range(5):
            qz = Normal(t["mu_z"][i], (0.5 * t["logvar_z"][i]).exp())
            pz = Normal(t["prior_mu"][0], (0.5 * t["prior_logvar"][0]).exp())        # [K, d_z]
            log_p = pz.log_prob(t["z"][i]).sum(-1)                                       # [K]
            expected.append(-qz.entropy().sum() - (t["log_pi"][i].exp() * log_p).sum())
            # q(d | z) is evaluated at the sampled z
            torch.testing.assert_close(t["log_pi"][i], torch.log_softmax(model.q_d(t["z"][i]), -1))
    torch.testing.assert_close(t["kl_z"], torch.stack(expected))


def test_loss_is_the_sum_of_its_terms(kl_setup, digits):
    model, _ = kl_setup
    x, groups = digits[:6], torch.tensor([0, 0, 0, 1, 1, 2])
    with torch.no_grad():
        t = model.elbo_terms(x, groups, gen(3))
        loss, stats = model.loss(x, gen(3), groups=groups)
    b = 6
    expected = (-t["log_px"].sum() + t["kl_z"].sum() + t["kl_d"].sum() + t["kl_beta"].sum()) / b
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["kl"], (t["kl_z"].sum() + t["kl_d"].sum() + t["kl_beta"].sum()) / b)
    torch.testing.assert_close(stats["bpd"], loss / (64 * math.log(2)))
    assert float(stats["n_groups"]) == 3


# ----------------------------------------------------------------------------------------------
# pixel likelihoods


@pytest.mark.parametrize("f", [discretized_logistic_logprob, discretized_gaussian_logprob])
def test_discretized_likelihoods_are_normalised(f):
    k = torch.arange(256, dtype=torch.float64).view(256, 1)
    mean = torch.tensor([[-1.3, -0.5, 0.0, 0.2, 0.99, 1.5]], dtype=torch.float64)
    for log_scale in (-6.0, -4.0, -2.0, 0.0, 1.0):
        lp = f(k, mean, torch.full_like(mean, log_scale))
        assert torch.isfinite(lp).all()
        torch.testing.assert_close(lp.exp().sum(0), torch.ones(6, dtype=torch.float64), atol=2e-3, rtol=0)


def test_discretized_logistic_interior_bin_is_a_cdf_difference():
    k = torch.tensor([100.0], dtype=torch.float64)
    mean, log_scale = torch.tensor([-0.1], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64)
    c, s = 100 / 127.5 - 1, math.exp(-2.0)
    cdf = lambda v: 1 / (1 + math.exp(-(v - (-0.1)) / s))  # noqa: E731
    expected = math.log(cdf(c + 1 / 255) - cdf(c - 1 / 255))
    assert abs(float(discretized_logistic_logprob(k, mean, log_scale)) - expected) < 1e-9


def test_bernoulli_likelihood_is_cross_entropy(digits):
    model = tiny(likelihood="bernoulli")
    x = digits[:4]
    params = torch.randn(4, 1, 8, 8)
    t = x.float() / 255
    logsig = torch.nn.functional.logsigmoid
    expected = (t * logsig(params) + (1 - t) * logsig(-params)).flatten(1).sum(1)
    torch.testing.assert_close(model.log_px(x, params), expected)


# ----------------------------------------------------------------------------------------------
# tools: shapes, dtypes, groups


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_tool_shapes_and_dtypes(digits, likelihood):
    model = perturb(tiny(likelihood=likelihood))
    x = digits[:10]
    mu, lv = model.encode_group(x)
    assert mu.shape == (D_BETA,) and lv.shape == (D_BETA,) and mu.dtype == torch.float32
    d = model.cluster(x)
    assert d.shape == (10,) and d.dtype == torch.int64 and int(d.min()) >= 0 and int(d.max()) < K
    for kw in ({}, {"beta": mu}, {"temperature": 0.0}, {"pixel_noise": True}):
        s = model.sample_group(5, generator=gen(), **kw)
        assert s.shape == (5, 1, 8, 8) and s.dtype == torch.uint8
    assert model.sample(3, generator=gen()).shape == (3, 1, 8, 8)
    grid = model.interpolate_beta(torch.zeros(D_BETA), torch.ones(D_BETA), steps=4, n_per_step=3, generator=gen())
    assert grid.shape == (4, 3, 1, 8, 8) and grid.dtype == torch.uint8
    out = model.decode(torch.zeros(2, D_Z), mu)
    assert out.shape == (2, 1, 8, 8) and out.dtype == torch.uint8
    bpd = model.bits_per_dim(x, k=2, generator=gen())
    assert all(v.shape == (10,) and torch.isfinite(v).all() for v in bpd.values())
    assert set(model.describe()) >= {"parameters", "config"}


def test_interpolation_keeps_the_local_noise_fixed(digits):
    model = perturb(tiny())
    b1, b2 = torch.randn(D_BETA, generator=gen(1)), torch.randn(D_BETA, generator=gen(2))
    grid = model.interpolate_beta(b1, b2, steps=5, n_per_step=6, generator=gen(7))
    # the end rows are exactly sample_group at beta1 / beta2 with the same local draws
    assert torch.equal(grid[0], model.sample_group(6, beta=b1, generator=gen(7)))
    assert torch.equal(grid[-1], model.sample_group(6, beta=b2, generator=gen(7)))
    # beta1 == beta2: every step decodes the same images
    same = model.interpolate_beta(b1, b1, steps=3, n_per_step=6, generator=gen(7), pixel_noise=True)
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])


def test_three_groups_give_three_betas(digits):
    model = perturb(tiny())
    x = digits[:9]
    labels = torch.tensor([7, 2, 9, 7, 2, 9, 9, 2, 7])           # non-contiguous labels, interleaved
    t = model.elbo_terms(x, labels, gen())
    assert t["beta"].shape == (3, D_BETA) and t["prior_mu"].shape == (3, K, D_Z) and t["kl_beta"].shape == (3,)
    loss, stats = model.loss(x, gen(), groups=labels)
    assert torch.isfinite(loss) and float(stats["n_groups"]) == 3
    mu, lv = model.encode_group(x, labels)
    assert mu.shape == (3, D_BETA) and lv.shape == (3, D_BETA)
    for row, label in enumerate((2, 7, 9)):                       # rows in sorted label order
        m1, lv1 = model.encode_group(x[labels == label])
        torch.testing.assert_close(mu[row], m1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lv[row], lv1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prior", [True, False])
def test_groups_of_size_one(digits, prior):
    model = perturb(tiny(beta_prior_in_product=prior))
    x = digits[:5]
    loss, stats = model.loss(x, gen(), groups=torch.arange(5))
    assert torch.isfinite(loss) and float(stats["n_groups"]) == 5
    single_loss, _ = model.loss(digits[:1], gen())
    assert torch.isfinite(single_loss)
    mu, lv = model.encode_group(x[:1])
    h = model._features(x[:1])
    msg_mu, msg_lv = model._messages(h, model._log_pi(h, None))
    em, elv = closed_form_product(msg_mu.double(), msg_lv.double(), prior)
    torch.testing.assert_close(mu.double(), em, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lv.double(), elv, rtol=1e-5, atol=1e-6)


def test_trainer_interface_and_determinism(digits):
    model = perturb(tiny())
    x = digits[:8]
    a, sa = model(x, gen(5), None)                                 # as the trainer calls it
    b, sb = model.loss(x, gen(5))
    c, _ = model.loss(x, gen(5), (0, 1))                           # one-process shard: same draws
    assert torch.equal(a, b) and torch.equal(a, c) and {"bpd", "kl"} <= set(sa)
    assert all(not v.requires_grad for v in sa.values())
    # bits_per_dim with one draw is the loss, split per image
    bpd = model.bits_per_dim(x, k=1, generator=gen(5))
    torch.testing.assert_close(bpd["elbo_bpd"].mean(), sb["bpd"].float())
    assert model.set_precision("fp32") is model and model.cfg.kind == "ugvae"
    with pytest.raises(ConfigError, match="bf16 does not apply"):
        model.set_precision("bf16")
    with pytest.raises(TypeError, match="groups="):
        model.loss(x, torch.zeros(8, dtype=torch.long))


def test_importance_weighted_bound_is_tighter(digits):
    model = perturb(tiny())
    x = digits[:16]
    out = model.bits_per_dim(x, k=64, generator=gen(2), groups=torch.arange(16) % 4)
    assert float(out["iw_bpd"].mean()) <= float(out["elbo_bpd"].mean()) + 1e-4


def test_conv_networks_28_and_32_px():
    for c, size in ((1, 28), (3, 32)):
        torch.manual_seed(0)
        model = UGVAE(UGVAEConfig(in_channels=c, image_size=size, d_local=3, d_global=2, n_components=3, hidden=[16],
                                  conv_channels=[4, 8, 8]))
        x = torch.randint(0, 256, (4, c, size, size), dtype=torch.uint8)
        loss, _ = model.loss(x, gen())
        loss.backward()
        assert torch.isfinite(loss)
        assert model.sample_group(2, generator=gen()).shape == (2, c, size, size)


# ----------------------------------------------------------------------------------------------
# training on digits


@pytest.mark.parametrize("kw", [{}, {"likelihood": "bernoulli"}, {"d_posterior": "z"}])
def test_loss_decreases_on_digits(digits, kw):
    model = tiny(hidden=[64], **kw)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(0)
    x = digits[:128]
    losses = []
    for _ in range(30):
        loss, stats = model.loss(x, g)
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05 * abs(first), losses


# ----------------------------------------------------------------------------------------------
# errors


def test_bad_input_raises_data_error(digits):
    model = tiny()
    cases = [
        (digits[:4].repeat(1, 3, 1, 1), "do not fit"),               # wrong channels
        (digits[:4].float(), "uint8"),                               # not uint8
        (digits[0], "do not fit"),                                   # no batch dimension
        (digits[:0], "empty"),
    ]
    for x, msg in cases:
        for call in (lambda x=x: model.loss(x), lambda x=x: model.encode_group(x), lambda x=x: model.cluster(x)):
            with pytest.raises(DataError, match=msg) as e:
                call()
            assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="integer tensor"):
        model.loss(digits[:4], groups=torch.zeros(4))
    with pytest.raises(DataError, match="shape \\[4\\]"):
        model.loss(digits[:4], groups=torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="beta must be"):
        model.sample_group(2, beta=torch.zeros(D_BETA + 1))
    with pytest.raises(DataError, match="beta1 must be"):
        model.interpolate_beta(torch.zeros(3, D_BETA), torch.zeros(D_BETA))


@pytest.mark.parametrize("field,value,msg", [
    ("encoder", "cnn", "model.encoder"),
    ("decoder", "resnet", "model.decoder"),
    ("likelihood", "poisson", "model.likelihood"),
    ("n_components", 0, "model.n_components"),
    ("d_local", -1, "model.d_local"),
    ("d_global", 2.5, "model.d_global"),
    ("hidden", [], "model.hidden"),
    ("d_posterior", "y", "model.d_posterior"),
    ("decoder_beta", "yes", "model.decoder_beta"),
])
def test_bad_config_raises_config_error(field, value, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        tiny(**{field: value})
    assert "\n" not in str(e.value)


def test_bad_config_conv_too_small_and_bad_tool_arguments():
    with pytest.raises(ConfigError, match="too small"):
        UGVAE(UGVAEConfig(in_channels=1, image_size=8, encoder="conv", conv_channels=[4, 4, 4, 4]))
    with pytest.raises(ConfigError, match="UGVAEConfig"):
        UGVAE({"d_local": 3})
    model = tiny()
    with pytest.raises(ConfigError, match="n must be"):
        model.sample_group(0)
    with pytest.raises(ConfigError, match="temperature"):
        model.sample_group(2, temperature=-1.0)
    with pytest.raises(ConfigError, match="steps must be"):
        model.interpolate_beta(torch.zeros(D_BETA), torch.zeros(D_BETA), steps=0)


def test_ugvae_trains_through_the_trainer_with_label_groups(tmp_path):
    """`flowvae train` with model.kind=ugvae: class groups, a loadable run folder, exact resume."""
    from flowvae import load_run
    from flowvae.config import apply_overrides, load_config
    from flowvae.presets import get_preset
    from flowvae.training import train

    sets = ["model.kind=ugvae", "model.d_local=4", "model.d_global=4", "model.n_components=5", "model.hidden=[32]",
            "model.encoder=mlp", "model.decoder=mlp", "model.group_by=label", "model.groups_per_batch=4",
            "train.batch_size=32", "train.eval_every=10", "train.checkpoint_every=10", "train.num_threads=1",
            "train.sample_temperatures=[1.0]", "data.test_limit=64"]
    full = train(apply_overrides(get_preset("digits"), [*sets, "train.steps=20"]), tmp_path / "full", progress=False)
    assert full["step"] == 20 and torch.isfinite(torch.tensor(full["test_elbo_bpd"]))
    model = load_run(tmp_path / "full")
    assert type(model).__name__ == "UGVAE" and model.config.model.group_by == "label"
    # stop at 10, resume to 20: the grouped batches and every RNG stream continue exactly
    train(apply_overrides(get_preset("digits"), [*sets, "train.steps=10"]), tmp_path / "part", progress=False)
    cfg = load_config(tmp_path / "part" / "config.yaml")
    cfg.train.steps = 20
    (tmp_path / "part" / "model.safetensors").unlink()
    train(cfg, tmp_path / "part", resume=True, progress=False)
    a, b = model.state_dict(), load_run(tmp_path / "part").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
