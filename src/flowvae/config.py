"""The run configuration: a model kind's config, data and training settings, and overrides.

A :class:`Config` has four parts: ``name``, ``model`` (the config class of ``model.kind``, looked up
in the model registry: :class:`~flowvae.models.FlowVAEConfig`, :class:`~flowvae.models.UGVAEConfig`,
...), ``data`` (:class:`DataConfig`) and ``train`` (:class:`TrainConfig`). It is saved as
``config.yaml`` in every run folder and read back with :func:`load_config`. Any field can be
overridden with ``section.field=value`` (``--set train.lr=5e-4`` on the command line; nested
settings with more dots, ``model.stage1.beta=4``); values are parsed as YAML scalars or lists and
checked against the field's type and range at once. ``model.kind=NAME`` switches the model config
to that kind's class, keeping the fields both kinds share.

Config files of earlier releases (sections ``ugvae``, ``btcvae``, ``multistage``) are read and
converted (:func:`migrate`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .errors import ConfigError
from .models.base import ModelSettings, config_class, config_classes
from .models.flowvae import FlowVAEConfig
from .settings import Settings, setting, suggest

__all__ = ["Config", "DataConfig", "TrainConfig", "ModelConfig", "load_config", "save_config", "apply_overrides",
           "migrate", "suggest", "config_from_dict", "parse_yaml", "set_field", "parse_overrides"]

ModelConfig = FlowVAEConfig  # the name of earlier releases: the flow kinds' model config

MAX_CONFIG_BYTES = 1 << 20  # a config.yaml is a few kB; anything larger is not one


@dataclass
class DataConfig(Settings):
    """Where the images come from and how they are preprocessed (Appendix C.1)."""

    section: ClassVar[str] = "data"

    dataset: str = "cifar10"          # a data source name (flowvae.data), e.g. digits | mnist | cifar10 | folder
    root: str | None = setting(None, local=True, help="path to the files (default: see flowvae.data)")
    n_bits: int = setting(8, ge=1, le=8, help="bits per pixel modelled")
    flip: bool = False                # random horizontal flip
    crop_pad: int = setting(0, ge=0, le=64, help="reflection padding of random crops (4 for CIFAR-10)")
    image_size: int | None = setting(None, ge=2, le=1024, help="resize/centre-crop folder images to this size")
    train_limit: int | None = setting(None, ge=1, help="a seeded subset of N training images")
    test_limit: int | None = setting(None, ge=1, help="a seeded subset of N test images")
    on_bad: Literal["error", "skip"] = "error"  # folder images that cannot be read
    holdout: float | None = setting(0.1, gt=0, le=0.5, help="share of a folder or IDX set without a test split "
                                    "held out as its test split (seed 0, stratified by class); None: read it whole")
    in_memory: bool | None = None     # decode the training set into memory (None: when it fits in 2 GB)
    num_workers: int | None = setting(None, ge=0, le=64, help="DataLoader workers of a streamed training set "
                                      "(None: one per CPU core but one, at most 8)")

    # Fields a resumed run may change: where the files are and how they are read, not which.
    resumable: ClassVar[frozenset[str]] = frozenset({"root", "in_memory", "num_workers"})


@dataclass
class TrainConfig(Settings):
    """Optimisation (Appendix C.2 and Table 5) and bookkeeping."""

    section: ClassVar[str] = "train"

    steps: int = setting(1000, ge=0, help="optimizer steps")
    batch_size: int = setting(64, ge=1, help="global batch size")
    lr: float = setting(1e-3, gt=0, le=10)
    warmup_steps: int = setting(50, ge=0)
    lr_decay: float = setting(0.999997, gt=0, le=1, help="per-step exponential decay after warm-up "
                              "(train.lr_schedule=exponential)")
    lr_schedule: Literal["exponential", "cosine"] = setting(
        "exponential", help="after the warm-up: exponential (the paper's, train.lr_decay per step) or cosine "
        "(half a cosine down to 0 at train.steps, or with train.time_limit_s at the step the limit is estimated to "
        "allow, re-estimated at each evaluation; a departure from the paper)")
    weight_decay: float = setting(1e-6, ge=0, le=10)
    betas: list[float] = setting(factory=lambda: [0.9, 0.999], ge=0, le=0.999999)
    eps: float = setting(1e-8, gt=0, le=1)
    grad_clip: float | None = setting(None, gt=0, help="max global grad norm (None: off)")
    init_batch_size: int = setting(512, ge=1, help="images for the data-dependent ActNorm initialisation")
    eval_every: int = setting(500, ge=1)
    eval_every_s: float | None = setting(None, gt=0, help="also evaluate (and checkpoint) when this much wall time "
                                         "has passed since the last evaluation began (None: train.time_limit_s / 10 "
                                         "with a time limit, else off)")
    eval_share: float = setting(0.1, gt=0, le=1, help="time-based evaluations (train.eval_every_s) take at most this "
                                "share of the wall time: the next waits until the training since the last one "
                                "ended took (1 - share) / share times as long as it did (0.5: as long)")
    eval_images: int | None = setting(2000, ge=1, help="test images of the periodic evaluation (None: all)")
    eval_k: int = setting(1, ge=1, le=10000, help="posterior samples in the periodic evaluation")
    probe_images: int = setting(0, ge=0, le=1_000_000, help="at every evaluation, linear probes of the model's "
                                "representations trained on this many training images and tested on the "
                                "evaluation's test images, logged as probe_<name> (0: off; needs labels)")
    switch_pairs: int | None = setting(None, ge=0, le=100_000, help="at every evaluation, the label-free switch "
                                       "score of flowvae switch on this many pairs of the evaluation's test images, "
                                       "logged as switch_low_follows_z, switch_colour_follows_z and "
                                       "switch_high_follows_v (None: 64 for kinds with a global and a local code, "
                                       "else off; 0: off)")
    checkpoint_every: int = setting(500, ge=1)
    checkpoint_every_s: float | None = setting(None, gt=0, help="also checkpoint when this much wall time "
                                               "has passed since the last checkpoint (None: off)")
    keep_checkpoints: int = setting(3, ge=1)
    max_bad_steps: int = setting(20, ge=1, help="non-finite steps in a row before the run stops")
    check_updates: bool = True        # weights checked finite after each update, a bad one rolled back
    seed: int = setting(0, ge=0)
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    num_threads: int | None = setting(None, ge=1, le=4096, help="torch CPU threads (None: torch's default)")
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "fp32", help="bf16: the coupling networks train under bfloat16 autocast (evaluation stays float32); "
        "auto: bf16 where the device has bfloat16 in hardware and the kind supports it, else fp32, decided "
        "when a run starts and written to its config.yaml")
    recompute: bool = False           # decoder activations recomputed by inversion in backward (memory)
    channels_last: bool | None = setting(None, help="channels-last memory format (faster bf16 convolutions "
                                         "on CPUs; None: on when the run trains in bf16)")
    compile: bool = False             # torch.compile the training forward (a C++ compiler on CPUs)
    sample_temperatures: list[float] = setting(factory=lambda: [0.7, 1.0], ge=0, le=100)
    time_limit_s: float | None = setting(None, gt=0, help="stop when the run's wall time (since `train` started, "
                                         "set-up included, summed over resumed sessions) and a final evaluation "
                                         "would pass this many seconds (checkpoint kept)")
    deterministic: bool = False       # torch.use_deterministic_algorithms (bitwise resume on GPU too)
    loggers: list[Literal["tensorboard", "wandb"]] | None = setting(
        None, help="experiment loggers fed during training (flowvae.training.loggers); None: tensorboard "
        "when installed, []: none")
    kl_warmup_steps: int = setting(0, ge=0, help="KL warm-up: the KL term's weight rises linearly from "
                                   "train.kl_warmup_start to 1 over this many steps (0: off, the paper's "
                                   "objective; a departure from the paper)")
    kl_warmup_start: float = setting(0.0, ge=0, le=1, help="the KL weight of the first step of the KL warm-up")
    ema_decay: float | None = setting(None, gt=0, le=0.999999, help="Polyak averaging: evaluation, samples and "
                                      "model.safetensors use an exponential moving average of the weights with "
                                      "this decay (None: the last update's weights, the paper's)")

    # Fields a resumed run may change: they decide how long, where and how observably the run goes,
    # not which numbers it computes. Any other change would silently break bitwise continuation
    # (the KL warm-up too: it changes the objective of the steps still to come).
    resumable: ClassVar[frozenset[str]] = frozenset({
        "steps", "eval_every", "eval_every_s", "eval_share", "eval_images", "eval_k", "probe_images", "switch_pairs", "checkpoint_every",
        "checkpoint_every_s",
        "keep_checkpoints", "max_bad_steps", "device", "num_threads", "compile", "sample_temperatures",
        "time_limit_s", "loggers"})

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers [beta1, beta2], got {self.betas!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {dev!r}")
        if self.kl_warmup_start and not self.kl_warmup_steps:
            raise ConfigError(f"train.kl_warmup_start={self.kl_warmup_start} has no effect without "
                              f"train.kl_warmup_steps > 0; set both, or leave the start at 0")


@dataclass
class Config:
    """The whole configuration of a run: ``name``, ``model`` (a kind's config), ``data``, ``train``."""

    name: str = "custom"
    model: ModelSettings = field(default_factory=FlowVAEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as written to ``config.yaml``."""
        return {"name": self.name, "model": self.model.to_dict(), "data": self.data.to_dict(),
                "train": self.train.to_dict()}


_SECTIONS: dict[str, type[Settings]] = {"data": DataConfig, "train": TrainConfig}

class _Renamed(Mapping[str, Mapping[str, str]]):
    """``{kind: {old field: new field}}`` for the kinds whose fields earlier releases spelled
    differently, asked of the kinds' config classes (:attr:`ModelSettings.renamed`) when read, so
    that a kind registered later is included. A legacy section of that name (``ugvae.K=5``) is the
    kind's fields of earlier releases."""

    def _table(self) -> dict[str, Mapping[str, str]]:
        return {kind: cls.renamed for kind, cls in config_classes().items() if cls.renamed}

    def __getitem__(self, kind: str) -> Mapping[str, str]:
        return self._table()[kind]

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


# Fields that earlier releases spelled differently, so that a message can name the new spelling.
_MOVED = _Renamed()


# ----------------------------------------------------------------------------------------------
# reading and writing

def migrate(d: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping of an earlier release (the kinds' fields in top-level sections such as
    ``ugvae``, ``btcvae``, ``multistage``, and ``model.d_z`` meaning the local latent or the factors)
    in the current layout; current mappings are returned unchanged. Each kind converts its own
    section (:meth:`ModelSettings.migrate <flowvae.models.base.ModelSettings.migrate>`, with the
    sections its config class names in ``legacy_sections``)."""
    classes = config_classes()
    legacy = list(dict.fromkeys(s for cls in classes.values() for s in cls.legacy_sections))
    old = [s for s in legacy if s in d]
    if not old:
        return dict(d)
    out = {k: v for k, v in d.items() if k not in old}
    model = dict(d.get("model") or {})
    kind = model.get("kind", "flowvae")
    sections = {s: dict(d.get(s) or {}) for s in legacy}
    # An unknown or malformed kind is left for config_from_dict to refuse, with its own message.
    cls = classes.get(kind) if isinstance(kind, str) else None
    out["model"] = cls.migrate(model, sections) if cls is not None else model
    return out


def config_from_dict(d: Any) -> Config:
    """A :class:`Config` from its mapping (``config.yaml``'s content, any release).

    Raises:
        ConfigError: not a mapping, an unknown section or field (with the nearest name), a bad value.
    """
    if not isinstance(d, Mapping):
        raise ConfigError("a config file must hold a mapping with sections model, data, train")
    d = migrate(d)
    unknown = set(d) - {"name", "model", *_SECTIONS}
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise ConfigError(f"unknown config section {key!r}{suggest(key, ['name', 'model', *_SECTIONS])}")
    name = d.get("name", "custom")
    if not isinstance(name, (str, int, float)):
        raise ConfigError(f"name must be a string, got {name!r}")
    model = d.get("model") or {}
    if not isinstance(model, Mapping):
        raise ConfigError(f"section 'model' must be a mapping of fields, got {type(model).__name__}")
    kind = model.get("kind", "flowvae")
    if not isinstance(kind, str):
        raise ConfigError(f"model.kind must be a string, got {kind!r}")
    return Config(name=str(name), model=_model_from_dict(kind, model),
                  data=DataConfig.from_dict(d.get("data") or {}), train=TrainConfig.from_dict(d.get("train") or {}))


def _model_from_dict(kind: str, model: Mapping[str, Any]) -> ModelSettings:
    cls = config_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in model:
        if key not in names:
            raise ConfigError(_unknown_model_field(kind, str(key), names))
    return cls.from_dict(model)


def _unknown_model_field(kind: str, key: str, names: Iterable[str]) -> str:
    moved = config_class(kind).renamed.get(key)
    hint = f"; it is model.{moved} now" if moved else suggest(f"model.{key}", [f"model.{n}" for n in names])
    return f"unknown config field model.{key} for a {kind!r} model{hint}"


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML (``.yaml``/``.yml``) or JSON (any other suffix), atomically."""
    path = Path(path)
    d = cfg.to_dict()
    text = json.dumps(d, indent=2) if path.suffix == ".json" else yaml.safe_dump(d, sort_keys=False)
    from .safe_io import atomic_write as atomic_write_bytes

    atomic_write_bytes(path, text.encode())


# A config nests 4 levels (model.stage1.conv_channels of the multi-stage model); anything far
# deeper is refused while it is parsed, before PyYAML's recursive composer runs out of stack.
MAX_YAML_DEPTH = 32


class _Refused(yaml.YAMLError):
    """What :class:`_ConfigLoader` refuses, with a one-line message."""


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that also refuses a mapping key given twice (PyYAML keeps the last one
    silently) and nesting deeper than :data:`MAX_YAML_DEPTH` (a RecursionError in PyYAML)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"it nests lists or mappings more than {MAX_YAML_DEPTH} levels deep (line "
                               f"{mark.line + 1}), where a flowvae config needs 4")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # merge keys (<<) may repeat what they merge; other keys are checked
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _Refused(f"the key {key!r} is given twice (lines {seen[key]} and {line}); only one "
                                   f"would count, so delete the other")
                seen[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing a mapping key given twice and nesting deeper than
    :data:`MAX_YAML_DEPTH` (what config files and ``--set`` values are read with).

    Raises:
        yaml.YAMLError: not YAML, a duplicate key (named, with both lines) or too deep a nesting.
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain values only, no Python objects
    except RecursionError:  # belt and braces: the depth limit above comes first
        raise _Refused(f"it nests too deeply (more than {MAX_YAML_DEPTH} levels)") from None


def _yaml_error(e: yaml.YAMLError) -> str:
    """PyYAML's message (several lines: context, problem, position) on one line."""
    return " ".join(str(e).split())


def load_config(path: str | Path) -> Config:
    """Read a config written by :func:`save_config` (YAML or JSON, any release).

    Raises:
        ConfigError: unreadable or oversized file, not UTF-8, not YAML, a key given twice in one
            mapping, nesting deeper than :data:`MAX_YAML_DEPTH`, unknown fields or bad values.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} kB; it is not a flowvae config")
        from . import safe_io
        from .errors import CheckpointError

        try:
            # Regular files only (no FIFO or device); run folders refuse a symlinked config.yaml in load_run.
            raw = safe_io.read_bytes(path, MAX_CONFIG_BYTES, follow_symlinks=True)
        except CheckpointError as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        d = parse_yaml(raw.decode("utf-8"))  # YAML is a superset of JSON
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config {path}: it is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read config {path}: {_yaml_error(e)}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    return config_from_dict(d)


# ----------------------------------------------------------------------------------------------
# overrides

def _switch_kind(model: dict[str, Any], kind: str) -> dict[str, Any]:
    """The ``model`` mapping for ``kind``, carrying the fields the old kind's config shares with the
    new one through a common base class (the image shape always; the Glow's fields between flow kinds)."""
    old, new = config_class(str(model.get("kind", "flowvae"))), config_class(kind)
    common = next(c for c in old.__mro__ if isinstance(c, type) and issubclass(new, c))
    shared = {f.name for f in dataclasses.fields(common)} - {"kind"}
    return {"kind": kind, **{k: v for k, v in model.items() if k in shared}}


def _set_in(d: dict[str, Any], cls: type[Settings], path: list[str], value: Any, dotted: str, kind: str | None) -> None:
    key = path[0]
    flds = {f.name: f for f in dataclasses.fields(cls)}
    if key not in flds:
        if kind is not None and len(path) == 1:
            raise ConfigError(_unknown_model_field(kind, key, flds))
        section = dotted[: dotted.rindex(key) - 1]
        raise ConfigError(f"unknown config field {dotted!r}{suggest(dotted, [f'{section}.{n}' for n in flds])}")
    if len(path) == 1:
        d[key] = value
        return
    inner = typing.get_type_hints(cls)[key]
    if not (isinstance(inner, type) and issubclass(inner, Settings)):
        raise ConfigError(f"{dotted}: {dotted[: dotted.rindex(path[1]) - 1]} is a value, not a section")
    sub = d.get(key)
    d[key] = sub = dict(sub) if isinstance(sub, Mapping) else {}
    _set_in(sub, inner, path[1:], value, dotted, None)


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if parts == ["name"]:
        d["name"] = str(value)
        return
    if parts[0] in _MOVED and len(parts) == 2:
        new = _MOVED[parts[0]].get(parts[1], parts[1])
        raise ConfigError(f"config section {parts[0]!r} was merged into 'model' (with model.kind={parts[0]}): "
                          f"use model.{new}")
    kind = str(d["model"].get("kind", "flowvae"))
    if len(parts) < 2 or parts[0] not in ("model", *_SECTIONS):
        all_keys = ["name", *(f"model.{f.name}" for f in dataclasses.fields(config_class(kind))),
                    *(f"{s}.{f.name}" for s, c in _SECTIONS.items() for f in dataclasses.fields(c))]
        raise ConfigError(f"unknown config field {dotted!r}{suggest(dotted, all_keys)}")
    if parts == ["model", "kind"]:
        if not isinstance(value, str):
            raise ConfigError(f"model.kind must be a string, got {value!r}")
        d["model"] = _switch_kind(d["model"], value)
        return
    cls = config_class(kind) if parts[0] == "model" else _SECTIONS[parts[0]]
    _set_in(d[parts[0]], cls, parts[1:], value, dotted, kind if parts[0] == "model" else None)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. train.lr=5e-4")
    key, raw = item.split("=", 1)
    try:
        value = parse_yaml(raw) if raw != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the value of {key}: {_yaml_error(e)}") from None
    return key.strip(), value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``section.field=value`` strings as ``(dotted key, value)`` pairs, the values parsed as
    :func:`apply_overrides` parses them (YAML scalars or lists; an empty value is ``None``); not yet
    checked against the fields.

    Raises:
        ConfigError: an item without ``=``, or a value that does not parse.
    """
    return [_parse_override(item) for item in items]


def set_field(cfg: Config, dotted: str, value: Any) -> None:
    """Set the field ``section.field[.field...]`` of ``cfg`` to ``value`` (checked), in place.

    Raises:
        ConfigError: an unknown field (with the nearest name, or its new name) or a bad value.
    """
    _apply(cfg, [(dotted, value)])


def _apply(cfg: Config, items: list[tuple[str, Any]]) -> None:
    # All values are set first and checked together, so fields that must agree (model.steps and
    # model.hidden) can be changed in one go.
    d = cfg.to_dict()
    for dotted, value in items:
        _set_dotted(d, dotted, value)
    new = config_from_dict(d)
    cfg.name, cfg.model, cfg.data, cfg.train = new.name, new.model, new.data, new.train


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply ``section.field=value`` strings (values parsed as YAML) to ``cfg`` in place; the result
    is checked as a whole.

    Raises:
        ConfigError: malformed override, unknown field (with the nearest valid name) or a value
            of the wrong type or out of range.
    """
    _apply(cfg, [_parse_override(item) for item in overrides or []])
    return cfg


# Names that moved to flowvae.presets (which builds Config objects, so it sits above this module):
# deprecated aliases for one release, resolved on first use without importing presets here.
_MOVED_TO_PRESETS = ("PRESETS", "get_preset", "preset_for_images", "resolve")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_PRESETS:
        import importlib
        import warnings

        warnings.warn(f"flowvae.config.{name} moved to flowvae.presets.{name}; import it from there (this alias "
                      f"goes in the next release)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("flowvae.presets"), name)
    raise AttributeError(f"module 'flowvae.config' has no attribute {name!r}")
