"""The cells that the HTML report (:mod:`flowvae.report`) and the model card (:mod:`flowvae.hub`)
both write, so that a figure reads the same on both. Values come from files of a run folder, which
may hold anything: a value that should be a number is formatted only when it is one."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite", "fmt_duration", "fmt_pct", "one_line"]


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage with two decimals (``0.8933`` -> ``"89.33%"``), else ``"–"``."""
    return f"{100 * v:.2f}%" if finite(v) else "–"


def fmt_duration(s: Any) -> str:
    """Seconds as ``"1,343.7 s (0:22:24)"``, else ``"–"`` (a negative time is a damaged file)."""
    if not finite(s) or s < 0:
        return "–"
    whole = int(round(s))
    h, rem = divmod(whole, 3600)
    return f"{s:,.1f} s ({h}:{rem // 60:02d}:{rem % 60:02d})"


def one_line(e: BaseException) -> str:
    """An error's message on one line (its type when it has none)."""
    text = " ".join(str(e).split())
    return text or type(e).__name__
