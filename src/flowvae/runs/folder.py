"""The run folder: its layout, and every read and write of its files, in one place.

A run folder holds::

    config.yaml              the resolved configuration (flowvae.config)
    model.safetensors        final weights (loadable without executing any code)
    checkpoints/ckpt-N.pt    full training state, with a .sha256 sidecar, the last few kept
    metrics.jsonl            one JSON object per evaluation (MetricsRow)
    environment.json         versions, git commit, hardware
    data.json                what the run was trained on (flowvae.runs.data.DataRecord)
    train.log                the human-readable log
    samples/                 sample grids and their statistics (sample_stats.json)
    eval.json, probe.json, check.json, switch.json, disentanglement.json, fid_tT.TT.json
                             the results of the commands (flowvae.runs.records)
    report.html              the HTML report
    .lock                    held by the training process (flowvae.runs.lock)

A folder from elsewhere may be hostile: every read here is of a regular file (never a symbolic link,
FIFO or device), bounded in size and validated; every write is atomic and refuses a link in its
place or a folder that leads out of the run (:mod:`flowvae.safe_io`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import safe_io
from ..errors import CheckpointError

if TYPE_CHECKING:
    from ..config import Config
    from ..models.base import GenerativeModel
    from .data import DataRecord
    from .lock import RunLock

__all__ = ["RunFolder", "RunReader", "fit_state", "read_config_and_model", "read_weights", "refuse_link"]

log = logging.getLogger("flowvae")

MAX_JSON_BYTES = 16 * 1024**2  # a result file is a few kB
MAX_METRICS_BYTES = 1024**3  # metrics.jsonl is re-read on resume and by the report, up to this size


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def refuse_link(path: Path) -> None:
    """Refuse a run-folder file that is a symbolic link or not a regular file (FIFO, device, folder).

    Raises:
        CheckpointError: one line saying what ``path`` is instead.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(f"refusing {path}: it is a symbolic link, not a file of the run folder")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"refusing {path}: it is {_file_kind(st.st_mode)}, not a regular file; replace it "
                              f"with the file itself")


def read_config_and_model(path: Path) -> tuple[Config, GenerativeModel]:
    """The config at ``path`` (a regular file, not a link) and its freshly built, untrained model.

    Raises:
        CheckpointError: ``path`` is a link or not a regular file. ConfigError: it does not parse.
    """
    from ..config import load_config
    from ..models.base import create_model

    refuse_link(path)
    cfg = load_config(path)
    return cfg, create_model(cfg)


def read_weights(weights: Path, kind: str, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``weights``, a safetensors file with flowvae's metadata for a ``kind`` model
    (and, with ``max_bytes``, at most that large, so a planted file cannot fill memory).

    Raises:
        CheckpointError: too large, not a safetensors file, or not flowvae's for a ``kind`` model.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if max_bytes is not None and (size := os.stat(weights).st_size) > max_bytes:
        raise CheckpointError(f"refusing {weights}: {size:,} bytes, more than the {max_bytes:,} that the "
                              f"weights of its config's {kind!r} model take; it is not this model's weight file")
    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - any parse failure means an unusable file
        raise CheckpointError(f"{weights} cannot be read ({e}); it is not a safetensors file "
                              f"or was cut short") from None
    if meta.get("format") != "flowvae" or meta.get("kind", kind) != kind:
        raise CheckpointError(f"{weights} was not written by flowvae for a {kind!r} model "
                              f"(metadata {meta}); check that the run folder is complete and unmodified")
    return state


def fit_state(model: GenerativeModel, state: dict[str, torch.Tensor], source: Path, config: Path) -> None:
    """Load ``state`` into ``model`` strictly: every tensor present, in name and shape.

    Raises:
        CheckpointError: the first tensor that is missing, unexpected or of another shape.
    """
    from .checkpoints import state_dict_mismatch

    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit the architecture in {config}: "
                              f"{state_dict_mismatch(e)}") from None


class RunFolder:
    """One run folder (module docstring): where its files are, and how each is read and written.

    Args:
        path: the folder (need not exist yet: training creates it).
    """

    CONFIG = "config.yaml"
    WEIGHTS = "model.safetensors"
    CHECKPOINTS = "checkpoints"
    METRICS = "metrics.jsonl"
    ENVIRONMENT = "environment.json"
    DATA = "data.json"
    LOG = "train.log"
    SAMPLES = "samples"
    REPORT = "report.html"
    LOCK = ".lock"
    #: the result file of each command that writes one
    RESULTS = {"eval": "eval.json", "probe": "probe.json", "check": "check.json", "switch": "switch.json",
               "switch-frequencies": "switch_frequencies.json", "disentanglement": "disentanglement.json",
               "directions": "directions.json", "manipulation": "manipulation.json"}

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the folder."""
        return self.path / name

    # ---------------------------------------------------------------- what it holds

    def is_run(self) -> bool:
        """Whether the folder holds a ``config.yaml`` (as anything: a link or FIFO in its place is
        refused when read, not taken for a missing file)."""
        return os.path.lexists(self.file(self.CONFIG))

    def has_training(self) -> bool:
        """Whether a training run wrote into the folder (final weights or a checkpoint)."""
        ckpts = self.file(self.CHECKPOINTS)
        return os.path.lexists(self.file(self.WEIGHTS)) or (ckpts.is_dir() and any(ckpts.glob("ckpt-*.pt")))

    def require_run(self) -> None:
        """Raise :class:`CheckpointError` unless the folder holds a ``config.yaml``."""
        if not self.is_run():
            raise CheckpointError(f"{self.path} is not a flowvae run folder (no config.yaml); pass the folder "
                                  f"given to --run")

    # ---------------------------------------------------------------- config

    def read_config(self) -> Config:
        """The run's config (a regular file, bounded, every field checked).

        Raises:
            CheckpointError: no config, or one that is a link or not a regular file. ConfigError: it
                does not parse.
        """
        from ..config import load_config

        self.require_run()
        refuse_link(self.file(self.CONFIG))
        return load_config(self.file(self.CONFIG))

    def write_config(self, cfg: Config) -> Path:
        """Write ``cfg`` as ``config.yaml``, atomically."""
        from ..config import save_config

        save_config(cfg, self.file(self.CONFIG))
        return self.file(self.CONFIG)

    # ---------------------------------------------------------------- weights and model

    def read_weights(self, kind: str, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
        """The final weights (:func:`read_weights`), refused when ``model.safetensors`` is a link."""
        path = self.file(self.WEIGHTS)
        refuse_link(path)
        return read_weights(path, kind, max_bytes)

    def write_weights(self, model: GenerativeModel) -> Path:
        """Write ``model``'s state dict as ``model.safetensors`` (metadata ``format=flowvae``, ``kind``,
        ``flowvae_version``), atomically."""
        from safetensors.torch import save as save_safetensors

        from ..version import __version__

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        data = save_safetensors(state, metadata={"format": "flowvae", "kind": model.kind, "flowvae_version": __version__})
        safe_io.atomic_write(self.file(self.WEIGHTS), data, root=self.path)
        return self.file(self.WEIGHTS)

    def load_model(self, device: str | torch.device = "cpu", checkpoint: str | None = None) -> GenerativeModel:
        """The run's model in eval mode on ``device`` (see :func:`flowvae.runs.load_run`)."""
        from ..devices import resolve_device
        from .checkpoints import checkpoint_reported_state, load_latest_checkpoint

        device = resolve_device(str(device))  # "cuda" without a GPU: a one-line ConfigError, before any reading
        self.require_run()
        config_path = self.file(self.CONFIG)
        cfg, model = read_config_and_model(config_path)
        weights = self.file(self.WEIGHTS)
        if os.path.lexists(weights) and checkpoint != "latest":
            refuse_link(weights)
        if weights.is_file() and checkpoint != "latest":
            state, source = read_weights(weights, cfg.model.kind), weights
        else:
            found = load_latest_checkpoint(self.file(self.CHECKPOINTS))
            if found is None:
                raise CheckpointError(f"{self.path} has neither model.safetensors nor a valid checkpoint; train it first")
            source, ckpt = found
            state = checkpoint_reported_state(source, ckpt)
        fit_state(model, state, source, config_path)
        model.config = cfg
        model.run_dir = self.path  # where the run's metrics live, for the model card of save_pretrained
        return model.to(device).eval()

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 3) -> Path:
        """``checkpoints/ckpt-STEP.pt`` with its checksum; the newest ``keep`` are kept."""
        from .checkpoints import save_checkpoint

        return save_checkpoint(self.file(self.CHECKPOINTS), step, state, keep=keep)

    def latest_checkpoint(self, skipped: list[tuple[Path, str]] | None = None) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that passes its checksum, or ``None`` (damaged ones are skipped,
        with a warning, and listed in ``skipped``)."""
        from .checkpoints import load_latest_checkpoint

        return load_latest_checkpoint(self.file(self.CHECKPOINTS), skipped)

    def checkpoints(self) -> list[Path]:
        """The checkpoint files, oldest first."""
        from .checkpoints import list_checkpoints

        return list_checkpoints(self.file(self.CHECKPOINTS))

    # ---------------------------------------------------------------- metrics

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one evaluation's record to ``metrics.jsonl`` (never through a link)."""
        safe_io.append_line(self.file(self.METRICS), json.dumps(record), root=self.path)

    def read_metrics(self, notes: list[str] | None = None) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` with an integer or float ``step``, in order. Lines cut by a
        kill and records of another shape are skipped (counted in ``notes``); an unreadable file
        gives ``[]`` (and a note)."""
        path = self.file(self.METRICS)
        if not os.path.lexists(path):
            return []
        try:
            lines = safe_io.read_text(path, MAX_METRICS_BYTES).splitlines()
        except (OSError, UnicodeDecodeError, CheckpointError) as e:
            _note(notes, f"{path.name} could not be read: {_one_line(e)}")
            return []
        records, bad = [], 0
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                bad += 1  # a run killed mid-write can leave half a line; the rest is still good
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)) and not isinstance(rec["step"], bool):
                records.append(rec)
            else:
                bad += 1
        if bad:
            _note(notes, f"{path.name}: {bad} line(s) skipped that were not metrics records")
        return records

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keep only the records of steps up to ``step`` (those an uninterrupted run has at that point),
        atomically: a run killed after its last checkpoint wrote records the resumed run writes again.
        ``step=-1`` empties the file (a fresh start). Returns the kept records."""
        path = self.file(self.METRICS)
        if not os.path.lexists(path):
            return []
        keep, records = [], []
        for line in safe_io.read_text(path, MAX_METRICS_BYTES, root=self.path).splitlines():
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):  # a line cut by the kill
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
                keep.append(line)
                records.append(rec)
        safe_io.atomic_write(path, "".join(line + "\n" for line in keep).encode(), root=self.path)
        return records

    # ---------------------------------------------------------------- JSON files

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON to ``name`` inside the folder, atomically."""
        path = self.file(name)
        safe_io.atomic_write(path, json.dumps(obj, indent=2).encode(), root=self.path)
        return path

    def read_json(self, name: str, notes: list[str] | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
        """The JSON value of ``name``, or ``None`` when it is absent; one that cannot be read (a link,
        too large, not JSON) gives ``None`` and a note."""
        path = self.file(name)
        if not os.path.lexists(path):
            return None
        try:
            return json.loads(safe_io.read_text(path, max_bytes))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, CheckpointError) as e:
            _note(notes, f"{path.name} could not be read: {_one_line(e)}")
            return None

    def write_environment(self, record: dict[str, Any]) -> Path:
        """Write ``environment.json``."""
        return self.write_json(self.ENVIRONMENT, record)

    def read_environment(self, notes: list[str] | None = None) -> Any:
        """``environment.json``'s content, or ``None``."""
        return self.read_json(self.ENVIRONMENT, notes)

    def write_data_record(self, record: DataRecord) -> Path:
        """Write ``data.json`` (:class:`~flowvae.runs.data.DataRecord`)."""
        from .data import write_data_record

        return write_data_record(self.path, record)

    def read_data_record(self) -> DataRecord | None:
        """``data.json``'s record, or ``None`` for a run without one (:func:`~flowvae.runs.data.read_data_record`)."""
        from .data import read_data_record

        return read_data_record(self.path)

    def fid_files(self) -> Iterator[Path]:
        """The ``fid_tT.TT.json`` files, sorted by name."""
        return iter(sorted(self.path.glob("fid_t*.json")))

    # ---------------------------------------------------------------- the lock

    def lock(self) -> RunLock:
        """The folder's training lock (not yet acquired: ``with run.lock(): ...`` or ``.acquire()``)."""
        from .lock import RunLock

        return RunLock(self.path)

    def remove_temporary_files(self) -> list[Path]:
        """Delete the temporary files a killed writer left (:func:`flowvae.runs.lock.remove_temporary_files`)."""
        from .lock import remove_temporary_files

        return remove_temporary_files(self.path)


class RunReader:
    """Reads other run folders for a run being prepared (:class:`flowvae.models.base.OtherRuns`: stage 1
    of the multi-stage model), through :class:`RunFolder`'s checks."""

    def is_run(self, run: str) -> bool:
        """Whether ``run`` holds a ``config.yaml``."""
        return RunFolder(run).is_run()

    def model_config(self, run: str) -> Any:
        """The model section of ``run``'s config."""
        return RunFolder(run).read_config().model

    def model(self, run: str) -> GenerativeModel:
        """``run``'s trained model, in eval mode on the CPU."""
        return RunFolder(run).load_model("cpu")


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)
    else:
        log.warning("%s", text)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
