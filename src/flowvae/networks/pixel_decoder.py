"""A feed-forward decoder from a code z to a discretised logistic over 8-bit pixels.

It is the decoder of the plain VAE (:mod:`flowvae.models.vae`) and the auxiliary decoder of the
flow model (``model.aux_decoder_weight``: Lucas & Verbeek, "Auxiliary Guided Autoregressive
Variational Autoencoders", ECML-PKDD 2018, arXiv:1711.11479). Structure: two linear layers from
z to the smallest map, then per level a nearest-neighbour upsampling to the next larger side and a
3x3 convolution (+ ReLU), and a last 3x3 convolution to the per-pixel mean and log-scale on the
``[-1, 1]`` scale (log-scale floored at -7). The sides are those of a stack of 3x3 stride-2
convolutions, ``n -> ceil(n / 2)`` per level (28 -> 14 -> 7 -> 4).

:class:`LowPassDecoder` is the auxiliary decoder's other form (``model.aux_low_pass``): a Gaussian
over the image average-pooled to a few pixels a side, for a code that is to carry the global layout.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..maths import discretized_logistic_logprob, gaussian_logprob

__all__ = ["LOW_PASS_MIN_LOG_SCALE", "MIN_LOG_SCALE", "LowPassDecoder", "PixelDecoder", "build_pixel_decoder",
           "image_log_prob", "level_sizes", "pixel_decoder_params"]

MIN_LOG_SCALE = -7.0
LOW_PASS_MIN_LOG_SCALE = math.log(2 / 255)
"""Floor of :class:`LowPassDecoder`'s log standard deviation: one 8-bit bin on the ``[-1, 1]`` scale,
so that no code is rewarded for describing the low-pass image more finely than the pixels are."""


def level_sizes(image_size: int, levels: int) -> list[int]:
    """Sides of the maps of ``levels`` 3x3 stride-2 convolutions with padding 1: ``[n, ceil(n/2), ...]``."""
    sizes = [image_size]
    for _ in range(levels):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


def build_pixel_decoder(d_z: int, channels: int, widths: list[int], hidden: int, side: int, *,
                        out_channels: int | None = None) -> tuple[nn.Sequential, nn.ModuleList, nn.Conv2d]:
    """The three parts ``(fc, convs, out)`` of the decoder (module docstring): ``fc`` maps ``[B, d_z]``
    to ``[B, widths[-1] * side * side]`` (``side``: the smallest map), ``convs`` run from the deepest
    level to the first, ``out`` gives ``2 * channels`` maps (mean, log-scale), or ``out_channels``
    maps when given (:class:`~flowvae.networks.feedforward.ConvDecoder`)."""
    fc = nn.Sequential(nn.Linear(d_z, hidden), nn.ReLU(), nn.Linear(hidden, widths[-1] * side * side), nn.ReLU())
    convs = nn.ModuleList(nn.Conv2d(widths[lvl], widths[max(lvl - 1, 0)], 3, 1, 1)
                          for lvl in reversed(range(len(widths))))
    return fc, convs, nn.Conv2d(widths[0], 2 * channels if out_channels is None else out_channels, 3, 1, 1)


def pixel_decoder_params(fc: nn.Module, convs: nn.ModuleList, out: nn.Module, sizes: list[int],
                         z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel ``(mean, log_scale)`` on the ``[-1, 1]`` scale, each ``[B, C, H, W]``, of codes
    ``z [B, d_z]`` through the parts of :func:`build_pixel_decoder`; ``sizes`` from :func:`level_sizes`."""
    h = fc(z).view(z.shape[0], convs[0].in_channels, sizes[-1], sizes[-1])
    for conv, size in zip(convs, reversed(sizes[:-1])):
        h = F.relu(conv(F.interpolate(h, size=(size, size), mode="nearest")))
    mean, log_scale = out(h).chunk(2, 1)
    return mean, log_scale.clamp(min=MIN_LOG_SCALE)


def image_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """``log p(x)`` in nats per image ``[B]`` of 8-bit ``x [B, C, H, W]`` (values ``0..255``) under
    independent discretised logistics with the parameters of :func:`pixel_decoder_params`."""
    return discretized_logistic_logprob(x.to(mean.dtype), mean, log_scale).flatten(1).sum(1)


class PixelDecoder(nn.Module):
    """p(x | z): independent discretised logistics over the 8-bit pixels of a ``C x S x S`` image.

    Args:
        d_z: dimension of the code.
        channels: image channels ``C``.
        image_size: image side ``S``.
        widths: channels per level, first (largest) level first (at least one).
        hidden: width of the first linear layer.

    Shapes: :meth:`params` ``z [B, d_z]`` -> two ``[B, C, S, S]``; :meth:`log_prob` uint8 (or
    integer-valued float) ``x [B, C, S, S]`` with values ``0..255`` and ``z [B, d_z]`` -> ``[B]``
    in nats.

    Raises:
        ValueError: an empty ``widths``.
    """

    def __init__(self, d_z: int, channels: int, image_size: int, widths: list[int], hidden: int):
        super().__init__()
        if not widths:
            raise ValueError("the pixel decoder needs at least one level width")
        self.sizes = level_sizes(image_size, len(widths))
        self.fc, self.convs, self.out = build_pixel_decoder(d_z, channels, list(widths), hidden, self.sizes[-1])

    def params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_scale)`` of each pixel's logistic (module docstring)."""
        return pixel_decoder_params(self.fc, self.convs, self.out, self.sizes, z)

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z)`` in nats per image ``[B]`` (PixelCNN++'s discretised logistic, one component)."""
        return image_log_prob(x, *self.params(z))


class LowPassDecoder(nn.Module):
    """p(x_low | z): a diagonal Gaussian over the image average-pooled to ``side x side``.

    The low-pass auxiliary decoder of the flow model (``model.aux_low_pass``, ``model.low_pass_shift``;
    a departure from the paper): trained on the same draw of z as the flow, its ``-log p(x_low | z)``
    rewards a z that describes the image's global layout and colour and nothing finer. Structure:
    ``Linear(d_z, hidden)``, ReLU, ``Linear(hidden, hidden)``, ReLU, ``Linear(hidden, 2 * C * side *
    side)`` to a ``side x side`` image and the log standard deviations on the ``[-1, 1]`` pixel
    scale, the latter floored at :data:`LOW_PASS_MIN_LOG_SCALE`. With ``image_size`` the image is
    upsampled bilinearly to that size (:meth:`image`) and the Gaussian's mean is that upsampled
    image's ``side x side`` average, so an image built from it (the low-pass shift's) has exactly
    the fitted block means without showing the blocks.

    Args:
        d_z: dimension of the code.
        channels: image channels ``C``.
        side: side of the pooled image (at most the image's side).
        hidden: width of the hidden layers.
        image_size: the image's side, for :meth:`image` (``None``: the mean is the ``side x side``
            output itself).

    Shapes: :meth:`log_prob` uint8 (or integer-valued float) ``x [B, C, H, W]`` with values
    ``0..255`` and ``z [B, d_z]`` -> ``[B]``, in nats (a density of the continuous pooled values).
    """

    def __init__(self, d_z: int, channels: int, side: int, hidden: int, image_size: int | None = None):
        super().__init__()
        self.side, self.image_size, self.values = side, image_size, channels * side * side
        self.net = nn.Sequential(nn.Linear(d_z, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * self.values))

    def zero_output(self) -> None:
        """Start the prediction at zero (mid-grey) and the standard deviations at 1."""
        last = self.net[-1]
        assert isinstance(last, nn.Linear)  # narrowing only: built above
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _upsampled(self, out: Tensor) -> Tensor:
        low = out[:, : self.values].reshape(out.shape[0], -1, self.side, self.side)
        if self.image_size is None:
            return low
        return F.interpolate(low, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def _mean(self, out: Tensor) -> Tensor:
        image = self._upsampled(out)
        return image if self.image_size is None else F.adaptive_avg_pool2d(image, self.side)

    def image(self, z: Tensor) -> Tensor:
        """The predicted low-pass image ``[B, C, S, S]`` on the ``[-1, 1]`` scale, upsampled bilinearly
        to ``image_size`` (``side`` without one)."""
        return self._upsampled(self.net(z))

    def mean(self, z: Tensor) -> Tensor:
        """The Gaussian's mean ``[B, C, side, side]``: :meth:`image` averaged back to ``side x side``."""
        return self._mean(self.net(z))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x_low | z)`` in nats per image ``[B]`` (class docstring)."""
        low = F.adaptive_avg_pool2d(x.to(z.dtype) / 127.5 - 1.0, self.side).flatten(1)
        out = self.net(z)  # once: the mean and the log standard deviations share it
        log_scale = out[:, self.values:].clamp(min=LOW_PASS_MIN_LOG_SCALE)
        return gaussian_logprob(low, self._mean(out).flatten(1), 2 * log_scale)
