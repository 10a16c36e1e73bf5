"""The Glow baselines of the paper: flows without a code, ``v = f(x)``, ``v ~ N(0, I)``.

``refined_glow`` is the paper's refined Glow alone (§3.1, Figure 3: the decoder of the paper's model
without z, its "Glow (refined)" rows of Table 1); ``glow`` is the original Glow of Kingma & Dhariwal
(2018): one coupling per step, halves factored out under learned Gaussians, ``steps`` per level (an
``[a, b]`` entry counts as ``a + b``). Both are configured by :class:`~flowvae.models.flowvae.FlowVAEConfig`
(the fields of the code z are unused), so that their ``config.yaml`` is the paper's model's with
another ``kind``. Everything else is :class:`~flowvae.models.flow_decoder.FlowDecoderModel`'s.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import ConfigError
from .base import ModelSettings, register
from .flow_decoder import FlowDecoderModel
from .flowvae import FlowVAEConfig

__all__ = ["Glow"]


@register
class Glow(FlowDecoderModel):
    """A Glow without a code (``kind`` ``refined_glow`` or ``glow``; module docstring).

    Args:
        cfg: a :class:`~flowvae.models.flowvae.FlowVAEConfig` of kind ``refined_glow`` or ``glow``.
        n_bits: bits per pixel of the modelled data (1..8).

    Raises:
        ConfigError: a config of another kind, or an architecture that cannot be built (message says why).
    """

    config_class: ClassVar[type[ModelSettings]] = FlowVAEConfig
    kinds: ClassVar[dict[str, str]] = {
        "refined_glow": "the paper's refined Glow alone (§3.1), without a global code",
        "glow": "the original Glow (Kingma & Dhariwal, 2018)",
    }
    cfg: FlowVAEConfig

    def __init__(self, cfg: FlowVAEConfig, n_bits: int = 8):
        super().__init__(cfg, n_bits)
        if cfg.kind not in self.kinds:
            raise ConfigError(f"Glow builds the kinds {', '.join(self.kinds)}, not {cfg.kind!r}: build that one with "
                              f"flowvae.create_model(cfg)")
        try:
            self.decoder = self.build_glow(cfg, 0, "glow" if cfg.kind == "glow" else "refined")
        except ValueError as e:
            raise ConfigError(f"cannot build the model: {e}") from None
        self.dim = self.decoder.dim
        self.dequantizer = self.build_dequantizer(cfg)
