"""Affine and additive coupling layers with the four channel split patterns of the refined Glow.

Paper: §2.2 eq. (6) (conditional affine coupling), Figure 3b (split patterns), Appendix B.2
(bounded scale ``s = alpha * tanh(u / 2) + 1``).

Inverse overflow. With ``alpha = 1`` the scale lies in ``(0, 2)``: the forward pass grows a value
by at most 2 per layer, but the inverse divides by ``s`` with no bound. For ``u -> -inf``,
``log s ~ u``, and ``u`` is itself about linear in the conditioning half, so once one inverse
coupling has enlarged its output, the next coupling's network sees large inputs and returns a
much more negative ``u``: the inverse grows doubly exponentially with depth. In the tiny digits
model of ``tests/unit/models/test_finite_samples.py`` one inverse coupling (``log s = -13``) takes values from
15 to 4e5, and the next, fed those, has ``log s = -556``: ``exp(556)`` is beyond float32. Such a
value is the model's true inverse, not a rounding artefact: of the samples the float32 inverse
loses, nearly all overflow float64 as well and the rest lie beyond float32's range there (1e41 and
more). The scale itself is computed stably (:func:`bounded_log_scale`). With ``alpha < 1``,
``1/s < 1/(1 - alpha)`` bounds each layer's growth. :func:`affine_inverse` computes
``(y - b) / s`` without overflow and saturates at :data:`INVERSE_LIMIT`, so a sample whose
inverse leaves every representable range comes out finite and far outside the pixel range
(clamped there, and counted, by :mod:`flowvae.evaluation.sampling`) instead of as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow

__all__ = ["ChannelSplit", "AffineCoupling", "bounded_log_scale", "affine_inverse", "track_saturation",
           "saturated_samples", "track_ranges", "INVERSE_LIMIT"]

INVERSE_LIMIT = 2.0**40
"""Magnitude at which the inverse of an affine coupling saturates, ``2**40`` (about 1.1e12, exact
in every float format): 12 orders of magnitude beyond the pixel range ``[-0.5, 0.5)`` and the
unit-variance activations ActNorm sets up from data, so no sample that ends inside the pixel
range comes near it, yet small enough that coupling networks fed with it stay far below
float32's 3.4e38 (no ``inf - inf`` inside them)."""

# Per-sample masks of saturated inverses, collected while track_saturation() is active.
_saturation: ContextVar[list[Tensor] | None] = ContextVar("flowvae_inverse_saturation", default=None)


@contextmanager
def track_saturation() -> Iterator[list[Tensor]]:
    """Collect which samples saturated in :func:`affine_inverse` inside the ``with`` block.

    Yields a list that every :class:`AffineCoupling` inverse run inside the block appends one bool
    mask ``[B]`` to (``True``: some element of that sample reached :data:`INVERSE_LIMIT`); OR the
    masks of one batch to get the samples whose inverse left the representable range. Outside the
    block nothing is recorded. Context-local, so concurrent threads do not mix their records.
    """
    masks: list[Tensor] = []
    token = _saturation.set(masks)
    try:
        yield masks
    finally:
        _saturation.reset(token)


# (coupling, per-sample max |x_b|) of every coupling run while track_ranges() is active.
_ranges: ContextVar[list[tuple[AffineCoupling, Tensor]] | None] = ContextVar("flowvae_coupling_ranges", default=None)


@contextmanager
def track_ranges() -> Iterator[list[tuple[AffineCoupling, Tensor]]]:
    """Record how large every :class:`AffineCoupling`'s data-side half gets inside the ``with`` block.

    Yields a list that each coupling's forward and inverse pass appends ``(layer, m)`` to, ``m``
    the per-sample ``max |x_b|`` ``[B]`` (float32, detached) of the half it transforms, on the data
    side: the forward pass's input, the inverse pass's output. Comparing the inverse of samples
    with the forward pass of real images shows at which coupling a sample leaves the range the
    data reach (:mod:`flowvae.evaluation.saturation`). Context-local, like :func:`track_saturation`.
    """
    records: list[tuple[AffineCoupling, Tensor]] = []
    token = _ranges.set(records)
    try:
        yield records
    finally:
        _ranges.reset(token)


def _record_range(layer: AffineCoupling, x_b: Tensor) -> None:
    if torch.compiler.is_compiling():  # the compiled training forward never records; keeps dynamo off the ContextVar
        return
    records = _ranges.get()
    if records is not None:
        records.append((layer, x_b.detach().flatten(1).abs().amax(1).float()))


def saturated_samples(masks: list[Tensor], n: int) -> Tensor:
    """OR the masks :func:`track_saturation` collected for one batch of ``n`` samples: bool ``[n]``
    on the CPU, ``True`` where some inverse of that sample saturated. Masks of other sizes (an
    inverse run on another batch inside the same block) are left out."""
    saturated = torch.zeros(n, dtype=torch.bool)
    for mask in masks:
        if mask.shape[0] == n:
            saturated |= mask.cpu()
    return saturated


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

    For ``alpha = 1`` this is ``log 2 + logsigmoid(u)`` (``tanh(u/2) + 1 = 2 sigmoid(u)``), which
    stays finite for any finite ``u``: the tanh form would round ``s`` to exactly 0 in float32 once
    ``u < -18`` or so, and its log to ``-inf``. Same shape as ``u``.
    """
    if alpha == 1.0:
        return F.logsigmoid(u) + math.log(2.0)
    return torch.log1p(alpha * torch.tanh(u / 2))


def affine_inverse(y_b: Tensor, b: Tensor, log_s: Tensor, limit: float = INVERSE_LIMIT) -> Tensor:
    """``x_b = (y_b - b) / s`` (the inverse of eq. (6)) without overflow, saturating at ``+-limit``.

    Where ``(y_b - b) * exp(-log s)`` is finite and at most ``limit`` in magnitude (every element
    of every inverse of data or of a stable model) the result is exactly that product, bit for bit.
    Elsewhere it is ``sign(y_b - b) * min(exp(log|y_b - b| - log s), limit)``: exact where only
    ``exp(-log s)`` overflowed (``1/s`` beyond float range, ``y_b - b`` tiny; ``0 * inf`` gave NaN
    before), and ``+-limit`` where the true inverse exceeds the limit (see the module docstring).
    NaN in an input stays NaN (a broken model, not an unstable one). The rescued elements carry
    no gradient (a saturated value is a constant).

    Args:
        y_b: transformed half ``[B, C_b, ...]``.
        b: bias, same shape.
        log_s: ``log s``, same shape (:func:`bounded_log_scale`).
        limit: saturation magnitude (> 0).

    Returns:
        ``x_b``, same shape as ``y_b``. Inside :func:`track_saturation`, also records which
        samples reached the limit.
    """
    diff = y_b - b
    x_b = diff * torch.exp(-log_s)
    ok = x_b.abs() <= limit  # False for NaN and inf too
    record = _saturation.get()
    with torch.no_grad():  # selected only where the product failed; keeps inf/NaN out of gradients
        log_mag = torch.log(diff.abs()) - log_s
        safe = diff.sign() * torch.exp(log_mag).clamp(max=limit)  # exp may overflow to inf here: clamped
    if record is not None:
        record.append((~ok & (log_mag > math.log(limit))).flatten(1).any(1))
    return torch.where(ok, x_b, safe)


class AffineCoupling(Flow):
    """Conditional affine (or additive) coupling layer, paper eq. (6).

    ``x_a, x_b = split(x)``; ``y_a = x_a``; ``y_b = s(x_a, z) * x_b + b(x_a, z)``;
    ``y = merge(y_a, y_b)``. The network ``net(x_a, cond)`` returns ``2 * C_b`` channels:
    the first ``C_b`` are the pre-activation ``u`` of the scale and the last ``C_b`` the bias
    (only ``C_b`` bias channels when ``additive``). ``logdet = sum log s`` over ``C_b, H, W``,
    shape ``[B]``; zero for the additive coupling.

    The inverse is :func:`affine_inverse`: exact wherever it is representable, saturated at
    :data:`INVERSE_LIMIT` where the model's true inverse exceeds it (its logdet is then that of
    the unsaturated map). The forward pass, and so every density, is the plain formula.

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
        _record_range(self, x_b)
        log_s, b = self._params(x_a, cond)
        if log_s is None:
            return self.splitter.merge(x_a, x_b + b), x.new_zeros(x.shape[0])
        y_b = x_b * log_s.exp() + b
        return self.splitter.merge(x_a, y_b), log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y_a, y_b = self.splitter.split(y)
        log_s, b = self._params(y_a, cond)
        x_b = y_b - b if log_s is None else affine_inverse(y_b, b, log_s)
        _record_range(self, x_b)
        logdet = y.new_zeros(y.shape[0]) if log_s is None else -log_s.flatten(1).sum(1)
        return self.splitter.merge(y_a, x_b), logdet

    def extra_repr(self) -> str:
        s = self.splitter
        kind = "additive" if self.additive else f"affine, alpha={self.alpha}"
        return f"{s.pattern}, swap={s.swap}, {s.size_a}->{s.size_b}, {kind}"
