"""The model card: the ``README.md`` of a shared model (:func:`model_card`), the sample grid shown on
it (:func:`sample_grid`), and the checks of the repository id and license it names.

YAML front matter (``library_name: flowvae``, ``license``, ``tags``, ``pipeline_tag`` and
``datasets`` where the data set has a Hub id), then the model kind, its config, parameter count,
test bits/dim, probe accuracies, the sample grid, hardware and wall time, how to load it, and the
paper's citation. Every value taken from the run's files is escaped for Markdown and HTML, so a
hostile run folder cannot inject links, images or markup. :mod:`flowvae.hub` writes the card beside
the model's files.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import safe_io
from ..config import Config
from ..errors import CheckpointError, ConfigError
from ..evaluation.sampling import SAMPLE_STATS_FILE
from ..models.base import GenerativeModel
from ..runs import RunFolder
from ..runs.data import DataRecord
from ..runs.records import EvalResult, ProbeResult
from .format import finite, fmt_duration, fmt_pct, one_line  # the same cells as the HTML report
from .read import MAX_PNG_BYTES, PNG_MAGIC, SAMPLE_GRID, read_result

__all__ = ["CARD_FILE", "HUB_DATASETS", "MAX_CARD_BYTES", "REPO_ID", "SAMPLE_FILE", "check_license", "check_repo_id",
           "data_record", "model_card", "sample_grid"]

log = logging.getLogger("flowvae")

#: the card's file name beside the model's files
CARD_FILE = "README.md"
#: the sample grid beside the card, which the card shows
SAMPLE_FILE = "samples.png"
#: the most bytes of a card, or of the sample statistics, that are read
MAX_CARD_BYTES = 1024**2
#: a Hub repository id, ``USER/NAME`` or ``ORGANISATION/NAME``
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.-]{1,96}$")
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")

#: known data sets (:attr:`flowvae.data.ImageData.verified`) with a data set repository on the Hub, for the
#: card's ``datasets:``; a run's data is tagged only when its files were verified to be one of these
HUB_DATASETS = {"mnist": "ylecun/mnist", "cifar10": "uoft-cs/cifar10", "cifar10-jpeg": "uoft-cs/cifar10"}

_CITATION = """@inproceedings{ma2021decoupling,
  title     = {Decoupling Global and Local Representations via Invertible Generative Flows},
  author    = {Ma, Xuezhe and Kong, Xiang and Zhang, Shanghang and Hovy, Eduard},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2021},
  url       = {https://openreview.net/forum?id=iWLByfvUhN}
}"""


def check_repo_id(repo_id: Any) -> str:
    """``repo_id`` when it is a Hub repository id ``USER/NAME`` (nothing that could climb out of a
    path or be taken for a git URL).

    Raises:
        ConfigError: anything else, in one line.
    """
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith(".git"):
        raise ConfigError(f"{repo_id!r} is not a Hub repository id; give USER/NAME (letters, digits, '-', '_', '.')")
    return repo_id


def check_license(license: Any) -> str:
    """``license`` when it is written like a Hub license id (``mit``, ``apache-2.0``, ``other``).

    Raises:
        ConfigError: anything else, in one line.
    """
    if not isinstance(license, str) or not _LICENSE.match(license):
        raise ConfigError(f"license {license!r} is not a Hub license id; give e.g. mit, apache-2.0, cc-by-4.0 or other")
    return license


def _grid_stats(run: Path) -> dict[str, tuple[str, int, int]]:
    """``{file name: (sha256, bad samples, samples)}`` from ``samples/sample_stats.json`` (written by
    training and ``flowvae sample``), bad = saturated or non-finite; only well-formed records."""
    path = run / "samples" / SAMPLE_STATS_FILE
    if not os.path.lexists(path):
        return {}
    try:
        records = json.loads(safe_io.read_text(path, MAX_CARD_BYTES, root=run)).get("grids", [])
    except (OSError, ValueError, AttributeError, RecursionError, CheckpointError) as e:
        log.warning("sample statistics %s not used on the model card: %s", path, one_line(e))
        return {}
    def count(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

    out = {}
    for r in records if isinstance(records, list) else []:
        if not isinstance(r, dict) or not isinstance(r.get("file"), str) or not isinstance(r.get("sha256"), str):
            continue
        sat, nonfinite, n = count(r.get("saturated_samples") or 0), count(r.get("nonfinite_samples") or 0), count(r.get("samples"))
        if sat is not None and nonfinite is not None and n:
            out[r["file"]] = (r["sha256"], sat + nonfinite, n)
    return out


def sample_grid(run: Path | None) -> tuple[bytes, str] | None:
    """The PNG bytes of the run's sample grid with the fewest saturated samples, and its caption.

    The statistics of ``samples/sample_stats.json`` count only for the very file they describe (its
    SHA-256). Among equally clean grids (or without statistics) temperature 1 comes first, then the
    hottest: the model's own distribution, unless it is mostly noise (an undertrained flow's inverse
    saturates at T = 1), when a colder grid shows what it learnt and the caption says so.
    """
    if run is None or (run / "samples").is_symlink() or not (run / "samples").is_dir():
        return None
    stats = _grid_stats(run)
    found: list[tuple[float, bytes, tuple[int, int] | None]] = []
    for p in (run / "samples").iterdir():
        if not (m := SAMPLE_GRID.match(p.name)):
            continue
        try:
            data = safe_io.read_bytes(p, MAX_PNG_BYTES, root=run)
        except (OSError, CheckpointError) as e:
            log.warning("sample grid %s left off the model card: %s", p, one_line(e))
            continue
        if not data.startswith(PNG_MAGIC):
            log.warning("sample grid %s left off the model card: it is not a PNG file", p)
            continue
        st = stats.get(p.name)
        bad = (st[1], st[2]) if st is not None and st[0] == hashlib.sha256(data).hexdigest() else None
        found.append((float(m.group(1)), data, bad))
    if not found:
        return None
    counted = {t: b for t, _, b in found if b is not None}
    low = min((b[0] / b[1] for b in counted.values()), default=None)
    pool = [f for f in found if low is None or (f[2] is not None and f[2][0] / f[2][1] == low)]
    temperature, data, bad = max(pool, key=lambda f: (f[0] == 1.0, f[0]))
    caption = f"samples at temperature {temperature:.2f}"
    if bad is not None:
        caption += f" ({bad[0]} of {bad[1]} saturated the inverse flow)"
        at_one = counted.get(1.0)
        if temperature != 1.0 and at_one is not None:
            caption += f", the grid with the fewest; at temperature 1, {at_one[0]} of {at_one[1]} did"
    return data, caption


def data_record(run: Path | None) -> DataRecord | None:
    """The run's data record, or ``None`` (no run, no record, or an unreadable one: logged)."""
    try:
        return RunFolder(run).read_data_record() if run is not None else None
    except (OSError, CheckpointError) as e:
        log.warning("data record of %s left off the model card: %s", run, one_line(e))
        return None


# The characters that start Markdown syntax in the middle of a line (values from run files are never
# put at the start of one, where "-", "+", "1." and "=" would matter too).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~$])")


def _md(value: Any) -> str:
    """``value`` as one line of inert Markdown text: HTML's ``& < >`` as entities (no tags) and
    Markdown's inline punctuation backslash-escaped (no links, images, emphasis, code, table cells
    or maths)."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(value).split()), quote=False))


def _num(v: Any, digits: int = 4) -> str:
    """A number from a run file formatted, or ``–`` for anything else (text where a number belongs)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{v:.{digits}f}" if finite(v) else "–"


def _value(v: Any) -> str:
    """A config value for a table cell: numbers and lists as code, text escaped."""
    if isinstance(v, str):
        return _md(v)
    text = json.dumps(v)
    if "`" in text or "\n" in text:
        return _md(text)
    return "`" + text.replace("|", "\\|") + "`"  # GFM splits table cells at every unescaped pipe, in code too


def _rows(rows: list[tuple[str, str]], head: tuple[str, str] = ("", "")) -> list[str]:
    """A two-column Markdown table; the cells must already be escaped."""
    return [f"| {head[0]} | {head[1]} |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]


def _run_files(run: Path | None) -> dict[str, Any]:
    """What the card shows from the run folder; unreadable files are logged and left out."""
    if run is None:
        return {}
    notes: list[str] = []
    folder = RunFolder(run)
    files = {"metrics": folder.read_metrics(notes),
             "eval": read_result(folder, "eval", EvalResult, notes),
             "probe": read_result(folder, "probe", ProbeResult, notes),
             "environment": folder.read_environment(notes)}
    for note in notes:
        log.warning("model card: %s", note)
    return files


def _results(files: dict[str, Any]) -> list[tuple[str, str]]:
    ev, metrics = files.get("eval"), files.get("metrics") or []
    if isinstance(ev, Mapping) and finite(ev.get("elbo_bpd")):
        where = f"{_md(ev.get('dataset', 'test set'))}, {_num(ev.get('n'))} images, `flowvae eval`"
        rows = [(f"test bits/dim, negative ELBO ({where})", _num(ev["elbo_bpd"]))]
        if finite(ev.get("iw_bpd")):
            rows.append((f"test bits/dim, importance-weighted bound (K = {_num(ev.get('k'))})", _num(ev["iw_bpd"])))
        if finite(ev.get("kl")):
            rows.append(("KL(q(z\\|x) \\|\\| p(z)), nats", _num(ev["kl"], 3)))
        return rows
    last = next((r for r in reversed(metrics) if finite(r.get("test_elbo_bpd"))), None)
    if last is None:
        return []
    rows = [(f"test bits/dim, negative ELBO (K = {_num(last.get('test_k'))}, {_num(last.get('test_n'))} images, "
             f"step {_num(last.get('step'))} of training)", _num(last["test_elbo_bpd"]))]
    if finite(last.get("test_kl")):
        rows.append(("KL(q(z\\|x) \\|\\| p(z)), nats", _num(last["test_kl"], 3)))
    return rows


def _probe(probe: Any) -> list[str]:
    if not isinstance(probe, Mapping) or not isinstance(probe.get("results"), dict):
        return []
    lines = ["", f"Linear probe (`flowvae probe`, {_md(probe.get('protocol', '?'))} protocol) on "
                 f"{_md(probe.get('dataset', '?'))}:", "",
             "| features | dim | test accuracy |", "| --- | --- | --- |"]
    lines += [f"| {_md(name)} | {_num(r.get('dim'))} | {fmt_pct(r.get('accuracy'))} |"
              for name, r in probe["results"].items() if isinstance(r, dict)]
    return lines


def _training(files: dict[str, Any], cfg: Config) -> list[tuple[str, str]]:
    metrics, env = files.get("metrics") or [], files.get("environment")
    rows = []
    if metrics:
        rows.append(("steps", f"{_num(metrics[-1].get('step'))} of batch {cfg.train.batch_size:,}"))
        time_s = next((r["time_s"] for r in reversed(metrics) if r.get("time_s") is not None), None)
        rows.append(("wall time (since training started, set-up included)", fmt_duration(time_s)))
    if isinstance(env, dict):
        hw = [str(env.get("gpu") or env.get("cpu_model") or env.get("processor") or "?")]
        if finite(env.get("cpu_count")):
            hw.append(f"{env['cpu_count']} CPUs")
        if env.get("device"):
            hw.append(f"device {env['device']}")
        if finite(env.get("processes")) and env["processes"] > 1:
            hw.append(f"{env['processes']} processes")
        rows.append(("hardware", _md(", ".join(hw))))
        soft = [f"{name} {env[name]}" for name in ("flowvae", "torch", "python") if env.get(name)]
        if soft:
            rows.append(("software", _md(", ".join(soft))))
    return rows


def _data_text(record: DataRecord | None, dataset: str | None) -> tuple[str, list[tuple[str, str]]]:
    """``("trained on ...", table rows)`` of the card: from the run's data record where there is one
    (names, sizes, where the data came from, whether its files were verified), else the config's
    data set as a name only."""
    if record is None:
        if dataset is None:
            return "saved from Python (no run folder, so no metrics)", [("data set", "–")]
        return (f"trained on {_md(dataset)} (as its config names it)",
                [("data set", f"{_md(dataset)} (named by the config; no data record, so its files were not verified)")])
    origin = "data passed from Python, " if record.origin == "python" else ""
    check = (f"files verified as {_md(record.verified)} by their checksums" if record.verified else
             "its files are not a known data set's, so it is named after them")
    return (f"trained on {origin}{_md(record.train.describe())}",
            [("training data", f"{origin}{_md(record.train.describe())}; {check}"),
             ("test data", _md(record.test.describe()))])


def model_card(model: GenerativeModel, config: Config, *, run: str | Path | None = None, repo_id: str | None = None,
               license: str = "mit", dataset_known: bool = True, sample: str | None = None) -> str:
    """The ``README.md`` model card of ``model`` (module docstring), as Markdown with YAML front matter.

    Args:
        model: the model.
        config: its whole config (as stored in ``config.yaml``).
        run: the run folder to read ``metrics.jsonl``, ``eval.json``, ``probe.json`` and
            ``environment.json`` from; ``None``: no metrics (a model built in Python).
        repo_id: the repository id of the loading example [default: ``USER/NAME``].
        license: the license id of the front matter.
        dataset_known: whether ``config.data`` names the data the model was trained on (used
            only without the run's data record, ``data.json``, which says what the data was).
        sample: the caption of ``samples.png`` beside the card, or ``None`` without one.

    Raises:
        ConfigError: a bad ``repo_id`` or ``license``.
    """
    import yaml

    kind, license = model.kind, check_license(license)
    repo = check_repo_id(repo_id) if repo_id is not None else "USER/NAME"
    record = data_record(Path(run)) if run is not None else None
    trained_on, data_rows = _data_text(record, config.data.dataset if dataset_known else None)
    # the kind's own tags and phrase: a new kind needs no entry here
    tags = ["flowvae", "pytorch", "image-generation"] + [t for t in model.card_tags if t != "flowvae"]
    front: dict[str, Any] = {"library_name": "flowvae", "license": license, "tags": tags}
    if record is not None and record.verified in HUB_DATASETS:  # only data whose files were checked
        front["datasets"] = [HUB_DATASETS[record.verified]]
    front["pipeline_tag"] = "unconditional-image-generation"
    files = _run_files(Path(run) if run is not None else None)
    m = config.model
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {_md(config.name)}", "",
             f"A `{kind}` model, {model.description}, {trained_on}, "
             f"with [flowvae](https://github.com/flowvae/flowvae)."]
    if sample:
        lines += ["", f"![{sample}]({SAMPLE_FILE})"]
    lines += ["", "## Use", "", "```python", "import flowvae",
              f'model = flowvae.from_pretrained("{repo}")  # or the path of a folder holding these files', "```", "",
              "`model.sample(16)` draws 16 uint8 images `[16, C, H, W]`; `model.bits_per_dim(x)` scores uint8 "
              "images. Loading reads `config.yaml` and `model.safetensors` only and never runs code from the "
              "repository (no pickle).", "", "## Model", ""]
    params = model.parameter_count()  # without the training-only auxiliary decoder
    lines += _rows([("kind", f"`{kind}`"), ("parameters", f"{params:,}"),
                    ("images", f"{m.in_channels} × {m.image_size} × {m.image_size}, {model.n_bits} bits"),
                    *data_rows,
                    ("capabilities", ", ".join(model.capabilities.names()) or "–")])
    # The run's record names the training departures too (KL warm-up, schedules); without a run, the kind's own.
    env = files.get("environment")
    recorded = env.get("departures_from_paper") if isinstance(env, dict) else None
    departures = [str(d) for d in recorded[:20]] if isinstance(recorded, list) else m.departures()
    if departures:
        lines += ["", "**Departures from the paper:** " + "; ".join(_md(d) for d in departures) + "."]
    lines += ["", "Configuration (`model` section of `config.yaml`):", ""]
    lines += _rows([(f"`{k}`", _value(v)) for k, v in m.to_dict().items()], ("field", "value"))
    results, probe = _results(files), _probe(files.get("probe"))
    if results or probe:
        lines += ["", "## Results", ""]
        if results:
            lines += _rows(results, ("metric", "value"))
        lines += probe
    training = _training(files, config)
    if training:
        lines += ["", "## Training", ""] + _rows(training)
    lines += ["", "## Citation", "", "```bibtex", _CITATION, "```", ""]
    return "\n".join(lines)
