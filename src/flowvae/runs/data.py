"""What data a run was trained on, recorded in its folder, and the data commands read for it.

``config.yaml`` says how to *read* data (``data.dataset`` names a reader, ``data.root`` a place);
it cannot say what was read: a run trained from Python on a ``Dataset`` keeps the preset's data
section, a folder moves, an exported model loses its local paths. So ``flowvae train`` writes
``RUN/data.json`` (:class:`DataRecord`): where the data came from (the config, or Python), and for
each split its name, size, image shape, whether it has labels, its Python type and the known data
set its files were verified to be (``ImageData.verified``).

Commands that read images go through :func:`load_run_split`: with ``--data PATH`` they read those
images (recognised as ``flowvae train --data`` recognises them) after checking that they fit the
model; without it they read the run's own data, and refuse in one line when the run's data came
from Python or the config now reads other data than the run was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from flowvae import safe_io
from flowvae.data.base import ImageData
from flowvae.data.registry import ARCHIVES, describe_image_folder, load_split, open_split, source_for_path
from flowvae.data.streaming import dataset_image_shape, dataset_labels
from flowvae.errors import CheckpointError, DataError

__all__ = ["DATA_RECORD_FILE", "DataRecord", "SplitRecord", "check_data_fits", "check_fits", "load_data",
           "load_run_split", "read_data_record", "write_data_record"]

log = logging.getLogger("flowvae")

DATA_RECORD_FILE = "data.json"
_MAX_RECORD_BYTES = 64 * 1024  # a record is a few hundred bytes
_MAX_TEXT = 300  # names and type names are one line; longer text in a record is not ours


@dataclass(frozen=True)
class SplitRecord:
    """One split of a run's data as training saw it.

    Attributes:
        name: the dataset's name, e.g. ``"mnist/test"``, ``"fashion/train (held out: 40 of 400 images, seed 0)"``.
        images: number of images.
        shape: ``(C, H, W)`` of one image.
        labelled: whether the split has class labels.
        type: ``"ImageData"`` or the Python class name of the ``Dataset`` passed to ``train``.
        verified: the known data set its files were checked to be (``"mnist"``, ``"cifar10"``, ...)
            or ``None`` (see :attr:`flowvae.data.ImageData.verified`).
    """

    name: str
    images: int
    shape: tuple[int, int, int]
    labelled: bool
    type: str
    verified: str | None = None

    @classmethod
    def of(cls, data: Any) -> SplitRecord:
        """The record of ``data`` (:class:`ImageData` or a map-style dataset)."""
        name = getattr(data, "name", None)
        kind = type(data).__name__
        return cls(name=str(name) if name is not None else kind, images=len(data), shape=dataset_image_shape(data),
                   labelled=dataset_labels(data) is not None, type=kind, verified=getattr(data, "verified", None))

    def describe(self) -> str:
        """``"fashion/train: 360 images of 1x28x28"`` (with the Python type when it is not ImageData)."""
        kind = "" if self.type == "ImageData" or self.type == self.name else f" ({self.type})"
        return f"{self.name}{kind}: {self.images:,} images of {'x'.join(map(str, self.shape))}"


@dataclass(frozen=True)
class DataRecord:
    """What data a run was trained on (``RUN/data.json``).

    Attributes:
        origin: ``"config"`` (read as ``config.yaml``'s data section says) or ``"python"`` (datasets
            passed to :func:`flowvae.train`, which the config does not describe).
        dataset: the config's ``data.dataset`` at training time (the reader).
        train, test: the two splits.
    """

    origin: Literal["config", "python"]
    dataset: str
    train: SplitRecord
    test: SplitRecord

    @property
    def dataset_name(self) -> str:
        """The data set's name without the split: ``"fashion"``, ``"mnist"``, ... (for a run trained
        from Python on an unnamed dataset, its type)."""
        name = self.train.name.rsplit("/", 1)[0] if "/" in self.train.name else self.train.name
        return f"{name} (from Python)" if self.origin == "python" else name

    def split(self, split: str) -> SplitRecord:
        """The record of ``"train"`` or ``"test"``."""
        return self.train if split == "train" else self.test

    @property
    def verified(self) -> str | None:
        """The known data set both splits were verified to be, else ``None``."""
        return self.train.verified if self.train.verified == self.test.verified else None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as written to ``data.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = DATA_RECORD_FILE) -> DataRecord:
        """The record of a ``data.json`` mapping, every field checked (it may come from anywhere).

        Raises:
            CheckpointError: a missing or ill-typed field.
        """
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{where} is not a flowvae data record ({what}); delete it, or retrain the run")

        if not isinstance(d, dict) or d.get("origin") not in ("config", "python"):
            raise bad("no origin 'config' or 'python'")
        if not isinstance(d.get("dataset"), str) or len(d["dataset"]) > _MAX_TEXT:
            raise bad("dataset is not a short string")
        splits = {}
        for key in ("train", "test"):
            s = d.get(key)
            if not isinstance(s, dict):
                raise bad(f"no {key} split")
            shape: Any = s.get("shape")
            ok = (all(isinstance(s.get(k), str) and len(s[k]) <= _MAX_TEXT for k in ("name", "type"))
                  and isinstance(s.get("images"), int) and not isinstance(s.get("images"), bool) and s["images"] >= 0
                  and isinstance(shape, list) and len(shape) == 3
                  and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
                  and isinstance(s.get("labelled"), bool)
                  and (s.get("verified") is None or (isinstance(s["verified"], str) and len(s["verified"]) <= _MAX_TEXT)))
            if not ok or shape is None:
                raise bad(f"its {key} split is not name, images, shape [C, H, W], labelled, type, verified")
            splits[key] = SplitRecord(s["name"], s["images"], (shape[0], shape[1], shape[2]), s["labelled"], s["type"],
                                      s.get("verified"))
        return cls(d["origin"], d["dataset"], splits["train"], splits["test"])


def write_data_record(run: str | Path, record: DataRecord) -> Path:
    """Write ``record`` to ``run/data.json`` atomically (a link in its place is refused)."""
    path = Path(run) / DATA_RECORD_FILE
    safe_io.atomic_write(path, json.dumps(record.to_dict(), indent=2).encode(), root=run)
    return path


def read_data_record(run: str | Path | None) -> DataRecord | None:
    """The data record of the run folder ``run``, or ``None`` when it has none (runs of releases
    before the record, imported or hand-made folders).

    Raises:
        CheckpointError: a ``data.json`` that is a link, not a regular file, larger than 64 kB,
            not JSON or not a data record.
    """
    if run is None:
        return None
    path = Path(run) / DATA_RECORD_FILE
    if not os.path.lexists(path):
        return None
    raw = safe_io.read_bytes(path, _MAX_RECORD_BYTES, root=run)
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path} is not JSON; delete it, or retrain the run") from None
    return DataRecord.from_dict(d, str(path))


def check_fits(name: str, shape: tuple[int, int, int], channels: int, size: int, hint: str | None = None) -> None:
    """Raise a one-line :class:`DataError` unless images of ``shape`` ``(C, H, W)`` fit a model of
    ``channels x size x size`` images; ``hint`` ends the message of a mismatch (default: give
    images of that shape)."""
    c, h, w = shape
    if h != w:
        raise DataError(f"{name}: images are {h}x{w}; flowvae models square images, "
                        f"set data.image_size=N to centre-crop and resize")
    if (c, h) != (channels, size):
        raise DataError(f"{name}: images are {c}x{h}x{w} but the model expects {channels}x{size}x{size}; "
                        f"{hint or 'give images of that shape, or train a model for these'}")


def check_data_fits(name: str, data: Any, config: Any) -> None:
    """Raise a one-line :class:`DataError` unless the images of ``data`` (named ``name`` in the message)
    fit the model of ``config`` (a :class:`~flowvae.config.Config`); the message names the
    ``--set`` that would build a model for them."""
    c, h, _ = shape = dataset_image_shape(data)
    check_fits(name, shape, config.model.in_channels, config.model.image_size,
               f"use --set model.in_channels={c} model.image_size={h} or another preset")


def load_data(config: Any, split: str) -> ImageData:
    """The ``"train"`` or ``"test"`` split named by ``config.data`` (:func:`flowvae.data.load_split`:
    the data source's own options, limits as seeded class-stratified subsets), checked against the
    model's input shape.

    Raises:
        DataError: missing or unreadable data, or images that do not fit ``config.model``.
    """
    data = load_split(config.data, split)
    check_data_fits(data.name, data, config)
    return data


def _source_of(path: Path) -> str:
    """The data source that reads ``path``, found as ``flowvae train --data`` finds it (a folder's
    files, then the sources' own descriptions: dSprites npz files, CelebA-HQ npy arrays, ...)."""
    if path.is_dir() or (path.is_file() and path.name.lower().endswith(ARCHIVES)):
        return describe_image_folder(path).source
    return source_for_path(path).name


def load_run_split(config: Any, run: str | Path | None, split: str, path: str | Path | None = None,
                   limit: int | None = None, lazy: bool = False, whole: bool = False) -> Any:
    """The ``split`` of the data a command on a run should read.

    With ``path`` (``--data PATH``): the images there, recognised as ``flowvae train --data``
    recognises them (a folder or zip of images, IDX files, CIFAR-10 batches, ...; a set without a
    test split gets its held-out one), resized to ``config.data.image_size`` where the run's own data
    was and the source resizes, and quantised to the model's ``n_bits`` as in training. Without it:
    the data of ``config.data``, checked against the run's data record (``RUN/data.json``).

    Args:
        config: the run's :class:`~flowvae.config.Config`.
        run: the run folder (for its data record), or ``None``.
        split: ``"train"`` or ``"test"``.
        path: images to read instead of the run's own.
        limit: a seeded random subset of this many images, stratified by class (``None``: the
            config's ``data.test_limit`` / ``data.train_limit`` without ``path``, all with it).
        lazy: a dataset read on access where the source can (image folders, zips), for whole splits.
        whole: with ``limit=None``, every image of the split, whatever the config's limit.

    Returns:
        :class:`ImageData` (or, with ``lazy``, a map-style dataset of ``(uint8 [C, H, W], label)``).

    Raises:
        DataError: the run's data came from Python, or its config now reads other data than it was
            trained on (both: pass ``path``); images that do not fit the model; anything the loader
            raises (missing files say where to get them).
        CheckpointError: a damaged data record.
    """
    record = read_data_record(run)
    data_cfg = config.data
    limit_field = "train_limit" if split == "train" else "test_limit"
    changes: dict[str, Any] = {"in_memory": False} if lazy else {}
    if path is not None:
        changes.update(dataset=_source_of(Path(path).expanduser()), root=str(Path(path).expanduser()),
                       train_limit=None, test_limit=None)
    elif record is not None and record.origin == "python":
        t = record.train
        raise DataError(f"{run} was trained on data passed from Python ({t.type}: {t.images:,} training and "
                        f"{record.test.images:,} test images); its config.yaml's data section ({data_cfg.dataset}) "
                        f"does not describe them: pass --data PATH to name the images to use")
    if limit is not None or whole:
        changes[limit_field] = limit
    data_cfg = data_cfg.replace(**changes)
    data = open_split(data_cfg, split) if lazy else load_split(data_cfg, split)
    name = getattr(data, "name", split)
    check_fits(name, dataset_image_shape(data), config.model.in_channels, config.model.image_size)
    if record is not None and path is None and name != record.split(split).name:
        raise DataError(f"{run} was trained on {record.split(split).name}, but its config.yaml now reads {name}; "
                        f"pass --data PATH to use these images on purpose, or point data.root at the run's data")
    if path is not None:
        trained = f"; the run was trained on {record.train.name}" if record is not None else ""
        bits = f", pixels reduced to the model's {config.data.n_bits} bits" if config.data.n_bits < 8 else ""
        log.info("reading %s from --data %s%s%s", name, path, bits, trained)
    return data
