"""Where a flow's samples saturate (issue 33, item 6; ``flowvae check``).

An affine coupling's inverse divides by its scale ``s`` with no bound when ``alpha = 1``
(:mod:`flowvae.flows.coupling`), so a sample whose latent lies where training never put one can
grow without limit from one coupling to the next until it reaches
:data:`~flowvae.flows.coupling.INVERSE_LIMIT`. The coupling that saturates is the end of that
cascade, not its start. :func:`saturation_origin` finds the start: the first coupling, in the
order the inverse runs, at which a sample's values leave ``RANGE_FACTOR`` times the range that
real images reach there in the forward pass; and it measures how much narrower the latents of
real images are than the prior that samples are drawn from.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from ..flows.coupling import AffineCoupling, track_ranges
from ..flows.glow import ConditionalGlow, FlowPrior
from ..models.base import GenerativeModel

__all__ = ["RANGE_FACTOR", "NARROW_STD", "coupling_places", "dequantised_codes", "saturation_origin"]

RANGE_FACTOR = 2.0
"""A sample has left the data's range at a coupling once its values there exceed this many times
the largest magnitude real images reach at that coupling."""

NARROW_STD = 0.5
"""A latent dimension is narrow when its standard deviation over real images is below this: a
draw from ``N(0, 1)`` at temperature 1 then lies beyond two of the data's standard deviations
there about a third of the time."""


def coupling_places(model: nn.Module) -> dict[int, str]:
    """A readable place for every :class:`~flowvae.flows.coupling.AffineCoupling` of ``model``, by
    ``id``: ``"decoder level L of N"`` for the couplings of a
    :class:`~flowvae.flows.glow.ConditionalGlow` (level 0 the finest, at full resolution),
    ``"prior of z"`` for those of a :class:`~flowvae.flows.glow.FlowPrior`, else the module's name."""
    places = {id(m): name for name, m in model.named_modules() if isinstance(m, AffineCoupling)}
    for module in model.modules():
        if isinstance(module, FlowPrior):
            places.update({id(m): "prior of z" for m in module.modules() if isinstance(m, AffineCoupling)})
        if isinstance(module, ConditionalGlow):
            # The original Glow squeezes before its first level, the refined one after it.
            first = 1 if module.architecture == "glow" else 0
            total = sum(kind == "squeeze" for kind, _ in module.ops) + 1 - first
            squeezes = 0
            for kind, arg in module.ops:
                squeezes += kind == "squeeze"
                if kind == "flow":
                    level = squeezes - first
                    places.update({id(m): f"decoder level {level} of {total}"
                                   for m in module.flows[arg].modules() if isinstance(m, AffineCoupling)})
    return places


@torch.no_grad()
def dequantised_codes(model: GenerativeModel, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """v ``[N, C*H*W]`` of uint8 ``images`` dequantised as the bound dequantises them (z: the
    posterior mean), for a flow kind (``model.capabilities.exact_codes``): the distribution the
    prior N(0, I) is fitted to. ``encode`` puts x at the bin centres instead, where a constant
    background has a spread of exactly 0."""
    flow: Any = model  # the exact-code kinds are flow decoders, whose parts the base contract does not declare
    bins = flow.to_bins(images)
    z = flow.posterior(bins)[0] if flow.uses_z else None
    return flow.decoder(flow.dequantize(bins, generator)[0], z)[0]


@torch.no_grad()
def saturation_origin(model: GenerativeModel, images: Tensor, n: int = 16, temperature: float = 1.0,
                      seed: int = 0, lower_temperatures: tuple[float, ...] = (0.9, 0.8, 0.7)) -> dict[str, Any]:
    """Where ``n`` samples at ``temperature`` start to saturate, against real images.

    Runs the bound on ``images`` to get, per coupling, the largest ``|x_b|`` real images reach
    (:func:`~flowvae.flows.coupling.track_ranges`), then draws ``n`` samples with the seed's
    generator (the draw of ``flowvae check``'s samples check) and, for each saturated one, finds
    the first coupling of the inverse at which its ``|x_b|`` exceeds :data:`RANGE_FACTOR` times
    that range. Also counts the latent dimensions of real images, dequantised as in the bound,
    narrower than the prior (:data:`NARROW_STD`), for kinds with exact codes, and the saturated
    samples at each of ``lower_temperatures``.

    Args:
        model: a flow kind (``model.capabilities.exact_codes``) in eval mode.
        images: uint8 real images ``[N, C, H, W]`` (N >= 2) on the model's device.
        n: samples to draw.
        temperature: of the local latent; the global code is drawn at temperature 1.
        seed: of the draws and the dequantisation noise.
        lower_temperatures: where to count saturated samples again.

    Returns:
        ``{"samples": n, "saturated": count, "temperature": t, "first_departure": {place: count of
        saturated samples}, "unattributed": saturated samples that never left the range by the
        factor (they saturate in a coupling real images never exercise), "narrow_fraction":
        fraction of the latent's dimensions narrower than NARROW_STD (None without exact codes),
        "latent_std_range": [min, max] of those standard deviations, "saturated_at": {t: count}}``.
        Places are :func:`coupling_places`'s.

    Raises:
        ValueError: fewer than 2 images.
    """
    if len(images) < 2:
        raise ValueError(f"saturation_origin needs at least 2 real images to measure their range, got {len(images)}")
    places = coupling_places(model)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    with track_ranges() as seen:
        model.bits_per_dim(images, 1, gen)
    reach: dict[int, float] = {}
    for layer, m in seen:
        reach[id(layer)] = max(reach.get(id(layer), 0.0), float(m.max()))

    def draw(t: float) -> tuple[Tensor, list[tuple[AffineCoupling, Tensor]]]:
        g = torch.Generator(device=model.device).manual_seed(seed)
        with track_ranges() as steps:
            drawn = model.draw(n, t, generator=g)
        none = torch.zeros(n, dtype=torch.bool)  # a kind without continuous samples cannot saturate
        return none if drawn.saturated is None else drawn.saturated.cpu(), steps

    saturated, steps = draw(temperature)
    first: Counter[str] = Counter()
    unattributed = 0
    for i in torch.nonzero(saturated).flatten().tolist():
        place = next((places.get(id(layer), "?") for layer, m in steps
                      if m.shape[0] == n and id(layer) in reach and float(m[i]) > RANGE_FACTOR * reach[id(layer)]),
                     None)
        if place is None:
            unattributed += 1
        else:
            first[place] += 1
    narrow, std_range = None, None
    if model.capabilities.exact_codes:
        std = dequantised_codes(model, images, gen).float().std(0)
        narrow = float((std < NARROW_STD).float().mean())
        std_range = [float(std.min()), float(std.max())]
    return {"samples": n, "saturated": int(saturated.sum()), "temperature": float(temperature),
            "first_departure": dict(first.most_common()), "unattributed": unattributed,
            "narrow_fraction": narrow, "latent_std_range": std_range,
            "saturated_at": {f"{t:g}": int(draw(t)[0].sum()) for t in lower_temperatures}}
