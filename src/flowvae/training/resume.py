"""What a resume may change: the checkpoint's config against the one given (``--resume``), and
the optimiser settings put into a restored optimiser after ``--allow-changes``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config, DataConfig, TrainConfig, config_from_dict
from ..errors import CheckpointError, ConfigError, FlowVAEError
from .schedules import CosineAnneal, lr_multiplier

__all__ = ["apply_optimiser_settings", "check_resumed_config"]


def check_resumed_config(saved: Any, cfg: Config, path: Path, allow_changes: bool) -> list[str]:
    """The settings of ``cfg`` that differ from ``saved`` (the checkpoint's config mapping, or ``None``
    for a checkpoint without one), one ``"section.field old -> new"`` each; the resumable ones
    (``TrainConfig.resumable``, ``DataConfig.resumable``) are not compared.

    Raises:
        CheckpointError: ``saved`` does not parse. ConfigError: a changed setting without
            ``allow_changes`` (it would not continue the same run).
    """
    if saved is None:
        return []
    try:
        then = config_from_dict(saved).to_dict()
    except FlowVAEError as e:
        raise CheckpointError(f"{path} holds a config this flowvae cannot read ({e})") from None
    now = cfg.to_dict()
    changed = []
    for section in ("model", "data", "train"):
        a, b = then[section], now[section]
        for key in sorted(set(a) | set(b)):
            if (section == "train" and key in TrainConfig.resumable) or (section == "data" and key in DataConfig.resumable):
                continue
            if a.get(key) != b.get(key):
                changed.append(f"{section}.{key} {a.get(key)!r} -> {b.get(key)!r}")
    if changed and not allow_changes:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ConfigError(f"--resume with changed settings ({'; '.join(changed[:3])}{more}): {path.name} "
                          f"would not continue the same run. Undo the change, start a new --run folder, or "
                          f"pass --allow-changes to change it on purpose; a plain resume may change only "
                          f"train.{{{','.join(sorted(TrainConfig.resumable))}}} and "
                          f"data.{{{','.join(sorted(DataConfig.resumable))}}}")
    return changed


def apply_optimiser_settings(opt: torch.optim.Optimizer, sched: Any, tc: TrainConfig) -> None:
    """Put ``tc``'s learning rate, schedule, betas, eps and weight decay into an optimiser and
    schedule loaded from a checkpoint (which restores the old ones), after ``--allow-changes``:
    they take effect at the next step, on the same schedule position."""
    sched.base_lrs = [tc.lr for _ in opt.param_groups]
    # A cosine anneal keeps the progress it has made (its horizon may have been moved to a time limit);
    # one that starts now takes the position it would have had from the first step on.
    kept = sched.lr_lambdas[0]
    if not (tc.lr_schedule == "cosine" and isinstance(kept, CosineAnneal)):
        kept = lr_multiplier(tc.lr_schedule, tc.warmup_steps, tc.lr_decay, tc.steps)
    sched.lr_lambdas = [kept for _ in opt.param_groups]
    for g in opt.param_groups:
        g.update(initial_lr=tc.lr, lr=tc.lr * sched.lr_lambdas[0](sched.last_epoch), betas=tuple(tc.betas),
                 eps=tc.eps, weight_decay=tc.weight_decay)
