"""The page of :func:`compare_runs`: several run folders side by side, in one table and one plot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .format import esc, fmt_cell, fmt_duration, fmt_pct
from .html import notes_section, page, write_page
from .plot import curve, svg_plot
from .read import RunFiles, config_value, last_value, read_run

__all__ = ["compare_runs"]


def _unique_names(infos: list[RunFiles]) -> list[str]:
    """Folder names, widened with parent folders where two runs share a name (a/run, b/run)."""
    parts = [info.path.resolve().parts for info in infos]
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
    infos = [read_run(r) for r in runs]
    names = _unique_names(infos)
    probes: list[str] = []
    for info in infos:
        res = info.probe.get("results") if isinstance(info.probe, Mapping) else None
        for k in res if isinstance(res, dict) else []:
            if k not in probes:
                probes.append(k)
    # Parameters of what gives densities and samples: a training-only auxiliary decoder is left out.
    head = "".join(f"<th>{h}</th>" for h in ("run", "kind", "dataset", "parameters (densities and samples)", "steps",
                                             "final test bits/dim", "final KL (nats)", "wall time"))
    head += "".join(f"<th>probe {esc(p)}</th>" for p in probes)
    rows = []
    for name, info in zip(names, infos):
        m, cfg = info.metrics, info.config
        params = fmt_cell(info.params["parameters"]) if info.params else "–"
        res = info.probe.get("results") if isinstance(info.probe, Mapping) else None
        res = res if isinstance(res, dict) else {}
        accs = "".join(f'<td class="num">{fmt_pct(r.get("accuracy") if isinstance(r := res.get(p), dict) else None)}'
                       "</td>" for p in probes)
        rows.append(f'<tr data-run="{esc(name)}"><td>{esc(name)}</td>'
                    f'<td>{esc(config_value(cfg, "model", "kind") or "–")}</td>'
                    f'<td>{esc(info.dataset)}</td><td class="num">{params}</td>'
                    f'<td class="num">{fmt_cell(m[-1]["step"]) if m else "–"}</td>'
                    f'<td class="num final-bpd">{fmt_cell(last_value(m, "test_elbo_bpd"))}</td>'
                    f'<td class="num">{fmt_cell(last_value(m, "test_kl"))}</td>'
                    f'<td class="num">{esc(fmt_duration(last_value(m, "time_s")))}</td>{accs}</tr>')
    plot = svg_plot([(name, curve(info.metrics, "test_elbo_bpd")) for name, info in zip(names, infos)],
                    "compare-plot", "step", "test bits/dim (negative ELBO)", width=760, height=380)
    notes = [f"{name}: {n}" for name, info in zip(names, infos) for n in info.notes]
    body = (f"<h1>flowvae: {len(infos)} runs compared</h1>"
            f'<section id="compare-section"><h2>Runs</h2><table id="compare-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>'
            f'<section id="compare-curves-section"><h2>Test bits/dim</h2><figure>{plot}</figure></section>'
            + notes_section(notes))
    return write_page(Path(out), page("flowvae runs compared", body))
