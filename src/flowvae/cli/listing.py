"""``flowvae presets``: every preset's model kind, parameter count and data set."""

from __future__ import annotations

from typing import Any

__all__ = ["preset_rows"]


def _count(cfg: Any) -> int:
    """Parameters of the model of ``cfg``, built on the meta device (no memory, no initialisation)."""
    import torch

    from ..models import create_model

    with torch.device("meta"):
        return sum(p.numel() for p in create_model(cfg).parameters())


def preset_rows() -> dict[str, dict[str, Any]]:
    """One row per preset: ``kind``, ``parameters``, ``refined_glow_parameters`` (the refined Glow
    baseline of the same architecture without z, beside the paper's ``flowvae`` presets as Table 3
    compares them; ``None`` for the other kinds), ``dataset`` and ``image`` ``[channels, side]``."""
    from ..config import apply_overrides
    from ..presets import PRESETS

    rows = {}
    for name, make in PRESETS.items():
        cfg = make()
        # The baseline drops every z-only field (free bits, the auxiliary decoder, the low-pass shift).
        no_z = ["model.kind=refined_glow", "model.free_bits=0", "model.aux_decoder_weight=0", "model.aux_low_pass=0",
                "model.low_pass_shift=0"]
        glow = _count(apply_overrides(make(), no_z)) if cfg.model.kind == "flowvae" else None
        rows[name] = {"kind": cfg.model.kind, "parameters": _count(cfg), "refined_glow_parameters": glow,
                      "dataset": cfg.data.dataset, "image": [cfg.model.in_channels, cfg.model.image_size]}
    return rows
