"""Reading a run folder for the report and the comparison page.

Every file is read through :class:`~flowvae.runs.RunFolder` or the same checks: only as a regular
file (never through a symbolic link, never a FIFO or device), bounded in size. Only ``config.yaml``
is required; every other file is optional, and one that is present but cannot be read adds a line to
:attr:`RunFiles.notes` instead of failing, because reports are most wanted for runs that went wrong.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .. import safe_io
from ..errors import CheckpointError
from ..evaluation.sampling import SAMPLE_STATS_FILE
from ..runs import RunFolder
from ..runs.records import (
    CheckResult,
    EvalResult,
    FidResult,
    ManipulationResult,
    ProbeResult,
    Record,
    RecordError,
    SwitchFrequencies,
    SwitchResult,
)
from .format import one_line

__all__ = ["FID_FILE", "MAX_CONFIG_BYTES", "MAX_PNG_BYTES", "PNG_MAGIC", "SAMPLE_GRID", "RunFiles", "as_record",
           "config_value", "last_value", "param_count", "read_config", "read_png", "read_result", "read_run",
           "sample_stats", "switch_result", "switch_frequencies_result",
           "manipulation_result"]

#: ``samples/samples_tT.TT.png``: a sample grid at temperature ``T.TT``
SAMPLE_GRID = re.compile(r"^samples_t(\d+(?:\.\d+)?)\.png$")
#: ``fid_tT.TT.json``: the FID and KID of samples at temperature ``T.TT``
FID_FILE = re.compile(r"^fid_t(\d+(?:\.\d+)?)\.json$")
MAX_CONFIG_BYTES = 1024**2
MAX_PNG_BYTES = 64 * 1024**2
#: the first bytes of every PNG file
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

R = TypeVar("R", bound=Record)

# Buffers of this library's layers (ActNorm's init flag, the LU 1x1 convolution's fixed factors,
# BatchNorm statistics). model.safetensors stores the whole state_dict, so they are subtracted to
# give the same parameter count as ``sum(p.numel() for p in model.parameters())``.
_BUFFER_NAMES = frozenset({"initialized", "perm", "sign", "eye", "running_mean", "running_var",
                           "num_batches_tracked"})
# Networks that only the training loss uses (model.aux_decoder_weight's decoder of x from z): not
# part of the model that gives densities and samples, so not in its parameter count.
_TRAINING_ONLY = ("aux_decoder.",)


@dataclass
class RunFiles:
    """What a report shows of one run folder, read by :func:`read_run`.

    Attributes:
        path: the folder as given.
        name: the folder's own name (resolved, so ``.`` has one).
        config: ``config.yaml`` as a mapping (not validated as a :class:`~flowvae.config.Config`:
            a report shows runs of other releases too).
        config_text: ``config.yaml`` as written.
        notes: one line per optional file that was present but not used; sections rendered later
            add theirs (:func:`sample_stats`, :func:`switch_result`, :func:`read_png`).
        metrics: the records of ``metrics.jsonl``.
        environment: ``environment.json``'s value, or ``None``.
        dataset: the data set's name (the run's data record, else the config's reader), or ``–``.
        params: :func:`param_count` of ``model.safetensors``, or ``None``.
        probe, eval, check: ``probe.json``, ``eval.json``, ``check.json`` (:func:`as_record`), or ``None``.
        fid: ``(temperature, file name, result)`` of every ``fid_t*.json`` holding a mapping, coldest first.
        samples: the PNG files of ``samples/``, the sample grids first (coldest first).
        figures: the PNG files of the folder itself (links included, so that they are refused in a note).
    """

    path: Path
    name: str
    config: dict
    config_text: str
    notes: list[str]
    metrics: list[dict]
    environment: Any
    dataset: str
    params: dict[str, Any] | None
    probe: ProbeResult | Any
    eval: EvalResult | Any
    check: CheckResult | Any
    fid: list[tuple[float, str, FidResult | Mapping[str, Any]]]
    samples: list[Path]
    figures: list[Path]

    @property
    def folder(self) -> RunFolder:
        """The run folder, for the files a section reads when it is rendered."""
        return RunFolder(self.path)


def read_config(run: Path) -> tuple[dict, str]:
    """``run/config.yaml`` as a mapping and as text (bounded, a regular file; duplicate keys and deep
    nesting refused as for every config read, but the fields not checked).

    Raises:
        CheckpointError: no ``config.yaml``, or one that cannot be read, parsed, or is not a mapping.
    """
    from ..config import parse_yaml

    folder = RunFolder(run)
    if not folder.is_run():
        raise CheckpointError(f"{run} is not a flowvae run folder (no config.yaml)")
    path = folder.file(RunFolder.CONFIG)
    try:
        text = safe_io.read_text(path, MAX_CONFIG_BYTES)
        cfg = parse_yaml(text)
    except CheckpointError as e:
        raise CheckpointError(f"cannot use {path}: {one_line(e)}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"cannot read {path}: {one_line(e)}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not a flowvae config (expected a mapping of sections)")
    return cfg, text


def param_count(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """Parameter and stored-element counts from the safetensors header (no weights are loaded):
    ``parameters`` counts what the model uses for densities and samples, ``training_only`` the
    parameters of networks that only the training loss uses (an auxiliary decoder), ``stored`` every
    element, ``buffers`` those of buffers, ``metadata`` the header's metadata. ``None`` without the
    file, or (with a note) when it is unreadable, a link or not a regular file."""
    if not os.path.lexists(path):
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


def read_png(path: Path, notes: list[str]) -> tuple[bytes, int, int] | None:
    """The bytes, width and height of the PNG file ``path`` (bounded, a regular file), or ``None``
    with a note."""
    try:
        data = safe_io.read_bytes(path, MAX_PNG_BYTES)
    except (OSError, CheckpointError) as e:
        notes.append(f"{path.name} could not be read: {one_line(e)}")
        return None
    # Width and height sit at fixed offsets of the IHDR chunk, so no image library is needed.
    if len(data) < 24 or not data.startswith(PNG_MAGIC) or data[12:16] != b"IHDR":
        notes.append(f"{path.name} is not a PNG file; left out")
        return None
    return data, int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def as_record(value: Any, cls: type[R], where: str) -> R | Any:
    """``value`` (a result file's JSON) as the record ``cls`` when it is one, else as it is, ``None``
    included: a report shows what it can of a file of another release or one written by hand, every
    value escaped, rather than leaving it out. Either way it is a mapping of the file's keys or not a
    mapping at all, which the sections check."""
    try:
        return cls.from_dict(value, where)
    except RecordError:
        return value


def read_result(folder: RunFolder, key: str, cls: type[R], notes: list[str] | None) -> R | Any:
    """The result file ``RunFolder.RESULTS[key]`` of ``folder`` through :func:`as_record`; ``None``
    without the file, or (with a note) when it cannot be read."""
    name = RunFolder.RESULTS[key]
    return as_record(folder.read_json(name, notes), cls, name)


def config_value(cfg: dict, section: str, key: str) -> Any:
    """``cfg[section][key]``, or ``None`` where the config has no such section (a mapping) or key."""
    sec = cfg.get(section)
    return sec.get(key) if isinstance(sec, dict) else None


def last_value(metrics: list[dict], key: str) -> Any:
    """The newest value of ``key`` in the metrics records (records written at step 0 have no training
    loss yet), or ``None``."""
    for rec in reversed(metrics):
        if rec.get(key) is not None:
            return rec[key]
    return None


def _dataset(folder: RunFolder, cfg: dict, notes: list[str]) -> str:
    """The data set's name: from the run's data record (what was read), else as the config names
    its reader (runs of releases before the record)."""
    try:
        record = folder.read_data_record()
    except CheckpointError as e:
        notes.append(one_line(e))
        record = None
    if record is not None:
        return record.dataset_name
    return str(config_value(cfg, "data", "dataset") or "–")


def read_run(run: str | Path) -> RunFiles:
    """Everything a report shows of the run folder ``run`` but the files its sections read as they
    are rendered (:func:`sample_stats`, :func:`switch_result`, the PNG files).

    Raises:
        CheckpointError: ``run`` has no ``config.yaml`` (not a run folder) or it cannot be parsed.
    """
    run = Path(run)
    cfg, cfg_text = read_config(run)
    folder = RunFolder(run)
    notes: list[str] = []
    metrics = folder.read_metrics(notes)
    environment = folder.read_environment(notes)
    dataset = _dataset(folder, cfg, notes)
    params = param_count(folder.file(RunFolder.WEIGHTS), notes)
    probe = read_result(folder, "probe", ProbeResult, notes)
    eval_ = read_result(folder, "eval", EvalResult, notes)
    check = read_result(folder, "check", CheckResult, notes)
    fids = []
    for p in folder.fid_files():
        m = FID_FILE.match(p.name)
        if m and isinstance(d := folder.read_json(p.name, notes), dict):
            fids.append((float(m.group(1)), p.name, as_record(d, FidResult, p.name)))
    samples: list[tuple[float, Path]] = []
    others: list[tuple[float, Path]] = []
    samples_dir = folder.file(RunFolder.SAMPLES)
    if samples_dir.is_symlink():
        notes.append("samples is a symbolic link, not a folder of the run; its images are left out")
    elif samples_dir.is_dir():
        for p in sorted(samples_dir.glob("*.png")):
            m = SAMPLE_GRID.match(p.name)
            (samples if m else others).append((float(m.group(1)) if m else math.inf, p))
    return RunFiles(path=run, name=run.resolve().name, config=cfg, config_text=cfg_text, notes=notes,
                    metrics=metrics, environment=environment, dataset=dataset, params=params, probe=probe,
                    eval=eval_, check=check, fid=sorted(fids, key=lambda t: t[0]),
                    samples=[p for _, p in sorted(samples, key=lambda t: t[0])] + [p for _, p in others],
                    figures=sorted(p for p in run.glob("*.png") if p.is_file() or p.is_symlink()))


def sample_stats(files: RunFiles) -> dict[str, dict]:
    """``samples/sample_stats.json`` (written by training and ``flowvae sample``) by grid file name;
    ``{}`` without sample grids or without the file (a note when it is unreadable)."""
    if not files.samples:
        return {}
    d = files.folder.read_json(f"{RunFolder.SAMPLES}/{SAMPLE_STATS_FILE}", files.notes)
    grids = d.get("grids") if isinstance(d, dict) else None
    return {g["file"]: g for g in grids or [] if isinstance(g, dict) and isinstance(g.get("file"), str)}


def switch_result(files: RunFiles) -> SwitchResult | Mapping[str, Any] | None:
    """``switch.json`` (written by ``flowvae switch``; :func:`as_record`) when it holds a mapping, else
    ``None`` (a note when it is unreadable)."""
    m = read_result(files.folder, "switch", SwitchResult, files.notes)
    return m if isinstance(m, Mapping) else None


def switch_frequencies_result(files: RunFiles) -> SwitchFrequencies | Mapping[str, Any] | None:
    """``switch_frequencies.json`` (the label-free switch score of ``flowvae switch``; :func:`as_record`)
    when it holds a mapping, else ``None`` (a note when it is unreadable)."""
    m = read_result(files.folder, "switch-frequencies", SwitchFrequencies, files.notes)
    return m if isinstance(m, Mapping) else None


def manipulation_result(files: RunFiles) -> ManipulationResult | Mapping[str, Any] | None:
    """``manipulation.json`` (written by ``flowvae manipulate``; :func:`as_record`) when it holds a
    mapping, else ``None`` (a note when it is unreadable)."""
    m = read_result(files.folder, "manipulation", ManipulationResult, files.notes)
    return m if isinstance(m, Mapping) else None
