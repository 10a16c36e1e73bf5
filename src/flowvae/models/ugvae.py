"""UG-VAE: a VAE with a global Gaussian code beta shared by a group of images and a local
Gaussian-mixture code per image (Peis, Olmos & Artes-Rodriguez, "Unsupervised Learning of Global
Factors in Deep Generative Models", arXiv:2012.08234, §2; authors' code: github.com/ipeis/UG-VAE,
``models.py``, class ``UGVAE``).

Equations are cited by content; the copy of the paper in ``/work/shared/papers`` holds only the
abstract and introduction, so the model section was checked against the authors' ``models.py``.

Generative model, for one group ``X = {x_1..x_N}`` (by default the whole batch)::

    beta ~ N(0, I_{d_beta})                                      one global code per group
    d_i  ~ Cat(1/K)                                              uniform mixture component
    z_i | d_i = k, beta ~ N(mu_k(beta), diag exp(lv_k(beta)))    K heads of one network of beta
    x_i | z_i, beta ~ p(x | [z_i, beta])                         decoder on [z, beta]

``lv_k = tanh(.)``, so the prior variances lie in ``[1/e, e]`` (as the authors' ``_z_prior``).
The decoder sees ``[z_i, beta]`` as in the authors' code (``decoder_beta=False`` gives the
``p(x_i | z_i)`` of the plain mixture model).

Inference (amortised)::

    q(z_i | x_i)        = N(m(h_i), diag exp(s(h_i)))     h_i = encoder features of x_i; not conditioned on d
    q(d_i | .)          = Cat(pi_i)                        d_posterior="x": pi_i = softmax(W h_i)   (default)
                                                           d_posterior="z": pi_i = softmax(MLP(z_i)), z_i ~ q(z_i|x_i)
                                                                            (the authors' q(d_i | z_i))
    q(beta | X)         = prod. of Gaussians (:func:`product_of_gaussians`) of per-image messages
                          N(a_i, diag exp(b_i)), (a_i, b_i) = Linear([h_i, pi_i])  (authors' encoder_beta)
                          times the prior N(0, I) when ``beta_prior_in_product`` (default)

ELBO of one group (nats), minimised as its negative; ``beta`` is one reparameterised draw::

    sum_i E_q[log p(x_i | z_i, beta)]
  - sum_i sum_k pi_ik KL(q(z_i | x_i) || p(z_i | d_i = k, beta))        "kl_z"
  - sum_i KL(Cat(pi_i) || Cat(1/K))                                       "kl_d"
  - KL(q(beta | X) || N(0, I))                                            "kl_beta"

With ``d_posterior="x"`` every KL is in closed form given ``beta`` and the sum is exactly the ELBO.
With ``d_posterior="z"`` pi_i depends on the sampled z_i, so ``kl_z`` is the single-sample
estimate ``-H[q(z_i|x_i)] - sum_k pi_ik(z_i) log p(z_i | k, beta)``, unbiased for the ELBO term.
(The authors' code weights the closed-form KLs by pi_ik(z_i), which is biased when pi depends on z;
we do not copy that.)

Departures from the authors' code, all deliberate:

* q(beta|X) includes the prior N(0, I) as one more factor (``beta_prior_in_product=True``); the
  authors multiply the messages only. The prior factor keeps the posterior variance below 1 and
  makes a group of one image well posed. ``beta_prior_in_product=False`` restores theirs.
* Default q(d_i | x_i) from the encoder features (closed-form bound), see above.
* No BatchNorm (a likelihood per image must not depend on the rest of the batch); 3x3 stride-2
  convolutions so that 28, 32 and 64 px all work; the K prior heads share one hidden layer.
* Likelihood: a proper distribution over the 256 pixel values (see :class:`UGVAEConfig`), instead
  of the authors' fixed-variance (0.1) Gaussian density on ``x / 255``.
* Encoder log-variances are soft-clamped to ``(-10, 10)`` (``10 tanh(s / 10)``) for stability.

Units: images enter and leave as ``uint8 [B, C, H, W]`` (0..255). Losses and KLs are in nats per
image: a group's bound is shared by its images, so the batch loss is ``-sum_groups ELBO / B``.
Bits/dim divide nats per image by ``D ln 2`` with ``D = C * H * W``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..maths import (
    LOG_2PI,
    discretized_gaussian_logprob,
    discretized_logistic_logprob,
    gaussian_kl,
    gaussian_logprob,
    sharded_noise,
    soft_clamp,
    to_unit_range,
)
from ..networks.feedforward import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from ..networks.pixel_decoder import MIN_LOG_SCALE
from ..settings import setting
from .base import (
    Capabilities,
    GenerativeModel,
    ModelSettings,
    check_codes,
    check_count,
    check_temperature,
    legacy_shape,
    register,
)

__all__ = ["UGVAE", "UGVAEConfig", "product_of_gaussians", "gaussian_kl",
           "discretized_logistic_logprob", "discretized_gaussian_logprob", "LIKELIHOODS"]

LIKELIHOODS = ("discretized_logistic", "gaussian", "bernoulli")
_LOGVAR_BOUND = 10.0


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass
class UGVAEConfig(ModelSettings):
    """Architecture of :class:`UGVAE` (``model.kind=ugvae``).

    Latents: ``d_local`` is the dimension of each image's local code z, ``d_global`` that of the
    group's global code beta, ``n_components`` the number K of mixture components of p(z | d, beta).

    ``likelihood`` -- p(x | z, beta) per pixel, on the 8-bit value ``k`` in ``0..255``:

    ``discretized_logistic`` (default)
        Logistic with per-pixel mean and log-scale from the decoder, integrated over the bin of
        ``k`` (Salimans et al. 2017, PixelCNN++; end bins take the tails). A proper distribution
        over the 256 values, so the loss bounds ``-log P(x)`` of the 8-bit image and bits/dim are
        comparable with the library's flows. This is why it is the default for 8-bit data.
    ``gaussian``
        The same with a Gaussian CDF (a discretised Gaussian with learned per-pixel scale; the
        authors use an undiscretised Gaussian density with fixed variance 0.1).
    ``bernoulli``
        Independent Bernoulli on the target ``x / 255`` (binary cross-entropy with logits). An
        exact likelihood only for binary images (values 0 or 255; bits/dim are then per binary
        pixel); on grey levels (MNIST, digits) it is the usual cross-entropy surrogate, not a
        normalised distribution over 0..255.

    Networks: ``encoder``/``decoder`` are ``"conv"`` (3x3 stride-2 convolutions, one level per
    ``conv_channels`` entry; meant for 28/32/64 px) or ``"mlp"`` (fully connected, ``hidden`` layers;
    for small images such as the 8x8 digits). ``hidden[-1]`` is the width of the encoder features
    h, of the prior network p(z | d, beta) and of q(d | z)'s network.

    Batches: ``group_by="batch"`` makes each training batch one group (one beta); ``"label"``
    builds every batch from ``groups_per_batch`` classes, each class one group.
    """

    kind: Literal["ugvae"] = "ugvae"
    d_local: int = setting(20, ge=1, le=4096, help="dimension of each image's local code z")
    d_global: int = setting(50, ge=1, le=4096, help="dimension of the group's global code beta")
    n_components: int = setting(20, ge=1, le=1024, help="mixture components K of p(z | d, beta)")
    hidden: list[int] = setting(factory=lambda: [256], ge=1, le=65536)
    conv_channels: list[int] = setting(factory=lambda: [32, 64, 64], ge=1, le=4096)
    encoder: Literal["conv", "mlp"] = "conv"
    decoder: Literal["conv", "mlp"] = "conv"
    likelihood: Literal["discretized_logistic", "gaussian", "bernoulli"] = "discretized_logistic"
    d_posterior: Literal["x", "z"] = "x"   # x: q(d_i | x_i) (closed-form bound) | z: q(d_i | z_i) (authors)
    decoder_beta: bool = True              # p(x | z, beta) as the authors; False: p(x | z)
    beta_prior_in_product: bool = True     # include N(0, I) as a factor of q(beta | X)
    group_by: Literal["batch", "label"] = "batch"
    groups_per_batch: int = setting(4, ge=1, le=4096, help="classes per batch with group_by=label")

    @property
    def dim(self) -> int:
        """Values per image, ``C * H * W``."""
        return self.in_channels * self.image_size * self.image_size

    renamed = {"d_z": "d_local", "d_beta": "d_global", "K": "n_components"}
    legacy_sections = ("ugvae",)

    @classmethod
    def migrate(cls, model: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """From an earlier release's file: the image shape and ``model.d_z`` (the local code) of its
        ``model`` section, and its ``ugvae`` section with the fields :attr:`renamed`."""
        new = {"kind": model.get("kind", "ugvae"), **legacy_shape(model),
               **({"d_local": model["d_z"]} if "d_z" in model else {})}
        new.update({str(cls.renamed.get(str(k), k)): v for k, v in sections.get("ugvae", {}).items()})
        return new

    def validate(self) -> None:
        if not self.hidden:
            raise ConfigError("model.hidden must be a non-empty list of positive integers")
        if "conv" in (self.encoder, self.decoder):
            if not self.conv_channels:
                raise ConfigError("model.conv_channels must be a non-empty list of positive integers")
            if self.image_size < 2 ** len(self.conv_channels):
                raise ConfigError(f"model.image_size {self.image_size} is too small for {len(self.conv_channels)} "
                                  f"stride-2 levels (needs >= {2 ** len(self.conv_channels)}); shorten "
                                  f"model.conv_channels or use 'mlp'")


# ------------------------------------------------------------------------------------------------
# Gaussian algebra and pixel likelihoods


def _segment_product(mu: Tensor, logvar: Tensor, index: Tensor, n_groups: int, prior: bool) -> tuple[Tensor, Tensor]:
    """Product of diagonal Gaussians within each group: ``index [N]`` in ``0..n_groups-1``.

    Precisions add (``1 / var_g = [1] + sum_i 1 / var_i``) and the mean is precision-weighted
    (``mu_g = var_g * sum_i mu_i / var_i``); done in log space so tiny or huge variances are safe.
    Returns ``(mu [G, d], logvar [G, d])``.
    """
    d = mu.shape[-1]
    neg = -logvar                                               # log precisions [N, d]
    idx = index.view(-1, 1).expand_as(neg)
    top = torch.full((n_groups, d), -math.inf, dtype=mu.dtype, device=mu.device)
    top = top.scatter_reduce(0, idx, neg.detach(), "amax", include_self=True)
    if prior:
        top = top.clamp(min=0.0)                                # the prior's log precision is 0
    total = torch.zeros(n_groups, d, dtype=mu.dtype, device=mu.device).index_add(0, index, torch.exp(neg - top[index]))
    if prior:
        total = total + torch.exp(-top)
    log_prec = top + torch.log(total)
    weight = torch.exp(neg - log_prec[index])                   # var_g / var_i
    mean = torch.zeros(n_groups, d, dtype=mu.dtype, device=mu.device).index_add(0, index, weight * mu)
    return mean, -log_prec


def product_of_gaussians(mu: Tensor, logvar: Tensor, prior: bool = True) -> tuple[Tensor, Tensor]:
    """Normalised product of ``N`` diagonal Gaussian factors (the global posterior of UG-VAE).

    ``q(beta) ∝ [N(beta; 0, I)] * prod_i N(beta; mu_i, diag exp(logvar_i))``, a Gaussian with
    precision ``[1] + sum_i exp(-logvar_i)`` and mean ``var * sum_i mu_i exp(-logvar_i)``
    (the authors' ``gaussian_prod``, which has no prior factor).

    Args:
        mu: factor means ``[N, d]``.
        logvar: factor log-variances ``[N, d]``.
        prior: include the standard normal prior as one more factor.

    Returns:
        ``(mu [d], logvar [d])``.

    Raises:
        DataError: shapes differ or are not ``[N, d]``, or ``N = 0`` without the prior.
    """
    if mu.dim() != 2 or mu.shape != logvar.shape:
        raise DataError(f"product_of_gaussians needs mu and logvar of one shape [N, d]; got "
                        f"{list(mu.shape)} and {list(logvar.shape)}")
    if mu.shape[0] == 0 and not prior:
        raise DataError("product_of_gaussians of zero factors is undefined without the prior")
    index = torch.zeros(mu.shape[0], dtype=torch.long, device=mu.device)
    m, lv = _segment_product(mu, logvar, index, 1, prior)
    return m[0], lv[0]


def _noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None,
           shard: tuple[int, int] | None, uniform: bool = False) -> Tensor:
    return sharded_noise(torch.rand if uniform else torch.randn, shape, like, generator, shard)



# ------------------------------------------------------------------------------------------------
# the model


@register
class UGVAE(GenerativeModel):
    """Unsupervised Global VAE (Peis et al. 2020; see the module docstring for the factorisation).

    Args:
        cfg: architecture (:class:`UGVAEConfig`; default if omitted).
        n_bits: must be 8 (the likelihoods model 8-bit pixel values).

    Raises:
        ConfigError: an invalid configuration (the message names the field).

    Shapes: ``B`` images, ``G`` groups, ``d_z`` = ``cfg.d_local``, ``d_beta`` = ``cfg.d_global``,
    ``K`` = ``cfg.n_components``.
    """

    config_class: ClassVar[type[ModelSettings]] = UGVAEConfig
    kinds: ClassVar[dict[str, str]] = {
        "ugvae": "the UG-VAE (Peis et al., 2020): a local code per image and a global code per group of images"}
    cfg: UGVAEConfig

    def __init__(self, cfg: UGVAEConfig | None = None, n_bits: int = 8):
        super().__init__(UGVAEConfig() if cfg is None else cfg, n_bits)
        cfg = self.cfg
        if n_bits != 8:
            raise ConfigError(f"the UG-VAE models 8-bit images; got data.n_bits={n_bits}")
        width = cfg.hidden[-1]
        self.encoder = (ConvEncoder(cfg.in_channels, cfg.image_size, cfg.conv_channels, width) if cfg.encoder == "conv"
                        else MLPEncoder(cfg.dim, cfg.hidden))
        self.q_z = nn.Linear(width, 2 * cfg.d_local)                               # q(z | x)
        self.q_d: nn.Module
        if cfg.d_posterior == "x":
            self.q_d = nn.Linear(width, cfg.n_components)                           # q(d | x): logits
        else:
            self.q_d = nn.Sequential(nn.Linear(cfg.d_local, width), nn.Tanh(), nn.Linear(width, cfg.n_components))
        self.q_beta = nn.Linear(width + cfg.n_components, 2 * cfg.d_global)        # per-image message
        self.p_z = nn.Sequential(nn.Linear(cfg.d_global, width), nn.ReLU(),
                                 nn.Linear(width, 2 * cfg.n_components * cfg.d_local))  # p(z | d, beta)
        d_in = cfg.d_local + (cfg.d_global if cfg.decoder_beta else 0)
        out = cfg.in_channels * (1 if cfg.likelihood == "bernoulli" else 2)
        self.decoder = (ConvDecoder(d_in, out, cfg.image_size, cfg.conv_channels, width) if cfg.decoder == "conv"
                        else MLPDecoder(d_in, out, cfg.image_size, cfg.hidden))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(groups=True)

    @property
    def label_groups(self) -> int | None:
        return self.cfg.groups_per_batch if self.cfg.group_by == "label" else None

    @property
    def latent_meanings(self) -> dict[str, str]:
        """``z``: each image's local code; ``beta``: the global code of a group of that image alone."""
        return {"z": "local code z_i: q(z_i|x_i)",
                "beta": "global code beta: q(beta|{x_i}), each image a group of its own"}

    def _group_index(self, groups: Tensor | None, b: int, device: torch.device) -> tuple[Tensor, int]:
        """``groups [B]`` (any integer labels) -> (index ``[B]`` in ``0..G-1`` by sorted label, ``G``)."""
        if groups is None:
            return torch.zeros(b, dtype=torch.long, device=device), 1
        if not isinstance(groups, Tensor) or groups.dtype.is_floating_point or groups.dtype.is_complex \
                or groups.dtype == torch.bool:
            raise DataError(f"groups must be an integer tensor [B] of group labels, got "
                            f"{type(groups).__name__ if not isinstance(groups, Tensor) else groups.dtype}")
        if groups.shape != (b,):
            raise DataError(f"groups must have shape [{b}] (one label per image), got {list(groups.shape)}")
        labels, index = torch.unique(groups.to(device), sorted=True, return_inverse=True)
        return index, int(labels.numel())

    # -------------------------------------------------------------------- building blocks
    def _features(self, x: Tensor) -> Tensor:
        return self.encoder(to_unit_range(x.to(self.dtype)))

    def _q_z(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = self.q_z(h).chunk(2, -1)
        return mu, soft_clamp(raw, _LOGVAR_BOUND)

    def _log_pi(self, h: Tensor, z: Tensor) -> Tensor:
        """log q(d | .) ``[B, K]``: from features ``h`` (d_posterior="x") or from ``z`` ("z")."""
        return F.log_softmax(self.q_d(h if self.cfg.d_posterior == "x" else z), -1)

    def _messages(self, h: Tensor, log_pi: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = self.q_beta(torch.cat([h, log_pi.exp()], -1)).chunk(2, -1)
        return mu, soft_clamp(raw, _LOGVAR_BOUND)

    def prior_z(self, beta: Tensor) -> tuple[Tensor, Tensor]:
        """Means and log-variances of p(z | d = k, beta), each ``[..., K, d_z]`` for ``beta [..., d_beta]``."""
        out = self.p_z(beta).view(*beta.shape[:-1], self.cfg.n_components, 2, self.cfg.d_local)
        return out[..., 0, :], torch.tanh(out[..., 1, :])

    def _decode_params(self, z: Tensor, beta: Tensor) -> Tensor:
        v = torch.cat([z, beta], -1) if self.cfg.decoder_beta else z
        return self.decoder(v)

    def log_px(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | z, beta) in nats ``[B]`` for uint8 ``x`` and decoder outputs ``params``."""
        k = x.to(params.dtype)
        if self.cfg.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params, k / 255.0, reduction="none").flatten(1).sum(1)
        mean, log_scale = params.chunk(2, 1)
        log_scale = log_scale.clamp(min=MIN_LOG_SCALE)
        f = (discretized_logistic_logprob if self.cfg.likelihood == "discretized_logistic"
             else discretized_gaussian_logprob)
        return f(k, mean, log_scale).flatten(1).sum(1)

    def _to_pixels(self, params: Tensor, u: Tensor | None) -> Tensor:
        """Decoder outputs -> uint8 images: the mean (``u=None``) or the inverse-CDF sample at uniform ``u``."""
        if self.cfg.likelihood == "bernoulli":
            p = torch.sigmoid(params)
            out = p * 255.0 if u is None else (u < p).float() * 255.0
            return out.round().clamp(0, 255).to(torch.uint8)
        mean, log_scale = params.chunk(2, 1)
        c = mean
        if u is not None:
            s = torch.exp(log_scale.clamp(min=MIN_LOG_SCALE))
            u = u.clamp(1e-6, 1 - 1e-6)
            std = (torch.log(u) - torch.log1p(-u)) if self.cfg.likelihood == "discretized_logistic" \
                else torch.special.ndtri(u)
            c = mean + s * std
        return ((c + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    # -------------------------------------------------------------------- the bound
    def elbo_terms(self, x: Tensor, groups: Tensor | None = None, generator: torch.Generator | None = None,
                   shard: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """All quantities of one reparameterised draw of the bound.

        Args:
            x: uint8 images ``[B, C, H, W]``.
            groups: integer labels ``[B]``; images with one label share a beta (default: one group).
            generator: source of the noise for z and beta.
            shard: ``(rank, world)`` under data parallelism (noise drawn globally, sliced).

        Returns:
            A dict of tensors: ``mu_z, logvar_z, z [B, d_z]``; ``log_pi [B, K]`` (log q(d|.));
            ``msg_mu, msg_logvar [B, d_beta]`` (per-image factors of q(beta)); ``index [B]`` (group
            of each image, in sorted label order); ``beta_mu, beta_logvar, beta [G, d_beta]``;
            ``prior_mu, prior_logvar [G, K, d_z]`` (p(z | d, beta) at the drawn beta); and in nats
            ``log_px, kl_z, kl_d [B]`` and ``kl_beta [G]``.

        Raises:
            DataError: bad images or group labels.
        """
        self.check_input(x)
        b = x.shape[0]
        index, n_groups = self._group_index(groups, b, x.device)
        h = self._features(x)
        mu_z, logvar_z = self._q_z(h)
        z = mu_z + torch.exp(0.5 * logvar_z) * _noise(tuple(mu_z.shape), mu_z, generator, shard)
        log_pi = self._log_pi(h, z)
        msg_mu, msg_logvar = self._messages(h, log_pi)
        beta_mu, beta_logvar = _segment_product(msg_mu, msg_logvar, index, n_groups, self.cfg.beta_prior_in_product)
        beta = beta_mu + torch.exp(0.5 * beta_logvar) * _noise(tuple(beta_mu.shape), beta_mu, generator, shard)
        prior_mu, prior_logvar = self.prior_z(beta)                                  # [G, K, d_z]
        pm, plv = prior_mu[index], prior_logvar[index]                               # [B, K, d_z]
        pi = log_pi.exp()
        if self.cfg.d_posterior == "x":
            kl_per_k = gaussian_kl(mu_z.unsqueeze(1), logvar_z.unsqueeze(1), pm, plv)   # [B, K]
            kl_z = (pi * kl_per_k).sum(-1)
        else:  # pi depends on z: single-sample estimate with the entropy of q(z|x) in closed form
            neg_entropy = -0.5 * (logvar_z + 1 + LOG_2PI).sum(-1)
            kl_z = neg_entropy - (pi * gaussian_logprob(z.unsqueeze(1), pm, plv)).sum(-1)
        kl_d = (pi * (log_pi + math.log(self.cfg.n_components))).sum(-1)
        kl_beta = gaussian_kl(beta_mu, beta_logvar)
        log_px = self.log_px(x, self._decode_params(z, beta[index]))
        return dict(mu_z=mu_z, logvar_z=logvar_z, z=z, log_pi=log_pi, msg_mu=msg_mu, msg_logvar=msg_logvar,
                    index=index, beta_mu=beta_mu, beta_logvar=beta_logvar, beta=beta, prior_mu=prior_mu,
                    prior_logvar=prior_logvar, log_px=log_px, kl_z=kl_z, kl_d=kl_d, kl_beta=kl_beta)

    @property
    def kl_term(self) -> bool:
        """The objective has KL terms (kl_z, kl_d, kl_beta) for ``kl_weight`` to act on."""
        return True

    def loss(self, x: Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] | None = None,
             *, groups: Tensor | None = None, kl_weight: float | Tensor = 1.0,
             **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss: the negative ELBO in nats per image (one reparameterised draw).

        ``loss = (sum_i [recon_i + kl_z_i + kl_d_i] + sum_g kl_beta_g) / B``; with ``kl_weight``
        w other than 1 (KL warm-up, keyword only, a float or a 0-dim tensor) the three KL terms are
        weighted together: ``recon + w * (kl_z + kl_d + kl_beta)`` (batch means).

        Args:
            x: uint8 images ``[B, C, H, W]``.
            generator: source of the noise (positional, as :meth:`FlowVAE.loss <flowvae.models.FlowVAE.loss>`).
            shard: ``(rank, world)`` under data parallelism; each rank's slice is then its own group(s).
            groups: keyword only: integer labels ``[B]``; each distinct label gets its own beta.
                Default: the whole batch is one group.

        Returns:
            ``(loss, stats)``; ``stats`` holds detached scalars: ``bpd`` (loss / (D ln 2)), ``kl``
            (kl_z + kl_d + kl_beta), ``recon`` (-log p(x|z,beta)), ``kl_z``, ``kl_d``, ``kl_beta``
            (all nats per image) and ``n_groups``; with a KL weight other than 1 also ``elbo_bpd``
            (the plain negative ELBO, bits/dim).
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"loss(x, generator, shard): generator must be a torch.Generator, got "
                            f"{type(generator).__name__}; pass group labels as loss(x, groups=...)")
        t = self.elbo_terms(x, groups, generator, shard)
        b = x.shape[0]
        recon = -t["log_px"].sum() / b
        kl_z, kl_d, kl_beta = t["kl_z"].sum() / b, t["kl_d"].sum() / b, t["kl_beta"].sum() / b
        kl = kl_z + kl_d + kl_beta
        weighted = isinstance(kl_weight, Tensor) or kl_weight != 1
        loss = recon + kl_weight * kl if weighted else recon + kl
        scale = self.dim * math.log(2)
        stats = {"bpd": loss / scale, "kl": kl, "recon": recon, "kl_z": kl_z, "kl_d": kl_d,
                 "kl_beta": kl_beta, "n_groups": torch.tensor(float(t["beta"].shape[0]))}
        if weighted:
            stats["elbo_bpd"] = (recon + kl) / scale
        return loss, {k: v.detach() for k, v in stats.items()}

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None,
                     groups: Tensor | None = None) -> dict[str, Tensor]:
        """Per-image bits/dim ``[B]``; each group's bound is shared equally by its images.

        ``elbo_bpd``: the negative ELBO above, averaged over ``k`` draws. ``iw_bpd``: the negative
        importance-weighted bound of each group with ``k`` draws of ``(Z, beta)`` from
        ``q(Z|X) q(beta|X, .)`` and d summed out of the model (``p(z|beta) = mean_k p(z|d=k, beta)``),
        so it needs no q(d): ``log w = sum_i [log p(x_i|z_i,beta) + log p(z_i|beta) - log q(z_i|x_i)]
        + log p(beta) - log q(beta|X)``. ``kl``: kl_z + kl_d + kl_beta share, nats per image.
        """
        check_count("k", k)
        elbos, kls, logw = [], [], []
        for _ in range(k):
            t = self.elbo_terms(x, groups, generator)
            idx = t["index"]
            n_in = torch.bincount(idx, minlength=t["beta"].shape[0]).float()[idx]     # group size per image
            kl = t["kl_z"] + t["kl_d"] + t["kl_beta"][idx] / n_in
            elbos.append(t["log_px"] - kl)
            kls.append(kl)
            log_pz = torch.logsumexp(gaussian_logprob(t["z"].unsqueeze(1), t["prior_mu"][idx],
                                                       t["prior_logvar"][idx]), -1) - math.log(self.cfg.n_components)
            per_image = t["log_px"] + log_pz - gaussian_logprob(t["z"], t["mu_z"], t["logvar_z"])
            zeros = torch.zeros_like(t["beta"])
            per_group = (torch.zeros_like(t["kl_beta"]).index_add(0, idx, per_image)
                         + gaussian_logprob(t["beta"], zeros, zeros)
                         - gaussian_logprob(t["beta"], t["beta_mu"], t["beta_logvar"]))
            logw.append(per_group)                                                   # [G]
        scale = self.dim * math.log(2)
        elbo = torch.stack(elbos).mean(0)
        iw = (torch.logsumexp(torch.stack(logw), 0) - math.log(k))[idx] / n_in       # group bound, shared
        return {"elbo_bpd": -elbo / scale, "iw_bpd": -iw / scale, "kl": torch.stack(kls).mean(0)}

    # -------------------------------------------------------------------- tools
    @torch.no_grad()
    def encode_group(self, x: Tensor, groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Global posterior q(beta | X) of uint8 images ``[B, C, H, W]``.

        Returns ``(beta_mu, beta_logvar)``, each ``[d_beta]`` for one group, or ``[G, d_beta]``
        with ``groups`` (rows in sorted label order). Deterministic: with ``d_posterior="z"``,
        q(d | z) is evaluated at the posterior mean of z.
        """
        self.check_input(x)
        index, n_groups = self._group_index(groups, x.shape[0], x.device)
        h = self._features(x)
        mu_z, _ = self._q_z(h)
        mu, lv = _segment_product(*self._messages(h, self._log_pi(h, mu_z)), index, n_groups,
                                  self.cfg.beta_prior_in_product)
        return (mu[0], lv[0]) if groups is None else (mu, lv)

    @torch.no_grad()
    def cluster(self, x: Tensor) -> Tensor:
        """Mixture component of each image: ``argmax_k q(d = k | x)``, int64 ``[B]`` (q(d|z) at z's posterior mean)."""
        self.check_input(x)
        h = self._features(x)
        return self._log_pi(h, self._q_z(h)[0]).argmax(-1)

    def _check_beta(self, beta: Tensor, name: str = "beta") -> Tensor:
        if not isinstance(beta, Tensor) or beta.shape != (self.cfg.d_global,) or not beta.is_floating_point():
            got = list(beta.shape) if isinstance(beta, Tensor) else type(beta).__name__
            raise DataError(f"{name} must be a float tensor [{self.cfg.d_global}] (d_beta), got {got}")
        return beta.to(self.device, self.dtype)

    def _local_noise(self, n: int, generator: torch.Generator | None,
                     pixel_noise: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        device, dtype = self.device, self.dtype
        d = torch.randint(self.cfg.n_components, (n,), generator=generator, device=device)
        eps = torch.randn(n, self.cfg.d_local, generator=generator, device=device, dtype=dtype)
        u = (torch.rand(n, self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size, generator=generator,
                        device=device, dtype=dtype) if pixel_noise else None)
        return d, eps, u

    def _generate(self, beta: Tensor, d: Tensor, eps: Tensor, u: Tensor | None, temperature: float) -> Tensor:
        mu, lv = self.prior_z(beta)                                               # [K, d_z]
        z = mu[d] + temperature * torch.exp(0.5 * lv[d]) * eps
        return self._to_pixels(self._decode_params(z, beta.expand(len(d), -1)), u)

    @torch.no_grad()
    def sample_group(self, n: int, beta: Tensor | None = None, temperature: float = 1.0,
                     generator: torch.Generator | None = None, pixel_noise: bool = False) -> Tensor:
        """``n`` images of one group: one beta, ``d_i ~ Cat(1/K)``, ``z_i ~ p(z | d_i, beta)``.

        Args:
            n: images to draw.
            beta: the global code ``[d_beta]`` (default: drawn from N(0, I)).
            temperature: multiplies the standard deviation of p(z | d, beta) (not beta's).
            generator: source of the noise.
            pixel_noise: draw the pixels from p(x | z, beta); default: its mean (rounded).

        Returns:
            uint8 ``[n, C, H, W]``.
        """
        check_count("n", n)
        check_temperature(temperature)
        device = self.device
        beta = (torch.randn(self.cfg.d_global, generator=generator, device=device, dtype=self.dtype) if beta is None
                else self._check_beta(beta))
        d, eps, u = self._local_noise(n, generator, pixel_noise)
        return self._generate(beta, d, eps, u, temperature)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` uint8 samples ``[n, C, H, W]`` of one group: ``beta ~ N(0, global_temperature^2 I)``,
        then :meth:`sample_group` at ``temperature``."""
        check_count("n", n)
        check_temperature(global_temperature, "global_temperature")
        beta = torch.randn(self.cfg.d_global, generator=generator, device=self.device, dtype=self.dtype)
        return self.sample_group(n, beta * global_temperature, temperature, generator)

    @torch.no_grad()
    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": ..., "beta": ...}``: (mean, logvar) of each image's local code ``[B, d_local]`` and of
        the global code of a group of that image alone ``[B, d_global]``, independent of the batch
        (:meth:`GenerativeModel.posterior_moments`)."""
        self.check_input(x)
        return {"z": self._q_z(self._features(x)),
                "beta": self.encode_group(x, torch.arange(x.shape[0], device=x.device))}

    @torch.no_grad()
    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """``z``: the posterior mean of each image's local code ``[B, d_local]``."""
        self.check_input(x)
        return {"z": self._q_z(self._features(x))[0]}

    @torch.no_grad()
    def interpolate_beta(self, beta1: Tensor, beta2: Tensor, steps: int = 7, n_per_step: int = 8,
                         generator: torch.Generator | None = None, temperature: float = 1.0,
                         pixel_noise: bool = False) -> Tensor:
        """Decode along ``beta_t = (1 - t) beta1 + t beta2``, ``t = 0, 1/(steps-1), .., 1``.

        The local draws (components ``d_i``, the standard-normal noise of ``z_i`` and, with
        ``pixel_noise``, the pixel noise) are drawn once and reused at every step, so a column
        shows one "image slot" as the global code moves.

        Args:
            beta1, beta2: global codes ``[d_beta]``.
            steps: points along the line (>= 1; 1 gives ``beta1`` only).
            n_per_step: images per point.

        Returns:
            uint8 ``[steps, n_per_step, C, H, W]``.
        """
        check_count("steps", steps)
        check_count("n_per_step", n_per_step)
        check_temperature(temperature)
        b1, b2 = self._check_beta(beta1, "beta1"), self._check_beta(beta2, "beta2")
        d, eps, u = self._local_noise(n_per_step, generator, pixel_noise)
        ts = [0.0] if steps == 1 else [i / (steps - 1) for i in range(steps)]
        rows = [self._generate(b1 if t == 0 else b2 if t == 1 else (1 - t) * b1 + t * b2, d, eps, u, temperature)
                for t in ts]
        return torch.stack(rows)

    @torch.no_grad()
    def decode(self, z: Tensor, beta: Tensor, pixel_noise: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """uint8 images ``[n, C, H, W]`` from ``z [n, d_z]`` and ``beta [d_beta]``: the mean of p(x | z, beta),
        or a draw with ``pixel_noise``.

        Raises:
            DataError: ``z`` not a finite float tensor ``[n, d_local]`` or ``beta`` not a float tensor ``[d_global]``.
        """
        check_codes(z, self.cfg.d_local, "local codes z")
        beta = self._check_beta(beta)
        u = (torch.rand(z.shape[0], self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size,
                        generator=generator, device=self.device, dtype=self.dtype) if pixel_noise else None)
        return self._to_pixels(self._decode_params(z.to(self.device, self.dtype), beta.expand(z.shape[0], -1)), u)
