"""The CUDA path: a model moved to a GPU computes what it computes on the CPU, inverts exactly,
trains (bfloat16, torch.compile) and samples.

Every test here is marked ``cuda`` and skipped without a GPU, so CI on CPUs collects and skips
them; ``benchmarks/gpu_check.py`` runs them (``pytest -m cuda tests/integration/test_cuda.py``) when a GPU is
there. Models are the ``digits`` preset's (8x8 images) or smaller: each test takes seconds on a GPU.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flowvae import load_run
from flowvae.config import apply_overrides
from flowvae.data import load_digits
from flowvae.evaluation.sampling import draw_samples
from flowvae.flows import data_init
from flowvae.models import FlowVAE
from flowvae.networks.layers import ZeroWeightNormConv2d, ZeroWeightNormLinear
from flowvae.presets import get_preset
from flowvae.training import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.py runs these)"),
]

# Small enough that a training run is dominated by setup, not steps; far from the preset's sizes
# on purpose: these tests check the device path, not the model's quality.
TINY_TRAIN = ("model.steps=[0,[1,1],1]", "model.hidden=[4,16,16]", "model.encoder_widths=[8]", "model.d_z=4",
              "model.prior_steps=1", "model.prior_hidden=16", "data.test_limit=64", "train.steps=3",
              "train.batch_size=32", "train.init_batch_size=64", "train.eval_images=64", "train.eval_every=1000",
              "train.checkpoint_every=1000", "train.sample_temperatures=[0.8]", "train.warmup_steps=0",
              "train.loggers=[]", "train.device=cuda")


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """Full float32 convolutions and matrix products for CPU/GPU comparisons: cuDNN's default TF32
    convolutions keep 10 mantissa bits, far coarser than the 1e-4 tolerance below."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """128 test digits, uint8 ``[128, 1, 8, 8]``."""
    return load_digits("test").images[:128]


@pytest.fixture(scope="module")
def cpu_model(digits) -> FlowVAE:
    """The ``digits`` preset's FlowVAE, data-initialised on the CPU and moved away from its
    identity-like start (zero-gain output layers), so every coupling does something."""
    torch.manual_seed(0)
    model = FlowVAE(get_preset("digits").model, 8)
    with torch.no_grad(), data_init(model):
        model.loss(digits, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (ZeroWeightNormConv2d, ZeroWeightNormLinear)):
                sign = torch.where(torch.rand(m.weight_g.shape, generator=g) < 0.5, -1.0, 1.0)
                m.weight_g.copy_(sign * 0.3 * (0.5 + torch.rand(m.weight_g.shape, generator=g)))
            for p in m.parameters(recurse=False):
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def cuda_model(cpu_model) -> FlowVAE:
    """The same weights on the GPU."""
    model = copy.deepcopy(cpu_model).to("cuda")
    assert model.device.type == "cuda"
    return model


@pytest.fixture
def cpu_drawn_noise(monkeypatch) -> None:
    """Draw the dequantisation noise and posterior samples on the CPU and move them to the model's
    device: CPU and CUDA generators give different streams for the same seed, and the comparison
    needs the same noise on both devices."""
    module = importlib.import_module("flowvae.models.flowvae")

    def noise(draw, like, generator, shard):
        assert shard is None
        return draw(tuple(like.shape), generator=generator, dtype=like.dtype).to(like.device)

    monkeypatch.setattr(module, "_noise", noise)


def test_bits_per_dim_on_cuda_match_the_cpu(digits, cpu_model, cuda_model, no_tf32, cpu_drawn_noise):
    cpu = cpu_model.bits_per_dim(digits, k=2, generator=torch.Generator().manual_seed(3))
    gpu = cuda_model.bits_per_dim(digits.cuda(), k=2, generator=torch.Generator().manual_seed(3))
    assert cpu["elbo_bpd"].std() > 1e-3  # per-image values, not one constant
    for key in ("elbo_bpd", "iw_bpd"):
        assert gpu[key].device.type == "cuda"
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], rtol=1e-4, atol=0, msg=key)
    torch.testing.assert_close(gpu["kl"].cpu(), cpu["kl"], rtol=1e-4, atol=1e-4)


def test_decoder_on_cuda_matches_the_cpu_both_ways(cpu_model, cuda_model, no_tf32):
    """The conditional flow alone, on fixed continuous images and codes: v, log-determinant, and
    the inverse back from v."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(64, 1, 8, 8, generator=g) - 0.5
    z = torch.randn(64, cpu_model.cfg.d_z, generator=g)
    with torch.no_grad():
        v_cpu, ld_cpu = cpu_model.decoder(x, z)
        v_gpu, ld_gpu = cuda_model.decoder(x.cuda(), z.cuda())
        back, _ = cuda_model.decoder.inverse(v_gpu, z.cuda())
    assert (v_cpu.flatten(1) - x.flatten(1)).abs().max() > 1e-2  # the flow is not the identity
    torch.testing.assert_close(v_gpu.cpu(), v_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ld_gpu.cpu(), ld_cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(back.cpu(), x, rtol=0, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_uint8_round_trip_on_cuda_is_exact(digits, cuda_model, precision):
    # bf16 must keep the round trip exact too: the coupling networks see the same input forward
    # and backward, and only the networks run in bfloat16 (FlowVAE.set_precision).
    model = copy.deepcopy(cuda_model).set_precision(precision)
    x = digits.cuda()
    z, v = model.encode(x)
    assert z is not None and z.device.type == "cuda" and v.device.type == "cuda"
    assert z.std(0).min() > 1e-4  # codes differ between images
    back = model.decode(z, v)
    assert back.dtype == torch.uint8 and back.device.type == "cuda"
    assert torch.equal(back, x), f"{int((back != x).sum())} pixels differ"


def test_bf16_bits_per_dim_on_cuda_stay_close_to_fp32(digits, cuda_model):
    """bfloat16 networks move the bound by rounding only (coupling scales and biases to about 3
    significant digits): by under 1% (0.03% on the CPU), and it stays finite."""
    bf16 = copy.deepcopy(cuda_model).set_precision("bf16")
    x = digits.cuda()
    ref = cuda_model.bits_per_dim(x, generator=torch.Generator("cuda").manual_seed(5))["elbo_bpd"]
    got = bf16.bits_per_dim(x, generator=torch.Generator("cuda").manual_seed(5))["elbo_bpd"]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=0)


def test_samples_on_cuda_are_finite_uint8(cuda_model):
    images, stats = draw_samples(cuda_model, 64, 0.8, generator=torch.Generator("cuda").manual_seed(6))
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 8, 8) and images.device.type == "cuda"
    assert stats["nonfinite_pixels"] == 0, stats
    assert images.float().std() > 0  # not one flat colour
    again = cuda_model.sample(64, 0.8, generator=torch.Generator("cuda").manual_seed(6))
    assert torch.equal(again, images)  # draw_samples gives model.sample's pixels on CUDA too


def _train_tiny(run: Path, *overrides: str) -> dict:
    cfg = apply_overrides(get_preset("digits"), [*TINY_TRAIN, *overrides])
    return train(cfg, run, progress=False)


def _assert_finite_cuda_run(run: Path, last: dict) -> None:
    assert last["step"] == 3
    assert math.isfinite(last["train_bpd"]) and math.isfinite(last["test_elbo_bpd"]), last
    env = json.loads((run / "environment.json").read_text())
    assert env["device"].startswith("cuda") and env["gpu"], env
    model = load_run(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_training_on_cuda_gives_finite_losses(tmp_path):
    last = _train_tiny(tmp_path / "bf16", "train.precision=bf16")
    _assert_finite_cuda_run(tmp_path / "bf16", last)


def test_compiled_bf16_training_on_cuda_matches_eager(tmp_path):
    """``train.compile=true`` with bf16 on CUDA (the benchmark's fast mode) trains, and 3 steps
    land where eager training does: the bound agrees to bfloat16 rounding."""
    eager = _train_tiny(tmp_path / "eager", "train.precision=bf16")
    compiled = _train_tiny(tmp_path / "compiled", "train.precision=bf16", "train.compile=true")
    _assert_finite_cuda_run(tmp_path / "compiled", compiled)
    assert load_run(tmp_path / "compiled").config.train.compile is True
    assert compiled["test_elbo_bpd"] == pytest.approx(eager["test_elbo_bpd"], abs=0.05)

