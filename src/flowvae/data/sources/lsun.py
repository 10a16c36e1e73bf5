"""LSUN scenes (the paper: bedroom at 128x128) from the lmdb release, or from exported images."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flowvae.data.base import (
    LIMIT_SEED,
    FolderInfo,
    ImageData,
    check_limit,
    check_size,
    check_split,
    make_image_data,
    sized_reader,
    subset_indices,
)
from flowvae.data.images import DECODE_ERRORS, center_crop_resize, folder_split_name, has_image_files, has_split_folders
from flowvae.data.registry import DataSource, register
from flowvae.data.sources.folder import read_image_folder
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["LSUN_HOWTO", "LSUN_URL", "LmdbImages", "load_lsun", "open_lsun"]

LSUN_URL = "http://dl.yf.io/lsun/scenes/"
LSUN_HOWTO = (
    "download bedroom_train_lmdb.zip and bedroom_val_lmdb.zip with `python download.py -c bedroom` from "
    f"https://github.com/fyu/lsun (files at {LSUN_URL}), unzip both into one folder and pass it with --data DIR "
    "(a folder of exported .webp/.jpg images works too)"
)
_LSUN_SPLIT_DIR = {"train": "train", "test": "val"}


def _is_lmdb_env(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def _lmdb_folders(root: Path, pattern: str) -> list[Path]:
    # Symlinked lmdb folders are not followed out of root.
    return sorted(p for p in root.glob(pattern) if not p.is_symlink() and _is_lmdb_env(p))


def _find_lsun_lmdb(root: Path, split: str) -> Path | None:
    """The lmdb folder for ``split`` under ``root`` (or ``root`` itself), or None if there is no lmdb.

    Raises:
        DataError: ``root`` is (or holds) lmdb folders, but none for this split, or several categories.
    """
    suffix = f"_{_LSUN_SPLIT_DIR[split]}_lmdb"
    if _is_lmdb_env(root):
        other = "_val_lmdb" if split == "train" else "_train_lmdb"
        if root.name.endswith(other):
            raise DataError(
                f"{root} is the {other[1:-5]} lmdb but split {split!r} was asked for; pass the folder that holds "
                f"both *_train_lmdb and *_val_lmdb with --data DIR"
            )
        if not root.name.endswith(suffix):
            logger.warning("%s: one lmdb given; it is used for the %s split whatever its name", root, split)
        return root
    found = _lmdb_folders(root, f"*{suffix}")
    bedroom = root / f"bedroom{suffix}"
    if bedroom in found:
        return bedroom
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(
            f"{root} holds several LSUN categories ({', '.join(p.name for p in found)}); "
            "pass the one lmdb folder to use with --data DIR"
        )
    if _lmdb_folders(root, "*_lmdb"):
        raise DataError(f"{root} has no *{suffix} folder for split {split!r}; {LSUN_HOWTO}")
    return None


def _open_lmdb(path: Path) -> Any:
    try:
        import lmdb  # optional dependency: pip install flowvae[lsun]
    except ImportError:
        raise DataError(
            f"reading the LSUN lmdb {path} needs the lmdb package: pip install lmdb (or pip install flowvae[lsun]); "
            "or export the images to a folder and pass that with --data DIR"
        ) from None
    try:
        # lock=False: read-only shared data folders cannot hold lock.mdb, and nothing writes here.
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    except lmdb.Error as exc:
        raise DataError(f"cannot open {path} as an lmdb ({exc}); the download is damaged, {LSUN_HOWTO}") from exc


def _lmdb_name(path: Path, split: str) -> str:
    """``lsun-<category>/<split>`` from an lmdb folder's name (``bedroom_train_lmdb``)."""
    category = path.name[: -len("_lmdb")].rsplit("_", 1)[0] if path.name.endswith("_lmdb") else path.name
    return f"lsun-{category}/{split}" if category else f"lsun/{split}"


def _entry_count(env: Any, path: Path, name: str) -> int:
    n_all = int(env.stat()["entries"])
    if n_all == 0:
        raise DataError(f"empty dataset {name}: the lmdb {path} holds no images; {LSUN_HOWTO}")
    return n_all


def _load_lsun_lmdb(path: Path, split: str, size: int, limit: int | None) -> ImageData:
    env = _open_lmdb(path)
    import lmdb  # importable: _open_lmdb succeeded

    name = _lmdb_name(path, split)
    try:
        n_all = _entry_count(env, path, name)
        keep = subset_indices(n_all, limit, None, LIMIT_SEED).numpy()
        n = len(keep)
        logger.info("%s: decoding %d images at %dx%d; %.1f GB", name, n, size, size, n * 3 * size * size / 1e9)
        images = np.empty((n, size, size, 3), dtype=np.uint8)
        resized = 0
        with env.begin(write=False, buffers=False) as txn:
            cursor = txn.cursor()
            at = 0
            # Walk the keys only (lmdb bytewise order) and fetch the values of the chosen entries,
            # so a subset of the 3 million bedrooms reads just its own images.
            for i, key in enumerate(cursor.iternext(keys=True, values=False)):
                if at == n:
                    break
                if i != keep[at]:
                    continue
                try:
                    with Image.open(io.BytesIO(cursor.value())) as img:
                        rgb = img.convert("RGB")
                        if rgb.size != (size, size):  # an image already that size keeps its pixels
                            rgb = center_crop_resize(rgb, size)
                            resized += 1
                        images[at] = np.asarray(rgb, dtype=np.uint8)
                except DECODE_ERRORS as exc:
                    label = key.decode("ascii", "replace")
                    raise DataError(f"cannot decode image {label!r} in {path} ({exc}); the lmdb is damaged, download it again") from exc
                at += 1
        if at != n:
            raise DataError(f"{path} lists {n_all} entries but holds fewer; the lmdb is damaged, {LSUN_HOWTO}")
        if resized:
            logger.info("%s: resized %d of %d images to %dx%d (centre-cropped to a square, PIL bicubic)",
                        name, resized, n, size, size)
    except lmdb.Error as exc:
        raise DataError(f"cannot read {path} as an lmdb ({exc}); the download is damaged, {LSUN_HOWTO}") from exc
    finally:
        env.close()
    return make_image_data(images.transpose(0, 3, 1, 2), None, name, None)


def load_lsun(root: str | Path, split: str = "train", size: int = 128, limit: int | None = None) -> ImageData:
    """LSUN scenes (the paper: bedroom at 128x128) from the lmdb release, or from exported images.

    Files: ``bedroom_train_lmdb.zip`` (3,033,042 images) and ``bedroom_val_lmdb.zip`` (300 images) from
    ``http://dl.yf.io/lsun/scenes/``, fetched by ``python download.py -c bedroom`` of
    https://github.com/fyu/lsun; unzipped, each is a folder with ``data.mdb`` whose keys are image ids
    and values the encoded images (WEBP, JPEG works too). Reading lmdb needs the optional ``lmdb``
    package (``pip install flowvae[lsun]``).

    ``root`` may be:

    * a folder holding ``bedroom_train_lmdb/`` and ``bedroom_val_lmdb/``: ``split="train"`` reads the
      first, ``"test"`` the second (another single category, e.g. ``church_outdoor_*_lmdb``, is used
      the same way);
    * one lmdb folder itself (used for the split asked for; a ``*_train_lmdb`` folder refuses
      ``"test"`` and a ``*_val_lmdb`` folder refuses ``"train"``);
    * a folder of exported images (``.webp/.jpg/.png``, e.g. from the LSUN tools' ``export``):
      read as by :func:`~flowvae.data.load_image_folder` with this ``size`` and ``limit``;
      ``root/train`` and ``root/test`` (or ``root/val``) are used as splits when present, otherwise
      all of ``root`` is used for either split.

    lmdb entries are read in key order. Every image is converted to RGB, centre-cropped to a square
    and resized to ``size x size`` with PIL's bicubic filter. The full training set at 128x128 takes
    about 150 GB; ``limit`` keeps a seeded random subset (:func:`~flowvae.data.subset_indices`,
    seed 0; LSUN has no labels), in key order, and only its images are read and decoded.

    Args:
        root: location as above.
        split: ``"train"`` or ``"test"``.
        size: output height and width (default 128, as in the paper).
        limit: keep only a random subset of ``limit`` images.

    Returns:
        ImageData named ``"lsun-<category>/<split>"`` (lmdb) or ``"lsun/<split>"`` (images):
        images ``uint8 [N, 3, size, size]`` (RGB 0..255; an exported folder of only grey images gives
        ``C=1``), labels ``None``.

    Raises:
        DataError: root missing or holding neither an lmdb nor images (the message says where to
            download LSUN), ``lmdb`` not installed, an lmdb for the other split only, several
            categories, a damaged lmdb or undecodable image, or bad ``size``/``limit``.
    """
    check_split(split)
    limit = check_limit(limit)
    checked = check_size(size, allow_none=False)
    assert checked is not None  # allow_none=False
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"LSUN not found: {root} does not exist; {LSUN_HOWTO}")
    if root.is_file() and root.name == "data.mdb":
        root = root.parent
    if not root.is_dir():
        raise DataError(f"LSUN: {root} is not a folder; pass the folder holding bedroom_train_lmdb/ and bedroom_val_lmdb/ with --data DIR")
    found = _find_lsun_lmdb(root, split)
    if found is not None:
        return _load_lsun_lmdb(found, split, checked, limit)
    if not has_image_files(root):
        raise DataError(f"LSUN not found in {root}: no bedroom_train_lmdb/ or bedroom_val_lmdb/ and no image files; {LSUN_HOWTO}")
    # LSUN scenes are unlabelled: subfolders of an export are not classes, so the subset is not
    # stratified by them and the labels are dropped.
    data = read_image_folder(root, folder_split_name(root, split), checked, limit, "error", labelled=False)
    return ImageData(data.images, None, f"lsun/{split}")


class LmdbImages:
    """The images of an LSUN lmdb read on access: a map-style dataset of ``(uint8 [3, size, size], -1)``,
    the entries :func:`load_lsun` would decode (the same key order and subset). Memory holds the
    chosen keys only (one numpy byte-string array); each process opens the lmdb on first use.

    Raises:
        DataError: (on access) an image that cannot be decoded, naming its key.
    """

    def __init__(self, path: Path, keys: np.ndarray, size: int, name: str):
        self.path, self.keys, self.size, self.name = path, keys, size, name
        self.labels = None
        self._env: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None}

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import os

        import torch

        if self._env is None or self._env[0] != os.getpid():
            self._env = (os.getpid(), _open_lmdb(self.path))
        key = bytes(self.keys[i])
        with self._env[1].begin(write=False, buffers=False) as txn:
            value = txn.get(key)
        try:
            if value is None:
                raise OSError("the entry is missing")
            with Image.open(io.BytesIO(value)) as img:
                rgb = img.convert("RGB")
                if rgb.size != (self.size, self.size):
                    rgb = center_crop_resize(rgb, self.size)
                a = np.asarray(rgb, dtype=np.uint8)
        except DECODE_ERRORS as exc:
            raise DataError(f"cannot decode image {key.decode('ascii', 'replace')!r} in {self.path} ({exc}); "
                            f"the lmdb is damaged, download it again") from exc
        return torch.from_numpy(a.transpose(2, 0, 1).copy()), -1


def open_lsun(root: str | Path, split: str = "train", size: int = 128, limit: int | None = None) -> Any:
    """What :func:`load_lsun` would load, read on access: :class:`LmdbImages` for an lmdb (only
    its keys are read now); an exported folder of images is loaded as :func:`load_lsun` does."""
    limit = check_limit(limit)
    checked = check_size(size, allow_none=False)
    assert checked is not None
    found = _find_lsun_lmdb(Path(root).expanduser(), split) if Path(root).expanduser().is_dir() else None
    if found is None:
        return load_lsun(root, split, size=checked, limit=limit)
    env = _open_lmdb(found)
    import lmdb  # importable: _open_lmdb succeeded

    name = _lmdb_name(found, split)
    try:
        n_all = _entry_count(env, found, name)
        keep = set(subset_indices(n_all, limit, None, LIMIT_SEED).tolist()) if limit is not None else None
        with env.begin(write=False, buffers=False) as txn:
            keys = [k for i, k in enumerate(txn.cursor().iternext(keys=True, values=False)) if keep is None or i in keep]
    except lmdb.Error as exc:
        raise DataError(f"cannot read {found} as an lmdb ({exc}); the download is damaged, {LSUN_HOWTO}") from exc
    finally:
        env.close()
    return LmdbImages(found, np.array(keys, dtype=bytes), checked, name)


def _detect(path: Path) -> bool:
    return path.is_dir() and (_is_lmdb_env(path) or bool(_lmdb_folders(path, "*_lmdb")))


def _probe(root: Path) -> FolderInfo | None:
    if not _detect(root):
        return None
    envs = [root] if _is_lmdb_env(root) else _lmdb_folders(root, "*_lmdb")
    first = next((p for p in envs if p.name.endswith("_train_lmdb")), envs[0])
    env = _open_lmdb(first)
    import lmdb  # importable: _open_lmdb succeeded

    try:
        with env.begin(write=False, buffers=False) as txn:
            cursor = txn.cursor()
            value = cursor.value() if cursor.first() else None
        entries = int(env.stat()["entries"])
    except lmdb.Error as exc:
        raise DataError(f"cannot read {first} as an lmdb ({exc}); the download is damaged, {LSUN_HOWTO}") from exc
    finally:
        env.close()
    if value is None:
        raise DataError(f"empty dataset: the lmdb {first} holds no images; {LSUN_HOWTO}")
    try:
        with Image.open(io.BytesIO(value)) as img:  # reads the header only
            w, h = img.size
    except DECODE_ERRORS as exc:
        raise DataError(f"cannot decode the first image in {first} ({exc}); the lmdb is damaged, download it again") from exc
    return FolderInfo(channels=3, height=h, width=w, n_files=len(envs), has_split=has_split_folders(root),
                      format="lmdb", source="lsun", first=first / "data.mdb", n_images=entries)


register(DataSource(
    name="lsun",
    load=sized_reader(load_lsun, "lsun"),
    lazy=sized_reader(open_lsun, "lsun"),
    options=frozenset({"limit", "size"}),
    description="LSUN scenes (bedroom), lmdb release or exported images, centre-cropped and resized (default 128)",
    detect=_detect,
    probe=_probe,
))
