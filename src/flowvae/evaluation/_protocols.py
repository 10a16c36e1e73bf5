"""The optional methods that a model declares with a capability, as typing protocols.

:class:`~flowvae.models.base.GenerativeModel` declares only the methods every kind has; a kind
with a capability also has that capability's methods (module docstring of
:mod:`flowvae.models.base`). The evaluation functions check the capability with
``model.require(...)`` and then view the model through the matching protocol (``typing.cast``),
so that the type checker knows the methods exist; nothing is checked at run time by these.
What evaluation may ask of a model with an invertible decoder (the flow kinds: bins, decoder,
prior, the inverse's accuracy) is :class:`~flowvae.models.flow_decoder.InvertibleDecoder`,
re-exported here.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

from ..models.base import Samples
from ..models.flow_decoder import InvertibleDecoder

__all__ = ["ExactCodes", "GlobalLocal", "InvertibleDecoder", "VectorLatent", "Reconstructing"]


class ExactCodes(Protocol):
    """``exact_codes``: ``decode(*encode(x)) == x`` on uint8 images (as quantised to the model's bits)."""

    def encode(self, x: Tensor) -> Any: ...

    def decode(self, *codes: Any) -> Tensor: ...


class GlobalLocal(Protocol):
    """``global_local``: the switch operation and the 2-D interpolation of real images (uint8 in and
    out); ``switch_samples`` is ``switch`` as :class:`~flowvae.models.base.Samples` (``saturated``
    ``[P, 4]`` for a flow's inverse, else ``None``); ``manipulate_samples`` is ``manipulate`` (edits
    that keep the local code) as :class:`~flowvae.models.base.Samples`."""

    def switch(self, x1: Tensor, x2: Tensor) -> Tensor: ...

    def switch_samples(self, x1: Tensor, x2: Tensor) -> Samples: ...

    def manipulate_samples(self, x: Tensor, direction: Tensor, alphas: list[float]) -> Samples: ...

    def interpolate(self, x1: Tensor, x2: Tensor, alphas: list[float] | None = None,
                    betas: list[float] | None = None, spherical: bool = False) -> Tensor: ...


class VectorLatent(Protocol):
    """``vector_latent``: posterior means ``[B, latent_dim]``, latent traversals and edits along a
    direction of the latent (uint8 out)."""

    def latent_mean(self, x: Tensor) -> Tensor: ...

    def manipulate(self, x: Tensor, direction: Tensor, alphas: list[float]) -> Tensor: ...

    def traverse(self, x_single: Tensor, dim_values: list[float], dims: list[int] | None = None,
                 **options: Any) -> Tensor: ...


class Reconstructing(Protocol):
    """``reconstruction``: images from their code alone. Kinds whose decoder ends in a distribution
    give the likelihood and mean of ``x`` given its code; flow kinds (``exact_codes`` too) decode
    the code with a fresh local code at a temperature."""

    def reconstruction_bits(self, x: Tensor) -> Tensor: ...

    def reconstruction_mean(self, x: Tensor) -> Tensor: ...

    def reconstruct(self, x: Tensor, *args: Any) -> Tensor: ...
