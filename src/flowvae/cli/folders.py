"""``flowvae train --data FOLDER`` without a preset: a preset chosen from what is in the folder
and from the machine it trains on."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["preset_for_folder", "inspect_folder", "describe_format"]

log = logging.getLogger("flowvae")

_FORMATS = {
    "idx": "MNIST-style IDX files",
    "cifar-python": "CIFAR-10 python batches",
    "npy": ".npy image arrays",
    "lmdb": "an LSUN lmdb",
}


def inspect_folder(root: Path) -> Any:
    """The loader's own description of ``root``
    (:func:`flowvae.data.describe_image_folder`: channels, height, width, file count, format, source).

    The channel count is the loader's (its grey-mode list: grey+alpha ``LA`` PNGs are 1 channel),
    so the preset chosen from it fits the images the loader will produce.

    Raises:
        DataError: not a folder (or a zip), or nothing readable in it.
    """
    from ..data import describe_image_folder

    if not (root.is_dir() or (root.is_file() and root.name.lower().endswith((".zip", ".tar.gz", ".tgz")))):
        raise DataError(f"--data {root}: not a folder; without a preset, --data must be a folder of images "
                        "(or of a known dataset's files, a .zip of images or the CIFAR-10 .tar.gz)")
    return describe_image_folder(root)


def describe_format(info: Any) -> str:
    """What was recognised, in words: ``"a folder of 400 images in 10 class subfolders, without a
    test split"``, ``"MNIST-style IDX files (4 files, 60,000 training images)"``, ..."""
    n = f"{info.n_images:,} " if info.n_images is not None else ""
    classes = f" in {info.n_classes} class subfolders" if info.n_classes else ", no class subfolders"
    split = "train/ and test/ folders" if info.has_split else "without a test split"
    if info.format in ("images", "zip") and info.source == "folder":
        where = "a folder" if info.format == "images" else "a zip"
        return f"{where} of {n}{'training ' if info.has_split else ''}images{classes}, {split}"
    if info.source == "cifar10-jpeg":
        return f"the CIFAR-10 JPEG zip ({n}training images)"
    if info.source == "imagenet64":
        return f"Downsampled ImageNet npz batches ({info.n_files} files, {n}training images)"
    if info.source == "dsprites":
        return f"dSprites npz files ({info.n_files})"
    kind = _FORMATS.get(info.format, info.format)
    count = f", {n}training images" if n else ""
    if info.format == "idx" and not info.has_split:
        count += ", no t10k-* test files"
    return f"{kind} ({info.n_files} file{'s' if info.n_files != 1 else ''}{count})"


def _n_bits(values: Mapping[str, Any]) -> int:
    """``data.n_bits`` of the parsed overrides, else 8; a value that is not an integer in 1..8 is left
    for :func:`~flowvae.config.apply_overrides` to refuse with its own message."""
    value = values.get("data.n_bits")
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8 else 8


def _device(values: Mapping[str, Any]) -> str:
    """``"cuda"`` or ``"cpu"``: where the run will train (``train.device``, ``auto`` = CUDA when present)."""
    value = str(values.get("train.device") or "auto")
    if value == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if value.startswith("cuda") else "cpu"


def _train_images(info: Any, values: Mapping[str, Any]) -> int | None:
    """Training images the run will see, as far as the description tells: a held-out tenth less
    for data without a test split, at most ``data.train_limit``."""
    from ..data.base import HOLDOUT_FRACTION

    n = info.n_images
    if n is not None and not info.has_split and info.source in ("folder", "mnist", "idx") and n >= 2:
        n -= max(1, int(HOLDOUT_FRACTION * n + 0.5), info.n_classes or 0)
    limit = values.get("data.train_limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
        n = limit if n is None else min(n, limit)
    return n


def preset_for_folder(root: Path, overrides: list[str], fields: Sequence[tuple[str, Any]] = ()) -> Any:
    """The config for ``flowvae train --data FOLDER`` with no preset, then ``overrides``
    (``section.field=value`` strings, ``--set``), then ``fields`` (``(section.field, value)`` pairs
    of typed values, set last: the command's own flags, ``--device`` as ``("train.device", "cpu")``).

    The folder is described by the loaders (:func:`inspect_folder`) and the format recognised is
    logged (a folder or zip of images, MNIST-style IDX files, CIFAR-10 batches, npz/npy arrays, an
    LSUN lmdb, ...); data that is not a folder of images is read by its dataset's loader
    (``data.dataset`` set to that source). The architecture is :func:`flowvae.presets.choose_preset`'s
    for the first image's channels (as the loader reads them) and size, the number of training
    images and the machine (``train.device`` of ``fields`` or ``overrides``; ``auto``: CUDA when present): on a
    CPU a CPU-sized one, logged with the paper's architecture for that size as the GPU option (the
    ``--set`` overrides that give it).

    With ``data.on_bad=skip`` and a small folder (a batch size of at least a quarter of its
    training files), the training split is loaded once to count the images that can be read, and
    the batch sizes are chosen for that count (logged), so that skipped files cannot leave fewer
    images than one batch.

    Raises:
        DataError: not a folder, or no readable data in it.
        ConfigError: a bad override or field.
    """
    from ..config import apply_overrides, parse_overrides, set_field
    from ..data import get_source
    from ..presets import choose_preset

    info = inspect_folder(root)
    log.info("%s: recognised %s; read by the %r data source", root, describe_format(info), info.source)
    values = dict(parse_overrides(overrides))  # the last of a key wins, as when they are applied
    values.update(fields)
    n_bits = _n_bits(values)
    n_train = _train_images(info, values)

    def chosen(n_images: int | None) -> tuple[Any, Any]:
        choice = choose_preset(info.channels, info.height, info.width, n_images, n_bits, _device(values))
        cfg = choice.config
        if info.source != "folder":
            takes_size = "size" in get_source(info.source).options
            set_field(cfg, "data.dataset", info.source)
            set_field(cfg, "data.image_size", choice.size if takes_size else None)
        apply_overrides(cfg, overrides)
        for key, value in fields:
            set_field(cfg, key, value)
        return choice, cfg

    choice, cfg = chosen(n_train)
    readable = _readable_train_images(cfg, n_train, values)
    if readable is not None and n_train is not None and readable < n_train:
        log.info("data.on_bad=skip: %d of the %d training images can be read (%d skipped); the batch sizes are "
                 "chosen for %d", readable, n_train, n_train - readable, readable)
        choice, cfg = chosen(readable)
    size = choice.size
    resize = (" (images not already that size centre-cropped to a square and resized, bicubic)"
              if (info.height, info.width) != (size, size) else "")
    variant = f" ({choice.variant})" if choice.variant else ""
    log.info("no preset given: %s is %dx%d with %d channel(s); using the %s architecture%s at %dx%d, %.1f M parameters "
             "(%s)%s, %d bits", Path(info.first).name, info.width, info.height, info.channels, choice.name, variant,
             size, size, choice.parameters / 1e6, choice.reason, resize, n_bits)
    if choice.published is not None and choice.gpu_overrides:
        where = "on a GPU" if choice.device == "cpu" else "with more images"
        log.info("%s, the paper's architecture for %dx%d images is preset %s's (%.1f M parameters here): "
                 "add --set %s", where, size, size, choice.published, (choice.published_parameters or 0) / 1e6,
                 " ".join(choice.gpu_overrides))
    return cfg


def _readable_train_images(cfg: Any, n_train: int | None, values: Mapping[str, Any]) -> int | None:
    """The training images the loader reads, counted by loading the training split with ``cfg``'s
    data options, when that matters and is cheap: with ``data.on_bad=skip`` and a batch size chosen
    here (not given) of at least a quarter of the ``n_train`` files (a small folder), where skipped
    files could leave fewer images than one batch. ``None`` when not counted."""
    if cfg.data.on_bad != "skip" or n_train is None or "train.batch_size" in values:
        return None
    if cfg.train.batch_size * 4 < n_train:
        return None
    from ..data import load_split

    # The loaders' own lines (the held-out split, the files skipped) come again when training
    # loads the data; once is enough.
    quiet = logging.getLogger("flowvae.data")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return len(load_split(cfg.data, "train"))
    finally:
        quiet.setLevel(level)
