"""CIFAR-10 re-encoded as JPEG (quality 75), one stored zip of ``<split>/<class>/NNNN.jpg`` entries."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from flowvae.data.base import (
    LIMIT_SEED,
    FolderInfo,
    ImageData,
    atomic_write,
    cache_dir,
    check_limit,
    check_split,
    make_image_data,
    shared_data_dir,
    subset_indices,
)
from flowvae.data.images import DECODE_ERRORS, has_split_folders
from flowvae.data.registry import DataSource, register
from flowvae.data.sources.cifar10 import CIFAR10_CLASSES, CIFAR10_URL
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CIFAR10_JPEG_NAME", "CIFAR10_JPEG_ZIP", "load_cifar10_jpeg_zip"]

CIFAR10_JPEG_NAME = "CIFAR-10 (JPEG q75 re-encode)"
CIFAR10_JPEG_ZIP = "cifar10-jpeg-images.zip"
# A 32x32 JPEG is about 1 KB; an entry far bigger than this is not one, so it is never read.
_MAX_ENTRY_BYTES = 64 << 10
# SHA-256 of the published zip (../shared/data/SHA256SUMS): only that zip is named as the data set;
# any other zip of CIFAR-10-class JPEGs is named after its file.
CIFAR10_JPEG_SHA256 = "f7625fc6a42ead0a462a6e36eb4b53cc89da86f36a0e011313c8c9a582622870"
_verified: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime): checked once per process


def _is_published_zip(path: Path) -> bool:
    """Whether the zip at ``path`` is the published CIFAR-10 JPEG zip, by its SHA-256."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _verified[key] = digest.hexdigest() == CIFAR10_JPEG_SHA256
    return _verified[key]


def _dataset_name(path: Path, split: str) -> tuple[str, str | None]:
    """The name of a split of the zip at ``path`` and the verified data set (``None`` for another zip)."""
    if _is_published_zip(path):
        return f"{CIFAR10_JPEG_NAME}/{split}", "cifar10-jpeg"
    logger.warning("%s is not the published CIFAR-10 JPEG zip (its SHA-256 differs): named %r after the file",
                   path, path.stem)
    return f"{path.stem}/{split}", None


def _jpeg_zip_entries(zf: zipfile.ZipFile, split: str, path: Path) -> list[tuple[zipfile.ZipInfo, int]]:
    """``(entry, label)`` for one split, ordered by (file number, class)."""
    entries: list[tuple[str, zipfile.ZipInfo, int]] = []
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    for info in zf.infolist():
        parts = info.filename.split("/")
        if len(parts) != 3 or parts[0] != split or not parts[2].lower().endswith((".jpg", ".jpeg")):
            continue
        if parts[1] not in class_index:
            raise DataError(
                f"{path} has entry {info.filename} whose class {parts[1]!r} is not a CIFAR-10 class "
                f"({' '.join(CIFAR10_CLASSES)}); use load_image_folder for other data"
            )
        entries.append((parts[2], info, class_index[parts[1]]))
    # Interleave classes (0000.jpg of every class, then 0001.jpg, ...): the order the full split
    # has always had, so whole-split results stay comparable.
    entries.sort(key=lambda e: (e[0], e[2]))
    return [(info, label) for _, info, label in entries]


def _decode_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One entry as ``uint8 [32, 32, 3]``; its size is checked before it is read or decoded."""
    if info.file_size > _MAX_ENTRY_BYTES:
        raise DataError(f"{path}:{info.filename} is {info.file_size} bytes, too large for a 32x32 JPEG; not CIFAR-10")
    try:
        with Image.open(io.BytesIO(zf.read(info))) as img:
            w, h = img.size
            arr = np.asarray(img.convert("RGB")) if (w, h) == (32, 32) else None
    except DECODE_ERRORS as exc:
        raise DataError(f"cannot decode {path}:{info.filename} ({exc}); the zip is damaged") from exc
    if arr is None:
        raise DataError(f"{path}:{info.filename} is {w}x{h}, expected 32x32; not CIFAR-10")
    return arr


def load_cifar10_jpeg_zip(
    path: str | Path,
    split: str = "train",
    limit: int | None = None,
    cache: bool = True,
) -> ImageData:
    """CIFAR-10 re-encoded as JPEG (quality 75) in one zip with ``<split>/<class>/NNNN.jpg`` entries.

    The pixels are not the original CIFAR-10 pixels (lossy JPEG), so the dataset name is
    ``"CIFAR-10 (JPEG q75 re-encode)/<split>"``: bits/dim or FID on it are not comparable with
    published CIFAR-10 figures.

    Images are ordered by file number, then class in CIFAR-10 order (``train/airplane/0000.jpg``,
    ``train/automobile/0000.jpg``, ..., ``train/truck/0000.jpg``, ``train/airplane/0001.jpg``, ...).
    ``limit=N`` keeps a seeded random subset of N, stratified by class
    (:func:`~flowvae.data.subset_indices`, seed 0), in that order; only its entries are decoded.
    Decoded arrays are cached as ``.npy`` under ``cache_dir()/cifar10-jpeg`` keyed by the zip's size
    and mtime (and split, limit, seed); the first full load takes a few seconds, later ones only
    read the cache.

    Args:
        path: the zip file.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        limit: keep only a stratified random subset of ``limit`` images of the split.
        cache: read and write the decoded-array cache.

    Returns:
        ImageData, images ``uint8 [N, 3, 32, 32]`` RGB, labels ``int64`` in ``0..9``, classes
        ``CIFAR10_CLASSES``; named ``"CIFAR-10 (JPEG q75 re-encode)/<split>"`` (``verified ==
        "cifar10-jpeg"``) when the zip's SHA-256 is the published zip's, else after the zip's file name.

    Raises:
        DataError: zip missing or unreadable, no entries for the split, an unknown class folder,
            or an entry that is not a decodable 32x32 image (or is too large to be one).
    """
    check_split(split)
    limit = check_limit(limit)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 JPEG zip not found at {path}; pass the path of {CIFAR10_JPEG_ZIP} with --data PATH "
            f"(or use the original CIFAR-10 from {CIFAR10_URL} with dataset cifar10)"
        )
    name, verified = _dataset_name(path, split)
    st = path.stat()
    # Limited loads say "random subset, seed" in the key: caches of the old first-N prefixes must
    # never be mistaken for them.
    subset = "all" if limit is None else f"random{limit}-seed{LIMIT_SEED}"
    key = f"{path.stem}-{st.st_size}-{st.st_mtime_ns}-{split}-{subset}"
    cached_images = cache_dir() / "cifar10-jpeg" / f"{key}-images.npy"
    cached_labels = cached_images.with_name(f"{key}-labels.npy")
    if cache and cached_images.is_file() and cached_labels.is_file():
        try:
            images = np.load(cached_images, allow_pickle=False)
            labels = np.load(cached_labels, allow_pickle=False)
            if images.dtype == np.uint8 and images.ndim == 4 and labels.shape == (len(images),):
                return make_image_data(images, labels, name, CIFAR10_CLASSES, verified)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache %s (%s); decoding the zip again", cached_images, exc)

    try:
        with zipfile.ZipFile(path) as zf:
            entries = _jpeg_zip_entries(zf, split, path)
            if not entries:
                raise DataError(f"{path} has no {split}/<class>/*.jpg entries; it is not the CIFAR-10 JPEG zip")
            all_labels = np.array([label for _, label in entries], dtype=np.int64)
            keep = subset_indices(len(entries), limit, all_labels, LIMIT_SEED).numpy()
            images = np.empty((len(keep), 32, 32, 3), dtype=np.uint8)
            for i, k in enumerate(keep):
                images[i] = _decode_entry(zf, entries[k][0], path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {path} as a zip ({exc}); the file is damaged") from exc
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = all_labels[keep]

    if cache:
        try:
            cached_images.parent.mkdir(parents=True, exist_ok=True)
            # Labels first: the images file is the "cache present" marker checked above.
            atomic_write(cached_labels, lambda f: np.save(f, labels))
            atomic_write(cached_images, lambda f: np.save(f, images))
        except OSError as exc:
            logger.warning("could not write cache %s (%s); set FLOWVAE_CACHE to a writable folder", cached_images, exc)
    return make_image_data(images, labels, name, CIFAR10_CLASSES, verified)


def _zip_in(path: Path) -> Path:
    return path / CIFAR10_JPEG_ZIP if path.is_dir() else path


def _is_cifar10_jpeg_zip(path: Path) -> bool:
    """Whether ``path`` is a zip laid out as the CIFAR-10 JPEG zip: ``train/`` or ``test/`` entries
    ``<split>/<class>/NNNN.jpg`` whose classes are all CIFAR-10 classes (the central directory only)."""
    if not (path.is_file() and path.suffix.lower() == ".zip"):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(_jpeg_zip_entries(zf, "train", path) or _jpeg_zip_entries(zf, "test", path))
    except (DataError, zipfile.BadZipFile, OSError):
        return False  # another zip of images (or not a zip): the folder source reads it


def _detect(path: Path) -> bool:
    # The zip itself, or a folder holding it (and no other data: the folder source reads images).
    return _is_cifar10_jpeg_zip(path) or (path.is_dir() and _is_cifar10_jpeg_zip(path / CIFAR10_JPEG_ZIP))


def _probe(root: Path) -> FolderInfo | None:
    path = _zip_in(root)
    if not _is_cifar10_jpeg_zip(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            entries = _jpeg_zip_entries(zf, "train", path) or _jpeg_zip_entries(zf, "test", path)
            if not entries:
                return None
            first = _decode_entry(zf, entries[0][0], path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {path} as a zip ({exc}); the file is damaged") from exc
    return FolderInfo(channels=3, height=first.shape[0], width=first.shape[1], n_files=1,
                      has_split=has_split_folders(root), format="zip", source="cifar10-jpeg", first=path,
                      n_images=len(entries), n_classes=10)


def _load(root: str | Path | None, split: str, limit: int | None = None, cache: bool = True) -> ImageData:
    path = shared_data_dir() / "cifar10-jpeg" / CIFAR10_JPEG_ZIP if root is None else _zip_in(Path(root))
    return load_cifar10_jpeg_zip(path, split, limit=limit, cache=cache)


register(DataSource(
    name="cifar10-jpeg",
    load=_load,
    options=frozenset({"limit"}),
    description=f"{CIFAR10_JPEG_NAME}: 32x32 RGB, 50,000 train / 10,000 test, one zip of JPEGs (lossy)",
    extra_options=frozenset({"cache"}),
    detect=_detect,
    probe=_probe,
))
