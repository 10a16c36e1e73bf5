"""The model contract: what every model kind implements, what it declares, and the registry.

Every kind is a :class:`GenerativeModel` with a config class (a :class:`ModelSettings`, the
``model:`` section of ``config.yaml``, selected by its ``kind`` field). Commands and the trainer
ask a model for its :class:`Capabilities`, never for its class: a command that needs a capability
the model lacks refuses in one line (:meth:`GenerativeModel.require`).

Conventions shared by every kind:

* Images enter and leave as ``uint8 [B, C, H, W]`` tensors with values 0..255.
* ``loss(x, generator, shard, **batch)`` returns ``(loss, stats)``; ``stats`` holds detached
  scalars, at least ``bpd`` (the training objective in bits/dim) and ``kl`` (nats per image).
* ``bits_per_dim(x, k, generator)`` returns per-image ``[B]`` tensors ``elbo_bpd`` (negative ELBO,
  bits/dim), ``iw_bpd`` (negative importance-weighted bound with ``k`` samples) and ``kl`` (nats).
* ``sample(n, temperature, *, global_temperature, generator)`` returns ``n`` uint8 images; the
  temperature scales the standard deviation of the local (or only) latent, ``global_temperature``
  that of the global code where the kind has one. ``draw`` (same arguments) returns them as
  :class:`Samples`, with the continuous samples behind them where the kind has any (the flows):
  one implementation and one order of random draws for every grid and statistic.
* ``representations(x)`` returns named per-image features ``{name: [B, d]}`` for linear probes.

What a kind knows about itself lives on its classes: the model class declares its kinds with a
description each (:attr:`GenerativeModel.kinds`), the meanings of its posterior latents
(:attr:`GenerativeModel.latent_meanings`) and what it can do (:attr:`GenerativeModel.capabilities`,
from which :attr:`GenerativeModel.card_tags` follow); the config class its departures from the
paper (:meth:`ModelSettings.departures`) and how config files of earlier releases spelled it
(:attr:`ModelSettings.renamed`, :meth:`ModelSettings.migrate`).

Adding a kind: one module with its config and model class, decorated with :func:`register`, and
one import line in :mod:`flowvae.models` (``docs/adding-a-model.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..settings import Settings, setting, suggest

__all__ = ["Capabilities", "GenerativeModel", "ModelSettings", "OtherRuns", "Samples", "register", "MODEL_KINDS",
           "config_class", "config_classes", "model_class", "create_model", "legacy_shape", "check_images",
           "check_codes", "check_count", "check_temperature", "check_memory", "check_posterior_samples",
           "free_memory", "MAX_MODEL_ELEMENTS", "MAX_POSTERIOR_SAMPLES"]


@dataclass(frozen=True)
class Capabilities:
    """What a model can do; commands and the trainer decide by these flags alone.

    Attributes:
        global_local: a per-image global code z and local code v with ``encode(x) -> (z, v)`` and
            ``decode(z, v)`` exact (switch, 2-D interpolation; paper §3.2-3.3).
        exact_codes: ``encode``/``decode`` are exact inverses on uint8 images (round-trip checks).
        vector_latent: a per-image vector latent with a posterior mean (``latent_mean``;
            traversals, disentanglement metrics, and edits along a direction of it, ``manipulate``).
        reconstruction: reconstructs an image from its code alone (``reconstruction_quality``).
        code_prior: the code ``"z"`` of :meth:`GenerativeModel.posterior_moments` has a prior of its
            own, ``code_log_prior(z)`` (the KL of z that ``flowvae probe`` reports; collapse checks).
        groups: the objective takes group labels (``loss(..., groups=...)``), with batches drawn by
            class when ``label_groups`` says so.
        bf16: coupling networks can run under bfloat16 autocast (``train.precision=bf16``).
        recompute: activations can be recomputed by inversion (``train.recompute``).
        channels_last: the model runs in channels-last memory format (``train.channels_last``).
    """

    global_local: bool = False
    exact_codes: bool = False
    vector_latent: bool = False
    reconstruction: bool = False
    code_prior: bool = False
    groups: bool = False
    bf16: bool = False
    recompute: bool = False
    channels_last: bool = True

    def names(self) -> list[str]:
        """The names of the capabilities that are present."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]


@dataclass
class ModelSettings(Settings):
    """Base of every kind's config: the ``model:`` section. ``kind`` selects the class (registry)."""

    section: ClassVar[str] = "model"

    kind: str = "flowvae"
    in_channels: int = setting(3, ge=1, le=4, help="image channels (1 grey, 3 colour)")
    image_size: int = setting(32, ge=2, le=1024, help="side of the square images, pixels")

    def departures(self) -> list[str]:
        """The departures from the paper's model or objective that this config turns on, one phrase
        each (logged by training, recorded in ``environment.json``, shown by the report); the kind
        knows its own. The default: none."""
        return []

    def for_training(self, n_train: int, runs: OtherRuns | None = None) -> ModelSettings:
        """This config completed for a fresh training run on ``n_train`` images (e.g. the
        beta-TCVAE's dataset size N; the multi-stage model's stage-1 config, read through ``runs``
        from the run folder it names); the default changes nothing."""
        return self

    #: fields that config files of earlier releases spelled differently, ``{old name: new name}``
    #: (the new one dotted below ``model.``, e.g. ``"stage1.n_factors"``): a config naming the old
    #: field is refused with the new spelling (:func:`flowvae.config.config_from_dict`, ``--set``)
    renamed: ClassVar[Mapping[str, str]] = {}

    #: top-level sections in which config files of earlier releases kept this kind's fields (since
    #: merged into ``model:``); :func:`flowvae.config.migrate` hands them to :meth:`migrate`
    legacy_sections: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def migrate(cls, model: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The ``model:`` mapping of this kind in the current layout, from a config file of an earlier
        release: its ``model`` section (which then held the flow's fields, ``d_z`` among them) and
        ``sections``, each legacy section of every kind (:attr:`legacy_sections`; empty where the
        file lacks it). The default: ``model`` unchanged.

        Example: the UG-VAE's is ``{"kind": "ugvae", "in_channels": ..., "image_size": ...,
        "d_local": model["d_z"], **sections["ugvae"] with renamed keys}``.
        """
        return dict(model)


def legacy_shape(model: Mapping[str, Any]) -> dict[str, Any]:
    """The image shape fields (``in_channels``, ``image_size``) of a legacy ``model`` section, where
    present: the fields every kind's :meth:`ModelSettings.migrate` carries over."""
    return {k: model[k] for k in ("in_channels", "image_size") if k in model}


@dataclass(frozen=True)
class Samples:
    """Images a model drew or decoded, and the continuous values behind them where it has any.

    Attributes:
        images: uint8 ``[n, C, H, W]`` (``[P, 4, C, H, W]`` for a switch), what ``sample`` returns.
        continuous: the flow kinds: the inverse ``x = f^-1(v; z)`` before quantisation, float of
            the images' shape in the pixel range ``[-0.5, 0.5)`` (values outside it were clipped to
            the end bins, non-finite ones became bin 0); ``None`` for kinds that draw uint8 pixels
            directly (nothing to clip).
        saturated: the flow kinds: bool of the images' leading shape (``[n]``, ``[P, 4]``) on the
            CPU, ``True`` where some affine inverse of that sample, the code's prior included,
            reached :data:`~flowvae.flows.coupling.INVERSE_LIMIT`; ``None`` otherwise.
    """

    images: Tensor
    continuous: Tensor | None = None
    saturated: Tensor | None = None


class OtherRuns(typing.Protocol):
    """How a kind reads another run folder while a fresh run is prepared (stage 1 of the multi-stage
    model). The training pipeline passes :class:`flowvae.runs.RunReader`; the model layer itself never
    opens a run folder (it sits below the run folder's owner)."""

    def is_run(self, run: str) -> bool:
        """Whether ``run`` is a run folder (holds a ``config.yaml``)."""

    def model_config(self, run: str) -> ModelSettings:
        """The model section of ``run``'s config."""

    def model(self, run: str) -> GenerativeModel:
        """``run``'s trained model, in eval mode on the CPU."""


MODEL_KINDS: dict[str, type[GenerativeModel]] = {}


def register(cls: type[GenerativeModel]) -> type[GenerativeModel]:
    """Class decorator: make ``cls`` the model of every kind it declares (:attr:`GenerativeModel.kinds`),
    or, when it declares none, of every kind its ``config_class.kind`` admits.

    Raises:
        RuntimeError: a kind that the config class does not admit, or one registered to another class.
    """
    hints = typing.get_type_hints(cls.config_class)
    admitted = typing.get_args(hints["kind"]) or (cls.config_class.kind,)
    for kind in tuple(cls.kinds) or admitted:
        if kind not in admitted:
            raise RuntimeError(f"{cls.__name__} declares the kind {kind!r}, which its config class "
                               f"{cls.config_class.__name__} does not admit (its kind field: {', '.join(admitted)})")
        if kind in MODEL_KINDS and MODEL_KINDS[kind] is not cls:
            raise RuntimeError(f"model kind {kind!r} registered twice")
        MODEL_KINDS[kind] = cls
    return cls


def model_class(kind: str) -> type[GenerativeModel]:
    """The model class of ``kind``.

    Raises:
        ConfigError: an unknown kind (with the list of kinds).
    """
    # Importing this module ran flowvae/models/__init__.py first, which imports (registers) every kind.
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model.kind {kind!r}{suggest(str(kind), MODEL_KINDS)}")
    return MODEL_KINDS[kind]


def config_class(kind: str) -> type[ModelSettings]:
    """The config class of ``kind`` (see :func:`model_class`)."""
    return model_class(kind).config_class


def config_classes() -> dict[str, type[ModelSettings]]:
    """The config class of every registered kind, ``{kind: class}`` (several kinds may share one)."""
    return {kind: cls.config_class for kind, cls in MODEL_KINDS.items()}


def create_model(cfg: Any, n_bits: int | None = None) -> GenerativeModel:
    """The model of a run config (:class:`~flowvae.config.Config`, bits from ``cfg.data.n_bits``) or
    of a model config (``n_bits`` default 8).

    Raises:
        ConfigError: an architecture that cannot be built, with the reason.
    """
    if isinstance(cfg, ModelSettings):
        mcfg, bits = cfg, 8 if n_bits is None else n_bits
    elif isinstance(getattr(cfg, "model", None), ModelSettings):
        mcfg, bits = cfg.model, cfg.data.n_bits if n_bits is None else n_bits
    else:
        raise ConfigError(f"create_model needs a flowvae Config or a model config, got {type(cfg).__name__}")
    cls = model_class(mcfg.kind)
    with _ElementBudget(MAX_MODEL_ELEMENTS, mcfg.kind):
        return cls(mcfg, bits)


# The most tensor elements a model's construction may allocate (weights, buffers and the temporaries
# of their initialisation): 2**29, 2 GiB in float32, five times the largest preset (imagenet64, about
# 0.11e9 parameters). Every field of a model config has its own range, but together they still admit
# architectures of tens of billions of weights, which would exhaust memory or take minutes to
# initialise; such a config is refused once this many elements are allocated (a few seconds at most).
MAX_MODEL_ELEMENTS = 2**29

_SIZED_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.randn, torch.rand, torch.full})


def _requested_elements(func: Any, args: tuple, kwargs: dict) -> int | None:
    """Elements a factory call ``torch.empty(*size)`` / ``torch.full(size, v)`` / ... asks for, or
    ``None`` when the call is not one whose size can be read before it runs."""
    if func not in _SIZED_FACTORIES:
        return None
    size: Any = kwargs.get("size")
    if size is None:
        if func is torch.full:
            size = args[0] if args else None
        elif len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
            size = args[0]
        else:
            size = args
    try:
        return math.prod(int(s) for s in size)
    except (TypeError, ValueError):
        return None


class _ElementBudget(torch.overrides.TorchFunctionMode):
    """Counts the elements of the tensors created by factory functions while a model is built and
    raises :class:`~flowvae.errors.ConfigError` before the call that would pass ``limit``, so an
    oversized architecture stops before its largest tensors are allocated. (A dry run on the meta
    device would refuse without allocating anything, but costs over a second of imports per process
    and doubles the construction time of every model.)"""

    def __init__(self, limit: int, kind: str):
        super().__init__()
        self.limit, self.kind, self.total = limit, kind, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        n = _requested_elements(func, args, kwargs)
        if n is not None:
            self.total += n
            if self.total > self.limit:
                raise ConfigError(f"the {self.kind!r} model of this config needs more than {self.limit:,} weights "
                                  f"(at least {self.total:,}; the largest preset has about 0.11e9): lower model.hidden, "
                                  f"model.steps or the other widths of the model section")
        return func(*args, **kwargs)


def _check_device(x: Tensor, name: str) -> None:
    """Refuse a tensor whose values flowvae cannot compute with: a ``meta`` tensor (no values at all)
    or one on a device other than the CPU and CUDA (which torch would refuse deep inside a model)."""
    if x.device.type == "meta":
        raise DataError(f"{name} are a 'meta' tensor, which has a shape but no values; pass them on the CPU or "
                        f"a CUDA device")
    if x.device.type not in ("cpu", "cuda"):
        raise DataError(f"{name} are on the {x.device.type!r} device; flowvae computes on the CPU or CUDA only: "
                        f"move them with .to('cpu')")


def _hub() -> Any:
    """:mod:`flowvae.hub`, bound when a model's ``save_pretrained`` / ``push_to_hub`` is called: the
    one call from the model layer up to a higher one, kept for the methods users know from diffusers
    and transformers. Bound at call time, so that the static import graph stays layered (the hub
    imports models, never the reverse); see docs/architecture.md."""
    import importlib

    return importlib.import_module("flowvae.hub")


def check_images(x: Any, channels: int, size: int) -> None:
    """Raise :class:`~flowvae.errors.DataError` unless ``x`` is a non-empty uint8 ``[B, channels, size, size]``
    tensor with values (on the CPU or a CUDA device: not ``meta``)."""
    want = (channels, size, size)
    if not isinstance(x, Tensor):
        raise DataError(f"images must be a torch.Tensor, got {type(x).__name__}; convert with torch.from_numpy")
    _check_device(x, "images")
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise DataError(f"images of shape {list(x.shape)} do not fit this model, which takes "
                        f"[B, {want[0]}, {want[1]}, {want[2]}]; check model.in_channels / model.image_size")
    if x.dtype != torch.uint8:
        raise DataError(f"images must be uint8 with values 0..255, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise DataError("got an empty batch of images")


def check_codes(z: Any, dim: int, name: str = "latent codes", batch: int | None = None) -> Tensor:
    """``z`` if it is a finite floating-point tensor ``[B, dim]`` with ``B >= 1`` (and ``B == batch``
    when given); else :class:`~flowvae.errors.DataError` naming ``name``."""
    if not isinstance(z, Tensor):
        raise DataError(f"{name} must be a torch.Tensor [B, {dim}], got {type(z).__name__}; convert with torch.from_numpy")
    _check_device(z, name)
    if z.dim() != 2 or z.shape[1] != dim or z.shape[0] == 0:
        raise DataError(f"{name} must be a tensor [B, {dim}] with B >= 1, got shape {list(z.shape)}")
    if not z.is_floating_point():
        raise DataError(f"{name} must be floating point, got dtype {z.dtype}")
    if batch is not None and z.shape[0] != batch:
        raise DataError(f"{name} have {z.shape[0]} rows for a batch of {batch}; pass one row per image")
    if not torch.isfinite(z).all():
        raise DataError(f"{name} contain NaN or infinite values")
    return z


def check_count(name: str, n: Any) -> int:
    """``n`` if it is a positive integer; else :class:`~flowvae.errors.ConfigError`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{name} must be a positive integer, got {n!r}")
    return n


def check_temperature(t: Any, name: str = "temperature") -> float:
    """``t`` if it is a finite number >= 0; else :class:`~flowvae.errors.ConfigError`."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {t!r}")
    return float(t)


MAX_POSTERIOR_SAMPLES = 10_000
"""The most posterior samples per image (``k``) of a bits/dim estimate, as ``train.eval_k`` allows:
the importance-weighted bound barely moves past a few thousand, and every sample costs a pass."""

# What a call that makes or scores images holds at once, per pixel value, at the least: the uint8
# images and four float32 tensors of their size (the noise, the decoder's activations, ...).
_BYTES_PER_VALUE = 1 + 4 * 4
# Calls whose images take less than this are never checked against the free memory (reading it
# costs a file read, and they fit anywhere).
_UNCHECKED_BYTES = 256 << 20


def _cpu_free_bytes() -> int | None:
    """Bytes the process may still allocate on the CPU: the system's available memory, and at most
    what the address-space limit (``ulimit -v``) leaves; ``None`` when neither can be read."""
    free: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, ValueError, StopIteration, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            left = max(0, limit - used)
            free = left if free is None else min(free, left)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return free


def free_memory(device: torch.device | str) -> int | None:
    """Bytes that can still be allocated on ``device``: on the CPU the available memory (within the
    process's address-space limit), on CUDA the free memory plus what torch holds cached; ``None``
    where it cannot be told (other devices)."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_free_bytes()
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return None


def check_memory(what: str, n_images: int, shape: tuple[int, int, int], device: torch.device | str,
                 advice: str) -> None:
    """Refuse a call that would hold ``n_images`` images of ``shape`` ``(C, H, W)`` on ``device``
    when even the least it needs (the uint8 images and four float32 tensors of their size) is more
    than the memory free there, before it allocates anything.

    Args:
        what: the call, for the message (``"sample(n=1,000,000,000,000)"``).
        n_images: images the call makes or scores at once.
        shape: ``(C, H, W)`` of one image.
        device: where the call allocates.
        advice: what to do instead, ending the message.

    Raises:
        ConfigError: one line with the bytes needed and free.
    """
    need = n_images * math.prod(shape) * _BYTES_PER_VALUE
    if need < _UNCHECKED_BYTES:
        return
    free = free_memory(device)
    if free is None or need <= free:
        return
    c, h, w = shape
    room = free // (math.prod(shape) * _BYTES_PER_VALUE)
    raise ConfigError(f"{what} needs at least {need / 2**30:,.1f} GiB for {n_images:,} images of {c}x{h}x{w} "
                      f"(the uint8 images and the float32 tensors behind them), more than the "
                      f"{free / 2**30:,.1f} GiB free on {torch.device(device).type} (room for {room:,} such "
                      f"images at most); {advice}")


def _count_arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> int | None:
    """The ``index``-th argument of a call (or keyword ``name``) if it is a positive integer, else ``None``
    (a bad value is the method's own to refuse, with its own message)."""
    v = args[index] if len(args) > index else kwargs.get(name, default)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def _bounded_sampling(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a kind's ``sample(n, ...)`` or ``sample_group(n, ...)``) refusing an ``n`` whose images
    cannot fit in memory (:func:`check_memory`) before it draws anything."""
    @functools.wraps(fn)
    def bounded(self: GenerativeModel, *args: Any, **kwargs: Any) -> Any:
        n = _count_arg(args, kwargs, 0, "n")
        if n is not None:
            cfg = self.cfg
            check_memory(f"{fn.__name__}(n={n:,})", n, (cfg.in_channels, cfg.image_size, cfg.image_size),
                         self.device, "draw them in several calls")
        return fn(self, *args, **kwargs)

    bounded._flowvae_bounded = True  # type: ignore[attr-defined]
    return bounded


def _bounded_scoring(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a kind's ``bits_per_dim(x, k, ...)``) refusing ``k`` above :data:`MAX_POSTERIOR_SAMPLES`,
    and images times ``k`` that cannot fit in memory, before it computes anything."""
    @functools.wraps(fn)
    def bounded(self: GenerativeModel, *args: Any, **kwargs: Any) -> Any:
        k = _count_arg(args, kwargs, 1, "k", 1)
        if k is not None:
            check_posterior_samples(k)
            x = args[0] if args else kwargs.get("x")
            if isinstance(x, Tensor) and x.dim() == 4:
                cfg = self.cfg
                check_memory(f"{fn.__name__} with k={k:,} on {len(x):,} images", len(x) * k,
                             (cfg.in_channels, cfg.image_size, cfg.image_size), self.device,
                             "pass fewer images at a time, or a smaller k")
        return fn(self, *args, **kwargs)

    bounded._flowvae_bounded = True  # type: ignore[attr-defined]
    return bounded


def _bounded_editing(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a kind's ``manipulate(x, direction, alphas)``) refusing images times strengths whose
    decodes cannot fit in memory (:func:`check_memory`) before it encodes anything."""
    @functools.wraps(fn)
    def bounded(self: GenerativeModel, *args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else kwargs.get("x")
        alphas = args[2] if len(args) > 2 else kwargs.get("alphas")
        if isinstance(x, Tensor) and x.dim() == 4 and isinstance(alphas, (list, tuple)) and alphas:
            cfg = self.cfg
            check_memory(f"manipulate of {len(x):,} images at {len(alphas)} strengths", len(x) * len(alphas),
                         (cfg.in_channels, cfg.image_size, cfg.image_size), self.device,
                         "pass fewer images at a time")
        return fn(self, *args, **kwargs)

    bounded._flowvae_bounded = True  # type: ignore[attr-defined]
    return bounded


def check_posterior_samples(k: Any) -> int:
    """``k`` if it is a positive integer of at most :data:`MAX_POSTERIOR_SAMPLES`; else
    :class:`~flowvae.errors.ConfigError`."""
    check_count("k", k)
    if k > MAX_POSTERIOR_SAMPLES:
        raise ConfigError(f"k = {k:,} posterior samples per image is more than the {MAX_POSTERIOR_SAMPLES:,} "
                          f"allowed (as for train.eval_k); the importance-weighted bound barely changes past a "
                          f"few thousand")
    return int(k)


# The methods of every kind that take a count from the caller: wrapped once, here, so that no
# kind can leave its count unbounded.
_BOUNDED_METHODS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "sample": _bounded_sampling, "draw": _bounded_sampling, "sample_group": _bounded_sampling,
    "bits_per_dim": _bounded_scoring, "manipulate": _bounded_editing, "manipulate_samples": _bounded_editing}


class GenerativeModel(nn.Module):
    """Base class of every model kind (the contract in the module docstring).

    Subclasses set ``config_class`` and :attr:`kinds` and implement ``loss``, ``bits_per_dim``,
    ``sample``, ``representations`` and :attr:`capabilities`; the optional methods
    (``encode``/``decode``, ``switch``, ``interpolate``, ``latent_mean``, ``traverse``,
    ``reconstruct``) exist where the matching capability is declared.

    Args:
        cfg: an instance of ``config_class``.
        n_bits: bits per pixel of the modelled data (1..8).
    """

    config_class: ClassVar[type[ModelSettings]] = ModelSettings

    #: the kinds this class is the model of, each with one phrase saying what the model is (the
    #: model card's first sentence: "A `glow` model, <phrase>, trained on ..."); :func:`register`
    #: maps each name to this class. Empty: every name ``config_class.kind`` admits, undescribed.
    kinds: ClassVar[Mapping[str, str]] = {}

    cfg: Any
    config: Any  # the run's Config, attached by flowvae.load_run
    run_dir: Any  # the run folder, attached by flowvae.load_run (its metrics go on the model card)
    dim: int

    def __init_subclass__(cls, **kwargs: Any):
        # Every kind's own sample / sample_group / bits_per_dim gets the count bounds of the base
        # class (:func:`check_memory`, :data:`MAX_POSTERIOR_SAMPLES`) without calling for them.
        super().__init_subclass__(**kwargs)
        for name, bound in _BOUNDED_METHODS.items():
            # Also a method a kind takes from a mixin that is not a GenerativeModel (MeanCodeEdits).
            own = getattr(cls, name, None)
            if callable(own) and not getattr(own, "_flowvae_bounded", False):
                setattr(cls, name, bound(own))

    def __init__(self, cfg: ModelSettings, n_bits: int = 8):
        super().__init__()
        if not isinstance(cfg, self.config_class):  # e.g. a plain dict or another kind's config
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
            raise ConfigError(f"data.n_bits must be an integer in 1..8, got {n_bits!r}")
        self.cfg = cfg
        self.n_bits = n_bits
        self.dim = cfg.in_channels * cfg.image_size * cfg.image_size
        self.precision = "fp32"

    # ---------------------------------------------------------------- declared
    @property
    def kind(self) -> str:
        """The model kind (``model.kind``)."""
        return str(self.cfg.kind)

    @property
    def capabilities(self) -> Capabilities:
        """What this model can do (see :class:`Capabilities`)."""
        return Capabilities()

    @property
    def description(self) -> str:
        """What this model is, in one phrase (:attr:`kinds`; the model card's first sentence)."""
        owner = MODEL_KINDS.get(self.kind, type(self))
        return owner.kinds.get(self.kind) or type(self).kinds.get(self.kind) or "one of the model kinds of flowvae"

    @property
    def latent_meanings(self) -> dict[str, str]:
        """What each latent of :meth:`posterior_moments` is, ``{name: phrase}`` (the metadata of
        ``flowvae encode``); a latent without an entry is described by its name. None by default."""
        return {}

    @property
    def card_tags(self) -> list[str]:
        """The Hugging Face tags of this model's kind: the kind (``_`` as ``-``), ``normalizing-flows``
        for the kinds with exact codes (a flow's) and ``vae`` for those whose objective has a KL
        term (:attr:`kl_term`), in that order."""
        return [self.kind.replace("_", "-")] + (["normalizing-flows"] if self.capabilities.exact_codes else []) \
            + (["vae"] if self.kl_term else [])

    @property
    def latent_dim(self) -> int:
        """Dimension of the per-image vector latent (``vector_latent`` kinds), else 0."""
        return 0

    @property
    def label_groups(self) -> int | None:
        """Classes per training batch when batches must be drawn by class (each class one group),
        else ``None`` (plain shuffled batches)."""
        return None

    def require(self, capability: str, what: str) -> None:
        """Raise a one-line :class:`~flowvae.errors.ConfigError` unless ``capability`` is declared.

        Args:
            capability: a :class:`Capabilities` field name.
            what: what needs it, e.g. ``"flowvae switch"``.
        """
        if not getattr(self.capabilities, capability):
            raise ConfigError(f"{what} does not apply to a {self.kind!r} model (it has no {capability.replace('_', ' ')} "
                              f"capability; it has: {', '.join(self.capabilities.names()) or 'none'})")

    # ---------------------------------------------------------------- shared behaviour
    def check_input(self, x: Any) -> None:
        """Raise :class:`~flowvae.errors.DataError` unless ``x`` is non-empty uint8 ``[B, C, H, W]`` of this model's shape."""
        check_images(x, self.cfg.in_channels, self.cfg.image_size)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a model without any)."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model's parameters."""
        p = next(self.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def set_precision(self, precision: str) -> GenerativeModel:
        """``"fp32"`` everywhere; ``"bf16"`` only where :attr:`capabilities` has ``bf16``.

        Raises:
            ConfigError: an unknown precision, or bf16 on a kind without it.
        """
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if precision == "bf16":
            self.require("bf16", "train.precision=bf16")
        self.precision = precision
        return self

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[GenerativeModel]:
        """The model in float32 for the duration of the ``with`` block, its precision put back after:
        what evaluations, probes, switch scores and sample grids of a bf16 training run use, so that
        the numbers a report shows do not depend on the training's precision."""
        before = self.precision
        if before == "fp32":
            yield self
            return
        self.set_precision("fp32")
        try:
            yield self
        finally:
            self.set_precision(before)

    def set_recompute(self, enabled: bool) -> GenerativeModel:
        """Recompute activations by inversion in the backward pass (less memory).

        Raises:
            ConfigError: on a kind without the ``recompute`` capability.
        """
        if enabled:
            self.require("recompute", "train.recompute")
        return self

    def prepare_training(self, runs: OtherRuns | None = None) -> None:
        """Called once before the first step of a fresh run (not on resume); e.g. loads frozen parts
        (through ``runs``, from the run folders the config names)."""

    def quantised(self, x: Tensor) -> Tensor:
        """The uint8 images ``[B, C, H, W]`` this model reproduces from uint8 ``x``: ``x`` itself for 8-bit
        models, else ``x`` reduced to ``n_bits`` bits and mapped back to 0..255 (a model can only
        return the bins it models; what round trips and switched decodes are compared with)."""
        from ..data import bins_to_uint8, quantize

        return bins_to_uint8(quantize(x, self.n_bits), self.n_bits)

    #: top-level parts that only the training loss uses (not for densities or samples), left out of
    #: :meth:`parameter_count` (the paper's model: the auxiliary decoder, ``model.aux_decoder_weight``)
    training_only: ClassVar[tuple[str, ...]] = ()

    def parameter_count(self) -> int:
        """Parameters of the model that gives densities and samples (without :attr:`training_only` parts)."""
        return sum(p.numel() for name, p in self.named_parameters() if name.split(".", 1)[0] not in self.training_only)

    def describe(self) -> dict[str, Any]:
        """Kind, parameter counts (total and per top-level part) and the config."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        parts = {f"{name}_parameters": count(m) for name, m in self.named_children()}
        return {"kind": self.kind, "parameters": count(self), **parts, "capabilities": self.capabilities.names(),
                "config": self.cfg.to_dict()}

    # ---------------------------------------------------------------- sharing
    def save_pretrained(self, out: Any, **options: Any) -> list[Any]:
        """Write this model to the folder ``out`` as ``config.yaml``, ``model.safetensors`` (with
        flowvae's metadata) and a ``README.md`` model card; returns the paths written. Options and
        errors: :func:`flowvae.hub.save_pretrained`.

        Example: ``flowvae.load_run("runs/demo").save_pretrained("export/demo")``.
        """
        return _hub().save_pretrained(self, out, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> dict[str, Any]:
        """Upload this model to the Hugging Face Hub model repository ``repo_id`` (``USER/NAME``),
        stored as by :meth:`save_pretrained`. Options and errors: :func:`flowvae.hub.push_to_hub`.

        Example: ``flowvae.load_run("runs/demo").push_to_hub("me/flowvae-digits", private=True)``.
        """
        return _hub().push_to_hub(self, repo_id, **options)

    # ---------------------------------------------------------------- the contract
    @property
    def kl_term(self) -> bool:
        """Whether :meth:`loss` has a KL term, which it then weights by its keyword-only
        ``kl_weight`` (a float or 0-dim tensor, default 1: the paper's objective). The trainer
        passes the weight of ``train.kl_warmup_steps`` and refuses the setting for a kind whose
        ``kl_term`` is false (the flows without a posterior). False unless a kind says otherwise."""
        return False

    def loss(self, x: Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] | None = None,
             **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss of uint8 images ``[B, C, H, W]`` and detached ``stats`` (module docstring).
        Kinds with a KL term (:attr:`kl_term`) also take ``kl_weight``."""
        raise NotImplementedError

    def forward(self, x: Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] | None = None,
                **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Same as :meth:`loss` (so that ``DistributedDataParallel(model)(x)`` trains it)."""
        return self.loss(x, generator, shard, **batch)

    def bits_per_dim(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-image ``elbo_bpd``, ``iw_bpd`` (bits/dim) and ``kl`` (nats), each ``[B]``.

        Every kind's implementation is wrapped (:meth:`__init_subclass__`): ``k`` above
        :data:`MAX_POSTERIOR_SAMPLES`, or ``B * k`` images that cannot fit in the free memory
        (:func:`check_memory`), raise :class:`~flowvae.errors.ConfigError` before anything is computed."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` uint8 samples ``[n, C, H, W]``.

        Every kind's implementation is wrapped (:meth:`__init_subclass__`): an ``n`` whose images
        cannot fit in the free memory of the model's device (:func:`check_memory`) raises
        :class:`~flowvae.errors.ConfigError` before anything is drawn."""
        raise NotImplementedError

    def draw(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
             generator: torch.Generator | None = None) -> Samples:
        """:meth:`sample` as :class:`Samples`: the images and, for kinds that decode continuous values
        (the flows, which override this), those values and which samples saturated. Same images,
        same draws from ``generator``, same errors as :meth:`sample`; bounded like it."""
        return Samples(self.sample(n, temperature, global_temperature=global_temperature, generator=generator))

    def representations(self, x: Tensor) -> dict[str, Tensor]:
        """Named per-image features ``{name: [B, d]}`` of uint8 images (linear probes)."""
        raise NotImplementedError

    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Mean and log-variance (natural log) of each Gaussian posterior the kind has, for uint8
        images ``x [B, C, H, W]``: ``{name: (mean [B, d], logvar [B, d])}``, on the model's device;
        ``{}`` for a kind without one (``flowvae encode``). A kind that does not define it is refused
        in one line.

        Raises:
            DataError: images that are not uint8 of the model's shape.
            ConfigError: a kind that does not define its posterior.
        """
        from ..errors import ConfigError

        raise ConfigError(f"posterior moments do not apply to a {self.kind!r} model: it defines no "
                          f"posterior_moments(x)")

    def code_log_prior(self, z: Tensor) -> Tensor:
        """``log p(z)`` in nats ``[B]`` of codes ``z [B, d]`` under the kind's own prior of the code
        ``"z"`` of :meth:`posterior_moments` (kinds with the ``code_prior`` capability). N(0, I) here,
        the VAEs' prior; a kind with another prior overrides it (the paper's model: the flow prior of
        eq. 2).

        Raises:
            ConfigError: a kind without the ``code_prior`` capability (no z, or a prior that depends on
                more than z, as the UG-VAE's mixture given the group's code).
        """
        from ..maths import standard_normal_logprob

        self.require("code_prior", "the KL of the code z")
        return standard_normal_logprob(z)

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
        """:meth:`representations` of many images ``[N, C, H, W]`` in batches, on the CPU."""
        from ..progress import progress

        check_count("batch_size", batch_size)
        self.check_input(x)
        out: dict[str, list[Tensor]] = {}
        for i in progress(range(0, len(x), batch_size), total=-(-len(x) // batch_size), desc="features"):
            for name, t in self.representations(x[i:i + batch_size].to(self.device)).items():
                out.setdefault(name, []).append(t.float().cpu())
        return {name: torch.cat(ts) for name, ts in out.items()}
