"""beta-TCVAE: a Gaussian VAE trained with the decomposed ELBO of Chen, Li, Grosse & Duvenaud,
"Isolating Sources of Disentanglement in Variational Autoencoders" (NeurIPS 2018, arXiv:1802.04942,
§3 and Appendix C; authors' code: github.com/rtqichen/beta-tcvae, ``vae_quant.py``, ``VAE.elbo`` and
``VAE._log_importance_weight_matrix``). It is the first stage of the multi-stage model of
``/work/shared/papers/multi-stage-disentangled-reconstruction.txt`` (that copy holds the abstract only).

Model::

    z ~ N(0, I_{d_z}),   x | z ~ p(x | z)            (decoder; see :class:`BTCVAEConfig` for the likelihood)
    q(z | x) = N(mu(x), diag exp(logvar(x)))         (encoder: 4x4 stride-2 convolutions)

With n the index of a training image (p(n) = 1/N, N = ``dataset_size``) and the aggregate posterior
``q(z) = (1/N) sum_n q(z | n)``, the KL term of the ELBO splits (paper eq. 2) into::

    E_p(n) KL(q(z|n) || p(z)) = I_q(z; n)                         "mi":   E[log q(z|n) - log q(z)]
                              + KL(q(z) || prod_j q(z_j))          "tc":   E[log q(z) - sum_j log q(z_j)]
                              + sum_j KL(q(z_j) || p(z_j))         "dwkl": E[sum_j log q(z_j) - log p(z)]

and beta-TCVAE minimises ``-E[log p(x|z)] + alpha * mi + beta * tc + gamma * dwkl`` (paper eq. 4, with
the paper's default alpha = gamma = 1). Each term is a single-sample estimate per image, z drawn by
reparameterisation; ``log q(z)`` and ``log q(z_j)`` are estimated from the minibatch ``{n_1..n_B}``
through the matrix ``L[i, k, j] = log q(z_ij | n_k)``:

``estimator="mws"`` (minibatch weighted sampling, paper Appendix C.1; reference code's
``not self.mss`` branch)::

    log q(z_i)   ~= logsumexp_k sum_j L[i, k, j] - log(N B)
    log q(z_ij)  ~= logsumexp_k L[i, k, j]       - log(N B)

    The ``1/(N B)`` weights are the paper's and the reference code's. Their sum over the batch is
    ``1/N``, not 1, so each log-density is offset by about ``-log N``: reported ``mi`` carries
    ``+log N``, ``tc`` ``+(d_z - 1) log N`` and ``dwkl`` ``-d_z log N`` (the three still sum to the
    KL, and constants do not change gradients for fixed weights). Kept as published.

``estimator="mss"`` (minibatch stratified sampling, Appendix C.2; reference ``self.mss`` branch)::

    log q(z_i)   ~= logsumexp_k (W[i, k] + sum_j L[i, k, j])
    log q(z_ij)  ~= logsumexp_k (W[i, k] + L[i, k, j])
    exp W[i, i] = 1/N,  exp W[i, (i+1) mod B] = (N - M) / (N M),  exp W[i, k] = 1/M otherwise,  M = B - 1

    (:func:`log_importance_weight_matrix`). Every row of ``exp W`` sums to exactly 1. Departure from
    the reference code: its ``W.view(-1)[::M+1]`` strides by ``B`` and so fills *column* 0 with 1/N
    and column 1 with the stratified weight instead of the diagonal and the next entry (reported in
    rtqichen/beta-tcvae pull request #1 and YannDubs/disentangling-vae issue #58), which leaves row
    ``M - 1`` summing to ``1 + (N - M)/(N M) - 1/M``. We use the structure of the paper's estimator:
    z_i was drawn from q(z | n_i), so n_i takes weight 1/N.

Default estimator: ``"mss"``. The reference training script uses MWS unless ``--mss`` is passed
(``VAE(..., mss=False)``), but MSS is the estimator the authors call "improved" (``--mss`` help text):
its weights form a proper stratified estimate of q(z), so the reported mi / tc / dwkl carry no
``log N`` offsets and its bias is smaller for the batch sizes used here.

With ``alpha = beta = gamma = 1`` the three estimates telescope to ``log q(z|x) - log p(z)`` for
either estimator, the Monte Carlo KL of the plain ELBO (tested).

Departures from the reference code beyond the MSS indexing: no BatchNorm (a likelihood per image must
not depend on the batch), convolutions for 28/32/64 px, the ``lambda``/``beta`` annealing and the
flow prior are left out, a discretised logistic likelihood is offered for 8-bit images, and encoder
log-variances are soft-clamped to ``(-10, 10)``.

Units: images enter and leave as ``uint8 [B, C, H, W]`` (0..255). Losses and KLs are nats per image;
bits/dim divide by ``D ln 2`` with ``D = C * H * W``.
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
from ..maths import LOG_2PI, discretized_logistic_logprob, gaussian_kl, gaussian_logprob, sharded_noise
from ..settings import setting
from ._checks import MeanCodeEdits, traverse_mean_code
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

__all__ = ["BTCVAE", "BTCVAEConfig", "log_importance_weight_matrix", "log_qz_estimates",
           "ESTIMATORS", "LIKELIHOODS"]

LIKELIHOODS = ("bernoulli", "discretized_logistic")
ESTIMATORS = ("mss", "mws")
IMAGE_SIZES = (28, 32, 64)
_LOGVAR_BOUND = 10.0
_MIN_LOG_SCALE = -7.0


@dataclass
class BTCVAEConfig(ModelSettings):
    """Architecture and objective weights of :class:`BTCVAE` (``model.kind=btcvae``).

    ``likelihood``:

    ``bernoulli`` (default)
        Independent Bernoulli on ``x / 255`` (binary cross-entropy with logits), as the reference code
        for dSprites. Exact for binary images (0 or 255; bits/dim are then per binary pixel); on grey
        levels it is the cross-entropy surrogate, not a distribution over 0..255.
    ``discretized_logistic``
        Per-pixel logistic on the ``[-1, 1]`` scale integrated over the 8-bit bin
        (:func:`~flowvae.maths.discretized_logistic_logprob`): a proper likelihood of 8-bit images.

    Networks: the encoder has one 4x4 stride-2 convolution (+ ReLU) per ``conv_channels`` entry, then
    ``hidden`` units and a linear map to ``(mu, logvar)`` of the ``n_factors`` latent factors; the
    decoder mirrors it with transposed convolutions. ``alpha``, ``beta``, ``gamma`` weight mi, tc and
    dwkl (module docstring). ``dataset_size`` is N, the number of training images: both estimators
    use it, so the training objective raises :class:`~flowvae.errors.ConfigError` while it is
    ``None`` (the trainer fills it in; bounds, encoding and sampling do not need it).
    """

    kind: Literal["btcvae"] = "btcvae"
    in_channels: int = setting(1, ge=1, le=4, help="image channels")
    image_size: int = setting(64, ge=28, le=64, help="28, 32 or 64 pixels")
    n_factors: int = setting(10, ge=1, le=4096, help="dimension of the latent factors z")
    conv_channels: list[int] = setting(factory=lambda: [32, 32, 64, 64], ge=1, le=4096)
    hidden: int = setting(256, ge=1, le=65536)
    likelihood: Literal["bernoulli", "discretized_logistic"] = "bernoulli"
    alpha: float = setting(1.0, ge=0, le=1e6, help="weight of I_q(z; n)")
    beta: float = setting(6.0, ge=0, le=1e6, help="weight of TC(z)")
    gamma: float = setting(1.0, ge=0, le=1e6, help="weight of sum_j KL(q(z_j) || p(z_j))")
    estimator: Literal["mss", "mws"] = "mss"
    dataset_size: int | None = setting(None, ge=1, help="N of the minibatch estimators (set by the trainer)")

    @property
    def dim(self) -> int:
        return self.in_channels * self.image_size * self.image_size

    def validate(self) -> None:
        if self.image_size not in IMAGE_SIZES:
            raise ConfigError(f"model.image_size must be one of {', '.join(map(str, IMAGE_SIZES))} for the "
                              f"beta-TCVAE, got {self.image_size}")
        if not self.conv_channels:
            raise ConfigError("model.conv_channels must list at least one convolution")
        if _conv_sizes(self.image_size, len(self.conv_channels))[-1] < 1:
            raise ConfigError(f"model.image_size {self.image_size} is too small for {len(self.conv_channels)} "
                              f"stride-2 levels; use fewer conv_channels")

    renamed = {"d_z": "n_factors"}
    legacy_sections = ("btcvae",)

    @classmethod
    def migrate(cls, model: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """From an earlier release's file: the image shape and ``model.d_z`` (the factors) of its
        ``model`` section, and its ``btcvae`` section."""
        new = {"kind": model.get("kind", "btcvae"), **legacy_shape(model),
               **({"n_factors": model["d_z"]} if "d_z" in model else {})}
        new.update(sections.get("btcvae", {}))
        return new

    def for_training(self, n_train: int, runs: Any = None) -> BTCVAEConfig:
        """With ``dataset_size`` set to ``n_train`` when it is not set already."""
        return self if self.dataset_size is not None else self.replace(dataset_size=n_train)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _conv_sizes(image_size: int, levels: int) -> list[int]:
    sizes = [image_size]
    for _ in range(levels):
        sizes.append(sizes[-1] // 2)                              # 4x4, stride 2, padding 1: floor(n / 2)
    return sizes


def _noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None,
           shard: tuple[int, int] | None) -> Tensor:
    return sharded_noise(torch.randn, shape, like, generator, shard)


# ------------------------------------------------------------------------------------------------
# minibatch estimators


def log_importance_weight_matrix(batch_size: int, dataset_size: int, dtype: torch.dtype = torch.float32,
                                 device: torch.device | str | None = None) -> Tensor:
    """Log weights ``W [B, B]`` of minibatch stratified sampling (Chen et al. 2018, Appendix C.2).

    Row i estimates ``q(z_i) = (1/N) sum_n q(z_i | n)`` for z_i drawn from q(z | n_i)::

        exp W[i, i] = 1/N,  exp W[i, (i+1) mod B] = (N - M) / (N M),  exp W[i, k] = 1/M otherwise,

    with ``M = B - 1``; each row of ``exp W`` sums to 1. (The reference code's strided assignment fills
    columns 0 and 1 instead of the diagonal; see the module docstring.)

    Raises:
        DataError: ``B < 2`` or ``B - 1 > N`` (a batch larger than the dataset).
    """
    b, n = batch_size, dataset_size
    if not (_is_pos_int(b) and b >= 2):
        raise DataError(f"minibatch stratified sampling needs a batch of at least 2 images, got {b!r}")
    if not _is_pos_int(n) or b - 1 > n:
        raise DataError(f"batch of {b} images does not fit dataset_size={n!r}; set model.dataset_size to the "
                        f"number of training images")
    m = b - 1
    w = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    idx = torch.arange(b)
    w[idx, idx] = 1.0 / n
    w[idx, (idx + 1) % b] = (n - m) / (n * m)
    return w.log().to(dtype=dtype, device=device)


def log_qz_estimates(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int,
                     estimator: str = "mss") -> tuple[Tensor, Tensor]:
    """Minibatch estimates of ``log q(z_i)`` and ``sum_j log q(z_ij)`` in nats, each ``[B]``.

    Args:
        z: samples ``[B, d]``, z_i ~ q(z | n_i).
        mu, logvar: posterior parameters ``[B, d]`` of the same batch.
        dataset_size: N.
        estimator: ``"mss"`` or ``"mws"`` (module docstring).
    """
    b = z.shape[0]
    # L[i, k, j] = log q(z_ij | n_k)
    L = -0.5 * (logvar.unsqueeze(0) + (z.unsqueeze(1) - mu.unsqueeze(0)).pow(2) * torch.exp(-logvar.unsqueeze(0))
                + LOG_2PI)
    if estimator == "mws":
        c = math.log(b * dataset_size)
        log_qz = torch.logsumexp(L.sum(2), 1) - c
        log_prod = (torch.logsumexp(L, 1) - c).sum(1)
    elif estimator == "mss":
        w = log_importance_weight_matrix(b, dataset_size, z.dtype, z.device)
        log_qz = torch.logsumexp(w + L.sum(2), 1)
        log_prod = torch.logsumexp(w.unsqueeze(2) + L, 1).sum(1)
    else:
        raise ConfigError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
    return log_qz, log_prod


# ------------------------------------------------------------------------------------------------
# the model


@register
class BTCVAE(MeanCodeEdits, GenerativeModel):
    """beta-TCVAE with a Gaussian encoder and a convolutional decoder (module docstring).

    Args:
        cfg: architecture and objective weights (:class:`BTCVAEConfig`).
        n_bits: bits per pixel of the data (8 for the discretised logistic likelihood).

    Raises:
        ConfigError: an invalid configuration (the message names the field).
    """

    config_class: ClassVar[type[ModelSettings]] = BTCVAEConfig
    kinds: ClassVar[dict[str, str]] = {
        "btcvae": "a β-TCVAE (Chen et al., 2018), whose objective penalises the total correlation of its factors"}
    cfg: BTCVAEConfig

    def __init__(self, cfg: BTCVAEConfig | None = None, n_bits: int = 8):
        super().__init__(cfg, n_bits)  # type: ignore[arg-type]  # None is refused there, in one line
        cfg = self.cfg
        if cfg.likelihood == "discretized_logistic" and n_bits != 8:
            raise ConfigError(f"the discretized logistic likelihood models 8-bit images; got data.n_bits={n_bits}")
        d_z = cfg.n_factors
        ch = list(cfg.conv_channels)
        self.sizes = _conv_sizes(cfg.image_size, len(ch))
        layers: list[nn.Module] = []
        c = cfg.in_channels
        for w in ch:
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.ReLU()]
            c = w
        s = self.sizes[-1]
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * s * s, cfg.hidden), nn.ReLU(),
                                     nn.Linear(cfg.hidden, 2 * d_z))
        self.fc = nn.Sequential(nn.Linear(d_z, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, c * s * s), nn.ReLU())
        out_ch = cfg.in_channels * (1 if cfg.likelihood == "bernoulli" else 2)
        ups: list[nn.Module] = []
        widths = list(reversed(ch))
        for lvl, (a, t) in enumerate(zip(widths, reversed(self.sizes[:-1]))):
            last = lvl == len(widths) - 1
            b_ = out_ch if last else widths[lvl + 1]
            n_in = self.sizes[len(ch) - lvl]
            ups.append(nn.ConvTranspose2d(a, b_, 4, 2, 1, output_padding=t - 2 * n_in))
        self.ups = nn.ModuleList(ups)
        self._top = (c, s, s)

    @property
    def latent_meanings(self) -> dict[str, str]:
        """``z``: the factors."""
        return {"z": "factors z: q(z|x)"}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(vector_latent=True, reconstruction=True, code_prior=True)

    @property
    def latent_dim(self) -> int:
        """Dimension of the latent factors (``n_factors``)."""
        return self.cfg.n_factors

    def _device(self) -> torch.device:
        return self.device

    def _dtype(self) -> torch.dtype:
        return self.dtype

    def _q(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` of q(z | x), each ``[B, d_z]``."""
        h = self.encoder(x.to(self._dtype()) / 127.5 - 1.0)
        mu, lv = h.chunk(2, -1)
        return mu, _LOGVAR_BOUND * torch.tanh(lv / _LOGVAR_BOUND)

    def _decode_params(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(-1, *self._top)
        for i, up in enumerate(self.ups):
            h = up(h)
            if i < len(self.ups) - 1:
                h = F.relu(h)
        return h

    def log_px(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | z) in nats ``[B]`` for uint8 ``x`` and decoder outputs ``params``."""
        k = x.to(params.dtype)
        if self.cfg.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params, k / 255.0, reduction="none").flatten(1).sum(1)
        mean, log_scale = params.chunk(2, 1)
        return discretized_logistic_logprob(k, mean, log_scale.clamp(min=_MIN_LOG_SCALE)).flatten(1).sum(1)

    def pixel_mean(self, params: Tensor) -> Tensor:
        """Mean image of p(x | z) on [0, 1] (float ``[B, C, H, W]``) from decoder outputs ``params``."""
        if self.cfg.likelihood == "bernoulli":
            return torch.sigmoid(params)
        return ((params.chunk(2, 1)[0] + 1.0) / 2).clamp(0, 1)

    def _to_pixels(self, params: Tensor) -> Tensor:
        return (self.pixel_mean(params) * 255.0).round().clamp(0, 255).to(torch.uint8)

    # -------------------------------------------------------------------- the objective
    def decomposition(self, x: Tensor, generator: torch.Generator | None = None,
                      shard: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Per-image terms ``[B]`` in nats from one reparameterised draw z ~ q(z|x):

        ``log_px``, ``log_qzx`` (log q(z|x)), ``log_pz``, ``log_qz``, ``log_prod_qzj`` (estimated with
        ``cfg.estimator`` on this batch), ``mi``, ``tc``, ``dwkl`` and ``kl = mi + tc + dwkl =
        log q(z|x) - log p(z)``; also ``z``, ``mu``, ``logvar`` ``[B, d_z]``. Under data parallelism
        (``shard``) the estimators use the local batch.
        """
        self.check_input(x)
        if self.cfg.dataset_size is None:
            raise ConfigError("the minibatch estimators need model.dataset_size, the number of training images "
                              "(the trainer sets it); set it before computing the training objective")
        mu, lv = self._q(x)
        z = mu + torch.exp(0.5 * lv) * _noise(tuple(mu.shape), mu, generator, shard)
        log_px = self.log_px(x, self._decode_params(z))
        log_qzx = gaussian_logprob(z, mu, lv)
        log_pz = gaussian_logprob(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz, log_prod = log_qz_estimates(z, mu, lv, self.cfg.dataset_size, self.cfg.estimator)
        return {"log_px": log_px, "log_qzx": log_qzx, "log_pz": log_pz, "log_qz": log_qz, "log_prod_qzj": log_prod,
                "mi": log_qzx - log_qz, "tc": log_qz - log_prod, "dwkl": log_prod - log_pz,
                "kl": log_qzx - log_pz, "z": z, "mu": mu, "logvar": lv}

    @property
    def kl_term(self) -> bool:
        """The objective has a KL term (its weighted decomposition) for ``kl_weight`` to act on."""
        return True

    def loss(self, x: Tensor, generator: torch.Generator | None = None,
             shard: tuple[int, int] | None = None, *, kl_weight: float | Tensor = 1.0,
             **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss in nats per image: ``mean_i [-log p(x_i|z_i) + alpha mi_i + beta tc_i + gamma dwkl_i]``.

        With ``kl_weight`` w other than 1 (KL warm-up) the whole regulariser is weighted:
        ``recon + w * (alpha mi + beta tc + gamma dwkl)`` (batch means).

        Args:
            x: uint8 images ``[B, C, H, W]``, ``B >= 2`` for MSS.
            generator: source of the noise.
            shard: ``(rank, world)`` under data parallelism.
            kl_weight: keyword only: weight of the KL terms (``train.kl_warmup_steps``), a float
                or a 0-dim tensor.

        Returns:
            ``(loss, stats)``; ``stats`` holds detached scalars: ``bpd`` (loss / (D ln 2)), ``kl``
            (Monte Carlo KL(q(z|x) || p(z)) = mi + tc + dwkl), ``recon``, ``mi``, ``tc``, ``dwkl`` (nats
            per image) and ``elbo_bpd`` (the plain negative ELBO, bits/dim).
        """
        t = self.decomposition(x, generator, shard)
        c = self.cfg
        recon = -t["log_px"].mean()
        mi, tc, dwkl, kl = t["mi"].mean(), t["tc"].mean(), t["dwkl"].mean(), t["kl"].mean()
        if isinstance(kl_weight, Tensor) or kl_weight != 1:
            loss = recon + kl_weight * (c.alpha * mi + c.beta * tc + c.gamma * dwkl)
        else:
            loss = recon + c.alpha * mi + c.beta * tc + c.gamma * dwkl
        scale = self.dim * math.log(2)
        stats = {"bpd": loss / scale, "kl": kl, "recon": recon, "mi": mi, "tc": tc, "dwkl": dwkl,
                 "elbo_bpd": (recon + kl) / scale}
        return loss, {k: v.detach() for k, v in stats.items()}

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-image bounds ``[B]`` of the plain VAE (alpha = beta = gamma = 1, no minibatch estimator).

        ``elbo_bpd``: ``-(E[log p(x|z)] - KL(q(z|x) || N(0, I))) / (D ln 2)``, the reconstruction averaged over
        ``k`` draws and the KL in closed form. ``iw_bpd``: the importance-weighted bound with ``k`` draws
        (equals the single-sample Monte Carlo ELBO for ``k = 1``). ``kl``: the closed-form KL in nats.
        """
        check_count("k", k)
        self.check_input(x)
        mu, lv = self._q(x)
        kl = gaussian_kl(mu, lv)
        lpx, logw = [], []
        for _ in range(k):
            z = mu + torch.exp(0.5 * lv) * _noise(tuple(mu.shape), mu, generator, None)
            log_px = self.log_px(x, self._decode_params(z))
            lpx.append(log_px)
            logw.append(log_px + gaussian_logprob(z, torch.zeros_like(z), torch.zeros_like(z))
                        - gaussian_logprob(z, mu, lv))
        scale = self.dim * math.log(2)
        elbo = torch.stack(lpx).mean(0) - kl
        iw = torch.logsumexp(torch.stack(logw), 0) - math.log(k)
        return {"elbo_bpd": -elbo / scale, "iw_bpd": -iw / scale, "kl": kl}

    # -------------------------------------------------------------------- tools
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Posterior mean ``mu [B, d_z]`` of uint8 images ``[B, C, H, W]``."""
        self.check_input(x)
        return self._q(x)[0]

    def _check_z(self, z: Tensor) -> Tensor:
        return check_codes(z, self.cfg.n_factors).to(device=self._device(), dtype=self._dtype())

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Mean image of p(x | z) as uint8 ``[B, C, H, W]`` for codes ``z [B, d_z]``.

        Raises:
            DataError: ``z`` not a finite float tensor ``[B, n_factors]``.
        """
        return self._to_pixels(self._decode_params(self._check_z(z)))

    @torch.no_grad()
    def reconstruction_bits(self, x: Tensor) -> Tensor:
        """``-log p(x | z = mu(x))`` in bits/dim per image ``[B]`` (exact; the stage-1 figure of the
        multi-stage comparison)."""
        params = self._decode_params(self.encode(x))
        return -self.log_px(x, params) / (self.dim * math.log(2))

    @torch.no_grad()
    def reconstruction_mean(self, x: Tensor) -> Tensor:
        """Mean image of p(x | z = mu(x)) on [0, 1], float ``[B, C, H, W]``."""
        return self.pixel_mean(self._decode_params(self.encode(x)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: uint8 ``[B, C, H, W]``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` mean images of p(x | z), z ~ N(0, temperature^2 I): uint8 ``[n, C, H, W]``.

        Raises:
            ConfigError: bad ``n`` or temperature; a global temperature other than 1 (no global code).
        """
        check_count("n", n)
        check_temperature(temperature)
        if global_temperature != 1.0:
            raise ConfigError("a 'btcvae' model has no global code; leave the global temperature at 1")
        z = torch.randn((n, self.cfg.n_factors), generator=generator, dtype=self._dtype(), device=self._device())
        return self.decode(z * temperature)

    @torch.no_grad()
    def latent_mean(self, x: Tensor) -> Tensor:
        """Posterior mean of the factors ``[B, n_factors]`` (same as :meth:`encode`)."""
        return self.encode(x)

    @torch.no_grad()
    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"z": (mean, logvar)}`` of q(z|x), the factors, each ``[B, d]`` (:meth:`GenerativeModel.posterior_moments`)."""
        self.check_input(x)
        return {"z": self._q(x)}

    @torch.no_grad()
    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """``z``: the posterior mean of the factors ``[B, n_factors]``."""
        return {"z": self.encode(x)}

    @torch.no_grad()
    def traverse(self, x_single: Tensor, dim_values: list[float], dims: list[int] | None = None) -> Tensor:
        """Latent traversals: from the posterior mean of one image, set one latent dimension at a time.

        Args:
            x_single: one uint8 image ``[C, H, W]`` or ``[1, C, H, W]``.
            dim_values: values (in prior standard deviations, as z ~ N(0, I)) given to the traversed dimension.
            dims: latent dimensions to traverse; default all ``range(d_z)``.

        Returns:
            uint8 ``[len(dims), len(dim_values), C, H, W]``: entry ``[a, b]`` decodes the mean code with
            ``z[dims[a]] = dim_values[b]``.
        """
        return traverse_mean_code(self.encode, self.decode, self.check_input, x_single, dim_values, dims,
                                  self.cfg.n_factors)
