"""Plain VAE: the baseline of the paper's Table 4 and the worked example of adding a model kind.

Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014, arXiv:1312.6114): a Gaussian
encoder, a standard normal prior and a decoder trained together on the evidence lower bound. The
"VAE" row of the paper's Table 4 (Ma et al., ICLR 2021: 39.59 % linear-SVM accuracy from z on
CIFAR-10, quoted from Hjelm et al. 2019, whose architecture is not reproduced here) is a model of
this family; ``flowvae probe`` measures the same figure for this one. Its bits/dim are comparable
with the flows' because the likelihood is a proper distribution over 8-bit pixel values.

Model::

    z ~ N(0, I_{d_z})                                      prior
    x_i | z ~ DiscretizedLogistic(mean_i(z), scale_i(z))   decoder, independent per pixel i
    q(z | x) = N(mu(x), diag exp(logvar(x)))               encoder

The pixel likelihood is a logistic on the ``[-1, 1]`` scale integrated over the 8-bit bin of each
value ``k`` in ``0..255``, with the end bins taking the tails (Salimans, Karpathy, Chen & Kingma,
"PixelCNN++", ICLR 2017, one mixture component; :func:`~flowvae.maths.discretized_logistic_logprob`).
The 256 probabilities of a pixel sum to 1, so ``-ELBO >= -log P(x)`` of the uint8 image and its
bits/dim bound the same quantity as the flows' (which dequantise uniformly).

Objective (per image, nats)::

    -ELBO(x) = -E_q(z|x)[log p(x | z)] + KL(q(z|x) || N(0, I))

with one reparameterised draw for the reconstruction term and the KL in closed form
(:func:`~flowvae.maths.gaussian_kl`). The importance-weighted bound of Burda, Grosse &
Salakhutdinov (ICLR 2016) with ``k`` draws, ``log (1/k) sum_j p(x, z_j) / q(z_j | x)``, is reported
by :meth:`VAE.bits_per_dim`.

Networks: the encoder is one 3x3 stride-2 convolution (+ ReLU) per ``conv_channels`` entry (side
``n -> ceil(n / 2)``: 8 -> 4 -> 2, 28 -> 14 -> 7 -> 4, 32 -> 16 -> 8 -> 4), a ``hidden``-unit layer
and a linear map to ``(mu, logvar)``; encoder log-variances are soft-clamped to ``(-10, 10)``
(:func:`~flowvae.maths.soft_clamp`). The decoder mirrors it: two linear layers to the smallest
map, then per level a nearest-neighbour upsampling to the encoder's size at that level and a 3x3
convolution (+ ReLU), and a last 3x3 convolution to the per-pixel mean and log-scale (log-scale
floored at -7). No BatchNorm: an image's bound must not depend on its batch.

Units: images enter and leave as ``uint8 [B, C, H, W]`` (0..255). Losses and KLs are nats per
image; bits/dim divide by ``D ln 2`` with ``D = C * H * W``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..maths import gaussian_kl, gaussian_logprob, sharded_noise, soft_clamp
from ..networks.pixel_decoder import build_pixel_decoder, image_log_prob, level_sizes, pixel_decoder_params
from ..settings import setting
from ._checks import MeanCodeEdits, traverse_mean_code
from .base import Capabilities, GenerativeModel, ModelSettings, check_codes, check_count, check_temperature, register

__all__ = ["VAE", "VAEConfig"]

_LOGVAR_BOUND = 10.0


@dataclass
class VAEConfig(ModelSettings):
    """Architecture of :class:`VAE` (``model.kind=vae``).

    The likelihood is fixed: a discretised logistic over 8-bit pixels (module docstring), so the
    model needs ``data.n_bits=8``. ``conv_channels`` lists the widths of the stride-2 levels (at least
    one; the image side must be at least ``2 ** len(conv_channels)``), ``hidden`` the width of the
    fully connected layer on either side of the latent ``z`` of ``d_z`` dimensions.
    """

    kind: Literal["vae"] = "vae"
    in_channels: int = setting(1, ge=1, le=4, help="image channels (1 grey, 3 colour)")
    image_size: int = setting(28, ge=2, le=1024, help="side of the square images, pixels")
    d_z: int = setting(32, ge=1, le=4096, help="dimension of the latent z")
    conv_channels: list[int] = setting(factory=lambda: [32, 64, 64], ge=1, le=4096,
                                       help="widths of the 3x3 stride-2 convolutions, one per level")
    hidden: int = setting(256, ge=1, le=65536, help="width of the fully connected layers")
    free_bits: float = setting(0.0, ge=0, le=1e6, help="free bits, nats: the training loss uses max(free_bits, "
                               "batch mean of the KL) (0: off, the plain ELBO)")

    @property
    def dim(self) -> int:
        """Dimensions of an image, ``C * H * W``."""
        return self.in_channels * self.image_size * self.image_size

    def departures(self) -> list[str]:
        return [f"free bits of {self.free_bits:g} nats"] if self.free_bits else []

    def validate(self) -> None:
        if not self.conv_channels:
            raise ConfigError("model.conv_channels must list at least one convolution width, e.g. [32, 64]")
        if self.image_size < 2 ** len(self.conv_channels):
            raise ConfigError(f"model.image_size {self.image_size} is too small for {len(self.conv_channels)} "
                              f"stride-2 levels (needs >= {2 ** len(self.conv_channels)}); shorten model.conv_channels")


@register
class VAE(MeanCodeEdits, GenerativeModel):
    """Gaussian VAE with a discretised logistic decoder (module docstring).

    Args:
        cfg: architecture (:class:`VAEConfig`; default if omitted).
        n_bits: bits per pixel of the data; must be 8.

    Raises:
        ConfigError: a config of another kind, an invalid field (the message names ``model.<field>``),
            or ``n_bits != 8``.
    """

    config_class: ClassVar[type[ModelSettings]] = VAEConfig
    kinds: ClassVar[dict[str, str]] = {"vae": "a Gaussian VAE with a discretised logistic decoder"}
    cfg: VAEConfig

    def __init__(self, cfg: VAEConfig | None = None, n_bits: int = 8):
        super().__init__(VAEConfig() if cfg is None else cfg, n_bits)
        cfg = self.cfg
        if n_bits != 8:
            raise ConfigError(f"a 'vae' model's discretised logistic likelihood models 8-bit pixels; got "
                              f"data.n_bits={n_bits}, set data.n_bits=8")
        ch = list(cfg.conv_channels)
        self.sizes = level_sizes(cfg.image_size, len(ch))
        s = self.sizes[-1]
        layers: list[nn.Module] = []
        c = cfg.in_channels
        for w in ch:
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.ReLU()]
            c = w
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * s * s, cfg.hidden), nn.ReLU(),
                                     nn.Linear(cfg.hidden, 2 * cfg.d_z))
        self.decoder_fc, self.decoder_convs, self.decoder_out = build_pixel_decoder(cfg.d_z, cfg.in_channels, ch,
                                                                                     cfg.hidden, s)

    # ---------------------------------------------------------------- declared
    @property
    def latent_meanings(self) -> dict[str, str]:
        """``z``: the latent."""
        return {"z": "latent z: q(z|x)"}

    @property
    def capabilities(self) -> Capabilities:
        """A vector latent with a posterior mean (traverse, disentangle) and reconstructions from it."""
        return Capabilities(vector_latent=True, reconstruction=True, code_prior=True)

    @property
    def latent_dim(self) -> int:
        """Dimension of the latent z (``d_z``)."""
        return self.cfg.d_z

    # ---------------------------------------------------------------- building blocks
    def _q(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of q(z | x), each ``[B, d_z]``, for uint8 ``x`` (checked)."""
        self.check_input(x)
        mu, raw = self.encoder(x.to(self.dtype) / 127.5 - 1.0).chunk(2, -1)
        return mu, soft_clamp(raw, _LOGVAR_BOUND)

    def decoder_params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pixel ``(mean, log_scale)`` of p(x | z) on the ``[-1, 1]`` scale, each ``[B, C, H, W]``,
        for codes ``z [B, d_z]``; the log-scale is floored at -7."""
        return pixel_decoder_params(self.decoder_fc, self.decoder_convs, self.decoder_out, self.sizes, z)

    def log_px(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z)`` in nats per image ``[B]`` for uint8 ``x [B, C, H, W]`` and ``z [B, d_z]``."""
        return image_log_prob(x, *self.decoder_params(z))

    @staticmethod
    def _pixel_mean(mean: Tensor) -> Tensor:
        return ((mean + 1.0) / 2).clamp(0, 1)                    # bin k is centred at k / 127.5 - 1

    def _to_pixels(self, z: Tensor) -> Tensor:
        return (self._pixel_mean(self.decoder_params(z)[0]) * 255.0).round().to(torch.uint8)

    def _check_z(self, z: Any) -> Tensor:
        return check_codes(z, self.cfg.d_z).to(device=self.device, dtype=self.dtype)

    # ---------------------------------------------------------------- the objective
    @property
    def kl_term(self) -> bool:
        """The objective has a KL term (for ``kl_weight`` and ``model.free_bits``)."""
        return True

    def loss(self, x: Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] | None = None,
             *, kl_weight: float | Tensor = 1.0, **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO in nats per image, averaged over the batch (one reparameterised draw per
        image, closed-form KL).

        With ``kl_weight`` w other than 1 or ``model.free_bits`` F above 0 (remedies for posterior
        collapse, not the plain ELBO) the loss is ``recon + w * max(F, kl)``, ``kl`` the batch mean
        of the KL: free bits on the whole z as one group of latents (Kingma et al. 2016,
        arXiv:1606.04934, Appendix C.8; the closed-form KL would allow one group per dimension,
        not offered here). Under data parallelism the mean is over this process's rows.

        Args:
            x: uint8 images ``[B, C, H, W]``.
            generator: source of the noise of z.
            shard: ``(rank, world)`` under data parallelism: the noise is drawn for the global batch
                and this rank's slice kept (:func:`~flowvae.maths.sharded_noise`).
            kl_weight: keyword only: weight of the KL term (KL warm-up, ``train.kl_warmup_steps``),
                a float or a 0-dim tensor.

        Returns:
            ``(loss, stats)``; ``stats`` holds detached scalars ``bpd`` (loss / (D ln 2), bits/dim),
            ``kl`` (KL(q(z|x) || N(0, I))) and ``recon`` (-log p(x|z)), both nats per image; with a
            KL weight other than 1 or free bits also ``elbo_bpd`` (the plain negative ELBO, bits/dim).

        Raises:
            DataError: images that are not uint8 of this model's shape, or batch extras such as
                group labels (a plain VAE takes none).
        """
        if batch:
            raise DataError(f"a 'vae' model takes no batch extras, got {', '.join(sorted(batch))}")
        mu, lv = self._q(x)
        z = mu + torch.exp(0.5 * lv) * sharded_noise(torch.randn, tuple(mu.shape), mu, generator, shard)
        recon = -self.log_px(x, z).mean()
        kl = gaussian_kl(mu, lv).mean()
        free_bits = self.cfg.free_bits
        scale = self.dim * math.log(2)
        if isinstance(kl_weight, Tensor) or kl_weight != 1 or free_bits > 0:
            # The clamp passes no gradient below F: the KL is not pushed down while under it.
            loss = recon + kl_weight * (kl.clamp(min=free_bits) if free_bits > 0 else kl)
            stats = {"bpd": loss / scale, "kl": kl, "recon": recon, "elbo_bpd": (recon + kl) / scale}
        else:
            loss = recon + kl
            stats = {"bpd": loss / scale, "kl": kl, "recon": recon}
        return loss, {k: v.detach() for k, v in stats.items()}

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-image bounds ``[B]`` with ``k`` draws z_j ~ q(z | x).

        Returns:
            ``elbo_bpd``: ``-(mean_j log p(x|z_j) - KL(q(z|x) || N(0, I))) / (D ln 2)``, the negative ELBO
            in bits/dim with the KL in closed form (the paper's kind of figure). ``iw_bpd``: the
            negative importance-weighted bound ``-(logsumexp_j log w_j - log k) / (D ln 2)`` with
            ``log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x)``; for ``k = 1`` it is the
            single-sample Monte Carlo ELBO (equal to ``elbo_bpd`` in expectation, not per draw), and
            its expectation does not increase with ``k``. ``kl``: the closed-form KL in nats.

        Raises:
            ConfigError: ``k`` not a positive integer.
            DataError: bad images.
        """
        check_count("k", k)
        mu, lv = self._q(x)
        kl = gaussian_kl(mu, lv)
        zeros = torch.zeros_like(mu)
        lpx, logw = [], []
        for _ in range(k):
            z = mu + torch.exp(0.5 * lv) * sharded_noise(torch.randn, tuple(mu.shape), mu, generator, None)
            log_px = self.log_px(x, z)
            lpx.append(log_px)
            logw.append(log_px + gaussian_logprob(z, zeros, zeros) - gaussian_logprob(z, mu, lv))
        scale = self.dim * math.log(2)
        elbo = torch.stack(lpx).mean(0) - kl
        iw = torch.logsumexp(torch.stack(logw), 0) - math.log(k)
        return {"elbo_bpd": -elbo / scale, "iw_bpd": -iw / scale, "kl": kl}

    # ---------------------------------------------------------------- tools
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Posterior mean ``mu [B, d_z]`` of uint8 images ``[B, C, H, W]``.

        Raises:
            DataError: bad images.
        """
        return self._q(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Mean image of p(x | z), rounded to uint8 ``[B, C, H, W]``, for codes ``z [B, d_z]``.

        Raises:
            DataError: ``z`` not a finite float tensor ``[B, d_z]``.
        """
        return self._to_pixels(self._check_z(z))

    @torch.no_grad()
    def latent_mean(self, x: Tensor) -> Tensor:
        """Posterior mean of z ``[B, d_z]`` (same as :meth:`encode`)."""
        return self.encode(x)

    @torch.no_grad()
    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": (mean, logvar)}`` of q(z|x), each ``[B, d]`` (:meth:`GenerativeModel.posterior_moments`)."""
        self.check_input(x)
        return {"z": self._q(x)}

    @torch.no_grad()
    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """``z``: the posterior mean ``[B, d_z]`` (the features of ``flowvae probe``)."""
        return {"z": self.encode(x)}

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: the mean image of p(x | z = mu(x)), uint8 ``[B, C, H, W]``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def reconstruction_bits(self, x: Tensor) -> Tensor:
        """``-log p(x | z = mu(x)) / (D ln 2)`` per image ``[B]``, bits/dim (exact, no sampling)."""
        return -self.log_px(x, self.encode(x)) / (self.dim * math.log(2))

    @torch.no_grad()
    def reconstruction_mean(self, x: Tensor) -> Tensor:
        """Mean image of p(x | z = mu(x)) on ``[0, 1]`` (pixel value / 255), float ``[B, C, H, W]``."""
        return self._pixel_mean(self.decoder_params(self.encode(x))[0])

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` mean images of p(x | z), z ~ N(0, temperature^2 I), rounded to uint8 ``[n, C, H, W]``.

        Raises:
            ConfigError: ``n`` not a positive integer, a negative or non-finite temperature, or a
                global temperature other than 1 (a plain VAE has no global code).
        """
        check_count("n", n)
        t = check_temperature(temperature)
        if global_temperature != 1.0:
            raise ConfigError("a 'vae' model has no global code; leave the global temperature at 1")
        z = torch.randn((n, self.cfg.d_z), generator=generator, device=self.device, dtype=self.dtype)
        return self._to_pixels(z * t)

    @torch.no_grad()
    def traverse(self, x_single: Tensor, dim_values: list[float], dims: list[int] | None = None) -> Tensor:
        """Latent traversals: from the posterior mean of one image, set one dimension of z at a time.

        Args:
            x_single: one uint8 image ``[C, H, W]`` or ``[1, C, H, W]``.
            dim_values: values given to the traversed dimension, in prior standard deviations.
            dims: dimensions to traverse; default all ``range(d_z)``.

        Returns:
            uint8 ``[len(dims), len(dim_values), C, H, W]``: entry ``[a, b]`` decodes the mean code with
            ``z[dims[a]] = dim_values[b]``.

        Raises:
            DataError: not one image of the model's shape.
            ConfigError: empty or non-finite ``dim_values``, or ``dims`` outside ``0..d_z-1``.
        """
        return traverse_mean_code(self.encode, self.decode, self.check_input, x_single, dim_values, dims,
                                  self.cfg.d_z)
