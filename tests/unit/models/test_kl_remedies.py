"""Remedies for posterior collapse, departures from the paper and off by default: KL warm-up
(``train.kl_warmup_steps``, the ``kl_weight`` of every kind's loss) and free bits
(``model.free_bits``). The loss is the weighted objective, evaluation the true ELBO, a resumed
warm-up is bitwise an uninterrupted one, and kinds without a KL term refuse both."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from flowvae.config import apply_overrides
from flowvae.errors import ConfigError
from flowvae.evaluation.bpd import evaluate_bpd
from flowvae.models import FlowVAE
from flowvae.models.btcvae import BTCVAE, BTCVAEConfig
from flowvae.models.flowvae import FlowVAEConfig
from flowvae.models.multistage import MultiStage, MultiStageConfig
from flowvae.models.ugvae import UGVAE, UGVAEConfig
from flowvae.models.vae import VAE, VAEConfig
from flowvae.presets import get_preset
from flowvae.training import train
from flowvae.training.trainer import kl_warmup_weight
from helpers.small import assert_same_weights, metrics_rows
from helpers.small import resume_config as _cfg

# The refined-Glow family at its smallest (the FLOW recipe of tests/helpers/tiny.py).
FLOW = dict(in_channels=1, image_size=8, steps=[0, [1, 1], 1], hidden=[4, 8, 8], encoder_widths=[8], d_z=4,
            prior_steps=1, prior_hidden=8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def _flow(kind: str = "flowvae", **kw) -> FlowVAE:
    torch.manual_seed(0)
    return FlowVAE(FlowVAEConfig(kind=kind, **FLOW, **kw))  # type: ignore[arg-type]


def _scramble_encoder(model: torch.nn.Module) -> None:
    """Random encoder weights: q(z|x) away from the prior, so the KL is well above 0 (at
    initialisation the last layer is zero and q(z|x) = N(0, I))."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.encoder.parameters():  # type: ignore[union-attr]
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _kinds() -> dict[str, tuple[torch.nn.Module, torch.Tensor, float]]:
    """Tiny models of every kind with a KL term, a batch for each and the loss's scale (nats per
    unit of the loss: D ln 2 for the flow kinds, whose loss is in bits/dim; 1 for the others)."""
    torch.manual_seed(0)
    out: dict[str, tuple[torch.nn.Module, torch.Tensor, float]] = {}
    for kind in ("flowvae", "z_prior"):
        m = _flow(kind)
        _scramble_encoder(m)
        out[kind] = (m, _images(8, 8), 64 * math.log(2))
    torch.manual_seed(0)
    vae = VAE(VAEConfig(in_channels=1, image_size=8, d_z=3, conv_channels=[4], hidden=16))
    _scramble_encoder(vae)
    out["vae"] = (vae, _images(8, 8), 1.0)
    torch.manual_seed(0)
    out["btcvae"] = (BTCVAE(BTCVAEConfig(image_size=28, n_factors=3, conv_channels=[4, 4], hidden=16,
                                         dataset_size=100)), _images(8, 28), 1.0)
    torch.manual_seed(0)
    out["ugvae"] = (UGVAE(UGVAEConfig(in_channels=1, image_size=8, d_local=3, d_global=2, n_components=3,
                                      hidden=[16], encoder="mlp", decoder="mlp")), _images(8, 8), 1.0)
    return out


def _kl_part(model, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The term ``kl_weight`` multiplies, from the paper-objective stats, in nats per image: the
    KL, or the beta-TCVAE's weighted decomposition of it."""
    if isinstance(model, BTCVAE):
        c = model.cfg
        return c.alpha * stats["mi"] + c.beta * stats["tc"] + c.gamma * stats["dwkl"]
    return stats["kl"]


# ----------------------------------------------------------------------------------------------
# the weighted loss


@pytest.mark.parametrize("kind", ["flowvae", "z_prior", "vae", "btcvae", "ugvae"])
def test_the_loss_with_kl_weight_w_is_recon_plus_w_times_the_kl(kind):
    model, x, scale = _kinds()[kind]
    paper, stats = model.loss(x, _gen())
    recon, _ = model.loss(x, _gen(), kl_weight=0.0)
    kl = _kl_part(model, stats)
    assert float(kl) > 0.05  # a KL worth weighting
    # the paper's objective splits into the reconstruction and the KL term
    torch.testing.assert_close(paper * scale, recon * scale + kl)
    # the plain negative ELBO in bits/dim (the beta-TCVAE's objective is not one even at weight 1)
    elbo = stats["elbo_bpd"] if kind == "btcvae" else paper * scale / (x[0].numel() * math.log(2))
    assert ("elbo_bpd" in stats) == (kind == "btcvae")  # the paper's objective is its own ELBO
    for w in (0.25, 0.6):
        loss, s = model.loss(x, _gen(), kl_weight=w)
        torch.testing.assert_close(loss * scale, recon * scale + w * kl)
        torch.testing.assert_close(s["elbo_bpd"], elbo)  # what the trainer logs beside the loss
        # the trainer passes a 0-dim tensor: the same number, bit for bit
        as_tensor, _ = model.loss(x, _gen(), kl_weight=torch.tensor(w))
        assert torch.equal(as_tensor, loss)
        assert torch.equal(s["kl"], stats["kl"])  # stats' kl stays the plain KL
    # weight 1 is the paper's objective computed as it always was
    one, _ = model.loss(x, _gen(), kl_weight=1.0)
    assert torch.equal(one, paper)


# ----------------------------------------------------------------------------------------------
# the warm-up schedule


def test_the_warmup_weight_rises_linearly_to_one_and_stays_there():
    assert kl_warmup_weight(0, 100) == 0.0
    assert kl_warmup_weight(50, 100) == 0.5
    assert kl_warmup_weight(99, 100) == 0.99
    assert kl_warmup_weight(100, 100) == 1.0
    assert kl_warmup_weight(10_000, 100) == 1.0
    assert kl_warmup_weight(0, 100, 0.2) == 0.2 and kl_warmup_weight(50, 100, 0.2) == pytest.approx(0.6)
    assert kl_warmup_weight(100, 100, 0.2) == 1.0  # exactly 1, not 0.2 + 0.8 rounded
    assert kl_warmup_weight(0, 0) == 1.0  # off


# ----------------------------------------------------------------------------------------------
# free bits


def _grads(model: torch.nn.Module, x: torch.Tensor, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(x, _gen(), **kw)
    loss.backward()
    return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("kind", ["flowvae", "vae"])
def test_free_bits_stop_the_kl_gradient_below_the_floor_and_change_nothing_above(kind):
    model, x, scale = _kinds()[kind]
    _, stats = model.loss(x, _gen())
    kl = float(stats["kl"])
    assert kl > 0.5
    base = model.cfg
    # below the floor: the KL term is the constant F; its gradient is zero, the loss recon + F
    model.cfg = base.replace(free_bits=kl + 3.0)
    loss, grads = _grads(model, x)
    recon, no_kl = _grads(model, x, kl_weight=0.0)
    torch.testing.assert_close(loss * scale, recon * scale + torch.tensor(kl + 3.0))
    for a, b in zip(grads, no_kl):
        assert torch.equal(a, b)
    # above it: the loss and gradients of the plain KL (on the same weighted code path)
    model.cfg = base.replace(free_bits=kl / 2)
    loss, grads = _grads(model, x)
    model.cfg = base
    plain, plain_grads = _grads(model, x, kl_weight=torch.tensor(1.0))
    assert torch.equal(loss, plain)
    for a, b in zip(grads, plain_grads):
        assert torch.equal(a, b)
    # the floor is on the batch mean (one group of latents), not on each image's KL: with F
    # between the smallest image's KL and the mean, the loss is recon + mean KL
    per_image = _per_image_kl(kind, model, x)
    torch.testing.assert_close(per_image.mean(), stats["kl"])
    floor = float(per_image.min() + per_image.mean()) / 2
    assert per_image.min() < floor < per_image.mean()
    model.cfg = base.replace(free_bits=floor)
    loss, _ = model.loss(x, _gen())
    model.cfg = base
    torch.testing.assert_close(loss * scale, recon * scale + per_image.mean())


def _per_image_kl(kind: str, model, x: torch.Tensor) -> torch.Tensor:
    """The KL of each image ``[B]`` (nats) with the noise of ``_gen()``."""
    with torch.no_grad():
        if kind == "vae":
            from flowvae.maths import gaussian_kl

            return gaussian_kl(*model._q(x))
        return model.log_weights(model.to_bins(x), 1, _gen())["kl"][:, 0]


def test_evaluation_reports_the_true_elbo_whatever_the_remedies():
    model = _flow(free_bits=0.0)
    _scramble_encoder(model)
    model.eval()
    x = _images(16, 8)
    plain = evaluate_bpd(model, x, 2, seed=1)
    model.cfg = model.cfg.replace(free_bits=8.0)
    assert evaluate_bpd(model, x, 2, seed=1) == plain  # same weights, same bits/dim
    assert model.bits_per_dim(x, 1, _gen())["elbo_bpd"].equal(
        _flow_with(model, free_bits=0.0).bits_per_dim(x, 1, _gen())["elbo_bpd"])


def _flow_with(model: FlowVAE, **kw) -> FlowVAE:
    other = FlowVAE(model.cfg.replace(**kw))
    other.load_state_dict(model.state_dict())
    return other.eval()


# ----------------------------------------------------------------------------------------------
# kinds without a KL term


def test_kinds_without_a_kl_term_refuse_both_settings_in_one_line(tmp_path):
    for kind in ("refined_glow", "glow"):
        with pytest.raises(ConfigError, match="model.free_bits applies to the kinds with a global code z"):
            FlowVAEConfig(kind=kind, free_bits=1.0)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="no KL term"):
            _flow(kind).loss(_images(4, 8), _gen(), kl_weight=0.5)
    for preset in ("dsprites-btcvae", "mnist-ugvae", "dsprites-multistage"):
        with pytest.raises(ConfigError, match="unknown config field model.free_bits"):
            apply_overrides(get_preset(preset), ["model.free_bits=1"])
    with pytest.raises(ConfigError, match="kl_warmup_start=0.5 has no effect without train.kl_warmup_steps"):
        apply_overrides(get_preset("digits"), ["train.kl_warmup_start=0.5"])
    # the multi-stage model's code is a function of x: no KL, and its loss refuses a weight
    ms = MultiStage(MultiStageConfig(image_size=28, steps=[0, [1, 1], 1], hidden=[4, 8, 8],
                                     stage1=BTCVAEConfig(image_size=28, n_factors=3, conv_channels=[4, 4], hidden=16)))
    assert not ms.kl_term
    with pytest.raises(ConfigError, match="no KL term"):
        ms.loss(_images(2, 28), _gen(), kl_weight=0.5)
    # the trainer refuses before it writes anything
    cfg = _cfg("model.kind=refined_glow", "train.kl_warmup_steps=10", "train.steps=2")
    with pytest.raises(ConfigError, match="train.kl_warmup_steps applies to models with a KL term") as e:
        train(cfg, tmp_path / "rg", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "rg").exists()


# ----------------------------------------------------------------------------------------------
# training: resume, labels, evaluation


# The split at step 6 is an evaluation step of both runs (a run stopping at train.steps evaluates there).
WARM = ("train.kl_warmup_steps=8", "model.free_bits=0.5", "train.eval_every=3", "train.checkpoint_every=1000")


@contextmanager
def _info_log() -> Iterator[None]:
    """The ``flowvae`` logger at INFO, as under the command line, so that train.log gets the INFO lines."""
    logger = logging.getLogger("flowvae")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("kl") / "full"
    with _info_log():
        train(_cfg(*WARM, "train.steps=12"), run, progress=False)
    return run


def test_a_resumed_warmup_is_bitwise_an_uninterrupted_one(warm_run, tmp_path):
    part = tmp_path / "part"
    train(_cfg(*WARM, "train.steps=6"), part, progress=False)  # stops in the middle of the warm-up
    train(_cfg(*WARM, "train.steps=12"), part, resume=True, progress=False)
    assert_same_weights(warm_run, part)
    assert metrics_rows(warm_run) == metrics_rows(part)
    # each record carries the weight of the update that led to it
    assert [(r["step"], r["kl_weight"]) for r in metrics_rows(warm_run)] == [(0, 0.0), (3, 0.25), (6, 0.625), (9, 1.0),
                                                                        (12, 1.0)]
    # changing the warm-up on resume changes the objective: refused without --allow-changes
    with pytest.raises(ConfigError, match="train.kl_warmup_steps 8 -> 32"):
        train(_cfg(*WARM[1:], "train.kl_warmup_steps=32", "train.steps=20"), part, resume=True, progress=False)


def test_a_departing_run_logs_the_plain_elbo_beside_its_loss(warm_run, tmp_path):
    recs = metrics_rows(warm_run)
    assert "train_elbo_bpd" not in recs[0]  # step 0: no training yet
    assert all(math.isfinite(r["train_elbo_bpd"]) and r["train_elbo_bpd"] != r["train_bpd"] for r in recs[1:])
    # the log line every 100 steps names which figure is the loss
    run = tmp_path / "hundred"
    with _info_log():
        train(_cfg(*WARM, "train.steps=100", "train.eval_every=100"), run, progress=False)
    line = next(ln for ln in (run / "train.log").read_text().splitlines() if "step 100: train" in ln)
    assert "bits/dim (running mean of the loss; negative ELBO " in line, line
    assert f"negative ELBO {metrics_rows(run)[-1]['train_elbo_bpd']:.4f})" in line


def test_the_run_is_labelled_and_evaluation_is_that_of_the_paper(warm_run, tmp_path):
    log = (warm_run / "train.log").read_text()
    assert "departure from the paper: KL warm-up over 8 steps" in log
    assert "departure from the paper: free bits of 0.5 nats" in log
    env = json.loads((warm_run / "environment.json").read_text())
    assert env["departures_from_paper"] == ["KL warm-up over 8 steps", "free bits of 0.5 nats"]
    html = (warm_run / "report.html").read_text()
    assert '<p id="departures">Departures from the paper: KL warm-up over 8 steps' in html
    # the step-0 evaluation (same initialisation) equals the paper run's: evaluation ignores the remedies
    paper = tmp_path / "paper"
    with _info_log():
        train(_cfg("train.steps=0"), paper, progress=False)
    assert metrics_rows(paper)[0]["test_elbo_bpd"] == metrics_rows(warm_run)[0]["test_elbo_bpd"]
    assert "kl_weight" not in metrics_rows(paper)[0] and "train_elbo_bpd" not in metrics_rows(paper)[0]
    assert "departures" not in (paper / "report.html").read_text()
    assert "departure" not in (paper / "train.log").read_text()


def test_the_local_decoder_is_a_labelled_architecture_departure():
    """``model.coupling_kernel`` (3 in eq. 7) changes the architecture, not the objective: the run
    and its report say so, and an even kernel (which would shift the output) is refused."""
    from flowvae.reporting.html import config_section as _config  # noqa: PLC0415  (the report's own renderer)
    from flowvae.training.trainer import _departures  # noqa: PLC0415

    cfg = apply_overrides(get_preset("digits"), ["model.coupling_kernel=1"])
    assert _departures(cfg) == ["1x1 coupling-network convolutions instead of eq. (7)'s 3x3"]
    assert _departures(get_preset("digits")) == []
    assert _departures(apply_overrides(get_preset("digits"), ["model.dequantization=variational"])) == [
        "variational dequantisation (Flow++, Ho et al. 2019) instead of §5's uniform dequantisation"]
    model = FlowVAE(cfg.model)
    from flowvae.networks.coupling_nets import ConvCouplingNet  # noqa: PLC0415

    nets = [m for m in model.decoder.modules() if isinstance(m, ConvCouplingNet)]
    assert nets and all(n.conv1.kernel_size == (1, 1) and n.conv3.weight_v.shape[-1] == 1 for n in nets)
    html = _config({"model": {"coupling_kernel": 1}, "train": {}}, "")
    assert "1x1 coupling-network convolutions" in html and "not the ELBO" not in html
    html = _config({"model": {"dequantization": "variational"}, "train": {}}, "",
                   ["variational <dequantisation>"] + ["x"] * 30)  # the run's record, hostile here
    assert "Departures from the paper: variational &lt;dequantisation&gt;; x" in html and "not the ELBO" not in html
    assert html.count("; x") == 19  # bounded
    with pytest.raises(ConfigError, match="model.coupling_kernel must be odd"):
        apply_overrides(get_preset("digits"), ["model.coupling_kernel=2"]).validate()


# ----------------------------------------------------------------------------------------------
# the auxiliary decoder (Lucas & Verbeek 2018)


@pytest.mark.parametrize("kind", ["flowvae", "z_prior"])
def test_the_auxiliary_decoder_adds_its_weighted_nll_of_the_same_z_and_trains_the_encoder(kind):
    plain = _flow(kind)
    _scramble_encoder(plain)
    aux = FlowVAE(plain.cfg.replace(aux_decoder_weight=0.5))
    assert all(k.startswith("aux_decoder.") for k in aux.load_state_dict(plain.state_dict(), strict=False).missing_keys)
    assert plain.aux_decoder is None and aux.aux_decoder is not None
    x, scale = _images(8, 8), 64 * math.log(2)
    base, _ = plain.loss(x, _gen())
    loss, stats = aux.loss(x, _gen())
    with torch.no_grad():
        z = aux.log_weights(aux.to_bins(x), 1, _gen())["z"][:, 0]  # the draw the loss used
        nll = -aux.aux_decoder.log_prob(x, z).mean()  # type: ignore[union-attr]
    assert float(nll) > 100  # an untrained decoder: hundreds of nats, a term worth checking
    torch.testing.assert_close(stats["aux"], nll)
    torch.testing.assert_close(loss * scale, base * scale + 0.5 * nll)
    torch.testing.assert_close(stats["elbo_bpd"], base)  # the flow's own bound, logged beside the loss
    # the term reaches the encoder through z (its purpose) and the flow not at all
    loss.backward()
    base_grads = torch.autograd.grad(plain.loss(x, _gen())[0], list(plain.encoder.parameters()))
    assert any(not torch.allclose(p.grad, g) for p, g in zip(aux.encoder.parameters(), base_grads))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aux.aux_decoder.parameters())  # type: ignore[union-attr]


def test_the_auxiliary_decoder_changes_no_reported_bits_per_dim_and_is_saved_with_the_run(tmp_path):
    from flowvae.api import load_run  # noqa: PLC0415

    aux = _flow(aux_decoder_weight=2.0)
    _scramble_encoder(aux)
    aux.eval()
    without = FlowVAE(aux.cfg.replace(aux_decoder_weight=0.0))
    missing = without.load_state_dict(aux.state_dict(), strict=False)
    assert missing.unexpected_keys and all(k.startswith("aux_decoder.") for k in missing.unexpected_keys)
    assert not missing.missing_keys
    x = _images(16, 8)
    assert evaluate_bpd(aux, x, 2, seed=1) == evaluate_bpd(without.eval(), x, 2, seed=1)
    aux.save_pretrained(tmp_path / "run")
    again = load_run(tmp_path / "run")
    assert again.cfg.aux_decoder_weight == 2.0
    saved, ours = again.state_dict(), aux.state_dict()
    assert saved.keys() == ours.keys() and all(torch.equal(saved[k], ours[k]) for k in ours)


def test_the_auxiliary_decoder_is_a_labelled_departure_refused_without_z():
    from flowvae.reporting.html import config_section as _config  # noqa: PLC0415
    from flowvae.training.trainer import _departures  # noqa: PLC0415

    cfg = apply_overrides(get_preset("digits"), ["model.aux_decoder_weight=1"])
    assert _departures(cfg) == ["an auxiliary decoder's -log p(x|z) at weight 1 in the loss"]
    html = _config({"model": {"aux_decoder_weight": 1.0}, "train": {}}, "")
    assert "model.aux_decoder_weight" in html and "not the ELBO" in html
    for kind in ("refined_glow", "glow"):
        with pytest.raises(ConfigError, match="model.aux_decoder_weight applies to the kinds with a global code z"):
            FlowVAEConfig(kind=kind, aux_decoder_weight=1.0)  # type: ignore[arg-type]


def test_the_low_pass_auxiliary_decoder_models_only_the_pooled_image():
    from flowvae.networks.pixel_decoder import LOW_PASS_MIN_LOG_SCALE, LowPassDecoder  # noqa: PLC0415

    model = _flow(aux_decoder_weight=3.0, aux_low_pass=2)
    assert isinstance(model.aux_decoder, LowPassDecoder)
    assert model.cfg.departures()[0] == ("an auxiliary decoder's -log p(x_low|z) of the image average-pooled "
                                         "to 2x2 at weight 3 in the loss")
    dec, x, z = model.aux_decoder, _images(8, 8), torch.randn(8, 4)
    # by hand: the 2x2 means of the 4x4 blocks on the [-1, 1] scale, under the decoder's Gaussian
    low = (x.double() / 127.5 - 1).reshape(8, 1, 2, 4, 2, 4).mean(dim=(3, 5)).flatten(1)
    mean, log_sd = dec.net(z).detach().double().chunk(2, 1)
    log_sd = log_sd.clamp(min=LOW_PASS_MIN_LOG_SCALE)
    want = (-0.5 * ((low - mean) / log_sd.exp()) ** 2 - log_sd - 0.5 * math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(dec.log_prob(x, z).double(), want, rtol=1e-5, atol=1e-4)
    # images with the same block means are alike to it, whatever their detail
    detail = x.clone()
    detail[:, :, 0, 0], detail[:, :, 0, 1] = x[:, :, 0, 1], x[:, :, 0, 0]
    assert not torch.equal(detail, x)
    torch.testing.assert_close(dec.log_prob(detail, z), dec.log_prob(x, z))
    # the floor: a code cannot be rewarded for describing the pooled image beyond one 8-bit bin
    with torch.no_grad():
        dec.net[-1].bias[4:] = -50.0
    assert float(dec.log_prob(x, z).detach().max()) <= 4 * (-LOW_PASS_MIN_LOG_SCALE - 0.5 * math.log(2 * math.pi)) + 1e-4
    loss, stats = model.loss(x, _gen())
    assert "aux" in stats and torch.isfinite(loss)
    with pytest.raises(ConfigError, match=r"model.aux_low_pass=16 is above the image side 8"):
        FlowVAEConfig(**{**FLOW, "aux_decoder_weight": 1.0, "aux_low_pass": 16})


# ----------------------------------------------------------------------------------------------
# the low-pass shift: v = f(x - m(z); z)


def test_the_low_pass_shift_starts_as_the_paper_model_and_keeps_the_bound_exact():
    plain = _flow()
    _scramble_encoder(plain)
    shifted = FlowVAE(plain.cfg.replace(low_pass_shift=2, aux_decoder_weight=5.0))
    assert shifted.aux_decoder is None  # the low-pass decoder is the decoder's own
    weights = {("decoder.glow." + k[len("decoder."):] if k.startswith("decoder.") else k): t
               for k, t in plain.state_dict().items()}
    missing = shifted.load_state_dict(weights, strict=False).missing_keys
    assert missing and all(k.startswith("decoder.low.") for k in missing)
    x = _images(8, 8)
    # the low-pass decoder's last layer starts at zero: an untrained model computes the paper's bound
    torch.testing.assert_close(shifted.log_weights(shifted.to_bins(x), 2, _gen())["log_w"],
                               plain.log_weights(plain.to_bins(x), 2, _gen())["log_w"])
    with torch.no_grad():
        shifted.decoder.low.net[-1].weight.normal_(0, 0.2)  # type: ignore[union-attr,index]
    z, v = shifted.encode(x)
    assert torch.equal(shifted.decode(z, v), x)  # still exact
    # the bound changed only through the flow's input: log p = log N(f(x - m(z); z)) + log|det| of the Glow
    bins = shifted.to_bins(x)
    centres = shifted.centres(bins)
    shift = shifted.decoder.low_pass(z).detach()  # type: ignore[union-attr,operator]
    assert shift.shape == x.shape
    v_glow, ld_glow = shifted.decoder.glow(centres - shift, z)  # type: ignore[union-attr,operator]
    v_all, ld_all = shifted.decoder(centres, z)
    torch.testing.assert_close(v_all, v_glow)
    torch.testing.assert_close(ld_all, ld_glow)
    # switching z moves the added low-pass image and nothing else of the decode's input
    x2 = shifted.decode(z.flip(0), v)
    assert not torch.equal(x2, x)
    # the shift is the low-pass decoder's mean, halved to the flow's [-0.5, 0.5] pixel scale and
    # upsampled bilinearly, so that it has no steps at the 4x4 block edges, while its 4x4 block means
    # are the mean that the auxiliary term fits
    out = shifted.decoder.low.net(z)[:, :4].reshape(8, 1, 2, 2).detach()  # type: ignore[union-attr,operator]
    torch.testing.assert_close(shift, 0.5 * torch.nn.functional.interpolate(out, size=(8, 8), mode="bilinear"))
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(shift, 4),
                               0.5 * shifted.decoder.low.mean(z))  # type: ignore[union-attr,operator]
    assert float((shift[..., 3] - shift[..., 4]).abs().max()) < float((out[..., 0] - out[..., 1]).abs().max()) / 2
    # and the loss trains that decoder's -log p(x_low | z): what ties the shift to the image's layout
    loss, stats = shifted.loss(x, _gen())
    with torch.no_grad():
        zl = shifted.log_weights(shifted.to_bins(x), 1, _gen())["z"][:, 0]
        nll = -shifted.decoder.low.log_prob(x, zl).mean()  # type: ignore[union-attr,operator]
    torch.testing.assert_close(stats["aux"], nll)
    # only that term trains it: the likelihood passes it no gradient, the auxiliary term does
    low_params = list(shifted.decoder.low.parameters())  # type: ignore[union-attr,operator]
    bound = shifted.log_weights(shifted.to_bins(x), 1, _gen())["log_w"].sum()
    assert all(g is None for g in torch.autograd.grad(bound, low_params, allow_unused=True))
    assert all(g is not None and g.abs().sum() > 0 for g in torch.autograd.grad(loss, low_params[-2:]))
    assert shifted.cfg.departures()[:2] == [
        "a decoder that subtracts the 2x2 low-pass image the auxiliary decoder predicts from z before the flow",
        "an auxiliary decoder's -log p(x_low|z) of the image average-pooled to 2x2 at weight 5 in the loss"]


def test_the_low_pass_shift_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="model.low_pass_shift applies to the flowvae kind"):
        FlowVAEConfig(**{**FLOW, "kind": "z_prior", "low_pass_shift": 2, "aux_decoder_weight": 1.0})
    with pytest.raises(ConfigError, match="model.aux_decoder_weight applies to the kinds with a global code z"):
        FlowVAEConfig(**{**FLOW, "kind": "glow", "low_pass_shift": 2, "aux_decoder_weight": 1.0})
    with pytest.raises(ConfigError, match=r"model.low_pass_shift=9 is above the image side 8"):
        FlowVAEConfig(**{**FLOW, "low_pass_shift": 9, "aux_decoder_weight": 1.0})
    with pytest.raises(ConfigError, match="set model.aux_decoder_weight above 0 too"):
        FlowVAEConfig(**{**FLOW, "low_pass_shift": 2})
    with pytest.raises(ConfigError, match="model.aux_low_pass=4 differs from model.low_pass_shift=2"):
        FlowVAEConfig(**{**FLOW, "low_pass_shift": 2, "aux_low_pass": 4, "aux_decoder_weight": 1.0})
