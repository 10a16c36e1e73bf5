"""Invertible 1x1 convolution (Glow, Kingma & Dhariwal 2018) and its vector form, the invertible
linear layer used in the flow prior p(z) (paper Appendix A eq. (2), Appendix B.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow

__all__ = ["InvertibleConv1x1", "InvertibleLinear"]


def _random_rotation(n: int, generator: torch.Generator | None = None) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # Haar-uniform orthogonal matrix
    return q.float()


class InvertibleConv1x1(Flow):
    """Invertible 1x1 convolution ``y[:, :, i, j] = W x[:, :, i, j]`` with a learned ``C x C`` matrix.

    Inputs are images ``[B, C, H, W]`` or vectors ``[B, C]``; ``logdet = H * W * log|det W|``
    (shape ``[B]``, nats).

    Two parametrisations, both with exactly ``C * C`` parameters:

    * ``"plain"``: ``W`` itself; ``log|det W|`` by ``slogdet`` (``O(C^3)`` per call).
    * ``"lu"`` (default): ``W = P L U`` with ``P`` a fixed permutation, ``L`` unit lower
      triangular, ``U = triu(lu, 1) + diag(sign * exp(diag(lu)))``; the strictly lower part,
      strictly upper part and log-magnitudes of the diagonal are packed in one ``C x C`` parameter.
      ``log|det W| = sum(diag(lu))`` costs ``O(C)`` and the determinant can never change sign.

    The inverse matrix is computed from the current parameters at each call, never cached, so it
    can never go stale after an optimizer step.

    Args:
        num_channels: ``C``.
        parametrization: ``"lu"`` or ``"plain"``.
    """

    perm: Tensor  # buffers of the "lu" parametrization (registered in __init__)
    sign: Tensor
    eye: Tensor

    def __init__(self, num_channels: int, parametrization: str = "lu"):
        super().__init__()
        if parametrization not in ("lu", "plain"):
            raise ValueError(f"parametrization must be 'lu' or 'plain', got {parametrization!r}")
        self.num_channels = num_channels
        self.parametrization = parametrization
        w0 = _random_rotation(num_channels)
        if parametrization == "plain":
            self.weight = nn.Parameter(w0)
        else:
            p, lower, upper = torch.linalg.lu(w0)
            diag = torch.diagonal(upper)
            packed = torch.tril(lower, -1) + torch.triu(upper, 1) + torch.diag(diag.abs().log())
            self.lu = nn.Parameter(packed)
            self.register_buffer("perm", p)
            self.register_buffer("sign", torch.sign(diag))
            eye = torch.eye(num_channels)
            self.register_buffer("eye", eye)

    def weight_matrix(self) -> Tensor:
        """The current ``C x C`` matrix ``W`` (float, differentiable)."""
        if self.parametrization == "plain":
            return self.weight
        lower = torch.tril(self.lu, -1) + self.eye
        upper = torch.triu(self.lu, 1) + torch.diag(self.sign * torch.diagonal(self.lu).exp())
        return self.perm @ lower @ upper

    def log_abs_det(self) -> Tensor:
        """``log |det W|`` in nats (scalar)."""
        if self.parametrization == "plain":
            return torch.linalg.slogdet(self.weight)[1]
        return torch.diagonal(self.lu).sum()

    def inverse_matrix(self) -> Tensor:
        """``W^{-1}`` computed from the current parameters (never cached)."""
        if self.parametrization == "plain":
            return torch.linalg.inv(self.weight.double()).to(self.weight.dtype)
        lower = torch.tril(self.lu, -1) + self.eye
        upper = torch.triu(self.lu, 1) + torch.diag(self.sign * torch.diagonal(self.lu).exp())
        # W^-1 = U^-1 L^-1 P^T, by two triangular solves (more accurate than a general inverse).
        l_inv = torch.linalg.solve_triangular(lower.double(), self.eye.double(), upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper.double(), self.eye.double(), upper=True)
        return (u_inv @ l_inv @ self.perm.double().T).to(self.lu.dtype)

    @staticmethod
    def _matmul(x: Tensor, w: Tensor) -> Tensor:
        if x.dim() == 2:
            return x @ w.T
        return F.conv2d(x, w.to(x.dtype).view(*w.shape, 1, 1))

    def _spatial(self, x: Tensor) -> int:
        return x.shape[2] * x.shape[3] if x.dim() == 4 else 1

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = self._matmul(x, self.weight_matrix())
        return y, (self._spatial(x) * self.log_abs_det()).expand(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self._matmul(y, self.inverse_matrix())
        return x, (-self._spatial(y) * self.log_abs_det()).expand(y.shape[0])

    def extra_repr(self) -> str:
        return f"{self.num_channels}, parametrization={self.parametrization!r}"


class InvertibleLinear(InvertibleConv1x1):
    """Invertible linear layer ``y = W x`` on vectors ``[B, D]`` (flow prior, Appendix B.3).

    Identical to :class:`InvertibleConv1x1`, which already accepts 2-D inputs; the separate
    name keeps model code readable.
    """
