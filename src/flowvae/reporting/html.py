"""The single-run HTML page of :func:`write_report`, one section per part of the run folder, and the
page and its parts that the comparison page (:mod:`flowvae.reporting.compare`) shares.

The page embeds everything it shows (images as base64 ``data:`` URIs, plots as inline SVG from
:mod:`flowvae.reporting.plot`), so it can be mailed or attached to an issue on its own and still
shows everything. Every value taken from the run folder is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import safe_io
from ..version import __version__
from .format import esc, finite, fmt_cell, fmt_duration, fmt_pct
from .plot import curve, svg_plot
from .read import (
    SAMPLE_GRID,
    RunFiles,
    config_value,
    last_value,
    manipulation_result,
    read_png,
    read_run,
    sample_stats,
    switch_frequencies_result,
    switch_result,
)

__all__ = ["CSS", "config_section", "curves_section", "notes_section", "page", "write_page", "write_report"]

#: the style sheet of every page
CSS = """
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
            f'alt="{esc(alt)}" data-file="{esc(path.name)}">')



def _section(sec_id: str, title: str, body: str) -> str:
    return f'<section id="{sec_id}-section"><h2>{esc(title)}</h2>{body}</section>'


def _summary(files: RunFiles) -> str:
    cfg, metrics, params = files.config, files.metrics, files.params
    rows = [("run", esc(files.name)), ("folder", f"<code>{esc(files.path.resolve())}</code>"),
            ("config name", esc(cfg.get("name", "–"))), ("model kind", esc(config_value(cfg, "model", "kind") or "–")),
            ("dataset", esc(files.dataset))]
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
        configured = config_value(cfg, "train", "steps")
        steps = fmt_cell(last["step"]) + (f" of {fmt_cell(configured)} configured" if configured is not None else "")
        k = last.get("test_k")
        elbo = last_value(metrics, "train_elbo_bpd")
        train_row = (("final train bits/dim (negative ELBO; the loss departs from it)", elbo) if finite(elbo)
                     else ("final train bits/dim", last_value(metrics, "train_bpd")))
        rows += [("steps", steps),
                 (train_row[0], f'<span id="final-train-bpd">{fmt_cell(train_row[1])}</span>'),
                 (f"final test bits/dim (negative ELBO{f', k={esc(k)}' if k is not None else ''}"
                  f"{', ' + fmt_cell(last.get('test_n')) + ' images' if last.get('test_n') is not None else ''})",
                  f'<span id="final-test-bpd">{fmt_cell(last.get("test_elbo_bpd"))}</span>')]
        if isinstance(k, int) and k > 1:
            rows.append(("final test bits/dim (importance-weighted)", fmt_cell(last.get("test_iw_bpd"))))
        rows += [("final KL (nats)", f'<span id="final-kl">{fmt_cell(last.get("test_kl"))}</span>'),
                 ("skipped steps", fmt_cell(last_value(metrics, "skipped_steps"))),
                 ("wall time (since train started, set-up included, summed over resumed sessions)",
                  f'<span id="wall-time">{esc(fmt_duration(last_value(metrics, "time_s")))}</span>')]
    else:
        rows.append(("metrics", '<span class="muted">no metrics.jsonl records yet</span>'))
    env = files.environment
    if isinstance(env, dict):
        hw = [str(env.get("gpu") or env.get("processor") or "?")]
        if env.get("cpu_count"):
            hw.append(f"{env['cpu_count']} CPUs")
        if env.get("device"):
            hw.append(f"device {env['device']}")
        rows.append(("hardware", esc(", ".join(hw))))
    return f'<section id="summary"><h2>Summary</h2>{_table(rows, "summary-table")}</section>'


def curves_section(metrics: list[dict]) -> str:
    """``#curves-section``: bits/dim and KL against step from the metrics records, and with
    ``train.probe_images`` the probes' accuracies and ``#probe-trend-table``; ``""`` without records."""
    if not metrics:
        return ""
    # With a departure from the paper the loss is not the bound (the auxiliary decoder's term alone
    # puts it at three times the test figure), so the train curve is the plain negative ELBO then.
    departing = any(finite(rec.get("train_elbo_bpd")) for rec in metrics)
    train_key, loss_note = (("train_elbo_bpd", "the plain negative ELBO; the training loss, which departs from it here, "
                             "is train_bpd in metrics.jsonl") if departing else ("train_bpd", "the training loss"))
    bpd = svg_plot([("train", curve(metrics, train_key)), ("test (negative ELBO)", curve(metrics, "test_elbo_bpd"))],
                   "bpd-plot", "step", "bits/dim")
    kl = svg_plot([("test KL", curve(metrics, "test_kl"))], "kl-plot", "step", "KL (nats)")
    body = (f'<figure><figcaption>bits/dim (train: running mean over the training batches, weight 0.02 per step, '
            f'of {loss_note}; test: negative ELBO)</figcaption>{bpd}</figure>'
            f'<figure><figcaption>KL(q(z|x) || p(z)) on the test images, nats</figcaption>{kl}</figure>')
    # train.probe_images: probe_<representation> accuracies. The names come from the file, so only
    # short identifiers are plotted, and a bounded number of them.
    names = sorted({k for rec in metrics for k in rec if _PROBE_KEY.fullmatch(k)})[:_MAX_PROBE_SERIES]
    if names:
        from ..evaluation.representations import COLLAPSED_KL_NATS as _COLLAPSED_KL  # the one threshold

        probe = svg_plot([(k[len("probe_"):], [(x, 100 * y) for x, y in curve(metrics, k) if finite(y)]) for k in names],
                         "probe-plot", "step", "test accuracy (%)")
        body += (f'<figure><figcaption>Linear probes of the class during training (train.probe_images: '
                 f'LinearSVC at a fixed C on the evaluation\'s test images); the paper\'s claim is z rising '
                 f'above v. Read z\'s probe with its KL (table): below {_COLLAPSED_KL:g} nat the code is '
                 f'collapsed and the probe reads the encoder\'s features of x, not what the decoder takes from z'
                 f'</figcaption>{probe}</figure>') + _probe_trend_table(metrics, names)
    switch = [(label, [(x, 100 * y) for x, y in curve(metrics, f"switch_{key}") if finite(y)])
              for key, label in _SWITCH_SERIES]
    if any(points for _, points in switch):
        body += ('<figure id="switch-trend"><figcaption>Switch score during training (train.switch_pairs, no labels): '
                 'of the switched decodes of pairs of test images, the share whose low frequencies (4x4 average) and '
                 'mean colour are closer to the image that gave z, and whose high frequencies are closer to the image '
                 'that gave v; a global style code z with local content in v has all three near 100%</figcaption>'
                 f'{svg_plot(switch, "switch-plot", "step", "decodes (%)")}</figure>')
    return _section("curves", "Training curves", body)


_SWITCH_SERIES = (("low_follows_z", "low frequencies follow z"), ("colour_follows_z", "mean colour follows z"),
                  ("high_follows_v", "high frequencies follow v"))


_MAX_TREND_ROWS = 40


def _probe_trend_table(metrics: list[dict], names: list[str]) -> str:
    """``#probe-trend-table``: each evaluation's probe accuracies beside the test KL (at most
    :data:`_MAX_TREND_ROWS` rows, evenly spaced, the last included), collapsed codes marked, and
    ``#probe-trend-collapsed`` when the last probe of z is of a collapsed code."""
    from ..evaluation.representations import COLLAPSED_KL_NATS as _COLLAPSED_KL

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
        rows.append(f'<tr><td class="num">{fmt_cell(r.get("step"))}</td>{cells}'
                    f'<td class="num">{fmt_cell(r.get("test_kl"), 3)}</td><td>{note}</td></tr>')
    newest = recs[-1]
    warn = ""
    if newest.get("z_collapsed") is True:
        warn = (f'<p id="probe-trend-collapsed" class="warn">At the last evaluation (step {fmt_cell(newest.get("step"))}) '
                f'the code z is collapsed (KL {fmt_cell(newest.get("test_kl"), 3)} nats, below {_COLLAPSED_KL:g}): its probe '
                f'({fmt_pct(newest.get("probe_z"))}) reads the encoder\'s features of x, not information the decoder '
                f'takes from z.</p>')
    return (f'{warn}<table id="probe-trend-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="muted">z: "collapsed" where the KL is below {_COLLAPSED_KL:g} nat, "used" above, "–" for '
            f'kinds whose z has no prior of its own.</p>')


_PROBE_KEY = re.compile(r"probe_[A-Za-z0-9_]{1,32}")
_MAX_PROBE_SERIES = 8


def _samples(files: RunFiles) -> str:
    figs = []
    stats = sample_stats(files)
    for p in files.samples:
        got = read_png(p, files.notes)
        if got is None:
            continue
        m = SAMPLE_GRID.match(p.name)
        caption = f"temperature {m.group(1)}" if m else p.name
        temp = f' data-temperature="{esc(m.group(1))}"' if m else ""
        st = stats.get(p.name)
        extra = ""
        # Only beside the image the statistics were computed for: training rewrites the grids.
        if st is not None and st.get("sha256") == hashlib.sha256(got[0]).hexdigest():
            cls = {"warn": "warn", "fail": "fail"}.get(str(st.get("health")), "muted")
            extra = f'<br><span class="sample-stats {cls}">{esc(st.get("detail", ""))}</span>'
        figs.append(f'<figure class="sample-grid"{temp}>{_img(p, *got, alt=f"samples, {caption}")}'
                    f"<figcaption>{esc(caption)}{extra}</figcaption></figure>")
    return _section("samples", "Samples", "".join(figs)) if figs else ""


_FIGURE_TEXT = {
    "switch.png": ("switch", "Switching global codes",
                   "each group of four: (v1, z1), (v1, z2), (v2, z2), (v2, z1) — the local code v of one image "
                   "decoded with the global code z of another"),
    "interpolation.png": ("interpolation", "Interpolation",
                          "rows move the global code z, columns the local code v, between two real test images"),
    "manipulate.png": ("manipulation", "Manipulation along a class direction",
                       "rows are test images, columns edit strengths alpha: the global code moved along a class's "
                       "direction, z + alpha d, decoded with each image's own local code"),
}


def _manipulation(files: RunFiles) -> str:
    """What ``flowvae manipulate`` did (``manipulation.json``: ``#manipulation-text``, and the class
    curves ``#manipulation-curve``), or ``""``."""
    m = manipulation_result(files)
    if not isinstance(m, Mapping):
        return ""
    alphas = _list(m.get("alphas"))
    exact = m.get("exact_at_zero")
    text = (f'<p id="manipulation-text">Manipulation (manipulation.json): test images of {esc(m.get("dataset", "?"))} '
            f'edited towards class {esc(m.get("attribute", "?"))} along its {esc(m.get("method", "?"))} direction '
            f'(length {fmt_cell(m.get("direction_norm"))}), alpha {", ".join(fmt_cell(a) for a in alphas)}'
            + ("; each image's local code v kept" if m.get("keeps_local") is True else "")
            + ("" if exact is None else f"; alpha 0 reproduced the images exactly: {esc(exact)}") + ".</p>")
    curve = m.get("curve")
    if not isinstance(curve, Mapping):
        return text
    head = "".join(f"<th>{fmt_cell(a)}</th>" for a in _list(curve.get("alphas")))

    def row(label: str, values: list) -> str:
        cells = "".join(f'<td class="num">{fmt_pct(v)}</td>' for v in values)
        return f"<tr><td>{esc(label)}</td>{cells}</tr>"

    rows = "".join(row(label, _list(curve.get(key))) for label, key in (
        ("classified as the target class", "to_target"), ("classified as the image's own class", "keeps_source"),
        ("local code v still read as the image's", "v_keeps_class"),
        ("inverse saturated", "saturated")) if isinstance(curve.get(key), list))
    found = curve.get("classifier")
    clf: dict = dict(found) if isinstance(found, Mapping) else {}
    return (f'{text}<p>Class curves: {fmt_cell(curve.get("edits"))} edits per alpha (test images of other classes, '
            f'edited towards each class), classified by {_switch_classifier(clf)} '
            f'({fmt_pct(clf.get("test_accuracy"))} on the real test images).</p>'
            f'<table id="manipulation-curve"><thead><tr><th>alpha</th>{head}</tr></thead><tbody>{rows}</tbody></table>')


def _list(value: Any) -> list:
    """``value`` if it is a list (a file's field that should be one), else ``[]``."""
    return value if isinstance(value, list) else []


def _switch_frequencies(files: RunFiles) -> str:
    """The label-free score of ``switch_frequencies.json`` (``#switch-frequencies``), or ``""``."""
    f = switch_frequencies_result(files)
    if not isinstance(f, Mapping):
        return ""
    side = fmt_cell(f.get("low_pass"))
    return (f'<p id="switch-frequencies">Frequency score (switch_frequencies.json), no labels needed: of the '
            f'{fmt_cell(2 * f["pairs"] if isinstance(f.get("pairs"), int) else None)} switched decodes of '
            f'{fmt_cell(f.get("pairs"))} pairs of test images of {esc(f.get("dataset", "?"))}, '
            f'<span class="num">{fmt_pct(f.get("low_follows_z"))}</span> have low frequencies (the image averaged '
            f'to {side}x{side}) closer to the image that gave z, <span class="num">{fmt_pct(f.get("colour_follows_z"))}'
            f'</span> a mean colour closer to it, and <span class="num">{fmt_pct(f.get("high_follows_v"))}</span> '
            "high frequencies (the image minus that average) closer to the image that gave v; inverse saturated in "
            f'<span class="num">{fmt_pct(f.get("saturated"))}</span>. The paper\'s switch moves global style '
            "(colour, brightness, background) with z and keeps local content (edges, shape) with v: both near "
            "100%.</p>")


def _switch_metric(files: RunFiles) -> str:
    """What ``flowvae switch`` measured: the frequency score (``#switch-frequencies``) and the class
    metric of ``switch.json`` (``#switch-metric-table``); ``""`` without either."""
    frequencies = _switch_frequencies(files)
    m = switch_result(files)
    if not isinstance(m, Mapping):
        return frequencies
    rows = []
    for cell, r, z_from, v_from in (("(v1, z2)", m, "image 2", "image 1"),
                                    ("(v2, z1)", m.get("swapped"), "image 1", "image 2")):
        if isinstance(r, Mapping):
            rows.append(f'<tr data-decode="{esc(cell)}"><td>{esc(cell)}</td>'
                        f'<td class="num">{fmt_pct(r.get("follow_z"))} ({z_from})</td>'
                        f'<td class="num">{fmt_pct(r.get("follow_v"))} ({v_from})</td>'
                        f'<td class="num">{fmt_pct(r.get("neither"))}</td>'
                        f'<td class="num">{fmt_pct(r.get("saturated"))}</td></tr>')
    clf: dict = m["classifier"] if isinstance(m.get("classifier"), dict) else {}
    text = (f"Switch metric (switch.json): {fmt_cell(m.get('pairs'))} pairs of test images of different classes of "
            f"{esc(m.get('dataset', '?'))}; each decode is classified by {_switch_classifier(clf)} "
            f"(C = {esc(clf.get('C', '–'))}, trained on {fmt_cell(clf.get('n_train'))} real training images), whose accuracy "
            f"on the real test images, {fmt_pct(m.get('test_accuracy'))}, is the ceiling of the class-of-z column. "
            "A decode whose inverse flow saturated is clamped noise (mostly counted as neither).")
    head = "".join(f"<th>{h}</th>" for h in ("decode", "class of z", "class of v", "neither", "inverse saturated"))
    return (f'{frequencies}<p id="switch-metric">{text}</p><table id="switch-metric-table"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _switch_classifier(clf: dict) -> str:
    """The switch metric's classifier in words; ``switch.json`` files written before the logistic
    protocol carry none, and those used the linear SVM."""
    what = {"logistic": "a logistic regression", "standard": "a linear SVM"}.get(str(clf.get("protocol", "standard")),
                                                                             "a linear classifier")
    pool = clf.get("pool")
    where = (f"{esc(pool)}x{esc(pool)} average-pooled pixels" if isinstance(pool, int) and pool > 1
             else "pixels")
    return f"{what} on standardised {where}"


def _figures(files: RunFiles) -> str:
    parts = []
    # The results shown under their grid, or on their own when the grid is absent (written elsewhere with --out).
    results = {"switch": _switch_metric(files), "manipulation": _manipulation(files)}
    known = [p for p in files.figures if p.name in _FIGURE_TEXT]
    for p in sorted(known, key=lambda q: list(_FIGURE_TEXT).index(q.name)):
        got = read_png(p, files.notes)
        if got is None:
            continue
        sec_id, title, caption = _FIGURE_TEXT[p.name]
        extra_html = results.pop(sec_id, "")
        parts.append(_section(sec_id, title, f'<figure id="{sec_id}-grid" class="figure-grid">'
                                             f'{_img(p, *got, alt=title)}<figcaption>{esc(caption)}</figcaption></figure>'
                                             + extra_html))
    titles = {sec_id: title for sec_id, title, _ in _FIGURE_TEXT.values()}
    for sec_id, html in reversed(list(results.items())):
        if html:
            parts.insert(0, _section(sec_id, titles[sec_id], html))
    extra = []
    for p in files.figures:
        if p.name in _FIGURE_TEXT:
            continue
        got = read_png(p, files.notes)
        if got is not None:
            extra.append(f'<figure class="figure-grid">{_img(p, *got, alt=p.name)}'
                         f"<figcaption>{esc(p.name)}</figcaption></figure>")
    if extra:
        parts.append(_section("figures", "Other figures", "".join(extra)))
    return "".join(parts)


def _probe(probe: Any) -> str:
    if not isinstance(probe, Mapping) or not isinstance(probe.get("results"), dict):
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("features", "dim", "C", "test accuracy", "cross-validated accuracy",
                                             "train images", "test images"))
    rows = []
    for name, r in probe["results"].items():
        if not isinstance(r, dict):
            continue
        rows.append(f'<tr data-features="{esc(name)}"><td>{esc(name)}</td><td class="num">{fmt_cell(r.get("dim"))}</td>'
                    f'<td class="num">{esc(r.get("C", "–"))}</td><td class="num">{fmt_pct(r.get("accuracy"))}</td>'
                    f'<td class="num">{fmt_pct(r.get("cv_accuracy"))}</td><td class="num">{fmt_cell(r.get("n_train"))}</td>'
                    f'<td class="num">{fmt_cell(r.get("n_test"))}</td></tr>')
    caption = (f"linear probe on {esc(probe.get('dataset', '?'))} "
               f"({esc(probe.get('protocol', '?'))} protocol)")
    kl = probe.get("z_kl_nats")
    if isinstance(kl, (int, float)) and not isinstance(kl, bool):
        caption += f"; KL(q(z|x) || p(z)) on the test images {esc(f'{kl:.3f}')} nats"
        if probe.get("z_collapsed") is True:
            caption += (' <span id="probe-collapsed" class="warn">(collapsed: the probe of z reads the encoder\'s '
                        'features of x, not information the decoder takes from z)</span>')
    return _section("probe", "Linear probe", f'<p>{caption}</p><table id="probe-table"><thead><tr>{head}</tr>'
                                             f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _fid(fids: list[tuple[float, str, Mapping[str, Any]]]) -> str:
    if not fids:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("temperature", "FID", "KID", "samples", "real images", "dataset",
                                             "resize", "Inception SHA-256", "file"))
    rows = []
    for temp, fname, d in fids:
        sha = str(d.get("inception_sha256", ""))
        # a result without "resize" predates the standard (TensorFlow) resize: it is not comparable
        resize = esc(d["resize"]) if "resize" in d else "torch bilinear (older flowvae; not comparable)"
        kid = (f"{d['kid_mean']:.4f} ± {d['kid_std']:.4f}" if finite(d.get("kid_mean")) and finite(d.get("kid_std"))
               else fmt_cell(d.get("kid_mean")))
        rows.append(f'<tr><td class="num">{esc(d.get("temperature", temp))}</td><td class="num">{fmt_cell(d.get("fid"), 2)}'
                    f'</td><td class="num">{kid}</td><td class="num">{fmt_cell(d.get("n_fake"))}</td>'
                    f'<td class="num">{fmt_cell(d.get("n_real"))}</td><td>{esc(d.get("dataset", "–"))}</td>'
                    f'<td>{resize}</td><td><code title="{esc(sha)}">{esc(sha[:12] or "–")}</code></td><td>{esc(fname)}</td></tr>')
    return _section("fid", "FID and KID", f'<table id="fid-table"><thead><tr>{head}</tr></thead>'
                                          f'<tbody>{"".join(rows)}</tbody></table>')


def _eval(ev: Any) -> str:
    if not isinstance(ev, Mapping):
        return ""
    rows = [("dataset", esc(ev.get("dataset", "–"))), ("images", fmt_cell(ev.get("n"))),
            ("bits/dim, negative ELBO", fmt_cell(ev.get("elbo_bpd"))),
            (f"bits/dim, importance-weighted (K = {esc(ev.get('k', '?'))})", fmt_cell(ev.get("iw_bpd"))),
            ("KL (nats)", fmt_cell(ev.get("kl")))]
    if "roundtrip_images" in ev:
        bad = ev.get("roundtrip_mismatched_pixels")
        cls = "ok" if bad == 0 else "fail"
        rows.append(("encode/decode round trip", f'<span class="{cls}">{fmt_cell(bad)} mismatched pixels</span> '
                                                 f'in {fmt_cell(ev.get("roundtrip_images"))} images'))
    known = {"dataset", "n", "elbo_bpd", "iw_bpd", "k", "kl", "roundtrip_images", "roundtrip_mismatched_pixels"}
    rows += [(esc(k), fmt_cell(v)) for k, v in ev.items() if k not in known]
    return _section("eval", "Evaluation (eval.json)", _table(rows, "eval-table"))


def _check(ch: Any) -> str:
    if not isinstance(ch, Mapping):
        return ""
    ok = bool(ch.get("ok"))
    rows = []
    for c in ch.get("checks", []) if isinstance(ch.get("checks"), list) else []:
        if isinstance(c, dict):
            good = bool(c.get("ok"))
            # A passed check with a warning (e.g. samples clamped by an unstable model) is not a failure.
            cls, word = ("fail", "FAIL") if not good else ("warn", "warning") if c.get("warning") else ("ok", "pass")
            rows.append(f'<tr><td>{esc(c.get("name", "?"))}</td><td class="{cls}">'
                        f'{word}</td><td>{esc(c.get("detail", ""))}</td></tr>')
    warned = ok and isinstance(ch.get("warnings"), list) and bool(ch["warnings"])
    status = ("checks FAILED" if not ok else
              f'all checks passed, with warnings: {", ".join(str(w) for w in ch["warnings"])}' if warned
              else "all checks passed")
    body = (f'<p id="check-status" class="{"fail" if not ok else "warn" if warned else "ok"}">{esc(status)}'
            f'</p><table id="check-table"><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
    return _section("check", "Model checks (check.json)", body)


def config_section(cfg: dict, text: str, recorded: Any = None) -> str:
    """``#config-section``: the config as a table (``#config-table``), the departures from the paper
    it makes (``#departures``), and its text ``text`` as written. ``recorded``: the run's
    ``departures_from_paper`` (``environment.json``, in the kind's own words), named in place of
    those read from ``cfg``, which only runs written before the record have to rely on."""
    def cell(v: Any) -> str:
        # Lists (flow steps, widths) read best in YAML flow style, as one would type them.
        return esc(v if isinstance(v, str) else json.dumps(v))

    rows = []
    for section, values in cfg.items():
        if isinstance(values, dict):
            rows.append(f'<tr class="section"><th colspan="2">{esc(section)}</th></tr>')
            rows += [f"<tr><td>{esc(section)}.{esc(k)}</td><td><code>{cell(v)}</code></td></tr>"
                     for k, v in values.items()]
        else:
            rows.append(f"<tr><td>{esc(section)}</td><td><code>{cell(values)}</code></td></tr>")
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
    if isinstance(recorded, list) and recorded:
        departures = [esc(d) for d in recorded[:20]]
    note = (f'<p id="departures">Departures from the paper: {"; ".join(departures)}.'
            + (' The training objective is not the ELBO of eq. (2); the reported bits/dim are.' if objective else '')
            + '</p>' if departures else "")
    body = (note + f'<table id="config-table"><tbody>{"".join(rows)}</tbody></table>'
            f'<details><summary>config.yaml</summary><pre id="config-yaml">{esc(text)}</pre></details>')
    return _section("config", "Configuration", body)


def _environment(env: Any) -> str:
    if not isinstance(env, dict):
        return ""
    return _section("environment", "Environment",
                    _table([(esc(k), fmt_cell(v)) for k, v in env.items()], "environment-table"))


def notes_section(notes: list[str]) -> str:
    """``#notes-section``: one item per note (files present but not used); ``""`` without notes."""
    if not notes:
        return ""
    return _section("notes", "Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")


def page(title: str, body: str) -> str:
    """A whole HTML document: ``title`` (escaped here), the style sheet :data:`CSS`, ``body`` (HTML)
    and a footer naming this flowvae's version."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}"
            f'<footer class="muted"><p>written by flowvae {esc(__version__)}</p></footer></body></html>\n')


def write_page(path: Path, text: str) -> Path:
    """Write the page ``text`` to ``path`` (never through a link in its place) and return ``path``."""
    # Temporary file then rename, so a browser reloading the page never sees half of it.
    safe_io.atomic_write(path, text.encode("utf-8"))
    return path


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
    files = read_run(run)
    out = Path(out) if out is not None else Path(run) / "report.html"
    body = (f"<h1>flowvae run <span id=\"run-name\">{esc(files.name)}</span></h1>"
            + _summary(files) + curves_section(files.metrics) + _samples(files) + _figures(files) + _probe(files.probe)
            + _fid(files.fid) + _eval(files.eval) + _check(files.check)
            + config_section(files.config, files.config_text,
                             files.environment.get("departures_from_paper") if isinstance(files.environment, dict)
                             else None)
            + _environment(files.environment))
    body += notes_section(files.notes)  # last, after every section has had its chance to add notes
    return write_page(out, page(f"flowvae run {files.name}", body))
