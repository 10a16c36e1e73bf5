"""Tests of the beta-TCVAE (flowvae.models.btcvae)."""

import math

import pytest
import torch

from flowvae.errors import ConfigError, DataError
from flowvae.models.btcvae import BTCVAE, BTCVAEConfig, log_importance_weight_matrix, log_qz_estimates


def _cfg(**kw):
    base = dict(in_channels=1, image_size=28, n_factors=4, conv_channels=[8, 8], hidden=32, dataset_size=1000)
    base.update(kw)
    return BTCVAEConfig(**base)


def _binary(n, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g) < 0.3).to(torch.uint8) * 255


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_terms_sum_to_monte_carlo_kl(estimator):
    torch.manual_seed(0)
    m = BTCVAE(_cfg(alpha=1.0, beta=1.0, gamma=1.0, estimator=estimator))
    x = _binary(256)
    t = m.decomposition(x, torch.Generator().manual_seed(1))
    mc_kl = (t["log_qzx"] - t["log_pz"]).mean()
    total = (t["mi"] + t["tc"] + t["dwkl"]).mean()
    assert torch.allclose(total, mc_kl, atol=1e-3)
    # the loss with unit weights is the negative single-sample ELBO
    loss, stats = m.loss(x, torch.Generator().manual_seed(1))
    assert torch.allclose(loss, -(t["log_px"] - mc_kl).mean(), rtol=1e-4, atol=1e-3)
    assert torch.allclose(stats["bpd"], stats["elbo_bpd"], rtol=1e-4)
    # and close to the closed-form ELBO (Monte Carlo KL vs analytic KL, large batch)
    closed = m.bits_per_dim(x, k=1)["kl"].mean()
    assert abs(mc_kl.item() - closed.item()) < 0.1 * closed.item() + 0.5


def test_mss_estimates_known_marginal():
    # q(z|n) = N(0, I) for every n: q(z) = N(0, I) and TC = 0 exactly; MSS weights sum to 1 -> exact.
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    mu, lv = torch.zeros_like(z), torch.zeros_like(z)
    log_qz, log_prod = log_qz_estimates(z, mu, lv, 5000, "mss")
    exact = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    assert torch.allclose(log_qz, exact, atol=1e-4)
    assert torch.allclose(log_prod, exact, atol=1e-4)
    # MWS (as published) is offset by -log N per log-density
    log_qz_w, log_prod_w = log_qz_estimates(z, mu, lv, 5000, "mws")
    assert torch.allclose(log_qz_w, exact - math.log(5000), atol=1e-4)
    assert torch.allclose(log_prod_w, exact - 3 * math.log(5000), atol=1e-4)


def test_mss_weight_matrix_structure():
    b, n = 6, 100
    w = log_importance_weight_matrix(b, n, dtype=torch.float64).exp()
    m = b - 1
    assert w.shape == (b, b)
    assert torch.allclose(w.sum(1), torch.ones(b, dtype=torch.float64))
    for i in range(b):
        assert w[i, i].item() == pytest.approx(1 / n)
        assert w[i, (i + 1) % b].item() == pytest.approx((n - m) / (n * m))
        others = [k for k in range(b) if k not in (i, (i + 1) % b)]
        assert torch.allclose(w[i, others], torch.full((len(others),), 1 / m, dtype=torch.float64))
    with pytest.raises(DataError):
        log_importance_weight_matrix(1, n)
    with pytest.raises(DataError):
        log_importance_weight_matrix(12, 5)


def test_loss_finite_and_decreasing():
    torch.manual_seed(0)
    m = BTCVAE(_cfg(image_size=32, dataset_size=64))
    x = _binary(64, size=32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss, stats = m.loss(x, g)
        assert torch.isfinite(loss) and set(stats) >= {"bpd", "kl"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_discretized_logistic_runs():
    torch.manual_seed(0)
    m = BTCVAE(_cfg(likelihood="discretized_logistic", in_channels=3, image_size=32))
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    loss, stats = m.loss(x)
    assert torch.isfinite(loss) and stats["bpd"] > 0
    out = m.bits_per_dim(x, k=2)
    assert out["elbo_bpd"].shape == (8,) and out["kl"].shape == (8,)
    assert torch.isfinite(out["iw_bpd"]).all()


def test_beta_weights_tc():
    torch.manual_seed(0)
    base = BTCVAE(_cfg(beta=1.0))
    x = _binary(32)
    for beta in (1.0, 6.0):
        m = BTCVAE(_cfg(beta=beta))
        m.load_state_dict(base.state_dict())
        loss, stats = m.loss(x, torch.Generator().manual_seed(3))
        if beta == 1.0:
            loss1, s1 = loss, stats
    assert torch.allclose(stats["tc"], s1["tc"]) and torch.allclose(stats["kl"], s1["kl"])
    assert torch.allclose(loss - loss1, 5.0 * s1["tc"], rtol=1e-4, atol=1e-4)
    # the gradient of the TC term is scaled too
    m6 = BTCVAE(_cfg(beta=6.0))
    m6.load_state_dict(base.state_dict())
    l6, _ = m6.loss(x, torch.Generator().manual_seed(3))
    l1, _ = base.loss(x, torch.Generator().manual_seed(3))
    g6 = torch.autograd.grad(l6, m6.encoder[-1].weight)[0]
    g1 = torch.autograd.grad(l1, base.encoder[-1].weight)[0]
    assert not torch.allclose(g6, g1)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes(size):
    torch.manual_seed(0)
    chans = [4, 4, 4, 4] if size == 64 else [4, 4]
    m = BTCVAE(_cfg(image_size=size, conv_channels=chans, n_factors=3))
    x = _binary(2, size=size)
    assert m.encode(x).shape == (2, 3)
    assert m.decode(torch.zeros(5, 3)).shape == (5, 1, size, size)
    assert m.reconstruct(x).dtype == torch.uint8
    s = m.sample(4, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, size, size) and s.dtype == torch.uint8
    tr = m.traverse(x[0], [-2.0, 0.0, 2.0], dims=[0, 2])
    assert tr.shape == (2, 3, 1, size, size) and tr.dtype == torch.uint8
    assert m.traverse(x[:1], [1.0]).shape == (3, 1, 1, size, size)
    bpd = m.bits_per_dim(x, k=2, generator=torch.Generator().manual_seed(0))
    assert bpd["elbo_bpd"].shape == (2,) and bpd["kl"].shape == (2,)


def test_traverse_changes_only_chosen_dim():
    torch.manual_seed(0)
    m = BTCVAE(_cfg())
    x = _binary(1)
    mu = m.encode(x)[0]
    a = m.traverse(x, [mu[1].item()], dims=[1])[0, 0]
    assert torch.equal(a, m.decode(mu[None])[0])


def test_bad_config_and_input():
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(image_size=30))
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(dataset_size=0))
    with pytest.raises(ConfigError, match="dataset_size"):  # buildable, but not trainable, without N
        BTCVAE(_cfg(dataset_size=None)).loss(_binary(4))
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(estimator="foo"))
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(likelihood="gaussian"))
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(beta=-1.0))
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(conv_channels=[4] * 6))
    with pytest.raises(ConfigError):
        BTCVAE(_cfg(n_factors=0))
    with pytest.raises(ConfigError):
        BTCVAE()
    m = BTCVAE(_cfg())
    with pytest.raises(DataError):
        m.loss(_binary(4).float())
    with pytest.raises(DataError):
        m.loss(_binary(4, size=32))
    with pytest.raises(DataError):
        m.loss(_binary(1))                     # MSS needs two images
    with pytest.raises(DataError):
        m.encode(torch.zeros(0, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError):
        m.decode(torch.zeros(2, 5))
    with pytest.raises(DataError):
        m.traverse(_binary(2), [0.0])
    with pytest.raises(ConfigError):
        m.traverse(_binary(1), [0.0], dims=[9])
    with pytest.raises(ConfigError):
        m.bits_per_dim(_binary(2), k=0)
    with pytest.raises(ConfigError):
        m.sample(0)
    with pytest.raises(ConfigError) as err:
        BTCVAE(_cfg(estimator="foo"))
    assert "\n" not in str(err.value) and "model.estimator" in str(err.value)
