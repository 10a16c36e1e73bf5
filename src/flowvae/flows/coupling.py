"""Affine and additive coupling layers with the four channel split patterns of the refined Glow.

Paper: §2.2 eq. (6) (conditional affine coupling), Figure 3b (split patterns), Appendix B.2
(bounded scale ``s = alpha * tanh(u / 2) + 1``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow

__all__ = ["ChannelSplit", "AffineCoupling", "bounded_log_scale"]

SPLIT_PATTERNS = ("continuous", "alternate")


class ChannelSplit:
    """Splits channels into ``(x_a, x_b)`` and merges them back (Figure 3b).

    ``x_a`` conditions the coupling network and passes through unchanged; ``x_b`` is transformed.

    * ``"continuous"``: ``x_b`` is the last ``size_b`` channels (``swap=False``, "up") or the
      first ``size_b`` channels (``swap=True``, "down"); ``x_a`` is the rest.
    * ``"alternate"``: ``x_a`` the even channels and ``x_b`` the odd ones, or the other way round
      with ``swap=True``. Needs an even channel count.

    ``size_b`` defaults to ``C // 2`` (so for odd ``C`` the conditioner gets the extra channel, as
    in the authors' code).

    Args:
        num_channels: ``C`` (at least 2).
        pattern: ``"continuous"`` or ``"alternate"``.
        swap: exchange which part is transformed.
        size_b: channels transformed (continuous pattern only).

    Raises:
        ValueError: fewer than 2 channels, unknown pattern, or ``"alternate"`` with odd ``C``.
    """

    def __init__(self, num_channels: int, pattern: str = "continuous", swap: bool = False,
                 size_b: int | None = None):
        if pattern not in SPLIT_PATTERNS:
            raise ValueError(f"split pattern must be one of {SPLIT_PATTERNS}, got {pattern!r}")
        if num_channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {num_channels}")
        if pattern == "alternate" and (num_channels % 2 or size_b not in (None, num_channels // 2)):
            raise ValueError(f"the alternate split needs an even channel count, got {num_channels}")
        self.num_channels, self.pattern, self.swap = num_channels, pattern, swap
        self.size_b = num_channels // 2 if size_b is None else size_b
        if not 0 < self.size_b < num_channels:
            raise ValueError(f"size_b must be in 1..{num_channels - 1}, got {self.size_b}")
        self.size_a = num_channels - self.size_b

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.pattern == "continuous":
            if self.swap:
                return x[:, self.size_b:], x[:, : self.size_b]
            return x[:, : self.size_a], x[:, self.size_a:]
        even, odd = x[:, 0::2], x[:, 1::2]
        return (odd, even) if self.swap else (even, odd)

    def merge(self, a: Tensor, b: Tensor) -> Tensor:
        if self.pattern == "continuous":
            return torch.cat([b, a] if self.swap else [a, b], dim=1)
        even, odd = (b, a) if self.swap else (a, b)
        return torch.stack([even, odd], dim=2).flatten(1, 2)


def bounded_log_scale(u: Tensor, alpha: float) -> Tensor:
    """``log s`` for ``s = alpha * tanh(u / 2) + 1`` (Appendix B.2), so ``s`` lies in ``(1-alpha, 1+alpha)``.

    For ``alpha = 1`` this is ``log 2 + logsigmoid(u)``, which stays finite for any ``u``.
    """
    if alpha == 1.0:
        return F.logsigmoid(u) + math.log(2.0)
    return torch.log1p(alpha * torch.tanh(u / 2))


class AffineCoupling(Flow):
    """Conditional affine (or additive) coupling layer, paper eq. (6).

    ``x_a, x_b = split(x)``; ``y_a = x_a``; ``y_b = s(x_a, z) * x_b + b(x_a, z)``;
    ``y = merge(y_a, y_b)``. The network ``net(x_a, cond)`` returns ``2 * C_b`` channels:
    the first ``C_b`` are the pre-activation ``u`` of the scale and the last ``C_b`` the bias
    (only ``C_b`` bias channels when ``additive``). ``logdet = sum log s`` over ``C_b, H, W``,
    shape ``[B]``; zero for the additive coupling.

    Args:
        split: how channels are divided (:class:`ChannelSplit`).
        net: module mapping ``(x_a [B, C_a, ...], cond [B, d_z] | None)`` to
            ``[B, (1 if additive else 2) * C_b, ...]``.
        alpha: the scale bound of Appendix B.2 (``alpha`` in ``(0, 1]``).
        additive: use ``y_b = x_b + b`` (NICE) instead of the affine transform.
    """

    def __init__(self, split: ChannelSplit, net: nn.Module, alpha: float = 1.0, additive: bool = False):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.splitter = split
        self.net = net
        self.alpha = alpha
        self.additive = additive

    def _params(self, x_a: Tensor, cond: Tensor | None) -> tuple[Tensor | None, Tensor]:
        h = self.net(x_a, cond)
        if h.dtype in (torch.float16, torch.bfloat16):  # scale, bias and logdet stay in full precision
            h = h.float()
        if self.additive:
            return None, h
        c_b = self.splitter.size_b
        return bounded_log_scale(h[:, :c_b], self.alpha), h[:, c_b:]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = self.splitter.split(x)
        log_s, b = self._params(x_a, cond)
        if log_s is None:
            return self.splitter.merge(x_a, x_b + b), x.new_zeros(x.shape[0])
        y_b = x_b * log_s.exp() + b
        return self.splitter.merge(x_a, y_b), log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y_a, y_b = self.splitter.split(y)
        log_s, b = self._params(y_a, cond)
        if log_s is None:
            return self.splitter.merge(y_a, y_b - b), y.new_zeros(y.shape[0])
        x_b = (y_b - b) * torch.exp(-log_s)
        return self.splitter.merge(y_a, x_b), -log_s.flatten(1).sum(1)

    def extra_repr(self) -> str:
        s = self.splitter
        kind = "additive" if self.additive else f"affine, alpha={self.alpha}"
        return f"{s.pattern}, swap={s.swap}, {s.size_a}->{s.size_b}, {kind}"
