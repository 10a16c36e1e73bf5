"""Invertibility, log-determinant and shape checks applied to every invertible layer of flowvae.

Every layer is checked against the contract of :mod:`flowvae.flows.base`:

1. ``inverse(forward(x)) == x`` and ``forward(inverse(y)) == y`` (float32);
2. ``logdet_forward(x) + logdet_inverse(forward(x)) == 0``;
3. output shape == input shape (``[B, D]`` for ConditionalGlow), logdet shape ``[B]``, dtype kept;
4. logdet == ``slogdet`` of the autograd Jacobian, per sample, in float64;
5. for conditional layers, the conditioning changes the output.

Every concrete :class:`~flowvae.flows.base.Flow` subclass of the package (the models' decoders
included) has a case here; :func:`test_every_flow_of_the_package_has_a_case` keeps it so.

Coupling networks start as the identity (zero-initialised last layer), so every layer's
parameters are randomised before checking; otherwise most checks would be vacuous.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from flowvae.flows import (
    ActNorm,
    AffineCoupling,
    ChannelSplit,
    ConditionalGaussian,
    ConditionalGlow,
    FactorOut,
    FlowPrior,
    InvertibleConv1x1,
    InvertibleLinear,
    LearnedGaussian,
    Squeeze,
    bounded_log_scale,
    data_init,
    glow_step,
    refined_step,
)
from flowvae.flows.base import Flow
from flowvae.flows.dequant import _ElementwiseAffine
from flowvae.flows.glow import _TailActNorm
from flowvae.models import BTCVAE, BTCVAEConfig, FlowVAEConfig, create_model
from flowvae.models.flowvae import _LowPassShiftDecoder, _PriorConditionedDecoder
from flowvae.models.multistage import _StageTwoDecoder
from flowvae.networks.coupling_nets import ConvCouplingNet, MLPCouplingNet
from flowvae.networks.layers import ZeroWeightNormConv2d, ZeroWeightNormLinear
from flowvae.networks.pixel_decoder import LowPassDecoder

# ----------------------------------------------------------------------------------------------
# helpers


@torch.no_grad()
def randomise(module: nn.Module, scale: float = 0.2, seed: int = 0, gain: float = 0.3) -> nn.Module:
    """Move every parameter away from its (often identity) initial value, keeping the layer well conditioned.

    ``gain`` is the magnitude of the weight-norm gains ``g`` of the zero-initialised output layers
    (0 would leave the couplings the identity); deep flows use a smaller one so float32 stays accurate.
    """
    g = torch.Generator().manual_seed(seed)

    def noise(p: torch.Tensor, s: float) -> torch.Tensor:
        return (torch.randn(p.shape, generator=g, dtype=torch.float64) * s).to(p.dtype)

    for m in module.modules():
        if isinstance(m, ActNorm):
            m.log_scale.copy_(noise(m.log_scale, 0.2))
            m.bias.copy_(noise(m.bias, 2.5 * scale))
        elif isinstance(m, InvertibleConv1x1):
            # perturbations of size ~1/sqrt(C) keep W well conditioned at any width
            p = m.lu if m.parametrization == "lu" else m.weight
            p.add_(noise(p, 0.4 / math.sqrt(m.num_channels)))
        elif isinstance(m, (ZeroWeightNormConv2d, ZeroWeightNormLinear)):
            m.weight_v.copy_(noise(m.weight_v, 1.0))
            sign = torch.where(noise(m.weight_g, 1.0) >= 0, 1.0, -1.0).to(m.weight_g.dtype)
            m.weight_g.copy_(sign * gain * (1.0 + noise(m.weight_g, 0.3).abs()))
            m.bias.copy_(noise(m.bias, scale))
        else:
            for p in m.parameters(recurse=False):
                p.copy_(noise(p, scale))
    return module


def conv_net(cond_dim: int = 0, hidden: int = 8) -> Callable[[int, int], nn.Module]:
    return lambda c_in, c_out: ConvCouplingNet(c_in, c_out, hidden, cond_dim)


def mlp_net(hidden: int = 8) -> Callable[[int, int], nn.Module]:
    return lambda c_in, c_out: MLPCouplingNet(c_in, c_out, hidden)


@dataclass
class Case:
    """One layer under test: ``build()`` returns a fresh (randomised) layer."""

    build: Callable[[], nn.Module]
    shape: tuple[int, ...]          # input shape without batch
    cond_dim: int = 0               # > 0: the layer is conditioned on a [B, cond_dim] code
    flat_output: bool = False       # ConditionalGlow: [B, C, H, W] -> [B, C*H*W]
    uses_cond: bool | None = None   # default: has_cond
    out_shape: tuple[int, ...] | None = None  # output shape without batch, if not the input's
    cond_shape: tuple[int, ...] | None = None  # the conditioning without batch, if not [cond_dim] (feature maps)

    @property
    def has_cond(self) -> bool:
        """Whether the layer is given a conditioning tensor (of :attr:`cond_size`)."""
        return self.cond_dim > 0 or self.cond_shape is not None

    @property
    def cond_size(self) -> tuple[int, ...]:
        return self.cond_shape if self.cond_shape is not None else (self.cond_dim,)

    @property
    def conditional(self) -> bool:
        return self.has_cond if self.uses_cond is None else self.uses_cond


def _randomised(factory: Callable[[], nn.Module], seed: int = 0, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        return randomise(factory(), seed=seed, **kw)
    return build


def _data_initialised_actnorm() -> nn.Module:
    layer = ActNorm(3)
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(5)) * 3.0 + 2.0
    with data_init(layer):
        layer(x)
    assert bool(layer.initialized)
    return layer


def _coupling(pattern: str, swap: bool, additive: bool, alpha: float, net: str) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        c = 4
        split = ChannelSplit(c, pattern, swap)
        out = split.size_b * (1 if additive else 2)
        if net == "mlp":
            module = MLPCouplingNet(split.size_a, out, 8)
        else:
            module = ConvCouplingNet(split.size_a, out, 8, 3 if net == "convcond" else 0)
        return AffineCoupling(split, module, alpha, additive)
    return factory


GENTLE = dict(scale=0.1, gain=0.1)  # whole multi-level flows: still far from the identity


def _tiny_glow(cond_dim: int = 0, cond_image: tuple[int, int] | None = None) -> ConditionalGlow:
    return ConditionalGlow(1, 4, [0, [1, 1], 1], [4, 8, 8], cond_dim=cond_dim, cond_image=cond_image)


def _stage_two_decoder() -> nn.Module:
    """The multi-stage model's flow: the factors c as the condition (without ``recon_input``: stage
    1 is not a submodule, so it would keep its dtype when the case is moved to float64)."""
    stage1 = BTCVAE(BTCVAEConfig(in_channels=1, image_size=28, n_factors=3, conv_channels=[4], hidden=8))
    return _StageTwoDecoder(_tiny_glow(3), stage1, recon_input=False)


def _cases() -> list:
    cases: dict[str, Case] = {
        "actnorm-image": Case(_randomised(lambda: ActNorm(3)), (3, 4, 4)),
        "actnorm-vector": Case(_randomised(lambda: ActNorm(5)), (5,)),
        "actnorm-datainit": Case(_data_initialised_actnorm, (3, 4, 4)),
        "conv1x1-lu": Case(_randomised(lambda: InvertibleConv1x1(4, "lu")), (4, 3, 3)),
        "conv1x1-plain": Case(_randomised(lambda: InvertibleConv1x1(4, "plain")), (4, 3, 3)),
        "conv1x1-lu-vector": Case(_randomised(lambda: InvertibleConv1x1(5, "lu")), (5,)),
        "linear-lu": Case(_randomised(lambda: InvertibleLinear(5)), (5,)),
        "linear-plain": Case(_randomised(lambda: InvertibleLinear(5, "plain")), (5,)),
        "squeeze": Case(Squeeze, (3, 4, 4), out_shape=(12, 2, 2)),
        "refined_step-cond": Case(_randomised(lambda: refined_step(4, conv_net(3))), (4, 3, 3), cond_dim=3),
        "refined_step-odd-additive-plain": Case(
            _randomised(lambda: refined_step(3, conv_net(0), additive=True, conv1x1="plain")), (3, 3, 3)),
        "refined_step-alpha0.5-cond": Case(
            _randomised(lambda: refined_step(6, conv_net(2), alpha=0.5)), (6, 2, 2), cond_dim=2),
        "refined_step-mlp": Case(_randomised(lambda: refined_step(5, mlp_net())), (5,)),
        "factorout-cond": Case(_randomised(lambda: FactorOut(4, 1, conv_net(3))), (4, 3, 3), cond_dim=3),
        "factorout-additive": Case(_randomised(lambda: FactorOut(6, 2, conv_net(0), additive=True)), (6, 2, 2)),
        "tail_actnorm": Case(_randomised(lambda: _TailActNorm(4, 1)), (4, 3, 3)),
        "glow-rgb-cond": Case(
            _randomised(lambda: ConditionalGlow(3, 4, [1, [1, 1], 1], [4, 8, 8], cond_dim=3), **GENTLE),
            (3, 4, 4), cond_dim=3, flat_output=True),
        "glow-grey-cond": Case(
            _randomised(lambda: ConditionalGlow(1, 4, [0, [1, 1], 1], [4, 8, 8], cond_dim=3), **GENTLE),
            (1, 4, 4), cond_dim=3, flat_output=True),
        # the multi-stage model's flow: a code of 3 plus a 1x4x4 conditioning image (3 + 16 values)
        "glow-grey-cond-image": Case(
            _randomised(lambda: ConditionalGlow(1, 4, [0, [1, 1], 1], [4, 8, 8], cond_dim=3, cond_image=(1, 4)),
                        **GENTLE),
            (1, 4, 4), cond_dim=19, flat_output=True),
        "glow-rgb-uncond": Case(
            _randomised(lambda: ConditionalGlow(3, 4, [1, [1, 1], 1], [4, 8, 8], cond_dim=0), **GENTLE),
            (3, 4, 4), flat_output=True),
        "glow-plain-levels": Case(
            _randomised(lambda: ConditionalGlow(2, 4, [1, 1, 1], [4, 4, 4], cond_dim=2), **GENTLE),
            (2, 4, 4), cond_dim=2, flat_output=True),
        "glow-additive-plain-alpha0.5": Case(
            _randomised(lambda: ConditionalGlow(3, 4, [1, [1, 1], 1], [4, 8, 8], cond_dim=2, alpha=0.5,
                                                additive=True, conv1x1="plain"), **GENTLE),
            (3, 4, 4), cond_dim=2, flat_output=True),
        # model.coupling_kernel=1: the local decoder
        "glow-rgb-cond-kernel1": Case(
            _randomised(lambda: ConditionalGlow(3, 4, [1, [1, 1], 1], [4, 8, 8], cond_dim=3, kernel_size=1), **GENTLE),
            (3, 4, 4), cond_dim=3, flat_output=True),
        "flowprior": Case(_randomised(lambda: FlowPrior(4, 2, 8)), (4,)),
        "glow-original": Case(
            _randomised(lambda: ConditionalGlow(3, 8, [1, 1, 1], [4, 8, 8], architecture="glow"), **GENTLE),
            (3, 8, 8), flat_output=True),
        "glow-original-grey-cond": Case(
            _randomised(lambda: ConditionalGlow(1, 4, [1, 1], [4, 4], cond_dim=2, architecture="glow"), **GENTLE),
            (1, 4, 4), cond_dim=2, flat_output=True),
        "glow_step": Case(_randomised(lambda: glow_step(4, conv_net(3))), (4, 3, 3), cond_dim=3),
        "learned_gaussian": Case(_randomised(lambda: LearnedGaussian((3, 2, 2))), (3, 2, 2)),
        "conditional_gaussian": Case(_randomised(lambda: ConditionalGaussian(6, 3)), (6,), cond_dim=3),
        # q(u|x)'s layers: conditioned on feature maps of the image
        "dequant-elementwise-affine": Case(_randomised(lambda: _ElementwiseAffine(2, 3)), (2, 3, 3),
                                           cond_shape=(3, 3, 3)),
        # the models' decoders: z in v's Gaussian (z_prior), the factors c of the multi-stage model
        "prior-conditioned-decoder": Case(
            _randomised(lambda: _PriorConditionedDecoder(_tiny_glow(), 3), **GENTLE), (1, 4, 4), cond_dim=3,
            flat_output=True),
        "stage-two-decoder": Case(_randomised(_stage_two_decoder, **GENTLE), (1, 4, 4), cond_dim=3,
                                  flat_output=True),
        # z's predicted low-pass image taken from x before the flow (model.low_pass_shift)
        "low-pass-shift-decoder": Case(
            _randomised(lambda: _LowPassShiftDecoder(_tiny_glow(3), LowPassDecoder(3, 1, 2, 8, 4)), **GENTLE), (1, 4, 4),
            cond_dim=3, flat_output=True),
    }
    for pattern in ("continuous", "alternate"):
        for swap in (False, True):
            for additive in (False, True):
                for alpha in (1.0, 0.5):
                    for net in ("conv", "convcond", "mlp"):
                        name = (f"coupling-{pattern}-{'swap' if swap else 'noswap'}-"
                                f"{'additive' if additive else 'affine'}-alpha{alpha}-{net}")
                        shape = (4,) if net == "mlp" else (4, 3, 3)
                        cases[name] = Case(_randomised(_coupling(pattern, swap, additive, alpha, net)), shape,
                                           cond_dim=3 if net == "convcond" else 0)
    return [pytest.param(case, id=name) for name, case in cases.items()]


CASES = _cases()


def _inputs(case: Case, batch: int, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *case.shape, generator=g, dtype=torch.float64).to(dtype)
    cond = torch.randn(batch, *case.cond_size, generator=g, dtype=torch.float64).to(dtype) if case.has_cond else None
    return x, cond


# ----------------------------------------------------------------------------------------------
# the generic flow checks


@pytest.mark.parametrize("case", CASES)
def test_round_trip_float32(case: Case):
    layer = case.build()
    x, cond = _inputs(case, 3, torch.float32)
    # a whole multi-level Glow chains ~35 float32 layers whose intermediate values reach ~10;
    # each layer alone is exact to a few ulp, the composition accumulates a few times 1e-5.
    tol = 5e-5 if case.flat_output else 1e-5
    with torch.no_grad():
        y, ld = layer(x, cond)
        x_back, ld_inv = layer.inverse(y, cond)
        assert torch.allclose(x_back, x, atol=tol, rtol=tol), (x_back - x).abs().max()
        # and the other way round, from a latent point
        y2 = torch.randn_like(y)
        x2, _ = layer.inverse(y2, cond)
        y2_back, _ = layer(x2, cond)
        assert torch.allclose(y2_back, y2, atol=tol, rtol=tol), (y2_back - y2).abs().max()
    assert torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_logdets_cancel_float64(case: Case):
    layer = case.build().double()
    x, cond = _inputs(case, 3, torch.float64)
    with torch.no_grad():
        y, ld = layer(x, cond)
        x_back, ld_inv = layer.inverse(y, cond)
    assert torch.allclose(x_back, x, atol=1e-10, rtol=0)
    assert torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_shapes_and_dtypes(case: Case, dtype: torch.dtype):
    layer = case.build().to(dtype)
    x, cond = _inputs(case, 3, dtype)
    with torch.no_grad():
        y, ld = layer(x, cond)
        x_back, ld_inv = layer.inverse(y, cond)
    d = math.prod(case.shape)
    if case.flat_output:
        assert y.shape == (3, d)
    else:
        assert y.shape == (3, *(case.out_shape or case.shape))
    assert x_back.shape == x.shape
    assert ld.shape == (3,) and ld_inv.shape == (3,)
    assert y.dtype == dtype and x_back.dtype == dtype
    assert ld.dtype == dtype and ld_inv.dtype == dtype
    assert torch.isfinite(ld).all() and torch.isfinite(y).all()


def _per_sample_jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """``log |det d fn(x_i) / d x_i|`` for each sample, from the autograd Jacobian."""
    out = []
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda xi, i=i: fn(xi.unsqueeze(0), i).flatten(), x[i])
        d = x[i].numel()
        sign, logabs = torch.linalg.slogdet(jac.reshape(d, d))
        assert sign != 0
        out.append(logabs)
    return torch.stack(out)


@pytest.mark.parametrize("case", CASES)
def test_logdet_matches_autograd_jacobian(case: Case):
    layer = case.build().double()
    x, cond = _inputs(case, 2, torch.float64)
    # conditioned layers need their code; the others accept (and ignore) any cond, or none
    conds = [cond] if case.has_cond else [None, torch.randn(2, 3, dtype=torch.float64)]
    for c in conds:
        def fwd(xi, i, c=c):
            return layer(xi, None if c is None else c[i:i + 1])[0]

        def inv(yi, i, c=c):
            return layer.inverse(yi, None if c is None else c[i:i + 1])[0]

        y, ld = layer(x, c)
        expected = _per_sample_jacobian_logdet(fwd, x)
        assert torch.allclose(ld.detach().double(), expected, atol=1e-6, rtol=0), (ld, expected)

        # the inverse's log-determinant is the log |det| of the inverse's Jacobian at y
        y = y.detach()
        _, ld_inv = layer.inverse(y, c)
        expected_inv = _per_sample_jacobian_logdet(inv, y)
        assert torch.allclose(ld_inv.detach().double(), expected_inv, atol=1e-6, rtol=0)


CONDITIONAL = [p for p in CASES if p.values[0].conditional]


@pytest.mark.parametrize("case", CONDITIONAL)
def test_conditioning_changes_output(case: Case):
    layer = case.build()
    x, cond = _inputs(case, 3, torch.float32)
    other = cond + 1.0
    with torch.no_grad():
        y1, ld1 = layer(x, cond)
        y2, ld2 = layer(x, other)
        assert (y1 - y2).abs().max() > 1e-3
        x1, _ = layer.inverse(y1, cond)
        x2, _ = layer.inverse(y1, other)
        assert (x1 - x2).abs().max() > 1e-3
        # and it still round-trips under the other code
        tol = 5e-5 if case.flat_output else 1e-5
        assert torch.allclose(layer.inverse(y2, other)[0], x, atol=tol, rtol=tol)


def _package_flows() -> set[type]:
    """Every concrete :class:`Flow` subclass defined in flowvae (one whose ``forward`` is its own),
    after importing every module of the package."""
    import importlib
    import pkgutil
    import warnings

    import flowvae

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # modules kept as deprecated aliases
        for info in pkgutil.walk_packages(flowvae.__path__, "flowvae."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found: set[type] = set()
    todo: list[type] = [Flow]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return {c for c in found if c.__module__.startswith("flowvae.") and c.forward is not Flow.forward}


def test_every_flow_of_the_package_has_a_case():
    """A new invertible layer (or a model's decoder) is checked against the contract as soon as it
    exists: it needs a case in ``_cases`` whose layer is of exactly its class."""
    covered = {type(p.values[0].build()) for p in CASES}
    missing = sorted(f"{c.__module__}.{c.__qualname__}" for c in _package_flows() - covered)
    assert not missing, f"Flow subclasses without a case in tests/unit/flows/test_flows.py _cases(): {missing}"


@pytest.mark.parametrize("build", [
    pytest.param(lambda: ConvCouplingNet(2, 4, 8, 3), id="conv"),
    pytest.param(lambda: ConditionalGlow(3, 4, [1, [1, 1], 1], [4, 8, 8], cond_dim=3), id="glow"),
])
def test_conditional_network_without_cond_raises(build):
    module = build()
    x = torch.randn(2, 2, 3, 3) if isinstance(module, ConvCouplingNet) else torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="cond"):
        module(x)


def test_coupling_network_gradients_equal_out_of_place_reference():
    """The in-place ELUs and conditioning add of ConvCouplingNet give the output and gradients
    (parameters and input) of eq. (7) written out of place, in float64."""
    torch.manual_seed(0)
    net = ConvCouplingNet(3, 4, 8, 5).double()
    randomise(net)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)

    def reference(x, z):
        h = net.conv2(torch.nn.functional.elu(net.conv1(x)))
        h = h + net.cond(z)[:, :, None, None]
        return net.conv3(torch.nn.functional.elu(h))

    outs = []
    for f in (net, reference):
        for t in [x, z, *net.parameters()]:
            t.grad = None
        y = f(x, z)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs.append([y.detach(), x.grad.clone(), z.grad.clone(), *[p.grad.clone() for p in net.parameters()]])
    assert outs[0][0].abs().max() > 1e-2  # randomised: not the zero-initialised identity
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fresh_couplings_are_identity():
    """The zero-initialised last layer makes a fresh coupling (and a fresh flow step) the identity."""
    torch.manual_seed(0)
    coupling = _coupling("alternate", True, False, 1.0, "convcond")()
    x, z = torch.randn(2, 4, 3, 3), torch.randn(2, 3)
    y, ld = coupling(x, z)
    assert torch.equal(y, x) and torch.equal(ld, torch.zeros(2))
    # ... and randomising really makes it non-trivial (otherwise the checks above prove nothing)
    randomise(coupling)
    y, ld = coupling(x, z)
    assert (y - x).abs().max() > 1e-2 and ld.abs().min() > 1e-3


# ----------------------------------------------------------------------------------------------
# ChannelSplit, Squeeze, bounded scale


@pytest.mark.parametrize("pattern", ["continuous", "alternate"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("channels", [2, 3, 4, 5, 7, 8])
def test_channel_split_merge_round_trip(pattern, swap, channels):
    if pattern == "alternate" and channels % 2:
        with pytest.raises(ValueError, match="even"):
            ChannelSplit(channels, pattern, swap)
        return
    split = ChannelSplit(channels, pattern, swap)
    x = torch.arange(2 * channels * 3, dtype=torch.float32).view(2, channels, 3)
    a, b = split.split(x)
    assert b.shape[1] == split.size_b == channels // 2
    assert a.shape[1] == split.size_a == channels - channels // 2
    assert torch.equal(split.merge(a, b), x)
    # a and b partition the channels
    got = sorted(torch.cat([a[0, :, 0], b[0, :, 0]]).tolist())
    assert got == x[0, :, 0].tolist()
    if pattern == "continuous":
        expect_b = x[:, : channels // 2] if swap else x[:, channels - channels // 2:]
    else:
        expect_b = x[:, 0::2] if swap else x[:, 1::2]
    assert torch.equal(b, expect_b)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("channels,size_b", [(5, 1), (5, 4), (7, 2), (6, 1), (3, 2)])
def test_channel_split_size_b(channels, size_b, swap):
    split = ChannelSplit(channels, "continuous", swap, size_b=size_b)
    x = torch.randn(3, channels, 2, 2)
    a, b = split.split(x)
    assert b.shape[1] == size_b and a.shape[1] == channels - size_b
    assert torch.equal(b, x[:, :size_b] if swap else x[:, channels - size_b:])
    assert torch.equal(split.merge(a, b), x)


@pytest.mark.parametrize("kwargs", [
    dict(num_channels=3, pattern="alternate"),
    dict(num_channels=5, pattern="alternate", swap=True),
    dict(num_channels=1, pattern="continuous"),
    dict(num_channels=4, pattern="checkerboard"),
    dict(num_channels=4, pattern="continuous", size_b=4),
    dict(num_channels=4, pattern="continuous", size_b=0),
    dict(num_channels=4, pattern="alternate", size_b=1),
])
def test_channel_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ChannelSplit(**kwargs)


def test_alternate_odd_channels_raises():
    with pytest.raises(ValueError, match="even"):
        ChannelSplit(5, "alternate")


def test_squeeze_channel_ordering():
    b, c, h, w = 2, 3, 4, 6
    x = torch.arange(b * c * h * w).view(b, c, h, w)
    y, ld = Squeeze()(x)
    assert y.shape == (b, 4 * c, h // 2, w // 2)
    assert torch.equal(ld, torch.zeros(b, dtype=x.dtype))
    for i in range(2):
        for j in range(2):
            for ch in range(c):
                assert torch.equal(y[:, (2 * i + j) * c + ch], x[:, ch, i::2, j::2]), (i, j, ch)
    assert torch.equal(Squeeze().inverse(y)[0], x)


def test_squeeze_rejects_odd_size():
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.zeros(1, 2, 3, 4))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.1])
def test_bounded_log_scale_formula(alpha):
    u = torch.linspace(-8, 8, 101, dtype=torch.float64)
    expected = torch.log(alpha * torch.tanh(u / 2) + 1)
    assert torch.allclose(bounded_log_scale(u, alpha), expected, atol=1e-12, rtol=1e-10)
    big = torch.tensor([-100.0, 100.0, -1e4, 1e4])
    out = bounded_log_scale(big, alpha)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1], torch.tensor(math.log(1 + alpha)), atol=1e-6)
    if alpha == 1.0:
        # s -> 0 as u -> -inf: log s = log 2 + logsigmoid(u) ~ log 2 + u
        assert torch.allclose(out[0], torch.tensor(math.log(2.0) - 100.0), atol=1e-4)
    else:
        assert torch.allclose(out[0], torch.tensor(math.log(1 - alpha)), atol=1e-6)


def test_bounded_log_scale_gradient_finite_at_extremes():
    u = torch.tensor([-100.0, 0.0, 100.0], requires_grad=True)
    bounded_log_scale(u, 1.0).sum().backward()
    assert torch.isfinite(u.grad).all()


def test_coupling_rejects_bad_alpha():
    split = ChannelSplit(4)
    for alpha in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            AffineCoupling(split, ConvCouplingNet(2, 4, 4), alpha)


# ----------------------------------------------------------------------------------------------
# invertible 1x1 convolution


def _check_conv_matrices(conv: InvertibleConv1x1, tol: float = 1e-5):
    w = conv.weight_matrix().detach().double()
    w_inv = conv.inverse_matrix().detach().double()
    eye = torch.eye(conv.num_channels, dtype=torch.float64)
    assert torch.allclose(w @ w_inv, eye, atol=tol)
    assert torch.allclose(w_inv @ w, eye, atol=tol)
    assert torch.allclose(conv.log_abs_det().detach().double(), torch.linalg.slogdet(w)[1], atol=tol)


@pytest.mark.parametrize("parametrization", ["lu", "plain"])
def test_conv1x1_matrices_consistent_after_randomising_and_training(parametrization):
    torch.manual_seed(0)
    conv = InvertibleConv1x1(6, parametrization)
    assert sum(p.numel() for p in conv.parameters()) == 36
    _check_conv_matrices(conv)
    # a fresh layer is a rotation: |det W| = 1
    assert abs(float(conv.log_abs_det().detach())) < 1e-5
    randomise(conv)
    _check_conv_matrices(conv)
    w_before = conv.weight_matrix().detach().clone()
    inv_before = conv.inverse_matrix().detach().clone()
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    x = torch.randn(4, 6, 3, 3)
    for _ in range(3):
        y, ld = conv(x)
        loss = (y ** 2).mean() - ld.mean() * 0.5
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(conv.weight_matrix().detach(), w_before, atol=1e-3)
    assert not torch.allclose(conv.inverse_matrix().detach(), inv_before, atol=1e-3)  # no stale inverse
    _check_conv_matrices(conv)
    with torch.no_grad():
        y, _ = conv(x)
        assert torch.allclose(conv.inverse(y)[0], x, atol=1e-5)


def test_conv1x1_lu_log_det_is_diag_sum():
    torch.manual_seed(0)
    conv = randomise(InvertibleConv1x1(5, "lu"))
    assert torch.allclose(conv.log_abs_det(), torch.diagonal(conv.lu).sum())
    x = torch.randn(2, 5, 3, 2)
    _, ld = conv(x)
    assert torch.allclose(ld, (6 * torch.diagonal(conv.lu).sum()).expand(2))


def test_conv1x1_rejects_unknown_parametrization():
    with pytest.raises(ValueError, match="parametrization"):
        InvertibleConv1x1(4, "qr")


# ----------------------------------------------------------------------------------------------
# ActNorm


@pytest.mark.parametrize("shape", [(64, 3, 5, 5), (256, 6)], ids=["image", "vector"])
def test_actnorm_data_init_normalises(shape):
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 2.0, 7.0, 1.0, 3.0, 0.1])[: shape[1]]
    offset = torch.tensor([-3.0, 1.0, 10.0, 0.0, 2.0, -1.0])[: shape[1]]
    view = (1, -1) + (1,) * (len(shape) - 2)
    x = torch.randn(shape, generator=g) * scale.view(view) + offset.view(view)
    layer = ActNorm(shape[1])
    assert not bool(layer.initialized)
    y0, _ = layer(x)  # outside data_init: plain (identity) affine layer, no init
    assert torch.equal(y0, x) and not bool(layer.initialized)
    with data_init(layer):
        y, ld = layer(x)
    assert bool(layer.initialized)
    dims = [d for d in range(y.dim()) if d != 1]
    assert torch.allclose(y.mean(dims), torch.zeros(shape[1]), atol=1e-5)
    assert torch.allclose(y.std(dims, unbiased=False), torch.ones(shape[1]), atol=1e-4)
    spatial = math.prod(shape[2:])
    assert torch.allclose(ld, (spatial * layer.log_scale.sum()).expand(shape[0]))
    # a second batch inside data_init does not re-initialise
    params = [p.detach().clone() for p in layer.parameters()]
    with data_init(layer):
        layer(x * 5 + 3)
    assert all(torch.equal(a, b) for a, b in zip(params, layer.parameters()))
    assert layer._data_init is False  # the context manager switched it off again


def test_actnorm_initialized_flag_is_saved_and_loaded():
    x = torch.randn(32, 3, 4, 4) * 4 + 1
    layer = ActNorm(3)
    with data_init(layer):
        layer(x)
    state = layer.state_dict()
    assert "initialized" in state and bool(state["initialized"])
    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    with data_init(fresh):
        y_fresh, _ = fresh(torch.randn(32, 3, 4, 4) * 0.1 - 7)  # a very different batch
    assert torch.equal(fresh.log_scale, layer.log_scale)
    assert torch.equal(fresh.bias, layer.bias)
    assert torch.equal(fresh(x)[0], layer(x)[0])


def test_data_init_reaches_nested_actnorms_of_glow():
    torch.manual_seed(0)
    glow = ConditionalGlow(3, 4, [1, [1, 1], 1], [4, 8, 8], cond_dim=3)
    actnorms = [m for m in glow.modules() if isinstance(m, ActNorm)]
    assert len(actnorms) > 5
    x, z = torch.rand(16, 3, 4, 4) * 3 + 1, torch.randn(16, 3)
    with torch.no_grad(), data_init(glow):
        glow(x, z)
    assert all(bool(a.initialized) for a in actnorms)
    assert all(not a._data_init for a in actnorms)
    # the first ActNorm sees the raw data: its output is standardised per channel
    first = glow.flows[0].flows[0]
    y, _ = first(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# hypothesis: random shapes for couplings and refined steps


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    channels=st.integers(2, 8),
    batch=st.integers(1, 4),
    size=st.sampled_from([2, 4]),
    cond_dim=st.integers(0, 4),
    kind=st.sampled_from(["coupling", "step"]),
    pattern=st.sampled_from(["continuous", "alternate"]),
    swap=st.booleans(),
    additive=st.booleans(),
    alpha=st.sampled_from([1.0, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_property_coupling_and_step(channels, batch, size, cond_dim, kind, pattern, swap, additive, alpha, seed):
    torch.manual_seed(seed)
    if kind == "coupling":
        if pattern == "alternate" and channels % 2:
            with pytest.raises(ValueError):
                ChannelSplit(channels, pattern, swap)
            return
        split = ChannelSplit(channels, pattern, swap)
        out = split.size_b * (1 if additive else 2)
        layer = AffineCoupling(split, ConvCouplingNet(split.size_a, out, 6, cond_dim), alpha, additive)
    else:
        layer = refined_step(channels, conv_net(cond_dim, 6), alpha=alpha, additive=additive)
    randomise(layer, seed=seed)
    layer = layer.double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g, dtype=torch.float64)
    cond = torch.randn(batch, cond_dim, generator=g, dtype=torch.float64) if cond_dim else None
    with torch.no_grad():
        y, ld = layer(x, cond)
        x_back, ld_inv = layer.inverse(y, cond)
    assert y.shape == x.shape and ld.shape == (batch,) and ld_inv.shape == (batch,)
    assert torch.allclose(x_back, x, atol=1e-9, rtol=0)
    assert torch.allclose(ld + ld_inv, torch.zeros(batch, dtype=ld.dtype), atol=1e-9)
    # logdet is per sample: evaluating the first sample alone gives the same value
    y0, ld0 = layer(x[:1], None if cond is None else cond[:1])
    assert torch.allclose(y0, y[:1], atol=1e-10) and torch.allclose(ld0, ld[:1], atol=1e-9)
    if additive and kind == "coupling":
        assert torch.equal(ld, torch.zeros_like(ld))


def _layer_for(kind: str, channels: int, cond_dim: int, size: int, data: st.DataObject):
    """A layer of ``kind`` with input shape (without batch) for the property test below."""
    if kind == "actnorm":
        return ActNorm(channels), (channels, size, size)
    if kind == "actnorm-vector":
        return ActNorm(channels), (channels,)
    if kind in ("conv1x1-lu", "conv1x1-plain"):
        return InvertibleConv1x1(channels, kind.split("-")[1]), (channels, size, size)
    if kind == "linear":
        return InvertibleLinear(channels, data.draw(st.sampled_from(["lu", "plain"]))), (channels,)
    if kind == "squeeze":
        return Squeeze(), (channels, 2 * size, 2 * size)
    if kind == "factorout":
        n_out = data.draw(st.integers(1, channels - 1))
        return FactorOut(channels, n_out, conv_net(cond_dim, 6), additive=data.draw(st.booleans())), (channels, size, size)
    if kind == "tail_actnorm":
        return _TailActNorm(channels, data.draw(st.integers(1, channels))), (channels, size, size)
    if kind == "flowprior":
        return FlowPrior(channels, data.draw(st.integers(1, 3)), 8), (channels,)
    # a whole conditional Glow with a random layout of plain and fine-grained levels
    c_img = data.draw(st.sampled_from([1, 3]))
    # first and last levels take a step count; the ones between may be fine-grained [a, b]
    middle = st.one_of(st.integers(0, 1), st.tuples(st.integers(0, 1), st.integers(0, 1)).map(list))
    levels = [data.draw(st.integers(0, 1)), *data.draw(st.lists(middle, max_size=2)), data.draw(st.integers(0, 1))]
    if c_img == 1 and levels[0] != 0:
        levels[0] = 0  # one grey channel cannot be coupled at full resolution
    image = 2 ** len(levels)
    return ConditionalGlow(c_img, image, levels, [4] * len(levels), cond_dim=cond_dim), (c_img, image, image)


@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    kind=st.sampled_from(["actnorm", "actnorm-vector", "conv1x1-lu", "conv1x1-plain", "linear", "squeeze",
                          "factorout", "tail_actnorm", "flowprior", "glow"]),
    channels=st.integers(2, 7),
    batch=st.integers(1, 4),
    size=st.sampled_from([1, 2, 3]),
    cond_dim=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_every_layer(kind, channels, batch, size, cond_dim, seed, data):
    """Round trip, logdet consistency and per-sample logdets for every invertible layer."""
    torch.manual_seed(seed)
    layer, shape = _layer_for(kind, channels, cond_dim, size, data)
    randomise(layer, seed=seed, **(GENTLE if kind == "glow" else {}))
    layer = layer.double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    uses_cond = kind in ("factorout", "glow") and cond_dim > 0
    cond = torch.randn(batch, cond_dim, generator=g, dtype=torch.float64) if uses_cond else None
    with torch.no_grad():
        y, ld = layer(x, cond)
        x_back, ld_inv = layer.inverse(y, cond)
        y0, ld0 = layer(x[:1], None if cond is None else cond[:1])
    assert ld.shape == (batch,) and ld_inv.shape == (batch,) and y.shape[0] == batch
    assert y.numel() == x.numel()
    assert torch.allclose(x_back, x, atol=1e-8, rtol=0)
    assert torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=1e-8)
    assert torch.allclose(y0, y[:1], atol=1e-9) and torch.allclose(ld0, ld[:1], atol=1e-8)


@pytest.mark.parametrize("cond_dim", [0, 4])
def test_recompute_backward_gives_the_ordinary_gradients(cond_dim):
    """Activations reconstructed by inversion in backward: same loss, same gradients (float64)."""
    torch.manual_seed(0)
    glow = randomise(ConditionalGlow(3, 8, [1, [1, 1], 1], [8, 8, 8], cond_dim=cond_dim), **GENTLE).double()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, cond_dim, dtype=torch.float64, requires_grad=True) if cond_dim else None

    def run(recompute: bool):
        glow.recompute = recompute
        glow.zero_grad()
        x.grad = None
        if z is not None:
            z.grad = None
        v, ld = glow(x, z)
        loss = 0.5 * (v ** 2).sum() - ld.sum() + 3 * v[:, :7].sum()  # uneven weights on the pieces of v
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in glow.parameters()], x.grad.clone(), \
            None if z is None else z.grad.clone()

    loss0, params0, x0, z0 = run(False)
    loss1, params1, x1, z1 = run(True)
    assert torch.equal(loss0, loss1)
    for a, b in zip(params0, params1):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert torch.allclose(x0, x1, rtol=1e-9, atol=1e-12)
    if z is not None:
        assert torch.allclose(z0, z1, rtol=1e-9, atol=1e-12) and z1.abs().sum() > 0


def test_recompute_is_off_under_data_init_and_no_grad():
    glow = ConditionalGlow(3, 4, [1, 1], [4, 4], cond_dim=0)
    glow.recompute = True
    x = torch.randn(4, 3, 4, 4)
    with torch.no_grad(), data_init(glow):
        v, _ = glow(x)  # initialises every ActNorm: must run the plain path
    assert all(bool(m.initialized) for m in glow.modules() if isinstance(m, ActNorm))
    v2, ld = glow(x)
    assert v2.grad_fn is not None and type(v2.grad_fn).__name__.startswith("_Recompute")


# ----------------------------------------------------------------------------------------------
# parameter counts of the published architecture (built on the meta device: no 200 MB allocations)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build_meta(factory):
    try:
        with torch.device("meta"):
            return factory()
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: fall back to CPU
        return factory()


@pytest.fixture(scope="module")
def published_glow_counts():
    return {cond: _count(_build_meta(lambda c=cond: ConditionalGlow(
        3, 32, [2, [6, 6], [6, 6], 4], [24, 512, 512, 512], cond_dim=c))) for cond in (64, 0)}


@pytest.fixture(scope="module")
def published_model_counts():
    return {kind: _count(_build_meta(lambda k=kind: create_model(replace(FlowVAEConfig(), kind=k))))
            for kind in ("flowvae", "refined_glow")}


def test_published_glow_parameter_count(published_glow_counts):
    assert published_glow_counts[64] == 50_394_561
    assert published_glow_counts[0] == 46_521_601


def test_published_model_parameter_count(published_model_counts):
    assert published_model_counts["flowvae"] == 51_860_457
    assert published_model_counts["refined_glow"] == 46_521_601


@pytest.mark.parametrize("preset,model_count,glow_count", [
    ("cifar10", 51_860_457, 46_521_601),
    ("imagenet64", 107_418_435, 91_288_387),
    ("lsun128", 102_092_843, 69_922_475),
    ("celebahq256", 100_610_735, 70_714_159),
])
def test_published_presets_have_the_authors_parameter_counts(preset, model_count, glow_count):
    """The four published architectures, built on the meta device (no memory for weights)."""
    from flowvae.presets import get_preset

    cfg = get_preset(preset)
    assert _count(_build_meta(lambda: create_model(cfg))) == model_count
    cfg.model.kind = "refined_glow"
    assert _count(_build_meta(lambda: create_model(cfg))) == glow_count


# ----------------------------------------------------------------------------------------------
# variational dequantisation q(u|x)


def _dequantizer(channels: int):
    from flowvae.flows.dequant import VariationalDequantizer

    torch.manual_seed(0)
    return randomise(VariationalDequantizer(channels, hidden=8, steps=2), gain=0.5).double()


@pytest.mark.parametrize("channels", [1, 2, 3])  # 3: an uneven split, as on colour images
def test_dequantizer_log_density_matches_autograd_jacobian(channels):
    deq = _dequantizer(channels)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, channels, 2, 2, generator=g, dtype=torch.float64) - 0.5
    eps = torch.randn(1, channels, 2, 2, generator=g, dtype=torch.float64)
    u, log_q = deq.sample(x, eps)
    assert ((u > 0) & (u < 1)).all() and log_q.shape == (1,)
    jac = torch.autograd.functional.jacobian(lambda e: deq.sample(x, e.view_as(eps))[0].flatten(), eps.flatten())
    expected = -0.5 * (eps.pow(2) + math.log(2 * math.pi)).sum() - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(log_q[0], expected, atol=1e-8)


def test_dequantizer_is_a_normalised_density_on_the_unit_cube():
    """One pixel (D = 1): q(u|x) integrates to 1 over (0, 1), computed on a fine grid of u through
    the inverse of the flow."""
    import torch.nn.functional as F

    deq = _dequantizer(1)
    x = torch.full((1, 1, 1, 1), 0.2, dtype=torch.float64)
    u = torch.linspace(1e-9, 1 - 1e-9, 400_001, dtype=torch.float64).view(-1, 1, 1, 1)
    with torch.no_grad():
        h = deq.features(x).expand(len(u), -1, -1, -1)
        y = torch.logit(u)
        eps, log_det = y, torch.zeros(len(u), dtype=torch.float64)
        for layer in reversed(deq.layers):
            eps, ld = layer.inverse(eps, h)
            log_det = log_det + ld  # log |d eps / d y|
        log_q = -0.5 * (eps.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1) + log_det \
            - (F.logsigmoid(y) + F.logsigmoid(-y)).flatten(1).sum(1)
        # the forward direction agrees at the grid points
        u_fwd, log_q_fwd = deq.sample(x.expand(5, -1, -1, -1), eps[::100_000])
    assert torch.allclose(u_fwd.flatten(), u.flatten()[::100_000], atol=1e-9)
    assert torch.allclose(log_q_fwd, log_q[::100_000], atol=1e-6)
    assert torch.trapezoid(log_q.exp(), u.flatten()).item() == pytest.approx(1.0, abs=1e-4)


def test_flow_prior_of_zero_steps_is_the_standard_normal():
    """A prior of 0 steps has no parameters; it still samples (on the right dtype) and scores z as N(0, I)."""
    prior = FlowPrior(4, 0, 8).double()
    z = prior.sample(5, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert z.shape == (5, 4) and z.dtype == torch.float64
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    assert "_anchor" not in prior.state_dict()


def test_a_kernel1_coupling_network_sees_one_position_and_a_kernel3_one_its_neighbours():
    """``kernel_size=1`` (``model.coupling_kernel``) is what makes the decoder local: the output at a
    position depends on the input at that position only (plus z); eq. (7)'s two 3x3 convolutions
    reach two positions away."""
    torch.manual_seed(0)
    for k, reach in ((1, {(3, 3)}), (3, {(i, j) for i in range(1, 6) for j in range(1, 6)})):
        net = ConvCouplingNet(2, 4, 8, cond_dim=3, kernel_size=k)
        torch.nn.init.normal_(net.conv3.weight_g)  # the last layer starts at zero: make it see something
        x, z = torch.randn(1, 2, 7, 7, requires_grad=True), torch.randn(1, 3)
        net(x, z)[0, :, 3, 3].sum().backward()
        assert x.grad is not None
        seen = {(i, j) for i in range(7) for j in range(7) if x.grad[0, :, i, j].abs().sum() > 0}
        assert seen == reach
    with pytest.raises(ValueError, match="positive odd"):
        ConvCouplingNet(2, 4, 8, kernel_size=2)
