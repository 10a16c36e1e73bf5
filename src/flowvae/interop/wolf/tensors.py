"""Stages 2 and 3 of the import: the tensor name map (:func:`tensor_map`) and the conversion of the
authors' state dict by it (:func:`convert_state`).

Their modules, in the order their constructors build them (``Glow`` -> ``MultiScaleArchitecture``
-> ``GlowStep``/``MultiScalePrior``; ``GlobalResNetEncoderBatchNorm``; ``FlowPrior``), are walked side
by side with flowvae's modules in order of operation, giving one :class:`TensorRow` per tensor with
the operation that maps theirs onto ours (layout only: see :mod:`flowvae.interop.wolf`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import CheckpointError, ConfigError
from ...models.flow_decoder import FlowDecoderModel
from ...models.flowvae import FlowVAE

__all__ = ["OPS", "TensorRow", "convert_state", "tensor_map"]

OPS = ("copy", "flatten", "flatten+add_log2", "copy+times2", "swap_halves", "true", "drop")
"""The operations of :class:`TensorRow`."""


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


# ---------------------------------------------------------------------------------------------- their modules

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


# ---------------------------------------------------------------------------------------------- pairing

def _our_sites(root: nn.Module, prefix: str) -> list[tuple[str, str, nn.Module]]:
    """flowvae's invertible layers under ``root``, in order of operation (registration order)."""
    from ...flows.actnorm import ActNorm
    from ...flows.conv1x1 import InvertibleConv1x1
    from ...flows.coupling import AffineCoupling

    kinds = ((ActNorm, "actnorm"), (InvertibleConv1x1, "conv1x1"), (AffineCoupling, "coupling"))
    out: list[tuple[str, str, nn.Module]] = []
    for name, m in root.named_modules(prefix=prefix):
        for cls, kind in kinds:
            if isinstance(m, cls):
                out.append((kind, name, m))
    return out


def _layer_rows(kind: str, ours: str, module: nn.Module, theirs: str, affine: bool,
                first: bool = False) -> list[TensorRow]:
    from ...networks.coupling_nets import ConvCouplingNet, MLPCouplingNet

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


def _encoder_rows(model: FlowVAE, levels: int) -> list[TensorRow]:
    """The encoder (their ``GlobalResNetEncoderBatchNorm`` of ``levels`` levels and ``discriminator.fc``)."""
    from ...networks.encoder import ResNetBlock

    blocks = [(n, m) for n, m in model.encoder.named_modules(prefix="encoder") if isinstance(m, ResNetBlock)]
    wblocks = [f"discriminator.encoder.net.resnet{lv}.main.{j}" for lv in range(levels) for j in (0, 1)]
    if len(blocks) != len(wblocks):
        raise RuntimeError(f"the encoder has {len(blocks)} residual blocks here and {len(wblocks)} in config.json")
    rows: list[TensorRow] = []
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
    return rows + [TensorRow(f"encoder.fc.{p}", f"discriminator.fc.linear.{p}", "copy")
                   for p in ("weight_v", "weight_g", "bias")]  # mu and logvar are in the same order in both


def tensor_map(wolf: Mapping[str, Any], model: FlowDecoderModel) -> list[TensorRow]:
    """One :class:`TensorRow` per tensor of the authors' state dict and of ``model``'s.

    Derived from the configuration alone: the authors' module names are those their constructors
    build for ``config.json`` (:func:`~flowvae.interop.wolf.config.translate_config` has validated
    it), paired in order of operation with ``model``'s layers (``model`` built from
    :func:`~flowvae.interop.wolf.config.translate_config`'s result).

    Raises:
        ConfigError: ``config.json`` is not importable (see :func:`~flowvae.interop.wolf.config.translate_config`).
        RuntimeError: the two walks disagree or leave a tensor of ``model`` unmapped (a bug here).
    """
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
        assert isinstance(model, FlowVAE)  # narrowing only: a gaussian discriminator is the paper's model
        rows += _encoder_rows(model, disc["encoder"]["levels"])
        for kind, name, m, wname in _paired(_our_sites(model.prior, "prior"), _wolf_prior(disc["prior"]["num_steps"]),
                                            "prior"):
            rows += _layer_rows(kind, name, m, wname, True)
    ours = set(model.state_dict())
    mapped = [r.flowvae for r in rows if r.flowvae is not None]
    if set(mapped) != ours or len(mapped) != len(ours):
        left = sorted(ours - set(mapped)) or sorted(set(mapped) - ours)
        raise RuntimeError(f"the tensor map of this config does not cover flowvae's model exactly (e.g. {left[:3]})")
    return rows


# ---------------------------------------------------------------------------------------------- conversion

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
    _check_names(rows, wolf_state, source)
    out: dict[str, Tensor] = {}
    for row in rows:
        if row.op == "drop" or row.flowvae is None:
            continue
        target = ours[row.flowvae]
        if row.op == "true":
            out[row.flowvae] = torch.ones_like(target)
            continue
        assert row.wolf is not None  # every row but "true" names their tensor
        out[row.flowvae] = _convert(row, wolf_state[row.wolf], target, source)
    return out


def _check_names(rows: list[TensorRow], wolf_state: Mapping[str, Tensor], source: str | Path) -> None:
    """Refuse a state dict with a tensor missing or left over (the first named, the others counted)."""
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


def _convert(row: TensorRow, theirs: Any, target: Tensor, source: str | Path) -> Tensor:
    """``row``'s operation applied to their tensor ``theirs``, in ``target``'s shape and dtype."""
    if not isinstance(theirs, Tensor):
        raise CheckpointError(f"{source}: entry {row.wolf!r} is a {type(theirs).__name__}, not a tensor")
    t = theirs.detach().cpu()
    if row.op in ("flatten", "flatten+add_log2"):
        t = t.reshape(-1)
    if tuple(t.shape) != tuple(target.shape):
        raise CheckpointError(f"{source}: tensor {row.wolf!r} has shape {list(theirs.shape)}, but the "
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
    return t.to(target.dtype).contiguous()
