"""The cells that the HTML report (:mod:`flowvae.reporting.html`), the comparison page
(:mod:`flowvae.reporting.compare`) and the model card (:mod:`flowvae.reporting.card`) write, so that a
figure reads the same on each. Values come from files of a run folder, which may hold anything: a
value that should be a number is formatted only when it is one, and text is escaped before it goes
into HTML."""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["esc", "finite", "fmt_cell", "fmt_duration", "fmt_pct", "fmt_value", "one_line"]


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


def esc(v: Any) -> str:
    """``str(v)`` escaped for HTML text and quoted attribute values."""
    return html.escape(str(v), quote=True)


def fmt_value(v: Any, digits: int = 4) -> str:
    """``v`` as the text of a table cell: ``–`` for ``None``, yes/no, ints with thousands separators,
    finite floats with ``digits`` decimals, anything else as it is (text where a number belongs
    included)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return str(v)


def fmt_cell(v: Any, digits: int = 4) -> str:
    """:func:`fmt_value` as escaped HTML."""
    return esc(fmt_value(v, digits))
