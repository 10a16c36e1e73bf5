"""Health checks of a trained model (``flowvae check RUN``).

Each check returns a record (:class:`~flowvae.runs.records.CheckItem`: ``name``, ``ok``, ``detail``
and the figure it measured); :func:`check_model` runs them all and never raises for a failed check,
so a user sees every problem at once.

A record may also carry ``warning=True``: the check passed (``ok`` stays true, and so does the
overall result), but what it found deserves a look. The samples check is the one that warns: a
model whose samples at temperature 1 are finite but saturate the inverse flow or are clamped to
the pixel range in large part is undertrained or unstable, not broken (its likelihoods, round
trip and weights are checked separately, and those failures remain failures).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..flows.actnorm import ActNorm
from ..flows.conv1x1 import InvertibleConv1x1
from ..models.base import GenerativeModel
from ..runs.records import CheckItem, CheckResult
from .sampling import draw_samples, sample_health
from .saturation import NARROW_STD, RANGE_FACTOR, saturation_origin

NARROW_WARNING_FRACTION = 0.05
"""Above this share of narrow latent dimensions the record blames the prior's spread."""

__all__ = ["check_model"]


def _record(name: str, ok: bool, detail: str, **figures: Any) -> CheckItem:
    return CheckItem(name=name, ok=bool(ok), detail=detail, **figures)


def _finite_state(model: GenerativeModel) -> CheckItem:
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    return _record("finite weights", not bad, "all parameters and buffers finite" if not bad
                   else f"{len(bad)} tensors hold NaN/Inf, e.g. {bad[0]}", tensors=bad[:10])


def _actnorms(model: GenerativeModel) -> CheckItem:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, ActNorm)]
    missing = [n for n, m in layers if not bool(m.initialized)]
    return _record("ActNorm initialised", not missing,
                   f"{len(layers)} ActNorm layers, all initialised from data" if not missing
                   else f"{len(missing)} of {len(layers)} ActNorm layers never saw data, e.g. {missing[0]}")


@torch.no_grad()
def _inverses(model: GenerativeModel, tol: float) -> CheckItem:
    """``W @ W^-1 == I`` and ``log|det W|`` against a float64 ``slogdet`` for every 1x1 convolution."""
    worst_inv, worst_det, n = 0.0, 0.0, 0
    for m in model.modules():
        if isinstance(m, InvertibleConv1x1):
            w = m.weight_matrix().double()
            eye = torch.eye(w.shape[0], dtype=torch.float64, device=w.device)
            worst_inv = max(worst_inv, float((w @ m.inverse_matrix().double() - eye).abs().max()))
            worst_det = max(worst_det, abs(float(torch.linalg.slogdet(w)[1]) - float(m.log_abs_det())))
            n += 1
    ok = worst_inv < tol and worst_det < 1e-3 and math.isfinite(worst_inv)
    return _record("1x1 convolution inverses", ok,
                   f"{n} layers; max |W W^-1 - I| = {worst_inv:.1e}, max |log|det W| - slogdet| = {worst_det:.1e}",
                   max_inverse_error=worst_inv, max_logdet_error=worst_det)


@torch.no_grad()
def _round_trip(model: GenerativeModel, images: Tensor) -> list[CheckItem]:
    # Kinds with exact codes are flows: this check reads their bins and decoder, which the base
    # contract does not declare (hence Any).
    flow: Any = model
    z, v = flow.encode(images)
    out = flow.decode(z, v)
    expected = model.quantised(images)
    wrong = int((out != expected).sum())
    exact = _record("exact round trip", wrong == 0,
                    f"{len(images)} test images decoded back exactly" if wrong == 0
                    else f"{wrong} pixels differ after encode/decode of {len(images)} images", pixels_differing=wrong)
    # The same in continuous space: how far the flow's inverse is from exact, in pixel units (1 = one bin).
    x = flow.centres(flow.to_bins(images))
    v2, _ = flow.decoder(x, z)
    x_back, _ = flow.decoder.inverse(v2, z)
    err = float((x_back - x).abs().max()) * flow.n_bins
    cont = _record("inverse accuracy", err < 0.25, f"max |f^-1(f(x)) - x| = {err:.2e} bins "
                   f"(must stay well below 0.5 for exact uint8 round trips)", max_error_bins=err)
    return [exact, cont]


@torch.no_grad()
def _likelihood(model: GenerativeModel, images: Tensor, seed: int) -> CheckItem:
    gen = torch.Generator(device=images.device).manual_seed(seed)
    bpd = model.bits_per_dim(images, 1, gen)["elbo_bpd"]
    bad = int((~torch.isfinite(bpd)).sum())
    return _record("finite log-likelihoods", bad == 0,
                   f"negative ELBO {float(bpd[torch.isfinite(bpd)].mean()):.4f} bits/dim on {len(images)} images"
                   if bad == 0 else f"{bad} of {len(images)} images have a non-finite bound", bpd=float(bpd.mean()))


@torch.no_grad()
def _samples(model: GenerativeModel, n: int, seed: int) -> CheckItem:
    """Samples at temperature 1, judged by :func:`~flowvae.evaluation.sampling.sample_health`: NaN/Inf
    pixels fail; saturated or heavily clamped samples (an undertrained or unstable model) warn."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    x, stats = draw_samples(model, n, 1.0, generator=gen)
    level, detail = sample_health(stats)
    ok = level != "fail" and x.shape[0] == n
    return _record("samples", ok, detail, warning=True if level == "warn" else None, stats=stats)


def _saturation_origin(model: GenerativeModel, images: Tensor, n: int, seed: int) -> CheckItem:
    """Where the samples check's saturated samples start to diverge (:func:`saturation_origin`)."""
    found = saturation_origin(model, images, n, 1.0, seed)
    starts = ", ".join(f"{place} ({count})" for place, count in found["first_departure"].items()) or "none"
    detail = (f"{found['saturated']} of {n} samples at temperature 1 saturated; they first leave {RANGE_FACTOR:g} "
              f"times the range the test images reach at: {starts}")
    if found["unattributed"]:
        detail += f", {found['unattributed']} without leaving it before saturating"
    if found["narrow_fraction"] is not None:
        lo, hi = found["latent_std_range"]
        if found["narrow_fraction"] >= NARROW_WARNING_FRACTION:
            detail += (f". The latent of the test images is narrower than the prior (standard deviation below "
                       f"{NARROW_STD:g}) in {100 * found['narrow_fraction']:.0f}% of its dimensions (from {lo:.3g} to "
                       f"{hi:.3g}), where samples at temperature 1 lie beyond the data")
        else:
            detail += (f". The latent of the test images has about the prior's spread (standard deviation "
                       f"{lo:.3g} to {hi:.3g} per dimension): the samples leave the data where the coupling "
                       f"networks extrapolate, not through the prior")
    at = ", ".join(f"{count} at {t}" for t, count in found["saturated_at"].items())
    detail += (f". Saturated samples at lower temperatures: {at}. Train longer, or sample at a "
               f"temperature that does not saturate (flowvae sample --temperature)")
    return _record("where samples saturate", True, detail, warning=True, origin=found)


def check_model(model: GenerativeModel, images: Tensor, seed: int = 0, tol: float = 1e-4) -> CheckResult:
    """Verify a trained model on real test images.

    Checks: every parameter and buffer finite; every ActNorm initialised; for every invertible
    1x1 convolution ``W W^-1 = I`` (max error below ``tol``) and ``log|det W|`` equal to a
    float64 ``slogdet``; for kinds with exact codes, the uint8 round trip ``decode(encode(x)) == x``
    and the continuous inverse error in units of one quantisation bin; finite bounds (bits/dim)
    for every image; samples at temperature 1 (:func:`~flowvae.evaluation.sampling.sample_health`:
    NaN/Inf pixels fail, saturated or mostly clamped samples warn); where samples saturated, for
    kinds with exact codes, where their inverse starts to diverge and how narrow the test images'
    latent is against the prior (:func:`~flowvae.evaluation.saturation.saturation_origin`). Checks that concern layers or
    capabilities a model does not have are left out.

    Args:
        model: a model in eval mode (e.g. from :func:`flowvae.load_run`).
        images: uint8 test images ``[N, C, H, W]`` on the model's device.

    Returns:
        the record of ``check.json`` (:class:`~flowvae.runs.records.CheckResult`, a read-only mapping
        too): ``{"ok": bool, "warnings": [name, ...], "checks": [record, ...]}``; each check's record has
        ``name``, ``ok``, ``detail``, and ``warning: True`` when it passed with a warning; the
        samples record also holds ``stats`` (:func:`~flowvae.evaluation.sampling.draw_samples`).
    """
    model.eval()
    checks = [_finite_state(model)]
    if any(isinstance(m, ActNorm) for m in model.modules()):
        checks.append(_actnorms(model))
    if any(isinstance(m, InvertibleConv1x1) for m in model.modules()):
        checks.append(_inverses(model, tol))
    round_trip = (lambda: _round_trip(model, images)) if model.capabilities.exact_codes else (lambda: [])
    n = min(len(images), 16)

    def origin() -> list[CheckItem]:
        samples = checks[-1]
        saturated = (samples.stats or {}).get("saturated_samples") if samples.name == "samples" else None
        if not saturated or not model.capabilities.exact_codes or len(images) < 2:
            return []
        return [_saturation_origin(model, images, n, seed)]
    for fn in (round_trip, lambda: [_likelihood(model, images, seed)], lambda: [_samples(model, n, seed)], origin):
        try:
            checks.extend(fn())
        except (RuntimeError, ValueError) as e:  # a broken model may fail inside torch
            checks.append(_record("model runs", False, f"{type(e).__name__}: {str(e).splitlines()[0]}"))
    return CheckResult(ok=all(c.ok for c in checks), warnings=[c.name for c in checks if c.warning], checks=checks)
