"""Feed-forward image encoders and decoders: stride-2 convolutions or fully connected layers.

The networks of the UG-VAE (:mod:`flowvae.models.ugvae`). The convolutional pair works at any
side: each 3x3 stride-2 convolution with padding 1 maps a side ``n`` to ``ceil(n / 2)``
(:func:`~flowvae.networks.pixel_decoder.level_sizes`: 8 -> 4 -> 2, 28 -> 14 -> 7 -> 4), and the
decoder upsamples (nearest) back through the same sides. The fully connected pair is meant for
small images such as the 8x8 digits. No BatchNorm: a likelihood per image must not depend on the
rest of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .pixel_decoder import build_pixel_decoder, level_sizes

__all__ = ["mlp", "ConvEncoder", "MLPEncoder", "ConvDecoder", "MLPDecoder"]


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, each followed by a ReLU (the last one too):
    ``[B, sizes[0]] -> [B, sizes[-1]]``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Images ``[B, C, S, S]`` (on ``[-1, 1]``) -> features ``[B, features]``: one 3x3 stride-2
    convolution + ReLU per entry of ``widths``, then a linear layer + ReLU.

    Args:
        in_channels: image channels ``C``.
        image_size: image side ``S``.
        widths: channels of the convolutions, first level first (at least one).
        features: width of the output.
    """

    def __init__(self, in_channels: int, image_size: int, widths: Sequence[int], features: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.ReLU()]
            c = w
        final = level_sizes(image_size, len(widths))[-1]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * final * final, features), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, S, S] -> [B, features]``."""
        return self.net(x)


class MLPEncoder(nn.Module):
    """Images ``[B, C, S, S]`` -> features ``[B, hidden[-1]]``: flattened, then :func:`mlp` over
    ``[C * S * S, *hidden]``.

    Args:
        dim: values per image, ``C * S * S``.
        hidden: widths of the layers (at least one).
    """

    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp([dim, *hidden]))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, S, S] -> [B, hidden[-1]]``."""
        return self.net(x)


class ConvDecoder(nn.Module):
    """Codes ``[B, d_in]`` -> maps ``[B, out_channels, S, S]``: two linear layers to the smallest map,
    then per level a nearest-neighbour upsampling to the encoder's side at that level and a 3x3
    convolution + ReLU, and a last 3x3 convolution (the layout of
    :func:`~flowvae.networks.pixel_decoder.build_pixel_decoder`, with any number of output maps).

    Args:
        d_in: dimension of the code.
        out_channels: output maps (e.g. ``C`` logits, or ``2 C`` means and log-scales).
        image_size: output side ``S``.
        widths: channels per level, first (largest) level first, as :class:`ConvEncoder`'s.
        hidden: width of the first linear layer.
    """

    def __init__(self, d_in: int, out_channels: int, image_size: int, widths: Sequence[int], hidden: int):
        super().__init__()
        ch = list(widths)
        self.sizes = level_sizes(image_size, len(ch))
        self.shape = (ch[-1], self.sizes[-1], self.sizes[-1])
        self.fc, self.convs, self.out = build_pixel_decoder(d_in, 0, ch, hidden, self.sizes[-1],
                                                            out_channels=out_channels)

    def forward(self, v: Tensor) -> Tensor:
        """``[B, d_in] -> [B, out_channels, S, S]``."""
        h = self.fc(v).view(-1, *self.shape)
        for conv, size in zip(self.convs, reversed(self.sizes[:-1])):
            h = F.relu(conv(F.interpolate(h, size=(size, size), mode="nearest")))
        return self.out(h)


class MLPDecoder(nn.Module):
    """Codes ``[B, d_in]`` -> maps ``[B, out_channels, S, S]``: :func:`mlp` over
    ``[d_in, *reversed(hidden)]``, then a linear layer to every output value.

    Args:
        d_in: dimension of the code.
        out_channels: output maps.
        image_size: output side ``S``.
        hidden: widths of the layers, as :class:`MLPEncoder`'s (mirrored here).
    """

    def __init__(self, d_in: int, out_channels: int, image_size: int, hidden: Sequence[int]):
        super().__init__()
        self.shape = (out_channels, image_size, image_size)
        self.net = nn.Sequential(mlp([d_in, *reversed(hidden)]), nn.Linear(hidden[0], out_channels * image_size ** 2))

    def forward(self, v: Tensor) -> Tensor:
        """``[B, d_in] -> [B, out_channels, S, S]``."""
        return self.net(v).view(-1, *self.shape)
