"""Stage 1 of the import: the authors' ``config.json`` -> flowvae's model config (:func:`translate_config`).

Every key is read, with the defaults of the authors' constructors; a key or value without a flowvae
counterpart is refused in one line naming it (:class:`~flowvae.errors.ConfigError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ...errors import ConfigError
from ...models.flowvae import FlowVAEConfig

__all__ = ["ENCODER_INPUTS", "EncoderInput", "translate_config"]

EncoderInput = Literal["centre", "lower-edge"]
"""What the imported encoder sees (``model.encoder_input``)."""
ENCODER_INPUTS: tuple[EncoderInput, ...] = ("centre", "lower-edge")
"""The choices of ``import_wolf(encoder_input=...)``."""

_REQUIRED = object()


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


@dataclass(frozen=True)
class _Flow:
    """``generator.flow`` as read (their ``Glow``); ``num_steps`` not yet checked beyond its length."""

    levels: int
    in_channels: int
    hidden: list[int]
    num_steps: list
    factors: list[int]
    h_type: str | None
    h_channels: int
    transform: Literal["affine", "additive"]
    alpha: float


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
    flow_section = _Section(gen.get("flow"), "generator.flow")
    gen.done()
    flow = _read_flow(flow_section)
    steps, factor_out = _steps(flow)
    kind = disc.choice("type", ("gaussian", "base"))
    fields: dict[str, Any] = {}
    prior_alpha: float | None = None
    if kind == "base":
        image_size = _check_base(disc, flow, image_size)
    else:
        fields, image_size, prior_alpha = _read_gaussian(disc, flow, image_size)
    alpha = _shared_alpha(flow, prior_alpha)
    try:
        return FlowVAEConfig(kind="flowvae" if kind == "gaussian" else "refined_glow", in_channels=flow.in_channels,
                             image_size=image_size, steps=steps, hidden=flow.hidden, factor_out=factor_out or 4,
                             coupling=flow.transform, alpha=alpha, conv1x1="plain", dequantization="uniform",
                             encoder_input=encoder_input, **fields)
    except ConfigError as e:
        raise ConfigError(f"config.json translates to a flowvae model config that is refused: {e}") from None


def _read_flow(flow: _Section) -> _Flow:
    """``generator.flow`` (their ``Glow``): each key checked, any other key refused."""
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
    return _Flow(levels, in_channels, hidden, num_steps, factors, h_type, h_channels, transform, alpha)


def _steps(flow: _Flow) -> tuple[list[int | list[int]], int | None]:
    """``model.steps`` and ``model.factor_out`` (``None``: no fine-grained level) for their ``num_steps``."""
    steps: list[int | list[int]] = []
    factor_out: int | None = None
    for level, entry in enumerate(flow.num_steps):
        key = f"generator.flow.num_steps[{level}]"
        if level in (0, flow.levels - 1):
            if isinstance(entry, bool) or not isinstance(entry, int) or entry < 0:
                raise ConfigError(f"config.json: {key} (the {'first' if level == 0 else 'last'} level) must be a "
                                  f"step count, got {_show(entry)}")
            steps.append(entry)
            continue
        factor = flow.factors[level - 1]
        if not isinstance(entry, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in entry):
            raise ConfigError(f"config.json: {key} (an internal level) must be a list of step counts, "
                              f"got {_show(entry)}")
        if len(entry) >= factor:
            raise ConfigError(f"config.json: {key} has {len(entry)} groups for factor "
                              f"generator.flow.factors[{level - 1}] = {factor}; the authors' code needs fewer")
        if len(entry) == 2:
            if factor_out is not None and factor != factor_out:
                raise ConfigError(f"config.json: generator.flow.factors = {_show(flow.factors)} mixes factors for "
                                  f"fine-grained levels; flowvae has one model.factor_out for all of them")
            factor_out = factor
            steps.append(list(entry))
        elif len(entry) == 1 and factor == 2:
            steps.append(entry[0])  # one factor-out of half the channels: flowvae's plain inner level
        else:
            raise ConfigError(f"config.json: {key} = {_show(entry)} with factor {factor} has no flowvae "
                              f"counterpart: flowvae's inner levels factor out twice (two groups, "
                              f"model.factor_out) or once by half (one group with factor 2)")
    return steps, factor_out


def _check_base(disc: _Section, flow: _Flow, image_size: int | None) -> int:
    """Discriminator ``"base"``: no encoder, so no code z, and the image size must be given; returns it."""
    disc.done()
    if flow.h_type is not None or flow.h_channels:
        raise ConfigError(f"config.json: generator.flow.h_type = {_show(flow.h_type)} conditions the flow on a code "
                          f"z, but discriminator.type = \"base\" has no encoder to give one")
    if image_size is None:
        raise ConfigError("config.json does not say the image size (their train.py takes it as --image_size) "
                          "and this model has no encoder to read it from; give the image size")
    return image_size


def _read_gaussian(disc: _Section, flow: _Flow, image_size: int | None
                   ) -> tuple[dict[str, Any], int, float]:
    """Discriminator ``"gaussian"``: flowvae's encoder and prior fields, the image size the encoder
    takes, and the prior flow's ``alpha``."""
    if flow.h_type != "global_linear":
        raise ConfigError(f"config.json: generator.flow.h_type = {_show(flow.h_type)}: with discriminator.type = "
                          f"\"gaussian\" flowvae needs \"global_linear\" (z enters every coupling, eq. 7)")
    d_z = disc.count("dim", minimum=2)
    in_dim = disc.count("in_dim", minimum=1)
    enc = _Section(disc.get("encoder"), "discriminator.encoder")
    prior = _Section(disc.get("prior"), "discriminator.prior")
    disc.done()
    widths, maps, enc_levels = _read_encoder(enc, flow.in_channels)
    if flow.h_channels != d_z:
        raise ConfigError(f"config.json: generator.flow.h_channels = {flow.h_channels} differs from "
                          f"discriminator.dim = {d_z}; both are the dimension of z")
    side = math.isqrt(in_dim // maps) if in_dim % maps == 0 else 0
    if side * side * maps != in_dim:
        raise ConfigError(f"config.json: discriminator.in_dim = {in_dim} is not out_planes ({maps}) times a "
                          f"square number of positions")
    size = side * 2 ** enc_levels
    if image_size is not None and image_size != size:
        raise ConfigError(f"the image size {image_size} does not fit config.json: its encoder "
                          f"(discriminator.in_dim = {in_dim}, {enc_levels} levels) takes {size}x{size} images")
    prior_steps, prior_hidden, prior_alpha = _read_prior(prior, d_z)
    fields = dict(d_z=d_z, encoder_widths=widths, encoder_maps=maps, prior_steps=prior_steps,
                  prior_hidden=prior_hidden)
    return fields, size, prior_alpha


def _read_encoder(enc: _Section, in_channels: int) -> tuple[list[int], int, int]:
    """``discriminator.encoder`` (their ``GlobalResNetEncoderBatchNorm``): widths, output maps, levels."""
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
    return widths, maps, enc_levels


def _read_prior(prior: _Section, d_z: int) -> tuple[int, int, float]:
    """``discriminator.prior`` (their ``FlowPrior``): steps, hidden features, ``alpha``."""
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
    return prior_steps, prior_hidden, prior_alpha


def _shared_alpha(flow: _Flow, prior_alpha: float | None) -> float:
    """flowvae's one ``model.alpha``, shared by the decoder's couplings and the prior's; additive
    couplings ignore it, so only the alphas that act must agree."""
    acting = ([("generator.flow.alpha", flow.alpha)] if flow.transform == "affine" else []) \
        + ([("discriminator.prior.alpha", prior_alpha)] if prior_alpha is not None else [])
    if len({a for _, a in acting}) > 1:
        raise ConfigError(f"config.json: {acting[0][0]} = {acting[0][1]:g} and {acting[1][0]} = {acting[1][1]:g} "
                          f"differ; flowvae has one model.alpha for both")
    return acting[0][1] if acting else 1.0
