"""``flowvae train --data FOLDER`` without a preset: a preset chosen from what is in the folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["preset_for_folder", "inspect_folder"]

log = logging.getLogger("flowvae")


def inspect_folder(root: Path) -> Any:
    """The loader's own description of ``root``
    (:func:`flowvae.data.describe_image_folder`: channels, height, width, file count, format, source).

    The channel count is the loader's (its grey-mode list: grey+alpha ``LA`` PNGs are 1 channel),
    so the preset chosen from it fits the images the loader will produce.

    Raises:
        DataError: not a folder, or nothing readable in it.
    """
    from ..data import describe_image_folder

    if not root.is_dir():
        raise DataError(f"--data {root}: not a folder; without a preset, --data must be a folder of images")
    return describe_image_folder(root)


def _n_bits(overrides: list[str]) -> int:
    """``data.n_bits`` of the overrides (the last one wins), else 8; a value that is not an integer
    in 1..8 is left for :func:`~flowvae.config.apply_overrides` to refuse with its own message."""
    for o in reversed(overrides):
        key, _, value = o.partition("=")
        if key.strip() == "data.n_bits":
            return int(value) if value.strip().isdigit() and 1 <= int(value) <= 8 else 8
    return 8


def preset_for_folder(root: Path, overrides: list[str]) -> Any:
    """The config for ``flowvae train --data FOLDER`` with no preset: the preset of
    :func:`flowvae.config.preset_for_images` for the folder's first image (channels as the loader
    reads them, height, width, ``data.n_bits`` from ``overrides`` or 8), then ``overrides``.

    A folder that holds a known dataset's files rather than images (MNIST IDX files, CIFAR-10
    batches, ...) is read by that dataset's loader (``data.dataset`` set to its source).

    Raises:
        DataError: not a folder, or no readable data in it.
        ConfigError: a bad override.
    """
    from ..config import apply_overrides, preset_for_images

    info = inspect_folder(root)
    n_bits = _n_bits(overrides)
    name, size, cfg = preset_for_images(info.channels, info.height, info.width, n_bits)
    if info.source != "folder":
        cfg.data = cfg.data.replace(dataset=info.source, image_size=None)
    log.info("no preset given: %s is %dx%d with %d channel(s); using the %s architecture at %dx%d "
             "(every image centre-cropped to a square and resized, bicubic), %d bits", Path(info.first).name,
             info.width, info.height, info.channels, name, size, size, n_bits)
    return apply_overrides(cfg, overrides)
