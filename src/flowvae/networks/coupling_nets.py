"""Networks that output the scale and bias of coupling layers.

* :class:`ConvCouplingNet`: paper eq. (7),
  ``x -> Conv3x3 -> ELU -> Conv1x1 (+) FC(z) -> ELU -> Conv3x3``, where ``(+)`` adds the
  projection of the global code z to every pixel (per channel). ``kernel_size=1`` makes the two
  3x3 convolutions 1x1 (a local decoder; a departure from the paper, see ``model.coupling_kernel``).
* :class:`MLPCouplingNet`: the MLP of the flow prior p(z) (Appendix B.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ZeroWeightNormConv2d, ZeroWeightNormLinear

__all__ = ["ConvCouplingNet", "MLPCouplingNet"]


class ConvCouplingNet(nn.Module):
    """Coupling network of eq. (7).

    Args:
        in_channels: ``C_a`` (channels of the conditioner ``x_a``).
        out_channels: ``2 * C_b`` for affine couplings (scale and bias), ``C_b`` for additive.
        hidden: width of the two hidden layers.
        cond_dim: ``d_z``; 0 builds the unconditional network (refined Glow, no FC(z)).

        kernel_size: side of the first and last convolutions (3 in eq. 7; odd). 1 limits what the
            network sees to one position of its level, so the flow only models dependencies inside
            a squeezed block and must leave the rest to z (the "local decoder" remedy for posterior
            collapse of the Variational Lossy Autoencoder, Chen et al. 2017).
        cond_image: ``(C_img, S_img, S)``: the conditioning also carries an image ``[B, C_img, S_img,
            S_img]`` (the multi-stage model's stage-1 reconstruction), flattened after the ``d_z``
            code, and this network works at side ``S``; the image is rearranged losslessly to that
            side (space-to-depth by ``S_img / S``) and concatenated to ``x_a`` as extra input channels.

    Shapes: ``x_a [B, C_a, H, W]``, ``cond [B, d_z]`` (``[B, d_z + C_img*S_img*S_img]`` with
    ``cond_image``) -> ``[B, out_channels, H, W]``. The last layer starts at zero, so the coupling
    starts as the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, cond_dim: int = 0,
                 cond_image: tuple[int, int, int] | None = None, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number (same-size output), got {kernel_size}")
        self.compute_dtype: torch.dtype | None = None  # e.g. torch.bfloat16: see FlowVAE.set_precision
        self.cond_dim = cond_dim
        self.cond_image = cond_image
        extra = 0
        if cond_image is not None:
            c_img, s_img, s = cond_image
            if s_img % s:
                raise ValueError(f"a conditioning image of side {s_img} cannot be rearranged to side {s}")
            self.image_factor = s_img // s
            extra = c_img * self.image_factor ** 2
        self.conv1 = nn.Conv2d(in_channels + extra, hidden, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv2 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.cond = nn.Linear(cond_dim, hidden) if cond_dim > 0 else None
        self.conv3 = ZeroWeightNormConv2d(hidden, out_channels, kernel_size)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.compute_dtype is not None:
            # Only the network runs in reduced precision; its output goes back to float32 so the
            # affine transform, the log-determinant and the loss stay in full precision.
            with torch.autocast(device_type=x.device.type, dtype=self.compute_dtype):
                return self._forward(x, cond).float()
        return self._forward(x, cond)

    def _forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        if (self.cond is not None or self.cond_image is not None) and cond is None:
            raise ValueError("this coupling network is conditioned: pass cond of shape [B, d_z] "
                             "(followed by the flattened image when it takes one)")
        if self.cond_image is not None:
            assert cond is not None  # narrowing only: the check above raised if it were None
            c_img, s_img, _ = self.cond_image
            img = cond[:, self.cond_dim:].reshape(-1, c_img, s_img, s_img)
            if self.image_factor > 1:
                img = F.pixel_unshuffle(img, self.image_factor)
            x = torch.cat([x, img.to(x.dtype)], 1)
        # In-place ELUs on fresh outputs: autograd then keeps only the ELU's result (which the next
        # convolution saves anyway) and differentiates from it without a second exp.
        h = self.conv2(F.elu(self.conv1(x), inplace=True))
        if self.cond is not None:
            assert cond is not None  # narrowing only: the check above raised if it were None
            h = h.add_(self.cond(cond[:, :self.cond_dim]).to(h.dtype)[:, :, None, None])
        return self.conv3(F.elu(h, inplace=True))


class MLPCouplingNet(nn.Module):
    """MLP ``Linear -> ELU -> Linear -> ELU -> Linear`` for couplings on vectors (Appendix B.3).

    Shapes: ``x_a [B, in_features]`` -> ``[B, out_features]``; the last layer starts at zero.
    ``cond`` is accepted and ignored (the prior of z is unconditional).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = ZeroWeightNormLinear(hidden, out_features)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.fc3(F.elu(self.fc2(F.elu(self.fc1(x)))))
