"""Progress bars for long jobs: a tqdm bar on a terminal, nothing otherwise (CI, clusters, pipes).

``flowvae`` commands turn bars on when standard error is a terminal and ``-q`` was not given;
library calls default to no bar. Under DDP only rank 0 shows one (the trainer decides).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

__all__ = ["progress", "bars_enabled", "set_bars"]

T = TypeVar("T")
_enabled = False


def set_bars(enabled: bool) -> None:
    """Turn progress bars of library loops (evaluation, features, sampling, FID) on or off."""
    global _enabled
    _enabled = bool(enabled) and int(os.environ.get("RANK", "0")) == 0


def bars_enabled() -> bool:
    return _enabled


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "batch") -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar (rate and ETA) when bars are on, else unchanged."""
    if not _enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=False)
