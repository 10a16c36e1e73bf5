"""Self-contained HTML reports of run folders.

:func:`write_report` turns one run folder into one HTML page; :func:`compare_runs` puts several
runs side by side. The pages embed everything they show (images as base64 ``data:`` URIs, plots as
inline SVG drawn here rather than with matplotlib, so no plotting dependency), so a page can be
mailed or attached to an issue on its own and still shows everything.

Only ``config.yaml`` is required. Every other file of the run folder is optional: a missing file
leaves its section out, and a file that is present but cannot be read is listed under "Notes"
instead of failing the whole report, because reports are most wanted for runs that went wrong.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from . import safe_io
from .errors import CheckpointError
from .reporting.format import finite, fmt_duration, fmt_pct, one_line
from .version import __version__

__all__ = ["compare_runs", "write_report"]

# Buffers of this library's layers (ActNorm's init flag, the LU 1x1 convolution's fixed factors,
# BatchNorm statistics). model.safetensors stores the whole state_dict, so they are subtracted to
# give the same parameter count as ``sum(p.numel() for p in model.parameters())``.
_BUFFER_NAMES = frozenset({"initialized", "perm", "sign", "eye", "running_mean", "running_var",
                           "num_batches_tracked"})
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")
_SAMPLES = re.compile(r"^samples_t(\d+(?:\.\d+)?)\.png$")
_FID = re.compile(r"^fid_t(\d+(?:\.\d+)?)\.json$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Every file is read only as a regular file (never through a symlink, never a FIFO or device), up
# to these sizes; a refused file is listed under "Notes" like an unreadable one.
_MAX_CONFIG_BYTES = 1024**2
_MAX_JSON_BYTES = 64 * 1024**2
_MAX_METRICS_BYTES = 256 * 1024**2
_MAX_PNG_BYTES = 64 * 1024**2

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.section th { background: #e6eef7; }
.ok { color: #137333; font-weight: bold; } .fail { color: #b3261e; font-weight: bold; }
.warn { color: #a05a00; font-weight: bold; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #555; text-align: center; }
img.grid { image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid #ddd;
           max-width: 100%; height: auto; }
svg.plot { background: #fff; } svg.plot text { font-size: 12px; fill: #333; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #777; }
"""


# ----------------------------------------------------------------------------------------------
# Reading a run folder




def _read_config(run: Path) -> tuple[dict, str]:
    from .config import parse_yaml  # duplicate keys and deep nesting refused, as for every config read

    path = run / "config.yaml"
    if not os.path.lexists(path):
        raise CheckpointError(f"{run} is not a flowvae run folder (no config.yaml)")
    try:
        text = safe_io.read_text(path, _MAX_CONFIG_BYTES)
        cfg = parse_yaml(text)
    except CheckpointError as e:
        raise CheckpointError(f"cannot use {path}: {one_line(e)}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"cannot read {path}: {one_line(e)}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not a flowvae config (expected a mapping of sections)")
    return cfg, text


def _present(path: Path) -> bool:
    """Whether ``path`` exists as anything at all (a dangling or outside symlink included, so that
    it is listed as refused rather than silently left out)."""
    return os.path.lexists(path)


def _read_json(path: Path, notes: list[str]) -> Any:
    if not _present(path):
        return None
    try:
        return json.loads(safe_io.read_text(path, _MAX_JSON_BYTES))
    except (OSError, UnicodeDecodeError, ValueError, CheckpointError) as e:
        notes.append(f"{path.name} could not be read: {one_line(e)}")
        return None


def _read_metrics(path: Path, notes: list[str]) -> list[dict]:
    if not _present(path):
        return []
    records, bad = [], 0
    try:
        lines = safe_io.read_text(path, _MAX_METRICS_BYTES).splitlines()
    except (OSError, UnicodeDecodeError, CheckpointError) as e:
        notes.append(f"{path.name} could not be read: {one_line(e)}")
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1  # a run killed mid-write can leave half a line; the rest is still good
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
        else:
            bad += 1
    if bad:
        notes.append(f"{path.name}: {bad} line(s) skipped that were not metrics records")
    return records


# Networks that only the training loss uses (model.aux_decoder_weight's decoder of x from z): not
# part of the model that gives densities and samples, so not in its parameter count.
_TRAINING_ONLY = ("aux_decoder.",)


def _param_count(path: Path, notes: list[str]) -> dict | None:
    """Parameter and stored-element counts from the safetensors header (no weights are loaded):
    ``parameters`` counts what the model uses for densities and samples, ``training_only`` the
    parameters of networks that only the training loss uses (:data:`_TRAINING_ONLY`)."""
    if not _present(path):
        return None
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):  # a symlink, FIFO or device: not the run's own weights
            raise CheckpointError("it is a symbolic link or not a regular file; left out")
        from safetensors import safe_open

        total = buffers = training_only = 0
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                n = math.prod(f.get_slice(key).get_shape())
                total += n
                if key.rsplit(".", 1)[-1] in _BUFFER_NAMES:
                    buffers += n
                elif key.startswith(_TRAINING_ONLY):
                    training_only += n
    except Exception as e:  # safetensors raises its own error types for damaged headers
        notes.append(f"{path.name} could not be read: {one_line(e)}")
        return None
    return {"parameters": total - buffers - training_only, "training_only": training_only, "stored": total,
            "buffers": buffers, "metadata": meta}


def _png_size(path: Path, notes: list[str]) -> tuple[bytes, int, int] | None:
    try:
        data = safe_io.read_bytes(path, _MAX_PNG_BYTES)
    except (OSError, CheckpointError) as e:
        notes.append(f"{path.name} could not be read: {one_line(e)}")
        return None
    # Width and height sit at fixed offsets of the IHDR chunk, so no image library is needed.
    if len(data) < 24 or not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
        notes.append(f"{path.name} is not a PNG file; left out")
        return None
    return data, int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _dataset(run: Path, cfg: Any, notes: list[str]) -> str:
    """The data set's name: from the run's data record (what was read), else as the config names
    its reader (runs of releases before the record)."""
    from .runs.data import read_data_record

    try:
        record = read_data_record(run)
    except CheckpointError as e:
        notes.append(one_line(e))
        record = None
    if record is not None:
        return record.dataset_name
    return str(_cfg_get(cfg, "data", "dataset") or "–")


def _collect(run: str | Path) -> dict:
    run = Path(run)
    cfg, cfg_text = _read_config(run)
    notes: list[str] = []
    info: dict[str, Any] = {"path": run, "name": run.resolve().name, "config": cfg, "config_text": cfg_text,
                            "notes": notes}
    info["metrics"] = _read_metrics(run / "metrics.jsonl", notes)
    info["environment"] = _read_json(run / "environment.json", notes)
    info["dataset"] = _dataset(run, cfg, notes)
    info["params"] = _param_count(run / "model.safetensors", notes)
    for key in ("probe", "eval", "check"):
        info[key] = _read_json(run / f"{key}.json", notes)
    fids = []
    for p in sorted(run.glob("fid_t*.json")):
        m = _FID.match(p.name)
        if m and isinstance(d := _read_json(p, notes), dict):
            fids.append((float(m.group(1)), p.name, d))
    info["fid"] = sorted(fids, key=lambda t: t[0])
    samples: list[tuple[float, Path]] = []
    others: list[tuple[float, Path]] = []
    if (run / "samples").is_symlink():
        notes.append("samples is a symbolic link, not a folder of the run; its images are left out")
    elif (run / "samples").is_dir():
        for p in sorted((run / "samples").glob("*.png")):
            m = _SAMPLES.match(p.name)
            (samples if m else others).append((float(m.group(1)) if m else math.inf, p))
    info["samples"] = [p for _, p in sorted(samples, key=lambda t: t[0])] + [p for _, p in others]
    info["figures"] = sorted(p for p in run.glob("*.png") if p.is_file() or p.is_symlink())
    return info


# ----------------------------------------------------------------------------------------------
# Formatting


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)




def _fmt(v: Any, digits: int = 4) -> str:
    """``v`` formatted for a table cell, as escaped HTML (values come from files of the run folder,
    which may hold anything, strings where numbers are expected included)."""
    return _esc(_fmt_text(v, digits))


def _fmt_text(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return str(v)






def _cfg_get(cfg: dict, section: str, key: str) -> Any:
    sec = cfg.get(section)
    return sec.get(key) if isinstance(sec, dict) else None


def _last(metrics: list[dict], key: str) -> Any:
    """The newest value of ``key``: records written at step 0 have no training loss yet."""
    for rec in reversed(metrics):
        if rec.get(key) is not None:
            return rec[key]
    return None


def _table(rows: list[tuple[str, str]], table_id: str | None = None, cls: str = "kv") -> str:
    """Two-column table; both cells must already be escaped HTML."""
    attr = f' id="{table_id}"' if table_id else ""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table{attr} class="{cls}"><tbody>{body}</tbody></table>'


def _img(path: Path, data: bytes, width: int, height: int, alt: str, cls: str = "grid") -> str:
    # Grids of 8x8 or 28x28 images are tiny; scale by an integer factor (pixelated) so they are
    # legible, without blowing up grids that are already large.
    scale = max(1, min(8, 320 // max(width, 1)))
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<img class="{cls}" src="{src}" width="{width * scale}" height="{height * scale}" '
            f'alt="{_esc(alt)}" data-file="{_esc(path.name)}">')


# ----------------------------------------------------------------------------------------------
# SVG line plots


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


def _svg_plot(series: list[tuple[str, list[tuple[float, float]]]], plot_id: str, xlabel: str, ylabel: str,
              width: int = 640, height: int = 320) -> str:
    """An inline SVG line plot: one polyline (with point markers) per series, axes, ticks, legend.

    Non-finite points are left out, so a run that diverged still plots the part before it.
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
           f'aria-label="{_esc(ylabel)} against {_esc(xlabel)}">']
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
               f'{_esc(xlabel)}</text>')
    out.append(f'<text class="ylabel" x="16" y="{top + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + ph / 2:.1f})">{_esc(ylabel)}</text>')
    for i, (name, pts) in enumerate(series):
        color = _PALETTE[i % len(_PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="series" data-name="{_esc(name)}" points="{coords}" fill="none" '
                   f'stroke="{color}" stroke-width="2" stroke-linejoin="round"/>')
        if len(pts) <= 200:  # markers (with hover values) only where they do not turn into a smear
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                       f'<title>{_esc(name)}: step {x:g}, {y:.4f}</title></circle>' for x, y in pts)
    for r, row in enumerate(rows):
        ly = 12 + 18 * r
        for i, name, dx in row:
            lx = left + dx
            out.append(f'<g class="legend"><line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" '
                       f'stroke="{_PALETTE[i % len(_PALETTE)]}" stroke-width="3"/>'
                       f'<text x="{lx + 26}" y="{ly + 4}">{_esc(name)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _curve(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    return [(rec["step"], rec[key]) for rec in metrics if rec.get(key) is not None]


# ----------------------------------------------------------------------------------------------
# Sections of the single-run page


def _section(sec_id: str, title: str, body: str) -> str:
    return f'<section id="{sec_id}-section"><h2>{_esc(title)}</h2>{body}</section>'


def _summary(info: dict) -> str:
    cfg, metrics, params = info["config"], info["metrics"], info["params"]
    rows = [("run", _esc(info["name"])), ("folder", f"<code>{_esc(info['path'].resolve())}</code>"),
            ("config name", _esc(cfg.get("name", "–"))), ("model kind", _esc(_cfg_get(cfg, "model", "kind") or "–")),
            ("dataset", _esc(info["dataset"]))]
    if params is not None:
        aux = (f', {params["training_only"]:,} in the auxiliary decoder that only the training loss uses, '
               f'not counted' if params["training_only"] else "")
        rows.append(("parameters (for densities and samples)",
                     f'<span id="param-count">{params["parameters"]:,}</span> '
                     f'<span class="muted">({params["stored"]:,} stored tensor elements, '
                     f'{params["buffers"]:,} of them in buffers{aux})</span>'))
    else:
        rows.append(("parameters", '<span class="muted">– (no model.safetensors yet)</span>'))
    if metrics:
        last = metrics[-1]
        configured = _cfg_get(cfg, "train", "steps")
        steps = _fmt(last["step"]) + (f" of {_fmt(configured)} configured" if configured is not None else "")
        k = last.get("test_k")
        elbo = _last(metrics, "train_elbo_bpd")
        train_row = (("final train bits/dim (negative ELBO; the loss departs from it)", elbo) if finite(elbo)
                     else ("final train bits/dim", _last(metrics, "train_bpd")))
        rows += [("steps", steps),
                 (train_row[0], f'<span id="final-train-bpd">{_fmt(train_row[1])}</span>'),
                 (f"final test bits/dim (negative ELBO{f', k={_esc(k)}' if k is not None else ''}"
                  f"{', ' + _fmt(last.get('test_n')) + ' images' if last.get('test_n') is not None else ''})",
                  f'<span id="final-test-bpd">{_fmt(last.get("test_elbo_bpd"))}</span>')]
        if isinstance(k, int) and k > 1:
            rows.append(("final test bits/dim (importance-weighted)", _fmt(last.get("test_iw_bpd"))))
        rows += [("final KL (nats)", f'<span id="final-kl">{_fmt(last.get("test_kl"))}</span>'),
                 ("skipped steps", _fmt(_last(metrics, "skipped_steps"))),
                 ("wall time (since train started, set-up included, summed over resumed sessions)",
                  f'<span id="wall-time">{_esc(fmt_duration(_last(metrics, "time_s")))}</span>')]
    else:
        rows.append(("metrics", '<span class="muted">no metrics.jsonl records yet</span>'))
    env = info["environment"]
    if isinstance(env, dict):
        hw = [str(env.get("gpu") or env.get("processor") or "?")]
        if env.get("cpu_count"):
            hw.append(f"{env['cpu_count']} CPUs")
        if env.get("device"):
            hw.append(f"device {env['device']}")
        rows.append(("hardware", _esc(", ".join(hw))))
    return f'<section id="summary"><h2>Summary</h2>{_table(rows, "summary-table")}</section>'


def _curves(metrics: list[dict]) -> str:
    if not metrics:
        return ""
    # With a departure from the paper the loss is not the bound (the auxiliary decoder's term alone
    # puts it at three times the test figure), so the train curve is the plain negative ELBO then.
    departing = any(finite(rec.get("train_elbo_bpd")) for rec in metrics)
    train_key, loss_note = (("train_elbo_bpd", "the plain negative ELBO; the training loss, which departs from it here, "
                             "is train_bpd in metrics.jsonl") if departing else ("train_bpd", "the training loss"))
    bpd = _svg_plot([("train", _curve(metrics, train_key)), ("test (negative ELBO)", _curve(metrics, "test_elbo_bpd"))],
                    "bpd-plot", "step", "bits/dim")
    kl = _svg_plot([("test KL", _curve(metrics, "test_kl"))], "kl-plot", "step", "KL (nats)")
    body = (f'<figure><figcaption>bits/dim (train: running mean over the training batches, weight 0.02 per step, '
            f'of {loss_note}; test: negative ELBO)</figcaption>{bpd}</figure>'
            f'<figure><figcaption>KL(q(z|x) || p(z)) on the test images, nats</figcaption>{kl}</figure>')
    # train.probe_images: probe_<representation> accuracies. The names come from the file, so only
    # short identifiers are plotted, and a bounded number of them.
    names = sorted({k for rec in metrics for k in rec if _PROBE_KEY.fullmatch(k)})[:_MAX_PROBE_SERIES]
    if names:
        from .evaluation.representations import COLLAPSED_KL_NATS as _COLLAPSED_KL  # the one threshold

        probe = _svg_plot([(k[len("probe_"):], [(x, 100 * y) for x, y in _curve(metrics, k) if finite(y)]) for k in names],
                          "probe-plot", "step", "test accuracy (%)")
        body += (f'<figure><figcaption>Linear probes of the class during training (train.probe_images: '
                 f'LinearSVC at a fixed C on the evaluation\'s test images); the paper\'s claim is z rising '
                 f'above v. Read z\'s probe with its KL (table): below {_COLLAPSED_KL:g} nat the code is '
                 f'collapsed and the probe reads the encoder\'s features of x, not what the decoder takes from z'
                 f'</figcaption>{probe}</figure>') + _probe_trend_table(metrics, names)
    return _section("curves", "Training curves", body)


_MAX_TREND_ROWS = 40


def _probe_trend_table(metrics: list[dict], names: list[str]) -> str:
    """``#probe-trend-table``: each evaluation's probe accuracies beside the test KL (at most
    :data:`_MAX_TREND_ROWS` rows, evenly spaced, the last included), collapsed codes marked, and
    ``#probe-trend-collapsed`` when the last probe of z is of a collapsed code."""
    from .evaluation.representations import COLLAPSED_KL_NATS as _COLLAPSED_KL

    recs = [r for r in metrics if any(finite(r.get(k)) for k in names)]
    if not recs:
        return ""
    if len(recs) > _MAX_TREND_ROWS:
        recs = [recs[round(i * (len(recs) - 1) / (_MAX_TREND_ROWS - 1))] for i in range(_MAX_TREND_ROWS)]
    head = "".join(f"<th>{h}</th>" for h in ("step", *(f"probe {k[len('probe_'):]}" for k in names),
                                             "test KL (nats)", "z"))
    rows = []
    for r in recs:
        collapsed = r.get("z_collapsed") is True
        cells = "".join(f'<td class="num">{fmt_pct(r.get(k))}</td>' for k in names)
        note = '<span class="warn">collapsed</span>' if collapsed else ("used" if r.get("z_collapsed") is False else "–")
        rows.append(f'<tr><td class="num">{_fmt(r.get("step"))}</td>{cells}'
                    f'<td class="num">{_fmt(r.get("test_kl"), 3)}</td><td>{note}</td></tr>')
    last = recs[-1]
    warn = ""
    if last.get("z_collapsed") is True:
        warn = (f'<p id="probe-trend-collapsed" class="warn">At the last evaluation (step {_fmt(last.get("step"))}) '
                f'the code z is collapsed (KL {_fmt(last.get("test_kl"), 3)} nats, below {_COLLAPSED_KL:g}): its probe '
                f'({fmt_pct(last.get("probe_z"))}) reads the encoder\'s features of x, not information the decoder '
                f'takes from z.</p>')
    return (f'{warn}<table id="probe-trend-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="muted">z: "collapsed" where the KL is below {_COLLAPSED_KL:g} nat, "used" above, "–" for '
            f'kinds whose z has no prior of its own.</p>')


_PROBE_KEY = re.compile(r"probe_[A-Za-z0-9_]{1,32}")
_MAX_PROBE_SERIES = 8


def _sample_stats(info: dict) -> dict[str, dict]:
    """``samples/sample_stats.json`` (written by ``flowvae sample``) by grid file name; ``{}`` if absent."""
    if not info["samples"]:
        return {}
    d = _read_json(info["path"] / "samples" / "sample_stats.json", info["notes"])
    grids = d.get("grids") if isinstance(d, dict) else None
    return {g["file"]: g for g in grids or [] if isinstance(g, dict) and isinstance(g.get("file"), str)}


def _samples(info: dict) -> str:
    figs = []
    stats = _sample_stats(info)
    for p in info["samples"]:
        got = _png_size(p, info["notes"])
        if got is None:
            continue
        m = _SAMPLES.match(p.name)
        caption = f"temperature {m.group(1)}" if m else p.name
        temp = f' data-temperature="{_esc(m.group(1))}"' if m else ""
        st = stats.get(p.name)
        extra = ""
        # Only beside the image the statistics were computed for: training rewrites the grids.
        if st is not None and st.get("sha256") == hashlib.sha256(got[0]).hexdigest():
            cls = {"warn": "warn", "fail": "fail"}.get(str(st.get("health")), "muted")
            extra = f'<br><span class="sample-stats {cls}">{_esc(st.get("detail", ""))}</span>'
        figs.append(f'<figure class="sample-grid"{temp}>{_img(p, *got, alt=f"samples, {caption}")}'
                    f"<figcaption>{_esc(caption)}{extra}</figcaption></figure>")
    return _section("samples", "Samples", "".join(figs)) if figs else ""


_FIGURE_TEXT = {
    "switch.png": ("switch", "Switching global codes",
                   "each group of four: (v1, z1), (v1, z2), (v2, z2), (v2, z1) — the local code v of one image "
                   "decoded with the global code z of another"),
    "interpolation.png": ("interpolation", "Interpolation",
                          "rows move the global code z, columns the local code v, between two real test images"),
}


def _switch_metric(info: dict) -> str:
    """The ``switch.json`` written by ``flowvae switch`` (``#switch-metric-table``), or ``""``."""
    m = _read_json(info["path"] / "switch.json", info["notes"])
    if not isinstance(m, dict):
        return ""
    rows = []
    for cell, r, z_from, v_from in (("(v1, z2)", m, "image 2", "image 1"),
                                    ("(v2, z1)", m.get("swapped"), "image 1", "image 2")):
        if isinstance(r, dict):
            rows.append(f'<tr data-decode="{_esc(cell)}"><td>{_esc(cell)}</td>'
                        f'<td class="num">{fmt_pct(r.get("follow_z"))} ({z_from})</td>'
                        f'<td class="num">{fmt_pct(r.get("follow_v"))} ({v_from})</td>'
                        f'<td class="num">{fmt_pct(r.get("neither"))}</td>'
                        f'<td class="num">{fmt_pct(r.get("saturated"))}</td></tr>')
    clf: dict = m["classifier"] if isinstance(m.get("classifier"), dict) else {}
    text = (f"Switch metric (switch.json): {_fmt(m.get('pairs'))} pairs of test images of different classes of "
            f"{_esc(m.get('dataset', '?'))}; each decode is classified by {_switch_classifier(clf)} "
            f"(C = {_esc(clf.get('C', '–'))}, trained on {_fmt(clf.get('n_train'))} real training images), whose accuracy "
            f"on the real test images, {fmt_pct(m.get('test_accuracy'))}, is the ceiling of the class-of-z column. "
            "A decode whose inverse flow saturated is clamped noise (mostly counted as neither).")
    head = "".join(f"<th>{h}</th>" for h in ("decode", "class of z", "class of v", "neither", "inverse saturated"))
    return (f'<p id="switch-metric">{text}</p><table id="switch-metric-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _switch_classifier(clf: dict) -> str:
    """The switch metric's classifier in words; ``switch.json`` files written before the logistic
    protocol carry none, and those used the linear SVM."""
    what = {"logistic": "a logistic regression", "standard": "a linear SVM"}.get(str(clf.get("protocol", "standard")),
                                                                             "a linear classifier")
    pool = clf.get("pool")
    where = (f"{_esc(pool)}x{_esc(pool)} average-pooled pixels" if isinstance(pool, int) and pool > 1
             else "pixels")
    return f"{what} on standardised {where}"


def _figures(info: dict) -> str:
    parts = []
    metric = _switch_metric(info)
    known = [p for p in info["figures"] if p.name in _FIGURE_TEXT]
    for p in sorted(known, key=lambda q: list(_FIGURE_TEXT).index(q.name)):
        got = _png_size(p, info["notes"])
        if got is None:
            continue
        sec_id, title, caption = _FIGURE_TEXT[p.name]
        extra_html, metric = (metric, "") if sec_id == "switch" else ("", metric)
        parts.append(_section(sec_id, title, f'<figure id="{sec_id}-grid" class="figure-grid">'
                                             f'{_img(p, *got, alt=title)}<figcaption>{_esc(caption)}</figcaption></figure>'
                                             + extra_html))
    if metric:  # switch.json without a readable switch.png (the grid written elsewhere with --out)
        parts.insert(0, _section("switch", _FIGURE_TEXT["switch.png"][1], metric))
    extra = []
    for p in info["figures"]:
        if p.name in _FIGURE_TEXT:
            continue
        got = _png_size(p, info["notes"])
        if got is not None:
            extra.append(f'<figure class="figure-grid">{_img(p, *got, alt=p.name)}'
                         f"<figcaption>{_esc(p.name)}</figcaption></figure>")
    if extra:
        parts.append(_section("figures", "Other figures", "".join(extra)))
    return "".join(parts)


def _probe(probe: Any) -> str:
    if not isinstance(probe, dict) or not isinstance(probe.get("results"), dict):
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("features", "dim", "C", "test accuracy", "cross-validated accuracy",
                                             "train images", "test images"))
    rows = []
    for name, r in probe["results"].items():
        if not isinstance(r, dict):
            continue
        rows.append(f'<tr data-features="{_esc(name)}"><td>{_esc(name)}</td><td class="num">{_fmt(r.get("dim"))}</td>'
                    f'<td class="num">{_esc(r.get("C", "–"))}</td><td class="num">{fmt_pct(r.get("accuracy"))}</td>'
                    f'<td class="num">{fmt_pct(r.get("cv_accuracy"))}</td><td class="num">{_fmt(r.get("n_train"))}</td>'
                    f'<td class="num">{_fmt(r.get("n_test"))}</td></tr>')
    caption = (f"linear probe on {_esc(probe.get('dataset', '?'))} "
               f"({_esc(probe.get('protocol', '?'))} protocol)")
    kl = probe.get("z_kl_nats")
    if isinstance(kl, (int, float)) and not isinstance(kl, bool):
        caption += f"; KL(q(z|x) || p(z)) on the test images {_esc(f'{kl:.3f}')} nats"
        if probe.get("z_collapsed") is True:
            caption += (' <span id="probe-collapsed" class="warn">(collapsed: the probe of z reads the encoder\'s '
                        'features of x, not information the decoder takes from z)</span>')
    return _section("probe", "Linear probe", f'<p>{caption}</p><table id="probe-table"><thead><tr>{head}</tr>'
                                             f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _fid(fids: list[tuple[float, str, dict]]) -> str:
    if not fids:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("temperature", "FID", "KID", "samples", "real images", "dataset",
                                             "resize", "Inception SHA-256", "file"))
    rows = []
    for temp, fname, d in fids:
        sha = str(d.get("inception_sha256", ""))
        # a result without "resize" predates the standard (TensorFlow) resize: it is not comparable
        resize = _esc(d["resize"]) if "resize" in d else "torch bilinear (older flowvae; not comparable)"
        kid = (f"{d['kid_mean']:.4f} ± {d['kid_std']:.4f}" if finite(d.get("kid_mean")) and finite(d.get("kid_std"))
               else _fmt(d.get("kid_mean")))
        rows.append(f'<tr><td class="num">{_esc(d.get("temperature", temp))}</td><td class="num">{_fmt(d.get("fid"), 2)}'
                    f'</td><td class="num">{kid}</td><td class="num">{_fmt(d.get("n_fake"))}</td>'
                    f'<td class="num">{_fmt(d.get("n_real"))}</td><td>{_esc(d.get("dataset", "–"))}</td>'
                    f'<td>{resize}</td><td><code title="{_esc(sha)}">{_esc(sha[:12] or "–")}</code></td><td>{_esc(fname)}</td></tr>')
    return _section("fid", "FID and KID", f'<table id="fid-table"><thead><tr>{head}</tr></thead>'
                                          f'<tbody>{"".join(rows)}</tbody></table>')


def _eval(ev: Any) -> str:
    if not isinstance(ev, dict):
        return ""
    rows = [("dataset", _esc(ev.get("dataset", "–"))), ("images", _fmt(ev.get("n"))),
            ("bits/dim, negative ELBO", _fmt(ev.get("elbo_bpd"))),
            (f"bits/dim, importance-weighted (K = {_esc(ev.get('k', '?'))})", _fmt(ev.get("iw_bpd"))),
            ("KL (nats)", _fmt(ev.get("kl")))]
    if "roundtrip_images" in ev:
        bad = ev.get("roundtrip_mismatched_pixels")
        cls = "ok" if bad == 0 else "fail"
        rows.append(("encode/decode round trip", f'<span class="{cls}">{_fmt(bad)} mismatched pixels</span> '
                                                 f'in {_fmt(ev.get("roundtrip_images"))} images'))
    known = {"dataset", "n", "elbo_bpd", "iw_bpd", "k", "kl", "roundtrip_images", "roundtrip_mismatched_pixels"}
    rows += [(_esc(k), _fmt(v)) for k, v in ev.items() if k not in known]
    return _section("eval", "Evaluation (eval.json)", _table(rows, "eval-table"))


def _check(ch: Any) -> str:
    if not isinstance(ch, dict):
        return ""
    ok = bool(ch.get("ok"))
    rows = []
    for c in ch.get("checks", []) if isinstance(ch.get("checks"), list) else []:
        if isinstance(c, dict):
            good = bool(c.get("ok"))
            # A passed check with a warning (e.g. samples clamped by an unstable model) is not a failure.
            cls, word = ("fail", "FAIL") if not good else ("warn", "warning") if c.get("warning") else ("ok", "pass")
            rows.append(f'<tr><td>{_esc(c.get("name", "?"))}</td><td class="{cls}">'
                        f'{word}</td><td>{_esc(c.get("detail", ""))}</td></tr>')
    warned = ok and isinstance(ch.get("warnings"), list) and bool(ch["warnings"])
    status = ("checks FAILED" if not ok else
              f'all checks passed, with warnings: {", ".join(str(w) for w in ch["warnings"])}' if warned
              else "all checks passed")
    body = (f'<p id="check-status" class="{"fail" if not ok else "warn" if warned else "ok"}">{_esc(status)}'
            f'</p><table id="check-table"><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
    return _section("check", "Model checks (check.json)", body)


def _config(cfg: dict, text: str) -> str:
    def cell(v: Any) -> str:
        # Lists (flow steps, widths) read best in YAML flow style, as one would type them.
        return _esc(v if isinstance(v, str) else json.dumps(v))

    rows = []
    for section, values in cfg.items():
        if isinstance(values, dict):
            rows.append(f'<tr class="section"><th colspan="2">{_esc(section)}</th></tr>')
            rows += [f"<tr><td>{_esc(section)}.{_esc(k)}</td><td><code>{cell(v)}</code></td></tr>"
                     for k, v in values.items()]
        else:
            rows.append(f"<tr><td>{_esc(section)}</td><td><code>{cell(values)}</code></td></tr>")
    # Remedies for posterior collapse change the objective of eq. (2); say so above the table.
    train, model = cfg.get("train"), cfg.get("model")
    departures = []
    if isinstance(train, dict) and train.get("kl_warmup_steps"):
        departures.append(f"KL warm-up over {cell(train['kl_warmup_steps'])} steps (train.kl_warmup_steps)")
    if isinstance(model, dict) and model.get("free_bits"):
        departures.append(f"free bits of {cell(model['free_bits'])} nats (model.free_bits)")
    if isinstance(model, dict) and model.get("aux_decoder_weight"):
        departures.append(f"an auxiliary decoder's -log p(x|z) at weight {cell(model['aux_decoder_weight'])} "
                          f"in the loss (model.aux_decoder_weight)")
    objective = bool(departures)
    if isinstance(model, dict) and model.get("coupling_kernel", 3) != 3:
        k = cell(model["coupling_kernel"])
        departures.append(f"{k}x{k} coupling-network convolutions, not eq. (7)'s 3x3 (model.coupling_kernel)")
    note = (f'<p id="departures">Departures from the paper: {"; ".join(departures)}.'
            + (' The training objective is not the ELBO of eq. (2); the reported bits/dim are.' if objective else '')
            + '</p>' if departures else "")
    body = (note + f'<table id="config-table"><tbody>{"".join(rows)}</tbody></table>'
            f'<details><summary>config.yaml</summary><pre id="config-yaml">{_esc(text)}</pre></details>')
    return _section("config", "Configuration", body)


def _environment(env: Any) -> str:
    if not isinstance(env, dict):
        return ""
    return _section("environment", "Environment",
                    _table([(_esc(k), _fmt(v)) for k, v in env.items()], "environment-table"))


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return _section("notes", "Notes", "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>{body}"
            f'<footer class="muted"><p>written by flowvae {_esc(__version__)}</p></footer></body></html>\n')


def _write(path: Path, text: str) -> Path:
    # Temporary file then rename, so a browser reloading the page never sees half of it.
    safe_io.atomic_write(path, text.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------------------
# Public API


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write one self-contained HTML page describing the run folder ``run``.

    The page (default ``run/report.html``) embeds every image as a base64 ``data:`` URI and draws
    its plots as inline SVG, so it needs no other file. It shows, each only where its file exists:

    * ``#summary``: run name, model kind, dataset, parameter count (read from the
      ``model.safetensors`` header; buffers such as BatchNorm statistics and a training-only
      auxiliary decoder are not counted), last step, final train and test bits/dim, final KL,
      skipped steps, wall time (the last ``time_s``: since ``train`` started, set-up included,
      summed over resumed sessions) and hardware;
    * ``#bpd-plot`` (train and test bits/dim against step; train: the plain negative ELBO when the
      loss departs from it) and ``#kl-plot`` (test KL in nats), from ``metrics.jsonl``; with
      ``train.probe_images``, ``#probe-plot`` and ``#probe-trend-table`` (the probes beside the
      test KL, collapsed codes marked; ``#probe-trend-collapsed`` when the last one is);
    * the sample grids of every temperature in ``samples/`` (``figure.sample-grid``; a grid that
      ``samples/sample_stats.json`` describes gets its clamped/saturated counts in the caption,
      ``span.sample-stats``), then
      ``switch.png`` (``#switch-grid``, with ``#switch-metric-table`` from ``switch.json``),
      ``interpolation.png`` (``#interpolation-grid``) and any other PNG in the folder;
    * ``#probe-table`` (``probe.json``), ``#fid-table`` (every ``fid_t*.json``), ``#eval-table``
      (``eval.json``), ``#check-table`` (``check.json``);
    * ``#config-table`` and the raw ``config.yaml``; ``#environment-table`` (``environment.json``);
    * ``#notes-section``: optional files that were present but unreadable (they are listed
      rather than failing the report).

    Args:
        run: the run folder (the ``--run`` of ``flowvae train``).
        out: the HTML file to write; default ``run/report.html``.

    Returns:
        The path written.

    Raises:
        CheckpointError: ``run`` has no ``config.yaml`` (not a run folder) or it cannot be parsed.
        OSError: ``out`` cannot be written.
    """
    info = _collect(run)
    out = Path(out) if out is not None else Path(run) / "report.html"
    body = (f"<h1>flowvae run <span id=\"run-name\">{_esc(info['name'])}</span></h1>"
            + _summary(info) + _curves(info["metrics"]) + _samples(info) + _figures(info) + _probe(info["probe"])
            + _fid(info["fid"]) + _eval(info["eval"]) + _check(info["check"])
            + _config(info["config"], info["config_text"]) + _environment(info["environment"]))
    body += _notes(info["notes"])  # last, after every section has had its chance to add notes
    return _write(out, _page(f"flowvae run {info['name']}", body))


def _unique_names(infos: list[dict]) -> list[str]:
    """Folder names, widened with parent folders where two runs share a name (a/run, b/run)."""
    parts = [info["path"].resolve().parts for info in infos]
    depth = [1] * len(infos)
    for _ in range(max(len(p) for p in parts)):
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        dup = {n for n in names if names.count(n) > 1}
        if not dup:
            break
        depth = [d + 1 if n in dup and d < len(p) else d for n, d, p in zip(names, depth, parts)]
    return ["/".join(p[-d:]) for p, d in zip(parts, depth)]


def compare_runs(runs: list, out: str | Path) -> Path:
    """Write one self-contained HTML page putting several run folders side by side.

    The page has ``#compare-table``, one row per run in the given order: run name, model kind
    (``model.kind`` of its config), dataset, parameters (from ``model.safetensors``: those that give
    densities and samples, without a training-only auxiliary decoder), last step,
    final test bits/dim (negative ELBO), final KL (nats), wall time, and one column of linear-probe
    test accuracy per feature set found in any run's ``probe.json``. Below it, ``#compare-plot``
    draws test bits/dim against step, one line per run, with the run names as legend. Runs are
    named by their folder; where two share a name, parent folders are added until they differ.
    Missing optional files leave their cells as "–".

    Args:
        runs: run folders (paths or strings).
        out: the HTML file to write.

    Returns:
        The path written.

    Raises:
        ValueError: ``runs`` is empty.
        CheckpointError: one of ``runs`` has no ``config.yaml`` (not a run folder) or it cannot be parsed.
        OSError: ``out`` cannot be written.
    """
    if not runs:
        raise ValueError("compare_runs needs at least one run folder")
    infos = [_collect(r) for r in runs]
    names = _unique_names(infos)
    probes: list[str] = []
    for info in infos:
        res = info["probe"].get("results") if isinstance(info["probe"], dict) else None
        for k in res if isinstance(res, dict) else []:
            if k not in probes:
                probes.append(k)
    # Parameters of what gives densities and samples: a training-only auxiliary decoder is left out.
    head = "".join(f"<th>{h}</th>" for h in ("run", "kind", "dataset", "parameters (densities and samples)", "steps",
                                             "final test bits/dim", "final KL (nats)", "wall time"))
    head += "".join(f"<th>probe {_esc(p)}</th>" for p in probes)
    rows = []
    for name, info in zip(names, infos):
        m, cfg = info["metrics"], info["config"]
        params = _fmt(info["params"]["parameters"]) if info["params"] else "–"
        res = info["probe"].get("results") if isinstance(info["probe"], dict) else None
        res = res if isinstance(res, dict) else {}
        accs = "".join(f'<td class="num">{fmt_pct(r.get("accuracy") if isinstance(r := res.get(p), dict) else None)}'
                       "</td>" for p in probes)
        rows.append(f'<tr data-run="{_esc(name)}"><td>{_esc(name)}</td>'
                    f'<td>{_esc(_cfg_get(cfg, "model", "kind") or "–")}</td>'
                    f'<td>{_esc(info["dataset"])}</td><td class="num">{params}</td>'
                    f'<td class="num">{_fmt(m[-1]["step"]) if m else "–"}</td>'
                    f'<td class="num final-bpd">{_fmt(_last(m, "test_elbo_bpd"))}</td>'
                    f'<td class="num">{_fmt(_last(m, "test_kl"))}</td>'
                    f'<td class="num">{_esc(fmt_duration(_last(m, "time_s")))}</td>{accs}</tr>')
    plot = _svg_plot([(name, _curve(info["metrics"], "test_elbo_bpd")) for name, info in zip(names, infos)],
                     "compare-plot", "step", "test bits/dim (negative ELBO)", width=760, height=380)
    notes = [f"{name}: {n}" for name, info in zip(names, infos) for n in info["notes"]]
    body = (f"<h1>flowvae: {len(infos)} runs compared</h1>"
            f'<section id="compare-section"><h2>Runs</h2><table id="compare-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>'
            f'<section id="compare-curves-section"><h2>Test bits/dim</h2><figure>{plot}</figure></section>'
            + _notes(notes))
    return _write(Path(out), _page("flowvae runs compared", body))
