"""Line plots as inline SVG, drawn here rather than with matplotlib, so that a report needs no
plotting dependency and embeds its plots as text."""

from __future__ import annotations

import math

from .format import esc, finite

__all__ = ["PALETTE", "curve", "svg_plot"]

#: the colours of the series, in order (matplotlib's tab10)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def curve(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    """``(step, value)`` of every metrics record that has a value of ``key``."""
    return [(rec["step"], rec[key]) for rec in metrics if rec.get(key) is not None]


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw * (1 - 1e-9):
            return m * mag
    return 10 * mag


def _axis(lo: float, hi: float, integer: bool = False) -> tuple[float, float, list[float], int]:
    """A range covering [lo, hi] that starts and ends on round ticks, the ticks, and label decimals.

    ``integer`` keeps ticks on whole numbers (training steps)."""
    if hi <= lo:  # one point, or a flat curve: give it some height so it is drawn mid-axis
        pad = 1.0 if integer else abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo)
    if integer:
        step = max(1.0, round(step))
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [i * step for i in range(start, stop + 1)]
    exponent = math.floor(math.log10(step) + 1e-9)
    mantissa = round(step / 10**exponent, 6)
    decimals = max(0, -exponent + (1 if mantissa == 2.5 else 0))
    return ticks[0], ticks[-1], ticks, decimals


def svg_plot(series: list[tuple[str, list[tuple[float, float]]]], plot_id: str, xlabel: str, ylabel: str,
             width: int = 640, height: int = 320) -> str:
    """An inline SVG line plot: one polyline (with point markers) per series, axes, ticks, legend.

    Non-finite points are left out, so a run that diverged still plots the part before it. Series
    names and labels are escaped; ``plot_id`` must be a plain identifier.
    """
    series = [(name, [(float(x), float(y)) for x, y in pts if finite(x) and finite(y)]) for name, pts in series]
    points = [p for _, pts in series for p in pts]
    if not points:
        return f'<p id="{plot_id}" class="muted">no data to plot</p>'
    # Legend entries are laid out in rows above the plot; widths estimated at ~7 px per character.
    rows: list[list[tuple[int, str, int]]] = []
    row: list[tuple[int, str, int]] = []
    used = 0
    for i, (name, _) in enumerate(series):
        w = 28 + 7 * len(name)
        if row and used + w > width - 80:
            rows.append(row)
            row, used = [], 0
        row.append((i, name, used))
        used += w + 12
    rows.append(row)
    left, right, top, bottom = 70, 20, 14 + 18 * len(rows), 46
    height += 18 * (len(rows) - 1)
    x0, x1, xt, xd = _axis(min(p[0] for p in points), max(p[0] for p in points), integer=True)
    y0, y1, yt, yd = _axis(min(p[1] for p in points), max(p[1] for p in points))
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f'<svg id="{plot_id}" class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{esc(ylabel)} against {esc(xlabel)}">']
    for t in yt:
        y = sy(t)
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#333"/>'
                   f'<text class="ytick" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{t:.{yd}f}</text>')
    for t in xt:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="#333"/>'
                   f'<text class="xtick" x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{t:.{xd}f}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text class="xlabel" x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">'
               f'{esc(xlabel)}</text>')
    out.append(f'<text class="ylabel" x="16" y="{top + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + ph / 2:.1f})">{esc(ylabel)}</text>')
    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="series" data-name="{esc(name)}" points="{coords}" fill="none" '
                   f'stroke="{color}" stroke-width="2" stroke-linejoin="round"/>')
        if len(pts) <= 200:  # markers (with hover values) only where they do not turn into a smear
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                       f'<title>{esc(name)}: step {x:g}, {y:.4f}</title></circle>' for x, y in pts)
    for r, row in enumerate(rows):
        ly = 12 + 18 * r
        for i, name, dx in row:
            lx = left + dx
            out.append(f'<g class="legend"><line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" '
                       f'stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="3"/>'
                       f'<text x="{lx + 26}" y="{ly + 4}">{esc(name)}</text></g>')
    out.append("</svg>")
    return "".join(out)
