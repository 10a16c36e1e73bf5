"""Presets: ready configurations of every model family, at the paper's size and at CPU size.

The architecture fields of ``cifar10`` are the published CIFAR-10 model (the authors'
configuration); ``imagenet64``, ``lsun128`` and ``celebahq256`` the published large models;
training fields follow Table 5 of the paper. ``digits``, ``mnist`` and ``cifar10-small`` are the
paper's architecture at CPU size. Every family has a ready preset: the UG-VAE (``mnist-ugvae``),
the beta-TCVAE and the multi-stage model (``dsprites-btcvae``, ``dsprites-multistage``), and the
plain VAE baseline of Table 4 (``digits-vae``, ``mnist-vae``).
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Config, DataConfig, TrainConfig, suggest
from .errors import ConfigError
from .models.btcvae import BTCVAEConfig
from .models.flowvae import FlowVAEConfig
from .models.multistage import MultiStageConfig
from .models.ugvae import UGVAEConfig
from .models.vae import VAEConfig

__all__ = ["PRESETS", "get_preset", "preset_for_images"]


def _digits() -> Config:
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
    return Config(
        name="mnist",
        model=FlowVAEConfig(in_channels=1, image_size=28, steps=[0, [4, 4], 4], hidden=[8, 128, 128],
                          d_z=32, encoder_widths=[32, 64], prior_steps=2, prior_hidden=128),
        data=DataConfig(dataset="mnist", n_bits=8),
        train=TrainConfig(steps=20000, batch_size=64, lr=1e-3, warmup_steps=100, lr_decay=0.99995,
                          init_batch_size=512, eval_every=1000, eval_images=2000,
                          checkpoint_every=1000),
    )


def _cifar10_small() -> Config:
    return Config(
        name="cifar10-small",
        model=FlowVAEConfig(in_channels=3, image_size=32, steps=[2, [4, 4], 4], hidden=[16, 128, 128],
                          d_z=64, encoder_widths=[32, 64, 64], prior_steps=2, prior_hidden=128),
        data=DataConfig(dataset="cifar10-jpeg", n_bits=8, flip=True, crop_pad=0),
        train=TrainConfig(steps=20000, batch_size=64, lr=1e-3, warmup_steps=100, lr_decay=0.99995,
                          init_batch_size=512, eval_every=1000, eval_images=2000,
                          checkpoint_every=1000),
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
    dequantisation gap (0.077 against 0.021 bits/dim after 25 CPU minutes; README)."""
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


PRESETS: dict[str, Callable[[], Config]] = {"digits": _digits, "mnist": _mnist, "cifar10-small": _cifar10_small, "cifar10": _cifar10,
           "imagenet64": _imagenet64, "lsun128": _lsun128, "celebahq256": _celebahq256,
           "mnist-ugvae": _mnist_ugvae, "dsprites-btcvae": _dsprites_btcvae,
           "dsprites-multistage": _dsprites_multistage, "digits-vae": _digits_vae, "mnist-vae": _mnist_vae}


def preset_for_images(channels: int, height: int, width: int, n_bits: int = 8) -> tuple[str, int, Config]:
    """A sensible preset for a folder of ``channels x height x width`` images (the first file's shape).

    The image side becomes the largest supported size not above the shorter side (images are
    centre-cropped and resized to it): 256, 128 and 64 take the published CelebA-HQ, LSUN and
    ImageNet architectures; 32 the CPU-sized CIFAR-10 model (MNIST's for grey images); 28 MNIST's;
    smaller images the digits model at 8x8. With ``n_bits <= 5`` the large architectures use
    additive couplings, as the paper's 5-bit LSUN and CelebA-HQ models do.

    Returns:
        ``(preset name, image size, config)`` with ``data`` set to read the folder.
    """
    side = min(height, width)
    grey = channels == 1
    table = [(256, "celebahq256"), (128, "lsun128"), (64, "imagenet64"), (32, "mnist" if grey else "cifar10-small"),
             (28, "mnist"), (8, "digits")]
    size, name = next(((s, n) for s, n in table if side >= s), (8, "digits"))
    cfg = get_preset(name)
    model = cfg.model
    assert isinstance(model, FlowVAEConfig)
    steps = list(model.steps)
    if grey and steps and steps[0] != 0:
        steps[0] = 0  # one grey channel cannot be coupled before the first squeeze
    cfg.model = model.replace(in_channels=1 if grey else 3, image_size=size, steps=steps,
                              coupling="additive" if n_bits <= 5 and size >= 128 else model.coupling)
    cfg.data = cfg.data.replace(dataset="folder", image_size=size, n_bits=n_bits, crop_pad=0)
    cfg.name = f"{name}-folder"
    return name, size, cfg


def get_preset(name: str) -> Config:
    """A fresh copy of the preset ``name``.

    Raises:
        ConfigError: unknown name (with the nearest preset).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{suggest(name, PRESETS)}")
    return PRESETS[name]()
