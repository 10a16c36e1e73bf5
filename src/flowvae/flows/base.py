"""The invertible-layer contract shared by every flow in flowvae.

Convention (written once, here; every layer follows it):

* ``forward(x, cond=None) -> (y, logdet)`` maps **data to latent**. ``logdet`` has shape
  ``[batch]`` and is ``log |det dy/dx|`` in nats, summed over all non-batch dimensions.
* ``inverse(y, cond=None) -> (x, logdet)`` maps latent to data and returns
  ``log |det dx/dy|``, i.e. exactly the negative of the forward log-determinant at the
  corresponding point, so ``forward(x).logdet + inverse(y).logdet == 0``.
* ``cond`` is an optional conditioning tensor (for flowvae: the global code ``z`` of shape
  ``[batch, d_z]``). Layers that ignore it accept it anyway so they compose freely.

With this sign convention the change-of-variables formula (paper eq. 4) reads
``log p(x) = log p_v(f(x)) + logdet_forward(x)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

from torch import Tensor, nn

__all__ = ["Flow", "FlowSequence", "data_init"]


class Flow(nn.Module):
    """Base class of invertible layers; see the module docstring for the contract."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError


class FlowSequence(Flow):
    """Composition ``f = f_n o ... o f_1`` of flows; the log-determinants add up.

    Args:
        flows: the layers, in data-to-latent order.
    """

    def __init__(self, flows: Iterable[Flow]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def __iter__(self) -> Iterator[Flow]:
        # nn.ModuleList is not generic (it yields nn.Module); this one is built from flows only.
        return cast(Iterator[Flow], iter(self.flows))

    def __len__(self) -> int:
        return len(self.flows)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for flow in self.flows:
            x, ld = flow(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for flow in reversed(self.flows):
            y, ld = cast(Flow, flow).inverse(y, cond)  # a ModuleList of flows, see __iter__
            logdet = logdet + ld
        return y, logdet


class data_init:  # noqa: N801 - used as a context manager, reads like a statement
    """Context manager that turns on data-dependent initialisation of ActNorm layers.

    Inside the context, every :class:`~flowvae.flows.actnorm.ActNorm` of ``module`` that has
    not been initialised yet sets its scale and bias from the batch it sees, so that its output
    has zero mean and unit variance per channel (Kingma & Dhariwal 2018, §3.1). The
    ``initialized`` flag is a buffer, saved in the state dict, so a loaded model is never
    re-initialised. Outside the context ActNorm is a plain affine layer.

    Example::

        with data_init(model):
            model.nll(batch)      # one forward pass initialises every ActNorm in order
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> nn.Module:
        for m in self.module.modules():
            if hasattr(m, "_data_init"):
                # nn.Module.__setattr__ is annotated for Tensor/Module values only; the flag is a plain bool.
                m._data_init = True  # type: ignore[assignment]
        return self.module

    def __exit__(self, *exc) -> None:
        for m in self.module.modules():
            if hasattr(m, "_data_init"):
                m._data_init = False  # type: ignore[assignment]  # see __enter__
