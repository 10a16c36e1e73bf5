"""Import a model trained with the authors' implementation (github.com/XuezheMax/wolf, commit 1d23ca2).

The authors' ``experiments/train.py`` leaves in its model folder (``--model_path``):

* ``config.json``: the architecture (sections ``generator``, ``discriminator``, ``dequantizer``);
* ``model.pt``: ``torch.save({"core": WolfCore.state_dict()})`` (``WolfModel.save`` in
  ``wolf/wolf.py``), written whenever the validation NLL improves;
* ``checkpoint{step}.tar``: ``{"epoch", "step", "model": WolfModel.state_dict(), "optimizer", ...}``
  every 1,000 steps, plus ``checkpoint0.tar`` next to each new ``model.pt``. The ``model`` keys
  start with ``core.`` (``core.module.`` when trained with DistributedDataParallel). ``step``
  counts within an epoch, so the newest checkpoint is the one written last (modification time).

Their image size, bit depth and data set are command-line arguments of ``train.py``, not part of
``config.json``: the image size is read off the encoder (``discriminator.in_dim``) where there is
one, else it must be given; the bit depth defaults to 8.

The conversion, each step derived from ``config.json`` alone:

1. :func:`translate_config`: their configuration -> a :class:`~flowvae.models.FlowVAEConfig`
   (kind ``flowvae`` for their ``gaussian`` discriminator, ``refined_glow`` for ``base``: their
   ``glow`` flow type is the refined Glow of §2.2, so flowvae's original-Glow kind ``glow`` has no
   counterpart there). Every key is read; a key or value without a flowvae counterpart is refused
   in one line naming it.
2. :func:`tensor_map`: their modules, in the order their constructors build them (``Glow`` ->
   ``MultiScaleArchitecture`` -> ``GlowStep``/``MultiScalePrior``; ``GlobalResNetEncoderBatchNorm``;
   ``FlowPrior``), are walked side by side with flowvae's modules in order of operation, giving one
   :class:`TensorRow` per tensor with the operation that maps theirs onto ours.
3. :func:`convert_state` applies the operations; :func:`import_wolf` writes the run folder.

The operations are layout only (each leaves the computed function unchanged; verified against the
authors' outputs in ``../shared/golden/wolf-cifar-reduced``):

* pixels: theirs are on ``[-1, 1)``, ours on ``[-0.5, 0.5)``: the factor 2 is folded into the first
  decoder ActNorm (``log_scale + log 2``) and into the encoder's first convolution and first
  shortcut convolution (weights times 2). Bits/dim are the same in both; their ``logdet`` and
  ``log p(x+u|z)`` are ours minus ``D log 2``.
* affine couplings: their networks emit ``[bias ; scale pre-activation]``, ours
  ``[scale pre-activation ; bias]``: the halves of the last layer's rows are swapped (additive
  couplings emit the bias alone and are copied).
* ActNorm parameters are ``[C, 1, 1]`` there and ``[C]`` here, and flowvae's ``initialized`` flag
  is set; their cached inverses of the 1x1 convolutions (``weight_inv``) are dropped (flowvae
  inverts from the weight at each call).
* their encoder sees the lower edge of each pixel's bin: the imported model sets
  ``model.encoder_input=lower-edge`` unless told otherwise.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import math
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import safe_io
from ..errors import CheckpointError, ConfigError
from ..models.flowvae import FlowVAE, FlowVAEConfig

__all__ = ["WOLF_COMMIT", "ENCODER_INPUTS", "EncoderInput", "TensorRow", "WolfModelFiles", "read_wolf_dir",
           "translate_config", "tensor_map", "convert_state", "import_wolf"]

WOLF_COMMIT = "1d23ca2"
"""The commit of github.com/XuezheMax/wolf whose module layout this importer follows."""
EncoderInput = Literal["centre", "lower-edge"]
"""What the imported encoder sees (``model.encoder_input``)."""
ENCODER_INPUTS: tuple[EncoderInput, ...] = ("centre", "lower-edge")
"""The choices of ``import_wolf(encoder_input=...)``."""
OPS = ("copy", "flatten", "flatten+add_log2", "copy+times2", "swap_halves", "true", "drop")
"""The operations of :class:`TensorRow`."""

MAX_CONFIG_BYTES = 1 << 20  # their config.json is about 2 kB
# Their config.json nests 5 levels (generator.flow.num_steps[1] is a list); deeper values are refused before
# anything (messages, the import record) walks them recursively.
MAX_CONFIG_DEPTH = 16
# model.pt of the paper's largest model is about 0.5 GB and a checkpoint three times that; the same
# bound as flowvae's own checkpoints.
MAX_WEIGHT_BYTES = 16 * 1024**3
# Image shapes of the data sets the authors trained on, and flowvae's source of each (their
# train.py --dataset cifar10 | imagenet | lsun | celeba); others become a folder data set.
_DATASETS = {(3, 32): "cifar10", (3, 64): "imagenet64", (3, 128): "lsun", (3, 256): "celebahq", (1, 28): "mnist"}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_REQUIRED = object()


# ---------------------------------------------------------------------------------------------- config

def _show(value: Any) -> str:
    """``value`` as config.json spells it."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _same(a: Any, b: Any) -> bool:
    """``a == b`` without ``True == 1`` or ``1 == 1.0`` across JSON types."""
    return type(a) is type(b) and a == b


class _Section:
    """One object of ``config.json``: values read with the authors' defaults; :meth:`done` refuses
    whatever was not read (a key the authors' constructor would not accept, or one flowvae ignores)."""

    def __init__(self, value: Any, path: str):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config.json: {path or 'the top level'} must be a JSON object, got {_show(value)}")
        self.d, self.path = value, path
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key in self.d:
            return self.d[key]
        if default is _REQUIRED:
            raise ConfigError(f"config.json: {self._key(key)} is missing; the authors' code requires it, so this "
                              f"is not a config.json written by their train.py")
        return default

    def choice(self, key: str, allowed: tuple, default: Any = _REQUIRED) -> Any:
        """``key``'s value if it is one of ``allowed``, else a one-line refusal naming key and value."""
        value = self.get(key, default)
        if not any(_same(value, a) for a in allowed):
            raise ConfigError(f"config.json: {self._key(key)} = {_show(value)} has no flowvae counterpart "
                              f"(flowvae can import {' or '.join(_show(a) for a in allowed)}); this model "
                              f"cannot be converted")
        return value

    def count(self, key: str, default: Any = _REQUIRED, minimum: int = 0) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"config.json: {self._key(key)} must be an integer >= {minimum}, got {_show(value)}")
        return value

    def counts(self, key: str, n: int | None = None, minimum: int = 0, per: str = "") -> list[int]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                                                  for v in value):
            raise ConfigError(f"config.json: {self._key(key)} must be a list of integers >= {minimum}, "
                              f"got {_show(value)}")
        if n is not None and len(value) != n:
            raise ConfigError(f"config.json: {self._key(key)} has {len(value)} entries, {n} expected "
                              f"({per}); the authors' code would refuse it too")
        return list(value)

    def number(self, key: str, default: float) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"config.json: {self._key(key)} must be a finite number, got {_show(value)}")
        return float(value)

    def done(self) -> None:
        extra = [k for k in self.d if k not in self.used]
        if extra:
            k = extra[0]
            raise ConfigError(f"config.json: unsupported key {self._key(k)} = {_show(self.d[k])}: flowvae has no "
                              f"counterpart for it, so this model cannot be converted exactly")


def translate_config(wolf: Mapping[str, Any], *, image_size: int | None = None,
                     encoder_input: EncoderInput = "lower-edge") -> FlowVAEConfig:
    """flowvae's model config for the authors' ``config.json`` (already parsed).

    Follows the constructors of ``wolf/wolf.py::WolfModel.from_params``, ``wolf/flows/glow.py::Glow``
    (with ``MultiScaleArchitecture``), ``wolf/modules/discriminators/gaussian.py``,
    ``wolf/modules/encoders/global_encoder.py`` and ``wolf/modules/discriminators/priors/flow.py``,
    defaults included (``activation`` defaults to ``"relu"`` and ``inverse`` to ``false`` in
    their ``Glow``, so a config that leaves them out is refused).

    Mapping: ``num_steps`` -> ``steps`` (an internal level of two groups ``[a, b]`` stays ``[a, b]``
    with ``factor_out`` its factor; one group ``[a]`` with factor 2 is a plain level ``a``),
    ``hidden_channels`` -> ``hidden``, ``transform`` -> ``coupling``, ``alpha`` -> ``alpha``;
    ``discriminator.dim`` -> ``d_z``, ``encoder.hidden_planes`` -> ``encoder_widths``,
    ``encoder.out_planes`` -> ``encoder_maps``, ``prior.num_steps``/``hidden_features`` ->
    ``prior_steps``/``prior_hidden``; 1x1 convolutions ``plain`` (theirs store the matrix itself).

    Args:
        wolf: the parsed ``config.json``.
        image_size: image side in pixels; ``None`` reads it off the encoder
            (``in_dim = out_planes * (S / 2**levels)**2``), required for a model without one.
        encoder_input: ``"lower-edge"`` (what their encoder sees) or ``"centre"`` (flowvae's default;
            then q(z|x) sees pixels half a bin higher than theirs did).

    Raises:
        ConfigError: a key or value without a flowvae counterpart (named, with its value), a
            missing key the authors' code requires, inconsistent sizes, or a missing image size.
    """
    if encoder_input not in ENCODER_INPUTS:
        raise ConfigError(f"encoder_input must be one of {', '.join(ENCODER_INPUTS)}, got {encoder_input!r}")
    top = _Section(wolf, "")
    gen = _Section(top.get("generator"), "generator")
    disc = _Section(top.get("discriminator"), "discriminator")
    deq = _Section(top.get("dequantizer"), "dequantizer")
    top.done()

    deq.choice("type", ("uniform",))
    deq.done()

    flow = _Section(gen.get("flow"), "generator.flow")
    gen.done()
    flow.choice("type", ("glow",))
    levels = flow.count("levels", minimum=2)
    in_channels = flow.count("in_channels", minimum=1)
    hidden = flow.counts("hidden_channels", levels, minimum=1, per="one per level")
    num_steps = flow.get("num_steps")
    if not isinstance(num_steps, list) or len(num_steps) != levels:
        raise ConfigError(f"config.json: generator.flow.num_steps must list {levels} levels "
                          f"(generator.flow.levels), got {_show(num_steps)}")
    factors = flow.counts("factors", levels - 2, minimum=2, per="one per internal level")
    h_type = flow.choice("h_type", (None, "global_linear"), None)
    h_channels = flow.count("h_channels", 0)
    flow.choice("activation", ("elu",), "relu")
    flow.choice("inverse", (True,), False)
    transform = flow.choice("transform", ("affine", "additive"), "affine")
    prior_transform = flow.get("prior_transform", "affine")
    if not _same(prior_transform, transform):
        raise ConfigError(f"config.json: generator.flow.prior_transform = {_show(prior_transform)} differs from "
                          f"generator.flow.transform = {_show(transform)}; flowvae's factor-out couplings use the "
                          f"same transform as its steps, so this model cannot be converted")
    alpha = flow.number("alpha", 1.0)
    flow.choice("coupling_type", ("conv",), "conv")
    flow.choice("normalize", (None,), None)
    flow.get("num_groups", None)  # read by their code only with normalize = "group_norm"
    flow.done()

    steps: list[int | list[int]] = []
    factor_out: int | None = None
    for level, entry in enumerate(num_steps):
        key = f"generator.flow.num_steps[{level}]"
        if level in (0, levels - 1):
            if isinstance(entry, bool) or not isinstance(entry, int) or entry < 0:
                raise ConfigError(f"config.json: {key} (the {'first' if level == 0 else 'last'} level) must be a "
                                  f"step count, got {_show(entry)}")
            steps.append(entry)
            continue
        factor = factors[level - 1]
        if not isinstance(entry, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in entry):
            raise ConfigError(f"config.json: {key} (an internal level) must be a list of step counts, "
                              f"got {_show(entry)}")
        if len(entry) >= factor:
            raise ConfigError(f"config.json: {key} has {len(entry)} groups for factor "
                              f"generator.flow.factors[{level - 1}] = {factor}; the authors' code needs fewer")
        if len(entry) == 2:
            if factor_out is not None and factor != factor_out:
                raise ConfigError(f"config.json: generator.flow.factors = {_show(factors)} mixes factors for "
                                  f"fine-grained levels; flowvae has one model.factor_out for all of them")
            factor_out = factor
            steps.append(list(entry))
        elif len(entry) == 1 and factor == 2:
            steps.append(entry[0])  # one factor-out of half the channels: flowvae's plain inner level
        else:
            raise ConfigError(f"config.json: {key} = {_show(entry)} with factor {factor} has no flowvae "
                              f"counterpart: flowvae's inner levels factor out twice (two groups, "
                              f"model.factor_out) or once by half (one group with factor 2)")

    kind = disc.choice("type", ("gaussian", "base"))
    fields: dict[str, Any] = {}
    prior_alpha: float | None = None
    if kind == "base":
        disc.done()
        if h_type is not None or h_channels:
            raise ConfigError(f"config.json: generator.flow.h_type = {_show(h_type)} conditions the flow on a code "
                              f"z, but discriminator.type = \"base\" has no encoder to give one")
        if image_size is None:
            raise ConfigError("config.json does not say the image size (their train.py takes it as --image_size) "
                              "and this model has no encoder to read it from; give the image size")
    else:
        if h_type != "global_linear":
            raise ConfigError(f"config.json: generator.flow.h_type = {_show(h_type)}: with discriminator.type = "
                              f"\"gaussian\" flowvae needs \"global_linear\" (z enters every coupling, eq. 7)")
        d_z = disc.count("dim", minimum=2)
        in_dim = disc.count("in_dim", minimum=1)
        enc = _Section(disc.get("encoder"), "discriminator.encoder")
        prior = _Section(disc.get("prior"), "discriminator.prior")
        disc.done()
        enc.choice("type", ("global_resnet_bn",))
        enc_levels = enc.count("levels", minimum=1)
        widths = enc.counts("hidden_planes", enc_levels, minimum=1, per="one per discriminator.encoder.levels")
        maps = enc.count("out_planes", minimum=1)
        planes = enc.count("in_planes", minimum=1)
        enc.choice("activation", ("elu",))
        enc.done()
        if planes != in_channels:
            raise ConfigError(f"config.json: discriminator.encoder.in_planes = {planes} differs from "
                              f"generator.flow.in_channels = {in_channels}")
        if planes == widths[0]:
            raise ConfigError(f"config.json: discriminator.encoder.hidden_planes[0] = {widths[0]} equals in_planes, so "
                              f"the encoder's first block adds the raw pixels back (no shortcut convolution) and "
                              f"their pixel scale cannot be folded into the weights; this model cannot be converted")
        if h_channels != d_z:
            raise ConfigError(f"config.json: generator.flow.h_channels = {h_channels} differs from "
                              f"discriminator.dim = {d_z}; both are the dimension of z")
        side = math.isqrt(in_dim // maps) if in_dim % maps == 0 else 0
        if side * side * maps != in_dim:
            raise ConfigError(f"config.json: discriminator.in_dim = {in_dim} is not out_planes ({maps}) times a "
                              f"square number of positions")
        size = side * 2 ** enc_levels
        if image_size is not None and image_size != size:
            raise ConfigError(f"the image size {image_size} does not fit config.json: its encoder "
                              f"(discriminator.in_dim = {in_dim}, {enc_levels} levels) takes {size}x{size} images")
        image_size = size
        prior.choice("type", ("flow",))
        prior_steps = prior.count("num_steps", minimum=1)
        features = prior.count("in_features", minimum=2)
        prior_hidden = prior.count("hidden_features", minimum=1)
        prior.choice("transform", ("affine",), "affine")
        prior_alpha = prior.number("alpha", 1.0)
        prior.choice("coupling_type", ("mlp",), "mlp")
        prior.choice("activation", ("elu",), "elu")
        prior.done()
        if features != d_z:
            raise ConfigError(f"config.json: discriminator.prior.in_features = {features} differs from "
                              f"discriminator.dim = {d_z}")
        if d_z % 2:
            raise ConfigError(f"config.json: discriminator.dim = {d_z} is odd; the authors' prior flow needs an "
                              f"even dimension, so this is not a model their code built")
        fields = dict(d_z=d_z, encoder_widths=widths, encoder_maps=maps, prior_steps=prior_steps,
                      prior_hidden=prior_hidden)

    # flowvae shares one alpha between the decoder's couplings and the prior's; additive couplings
    # ignore it, so only the alphas that act must agree.
    acting = ([("generator.flow.alpha", alpha)] if transform == "affine" else []) \
        + ([("discriminator.prior.alpha", prior_alpha)] if prior_alpha is not None else [])
    if len({a for _, a in acting}) > 1:
        raise ConfigError(f"config.json: {acting[0][0]} = {acting[0][1]:g} and {acting[1][0]} = {acting[1][1]:g} "
                          f"differ; flowvae has one model.alpha for both")
    shared_alpha = acting[0][1] if acting else 1.0
    try:
        return FlowVAEConfig(kind="flowvae" if kind == "gaussian" else "refined_glow", in_channels=in_channels,
                             image_size=image_size, steps=steps, hidden=hidden, factor_out=factor_out or 4,
                             coupling=transform, alpha=shared_alpha, conv1x1="plain", dequantization="uniform",
                             encoder_input=encoder_input, **fields)
    except ConfigError as e:
        raise ConfigError(f"config.json translates to a flowvae model config that is refused: {e}") from None


# ---------------------------------------------------------------------------------------------- tensor map

@dataclass(frozen=True)
class TensorRow:
    """One tensor of the conversion: flowvae's name, the authors' name, and the operation.

    ``op`` is one of :data:`OPS`: ``copy``; ``flatten`` (``[C, 1, 1] -> [C]``); ``flatten+add_log2``
    (also ``+ log 2``: the first decoder ActNorm's ``log_scale``, their pixels being twice ours);
    ``copy+times2`` (the encoder's convolutions that see pixels); ``swap_halves`` (the rows of an
    affine coupling network's last layer, ``[bias ; scale] -> [scale ; bias]``); ``true`` (flowvae's
    ``initialized`` flag, no counterpart); ``drop`` (their cached ``weight_inv``, no counterpart).
    """

    flowvae: str | None
    wolf: str | None
    op: str


def _wolf_step(p: str) -> list[tuple[str, str]]:
    """``GlowStep`` (``wolf/flows/glow.py``): ActNorm, 1x1, then ``GlowUnit``'s four couplings around an ActNorm."""
    u = f"{p}.unit"
    return [("actnorm", f"{p}.actnorm"), ("conv1x1", f"{p}.conv1x1"), ("coupling", f"{u}.coupling1_up"),
            ("coupling", f"{u}.coupling1_dn"), ("actnorm", f"{u}.actnorm"), ("coupling", f"{u}.coupling2_up"),
            ("coupling", f"{u}.coupling2_dn")]


def _wolf_generator(num_steps: list) -> list[tuple[str, str]]:
    """The generator's modules in order of operation (``MultiScaleArchitecture``: external blocks
    ``blocks.L.steps.S``; internal ones ``blocks.L.layers.G.S`` each followed by ``MultiScalePrior``
    ``blocks.L.priors.G``: 1x1, coupling, ActNorm)."""
    sites: list[tuple[str, str]] = []
    last = len(num_steps) - 1
    for level, entry in enumerate(num_steps):
        base = f"generator.flow.blocks.{level}"
        if level in (0, last):
            for s in range(entry):
                sites += _wolf_step(f"{base}.steps.{s}")
            continue
        for g, n in enumerate(entry):
            for s in range(n):
                sites += _wolf_step(f"{base}.layers.{g}.{s}")
            sites += [("conv1x1", f"{base}.priors.{g}.conv1x1"), ("coupling", f"{base}.priors.{g}.coupling"),
                      ("actnorm", f"{base}.priors.{g}.actnorm")]
    return sites


def _wolf_prior(num_steps: int) -> list[tuple[str, str]]:
    """``FlowPrior`` (``priors/flow.py``): ``PriorFlowStep`` = ActNorm, invertible linear, ``PriorFlowUnit``."""
    sites: list[tuple[str, str]] = []
    for s in range(num_steps):
        p = f"discriminator.prior.flow.steps.{s}"
        sites += [(kind, name.replace(".conv1x1", ".linear")) for kind, name in _wolf_step(p)]
    return sites


def _our_sites(root: nn.Module, prefix: str) -> list[tuple[str, str, nn.Module]]:
    """flowvae's invertible layers under ``root``, in order of operation (registration order)."""
    from ..flows.actnorm import ActNorm
    from ..flows.conv1x1 import InvertibleConv1x1
    from ..flows.coupling import AffineCoupling

    kinds = ((ActNorm, "actnorm"), (InvertibleConv1x1, "conv1x1"), (AffineCoupling, "coupling"))
    out: list[tuple[str, str, nn.Module]] = []
    for name, m in root.named_modules(prefix=prefix):
        for cls, kind in kinds:
            if isinstance(m, cls):
                out.append((kind, name, m))
    return out


def _layer_rows(kind: str, ours: str, module: nn.Module, theirs: str, affine: bool,
                first: bool = False) -> list[TensorRow]:
    from ..networks.coupling_nets import ConvCouplingNet, MLPCouplingNet

    if kind == "actnorm":  # ActNorm2dFlow / ActNorm1dFlow (wolf/flows/normalization.py)
        return [TensorRow(f"{ours}.log_scale", f"{theirs}.log_scale", "flatten+add_log2" if first else "flatten"),
                TensorRow(f"{ours}.bias", f"{theirs}.bias", "flatten"),
                TensorRow(f"{ours}.initialized", None, "true")]
    if kind == "conv1x1":  # Conv1x1Flow / InvertibleLinearFlow (wolf/flows/permutation.py)
        if getattr(module, "parametrization", None) != "plain":
            raise ConfigError(f"{ours} is not a plain 1x1 convolution; the imported model needs model.conv1x1=plain")
        return [TensorRow(None, f"{theirs}.weight_inv", "drop"),
                TensorRow(f"{ours}.weight", f"{theirs}.weight", "copy")]
    net = getattr(module, "net", None)
    last = "swap_halves" if affine else "copy"
    if isinstance(net, ConvCouplingNet):  # NICE2d with NICEConvBlock (+ GlobalLinearCondNet)
        rows = [TensorRow(f"{ours}.net.conv1.weight", f"{theirs}.net.conv1.weight", "copy"),
                TensorRow(f"{ours}.net.conv2.weight", f"{theirs}.net.conv2.weight", "copy")]
        if net.cond is not None:
            rows += [TensorRow(f"{ours}.net.cond.{p}", f"{theirs}.h_net.net.{p}", "copy") for p in ("weight", "bias")]
        return rows + [TensorRow(f"{ours}.net.conv3.{p}", f"{theirs}.net.conv3.conv.{p}", last)
                       for p in ("weight_v", "weight_g", "bias")]
    if isinstance(net, MLPCouplingNet):  # NICE1d with NICEMLPBlock
        rows = [TensorRow(f"{ours}.net.{fc}.{p}", f"{theirs}.net.{fc}.{p}", "copy")
                for fc in ("fc1", "fc2") for p in ("weight", "bias")]
        return rows + [TensorRow(f"{ours}.net.fc3.{p}", f"{theirs}.net.fc3.linear.{p}", last)
                       for p in ("weight_v", "weight_g", "bias")]
    raise ConfigError(f"{ours}: a coupling network of type {type(net).__name__} has no counterpart in the "
                      f"authors' code")


def _paired(ours: list[tuple[str, str, nn.Module]], theirs: list[tuple[str, str]], what: str
            ) -> Iterator[tuple[str, str, nn.Module, str]]:
    if [k for k, _, _ in ours] != [k for k, _ in theirs]:
        # Both sides come from the same config; a difference is a bug in this importer, not in the input.
        raise RuntimeError(f"the {what} of config.json has {len(theirs)} layers in the authors' order and "
                           f"{len(ours)} in flowvae's, of different kinds; the import of this config is not supported")
    for (kind, name, m), (_, wname) in zip(ours, theirs):
        yield kind, name, m, wname


def _bn_rows(ours: str, theirs: str) -> list[TensorRow]:
    return [TensorRow(f"{ours}.{p}", f"{theirs}.{p}", "copy")
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def tensor_map(wolf: Mapping[str, Any], model: FlowVAE) -> list[TensorRow]:
    """One :class:`TensorRow` per tensor of the authors' state dict and of ``model``'s.

    Derived from the configuration alone: the authors' module names are those their constructors
    build for ``config.json`` (:func:`translate_config` has validated it), paired in order of
    operation with ``model``'s layers (``model`` built from :func:`translate_config`'s result).

    Raises:
        ConfigError: ``config.json`` is not importable (see :func:`translate_config`).
        RuntimeError: the two walks disagree or leave a tensor of ``model`` unmapped (a bug here).
    """
    from ..networks.encoder import ResNetBlock

    gen_flow = wolf["generator"]["flow"]
    affine = gen_flow.get("transform", "affine") == "affine"
    rows: list[TensorRow] = []
    sites = list(_paired(_our_sites(model.decoder, "decoder"), _wolf_generator(gen_flow["num_steps"]), "generator"))
    if not sites or sites[0][0] != "actnorm":
        raise ConfigError("config.json: the generator's first layer is not an ActNorm (a level 0 and internal "
                          "first group without steps), so their pixel scale cannot be folded into the weights")
    for i, (kind, name, m, wname) in enumerate(sites):
        rows += _layer_rows(kind, name, m, wname, affine, first=i == 0)
    disc = wolf["discriminator"]
    if disc["type"] == "gaussian":
        enc = disc["encoder"]
        blocks = [(n, m) for n, m in model.encoder.named_modules(prefix="encoder") if isinstance(m, ResNetBlock)]
        wblocks = [f"discriminator.encoder.net.resnet{lv}.main.{j}" for lv in range(enc["levels"]) for j in (0, 1)]
        if len(blocks) != len(wblocks):
            raise RuntimeError(f"the encoder has {len(blocks)} residual blocks here and {len(wblocks)} in config.json")
        for i, ((name, block), wname) in enumerate(zip(blocks, wblocks)):
            pixels = "copy+times2" if i == 0 else "copy"  # the first block's convolutions see the pixels
            rows += [TensorRow(f"{name}.conv1.weight", f"{wname}.conv1.weight", pixels),
                     *_bn_rows(f"{name}.bn1", f"{wname}.bn1"),
                     TensorRow(f"{name}.conv2.weight", f"{wname}.conv2.weight", "copy"),
                     *_bn_rows(f"{name}.bn2", f"{wname}.bn2")]
            if block.shortcut is not None:  # theirs has `downsample` under the same condition
                rows += [TensorRow(f"{name}.shortcut.0.weight", f"{wname}.downsample.0.weight", pixels),
                         *_bn_rows(f"{name}.shortcut.1", f"{wname}.downsample.1")]
        rows += [TensorRow(f"encoder.top.{p}", f"discriminator.encoder.net.top.{p}", "copy")
                 for p in ("weight", "bias")]
        rows += [TensorRow(f"encoder.fc.{p}", f"discriminator.fc.linear.{p}", "copy")
                 for p in ("weight_v", "weight_g", "bias")]  # mu and logvar are in the same order in both
        for kind, name, m, wname in _paired(_our_sites(model.prior, "prior"), _wolf_prior(disc["prior"]["num_steps"]),
                                            "prior"):
            rows += _layer_rows(kind, name, m, wname, True)
    ours = set(model.state_dict())
    mapped = [r.flowvae for r in rows if r.flowvae is not None]
    if set(mapped) != ours or len(mapped) != len(ours):
        left = sorted(ours - set(mapped)) or sorted(set(mapped) - ours)
        raise RuntimeError(f"the tensor map of this config does not cover flowvae's model exactly (e.g. {left[:3]})")
    return rows


def convert_state(rows: list[TensorRow], wolf_state: Mapping[str, Tensor], ours: Mapping[str, Tensor],
                  source: str | Path = "the authors' weights") -> dict[str, Tensor]:
    """flowvae's state dict from the authors' (prefix already removed), by :func:`tensor_map`'s rows.

    Args:
        rows: from :func:`tensor_map`.
        wolf_state: their tensors by name (``WolfCore.state_dict()``).
        ours: the target model's ``state_dict()`` (names, shapes and dtypes to produce).
        source: the file the state came from, for messages.

    Returns:
        Tensors named and shaped as ``ours``, in its dtypes (float32 weights; integer BatchNorm counters).

    Raises:
        CheckpointError: a tensor missing or left over (named), not a tensor, of another shape
            than the configuration implies, or not finite.
    """
    wanted = [r.wolf for r in rows if r.wolf is not None]
    missing = [n for n in wanted if n not in wolf_state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{source} lacks tensor {missing[0]!r}{more} that the model of config.json has; "
                              f"are these the weights of this config.json?")
    extra = sorted(set(wolf_state) - set(wanted))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{source} holds tensor {extra[0]!r}{more} that the model of config.json has no place "
                              f"for; are these the weights of this config.json?")
    out: dict[str, Tensor] = {}
    for row in rows:
        if row.op == "drop" or row.flowvae is None:
            continue
        target = ours[row.flowvae]
        if row.op == "true":
            out[row.flowvae] = torch.ones_like(target)
            continue
        assert row.wolf is not None  # every row but "true" names their tensor
        t = wolf_state[row.wolf]
        if not isinstance(t, Tensor):
            raise CheckpointError(f"{source}: entry {row.wolf!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu()
        if row.op in ("flatten", "flatten+add_log2"):
            t = t.reshape(-1)
        if tuple(t.shape) != tuple(target.shape):
            shape = list(wolf_state[row.wolf].shape)
            raise CheckpointError(f"{source}: tensor {row.wolf!r} has shape {shape}, but the "
                                  f"model of config.json needs {list(target.shape)} for {row.flowvae}; are these the "
                                  f"weights of this config.json?")
        if t.is_floating_point():
            t = t.double()  # the folds in float64, then one rounding to the target dtype
            if not torch.isfinite(t).all():
                raise CheckpointError(f"{source}: tensor {row.wolf!r} holds NaN or infinite values")
            if row.op == "flatten+add_log2":
                t = t + math.log(2.0)
            elif row.op == "copy+times2":
                t = t * 2
            elif row.op == "swap_halves":
                if t.shape[0] % 2:
                    raise CheckpointError(f"{source}: tensor {row.wolf!r} has an odd number of rows ({t.shape[0]}); "
                                          f"an affine coupling's last layer has two halves")
                h = t.shape[0] // 2
                t = torch.cat([t[h:], t[:h]])
        elif row.op != "copy":
            raise CheckpointError(f"{source}: tensor {row.wolf!r} is of dtype {t.dtype}; a floating-point one expected")
        out[row.flowvae] = t.to(target.dtype).contiguous()
    return out


# ---------------------------------------------------------------------------------------------- files

@dataclass
class WolfModelFiles:
    """What :func:`read_wolf_dir` read from the authors' model folder.

    Attributes:
        folder: the model folder.
        config: their parsed ``config.json``.
        weights: the file the weights came from (``model.pt`` or a ``checkpoint*.tar``).
        layout: ``"model.pt"`` (``{"core": state}``) or ``"checkpoint"`` (``{"model": state}``).
        prefix: what was removed from every key (``""``, ``"core."`` or ``"core.module."``).
        state: their tensors by name, as ``WolfCore.state_dict()`` names them.
        info: numbers a checkpoint records besides the weights (``epoch``, ``step``, ``best_bpd``, ...).
        sha256: SHA-256 of the weights file (hex).
    """

    folder: Path
    config: dict[str, Any]
    weights: Path
    layout: str
    prefix: str
    state: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def _numpy_scalars() -> list[Any]:
    """Globals a weights-only load may use to rebuild numpy scalars (their checkpoints store the best
    NLL/bpd as ``numpy.float64``); plain numbers, no code.

    A pickle names numpy's ``scalar`` by the module it was written under: ``numpy.core.multiarray`` (numpy
    1) or ``numpy._core.multiarray`` (numpy 2). torch looks an allowed global up by its
    ``__module__``/``__name__`` (2.4) or ``__qualname__`` (later), and only releases from 2.6 take an
    explicit ``(global, name)`` pair, so each spelling gets a forwarding function that carries it.
    ``codecs.encode`` turns the pickled text of the scalar's bytes back into bytes.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    real = core.multiarray.scalar

    def spelled(module: str) -> Any:
        def scalar(*args: Any) -> Any:
            return real(*args)

        scalar.__module__ = module
        scalar.__name__ = scalar.__qualname__ = "scalar"
        return scalar

    kinds = {type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")}
    # a scalar's bytes are pickled as _codecs.encode(text, "latin1"); torch >= 2.5 allows it by default
    return [codecs.encode, np.dtype, *sorted(kinds, key=str), spelled("numpy.core.multiarray"), spelled("numpy._core.multiarray")]


@contextlib.contextmanager
def _numpy_scalars_allowed() -> Iterator[None]:
    """Allow :func:`_numpy_scalars` in weights-only loads inside the block, then restore torch's list.

    ``torch.serialization.add_safe_globals`` (torch >= 2.4) rather than the ``safe_globals`` context
    manager (2.5): the list is process-wide either way, and one code path serves the whole range."""
    ser = torch.serialization
    saved = list(ser.get_safe_globals())
    ser.add_safe_globals(_numpy_scalars())
    try:
        yield
    finally:
        ser.clear_safe_globals()
        if saved:
            ser.add_safe_globals(saved)


def _open_regular(path: Path, max_bytes: int) -> tuple[int, int]:
    """An fd of ``path`` opened without following a symlink and its size; refuses non-regular and oversized files."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except OSError as e:
        if os.path.islink(path):
            raise CheckpointError(f"refusing {path}: it is a symbolic link; copy the file itself into the "
                                  f"model folder") from None
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CheckpointError(f"refusing {path}: it is not a regular file")
    if st.st_size > max_bytes:
        os.close(fd)
        raise CheckpointError(f"refusing {path}: {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
    os.set_blocking(fd, True)
    return fd, st.st_size


def _torch_load(path: Path, max_bytes: int = MAX_WEIGHT_BYTES) -> tuple[Any, str]:
    """``torch.load(path, weights_only=True, map_location="cpu")`` of a regular file (no symlink) of at
    most ``max_bytes``, and its SHA-256; never executes code from the file, and never inflates a
    compressed archive entry (:func:`flowvae.safe_io.load_weights_only`)."""
    fd, _ = _open_regular(path, max_bytes)
    with os.fdopen(fd, "rb") as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
        f.seek(0)
        with _numpy_scalars_allowed():
            obj = safe_io.load_weights_only(f, path, hint="save the state dict alone "
                                            "(torch.save({'core': core.state_dict()}, 'model.pt'))")
    return obj, digest.hexdigest()


def _nesting(value: Any) -> int:
    """How many levels of lists and objects ``value`` (parsed JSON) nests, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _plain(value: Any) -> Any:
    """A checkpoint's bookkeeping value as JSON (numpy scalars and 0-d tensors as numbers), else ``None``."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _checkpoints(folder: Path) -> list[Path]:
    """``checkpoint*.tar`` entries of ``folder`` (symlinks included, to be refused when chosen), newest last."""
    found = [p for p in folder.iterdir() if p.name.startswith("checkpoint") and p.name.endswith(".tar")]
    return sorted(found, key=lambda p: (os.lstat(p).st_mtime_ns, p.name))


def read_wolf_dir(folder: str | Path, checkpoint: str | Path | None = None) -> WolfModelFiles:
    """Read the authors' model folder: ``config.json`` and the weights.

    The weights: ``checkpoint`` if given (a bare file name is looked up in ``folder``), else
    ``model.pt``, else the ``checkpoint*.tar`` written last. Files are read without following
    symbolic links and only as regular files of bounded size (``config.json`` 1 MiB, weights
    16 GiB), the weights with ``torch.load(weights_only=True, map_location="cpu")``.

    Raises:
        ConfigError: no ``config.json``, or one that is not a JSON object or nests more than
            :data:`MAX_CONFIG_DEPTH` levels.
        CheckpointError: no weights file, a symlink or non-regular file, a file that is not a
            weights-only torch file or is an archive with compressed or oversized entries
            (:func:`flowvae.safe_io.check_torch_archive`), or one without a ``core`` / ``model`` state dict of tensors
            whose keys share the prefix ``core.`` or ``core.module.`` (checkpoints).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; MODEL_DIR is the authors' model folder (their train.py's "
                              f"--model_path), holding config.json and model.pt or checkpoint*.tar")
    cfg_path = folder / "config.json"
    if not os.path.lexists(cfg_path):
        raise ConfigError(f"{folder} has no config.json; MODEL_DIR is the authors' model folder (their train.py's "
                          f"--model_path), holding config.json and model.pt or checkpoint*.tar")
    try:
        raw = safe_io.read_bytes(cfg_path, MAX_CONFIG_BYTES)
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{cfg_path} is not JSON ({e})") from None
    except RecursionError:  # json's decoder recurses once per level of [ or {
        raise ConfigError(f"{cfg_path} nests lists or objects too deeply (more than {MAX_CONFIG_DEPTH} levels) to "
                          f"be the authors' config.json, which nests 5; it is not read") from None
    depth = _nesting(config)
    if depth > MAX_CONFIG_DEPTH:
        raise ConfigError(f"{cfg_path} nests lists or objects {depth} levels deep, more than the "
                          f"{MAX_CONFIG_DEPTH} allowed (the authors' config.json nests 5); it is not read")
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg_path} must hold a JSON object with generator, discriminator and dequantizer")

    if checkpoint is not None:
        chosen = Path(checkpoint)
        weights = folder / chosen if chosen.parent == Path(".") else chosen
        if not os.path.lexists(weights):
            names = ", ".join(p.name for p in _checkpoints(folder)) or "none"
            raise CheckpointError(f"{weights} does not exist (checkpoints in {folder}: {names})")
    elif os.path.lexists(folder / "model.pt"):  # lexists: a symlinked model.pt is refused, not skipped
        weights = folder / "model.pt"
    else:
        found = _checkpoints(folder)
        if not found:
            raise CheckpointError(f"{folder} has neither model.pt nor a checkpoint*.tar; the authors' train.py writes "
                                  f"them into its --model_path")
        weights = found[-1]
    obj, sha = _torch_load(weights)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{weights} holds a {type(obj).__name__}, not the authors' dict with 'core' (model.pt) "
                              f"or 'model' (checkpoint*.tar)")
    info: dict[str, Any] = {}
    if "core" in obj:
        layout, state = "model.pt", obj["core"]
    elif "model" in obj:
        layout, state = "checkpoint", obj["model"]
        info = {k: v for k in ("epoch", "step", "best_epoch", "best_nll", "best_bpd", "best_kl", "best_nent",
                               "best_nepd") if k in obj and (v := _plain(obj[k])) is not None}
    else:
        raise CheckpointError(f"{weights} has neither a 'core' entry (model.pt) nor a 'model' entry (checkpoint*.tar); "
                              f"entries: {', '.join(map(str, list(obj)[:8]))}")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                           for k, v in state.items()):
        raise CheckpointError(f"{weights}: its {'core' if layout == 'model.pt' else 'model'} entry is not a "
                              f"non-empty mapping of tensor names to tensors")
    if layout == "model.pt":  # WolfModel.save stores the core itself; "module." if someone saved a DDP wrapper
        prefix: str | None = "module." if all(k.startswith("module.") for k in state) else ""
    else:  # WolfModel.state_dict(): its core, wrapped in DistributedDataParallel or not
        prefix = next((p for p in ("core.module.", "core.") if all(k.startswith(p) for k in state)), None)
    if prefix is None:
        odd = next(k for k in state if not k.startswith("core."))
        raise CheckpointError(f"{weights}: key {odd!r} of its 'model' entry does not start with 'core.'; the authors' "
                              f"checkpoints store WolfModel.state_dict() (keys core.* or core.module.*)")
    state = {k[len(prefix):]: v for k, v in state.items()}
    return WolfModelFiles(folder, config, weights, layout, prefix, state, info, sha)


# ---------------------------------------------------------------------------------------------- run folder

_HISTORY = ("metrics.jsonl", "checkpoints")


def _check_target(run: Path, force: bool) -> None:
    if os.path.islink(run):
        raise CheckpointError(f"refusing --run {run}: it is a symbolic link; name the folder itself")
    if not run.exists():
        return
    if not run.is_dir():
        raise CheckpointError(f"--run {run} exists and is not a folder")
    entries = [p.name for p in run.iterdir()]
    if not entries:
        return
    if not force:
        raise CheckpointError(f"--run {run} exists and is not empty ({', '.join(sorted(entries)[:4])}"
                              f"{', ...' if len(entries) > 4 else ''}); choose a new folder, or add --force to "
                              f"replace its config and weights")
    history = [n for n in _HISTORY if n in entries]
    if history:
        raise CheckpointError(f"--run {run} holds the training history of another run ({', '.join(history)}); "
                              f"--force replaces an imported model only: choose a new folder")


def _data_config(image_shape: tuple[int, int], n_bits: int, dataset: str | None, data_root: str | None) -> Any:
    from ..config import DataConfig
    from ..data.registry import get_source

    name = dataset or _DATASETS.get(image_shape, "folder")
    get_source(name)  # an unknown name: one-line DataError listing the known ones
    return DataConfig(dataset=name, root=data_root, n_bits=n_bits,
                      image_size=image_shape[1] if name == "folder" else None)


def import_wolf(model_dir: str | Path, run: str | Path, *, checkpoint: str | Path | None = None,
                encoder_input: EncoderInput = "lower-edge", image_size: int | None = None, n_bits: int = 8,
                dataset: str | None = None, data_root: str | None = None, force: bool = False) -> dict[str, Any]:
    """Convert the authors' model folder into a flowvae run folder that every command can use.

    Writes ``run/model.safetensors`` (flowvae's metadata ``format=flowvae``, ``kind``),
    ``run/import.json`` (provenance: the source folder and file with its SHA-256, their
    ``config.json``, the options and every tensor's mapping) and, last, ``run/config.yaml``, each
    atomically, then loads the folder back with :func:`flowvae.load_run` to check it.

    The imported model computes the authors' function: same bits/dim on the same images and noise
    (with ``encoder_input="lower-edge"``, the default; ``"centre"`` gives flowvae's convention, and
    q(z|x) then sees pixels half a bin higher than in training).

    Args:
        model_dir: the authors' model folder (``config.json`` + ``model.pt`` / ``checkpoint*.tar``).
        run: the run folder to create; an existing non-empty one is refused unless ``force``
            (which never replaces a folder holding training checkpoints or metrics).
        checkpoint: which weights file (see :func:`read_wolf_dir`).
        encoder_input: ``model.encoder_input`` of the imported model.
        image_size: image side in pixels (read from the encoder when ``None``; required without one).
        n_bits: bits per pixel the model was trained on (their train.py's ``--n_bits``, default 8).
        dataset: flowvae data source for later commands (default from the image shape: 3x32
            ``cifar10``, 3x64 ``imagenet64``, 3x128 ``lsun``, 3x256 ``celebahq``, 1x28 ``mnist``,
            else ``folder``).
        data_root: ``data.root`` of the run (where that data set's files are).
        force: replace the config and weights of an earlier import in ``run``.

    Returns:
        ``{"run", "kind", "parameters", "weights", "layout", "tensors", "encoder_input", "image_size",
        "n_bits", "dataset"}``.

    Raises:
        ConfigError: see :func:`translate_config`; a bad ``n_bits`` or ``encoder_input``.
        CheckpointError: see :func:`read_wolf_dir` and :func:`convert_state`; an unusable ``run``.
        DataError: an unknown ``dataset``.
    """
    from safetensors.torch import save as save_safetensors

    from ..config import Config, TrainConfig, save_config
    from ..models.base import create_model
    from ..runs import load_run
    from ..runs.lock import RunLock
    from ..version import __version__

    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise ConfigError(f"n_bits must be an integer in 1..8 (their train.py's --n_bits), got {n_bits!r}")
    run = Path(run)
    _check_target(run, force)
    files = read_wolf_dir(model_dir, checkpoint)
    mcfg = translate_config(files.config, image_size=image_size, encoder_input=encoder_input)
    data = _data_config((mcfg.in_channels, mcfg.image_size), n_bits, dataset, data_root)
    cfg = Config(name=f"wolf-{files.folder.resolve().name}", model=mcfg, data=data, train=TrainConfig())
    model = create_model(cfg)
    assert isinstance(model, FlowVAE)  # narrowing only: both kinds translate_config gives are FlowVAE's
    rows = tensor_map(files.config, model)
    state = convert_state(rows, files.state, model.state_dict(), files.weights)
    model.load_state_dict(state)  # strict: convert_state produced exactly model's names and shapes
    params = sum(p.numel() for p in model.parameters())
    record = {
        "format": "flowvae-import", "source": "github.com/XuezheMax/wolf", "wolf_commit": WOLF_COMMIT,
        "model_dir": str(files.folder.resolve()), "weights": str(files.weights.resolve()),
        "weights_sha256": files.sha256, "weights_layout": files.layout, "key_prefix": files.prefix,
        "checkpoint": files.info, "wolf_config": files.config,
        "options": {"encoder_input": encoder_input, "image_size": mcfg.image_size, "n_bits": n_bits,
                    "dataset": data.dataset, "data_root": data_root},
        "kind": mcfg.kind, "parameters": params, "flowvae_version": __version__,
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tensor_map": [[r.flowvae, r.wolf, r.op] for r in rows],
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save_safetensors(tensors, metadata={"format": "flowvae", "kind": model.kind})
    with RunLock(run):
        safe_io.atomic_write(run / "model.safetensors", blob, root=run)
        safe_io.atomic_write(run / "import.json", json.dumps(record, indent=2).encode(), root=run)
        save_config(cfg, run / "config.yaml")  # last: a folder with config.yaml is complete
    loaded = load_run(run)
    if sum(p.numel() for p in loaded.parameters()) != params:
        raise CheckpointError(f"{run} does not load back as written; delete it and import again")
    return {"run": str(run), "kind": mcfg.kind, "parameters": params, "weights": str(files.weights),
            "layout": files.layout, "tensors": len(tensors), "encoder_input": encoder_input,
            "image_size": mcfg.image_size, "n_bits": n_bits, "dataset": data.dataset}
