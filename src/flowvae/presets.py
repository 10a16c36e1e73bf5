"""Presets: ready configurations of every model family, at the paper's size and at CPU size.

The architecture fields of ``cifar10`` are the published CIFAR-10 model (the authors'
configuration); ``imagenet64``, ``lsun128`` and ``celebahq256`` the published large models;
training fields follow Table 5 of the paper. ``digits``, ``mnist`` and ``cifar10-small`` are the
paper's architecture at CPU size (``digits-global``: ``digits`` with the remedy for posterior collapse that the
demo uses; ``mnist-global``, ``cifar10-small-global``: the CPU recipe under which switching z moves the
global layout and colour and v keeps the detail). Every family has a ready preset: the UG-VAE (``mnist-ugvae``),
the beta-TCVAE and the multi-stage model (``dsprites-btcvae``, ``dsprites-multistage``), and the
plain VAE baseline of Table 4 (``digits-vae``, ``mnist-vae``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config, DataConfig, TrainConfig, apply_overrides, load_config, suggest
from .errors import ConfigError
from .models.btcvae import BTCVAEConfig
from .models.flowvae import FlowVAEConfig
from .models.multistage import MultiStageConfig
from .models.ugvae import UGVAEConfig
from .models.vae import VAEConfig

__all__ = ["CPU_PARAMETER_WARNING", "PRESETS", "PresetChoice", "choose_preset", "cpu_size_warning", "get_preset",
           "parameter_count", "preset_for_images", "resolve"]


def _digits() -> Config:
    """The 8x8 digits shipped with scikit-learn: a model that trains in about a minute on a CPU. In
    float32: at 8x8 pixels bf16 + channels-last gains nothing (1.05 times float32's training speed on
    the project's CPU, ``benchmarks/bench.py --presets digits-global --modes fp32 bf16+cl --batch 64``)."""
    return Config(
        name="digits",
        model=FlowVAEConfig(in_channels=1, image_size=8, steps=[0, [2, 2], 2], hidden=[8, 64, 64],
                          d_z=8, encoder_widths=[32], prior_steps=2, prior_hidden=64),
        data=DataConfig(dataset="digits", n_bits=8),
        train=TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup_steps=50, lr_decay=0.9995,
                          init_batch_size=512, eval_every=250, eval_images=None, eval_k=1,
                          checkpoint_every=500, sample_temperatures=[0.7, 0.8, 0.9, 1.0]),
    )


def _mnist() -> Config:
    """The paper's model sized for a CPU on 28x28 grey images, chosen by time to quality (issue 33;
    ``benchmarks/time_to_quality.py``, docs/speed.md): two levels of 4 refined-Glow steps with z in
    every coupling and no fine-grained (pre-squeeze) level, which cost a third of each step (without
    it 2.209 against 2.688 test bits/dim after 20 minutes; float32, one seed, runs of the same day,
    not side by side), trained in bf16 +
    channels-last where the CPU has bfloat16 in hardware (``train.precision=auto``: a step 2.1 times
    faster on the project's CPU, ``benchmarks/bench.py``), in batches of 8 (side by side ahead of
    16 by 0.10, 0.02 and 0.06 test bits/dim after 5, 10 and 20 minutes on one core each, and 16
    ahead of 32, 32 of 64), evaluated on weights averaged with decay 0.99 (``train.ema_decay``,
    Polyak averaging; docs/speed.md, 2026-12-07). Evaluations every 4,000 steps (and, under a
    time limit, every tenth of it), so that a small batch's many steps do not pay for many of them.
    Learning rate 2e-3: side by side with 1e-3 ahead by 0.09, 0.06 and 0.06 test bits/dim after 5,
    10 and 20 minutes on one core each (seed 1); 3e-3 was behind 2e-3 (docs/speed.md, 2026-12-07).
    Variational dequantisation (Flow++; **a departure from the paper's uniform dequantisation**, the
    bound stays a bound on the discrete likelihood) with gradients clipped to a norm of 100, without
    which it spikes: side by side with uniform noise ahead by 0.05, 0.06 and 0.09 test bits/dim
    after 5, 10 and 20 minutes on one core each (seed 0; docs/speed.md, 2026-12-07)."""
    return Config(
        name="mnist",
        model=FlowVAEConfig(in_channels=1, image_size=28, steps=[0, 4, 4], hidden=[8, 128, 128],
                          d_z=32, encoder_widths=[32, 64], prior_steps=2, prior_hidden=128,
                          dequantization="variational"),
        data=DataConfig(dataset="mnist", n_bits=8),
        train=TrainConfig(steps=20000, batch_size=8, lr=2e-3, warmup_steps=100, lr_decay=0.99995,
                          init_batch_size=512, eval_every=4000, eval_images=2000, probe_images=2000,
                          checkpoint_every=4000, precision="auto", ema_decay=0.99, grad_clip=100.0),
    )


def _cifar10_small() -> Config:
    """The paper's CIFAR-10 family sized for a CPU, trained in bf16 + channels-last where the CPU has
    bfloat16 in hardware (``train.precision=auto``: a step 1.47 times faster on the project's CPU,
    ``benchmarks/bench.py --presets cifar10-small --modes fp32 bf16+cl``), in batches of 16 and
    evaluated on weights averaged with decay 0.99 (``train.ema_decay``, Polyak averaging): side by
    side with batches of 32 without averaging ahead by 0.10, 0.13 and 0.09 test bits/dim after 5, 10
    and 20 minutes on one core each, of which the averaging gives 0.01 to 0.03 (docs/speed.md,
    2026-12-07). Learning rate 2e-3: side by side with 1e-3 ahead by 0.08, 0.09 and 0.08 test
    bits/dim after 5, 10 and 20 minutes (docs/speed.md, 2026-12-07)."""
    return Config(
        name="cifar10-small",
        model=FlowVAEConfig(in_channels=3, image_size=32, steps=[2, [4, 4], 4], hidden=[16, 128, 128],
                          d_z=64, encoder_widths=[32, 64, 64], prior_steps=2, prior_hidden=128),
        data=DataConfig(dataset="cifar10-jpeg", n_bits=8, flip=True, crop_pad=0),
        train=TrainConfig(steps=20000, batch_size=16, lr=2e-3, warmup_steps=100, lr_decay=0.99995,
                          init_batch_size=512, eval_every=2000, eval_images=2000, probe_images=2000,
                          checkpoint_every=2000, precision="auto", ema_decay=0.99),
    )


def _cifar10() -> Config:
    return Config(
        name="cifar10",
        model=FlowVAEConfig(),
        data=DataConfig(dataset="cifar10", n_bits=8, flip=True, crop_pad=4),
        train=TrainConfig(steps=500000, batch_size=512, lr=1e-3, warmup_steps=50, lr_decay=0.999997,
                          weight_decay=1e-6, init_batch_size=1024, eval_every=5000,
                          eval_images=None, checkpoint_every=5000),
    )


def _large(name: str, size: int, steps: list, hidden: list, d_z: int, encoder: list, prior_hidden: int,
           batch: int) -> Config:
    """The published ImageNet/LSUN/CelebA-HQ architectures; training fields from Table 5
    (weight decay 5e-4, 200 warm-up updates). Data: the imagenet64/lsun/celebahq loaders (``--data DIR``)."""
    return Config(
        name=name,
        model=FlowVAEConfig(in_channels=3, image_size=size, steps=steps, hidden=hidden, d_z=d_z,
                          encoder_widths=encoder, encoder_maps=32, prior_steps=2, prior_hidden=prior_hidden,
                          alpha=0.5 if name == "imagenet64" else 1.0),  # Appendix B.2
        # C.1: random flips for CIFAR-10 and CelebA-HQ only; LSUN is centre-cropped and resized.
        data=DataConfig(dataset={"imagenet64": "imagenet64", "lsun128": "lsun"}.get(name, "celebahq"), n_bits=8,
                        flip=name == "celebahq256", image_size=size),
        train=TrainConfig(steps=500000, batch_size=batch, lr=1e-3, warmup_steps=200, lr_decay=0.999997,
                          weight_decay=5e-4, init_batch_size=2 * batch, eval_every=5000,
                          eval_images=None, checkpoint_every=5000),
    )


def _imagenet64() -> Config:
    return _large("imagenet64", 64, [2, [8, 8], [8, 8], [6, 6], 4], [24, 512, 512, 512, 512], 128,
                  [48, 96, 96, 192], 256, 256)


def _lsun128() -> Config:
    return _large("lsun128", 128, [2, [16, 16], [16, 16], [8, 8], [4, 4], 2], [24, 256, 256, 256, 256, 512], 256,
                  [48, 96, 96, 192, 192], 512, 256)


def _celebahq256() -> Config:
    return _large("celebahq256", 256, [2, [12, 12], [10, 10], [8, 8], [4, 4], [2, 2], 1],
                  [24, 256, 256, 256, 256, 256, 512], 256, [48, 96, 96, 192, 192, 256], 512, 40)


def _dsprites_btcvae() -> Config:
    """beta-TCVAE on the dSprites factor grid (stage 1 of the multi-stage model): Chen et al.'s
    dSprites setting (10 factors, beta = 6, MSS, Bernoulli pixels, Adam at 1e-3) with a CPU-sized batch."""
    return Config(
        name="dsprites-btcvae",
        model=BTCVAEConfig(in_channels=1, image_size=64, n_factors=10),
        data=DataConfig(dataset="dsprites", n_bits=1),
        train=TrainConfig(steps=6000, batch_size=128, lr=1e-3, warmup_steps=0, lr_decay=1.0, weight_decay=0.0,
                          init_batch_size=128, eval_every=1000, eval_images=2000, checkpoint_every=1000,
                          sample_temperatures=[1.0]),
    )


def _dsprites_multistage() -> Config:
    """Stage 2 on dSprites: a conditional refined Glow on the factors of a ``dsprites-btcvae`` run
    (``--set model.stage1_run=RUN``) with the stage-1 reconstruction as extra coupling input, 1-bit
    pixels so its bits/dim compare with stage 1's Bernoulli ones,
    with variational dequantisation: under uniform noise a flow on binary pixels pays a large
    dequantisation gap (0.077 against 0.021 bits/dim after 25 CPU minutes; docs/results.md)."""
    return Config(
        name="dsprites-multistage",
        model=MultiStageConfig(in_channels=1, image_size=64, steps=[0, [2, 2], [2, 2], 2], hidden=[8, 64, 64, 64],
                               dequantization="variational", recon_input=True),
        data=DataConfig(dataset="dsprites", n_bits=1),
        train=TrainConfig(steps=4000, batch_size=32, lr=1e-3, warmup_steps=100, lr_decay=0.9999, weight_decay=0.0,
                          init_batch_size=256, eval_every=1000, eval_images=1000, checkpoint_every=500,
                          sample_temperatures=[0.0, 0.7, 1.0]),
    )


def _mnist_ugvae() -> Config:
    """UG-VAE on MNIST with class groups: every batch holds 4 classes, each class one global code
    (the setting of ``benchmarks/ugvae_groups.py``)."""
    return Config(
        name="mnist-ugvae",
        model=UGVAEConfig(in_channels=1, image_size=28, d_local=16, d_global=16, n_components=10,
                          conv_channels=[32, 64, 64], hidden=[256], group_by="label", groups_per_batch=4),
        data=DataConfig(dataset="mnist", n_bits=8),
        train=TrainConfig(steps=5000, batch_size=64, lr=1e-3, warmup_steps=100, lr_decay=0.9999, weight_decay=0.0,
                          init_batch_size=128, eval_every=1000, eval_images=2000, checkpoint_every=1000,
                          sample_temperatures=[1.0]),
    )


def _digits_global() -> Config:
    """``digits`` with a global code that the decoder uses: d_z = 32 (the paper's family uses 64 on
    CIFAR-10) and free bits of 8 nats (``model.free_bits``, Kingma et al. 2016), **a departure from
    the paper's objective**. Under the paper's objective the 8x8 digits' code collapses (KL about
    0.02 nats, every switched decode keeps v's class); with these two changes the KL holds at about
    8 nats and z carries the class (docs/results.md). The demo trains this preset."""
    cfg = _digits()
    cfg.name = "digits-global"
    assert isinstance(cfg.model, FlowVAEConfig)  # narrowing only: _digits builds one
    cfg.model.d_z = 32
    cfg.model.free_bits = 8.0
    cfg.train.probe_images = 1000  # the report plots z's and v's probes over training
    return cfg


def _global(base: Callable[[], Config], name: str) -> Config:
    """``base`` with the CPU recipe for the decoupling of issue 33 (docs/speed.md), **a departure from
    the paper**: a decoder that subtracts the 4x4 low-pass image predicted from z before the flow
    (``model.low_pass_shift=4``; the bound stays exact), the predictor trained as an auxiliary
    decoder of the image average-pooled to 4x4 (``model.aux_decoder_weight=30``), and free bits of
    16 nats."""
    cfg = base()
    cfg.name = name
    assert isinstance(cfg.model, FlowVAEConfig)  # narrowing only: the bases build one
    cfg.model = cfg.model.replace(low_pass_shift=4, aux_decoder_weight=30.0, free_bits=16.0)
    return cfg


def _mnist_global() -> Config:
    """``mnist`` with a global code that carries the layout and the decoder takes it from z: the
    switch's low frequencies follow z and its high frequencies follow v (:func:`_global`). In
    batches of 64 at learning rate 1e-3 and without weight averaging, as measured (docs/speed.md)."""
    cfg = _global(_mnist, "mnist-global")
    cfg.model = cfg.model.replace(dequantization="uniform")
    cfg.train = cfg.train.replace(batch_size=64, lr=1e-3, eval_every=1000, checkpoint_every=1000, ema_decay=None,
                                  grad_clip=None)
    return cfg


def _cifar10_small_global() -> Config:
    """``cifar10-small`` with the recipe of :func:`_global`: the switch's low frequencies and colour
    follow z, its high frequencies v. In batches of 64 at learning rate 1e-3 and without weight
    averaging, as measured (docs/speed.md)."""
    cfg = _global(_cifar10_small, "cifar10-small-global")
    cfg.train = cfg.train.replace(batch_size=64, lr=1e-3, eval_every=1000, checkpoint_every=1000, ema_decay=None)
    return cfg


def _digits_vae() -> Config:
    """The plain VAE baseline (``model.kind=vae``) on the 8x8 digits: the data and training fields of
    ``digits`` (same steps, batch, schedule, evaluation), d_z = 8 like the flow, so the two compare
    directly; about a minute on a CPU."""
    cfg = _digits()
    cfg.name = "digits-vae"
    cfg.model = VAEConfig(in_channels=1, image_size=8, d_z=8, conv_channels=[32, 64], hidden=256)
    return cfg


def _mnist_vae() -> Config:
    """The plain VAE baseline on MNIST 28x28: the data and training fields of ``mnist``, d_z = 32 like
    the flow; 3x3 stride-2 levels 28 -> 14 -> 7 -> 4."""
    cfg = _mnist()
    cfg.name = "mnist-vae"
    cfg.model = VAEConfig(in_channels=1, image_size=28, d_z=32, conv_channels=[32, 64, 64], hidden=512)
    return cfg


PRESETS: dict[str, Callable[[], Config]] = {
           "digits": _digits, "digits-global": _digits_global, "mnist": _mnist, "mnist-global": _mnist_global,
           "cifar10-small": _cifar10_small, "cifar10-small-global": _cifar10_small_global,
           "cifar10": _cifar10,
           "imagenet64": _imagenet64, "lsun128": _lsun128, "celebahq256": _celebahq256,
           "mnist-ugvae": _mnist_ugvae, "dsprites-btcvae": _dsprites_btcvae,
           "dsprites-multistage": _dsprites_multistage, "digits-vae": _digits_vae, "mnist-vae": _mnist_vae}


# --------------------------------------------------------------------------------------------- own images

# The paper's architecture for each image side (grey images get one input channel and no coupling
# before the first squeeze); 28 and 8 pixels have none, so their CPU architecture serves everywhere.
PUBLISHED_FOR_SIZE: dict[int, str] = {256: "celebahq256", 128: "lsun128", 64: "imagenet64", 32: "cifar10"}
_SIDES = (256, 128, 64, 32, 28, 8)
CPU_PARAMETER_WARNING = 10_000_000
"""Parameters above which :func:`cpu_size_warning` warns before training on a CPU."""
GPU_MIN_IMAGES = 10_000  # fewer training images than this: the small architecture on a GPU too
SMALL_DATA_IMAGES = 2_000  # fewer than this: the small architecture at half its widths
# The CPU architectures above 32 pixels: cifar10-small's three levels at the coarse end, one cheap,
# narrow level more per doubling of the side (the published models add levels the same way), and
# smaller batches, so that an image costs a few times a CIFAR-10 image, not 30-100 times.
_CPU_SCALED: dict[int, dict[str, Any]] = {
    64: dict(steps=[2, [2, 2], [4, 4], 4], hidden=[16, 64, 128, 128], encoder_widths=[16, 32, 64, 64],
             batch=32, init=128),
    128: dict(steps=[2, [1, 1], [2, 2], [2, 2], 2], hidden=[8, 32, 64, 96, 96], encoder_widths=[16, 16, 32, 64, 64],
              batch=16, init=64),
    256: dict(steps=[2, [1, 1], [1, 1], [2, 2], [2, 2], 2], hidden=[8, 16, 32, 64, 64, 64],
              encoder_widths=[8, 16, 16, 32, 64, 64], batch=8, init=64),
}


def parameter_count(cfg: Config) -> int:
    """Parameters of the model ``cfg`` builds, counted on PyTorch's meta device (no memory, no
    initialisation; a fraction of a second even for the 100 M-parameter presets)."""
    from .models import create_model

    with torch.device("meta"):
        return sum(p.numel() for p in create_model(cfg).parameters())


def cpu_size_warning(model: torch.nn.Module, device: torch.device | str) -> str | None:
    """A warning when a model of more than :data:`CPU_PARAMETER_WARNING` (10 M) parameters is about
    to train on a CPU, else ``None``.

    Args:
        model: the model (its parameters are counted).
        device: the device it trains on (``torch.device`` or a name such as ``"cpu"``).

    Returns:
        One line naming the parameter count and what to do (a smaller preset, ``--data FOLDER``
        without a preset, or a GPU), or ``None`` for a GPU or a small model.
    """
    if torch.device(device).type != "cpu":
        return None
    n = sum(p.numel() for p in model.parameters())
    if n <= CPU_PARAMETER_WARNING:
        return None
    return (f"the model has {n / 1e6:.1f} M parameters and trains on the CPU, where one step can take minutes: "
            f"for CPU training use a CPU-sized architecture (presets digits, mnist, cifar10-small; "
            f"`flowvae train --data FOLDER` without a preset picks one for the image size), or train on a GPU")


def _side(height: int, width: int) -> int:
    """The supported image side for images of ``height x width``: the largest not above the shorter side."""
    return next((s for s in _SIDES if min(height, width) >= s), 8)


def _fit(cfg: Config, channels: int, size: int, n_bits: int, published: bool) -> Config:
    """``cfg`` with the model reshaped for ``channels x size x size`` images and data read from a folder."""
    model = cfg.model
    assert isinstance(model, FlowVAEConfig)
    steps = list(model.steps)
    if channels == 1 and steps and steps[0] != 0:
        steps[0] = 0  # one grey channel cannot be coupled before the first squeeze
    additive = published and n_bits <= 5 and size >= 128  # the paper's 5-bit LSUN/CelebA-HQ models
    cfg.model = model.replace(in_channels=1 if channels == 1 else 3, image_size=size, steps=steps,
                              coupling="additive" if additive else model.coupling)
    cfg.data = cfg.data.replace(dataset="folder", image_size=size, n_bits=n_bits, crop_pad=0)
    return cfg


def _halve(widths: list[int]) -> list[int]:
    return [max(8, w // 2) for w in widths]


def _small(channels: int, size: int, n_bits: int, narrow: bool) -> tuple[str, str, Config]:
    """The CPU-sized architecture for ``size``: digits (8), mnist (28; grey 32), cifar10-small (32),
    cifar10-small scaled (64, 128, 256); at half widths when ``narrow``."""
    if size in _CPU_SCALED:
        spec = _CPU_SCALED[size]
        cfg = get_preset("cifar10-small")
        model = cfg.model
        assert isinstance(model, FlowVAEConfig)
        cfg.model = model.replace(steps=spec["steps"], hidden=spec["hidden"], encoder_widths=spec["encoder_widths"])
        cfg.train = cfg.train.replace(batch_size=spec["batch"], init_batch_size=spec["init"])
        base, variant = "cifar10-small", "with one narrow level more per doubling of the side"
    else:
        base, variant = {32: "mnist" if channels == 1 else "cifar10-small", 28: "mnist"}.get(size, "digits"), ""
        cfg = get_preset(base)
    if narrow:
        model = cfg.model
        assert isinstance(model, FlowVAEConfig)
        cfg.model = model.replace(hidden=_halve(model.hidden), encoder_widths=_halve(model.encoder_widths),
                                  prior_hidden=max(8, model.prior_hidden // 2))
        variant = f"{variant}, at half width" if variant else "at half width"
    return base, variant, _fit(cfg, channels, size, n_bits, published=False)


def _yaml_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


@dataclass(frozen=True)
class PresetChoice:
    """The architecture :func:`choose_preset` picked for some images on some machine.

    Attributes:
        name: the preset the architecture comes from, e.g. ``"mnist"``, ``"cifar10-small"``,
            ``"imagenet64"``.
        variant: how it was changed from that preset, e.g. ``"at half width"``, or ``""``.
        size: the image side the images are resized to.
        config: the configuration (``data.dataset="folder"``, ``data.image_size=size``).
        device: ``"cpu"`` or ``"cuda"``: the machine the choice was made for.
        parameters: parameters of ``config``'s model.
        published: the preset of the paper's architecture for this image side (what a GPU with
            enough images gets), or ``None`` when the paper has none (28 and 8 pixels, grey 32).
        published_parameters: its parameters at these channels, or ``None``.
        reason: why this architecture, in a few words (for the log).
        gpu_overrides: ``model.field=value`` strings that turn ``config`` into the paper's
            architecture (empty when it already is, or there is none).
    """

    name: str
    variant: str
    size: int
    config: Config
    device: str
    parameters: int
    published: str | None
    published_parameters: int | None
    reason: str
    gpu_overrides: tuple[str, ...]


def choose_preset(channels: int, height: int, width: int, n_images: int | None = None, n_bits: int = 8,
                  device: str = "cpu") -> PresetChoice:
    """The architecture for ``channels x height x width`` images, ``n_images`` of them, on ``device``.

    The image side becomes the largest supported size not above the shorter side (256, 128, 64, 32,
    28, else 8; images are centre-cropped and resized to it). Then:

    * on a GPU (``device`` ``"cuda"``) with at least 10,000 images (or an unknown number), the
      paper's architecture for that side: ``celebahq256``, ``lsun128``, ``imagenet64`` (grey images:
      one input channel, no coupling before the first squeeze) or, for colour 32x32, ``cifar10``;
      with ``n_bits <= 5`` at 128 and 256 pixels additive couplings, as the paper's 5-bit models;
    * otherwise (a CPU, or fewer images) a CPU-sized one that trains in useful time there: ``digits``
      (8), ``mnist`` (28, and grey 32), ``cifar10-small`` (32), and above 32 pixels cifar10-small's
      levels with one narrow level more per doubling of the side and a smaller batch (a few
      million parameters); with fewer than 2,000 images at half the coupling, encoder and prior
      widths. The training settings are those of the preset the architecture comes from; the batch
      sizes never exceed ``n_images``.

    Args:
        channels: image channels as the loader reads them (1 grey, else colour).
        height, width: the images' stored size.
        n_images: training images, if known.
        n_bits: bits per pixel modelled (``data.n_bits``).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` counts as ``"cuda"``).

    Returns:
        PresetChoice.
    """
    size = _side(height, width)
    gpu = str(device).startswith("cuda")
    published = PUBLISHED_FOR_SIZE.get(size)
    if published == "cifar10" and channels == 1:
        published = None  # the paper has no grey 32x32 model; mnist's serves
    big_data = n_images is None or n_images >= GPU_MIN_IMAGES
    published_cfg = None if published is None else _fit(get_preset(published), channels, size, n_bits, published=True)
    if gpu and published is not None and published_cfg is not None and big_data:
        name, variant, cfg = published, "", published_cfg
        reason = f"the paper's architecture for {size}x{size} images"
    else:
        narrow = n_images is not None and n_images < SMALL_DATA_IMAGES
        name, variant, cfg = _small(channels, size, n_bits, narrow)
        if not gpu:
            reason = "sized to train in useful time on a CPU"
        elif published_cfg is not None:
            reason = f"fewer than {GPU_MIN_IMAGES:,} images, too few for the paper's architecture"
        else:
            reason = f"the architecture for {size}x{size} images"
        if narrow:
            reason += f"; half width for fewer than {SMALL_DATA_IMAGES:,} images"
    if n_images is not None:
        cfg.train = cfg.train.replace(batch_size=min(cfg.train.batch_size, n_images),
                                      init_batch_size=min(cfg.train.init_batch_size, n_images))
    scaled = name != published and size in _CPU_SCALED
    cfg.name = f"{name}{f'-{size}' if scaled else ''}-folder"  # e.g. cifar10-small-64-folder
    overrides: tuple[str, ...] = ()
    if published_cfg is not None and name != published:
        mine, theirs = cfg.model.to_dict(), published_cfg.model.to_dict()
        overrides = tuple(f"model.{k}={_yaml_value(v)}" for k, v in theirs.items() if mine.get(k) != v)
    return PresetChoice(name=name, variant=variant, size=size, config=cfg, device="cuda" if gpu else "cpu",
                        parameters=parameter_count(cfg), published=published,
                        published_parameters=None if published_cfg is None else parameter_count(published_cfg),
                        reason=reason, gpu_overrides=overrides)


def preset_for_images(channels: int, height: int, width: int, n_bits: int = 8, *, device: str = "cuda",
                      n_images: int | None = None) -> tuple[str, int, Config]:
    """A sensible preset for ``channels x height x width`` images (a folder's first image).

    :func:`choose_preset` as a tuple. With the defaults (a GPU, an unknown number of images) it is
    the paper's architecture for the image side: 256, 128 and 64 take the published CelebA-HQ,
    LSUN and ImageNet architectures, colour 32 the published CIFAR-10 one; grey 32 and 28 MNIST's;
    smaller images the digits model at 8x8. With ``n_bits <= 5`` the large architectures use
    additive couplings, as the paper's 5-bit LSUN and CelebA-HQ models do. ``device="cpu"`` (or
    fewer than 10,000 ``n_images``) gives the CPU-sized architecture instead.

    Returns:
        ``(preset name, image size, config)`` with ``data`` set to read the folder.
    """
    choice = choose_preset(channels, height, width, n_images, n_bits, device)
    return choice.name, choice.size, choice.config


def get_preset(name: str) -> Config:
    """A fresh copy of the preset ``name``.

    Raises:
        ConfigError: unknown name (with the nearest preset).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{suggest(name, PRESETS)}")
    return PRESETS[name]()


def resolve(preset_or_path: str, overrides: list[str] | None = None) -> Config:
    """A preset name or a YAML/JSON config file, with ``overrides`` applied.

    Raises:
        ConfigError: neither a preset nor a config file (with the nearest preset), a config file that
            does not parse, or a bad override.
    """
    p = Path(preset_or_path)
    if preset_or_path in PRESETS:
        cfg = get_preset(preset_or_path)
    elif p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        cfg = load_config(p)
    else:
        raise ConfigError(f"{preset_or_path!r} is neither a preset nor a config file{suggest(preset_or_path, PRESETS)}")
    return apply_overrides(cfg, overrides)
