"""Typed configuration: model, data and training settings, presets, and command-line overrides.

A :class:`Config` is plain dataclasses, saved as ``config.yaml`` in every run folder and read
back with :func:`load_config`. Any field can be overridden with ``section.field=value``
(``--set train.lr=5e-4`` on the command line); values are parsed as YAML scalars or lists.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["ModelConfig", "DataConfig", "TrainConfig", "UGVAEOptions", "BTCVAEOptions", "MultiStageOptions", "Config", "PRESETS", "get_preset", "preset_for_images",
           "load_config", "save_config", "apply_overrides", "resolve"]



@dataclass
class ModelConfig:
    """Architecture of the model (paper §2, Appendix B; defaults: the published CIFAR-10 model).

    ``steps`` has one entry per level of the decoder: an ``int`` is a plain level of that many
    flow steps; a pair ``[a, b]`` is a fine-grained level (Figure 3c): ``a`` steps, factor out
    ``1/factor_out`` of the channels, ``b`` steps, factor out again. ``hidden`` gives the
    coupling-network width per level.
    """

    kind: str = "flowvae"             # flowvae (paper) | z_prior | refined_glow | glow | ugvae | btcvae | multistage
    in_channels: int = 3
    image_size: int = 32
    steps: list = field(default_factory=lambda: [2, [6, 6], [6, 6], 4])
    hidden: list = field(default_factory=lambda: [24, 512, 512, 512])
    factor_out: int = 4               # M of the fine-grained multi-scale architecture
    d_z: int = 64
    encoder_widths: list = field(default_factory=lambda: [48, 96, 96])
    encoder_maps: int = 8             # maps of the encoder's last 1x1 conv (authors: 8 at 32x32, 32 above)
    dequantization: str = "uniform"   # uniform | variational (Flow++ q(u|x), its entropy in the bound)
    dequant_hidden: int = 32          # width of q(u|x)'s networks (variational only)
    dequant_steps: int = 2            # blocks of q(u|x)'s flow (variational only)
    prior_steps: int = 2
    prior_hidden: int = 256
    coupling: str = "affine"          # "affine" or "additive"
    alpha: float = 1.0                # scale bound of Appendix B.2
    conv1x1: str = "lu"               # "lu" or "plain" parametrisation of the 1x1 convolutions

    @property
    def levels(self) -> int:
        return len(self.steps)


@dataclass
class DataConfig:
    """Where the images come from and how they are preprocessed (Appendix C.1)."""

    dataset: str = "cifar10"          # digits | mnist | cifar10 | cifar10-jpeg | folder | imagenet64 | lsun | celebahq
    root: str | None = None           # path to the files (default: see flowvae.data)
    n_bits: int = 8
    flip: bool = False                # random horizontal flip
    crop_pad: int = 0                 # reflection padding for random crops (4 for CIFAR-10)
    image_size: int | None = None     # resize/centre-crop folder images to this size
    train_limit: int | None = None    # use only the first N training images
    test_limit: int | None = None     # use only the first N test images
    on_bad: str = "error"             # folder images that cannot be read: "error" or "skip" (counted)


@dataclass
class TrainConfig:
    """Optimisation (Appendix C.2 and Table 5) and bookkeeping."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    lr_decay: float = 0.999997        # per-step exponential decay after warm-up
    weight_decay: float = 1e-6
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float | None = None    # max global grad norm (None: off)
    init_batch_size: int = 512        # images for the data-dependent ActNorm initialisation
    eval_every: int = 500
    eval_images: int | None = 2000    # test images used by the periodic evaluation (None: all)
    eval_k: int = 1                   # posterior samples in the periodic evaluation
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    max_bad_steps: int = 20           # non-finite steps in a row before the run stops
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None    # torch CPU threads (None: torch's default)
    precision: str = "fp32"           # "fp32" or "bf16" (coupling networks under bfloat16 autocast)
    recompute: bool = False           # decoder activations recomputed by inversion in backward (memory)
    channels_last: bool = False       # channels-last memory format (faster bf16 convolutions on CPUs)
    compile: bool = False             # torch.compile the training forward (a C++ compiler on CPUs; minutes to compile)
    sample_temperatures: list = field(default_factory=lambda: [0.7, 1.0])
    time_limit_s: float | None = None  # stop training after this wall time (checkpoint kept)
    deterministic: bool = False       # torch.use_deterministic_algorithms (bitwise resume on GPU too)


@dataclass
class UGVAEOptions:
    """Settings of the UG-VAE (``model.kind=ugvae``; see :class:`flowvae.models.ugvae.UGVAEConfig`).

    ``model.in_channels``, ``model.image_size`` and ``model.d_z`` (the local latent) are shared
    with the other models. ``group_by``: ``"batch"`` makes each training batch one group (one
    global latent beta); ``"label"`` builds every batch from ``groups_per_batch`` classes, each
    class one group, so beta is shared by images of one class.
    """

    d_beta: int = 50
    K: int = 20
    hidden: list = field(default_factory=lambda: [256])
    conv_channels: list = field(default_factory=lambda: [32, 64, 64])
    encoder: str = "conv"
    decoder: str = "conv"
    likelihood: str = "discretized_logistic"
    d_posterior: str = "x"
    decoder_beta: bool = True
    beta_prior_in_product: bool = True
    group_by: str = "batch"
    groups_per_batch: int = 4


@dataclass
class BTCVAEOptions:
    """Settings of the beta-TCVAE (``model.kind=btcvae``, and stage 1 of ``model.kind=multistage``;
    see :class:`flowvae.models.btcvae.BTCVAEConfig`).

    ``model.in_channels``, ``model.image_size`` and ``model.d_z`` (the number of latent factors) are
    shared with the other models. ``dataset_size`` (N of the minibatch estimators) is filled in with
    the number of training images when training starts.
    """

    conv_channels: list = field(default_factory=lambda: [32, 32, 64, 64])
    hidden: int = 256
    likelihood: str = "bernoulli"      # bernoulli | discretized_logistic
    alpha: float = 1.0                 # weight of the index-code mutual information
    beta: float = 6.0                  # weight of the total correlation
    gamma: float = 1.0                 # weight of the dimension-wise KL
    estimator: str = "mss"             # mss (default) | mws
    dataset_size: int | None = None


@dataclass
class MultiStageOptions:
    """Settings of the multi-stage model (``model.kind=multistage``; see
    :class:`flowvae.models.multistage.MultiStage`).

    ``stage1`` is the run folder of a trained ``btcvae`` run. When training starts its config is
    copied into this run's ``btcvae`` section and ``model.d_z``, and its weights into this model,
    so the finished run folder stands alone. ``recon_input`` also feeds the stage-1 reconstruction
    to every coupling network of the flow.
    """

    stage1: str | None = None
    recon_input: bool = False


@dataclass
class Config:
    """The whole configuration of a run."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ugvae: UGVAEOptions = field(default_factory=UGVAEOptions)
    btcvae: BTCVAEOptions = field(default_factory=BTCVAEOptions)
    multistage: MultiStageOptions = field(default_factory=MultiStageOptions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "ugvae": UGVAEOptions,
             "btcvae": BTCVAEOptions, "multistage": MultiStageOptions}


def _from_dict(d: dict[str, Any]) -> Config:
    if not isinstance(d, dict):
        raise ConfigError("a config file must hold a mapping with sections model, data, train")
    unknown = set(d) - {"name", *_SECTIONS}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown config section {key!r}{_suggest(key, ['name', *_SECTIONS])}")
    cfg = Config(name=str(d.get("name", "custom")))
    for section, cls in _SECTIONS.items():
        for key, value in (d.get(section) or {}).items():
            _set_field(cfg, f"{section}.{key}", value)
    return cfg


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(sorted(options))}"


def _set_field(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        all_keys = [f"{s}.{f.name}" for s, c in _SECTIONS.items() for f in fields(c)]
        raise ConfigError(f"unknown config field {dotted!r}{_suggest(dotted, all_keys)}")
    section, key = parts
    obj = getattr(cfg, section)
    names = {f.name: f for f in fields(obj)}
    if key not in names:
        raise ConfigError(f"unknown config field {dotted!r}{_suggest(dotted, [f'{section}.{n}' for n in names])}")
    default = getattr(type(obj)(), key)
    if isinstance(value, str) and (default is None or isinstance(default, float)):
        try:  # YAML 1.1 reads "2e-3" (no dot) as a string; a number is meant
            value = float(value)
        except ValueError:
            pass
    if value is not None and default is not None and not isinstance(value, type(default)):
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        else:
            raise ConfigError(f"{dotted} must be of type {type(default).__name__}, got {value!r}")
    setattr(obj, key, value)


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply ``section.field=value`` strings (values parsed as YAML) to ``cfg`` in place.

    Raises:
        ConfigError: malformed override, unknown field (with the nearest valid name) or a value
            of the wrong type.
    """
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value, e.g. train.lr=5e-4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse the value of {key}: {e}") from None
        _set_field(cfg, key.strip(), value)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML (``.yaml``/``.yml``) or JSON (any other suffix), atomically."""
    path = Path(path)
    text = json.dumps(cfg.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_config(path: str | Path) -> Config:
    """Read a config written by :func:`save_config` (YAML or JSON).

    Raises:
        ConfigError: unreadable file or unknown fields.
    """
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    return _from_dict(d)


# ----------------------------------------------------------------------------------------------
# Presets. The architecture fields of `cifar10` are the published CIFAR-10 model (issue text and
# the authors' configuration); training fields follow Table 5 of the paper.

def _digits() -> Config:
    return Config(
        name="digits",
        model=ModelConfig(in_channels=1, image_size=8, steps=[0, [2, 2], 2], hidden=[8, 64, 64],
                          d_z=8, encoder_widths=[32], prior_steps=2, prior_hidden=64),
        data=DataConfig(dataset="digits", n_bits=8),
        train=TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup_steps=50, lr_decay=0.9995,
                          init_batch_size=512, eval_every=250, eval_images=None, eval_k=1,
                          checkpoint_every=500, sample_temperatures=[0.7, 0.8, 0.9, 1.0]),
    )


def _mnist() -> Config:
    return Config(
        name="mnist",
        model=ModelConfig(in_channels=1, image_size=28, steps=[0, [4, 4], 4], hidden=[8, 128, 128],
                          d_z=32, encoder_widths=[32, 64], prior_steps=2, prior_hidden=128),
        data=DataConfig(dataset="mnist", n_bits=8),
        train=TrainConfig(steps=20000, batch_size=64, lr=1e-3, warmup_steps=100, lr_decay=0.99995,
                          init_batch_size=512, eval_every=1000, eval_images=2000,
                          checkpoint_every=1000),
    )


def _cifar10_small() -> Config:
    return Config(
        name="cifar10-small",
        model=ModelConfig(in_channels=3, image_size=32, steps=[2, [4, 4], 4], hidden=[16, 128, 128],
                          d_z=64, encoder_widths=[32, 64, 64], prior_steps=2, prior_hidden=128),
        data=DataConfig(dataset="cifar10-jpeg", n_bits=8, flip=True, crop_pad=0),
        train=TrainConfig(steps=20000, batch_size=64, lr=1e-3, warmup_steps=100, lr_decay=0.99995,
                          init_batch_size=512, eval_every=1000, eval_images=2000,
                          checkpoint_every=1000),
    )


def _cifar10() -> Config:
    return Config(
        name="cifar10",
        model=ModelConfig(),
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
        model=ModelConfig(in_channels=3, image_size=size, steps=steps, hidden=hidden, d_z=d_z,
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
        model=ModelConfig(kind="btcvae", in_channels=1, image_size=64, d_z=10),
        data=DataConfig(dataset="dsprites", n_bits=1),
        train=TrainConfig(steps=6000, batch_size=128, lr=1e-3, warmup_steps=0, lr_decay=1.0, weight_decay=0.0,
                          init_batch_size=128, eval_every=1000, eval_images=2000, checkpoint_every=1000,
                          sample_temperatures=[1.0]),
    )


def _dsprites_multistage() -> Config:
    """Stage 2 on dSprites: a conditional refined Glow on the factors of a ``dsprites-btcvae`` run
    (``--set multistage.stage1=RUN``) with the stage-1 reconstruction as extra coupling input, 1-bit
    pixels so its bits/dim compare with stage 1's Bernoulli ones,
    with variational dequantisation: under uniform noise a flow on binary pixels pays a large
    dequantisation gap (0.077 against 0.021 bits/dim after 25 CPU minutes; README)."""
    return Config(
        name="dsprites-multistage",
        model=ModelConfig(kind="multistage", in_channels=1, image_size=64, steps=[0, [2, 2], [2, 2], 2],
                          hidden=[8, 64, 64, 64], d_z=10, dequantization="variational"),
        data=DataConfig(dataset="dsprites", n_bits=1),
        multistage=MultiStageOptions(recon_input=True),
        train=TrainConfig(steps=4000, batch_size=32, lr=1e-3, warmup_steps=100, lr_decay=0.9999, weight_decay=0.0,
                          init_batch_size=256, eval_every=1000, eval_images=1000, checkpoint_every=500,
                          sample_temperatures=[0.0, 0.7, 1.0]),
    )


PRESETS = {"digits": _digits, "mnist": _mnist, "cifar10-small": _cifar10_small, "cifar10": _cifar10,
           "imagenet64": _imagenet64, "lsun128": _lsun128, "celebahq256": _celebahq256,
           "dsprites-btcvae": _dsprites_btcvae, "dsprites-multistage": _dsprites_multistage}


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
    cfg.model.in_channels = 1 if grey else 3
    cfg.model.image_size = size
    if grey and cfg.model.steps and cfg.model.steps[0] != 0:
        cfg.model.steps[0] = 0  # one grey channel cannot be coupled before the first squeeze
    cfg.data.dataset, cfg.data.image_size, cfg.data.n_bits = "folder", size, n_bits
    cfg.data.crop_pad = 0
    if n_bits <= 5 and size >= 128:
        cfg.model.coupling = "additive"
    cfg.name = f"{name}-folder"
    return name, size, cfg


def get_preset(name: str) -> Config:
    """A fresh copy of the preset ``name``.

    Raises:
        ConfigError: unknown name (with the nearest preset).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{_suggest(name, PRESETS)}")
    return PRESETS[name]()


def resolve(preset_or_path: str, overrides: list[str] | None = None) -> Config:
    """A preset name or a YAML/JSON config file, with ``overrides`` applied."""
    p = Path(preset_or_path)
    if preset_or_path in PRESETS:
        cfg = get_preset(preset_or_path)
    elif p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        cfg = load_config(p)
    else:
        raise ConfigError(f"{preset_or_path!r} is neither a preset nor a config file{_suggest(preset_or_path, PRESETS)}")
    return apply_overrides(cfg, overrides)
