"""Golden test: the authors' weights, mapped onto our model, give the authors' numbers.

``../shared/golden/wolf-cifar-reduced/`` holds a reduced copy of the paper's CIFAR-10 model run
through the authors' implementation (github.com/XuezheMax/wolf, commit 1d23ca2): their state dict,
8 test images, the dequantisation noise u and posterior noise eps they used, and their outputs.
Its README lists the layout-only conventions that differ; :func:`_map_state` applies them.
Tolerances are float32 ones: bits/dim 1e-5, v 1e-4, KL 1e-4.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import REPO

GOLDEN = REPO.parent / "shared" / "golden" / "wolf-cifar-reduced"
pytestmark = pytest.mark.skipif(not (GOLDEN / "name_map.json").is_file(),
                                reason=f"golden outputs not found at {GOLDEN} (../shared is absent)")


def _build(config: dict):
    """Our model of the golden configuration (``name_map.json``'s ``flowvae_config``)."""
    from flowvae.config import ModelConfig
    from flowvae.models import FlowVAE

    return FlowVAE(ModelConfig(**config), n_bits=8)


def _map_state(table: list[dict], wolf: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> dict:
    out = {}
    for row in table:
        name, op = row["flowvae"], row["op"]
        if op == "drop":
            continue
        if op == "true":
            out[name] = torch.ones_like(ours[name])
            continue
        t = wolf[row["wolf"]].clone()
        if op in ("flatten", "flatten+add_log2"):
            t = t.reshape(-1)
        if op == "flatten+add_log2":
            t = t + math.log(2.0)
        elif op == "copy+times2":
            t = t * 2
        elif op == "swap_halves":
            h = t.shape[0] // 2
            t = torch.cat([t[h:], t[:h]])
        elif op not in ("copy", "flatten"):
            raise AssertionError(f"unknown mapping op {op!r}")
        out[name] = t.reshape(ours[name].shape)
    return out


@pytest.fixture(scope="module")
def golden():
    from safetensors.torch import load_file

    meta = json.loads((GOLDEN / "name_map.json").read_text())
    wolf = load_file(str(GOLDEN / "wolf_state_dict.safetensors"))
    io = load_file(str(GOLDEN / "inputs_outputs.safetensors"))
    model = _build(meta["flowvae_config"])
    ours = model.state_dict()
    mapped = _map_state(meta["table"], wolf, ours)
    assert set(mapped) == set(ours), f"unmapped tensors: {sorted(set(ours) ^ set(mapped))[:5]}"
    model.load_state_dict(mapped)
    return model.eval(), io


def _forward(model, io):
    x8 = io["images_uint8"]
    bins = model.to_bins(x8)
    with torch.no_grad():
        mu, logvar = model.encoder(bins / 256 - 0.5)  # the authors' encoder sees the lower bin edges
        z = mu + torch.exp(0.5 * logvar) * io["eps"]
        x = (bins + io["u"]) / 256 - 0.5
        v, logdet = model.decoder(x, z)
        from flowvae.flows.glow import standard_normal_logprob

        log_px_z = standard_normal_logprob(v) + logdet
        log_q = -0.5 * (logvar + (z - mu) ** 2 / logvar.exp() + math.log(2 * math.pi)).sum(-1)
        kl = log_q - model.prior.log_prob(z)
        d = x[0].numel()
        bpd = -(log_px_z - kl - d * math.log(256)) / (d * math.log(2))
        x_inv, _ = model.decoder.inverse(v, z)
    return dict(mu=mu, logvar=logvar, z=z, x=x, v=v, logdet=logdet, log_px_z=log_px_z, kl=kl, bpd=bpd,
                x_inv=x_inv, d=d)


def test_golden_parameter_count(golden):
    model, _ = golden
    assert sum(p.numel() for p in model.parameters()) == 529_941


def test_golden_posterior_and_kl(golden):
    model, io = golden
    r = _forward(model, io)
    torch.testing.assert_close(r["mu"], io["wolf_mu"], rtol=0, atol=1e-5)
    torch.testing.assert_close(r["logvar"], io["wolf_logvar"], rtol=0, atol=1e-5)
    torch.testing.assert_close(r["z"], io["z"], rtol=0, atol=1e-5)
    torch.testing.assert_close(r["kl"], io["wolf_kl"], rtol=0, atol=1e-4)


def test_golden_flow_outputs(golden):
    model, io = golden
    r = _forward(model, io)
    shift = r["d"] * math.log(2)  # their pixels are on [-1, 1): logdet and log p(x+u|z) differ by D log 2
    torch.testing.assert_close(r["x"], (io["wolf_x_dequantised"] + 1) / 2 - 0.5, rtol=0, atol=1e-6)
    torch.testing.assert_close(r["v"], io["wolf_v_flowvae_layout"], rtol=0, atol=1e-4)
    torch.testing.assert_close(r["logdet"], io["wolf_logdet"].double().add(shift).float(), rtol=2e-6, atol=5e-3)
    torch.testing.assert_close(r["log_px_z"], io["wolf_log_px_given_z"].double().add(shift).float(),
                               rtol=2e-6, atol=5e-3)


def test_golden_bits_per_dim(golden):
    model, io = golden
    r = _forward(model, io)
    torch.testing.assert_close(r["bpd"], io["wolf_bpd"], rtol=0, atol=1e-5)


def test_golden_inverse(golden):
    model, io = golden
    r = _forward(model, io)
    torch.testing.assert_close(r["x_inv"], r["x"], rtol=0, atol=1e-5)  # ours: the exact inverse of eq. 1
    torch.testing.assert_close(r["x_inv"], (io["wolf_inverse_x"] + 1) / 2 - 0.5, rtol=0, atol=1e-4)
