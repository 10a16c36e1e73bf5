"""MNIST-style IDX files: finding, reading and naming them, for the ``idx`` and ``mnist`` data sources.

The IDX format is a file format, not a data set: a split read here is named after the folder that
holds it (``fashion/train``), and ``mnist/<split>`` only when the files' content is the official
MNIST files' (:data:`MNIST_MD5`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from flowvae.data.base import (
    FolderInfo,
    ImageData,
    check_split,
    holdout_indices,
    make_image_data,
    take,
)
from flowvae.data.images import has_split_folders
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["IDX_PREFIX", "IdxSplit", "MNIST_MD5", "find_idx_file", "has_files", "held_out", "idx_dataset_label",
           "load_or_hold_out", "probe_idx", "read_idx", "read_idx_split", "split_data"]

IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
# The payload a header may claim before anything is read: MNIST-like sets are far below it, a
# damaged header (or a gzip bomb) is not.
_IDX_MAX_BYTES = 1 << 30
# MD5 of the official decompressed MNIST files (yann.lecun.com; torchvision lists the same), keyed
# by split and kind. A copy whose .gz were recompressed still matches: the digest is of the content.
MNIST_MD5 = {
    ("train", "images"): "6bbc9ace898e44ae57da46a324031adb",
    ("train", "labels"): "a25bea736e30d166cdddb491f175f624",
    ("test", "images"): "2646ac647ad5339dbf082846283269ea",
    ("test", "labels"): "27ae3e4e09519cfbb04c329615203637",
}
# Folders that say where files sit rather than what they are (torchvision keeps MNIST in MNIST/raw).
_GENERIC_FOLDERS = frozenset({"raw", "data", "processed", "files", "download", "downloads", "."})
# Where torchvision's datasets keep their IDX files (ROOT/<name>/raw); a fixed list, so that finding
# them never lists a large folder of images.
_TORCHVISION_FOLDERS = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST")


def _candidates(prefix: str, kind: str) -> list[str]:
    ndim = 3 if kind == "images" else 1
    # The unpacked official files are sometimes renamed with a dot ("train-images.idx3-ubyte").
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [s + ext for s in stems for ext in ("", ".gz")]


def find_idx_file(root: Path, prefix: str, kind: str) -> Path | None:
    """The IDX file ``<prefix>-<kind>-idx?-ubyte[.gz]`` in ``root``, ``root/raw`` or torchvision's
    ``root/MNIST/raw`` (``FashionMNIST``, ``KMNIST``, ``EMNIST``, ``QMNIST``), or ``None``."""
    for folder in (root, root / "raw", *(root / name / "raw" for name in _TORCHVISION_FOLDERS)):
        for name in _candidates(prefix, kind):
            if (folder / name).is_file():
                return folder / name
    return None


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        head = f.read(2)
    # Trust the content, not the suffix: some mirrors serve decompressed files named .gz.
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")  # type: ignore[return-value]


def _header(f: BinaryIO, path: Path, magic: int) -> tuple[bytes, tuple[int, ...]]:
    ndim = magic & 0xFF
    size = 4 + 4 * ndim
    raw = f.read(size)
    if len(raw) < size:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes); download it again")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(
            f"{path} has IDX magic number 0x{got:08x}, expected 0x{magic:08x}; "
            "it is not an IDX file of this kind (images/labels swapped?) or it is damaged"
        )
    return raw, tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def read_idx(path: Path, magic: int) -> tuple[np.ndarray, str]:
    """The array of an IDX file and the MD5 of its decompressed content; the header is checked
    before the payload is read.

    Raises:
        DataError: a wrong magic number, a header claiming more than 1 GiB, a size that does not
            match the header, or a damaged gzip stream.
    """
    try:
        with _open(path) as f:
            head, dims = _header(f, path, magic)
            expected = int(np.prod(dims, dtype=np.int64))
            if expected > _IDX_MAX_BYTES:
                raise DataError(f"{path}: its header {dims} claims {expected} bytes, more than an IDX image set holds; "
                                "the file is damaged, download it again")
            payload = f.read(expected)
            extra = 0
            while chunk := f.read(1 << 20):  # count, do not keep, what lies beyond the payload
                extra += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a damaged stream, zlib.error
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, download it again") from exc
    if len(payload) != expected or extra:
        raise DataError(
            f"{path} holds {len(head) + len(payload) + extra} bytes but its header {dims} needs {len(head) + expected}; "
            "the file is truncated or damaged, download it again"
        )
    digest = hashlib.md5(head + payload, usedforsecurity=False).hexdigest()
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims), digest


def idx_dataset_label(root: Path) -> str:
    """The name of the data set in the folder ``root``: the folder's own name, or its parent's when
    the folder's name only says where files sit (``raw``, ``data``)."""
    root = Path(root).expanduser()
    for part in (root, *root.resolve().parents) if root.name.lower() in _GENERIC_FOLDERS else (root,):
        if part.name and part.name.lower() not in _GENERIC_FOLDERS:
            return part.name
    return "idx"


@dataclass(frozen=True)
class IdxSplit:
    """One split of an IDX set as read from its files.

    Attributes:
        images: ``uint8 [N, H, W]``.
        labels: ``uint8 [N]``.
        images_file, labels_file: the files read.
        is_mnist: whether both files' content is the official MNIST file's (:data:`MNIST_MD5`).
    """

    images: np.ndarray
    labels: np.ndarray
    images_file: Path
    labels_file: Path
    is_mnist: bool


def read_idx_split(root: Path, split: str, what: str = "IDX", source: str | None = None) -> IdxSplit:
    """The images and labels of ``split`` from the IDX files in ``root`` (see :func:`find_idx_file`).

    Raises:
        DataError: files missing (``what`` names the data set in the message, ``source`` where to
            download it), damaged, or image and label counts that differ.
    """
    check_split(split)
    prefix = IDX_PREFIX[split]
    img_path, lbl_path = find_idx_file(root, prefix, "images"), find_idx_file(root, prefix, "labels")
    if img_path is None or lbl_path is None:
        get = f"download them from {source} and " if source else ""
        raise DataError(f"{what} {split} files not found in {root}: expected {prefix}-images-idx3-ubyte.gz and "
                        f"{prefix}-labels-idx1-ubyte.gz (or unzipped); {get}pass their folder with --data PATH")
    images, img_md5 = read_idx(img_path, _IDX_IMAGES_MAGIC)
    labels, lbl_md5 = read_idx(lbl_path, _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
                        "the files come from different splits or one is damaged")
    is_mnist = (img_md5, lbl_md5) == (MNIST_MD5[split, "images"], MNIST_MD5[split, "labels"])
    return IdxSplit(images, labels, img_path, lbl_path, is_mnist)


def split_data(read: IdxSplit, root: Path, split: str) -> ImageData:
    """An :class:`ImageData` of a split read by :func:`read_idx_split`, named ``mnist/<split>`` (and
    verified as ``mnist``) only when its files are MNIST's, else after the folder."""
    labels = read.labels.astype(np.int64)
    classes = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 1)]
    if read.is_mnist:
        return make_image_data(read.images[:, None], labels, f"mnist/{split}", classes, verified="mnist")
    return make_image_data(read.images[:, None], labels, f"{idx_dataset_label(root)}/{split}", classes)


def held_out(root: Path, split: str, holdout: float, load: Callable[[Path, str], ImageData]) -> ImageData:
    """The ``split`` of a set that has training files only, with a seeded held-out test split."""
    check_split(split)
    whole = load(root, "train")
    train, test, held = holdout_indices(len(whole), whole.labels, holdout)
    if split == "train":
        logger.info("%s", held.message(f"{root} (no t10k-* files)"))
    data = take(whole, test if split == "test" else train)
    base = whole.name.rsplit("/", 1)[0]
    return ImageData(data.images, data.labels, f"{base}/{split} ({held.note()})", data.classes, data.verified)


def has_files(root: Path) -> dict[str, bool]:
    """For each split, whether ``root`` holds both its IDX files."""
    return {s: find_idx_file(root, p, "images") is not None and find_idx_file(root, p, "labels") is not None
            for s, p in IDX_PREFIX.items()}


def load_or_hold_out(root: Path, split: str, holdout: float | None,
                     load: Callable[[Path, str], ImageData]) -> ImageData:
    """``load(root, split)``, or for a set with training files only (no ``t10k-*``: Fashion-MNIST or
    EMNIST-like sets sent without them) and ``holdout``, the split with a seeded held-out test split."""
    if holdout is not None and split in IDX_PREFIX and has_files(root) == {"train": True, "test": False}:
        return held_out(root, split, holdout, load)
    return load(root, split)


def probe_idx(root: Path, source: str, n_classes: int | None = None) -> FolderInfo | None:
    """The :class:`FolderInfo` of the IDX files in ``root`` (read by ``source``), from the headers."""
    found = [find_idx_file(root, p, k) for p in IDX_PREFIX.values() for k in ("images", "labels")]
    images = next((f for f in found[::2] if f is not None), None)
    if images is None:
        return None
    try:
        with _open(images) as f:
            _, dims = _header(f, images, _IDX_IMAGES_MAGIC)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {images}: {exc}; the file is damaged, download it again") from exc
    return FolderInfo(channels=1, height=dims[1], width=dims[2], n_files=sum(f is not None for f in found),
                      has_split=has_split_folders(root) or all(f is not None for f in found), format="idx",
                      source=source, first=images, n_images=dims[0], n_classes=n_classes)


