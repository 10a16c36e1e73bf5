"""The refined Glow of the paper (§2.2, Figure 3) as a conditional flow v = f(x; z), and the flow
prior p(z) of Appendix B.3.

Structure (data-to-latent direction), following the authors' implementation:

* **Refined step** (Figure 3a): ActNorm -> invertible 1x1 convolution -> coupling(continuous,
  up) -> coupling(continuous, down) -> ActNorm -> coupling(alternate, up) -> coupling(alternate,
  down). Four split patterns share one 1x1 convolution (Figure 3b). With an odd channel count
  the alternate pattern is replaced by the continuous one.
* **Levels**: level 0 runs at full resolution without squeeze; every later level starts with a
  squeeze. A level given as ``[a, b]`` is fine-grained (Figure 3c, MaCow's multi-scale with
  ``M`` = ``factor_out``): ``a`` steps, factor out ``C/M`` channels, ``b`` steps, factor out
  ``C/M`` more. A factor-out passes the channels through an invertible 1x1 convolution, a
  z-conditioned affine coupling that transforms the leaving channels given the staying ones
  (a learned conditional Gaussian prior), and an ActNorm on the leaving channels; they then
  leave the flow and get a standard normal density. The last level has no factor-out.
* ``v`` is every factored-out piece and the last level's output, flattened and concatenated:
  shape ``[B, C*H*W]``; ``v ~ N(0, I)``.

``architecture="glow"`` builds the original Glow baseline instead (Kingma & Dhariwal 2018): every
level squeezes, then runs steps of ActNorm -> invertible 1x1 -> one affine coupling; every level
but the last factors out half of its channels under a learned Gaussian conditioned on the other
half, and the last level's output has a learned per-dimension Gaussian. Both learned Gaussians are
written as invertible affine maps to N(0, I) (same density), so v stays standard normal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..maths import standard_normal_logprob  # re-exported: part of this module's API
from ..networks.coupling_nets import ConvCouplingNet, MLPCouplingNet
from ..networks.layers import ZeroWeightNormConv2d, ZeroWeightNormLinear
from .actnorm import ActNorm
from .base import Flow, FlowSequence
from .conv1x1 import InvertibleConv1x1
from .coupling import AffineCoupling, ChannelSplit
from .recompute import invert_ops, recomputed_ops, run_ops
from .squeeze import Squeeze

__all__ = ["refined_step", "glow_step", "FactorOut", "ConditionalGlow", "ConditionalGaussian", "FlowPrior",
           "LearnedGaussian",
           "standard_normal_logprob"]



NetFactory = Callable[[int, int], nn.Module]  # (in_channels, out_channels) -> network


def refined_step(channels: int, make_net: NetFactory, alpha: float = 1.0, additive: bool = False,
                 conv1x1: str = "lu") -> FlowSequence:
    """One refined Glow step (Figure 3a) on ``channels`` channels (images or vectors).

    ``make_net(c_a, c_out)`` builds each coupling network. Returns a :class:`FlowSequence`
    of 7 layers: ActNorm, invertible 1x1, two continuous couplings, ActNorm, two alternate ones.
    """
    pattern2 = "alternate" if channels % 2 == 0 else "continuous"
    layers: list[Flow] = [ActNorm(channels), InvertibleConv1x1(channels, conv1x1)]
    for i, (pattern, swap) in enumerate([("continuous", False), ("continuous", True),
                                         (pattern2, False), (pattern2, True)]):
        if i == 2:
            layers.append(ActNorm(channels))
        split = ChannelSplit(channels, pattern, swap)
        out = split.size_b * (1 if additive else 2)
        layers.append(AffineCoupling(split, make_net(split.size_a, out), alpha, additive))
    return FlowSequence(layers)


def glow_step(channels: int, make_net: NetFactory, alpha: float = 1.0, additive: bool = False,
               conv1x1: str = "lu") -> FlowSequence:
    """One step of the original Glow: ActNorm -> invertible 1x1 -> affine coupling (continuous split)."""
    split = ChannelSplit(channels, "continuous")
    out = split.size_b * (1 if additive else 2)
    return FlowSequence([ActNorm(channels), InvertibleConv1x1(channels, conv1x1),
                         AffineCoupling(split, make_net(split.size_a, out), alpha, additive)])


class _ZeroConv(nn.Module):
    """Zero-initialised 3x3 convolution that accepts (and ignores) a conditioning code."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ZeroWeightNormConv2d(c_in, c_out, 3)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.conv(x)


class LearnedGaussian(Flow):
    """A learned diagonal Gaussian ``N(mean, exp(log_scale)^2)`` over ``shape`` written as the flow
    ``y = (x - mean) * exp(-log_scale)`` to N(0, I); ``logdet = -sum(log_scale)`` (``[B]``).
    Starts as the identity (Glow's "learn top" prior)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.mean) * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y * self.log_scale.exp() + self.mean, self.log_scale.sum().expand(y.shape[0])


class ConditionalGaussian(Flow):
    """``v ~ N(mu(z), diag(sigma(z))^2)`` written as the flow ``(v - mu) / sigma`` to N(0, I).

    The "z only in the prior of v" baseline of the paper's Table 3: z sets the mean and scale of
    v's Gaussian through one zero-initialised weight-normalised linear layer (so it starts as
    N(0, I)) instead of entering the couplings. Shapes: ``v [B, D]``, ``cond [B, d_z]``;
    ``logdet = -sum(log sigma)`` ``[B]``.
    """

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.dim = dim
        self.net = ZeroWeightNormLinear(cond_dim, 2 * dim)

    def _params(self, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ValueError("ConditionalGaussian needs the code z: pass cond of shape [B, d_z]")
        h = self.net(cond)
        return h[:, :self.dim], h[:, self.dim:]

    def forward(self, v: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self._params(cond)
        return (v - mu) * torch.exp(-log_sigma), -log_sigma.sum(1)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self._params(cond)
        return y * log_sigma.exp() + mu, log_sigma.sum(1)


class _TailActNorm(Flow):
    """ActNorm applied only to the last ``n`` channels (the ones about to be factored out)."""

    def __init__(self, channels: int, n: int):
        super().__init__()
        self.keep = channels - n
        self.actnorm = ActNorm(n)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, ld = self.actnorm(x[:, self.keep:])
        return torch.cat([x[:, : self.keep], y], 1), ld

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, ld = self.actnorm.inverse(y[:, self.keep:])
        return torch.cat([y[:, : self.keep], x], 1), ld


class FactorOut(FlowSequence):
    """Prepares the last ``n_out`` of ``channels`` channels to leave the flow (multi-scale split).

    Invertible 1x1 convolution -> affine coupling transforming the last ``n_out`` channels given
    the others and z -> ActNorm of those ``n_out`` channels. Same shape in and out; the caller
    slices the last ``n_out`` channels off afterwards and scores them under N(0, I).
    """

    def __init__(self, channels: int, n_out: int, make_net: NetFactory, alpha: float = 1.0,
                 additive: bool = False, conv1x1: str = "lu"):
        split = ChannelSplit(channels, "continuous", swap=False, size_b=n_out)
        out = n_out * (1 if additive else 2)
        super().__init__([
            InvertibleConv1x1(channels, conv1x1),
            AffineCoupling(split, make_net(split.size_a, out), alpha, additive),
            _TailActNorm(channels, n_out),
        ])
        self.n_out = n_out


class ConditionalGlow(Flow):
    """The flow decoder v = f(x; z) of §2.2 (refined Glow, fine-grained multi-scale).

    Args:
        in_channels: image channels ``C``.
        image_size: ``H = W``; must be divisible by ``2 ** (len(steps) - 1)``.
        steps: per level, an ``int`` (plain level) or a list ``[a, b, ...]`` (fine-grained level).
        hidden: coupling-network width per level.
        cond_dim: ``d_z`` (0 for the unconditional refined Glow).
        cond_image: ``(C_img, S_img)``: the conditioning also holds an image of that shape, flattened
            after the code, given to every coupling network (:class:`ConvCouplingNet`); refined only.
        factor_out: ``M``; a fine-grained level factors out ``C/M`` channels after each group.
        alpha, additive, conv1x1: see :class:`AffineCoupling` and :class:`InvertibleConv1x1`.
        kernel_size: of the coupling networks' outer convolutions (:class:`ConvCouplingNet`; 3 in
            the paper). The original Glow's learned priors of the factored-out halves keep 3x3.

    ``forward(x [B, C, H, W], z [B, d_z]) -> (v [B, C*H*W], logdet [B])`` and
    ``inverse(v, z) -> (x, logdet)`` with the convention of :mod:`flowvae.flows.base`.

    Raises:
        ValueError: an architecture that cannot be built for this image shape, with the reason.
    """

    def __init__(self, in_channels: int, image_size: int, steps: list, hidden: list[int],
                 cond_dim: int = 0, factor_out: int = 4, alpha: float = 1.0,
                 additive: bool = False, conv1x1: str = "lu", architecture: str = "refined",
                 cond_image: tuple[int, int] | None = None, kernel_size: int = 3):
        super().__init__()
        levels = len(steps)
        if len(hidden) != levels:
            raise ValueError(f"hidden has {len(hidden)} entries but steps has {levels}; give one width per level")
        if architecture not in ("refined", "glow"):
            raise ValueError(f"architecture must be 'refined' or 'glow', got {architecture!r}")
        self.cond_dim = cond_dim
        self.architecture = architecture
        self.squeeze = Squeeze()
        self.in_shape = (in_channels, image_size, image_size)
        # Recompute activations from the layer outputs in the backward pass (flat memory in depth).
        self.recompute = False
        if architecture == "glow":
            if cond_image is not None:
                raise ValueError("cond_image is supported by the refined architecture only")
            self._build_glow(steps, hidden, cond_dim, alpha, additive, conv1x1, kernel_size)
            return
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image size {image_size} is not divisible by 2^(levels-1) = {2 ** (levels - 1)} "
                             f"for {levels} levels; use fewer levels or resize the images")
        flows: list[Flow] = []
        self.ops: list[tuple[str, int]] = []
        c, s = in_channels, image_size
        self.out_shapes: list[tuple[int, int, int]] = []

        def add(flow: Flow) -> None:
            self.ops.append(("flow", len(flows)))
            flows.append(flow)

        for level, (entry, width) in enumerate(zip(steps, hidden)):
            if level > 0:
                self.ops.append(("squeeze", 0))
                c, s = c * 4, s // 2
            image = None if cond_image is None else (*cond_image, s)

            def make_net(c_a: int, c_out: int, width=width, image=image) -> nn.Module:
                return ConvCouplingNet(c_a, c_out, width, cond_dim, image, kernel_size)
            groups = list(entry) if isinstance(entry, (list, tuple)) else [entry]
            last = level == levels - 1
            if c < 2 and sum(groups) > 0:
                raise ValueError(f"level {level} has {c} channel(s): a coupling needs at least 2; "
                                 f"set its step count to 0 (e.g. steps[0]=0 for grey images)")
            if isinstance(entry, (list, tuple)):
                if last or level == 0:
                    raise ValueError(f"level {level}: the first and last levels take a plain step count, got {entry}")
                if c % factor_out or len(groups) >= factor_out:
                    raise ValueError(f"level {level}: {c} channels cannot be factored out in {len(groups)} "
                                     f"groups of 1/{factor_out}")
                n_out = c // factor_out
            else:
                n_out = c // 2
            for n in groups:
                for _ in range(n):
                    add(refined_step(c, make_net, alpha=alpha, additive=additive, conv1x1=conv1x1))
                if not last and (isinstance(entry, (list, tuple)) or level > 0):
                    add(FactorOut(c, n_out, make_net, alpha=alpha, additive=additive, conv1x1=conv1x1))
                    self.ops.append(("split", n_out))
                    self.out_shapes.append((n_out, s, s))
                    c -= n_out
        self.out_shapes.append((c, s, s))
        self.flows = nn.ModuleList(flows)

    def _build_glow(self, steps: list, hidden: list[int], cond_dim: int, alpha: float, additive: bool,
                    conv1x1: str, kernel_size: int) -> None:
        c, s = self.in_shape[0], self.in_shape[1]
        levels = len(steps)
        if s % 2 ** levels:
            raise ValueError(f"image size {s} is not divisible by 2^levels = {2 ** levels} (original Glow "
                             f"squeezes at every level); use fewer levels")
        flows: list[Flow] = []
        self.ops, self.out_shapes = [], []
        for level, (entry, width) in enumerate(zip(steps, hidden)):
            n_steps = sum(entry) if isinstance(entry, (list, tuple)) else entry  # [a, b] counts as a + b
            self.ops.append(("squeeze", 0))
            c, s = c * 4, s // 2

            def make_net(c_a: int, c_out: int, width=width) -> nn.Module:
                return ConvCouplingNet(c_a, c_out, width, cond_dim, kernel_size=kernel_size)
            for _ in range(n_steps):
                self.ops.append(("flow", len(flows)))
                flows.append(glow_step(c, make_net, alpha, additive, conv1x1))
            if level < levels - 1:
                n_out = c // 2
                split = ChannelSplit(c, "continuous", swap=False, size_b=n_out)
                self.ops.append(("flow", len(flows)))  # the factored-out half's learned conditional Gaussian
                flows.append(AffineCoupling(split, _ZeroConv(split.size_a, 2 * n_out), 1.0, False))
                self.ops.append(("split", n_out))
                self.out_shapes.append((n_out, s, s))
                c -= n_out
        self.ops.append(("flow", len(flows)))
        flows.append(LearnedGaussian((c, s, s)))
        self.out_shapes.append((c, s, s))
        self.flows = nn.ModuleList(flows)

    @property
    def dim(self) -> int:
        """Number of dimensions ``D = C * H * W`` of x and of v."""
        c, h, w = self.in_shape
        return c * h * w

    def _program(self) -> list:
        return [("flow", self.flows[arg]) if kind == "flow" else ("squeeze", self.squeeze) if kind == "squeeze"
                else (kind, arg) for kind, arg in self.ops]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        program = self._program()
        if self.recompute and torch.is_grad_enabled() and not any(getattr(m, "_data_init", False) for m in self.modules()):
            return recomputed_ops(self, program, _flatten, x, cond)
        last, logdet, outs = run_ops(program, x, cond)
        return _flatten(outs + [last]), logdet

    def inverse(self, v: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        sizes = [c * h * w for c, h, w in self.out_shapes]
        pieces = [p.reshape(-1, *shape) for p, shape in zip(v.split(sizes, 1), self.out_shapes)]
        return invert_ops(self._program(), pieces.pop(), pieces, cond)


def _flatten(pieces: list[Tensor]) -> Tensor:
    return torch.cat([p.flatten(1) for p in pieces], 1)


class FlowPrior(Flow):
    """Flow prior p(z) of Appendix B.3: refined steps on vectors with MLP coupling networks.

    ``forward(z [B, d_z]) -> (eps [B, d_z], logdet [B])``; ``log p(z) = log N(eps) + logdet``.

    Args:
        dim: ``d_z``.
        num_steps: number of steps (2 in the paper's models).
        hidden: width of the MLPs.
    """

    _anchor: Tensor

    def __init__(self, dim: int, num_steps: int = 2, hidden: int = 256, alpha: float = 1.0,
                 conv1x1: str = "lu"):
        super().__init__()
        if dim < 2:
            raise ValueError(f"the flow prior needs d_z >= 2, got {dim}")
        self.dim = dim

        def make_net(c_a: int, c_out: int) -> nn.Module:
            return MLPCouplingNet(c_a, c_out, hidden)

        self.steps = FlowSequence([refined_step(dim, make_net, alpha, False, conv1x1) for _ in range(num_steps)])
        # a prior of 0 steps has no parameters to tell sample() the device and dtype; not saved
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.steps(z)

    def inverse(self, eps: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.steps.inverse(eps)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(z)`` in nats, ``[B, d_z] -> [B]``."""
        eps, logdet = self.steps(z)
        return standard_normal_logprob(eps) + logdet

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``[n, d_z]`` of z: ``eps ~ N(0, temperature^2 I)`` pushed through the inverse flow."""
        eps = torch.randn(n, self.dim, generator=generator, device=self._anchor.device,
                          dtype=self._anchor.dtype) * temperature
        return self.steps.inverse(eps)[0]
